"""The ACA-Py sidecar inherits nothing of the service's secrets.

The agent faces the internet and runs another project's code; the service's environment holds its
master key, database URL and API secrets. A stand-in ``aca-py`` (``CARTERA_ACAPY_BIN``) writes the
environment it was started with and exits; the runner starts it as it starts the real one.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aries.errors import AriesError
from aries.runner import AgentConfig, AgentProcess


def test_the_agent_gets_its_own_settings_and_an_allow_list_of_ours(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dumped = tmp_path / "environment"
    fake = tmp_path / "aca-py"
    fake.write_text(f"#!/bin/sh\nenv > {dumped}\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CARTERA_ACAPY_BIN", str(fake))
    monkeypatch.setenv("CARTERA_ISSUER_MASTER_KEY", "the-master-key")
    monkeypatch.setenv("CARTERA_ISSUER_DATABASE_URL", "postgresql://cartera:dbpassword@db/cartera")
    monkeypatch.setenv("PGPASSWORD", "dbpassword")
    monkeypatch.setenv("ACAPY_LOG_LEVEL", "info")  # an operator's ACA-Py setting is passed on
    monkeypatch.setenv("LANG", "C.UTF-8")
    agent = AgentProcess(AgentConfig(name="t", data_dir=tmp_path / "agent", inbound_port=1, admin_port=2))
    with pytest.raises(AriesError):
        agent.start(timeout=5)
    env = dict(line.split("=", 1) for line in dumped.read_text().splitlines() if "=" in line)
    assert not [name for name in env if name.startswith("CARTERA_")]
    assert "dbpassword" not in dumped.read_text() and "the-master-key" not in dumped.read_text()
    assert "VIRTUAL_ENV" not in env
    assert env["ACAPY_LOG_LEVEL"] == "info" and env["LANG"] == "C.UTF-8" and env["PATH"]
    assert env["ACAPY_ADMIN_API_KEY"] and env["ACAPY_WALLET_KEY"]  # its own secrets, by environment
