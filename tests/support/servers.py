"""Run real ASGI apps on 127.0.0.1 on free ports for integration tests.

Tests talk to the services over real HTTP on loopback, exactly as a wallet or an agency would.
"""

from __future__ import annotations

import contextlib
import os
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
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def worker_port_range() -> tuple[int, int]:
    """This pytest-xdist worker's own slice of ``_PORT_RANGE`` (the whole range outside xdist).

    A port is picked some time before a server binds it (a system's services learn each other's URLs
    first). Two workers picking from one range could choose the same port in that gap: once, in CI,
    a wallet system fixture failed with "address already in use". Separate slices rule that out.
    """
    low, high = _PORT_RANGE
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
        index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    except ValueError:
        return low, high
    span = (high - low) // count
    return low + (index % count) * span, low + (index % count + 1) * span


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, outside the ephemeral range, in this worker's slice, and
    not handed out before by this process (so two servers of one test never get the same port)."""
    low, high = worker_port_range()
    with _handed_out_lock:
        if len(_handed_out) > (high - low) // 2:
            _handed_out.clear()  # a long session: start over rather than run dry
        for _ in range(500):
            port = random.randrange(low, high)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
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
