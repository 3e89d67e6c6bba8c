"""`cartera demo --start`: the whole scenario of issue 7 as a smoke test, run exactly as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CARTERA = [sys.executable, "-m", "cartera.cli"]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CARTERA, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "120"})


def test_demo_start_runs_every_step_and_stops_the_system() -> None:
    result = _cli("demo", "--start", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    for step in range(1, 9):
        assert f"{step}. " in out
    assert out.count("✓") == 8
    assert "Montserrat Puig Ferrer" in out  # logged in through the sandbox identity provider
    assert "verified" in out and "complianceStatus" in out  # the verifier's result API
    assert "verifier.revoked" in out or "no longer offers it" in out
    assert "was revoked by its issuer" in out  # the wallet's alert
    assert "Demo complete" in out


def test_demo_without_a_system_explains_what_to_do(tmp_path: Path) -> None:
    result = _cli("demo", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "no running system" in result.stderr and "cartera demo --start" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_against_services_that_are_down_fails_cleanly(tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"
    (tmp_path / "cartera-dev.json").write_text(json.dumps({"services": [
        {"name": "wallet", "url": dead, "health_url": f"{dead}/healthz"}]}))
    result = _cli("demo", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "not answering" in result.stderr and "Traceback" not in result.stderr
