"""service_kit.server.serve: an import-string factory under uvicorn, with two worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

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
