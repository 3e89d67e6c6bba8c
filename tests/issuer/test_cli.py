"""``cartera issuer`` against the running issuer, configured only by the development file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartera.cli import app
from sandbox.population import DEMO_EVERYTHING
from tests.issuer.conftest import IssuerEnv

runner = CliRunner()


@pytest.fixture
def dev_file(issuer_env: IssuerEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cartera-dev.json"
    path.write_text(json.dumps({"issuer": issuer_env.provisioned}), encoding="utf-8")
    monkeypatch.setenv("CARTERA_DEV_FILE", str(path))
    for name in ("CARTERA_ISSUER_URL", "CARTERA_ISSUER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_offer_json_then_revoke_with_no_further_configuration(dev_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "offer.png"
    result = runner.invoke(app, ["issuer", "offer", "--type", "padro", "--subject", DEMO_EVERYTHING.lower(), "--json",
                                 "--png", str(png)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["offer_uri"].startswith("openid-credential-offer://?credential_offer_uri=")
    assert out["tx_code"].isdigit() and out["credential_id"].startswith("c_")
    assert png.read_bytes().startswith(b"\x89PNG")
    # the offer was made by the tenant that issues padró
    assert "ajuntament-girona" in out["credential_offer_uri"]
    result = runner.invoke(app, ["issuer", "suspend", out["credential_id"], "--tenant", "ajuntament-girona"])
    assert result.exit_code == 1 and "not_found" in result.output  # nothing issued yet: no record


def test_offer_prints_a_terminal_qr_and_the_code(dev_file: Path) -> None:
    result = runner.invoke(app, ["issuer", "offer", "-t", "tax-compliance", "-s", DEMO_EVERYTHING, "--name", "Titular de Prova"])
    assert result.exit_code == 0
    assert "\u2588" in result.output and "Transaction code" in result.output


def test_types_and_credentials_listing(dev_file: Path) -> None:
    result = runner.invoke(app, ["issuer", "types", "--tenant", "aoc-tax", "--json"])
    assert result.exit_code == 0
    assert {t["id"] for t in json.loads(result.output)} == {"tax-compliance", "working-life"}
    result = runner.invoke(app, ["issuer", "credentials", "--tenant", "aoc-tax"])
    assert result.exit_code == 0 and "in total" in result.output


def test_errors_are_readable_not_tracebacks(dev_file: Path) -> None:
    result = runner.invoke(app, ["issuer", "offer", "--type", "nope", "--subject", "12345678Z", "--tenant", "aoc-tax"])
    assert result.exit_code == 1 and "invalid_request" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["issuer", "revoke", "a/b"])
    assert result.exit_code == 1 and "not a valid credential id" in result.output
    result = runner.invoke(app, ["issuer", "types", "--url", "http://127.0.0.1:9", "--api-key", "ck_x"])
    assert result.exit_code == 1 and "cannot reach" in result.output


def test_api_keys_list_and_revoke(issuer_env: IssuerEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from tests.issuer.conftest import ADMIN_KEY

    for name in ("CARTERA_ISSUER_URL", "CARTERA_ISSUER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    slug = "cli-keys-" + __import__("secrets").token_hex(3)
    created = httpx.post(f"{issuer_env.url}/v1/tenants", json={"slug": slug, "name": slug},
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20).json()
    first = created["api_key"]
    other = httpx.post(f"{issuer_env.url}/v1/tenant/api-keys", headers={"Authorization": f"Bearer {first}"},
                       timeout=20).json()
    conn = ["--url", issuer_env.url, "--api-key", first]
    result = runner.invoke(app, ["issuer", "api-keys", "list", *conn, "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [k["revoked"] for k in listed] == [False, False] and first not in result.output
    first_id = next(k["key_id"] for k in listed if k["current"])
    result = runner.invoke(app, ["issuer", "api-keys", "list", *conn])
    assert result.exit_code == 0 and other["key_id"] in result.output and "this one" in result.output
    result = runner.invoke(app, ["issuer", "api-keys", "revoke", other["key_id"], *conn])
    assert result.exit_code == 0 and f"API key {other['key_id']} revoked" in result.output
    result = runner.invoke(app, ["issuer", "api-keys", "list", *conn, "--json"])
    assert {k["key_id"]: k["revoked"] for k in json.loads(result.output)} == {first_id: False, other["key_id"]: True}
    # readable refusals, no tracebacks: the last key, an unknown id, an id that is not one
    result = runner.invoke(app, ["issuer", "api-keys", "revoke", first_id, *conn])
    assert result.exit_code == 1 and "conflict" in result.output and "last" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["issuer", "api-keys", "revoke", "k_nosuch", *conn])
    assert result.exit_code == 1 and "not_found" in result.output
    result = runner.invoke(app, ["issuer", "api-keys", "revoke", "../tenant", *conn])
    assert result.exit_code == 1 and "not a valid key id" in result.output
