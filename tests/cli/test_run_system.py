"""`cartera run` starts the whole system as separate processes; `cartera status` sees it; Ctrl-C and
SIGHUP stop it.

This is what `make run` does, on a temporary data folder and free ports.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cartera.system import DEV_FILE_NAME, PORT_OFFSETS, load_dev_file
from ssi import x509 as ssi_x509
from tests.support.servers import worker_port_range

CARTERA = [sys.executable, "-m", "cartera.cli"]


def _free_port_base() -> int:
    for _ in range(200):
        low, high = worker_port_range()  # below the ephemeral range, apart from the other xdist worker's
        base = random.randrange(low, high - 10, 10)
        try:
            for offset in PORT_OFFSETS.values():
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CARTERA, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def _default_sigint() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and the child would
    # inherit that: `cartera run` must get Ctrl-C as from a terminal, or each stop waits out its timeout.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(data_dir: Path, base: int) -> subprocess.Popen[str]:
    return subprocess.Popen([*CARTERA, "run", "--data-dir", str(data_dir), "--port-base", str(base)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_default_sigint)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_healthy(data_dir: Path, process: subprocess.Popen[str], timeout: float = 90) -> list[dict]:
    """Until every service of the data folder's development file answers its health URL, the check
    `cartera status` makes. Polled from here: a `cartera status` process per poll took half a CPU second from
    the services it waited for; the tests below run the command itself where it is what they check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"cartera run exited early:\n{process.stdout.read() if process.stdout else ''}")
        services = load_dev_file(data_dir / DEV_FILE_NAME).get("services") or []
        if services and all(_answers(service["health_url"]) for service in services):
            return services
        time.sleep(0.2)
    raise AssertionError("the system did not become healthy")


def _stop(process: subprocess.Popen[str], signum: signal.Signals = signal.SIGINT) -> str:
    process.send_signal(signum)
    output, _ = process.communicate(timeout=30)
    return output


def _ports(data_dir: Path) -> list[int]:
    info = json.loads((data_dir / DEV_FILE_NAME).read_text())
    return [int(service["url"].rsplit(":", 1)[1]) for service in info["services"]]


def _open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_closed(ports: list[int], timeout: float = 45) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        still = [port for port in ports if _open(port)]
        if not still or time.monotonic() > deadline:
            return still
        time.sleep(0.3)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, subprocess.Popen[str]]]:
    data_dir = tmp_path_factory.mktemp("system")
    base = _free_port_base()
    process = _start(data_dir, base)
    try:
        _wait_healthy(data_dir, process)
        yield data_dir, base, process
    finally:
        if process.poll() is None:
            try:
                _stop(process)
            except subprocess.TimeoutExpired:
                process.kill()  # not left running for the rest of the session; PR_SET_PDEATHSIG stops its services
                process.communicate()


def test_every_service_is_up_on_its_own_port(system: tuple[Path, int, subprocess.Popen[str]]) -> None:
    data_dir, base, _ = system
    rows = json.loads(_cli("status", "--data-dir", str(data_dir), "--json").stdout)
    assert {row["name"] for row in rows} == {"sandbox", "viaoberta", "issuer", "verifier", "wallet"}
    assert all(row["healthy"] for row in rows)
    ports = {row["name"]: int(row["url"].rsplit(":", 1)[1]) for row in rows}
    assert ports["issuer"] == base + 1 and ports["wallet"] == base + 3
    assert rows[2]["openapi_url"].endswith("/openapi.json")


def test_operator_commands_work_with_no_configuration(system: tuple[Path, int, subprocess.Popen[str]]) -> None:
    data_dir, _, _ = system
    env = {"CARTERA_DEV_FILE": str(data_dir / "cartera-dev.json")}
    offer = _cli("issuer", "offer", "--type", "tax-compliance", "--subject", "12345678Z", "--name", "Titular de Prova", "--json", env=env)
    assert offer.returncode == 0, offer.stderr
    assert json.loads(offer.stdout)["offer_uri"].startswith("openid-credential-offer://")
    request = _cli("verifier", "request", "--template", "grant-application", "--json", env=env)
    assert request.returncode == 0, request.stderr
    assert json.loads(request.stdout)["uri"].startswith("openid4vp://")
    assert (data_dir / "cartera-dev.json").stat().st_mode & 0o077 == 0  # API keys: owner only
    for name in ("issuers-ca", "relying-parties-ca"):
        ca = ssi_x509.load_certificate((data_dir / "dev-pki" / f"{name}.pem").read_bytes())
        assert "DEVELOPMENT" in ca.subject.rfc4514_string()
        assert (data_dir / "dev-pki" / f"{name}-key.pem").stat().st_mode & 0o077 == 0


def test_ctrl_c_stops_everything_a_restart_reuses_the_provisioning_and_a_hangup_stops_it(
        system: tuple[Path, int, subprocess.Popen[str]]) -> None:
    """The restarted system is then stopped with SIGHUP (the terminal closed), which must stop every
    service too: that stop is needed anyway, and a start of its own would cost a whole system's start-up
    (test_run_signals checks SIGQUIT and SIGKILL)."""
    data_dir, base, process = system
    before = json.loads((data_dir / "cartera-dev.json").read_text())
    output = _stop(process)
    assert "Stopped." in output and "Traceback" not in output
    assert _cli("status", "--data-dir", str(data_dir), "--json").returncode == 1  # nothing answers now
    again = _start(data_dir, base)
    try:
        _wait_healthy(data_dir, again)
        after = json.loads((data_dir / "cartera-dev.json").read_text())
        keys = {slug: t["api_key"] for slug, t in after["issuer"]["tenants"].items()}
        assert keys == {slug: t["api_key"] for slug, t in before["issuer"]["tenants"].items()}
        agencies = {slug: a["api_key"] for slug, a in after["verifier"]["agencies"].items()}
        assert agencies == {slug: a["api_key"] for slug, a in before["verifier"]["agencies"].items()}
        ports = _ports(data_dir)
        assert all(_open(port) for port in ports)
        output = _stop(again, signal.SIGHUP)
        assert "Stopped." in output and "Traceback" not in output, output
        assert _wait_closed(ports) == []
    finally:
        if again.poll() is None:
            again.kill()  # its services get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            again.wait()
