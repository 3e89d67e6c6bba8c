"""Where citizens log in (``idp_*_url``): nowhere until configured, never the development sandbox, and
outside ``dev_mode`` only https to a host that is not this machine -- refused at start-up otherwise."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from issuer.app import create_app
from issuer.settings import IssuerSettings
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from tests.issuer.conftest import ADMIN_KEY
from tests.issuer.helpers import LIMITS
from tests.support.servers import free_port, serve

IDP_FIELDS = ("idp_authorize_url", "idp_token_url", "idp_userinfo_url")
WALLET = {"wallet": {"redirect_uris": ["https://wallet.example.org/cb"]}}


def _production(**values: object) -> IssuerSettings:
    return IssuerSettings(dev_mode=False, public_url="https://issuer.example.org", master_key=secrets.token_hex(32),
                          **values)


def test_without_configuration_there_is_no_identity_provider_and_no_login_flow() -> None:
    settings = _production(oauth_clients=WALLET)
    assert [getattr(settings, name) for name in IDP_FIELDS] == ["", "", ""]
    assert not settings.idp_configured and not settings.authorization_code_flow


@pytest.mark.parametrize("url", ["http://valid.example/o/oauth2/token", "https://127.0.0.1:8005/o/oauth2/token",
                                 "https://localhost/o/oauth2/token", "https://[::1]/token", "ftp://valid.example/t",
                                 "https:///token"])
@pytest.mark.parametrize("name", IDP_FIELDS)
def test_outside_dev_mode_a_plain_http_or_loopback_identity_provider_stops_the_start(name: str, url: str) -> None:
    master = secrets.token_hex(32)
    with pytest.raises(ValueError, match=name) as refused:
        IssuerSettings(dev_mode=False, public_url="https://issuer.example.org", master_key=master, **{name: url})
    assert master not in str(refused.value)


@pytest.mark.parametrize("name", IDP_FIELDS)
def test_a_refused_identity_provider_url_is_not_quoted_and_carries_no_user_information(name: str) -> None:
    url = "https://client:s3cret-pass@idp.example.org/o/oauth2/token"
    with pytest.raises(ValueError, match=name) as refused:
        IssuerSettings(dev_mode=False, public_url="https://issuer.example.org", master_key=secrets.token_hex(32),
                       **{name: url})
    assert "s3cret-pass" not in str(refused.value)


def test_an_identity_provider_named_in_part_stops_the_start() -> None:
    """Two of the three URLs would turn the login flow off without a word."""
    base = "https://identitats.aoc.cat"
    with pytest.raises(ValueError, match="set together or not at all"):
        _production(oauth_clients=WALLET, idp_authorize_url=f"{base}/o/oauth2/auth",
                    idp_token_url=f"{base}/o/oauth2/token")


def test_an_https_identity_provider_is_accepted_and_turns_the_flow_on() -> None:
    base = "https://identitats.aoc.cat"
    settings = _production(oauth_clients=WALLET, idp_authorize_url=f"{base}/o/oauth2/auth",
                           idp_token_url=f"{base}/o/oauth2/token", idp_userinfo_url=f"{base}/serveis-rest/getUserInfo")
    assert settings.idp_configured and settings.authorization_code_flow


def test_dev_mode_takes_the_sandbox_on_loopback_when_it_is_named() -> None:
    settings = IssuerSettings(dev_mode=True, idp_authorize_url="http://127.0.0.1:8005/o/oauth2/auth",
                              idp_token_url="http://127.0.0.1:8005/o/oauth2/token",
                              idp_userinfo_url="http://127.0.0.1:8005/serveis-rest/getUserInfo")
    assert settings.idp_configured and settings.authorization_code_flow


def test_outside_dev_mode_forwarding_login_hint_to_the_identity_provider_stops_the_start() -> None:
    """``login_hint`` is the sandbox identity provider's login without authentication: a development
    setting, refused in production as the wallet's ``idp_allow_login_hint`` is."""
    with pytest.raises(ValueError, match="idp_forward_login_hint"):
        _production(idp_forward_login_hint=True)
    assert IssuerSettings(dev_mode=True, idp_forward_login_hint=True).idp_forward_login_hint


@pytest.fixture
def no_idp(tmp_path: Path) -> Iterator[str]:
    """An issuer in dev_mode with no identity provider configured."""
    port = free_port()
    settings = IssuerSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", port=port,
                              public_url=f"http://127.0.0.1:{port}", dev_mode=True, master_key=secrets.token_hex(32),
                              admin_api_key=ADMIN_KEY, data_dir=tmp_path)
    with serve(create_app(settings, configure_logs=False), port=port) as url:
        yield url


@pytest.mark.anyio
async def test_without_an_identity_provider_the_login_flow_is_off_not_sent_to_the_sandbox(no_idp: str) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{no_idp}/v1/tenants", json={"slug": "no-idp", "name": "No IdP"},
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 201, r.text
        base = f"{no_idp}/t/no-idp"
        authorize = await http.get(f"{base}/authorize", params={
            "response_type": "code", "client_id": "any", "redirect_uri": "http://127.0.0.1:9/cb",
            "code_challenge": "x" * 43, "code_challenge_method": "S256", "state": "s"})
        metadata = (await http.get(f"{no_idp}/.well-known/oauth-authorization-server/t/no-idp")).json()
    assert authorize.status_code == 400 and "location" not in authorize.headers, authorize.headers
    assert authorize.json()["error"] == "unauthorized_client"
    assert "IDP" in authorize.json()["error_description"]
    assert metadata["grant_types_supported"] == [PRE_AUTHORIZED_CODE_GRANT]
    assert "authorization_endpoint" not in metadata
