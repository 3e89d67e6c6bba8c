"""The CA that certifies tenants' keys is read from files: a file that cannot be read stops the start
with the setting's name, and one gone while running makes tenant creation a clear 503, not a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from issuer.app import create_app
from service_kit.settings import ConfigurationError
from tests.issuer.conftest import ADMIN_KEY, Sandbox, make_settings
from tests.support.servers import free_port, serve


def test_an_unreadable_ca_key_file_stops_the_start_naming_the_setting(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", free_port(), tmp_path, tmp_path)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(ConfigurationError, match="CARTERA_ISSUER_CA_KEY_FILE cannot be read"):
        create_app(settings, configure_logs=False)
    (tmp_path / "ca.key").write_text("not a key", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="CARTERA_ISSUER_CA_KEY_FILE cannot be read or parsed"):
        create_app(settings, configure_logs=False)


@pytest.fixture
def running(sandbox: Sandbox, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", port, tmp_path, tmp_path)
    with serve(create_app(settings, configure_logs=False), port=port) as url:
        yield url


def test_a_ca_key_gone_while_running_makes_tenant_creation_a_clear_503(running: str, sandbox: Sandbox,
                                                                       tmp_path: Path) -> None:
    url = running
    key_file = tmp_path / "ca.key"
    key_pem = key_file.read_bytes()
    key_file.unlink()
    r = httpx.post(f"{url}/v1/tenants", json={"slug": "no-ca", "name": "No CA"},
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "temporarily_unavailable" and r.headers["retry-after"] == "60"
    assert "CARTERA_ISSUER_CA_KEY_FILE" in r.json()["error_description"]
    # Nothing half-made: once the file is back, the same slug is free.
    key_file.write_bytes(key_pem)
    again = httpx.post(f"{url}/v1/tenants", json={"slug": "no-ca", "name": "No CA"},
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert again.status_code == 201, again.text
