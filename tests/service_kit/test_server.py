"""service_kit.server.serve: an import-string factory under uvicorn, with two worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service_kit import server
from tests.support.servers import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]


def test_serve_runs_the_factory_in_two_workers_with_json_logs(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CARTERA_SAMPLE_DATA_DIR": str(tmp_path),
        "CARTERA_SAMPLE_PORT": str(port),
    }
    code = (
        "from service_kit.server import serve; "
        f"serve('tests.service_kit.sample_app:create_app', '127.0.0.1', {port}, workers=2)"
    )
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", code], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        pids: set[int] = set()
        deadline = time.monotonic() + 20
        # Both workers accept on the same socket; fresh connections eventually reach each of them.
        while len(pids) < 2 and time.monotonic() < deadline:
            with httpx.Client() as client:
                pids.add(client.get(f"http://127.0.0.1:{port}/v1/pid").json()["pid"])
        assert len(pids) == 2
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        assert (tmp_path / "sample.db").exists()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("logger") == "cartera.access"]
    assert access and all(r["service"] == "sample" for r in access)
    assert {r["route"] for r in access} >= {"/healthz", "/v1/pid"}
    # uvicorn's own plain-text access lines are off: every line on stderr is JSON.
    assert all(line.startswith("{") for line in stderr.splitlines() if line.strip()), stderr[-2000:]


@pytest.mark.parametrize(("factory", "prefix"), [("issuer.app:create_app", "CARTERA_ISSUER_"),
                                                 ("verifier.app:create_app", "CARTERA_VERIFIER_"),
                                                 ("wallet_api.app:create_app", "CARTERA_WALLET_")])
def test_main_listens_where_the_service_settings_say(monkeypatch: pytest.MonkeyPatch, factory: str,
                                                      prefix: str) -> None:
    served: list[tuple[str, str, int]] = []
    monkeypatch.setattr(server, "serve", lambda path, host, port, *a, **k: served.append((path, host, port)))
    monkeypatch.setenv(f"{prefix}HOST", "0.0.0.0")  # noqa: S104
    monkeypatch.setenv(f"{prefix}PORT", "9123")
    server.main([factory])
    server.main([factory, "--host", "127.0.0.2"])
    server.main([factory, "--port", "9124"])
    assert served == [(factory, "0.0.0.0", 9123), (factory, "127.0.0.2", 9123), (factory, "0.0.0.0", 9124)]  # noqa: S104


@pytest.mark.parametrize(("factory", "port"), [("issuer.app:create_app", 8001), ("verifier.app:create_app", 8002),
                                               ("wallet_api.app:create_app", 8003)])
def test_main_defaults_to_each_service_own_port(monkeypatch: pytest.MonkeyPatch, factory: str, port: int) -> None:
    served: list[tuple[str, int]] = []
    monkeypatch.setattr(server, "serve", lambda path, host, p, *a, **k: served.append((host, p)))
    for name in ("CARTERA_ISSUER_", "CARTERA_VERIFIER_", "CARTERA_WALLET_"):
        monkeypatch.delenv(f"{name}HOST", raising=False)
        monkeypatch.delenv(f"{name}PORT", raising=False)
    server.main([factory])
    assert served == [("127.0.0.1", port)]
