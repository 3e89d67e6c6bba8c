"""`cartera issuer share-vct | unshare-vct | shared-vcts`: the operator shares a vct with a tenant.

Against a real issuer over HTTP, found as `cartera run` leaves it for the other `cartera issuer`
commands: the development file's ``issuer`` member (its URL and, for these commands, the issuer's
platform admin key), or ``--url`` and ``CARTERA_ISSUER_ADMIN_API_KEY``, the issuer's own setting.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cartera.cli import app
from issuer.app import create_app
from issuer.settings import IssuerSettings
from tests.support.servers import free_port, serve

runner = CliRunner()
PADRO_VCT = "https://types.cartera.example/padro/v1"
ADMIN_KEY = "platform-" + secrets.token_urlsafe(32)
OWNER, OTHER = "ajuntament-salt", "ajuntament-olot"


@pytest.fixture
def issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A running issuer with two councils, the first owning the built-in padró, and a development file
    naming the issuer and its platform admin key."""
    port = free_port()
    settings = IssuerSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", port=port,
                              public_url=f"http://127.0.0.1:{port}", dev_mode=True, master_key=secrets.token_hex(32),
                              admin_api_key=ADMIN_KEY, data_dir=tmp_path)
    for name in ("CARTERA_ISSUER_URL", "CARTERA_ISSUER_API_KEY", "CARTERA_ISSUER_ADMIN_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with serve(create_app(settings, configure_logs=False), port=port) as url:
        keys = {}
        for slug in (OWNER, OTHER):
            created = httpx.post(f"{url}/v1/tenants", json={"slug": slug, "name": slug},
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
            assert created.status_code == 201, created.text
            keys[slug] = created.json()["api_key"]
        registered = httpx.post(f"{url}/v1/types", json={"builtin": "padro"},
                                headers={"Authorization": f"Bearer {keys[OWNER]}"}, timeout=20)
        assert registered.status_code == 201, registered.text
        dev_file = tmp_path / "cartera-dev.json"
        dev_file.write_text(json.dumps({"issuer": {
            "issuer_url": url, "admin_api_key": ADMIN_KEY,
            "tenants": {slug: {"api_key": key, "types": []} for slug, key in keys.items()}}}), encoding="utf-8")
        monkeypatch.setenv("CARTERA_DEV_FILE", str(dev_file))
        yield {"url": url, "keys": keys, "dev_file": dev_file}


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["issuer", *args])


def _err(result: Any) -> str:
    return " ".join(result.stderr.split())


def test_share_register_list_and_withdraw_with_the_development_file(issuer: dict[str, Any]) -> None:
    refused = _cli("register-type", "--builtin", "padro", "--tenant", OTHER)
    assert refused.exit_code == 1 and "vct_taken" in _err(refused)

    shared = _cli("share-vct", "--tenant", OTHER, PADRO_VCT)
    assert shared.exit_code == 0, shared.output
    assert f"{PADRO_VCT} shared with {OTHER} (owner: {OWNER})" in " ".join(shared.stdout.split())
    again = _cli("share-vct", "--tenant", OTHER, PADRO_VCT, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["owner"] == OWNER

    registered = _cli("register-type", "--builtin", "padro", "--tenant", OTHER)
    assert registered.exit_code == 0, registered.output

    listed = _cli("shared-vcts", "--tenant", OTHER, "--json")
    assert listed.exit_code == 0
    assert [(s["vct"], s["tenant"], s["owner"]) for s in json.loads(listed.stdout)] == [(PADRO_VCT, OTHER, OWNER)]
    table = _cli("shared-vcts", "--tenant", OTHER)
    assert table.exit_code == 0, table.output
    # Folded over lines at any width, never cut short: unshare-vct needs all of it.
    folded = "".join(line.split("│")[-2].strip() for line in table.stdout.splitlines() if line.count("│") == 4)
    assert folded == PADRO_VCT and OWNER in table.stdout

    withdrawn = _cli("unshare-vct", "--tenant", OTHER, PADRO_VCT)
    assert withdrawn.exit_code == 0 and f"no longer shared with {OTHER}" in withdrawn.stdout
    assert json.loads(_cli("shared-vcts", "--tenant", OTHER, "--json").stdout) == []
    twice = _cli("unshare-vct", "--tenant", OTHER, PADRO_VCT)
    assert twice.exit_code == 1 and "not_found" in _err(twice)
    # Its registered type stays; a new version is refused.
    types = _cli("types", "--tenant", OTHER, "--json")
    assert [t["vct"] for t in json.loads(types.stdout)] == [PADRO_VCT]


def test_the_admin_key_from_the_environment_and_url_option(issuer: dict[str, Any], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator of a deployed issuer: no development file, the issuer's own admin key setting."""
    monkeypatch.setenv("CARTERA_DEV_FILE", str(tmp_path / "none.json"))
    missing = _cli("share-vct", "--tenant", OTHER, PADRO_VCT, "--url", issuer["url"])
    assert missing.exit_code == 1 and "no platform admin key" in _err(missing)
    assert "CARTERA_ISSUER_ADMIN_API_KEY" in _err(missing) and "Traceback" not in missing.output
    monkeypatch.setenv("CARTERA_ISSUER_ADMIN_API_KEY", ADMIN_KEY)
    shared = _cli("share-vct", "--tenant", OTHER, PADRO_VCT, "--url", issuer["url"], "--json")
    assert shared.exit_code == 0, shared.output
    assert json.loads(shared.stdout)["tenant"] == OTHER


def test_a_tenant_key_is_not_the_platform_admin_key(issuer: dict[str, Any]) -> None:
    for slug in (OWNER, OTHER):
        refused = _cli("share-vct", "--tenant", OTHER, PADRO_VCT, "--admin-key", issuer["keys"][slug])
        assert refused.exit_code == 1 and "unauthorized" in _err(refused)
    assert json.loads(_cli("shared-vcts", "--tenant", OTHER, "--json").stdout) == []


def test_errors_are_readable(issuer: dict[str, Any]) -> None:
    unregistered = _cli("share-vct", "--tenant", OTHER, "https://types.example.org/nothing/v1")
    assert unregistered.exit_code == 1 and "not_found" in _err(unregistered)
    assert "no tenant of this issuer registered this vct" in _err(unregistered)
    owner = _cli("share-vct", "--tenant", OWNER, PADRO_VCT)
    assert owner.exit_code == 1 and "conflict" in _err(owner)
    bad_slug = _cli("share-vct", "--tenant", "../tenants", PADRO_VCT)
    assert bad_slug.exit_code == 1 and "not a valid tenant slug" in _err(bad_slug)
    assert "Traceback" not in unregistered.output + owner.output + bad_slug.output


def test_help_says_what_sharing_is_for() -> None:
    result = runner.invoke(app, ["issuer", "share-vct", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "vct_taken" in text and "padró" in text and "platform admin key" in text
    assert "CARTERA_ISSUER_ADMIN_API_KEY" in text
    withdraw = " ".join(runner.invoke(app, ["issuer", "unshare-vct", "--help"], env={"COLUMNS": "100"}).stdout.split())
    assert "credentials it issued stay valid" in withdraw
