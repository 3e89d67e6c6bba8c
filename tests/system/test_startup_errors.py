"""A service that will not start for a bad setting says which setting and why, never the value given:
values are passwords in database URLs, webhook secrets and keys, and start-up output ends up in logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Zq7-not-for-logs-4711"


def _start(factory: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARTERA_")}
    return subprocess.run([sys.executable, "-m", "service_kit.server", factory, *args],
                          cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False)


CASES = {
    # a nested model's error (a SQL connection of the issuer's tenants: its URL holds a password)
    "issuer-sql-connection": ("issuer.app:create_app", {
        "CARTERA_ISSUER_SQL_CONNECTIONS": json.dumps(
            {"registry": {"url": f"postgresql://reader:{SECRET}@db/reg", "tenants": []}})},
     "sql_connections"),
    # a model validator's error (its input is every setting, the webhook HMAC secret among them)
    "wallet-webhook": ("wallet_api.app:create_app", {
        "CARTERA_WALLET_WEBHOOK_URL": "http://push.example.org/hook",
        "CARTERA_WALLET_WEBHOOK_SECRET": SECRET,
        "CARTERA_WALLET_DATABASE_URL": f"postgresql+asyncpg://cartera:{SECRET}@postgres/cartera_wallet"},
     "webhook_url"),
    # a field's own error
    "verifier-port": ("verifier.app:create_app", {"CARTERA_VERIFIER_PORT": SECRET}, "port"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("listen", ["from-settings", "given", "given-two-workers"])
def test_startup_validation_error_names_the_setting_but_never_its_value(case: str, listen: str) -> None:
    factory, env, setting = CASES[case]
    workers = "2" if listen == "given-two-workers" else "1"
    args = () if listen == "from-settings" else ("--host", "127.0.0.1", "--port", "1", "--workers", workers)
    result = _start(factory, env, *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert setting in output, output
    assert SECRET not in output, output
    assert "input_value" not in output
    # Reported once, by the starting process, as the deployment starts it (several workers): no traceback.
    assert "Traceback" not in output, output


def test_verifier_with_a_missing_ca_key_file_says_which_setting(tmp_path: Path) -> None:
    result = _start("verifier.app:create_app", {
        "CARTERA_VERIFIER_DEV_MODE": "true", "CARTERA_VERIFIER_DATA_DIR": str(tmp_path), "CARTERA_VERIFIER_DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        "CARTERA_VERIFIER_RP_CA_KEY_FILE": "/nonexistent/relying-parties-ca-key.pem",
        "CARTERA_VERIFIER_RP_CA_CERT_FILE": "/nonexistent/relying-parties-ca.pem"},
        "--host", "127.0.0.1", "--port", "1", "--workers", "1")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "CARTERA_VERIFIER_RP_CA_KEY_FILE: cannot read /nonexistent/relying-parties-ca-key.pem" in output, output


def test_verifier_with_a_ca_key_file_that_holds_no_key_says_which_setting(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("not a key", encoding="utf-8")
    (tmp_path / "ca.pem").write_text("", encoding="utf-8")
    result = _start("verifier.app:create_app", {
        "CARTERA_VERIFIER_DEV_MODE": "true", "CARTERA_VERIFIER_DATA_DIR": str(tmp_path),
        "CARTERA_VERIFIER_DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        "CARTERA_VERIFIER_RP_CA_KEY_FILE": str(tmp_path / "key.pem"),
        "CARTERA_VERIFIER_RP_CA_CERT_FILE": str(tmp_path / "ca.pem")},
        "--host", "127.0.0.1", "--port", "1", "--workers", "1")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"CARTERA_VERIFIER_RP_CA_KEY_FILE: {tmp_path / 'key.pem'} is not what it should hold" in output, output
    assert "Traceback" not in output


@pytest.mark.parametrize("service", ["issuer", "verifier"])
def test_platform_admin_key_is_long_outside_dev_mode(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    from pydantic import ValidationError

    from issuer.settings import IssuerSettings
    from verifier.settings import VerifierSettings

    settings = {"issuer": IssuerSettings, "verifier": VerifierSettings}[service]
    for variable in [v for v in os.environ if v.startswith("CARTERA_")]:
        monkeypatch.delenv(variable)
    with pytest.raises(ValidationError, match="admin_api_key must be at least 32") as raised:
        settings(admin_api_key="change-me-verifier-platform-key")  # 31 characters
    assert "change-me" not in str(raised.value)
    assert settings(admin_api_key="x" * 32).admin_api_key is not None
    assert settings(admin_api_key="short", dev_mode=True).dev_mode
    assert settings().admin_api_key is None  # none: no platform admin API


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_file_the_factory_cannot_read_stops_the_start_once_without_a_traceback(tmp_path: Path, workers: str) -> None:
    # With several workers the factory runs in each child: an error there used to be printed with a
    # traceback by every worker, and uvicorn replaced the dead workers for ever (the start never failed).
    result = _start("issuer.app:create_app", {
        "CARTERA_ISSUER_DEV_MODE": "true", "CARTERA_ISSUER_DATA_DIR": str(tmp_path),
        "CARTERA_ISSUER_DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        "CARTERA_ISSUER_CA_KEY_FILE": str(tmp_path), "CARTERA_ISSUER_CA_CERT_FILE": str(tmp_path)},
        "--host", "127.0.0.1", "--port", "1", "--workers", workers)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert output.count("configuration error: CARTERA_ISSUER_CA_KEY_FILE cannot be read") == 1, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_missing_master_key_outside_dev_mode_names_the_settings(tmp_path: Path, workers: str) -> None:
    result = _start("verifier.app:create_app", {
        "CARTERA_VERIFIER_DATA_DIR": str(tmp_path), "CARTERA_VERIFIER_DATABASE_URL": "sqlite+aiosqlite:///:memory:"},
        "--host", "127.0.0.1", "--port", "1", "--workers", workers)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert output.count("configuration error: the master key (CARTERA_VERIFIER_MASTER_KEY_FILE or "
                        "CARTERA_VERIFIER_MASTER_KEY)") == 1, output
    assert "Traceback" not in output, output
