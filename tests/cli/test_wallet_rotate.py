"""`cartera wallet rotate-master-key`: readable errors (no traceback) for a bad key file, invalid settings
or a database it cannot reach."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cartera.cli import app

runner = CliRunner()
MASTER_KEY = "11" * 32


def _err(result: Any) -> str:
    return " ".join(result.stderr.split())


def _rotate(*args: str) -> Any:
    return runner.invoke(app, ["wallet", "rotate-master-key", *args])


@pytest.fixture
def wallet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("CARTERA_WALLET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CARTERA_WALLET_MASTER_KEY", MASTER_KEY)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "new.key").write_text("22" * 32 + "\n")
    return tmp_path


def _rotate(*args: str) -> Any:
    return runner.invoke(app, ["wallet", "rotate-master-key", *args])


def test_rotate_master_key_new_key_file_errors(wallet_env: Path) -> None:
    result = _rotate("--new-key-file", str(wallet_env))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "cannot use the new key file" in _err(result) and "Is a directory" in _err(result)
    result = _rotate("--new-key-file", str(wallet_env / "missing.key"))
    assert result.exit_code == 1 and "does not exist (use --generate" in _err(result)
    (wallet_env / "bad.key").write_bytes(b"\xff\xfe not a key")
    result = _rotate("--new-key-file", str(wallet_env / "bad.key"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    (wallet_env / "file").write_text("")
    result = _rotate("--new-key-file", str(wallet_env / "file" / "k"), "--generate")  # a file as folder
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "cannot use the new key file" in _err(result)


def test_rotate_master_key_invalid_settings(wallet_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTERA_WALLET_PORT", "not-a-port")
    result = _rotate("--new-key-file", str(wallet_env / "new.key"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "the wallet settings are invalid (port:" in _err(result)
    assert "CARTERA_WALLET_" in _err(result)


def test_rotate_master_key_unreachable_database(wallet_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTERA_WALLET_DATABASE_URL", "postgresql+asyncpg://u:p@127.0.0.1:1/wallet")
    result = _rotate("--new-key-file", str(wallet_env / "new.key"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "cannot rewrap the wallet's keys" in _err(result) and "ConnectionRefusedError" in _err(result)
