"""`cartera run` never leaves its services running behind it, nor their ACA-Py agents.

SIGQUIT stops every service as SIGTERM and Ctrl-C do; on Linux a `cartera run` killed outright
(SIGKILL, no chance to clean up) still takes its services with it (``PR_SET_PDEATHSIG``). SIGHUP (the
terminal closed) is checked by test_run_system, which stops its restarted system with it rather than
starting one more. One data folder, provisioned by the first start and reused by the others.

With ``--aries`` the issuer and verifier each start an ACA-Py agent (in a session of its own), which
only the service's clean shutdown stops: SIGHUP, SIGTERM and SIGINT sent to the whole process group of
`cartera run` (a closed terminal, Ctrl-C, ``kill -<pgid>``) must stop the agents too. Those tests need
the ACA-Py environment (``make acapy``, which ``make test`` builds): they fail without it, never skip.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartera.system import PORT_OFFSETS
from tests.cli.test_run_system import (
    CARTERA,
    _free_port_base,
    _open,
    _ports,
    _start,
    _wait_closed,
    _wait_healthy,
)
from tests.support.servers import worker_port_range


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ..., starttime at 19)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is ``pid``, with their start times (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append((int(entry.name), fields[19]))
    return found


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid`` (children, theirs, ...), with their start times."""
    found, todo = [], [pid]
    while todo:
        below = _children(todo.pop())
        found += below
        todo += [child for child, _ in below]
    return found


def _alive(processes: list[tuple[int, str]]) -> list[str]:
    """The command lines of those of ``processes`` still running (the same processes, not zombies)."""
    still = []
    for pid, started in processes:
        fields = _stat(pid)
        if fields is not None and fields[19] == started and fields[0] != "Z":
            with contextlib.suppress(OSError):
                still.append((Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
    return still


def _end(services: list[tuple[int, str]]) -> None:
    """Stop, by id, services a failing test left behind (the same processes: same start time)."""
    for pid, started in services:
        fields = _stat(pid)
        if fields is not None and fields[19] == started:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signals")


@contextlib.contextmanager
def _running(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """`cartera run`, healthy, with its four services; yields it and the services' ports. Whatever the
    test does, nothing of it is left running afterwards."""
    process = _start(data_dir, _free_port_base())
    services: list[tuple[int, str]] = []
    try:
        _wait_healthy(data_dir, process)
        services = _children(process.pid)
        assert len(services) == 4
        yield process, _ports(data_dir)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _end(services)


def test_a_quit_stops_every_service(data_dir: Path) -> None:
    with _running(data_dir) as (process, ports):
        assert all(_open(port) for port in ports)
        process.send_signal(signal.SIGQUIT)
        output, _ = process.communicate(timeout=60)
        assert "Stopped." in output and "Traceback" not in output, output
        assert _wait_closed(ports) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_services_stop_when_cartera_run_is_killed(data_dir: Path) -> None:
    with _running(data_dir) as (process, ports):
        process.kill()  # SIGKILL: `cartera run` cannot stop anything itself
        process.wait()
        assert _wait_closed(ports) == [], "services outlived `cartera run`"


@pytest.fixture(scope="module")
def aries_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signals-aries")


def _free_aries_port_base() -> int:
    """A port base whose services' ports and the agents' (base+20/21, base+30/31) are free now."""
    low, high = worker_port_range()
    for _ in range(200):
        base = random.randrange(low, high - 40, 10)
        try:
            for offset in (*PORT_OFFSETS.values(), 20, 21, 30, 31):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def _own_session() -> None:
    # A session and process group of its own, led by `cartera run`, as a shell gives a command: the
    # test signals that group. SIGINT as from a terminal (see test_run_system._default_sigint).
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
@pytest.mark.parametrize(("signum", "twice"), [(signal.SIGHUP, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["SIGHUP", "SIGTERM", "SIGINT-twice"])
def test_a_signal_to_the_process_group_stops_the_aca_py_agents_too(aries_data_dir: Path, signum: signal.Signals,
                                                                      twice: bool) -> None:
    """SIGINT is sent twice, as an impatient Ctrl-C while the services stop: that changes nothing."""
    process = subprocess.Popen([*CARTERA, "run", "--aries", "--data-dir", str(aries_data_dir),
                                "--port-base", str(_free_aries_port_base())],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_own_session)
    everything: list[tuple[int, str]] = []
    try:
        _wait_healthy(aries_data_dir, process, timeout=150)  # healthy: the services' lifespans started the agents
        everything = _descendants(process.pid)
        agents = [command for command in _alive(everything) if "aca-py" in command]
        assert len(agents) == 2, _alive(everything)
        ports = _ports(aries_data_dir)
        os.killpg(process.pid, signum)
        if twice:
            time.sleep(0.5)  # the services (and their agents) take seconds to stop
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
        output, _ = process.communicate(timeout=90)
        assert "Stopped." in output and "Traceback" not in output, output
        assert process.returncode == 0, output
        assert _wait_closed(ports) == []
        deadline = time.monotonic() + 30
        while _alive(everything) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _alive(everything) == [], "left running after `cartera run` stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _end(everything)



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER and /proc are Linux only")
def test_the_agent_of_a_service_that_died_is_stopped_with_the_rest(aries_data_dir: Path) -> None:
    """A service killed outright cannot stop its agent; the agent becomes `cartera run`'s child (the
    subreaper), which stops it with everything else."""
    process = subprocess.Popen([*CARTERA, "run", "--aries", "--data-dir", str(aries_data_dir),
                                "--port-base", str(_free_aries_port_base())],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_own_session)
    everything: list[tuple[int, str]] = []
    try:
        _wait_healthy(aries_data_dir, process, timeout=150)
        everything = _descendants(process.pid)
        issuer = [pid for pid, _ in _children(process.pid)
                  if b"issuer.app" in (Path("/proc") / str(pid) / "cmdline").read_bytes()]
        assert len(issuer) == 1 and any("aca-py" in command for command in _alive(_children(issuer[0])))
        os.kill(issuer[0], signal.SIGKILL)
        output, _ = process.communicate(timeout=90)
        # "issuer stopped unexpectedly", or "... exited during start-up" if `cartera run` was still
        # polling the health checks the test saw answer
        assert "error:" in output and "Traceback" not in output, output
        assert process.returncode == 1
        deadline = time.monotonic() + 30
        while _alive(everything) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _alive(everything) == [], "left running after `cartera run` stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _end(everything)
