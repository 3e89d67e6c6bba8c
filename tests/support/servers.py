"""Run real ASGI apps on 127.0.0.1 on free ports for integration tests.

Tests talk to the services over real HTTP on loopback, exactly as a wallet or an agency would.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from service_kit.http_protocol import GatheringHttpToolsProtocol

# Below the kernel's ephemeral range (32768-60999 on Linux): a port picked from that range can be
# taken, between picking and binding, as the source port of any outgoing connection of the suite
# (HTTP clients, PostgreSQL, agents) — which made whole session fixtures fail to start.
_PORT_RANGE = (20_000, 32_000)


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, outside the ephemeral range."""
    for _ in range(500):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns signals
        pass


@contextlib.contextmanager
def serve(app: Any, port: int | None = None, ready_path: str = "/") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yield its base URL; stop it afterwards.

    Same HTTP protocol as ``service_kit.server`` (one send per response), so tests exercise it.
    """
    port = port or free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                    http=GatheringHttpToolsProtocol))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    # Long enough for an app whose start-up launches an ACA-Py agent on a loaded machine (the agent
    # itself may take 60 s): a start-up that fails ends the thread, and that is seen at once.
    deadline = time.monotonic() + 90
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_http(url: str, timeout: float = 20.0) -> None:
    """Wait until ``url`` answers any HTTP status (for servers started as subprocesses)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
