"""The generic OpenID Connect login adapter against a tiny OpenID provider written here.

The provider serves discovery, a JWKS and the code flow (checking PKCE), and can be told to misbehave:
an ID token signed by a key outside its JWKS, from another issuer, for another audience, expired, with
another nonce, unsigned, or after a key rotation. Only a correct token may open a wallet.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse

from ssi.encoding import b64url_json
from ssi.jose import Key, sign_jws
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import APP_REDIRECT, WalletHandle, bearer, wallet_settings
from wallet_api.app import create_app
from wallet_api.settings import OIDCProvider

CLIENT_ID = "wallet-at-oidc"
CLIENT_SECRET = "oidc-secret"


def _keyed() -> Key:
    key = Key.generate("ES256")
    key.kid = key.thumbprint()
    return key


@dataclass
class Provider:
    url: str = ""
    key: Key = field(default_factory=lambda: _keyed())
    mode: str = "good"
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    jwks_fetches: int = 0

    def id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "sub": grant["sub"], "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], "name": "Jordi Test", "email": "jordi@example.org", "acr": "substantial"}
        key = self.key
        if self.mode == "forged":
            key = Key.generate("ES256")
            key.kid = self.key.kid  # claims to be the provider's key
        elif self.mode == "wrong_iss":
            claims["iss"] = "http://127.0.0.1:1/other"
        elif self.mode == "wrong_aud":
            claims["aud"] = "another-client"
        elif self.mode == "expired":
            claims.update(iat=now - 900, exp=now - 600)
        elif self.mode == "wrong_nonce":
            claims["nonce"] = "not-the-login-nonce"
        elif self.mode == "unsigned":
            return b64url_json({"alg": "none", "kid": self.key.kid}) + "." + b64url_json(claims) + "."
        return sign_jws({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    state = Provider()
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {"issuer": state.url, "authorization_endpoint": f"{state.url}/authorize",
                "token_endpoint": f"{state.url}/token", "jwks_uri": f"{state.url}/jwks",
                "response_types_supported": ["code"], "id_token_signing_alg_values_supported": ["ES256"]}

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        state.jwks_fetches += 1
        return {"keys": [{**state.key.public_jwk(), "use": "sig"}]}

    @app.get("/authorize")
    async def authorize(request: Request) -> RedirectResponse:
        q = request.query_params
        assert q["client_id"] == CLIENT_ID and q["response_type"] == "code"
        assert q["code_challenge_method"] == "S256" and "openid" in q["scope"].split()
        code = secrets.token_urlsafe(16)
        state.codes[code] = {"sub": q["login_hint"], "nonce": q["nonce"], "challenge": q["code_challenge"],
                             "redirect_uri": q["redirect_uri"]}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 302)

    @app.post("/token")
    async def token(grant_type: str = Form(), code: str = Form(), redirect_uri: str = Form(),  # noqa: B008
                    code_verifier: str = Form(), client_id: str = Form(),  # noqa: B008
                    client_secret: str = Form()) -> JSONResponse:  # noqa: B008
        state.token_requests.append({"client_id": client_id, "client_secret": client_secret})
        grant = state.codes.pop(code, None)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or grant_type != "authorization_code" or grant["challenge"] != challenge \
                or grant["redirect_uri"] != redirect_uri or client_secret != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({"access_token": secrets.token_urlsafe(8), "token_type": "Bearer",
                             "id_token": state.id_token(grant)})

    with serve(app) as url:
        state.url = url
        yield state


@pytest.fixture(scope="module")
def oidc_wallet(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletHandle]:
    port = free_port()
    settings = wallet_settings(tmp_path_factory.mktemp("oidc"), port, "", oidc_providers=[OIDCProvider(
        name="testid", issuer=provider.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, label="Test ID")])
    app = create_app(settings)
    with serve(app, port=port) as url:
        yield WalletHandle(url, settings, app, "")


def oidc_login(wallet_url: str, subject: str) -> dict[str, list[str]]:
    """Run the browser part of an OIDC login; return the app redirect's query parameters."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        start = browser.get(f"{wallet_url}/v1/auth/login", params={
            "provider": "testid", "redirect_uri": APP_REDIRECT, "state": "app-state", "login_hint": subject})
        assert start.status_code == 302, start.text
        at_provider = browser.get(start.headers["location"])
        assert at_provider.status_code == 302
        back = browser.get(at_provider.headers["location"])
        assert back.status_code == 302, back.text
        location = back.headers["location"]
    assert location.startswith(APP_REDIRECT)
    return parse_qs(urlsplit(location).query)


def test_provider_is_listed(oidc_wallet: WalletHandle) -> None:
    providers = httpx.get(f"{oidc_wallet.url}/v1/auth/providers").json()
    assert providers == [{"name": "testid", "label": "Test ID", "kind": "oidc"}]


def test_valid_id_token_opens_the_wallet_of_its_subject(oidc_wallet: WalletHandle, provider: Provider) -> None:
    provider.mode = "good"
    params = oidc_login(oidc_wallet.url, "subject-001")
    assert params["state"] == ["app-state"] and "code" in params
    tokens = httpx.post(f"{oidc_wallet.url}/v1/auth/token", data={
        "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": APP_REDIRECT}).json()
    me = httpx.get(f"{oidc_wallet.url}/v1/me", headers=bearer(tokens)).json()
    assert me["identifier"] == "subject-001" and me["provider"] == "oidc:testid" and me["name"] == "Jordi Test"
    logins = httpx.get(f"{oidc_wallet.url}/v1/me/logins", headers=bearer(tokens)).json()
    assert logins[0]["provider"] == "oidc:testid" and logins[0]["assurance_level"] == "substantial"
    assert provider.token_requests[-1] == {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    # same subject, same wallet; another subject, another wallet
    again = oidc_login(oidc_wallet.url, "subject-001")
    tokens2 = httpx.post(f"{oidc_wallet.url}/v1/auth/token", data={
        "grant_type": "authorization_code", "code": again["code"][0], "redirect_uri": APP_REDIRECT}).json()
    assert httpx.get(f"{oidc_wallet.url}/v1/me", headers=bearer(tokens2)).json()["wallet_id"] == me["wallet_id"]
    other = oidc_login(oidc_wallet.url, "subject-002")
    tokens3 = httpx.post(f"{oidc_wallet.url}/v1/auth/token", data={
        "grant_type": "authorization_code", "code": other["code"][0], "redirect_uri": APP_REDIRECT}).json()
    assert httpx.get(f"{oidc_wallet.url}/v1/me", headers=bearer(tokens3)).json()["wallet_id"] != me["wallet_id"]


@pytest.mark.parametrize(("mode", "reason"), [
    ("forged", "signature"), ("unsigned", "signature"), ("wrong_iss", "another provider"),
    ("wrong_aud", "not addressed"), ("expired", ""), ("wrong_nonce", "nonce")])
def test_bad_id_tokens_are_refused(oidc_wallet: WalletHandle, provider: Provider, mode: str, reason: str) -> None:
    provider.mode = mode
    try:
        params = oidc_login(oidc_wallet.url, f"victim-{mode}")
    finally:
        provider.mode = "good"
    assert "code" not in params, f"a {mode} ID token opened a wallet"
    assert params["error"] == ["access_denied"] and params["state"] == ["app-state"]
    assert reason in params["error_description"][0]


def test_rotated_provider_key_is_fetched_again(oidc_wallet: WalletHandle, provider: Provider) -> None:
    provider.mode = "good"
    assert "code" in oidc_login(oidc_wallet.url, "subject-rotate")
    fetches = provider.jwks_fetches
    provider.key = _keyed()  # a new kid: the wallet's cached JWKS does not have it
    assert "code" in oidc_login(oidc_wallet.url, "subject-rotate")
    assert provider.jwks_fetches == fetches + 1
    # a rotation without kids: the cached keys fail, the wallet fetches the JWKS once more and retries
    provider.key = Key.generate("ES256")
    assert provider.key.kid is None
    assert "code" in oidc_login(oidc_wallet.url, "subject-rotate")
    assert provider.jwks_fetches == fetches + 2
