"""`cartera sandbox`: the citizens listing through CliRunner, and `run` as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from cartera.cli import app
from tests.support.servers import free_port, wait_http

runner = CliRunner()


def test_citizens_json_lists_the_whole_population() -> None:
    result = runner.invoke(app, ["sandbox", "citizens", "--json"])
    assert result.exit_code == 0, result.output
    people = json.loads(result.output)
    assert len(people) >= 1000
    first = people[0]
    assert first["identifier"] == "12345678Z" and first["name"] == "Montserrat Puig Ferrer"
    assert set(first["products"]) == {"ECOT103", "TITOLS_UNIVERSITARIS", "RESIDENT", "VIDA_LABORAL"}
    assert first["tax_status"] == "POSITIVE"
    assert {p["tax_status"] for p in people} >= {"POSITIVE", "NEGATIVE"}
    assert len({p["identifier"] for p in people}) == len(people)


def test_citizens_filters_and_limits() -> None:
    result = runner.invoke(app, ["sandbox", "citizens", "--json", "--product", "TITOLS_UNIVERSITARIS", "--limit", "7"])
    people = json.loads(result.output)
    assert len(people) == 7 and all("TITOLS_UNIVERSITARIS" in p["products"] for p in people)
    table = runner.invoke(app, ["sandbox", "citizens", "--limit", "3"])
    assert table.exit_code == 0 and "12345678Z" in table.output


def test_unknown_product_is_a_readable_error() -> None:
    result = runner.invoke(app, ["sandbox", "citizens", "--product", "NOPE"])
    assert result.exit_code == 2 and "Unknown product" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("product", ["[/red]", "[/]", "[conceal]x", "\x1b[2Jx"])
def test_an_unknown_product_is_shown_as_typed(product: str) -> None:
    """Rich markup (or a terminal sequence) in the product is printed as text, not read as markup."""
    result = runner.invoke(app, ["sandbox", "citizens", "--product", product])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exception
    shown = " ".join(result.stderr.split())
    assert "Unknown product" in shown and "\x1b" not in shown
    assert repr(product) in shown


def test_help_explains() -> None:
    result = runner.invoke(app, ["sandbox", "--help"])
    assert result.exit_code == 0 and "run" in result.output and "citizens" in result.output


def test_run_starts_both_services_persists_keys_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    vo_port, idp_port = free_port(), free_port()
    data_dir = tmp_path / "sandbox"
    process = subprocess.Popen(
        [sys.executable, "-m", "cartera.cli", "sandbox", "run", "--viaoberta-port", str(vo_port),
         "--idp-port", str(idp_port), "--size", "50", "--data-dir", str(data_dir), "--allow-login-hint",
         "--id-token-alg", "RS256"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{vo_port}/healthz", timeout=60)
        wait_http(f"http://127.0.0.1:{idp_port}/health", timeout=60)
        assert httpx.get(f"http://127.0.0.1:{vo_port}/healthz").status_code == 200
        client = yaml.safe_load((data_dir / "idp-clients.yaml").read_text())["clients"][0]
        response = httpx.get(f"http://127.0.0.1:{idp_port}/o/oauth2/auth", params={
            "response_type": "code", "client_id": client["client_id"], "redirect_uri": client["redirect_uris"][0],
            "scope": "autenticacio_usuari", "login_hint": "12345678Z"})
        assert response.status_code == 303 and "code=" in response.headers["location"]
        idp = f"http://127.0.0.1:{idp_port}"
        discovery = httpx.get(f"{idp}/.well-known/openid-configuration").json()
        assert discovery["issuer"] == idp and discovery["id_token_signing_alg_values_supported"] == ["RS256"]
        assert [k["kty"] for k in httpx.get(discovery["jwks_uri"]).json()["keys"]] == ["RSA"]
        assert (data_dir / "platform-key.pem").stat().st_mode & 0o077 == 0
        assert (data_dir / "sources.yaml").exists()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert "Simulated Via Oberta" in output and "Sandbox stopped." in output and "Traceback" not in output
    key_before = (data_dir / "requester-key.pem").read_bytes()
    from cartera.commands.sandbox import ensure_sandbox_files

    ensure_sandbox_files(data_dir, "http://127.0.0.1:1", [])
    assert (data_dir / "requester-key.pem").read_bytes() == key_before  # persisted, not regenerated
    from issuer.sources import load_sources_config
    from tests.support.outbound import guarded_client

    # Built with a client as the issuer's (the adapters build none of their own); never used here.
    sources = load_sources_config(data_dir / "sources.yaml", http=guarded_client())
    assert set(sources) == {"tax-compliance", "university-diploma", "padro", "working-life"}


def test_run_refuses_an_id_token_algorithm_it_cannot_sign(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sandbox", "run", "--id-token-alg", "HS256", "--data-dir", str(tmp_path / "s")])
    assert result.exit_code == 2 and "--id-token-alg must be one of ES256, RS256, PS256" in result.output
    assert not (tmp_path / "s").exists()  # refused before anything is made


def test_default_idp_client_redirects_to_the_wallet_callback() -> None:
    from urllib.parse import urlsplit

    from cartera.commands.sandbox import DEFAULT_REDIRECT_URIS

    # the wallet API's callback route (wallet_api.auth), which `cartera run` registers too
    assert [urlsplit(uri).path for uri in DEFAULT_REDIRECT_URIS] == ["/v1/auth/callback"]


def test_advertised_urls_never_name_the_wildcard_address() -> None:
    from cartera.commands.sandbox import advertised_host

    assert advertised_host("0.0.0.0") == "127.0.0.1" and advertised_host("::") == "127.0.0.1"
    assert advertised_host("0.0.0.0", "sandbox") == "sandbox"  # compose: the service name
    assert advertised_host("127.0.0.1") == "127.0.0.1" and advertised_host("::1") == "[::1]"
