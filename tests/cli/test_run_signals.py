"""`cartera run` never leaves its services running behind it.

SIGQUIT stops every service as SIGTERM and Ctrl-C do; on Linux a `cartera run` killed outright
(SIGKILL, no chance to clean up) still takes its services with it (``PR_SET_PDEATHSIG``). SIGHUP (the
terminal closed) is checked by test_run_system, which stops its restarted system with it rather than
starting one more. One data folder, provisioned by the first start and reused by the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_run_system import _free_port_base, _open, _ports, _start, _wait_closed, _wait_healthy


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
