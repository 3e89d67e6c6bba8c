"""Registered wallet clients (``oauth_clients``): only a listed ``client_id`` with one of its redirect URIs,
exactly, may use the authorization code flow, and a request that fails that check is answered with a JSON
400, never a redirect (RFC 6749 §3.1.2.2, §4.1.2.1): no phishing links with an attacker's redirect URI,
no open redirector. Outside ``dev_mode`` with no client registered the flow is off."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from issuer.app import create_app
from issuer.provisioning import provision_demo
from issuer.settings import IssuerSettings
from sandbox.idp_service import IdPSandboxConfig, RegisteredClient
from sandbox.idp_service import create_app as create_idp
from sandbox.population import DEMO_EVERYTHING
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from tests.issuer.conftest import IDP_SECRET, TENANTS, IssuerEnv, Sandbox, make_settings
from tests.issuer.helpers import LIMITS, create_offer
from tests.issuer.test_authorization_code import _pkce, _query
from tests.support.servers import free_port, serve
from tests.support.wallet_client import WalletClient

pytestmark = pytest.mark.anyio

CLIENT = "registered-wallet"
REDIRECT = "http://127.0.0.1:9/issuance/callback"
OTHER_REDIRECT = "http://127.0.0.1:9/other"  # also registered for CLIENT
PHISH = "https://phish.example/login"


def _rebuilt(settings: IssuerSettings, **changes: Any) -> IssuerSettings:
    """``settings`` with ``changes``, validated as from the environment (``model_copy`` does not validate)."""
    values = {name: getattr(settings, name) for name in type(settings).model_fields}
    return type(settings)(**{**values, **changes})


def _provision(sandbox: Sandbox, settings: IssuerSettings) -> dict[str, Any]:
    return asyncio.run(provision_demo(
        settings, ca_key=sandbox.ca_key, ca_cert=sandbox.ca_cert, viaoberta_url=sandbox.viaoberta_url,
        viaoberta_platform_cert_pem=sandbox.platform_cert_pem, requester_key_pem=sandbox.requester_key_pem,
        requester_cert_pem=sandbox.requester_cert_pem))


@pytest.fixture(scope="module")
def registered(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    """An issuer (dev_mode) with one registered client, and an identity provider that knows its callbacks."""
    folder = tmp_path_factory.mktemp("issuer-registered")
    port = free_port()
    idp = IdPSandboxConfig(clients=[RegisteredClient("cartera-issuer", IDP_SECRET, tuple(
        f"http://127.0.0.1:{port}/t/{slug}/login/callback" for slug in TENANTS))], allow_login_hint=True)
    with serve(create_idp(idp)) as idp_url:
        settings = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", port, folder, folder)
        settings = _rebuilt(settings, idp_authorize_url=f"{idp_url}/o/oauth2/auth",
                            idp_token_url=f"{idp_url}/o/oauth2/token",
                            idp_userinfo_url=f"{idp_url}/serveis-rest/getUserInfo",
                            oauth_clients={CLIENT: {"redirect_uris": [REDIRECT, OTHER_REDIRECT], "name": "test wallet"}})
        provisioned = _provision(sandbox, settings)
        keys = {slug: t["api_key"] for slug, t in provisioned["tenants"].items()}
        with serve(create_app(settings, configure_logs=False), port=port) as url:
            yield IssuerEnv(url, settings, keys, sandbox, provisioned)


@pytest.fixture(scope="module")
def production(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    """An issuer outside dev_mode with no client registered (provisioned as in development)."""
    folder = tmp_path_factory.mktemp("issuer-no-clients")
    port = free_port()
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", port, folder, folder)
    provisioned = _provision(sandbox, settings)
    keys = {slug: t["api_key"] for slug, t in provisioned["tenants"].items()}
    settings = settings.model_copy(update={"dev_mode": False})
    with serve(create_app(settings, configure_logs=False), port=port) as url:
        yield IssuerEnv(url, settings, keys, sandbox, provisioned)


def _request(client_id: str, redirect_uri: str, **extra: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
            "code_challenge": _pkce()[1], "code_challenge_method": "S256", "state": "s1",
            "scope": "university-diploma", **extra}


def _assert_refused_without_redirect(response: httpx.Response, error: str, *words: str) -> None:
    assert response.status_code == 400, (response.status_code, response.headers.get("location"), response.text)
    assert "location" not in response.headers
    body = response.json()
    assert body["error"] == error, body
    for word in words:
        assert word in body["error_description"], body


# -- a registered client --------------------------------------------------------------------------------

@pytest.mark.parametrize("use_par", [True, False])
async def test_a_registered_client_with_its_redirect_uri_gets_the_credential(registered: IssuerEnv,
                                                                             use_par: bool) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        wallet = WalletClient(http, client_id=CLIENT, redirect_uri=OTHER_REDIRECT if use_par else REDIRECT)
        result = await wallet.authorize_and_receive(registered.issuer("uni-barcelona"), "university-diploma",
                                                    login_hint=DEMO_EVERYTHING, use_par=use_par)
    assert len(result.credentials) == 1


async def test_a_registered_clients_bad_request_still_goes_back_to_its_redirect_uri(registered: IssuerEnv) -> None:
    base = registered.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        response = await http.get(f"{base}/authorize", params=_request(CLIENT, REDIRECT, response_type="nope"))
    assert response.status_code == 303
    assert response.headers["location"].startswith(REDIRECT + "?")
    back = _query(response.headers["location"])
    assert (back["error"], back["state"], back["iss"]) == ("unsupported_response_type", "s1", base)


# -- an unregistered client, or another redirect URI: JSON 400, no redirect ----------------------------

UNREGISTERED = [
    pytest.param("x", REDIRECT, "unauthorized_client", "client_id", id="unknown-client"),
    pytest.param("x", PHISH, "unauthorized_client", "client_id", id="unknown-client-phishing-uri"),
    pytest.param(CLIENT, PHISH, "invalid_request", "redirect_uri", id="another-redirect-uri"),
    pytest.param(CLIENT, REDIRECT + "/", "invalid_request", "redirect_uri", id="not-exactly-the-redirect-uri"),
    pytest.param(CLIENT, REDIRECT + "?next=https://phish.example", "invalid_request", "redirect_uri",
                 id="redirect-uri-with-a-query"),
]


@pytest.mark.parametrize(("client_id", "redirect_uri", "error", "word"), UNREGISTERED)
async def test_par_refuses_an_unregistered_client_or_redirect_uri(registered: IssuerEnv, client_id: str,
                                                                  redirect_uri: str, error: str, word: str) -> None:
    base = registered.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        response = await http.post(f"{base}/par", data=_request(client_id, redirect_uri))
    _assert_refused_without_redirect(response, error, word)


@pytest.mark.parametrize(("client_id", "redirect_uri", "error", "word"), UNREGISTERED)
@pytest.mark.parametrize("bad", [{}, {"response_type": "nope"}, {"code_challenge_method": "plain"},
                                 {"scope": "no-such-type"}], ids=["otherwise-good", "bad-response-type",
                                                                  "no-pkce", "bad-scope"])
async def test_authorize_refuses_an_unregistered_client_or_redirect_uri_without_redirecting(
        registered: IssuerEnv, client_id: str, redirect_uri: str, error: str, word: str, bad: dict[str, str]) -> None:
    """The open-redirect case included: a bad parameter beside an unregistered client is not sent to
    the (attacker's) redirect URI."""
    base = registered.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        response = await http.get(f"{base}/authorize", params=_request(client_id, redirect_uri, **bad))
    _assert_refused_without_redirect(response, error, word)


async def test_the_open_redirect_link_from_the_review_is_refused(registered: IssuerEnv) -> None:
    base = registered.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        response = await http.get(f"{base}/authorize?" + urlencode(
            {"client_id": "x", "redirect_uri": PHISH, "response_type": "nope"}))
    _assert_refused_without_redirect(response, "unauthorized_client", "client_id")


async def test_a_pushed_request_is_taken_only_by_its_registered_client(registered: IssuerEnv) -> None:
    base = registered.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        pushed = await http.post(f"{base}/par", data=_request(CLIENT, REDIRECT))
        request_uri = pushed.json()["request_uri"]
        other = await http.get(f"{base}/authorize", params={"client_id": "x", "request_uri": request_uri})
        right = await http.get(f"{base}/authorize", params={"client_id": CLIENT, "request_uri": request_uri})
    _assert_refused_without_redirect(other, "unauthorized_client", "client_id")
    assert right.status_code == 303 and right.headers["location"].startswith(registered.settings.idp_authorize_url)


async def test_the_token_endpoint_refuses_an_unregistered_client_without_spending_the_code(
        registered: IssuerEnv) -> None:
    base = registered.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        verifier, challenge = _pkce()
        pushed = await http.post(f"{base}/par", data={**_request(CLIENT, REDIRECT, login_hint=DEMO_EVERYTHING),
                                                      "code_challenge": challenge})
        url = f"{base}/authorize?" + urlencode({"client_id": CLIENT, "request_uri": pushed.json()["request_uri"]})
        while not url.startswith(REDIRECT):
            response = await http.get(url)
            assert response.status_code in (302, 303), response.text
            url = response.headers["location"]
        form = {"grant_type": "authorization_code", "code": _query(url)["code"], "code_verifier": verifier,
                "redirect_uri": REDIRECT}
        stranger = await http.post(f"{base}/token", data={**form, "client_id": "x"})
        right = await http.post(f"{base}/token", data={**form, "client_id": CLIENT})
    assert stranger.status_code == 400 and stranger.json()["error"] == "unauthorized_client", stranger.text
    assert right.status_code == 200, right.text


# -- no client registered, outside dev_mode: the flow is off (fail closed) ------------------------------

async def test_outside_dev_mode_without_registered_clients_the_authorization_code_flow_is_refused(
        production: IssuerEnv) -> None:
    base = production.issuer("uni-barcelona")
    wallet_uri = "https://wallet.example.org/v1/issuance/callback"
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        pushed = await http.post(f"{base}/par", data=_request("cartera-wallet", wallet_uri))
        direct = await http.get(f"{base}/authorize", params=_request("cartera-wallet", wallet_uri))
        open_redirect = await http.get(f"{base}/authorize", params=_request("x", PHISH, response_type="nope"))
        by_reference = await http.get(f"{base}/authorize", params={
            "client_id": "cartera-wallet", "request_uri": "urn:ietf:params:oauth:request_uri:" + secrets.token_urlsafe(8)})
        # Pre-authorized offers keep working.
        offer = await create_offer(http, production, "aoc-tax", "tax-compliance", DEMO_EVERYTHING, tx_code=False)
        code = offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"]
        token = await http.post(f"{production.issuer('aoc-tax')}/token", data={
            "grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code})
        # Nor is the flow advertised, or offered.
        metadata = (await http.get(f"{production.url}/.well-known/oauth-authorization-server/t/aoc-tax")).json()
        offered = await http.post(f"{production.url}/v1/offers", headers=production.headers("aoc-tax"), json={
            "credential_configuration_ids": ["tax-compliance"], "authorization_code": True,
            "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"}})
    for refused in (pushed, direct, open_redirect, by_reference):
        _assert_refused_without_redirect(refused, "unauthorized_client", "CARTERA_ISSUER_OAUTH_CLIENTS")
    assert token.status_code == 200, token.text
    assert metadata["grant_types_supported"] == [PRE_AUTHORIZED_CODE_GRANT]
    assert "authorization_endpoint" not in metadata and "pushed_authorization_request_endpoint" not in metadata
    assert offered.status_code == 400 and "CARTERA_ISSUER_OAUTH_CLIENTS" in offered.json()["error_description"]


# -- the setting ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("clients", "says"), [
    ({CLIENT: {"redirect_uris": ["http://wallet.example.org/cb"]}}, "https"),
    ({CLIENT: {"redirect_uris": ["http://127.0.0.1:9/cb"]}}, "https"),  # loopback http: dev_mode only
    ({CLIENT: {"redirect_uris": ["https://wallet.example.org/cb#frag"]}}, "fragment"),
    ({CLIENT: {"redirect_uris": ["/v1/issuance/callback"]}}, "absolute"),
    ({CLIENT: {"redirect_uris": ["javascript:alert(1)"]}}, "scheme"),
    ({CLIENT: {"redirect_uris": []}}, "redirect_uris"),
    ({CLIENT: {"redirect_uri": "https://wallet.example.org/cb"}}, "redirect_uri"),
    ({"": {"redirect_uris": ["https://wallet.example.org/cb"]}}, "client id"),
])
def test_a_registered_redirect_uri_that_could_never_be_used_stops_the_start(clients: dict[str, Any], says: str) -> None:
    master = secrets.token_hex(32)
    with pytest.raises(ValueError, match="oauth_clients") as refused:
        IssuerSettings(public_url="https://issuer.example.org", master_key=master, oauth_clients=clients)
    assert says in str(refused.value)
    assert master not in str(refused.value)  # the error shows this setting, no other input


def test_registered_clients_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTERA_ISSUER_OAUTH_CLIENTS", '{"cartera-wallet": {"redirect_uris": '
                       '["https://wallet.example.org/v1/issuance/callback"], "name": "Cartera"}}')
    settings = IssuerSettings(public_url="https://issuer.example.org", master_key=secrets.token_hex(32))
    assert settings.oauth_clients["cartera-wallet"].redirect_uris == ["https://wallet.example.org/v1/issuance/callback"]
    assert settings.oauth_clients["cartera-wallet"].name == "Cartera"
