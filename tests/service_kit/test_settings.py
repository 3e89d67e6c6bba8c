"""ServiceSettings: environment variables per service prefix, defaults, validation, secrets."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from service_kit.settings import ServiceSettings, settings_reference


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CARTERA_DEMO_")
    service_name: ClassVar[str] = "demo"


def test_defaults_derive_from_service_name_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DATABASE_URL", "PUBLIC_URL", "PORT", "DATA_DIR", "CORS_ORIGINS"):
        monkeypatch.delenv(f"CARTERA_DEMO_{var}", raising=False)
    s = DemoSettings(port=8011)
    assert s.database_url == "sqlite+aiosqlite:///var/demo.db"
    assert s.public_url == "http://127.0.0.1:8011"
    assert s.cors_origins == []
    assert s.dev_mode is False
    assert s.master_key is None


def test_environment_with_the_service_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CARTERA_DEMO_DATABASE_URL", "postgresql+asyncpg://u:p@db/demo")
    monkeypatch.setenv("CARTERA_DEMO_PUBLIC_URL", "https://demo.example.org/")
    monkeypatch.setenv("CARTERA_DEMO_CORS_ORIGINS", "https://a.example, https://b.example:8443")
    monkeypatch.setenv("CARTERA_DEMO_MASTER_KEY", "super-secret-value")
    monkeypatch.setenv("CARTERA_DEMO_DEV_MODE", "true")
    monkeypatch.setenv("CARTERA_DEMO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CARTERA_OTHER_PORT", "1")  # another service's variable is not ours
    s = DemoSettings()
    assert s.database_url == "postgresql+asyncpg://u:p@db/demo"
    assert s.public_url == "https://demo.example.org"
    assert s.cors_origins == ["https://a.example", "https://b.example:8443"]
    assert s.dev_mode is True and s.port == 8000 and s.data_dir == tmp_path
    assert s.master_key is not None and s.master_key.get_secret_value() == "super-secret-value"
    assert "super-secret-value" not in repr(s) and "super-secret-value" not in str(s)


def test_cors_origins_as_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTERA_DEMO_CORS_ORIGINS", '["https://a.example"]')
    assert DemoSettings().cors_origins == ["https://a.example"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("public_url", "ftp://x"),
        ("public_url", "https://x.example/?a=1"),
        ("public_url", "not a url"),
        ("cors_origins", ["https://a.example/path"]),
        ("cors_origins", ["*"]),
        ("database_url", "var/x.db"),
        ("port", 0),
        ("log_level", "verbose"),
        ("max_body_bytes", 10),
        ("trusted_proxies", ["proxy.example"]),
        ("internal_hosts", "not a list"),
    ],
)
def test_bad_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        DemoSettings(**{field: value})


def test_reference_lists_every_setting_with_a_description() -> None:
    rows = settings_reference(DemoSettings)
    names = {row["env"] for row in rows}
    assert {
        "CARTERA_DEMO_DATABASE_URL",
        "CARTERA_DEMO_PUBLIC_URL",
        "CARTERA_DEMO_HOST",
        "CARTERA_DEMO_PORT",
        "CARTERA_DEMO_LOG_LEVEL",
        "CARTERA_DEMO_DATA_DIR",
        "CARTERA_DEMO_MASTER_KEY",
        "CARTERA_DEMO_MASTER_KEY_FILE",
        "CARTERA_DEMO_DATABASE_PRE_PING",
        "CARTERA_DEMO_DATABASE_POOL_SIZE",
        "CARTERA_DEMO_MAX_BODY_BYTES",
        "CARTERA_DEMO_CORS_ORIGINS",
        "CARTERA_DEMO_TRUSTED_PROXIES",
        "CARTERA_DEMO_RATE_LIMITS_ENABLED",
        "CARTERA_DEMO_INTERNAL_HOSTS",
        "CARTERA_DEMO_METRICS_TOKEN",
        "CARTERA_DEMO_DEV_MODE",
    } == names
    assert all(row["description"] for row in rows)
    port = next(row for row in rows if row["env"] == "CARTERA_DEMO_PORT")
    assert port["default"] == "8000"
