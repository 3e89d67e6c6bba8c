"""`cartera run` and `cartera status` without starting the system: readable errors, the files they write.

`cartera run` on an address the services cannot use; the development files written with mode 0600;
`cartera status` finding the system through CARTERA_DEV_FILE.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from cartera.cli import app
from cartera.commands.sandbox import _write_private
from cartera.system import write_private
from tests.support.servers import serve

runner = CliRunner()


def _err(result: Any) -> str:
    return " ".join(result.stderr.split())


@pytest.mark.parametrize("write", [write_private, _write_private])
def test_private_files_are_made_private_when_they_exist(tmp_path: Path, write: Any) -> None:
    path = tmp_path / "cartera-dev.json"
    path.write_text("old")
    path.chmod(0o644)
    write(path, b'{"api_key": "secret"}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b'{"api_key": "secret"}'


def _machine_addresses() -> list[str]:
    """This machine's own non-loopback addresses (``hostname -I``), if it has any."""
    hostname = shutil.which("hostname")
    if hostname is None:
        return []
    try:
        output = subprocess.run([hostname, "-I"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [address for address in output.split() if ":" not in address][:1]


@pytest.mark.parametrize("host", ["0.0.0.0", *_machine_addresses()])
def test_run_refuses_a_host_the_services_cannot_use(tmp_path: Path, host: str) -> None:
    """The services accept plain http only on loopback: on another address `cartera run` could not
    start them (it used to fail in provisioning with a traceback); it says so before doing anything."""
    result = runner.invoke(app, ["run", "--data-dir", str(tmp_path / "data"), "--host", host, "--port-base", "27900"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert f"--host {host} is not a loopback address" in _err(result)
    assert not (tmp_path / "data").exists()  # nothing provisioned


@pytest.mark.parametrize(("base", "aries"), [(65534, False), (-1, False), (65510, True)])
def test_run_refuses_a_port_base_that_leaves_the_port_range(tmp_path: Path, base: int, aries: bool) -> None:
    """It used to provision the issuer's database and then fail with a settings traceback."""
    args = ["run", "--data-dir", str(tmp_path / "data"), "--port-base", str(base), *(["--aries"] if aries else [])]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert f"--port-base {base} puts ports outside 1-65535" in _err(result), _err(result)
    assert f"choose a base from 0 to {65535 - 31 if aries else 65530}" in _err(result)
    assert not (tmp_path / "data").exists()  # nothing provisioned


def test_usable_hosts() -> None:
    from cartera.commands.run import _usable_host

    assert all(map(_usable_host, ["127.0.0.1", "127.0.0.2", "localhost"]))
    assert not any(map(_usable_host, ["0.0.0.0", "192.0.2.2", "::1", "example.org", "10.0.0.1"]))


def test_status_reads_the_development_file_named_by_cartera_dev_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def healthz(_request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    with serve(Starlette(routes=[Route("/healthz", healthz)])) as base:
        dev_file = tmp_path / "elsewhere" / "cartera-dev.json"
        dev_file.parent.mkdir()
        dev_file.write_text(json.dumps({"services": [{"name": "issuer", "title": "Issuer", "url": base,
                                                      "health_url": base + "/healthz", "openapi_url": None}]}))
        monkeypatch.chdir(tmp_path)  # no var/ here
        result = runner.invoke(app, ["status", "--json"], env={"CARTERA_DEV_FILE": str(dev_file)})
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == [{"name": "issuer", "url": base, "openapi_url": None, "healthy": True}]
        # --data-dir still wins.
        result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)], env={"CARTERA_DEV_FILE": str(dev_file)})
        assert result.exit_code == 1 and "no system provisioned" in _err(result)
