"""The generic OpenID Connect login adapter against a tiny OpenID provider written here.

The provider serves discovery, a JWKS and the code flow (checking PKCE), and can be told to misbehave:
an ID token signed by a key outside its JWKS, from another issuer, for another audience or another
authorized party (azp), expired, without iat or issued long ago, with another nonce, unsigned, or after
a key rotation. Only a correct token may open a wallet.

Its JWKS holds an EC key and, as most real providers sign with RSA alone, an RS256 and a PS256 key
(joserfc signs with them) and a 1024-bit RSA key. RS256 and PS256 tokens open a wallet; the 1024-bit
key, an RS256 header on the EC key's kid, HS256 keyed with the RSA public key and PS256 under the key
published for RS256 do not, although discovery advertises every one of those algorithms.

Last, the sandbox identity provider itself, run as an OpenID provider signing RS256 or PS256, logs a
citizen in to a wallet that lists it as a generic OpenID Connect provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse
from joserfc import jws as joserfc_jws
from joserfc.jwk import RSAKey

from sandbox.idp_service import IdPSandboxConfig, RegisteredClient
from sandbox.idp_service import create_app as create_idp
from ssi.encoding import b64url_encode, b64url_json, json_dumps
from ssi.jose import Key, sign_jws
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import APP_REDIRECT, IDP_SECRET, WalletHandle, bearer, wallet_settings
from wallet_api.app import create_app
from wallet_api.auth import pkce_pair
from wallet_api.settings import OIDCProvider

CLIENT_ID = "wallet-at-oidc"
CLIENT_SECRET = "oidc-secret"


def _keyed() -> Key:
    key = Key.generate("ES256")
    key.kid = key.thumbprint()
    return key


def _rsa_keyed(alg: str) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"alg": alg, "use": "sig"})
    key.ensure_kid()
    return key


def _rsa_sign(private: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A compact JWS signed by hand, for what joserfc refuses to sign (a short key, a mismatched alg)."""
    signing_input = b64url_json(header) + "." + b64url_json(claims)
    pad = padding.PKCS1v15() if header["alg"] == "RS256" else padding.PSS(padding.MGF1(hashes.SHA256()), 32)
    return signing_input + "." + b64url_encode(private.sign(signing_input.encode(), pad, hashes.SHA256()))


WEAK = rsa.generate_private_key(65537, 1024)
WEAK_JWK = {**Key.from_cryptography(WEAK.public_key()).public_jwk(), "kid": "weak-1024", "alg": "RS256"}


@dataclass
class Provider:
    url: str = ""
    key: Key = field(default_factory=lambda: _keyed())
    rs256: RSAKey = field(default_factory=lambda: _rsa_keyed("RS256"))
    ps256: RSAKey = field(default_factory=lambda: _rsa_keyed("PS256"))
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
        elif self.mode == "no_iat":
            del claims["iat"]
        elif self.mode == "old_iat":  # still unexpired, but minted long before this login
            claims["iat"] = now - 3600
        elif self.mode == "wrong_azp":  # one audience, but another authorized party
            claims["azp"] = "another-client"
        elif self.mode == "unsigned":
            return b64url_json({"alg": "none", "kid": self.key.kid}) + "." + b64url_json(claims) + "."
        elif self.mode in ("rs256", "ps256", "rs256_no_kid"):
            alg = self.mode[:5].upper()
            rsa_key = self.rs256 if alg == "RS256" else self.ps256
            header = {"alg": alg, "typ": "JWT"} | ({} if self.mode == "rs256_no_kid" else {"kid": rsa_key.kid})
            return joserfc_jws.serialize_compact(header, json_dumps(claims).encode(), rsa_key, algorithms=[alg])
        elif self.mode == "rsa_1024":  # a true signature, by a key the JWKS publishes, but too short
            return _rsa_sign(WEAK, {"alg": "RS256", "kid": WEAK_JWK["kid"], "typ": "JWT"}, claims)
        elif self.mode == "rs256_on_ec_key":  # an RSA signature naming the EC key
            return _rsa_sign(self.rs256.private_key, {"alg": "RS256", "kid": self.key.kid, "typ": "JWT"}, claims)
        elif self.mode == "ps256_on_rs256_key":  # a true PSS signature by the key published for RS256
            return _rsa_sign(self.rs256.private_key, {"alg": "PS256", "kid": self.rs256.kid, "typ": "JWT"}, claims)
        elif self.mode == "hs256_rsa_public_key":  # the MAC keyed with the provider's public key
            rsa_public = Key.from_jwk(self.rs256.as_dict(private=False))
            signing_input = b64url_json({"alg": "HS256", "kid": self.rs256.kid, "typ": "JWT"}) + "." + b64url_json(claims)
            mac = hmac.new(rsa_public.public_pem(), signing_input.encode(), hashlib.sha256).digest()
            return signing_input + "." + b64url_encode(mac)
        return sign_jws({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    state = Provider()
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {"issuer": state.url, "authorization_endpoint": f"{state.url}/authorize",
                "token_endpoint": f"{state.url}/token", "jwks_uri": f"{state.url}/jwks",
                "response_types_supported": ["code"],
                # advertised, never trusted: the wallet keeps its own allow-list
                "id_token_signing_alg_values_supported": ["ES256", "RS256", "PS256", "HS256", "none"]}

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        state.jwks_fetches += 1
        return {"keys": [{**state.key.public_jwk(), "use": "sig"}, state.rs256.as_dict(private=False),
                         state.ps256.as_dict(private=False), WEAK_JWK]}

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


def oidc_login(wallet_url: str, subject: str, provider: str = "testid") -> dict[str, list[str]]:
    """Run the browser part of an OIDC login; return the app redirect's query parameters, plus the
    app's PKCE ``code_verifier`` (for :func:`redeem`)."""
    verifier, challenge = pkce_pair()
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        start = browser.get(f"{wallet_url}/v1/auth/login", params={
            "provider": provider, "redirect_uri": APP_REDIRECT, "state": "app-state", "login_hint": subject,
            "code_challenge": challenge, "code_challenge_method": "S256"})
        assert start.status_code == 302, start.text
        at_provider = browser.get(start.headers["location"])
        assert at_provider.status_code in (302, 303), at_provider.text
        back = browser.get(at_provider.headers["location"])
        assert back.status_code == 302, back.text
        location = back.headers["location"]
    assert location.startswith(APP_REDIRECT)
    return {**parse_qs(urlsplit(location).query), "code_verifier": [verifier]}


def redeem(wallet_url: str, params: dict[str, list[str]]) -> dict[str, Any]:
    """The app's token request for the code of :func:`oidc_login`."""
    return httpx.post(f"{wallet_url}/v1/auth/token", data={  # type: ignore[no-any-return]
        "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": APP_REDIRECT,
        "code_verifier": params["code_verifier"][0]}).json()


def test_provider_is_listed(oidc_wallet: WalletHandle) -> None:
    providers = httpx.get(f"{oidc_wallet.url}/v1/auth/providers").json()
    assert providers == [{"name": "testid", "label": "Test ID", "kind": "oidc"}]


def test_valid_id_token_opens_the_wallet_of_its_subject(oidc_wallet: WalletHandle, provider: Provider) -> None:
    provider.mode = "good"
    params = oidc_login(oidc_wallet.url, "subject-001")
    assert params["state"] == ["app-state"] and "code" in params
    tokens = redeem(oidc_wallet.url, params)
    me = httpx.get(f"{oidc_wallet.url}/v1/me", headers=bearer(tokens)).json()
    assert me["identifier"] == "subject-001" and me["provider"] == "oidc:testid" and me["name"] == "Jordi Test"
    logins = httpx.get(f"{oidc_wallet.url}/v1/me/logins", headers=bearer(tokens)).json()
    assert logins[0]["provider"] == "oidc:testid" and logins[0]["assurance_level"] == "substantial"
    assert provider.token_requests[-1] == {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    # same subject, same wallet; another subject, another wallet
    again = oidc_login(oidc_wallet.url, "subject-001")
    tokens2 = redeem(oidc_wallet.url, again)
    assert httpx.get(f"{oidc_wallet.url}/v1/me", headers=bearer(tokens2)).json()["wallet_id"] == me["wallet_id"]
    other = oidc_login(oidc_wallet.url, "subject-002")
    tokens3 = redeem(oidc_wallet.url, other)
    assert httpx.get(f"{oidc_wallet.url}/v1/me", headers=bearer(tokens3)).json()["wallet_id"] != me["wallet_id"]


def _open_wallet(wallet_url: str, subject: str, provider: str = "testid") -> dict[str, Any]:
    params = oidc_login(wallet_url, subject, provider)
    assert "code" in params, params
    tokens = redeem(wallet_url, params)
    return httpx.get(f"{wallet_url}/v1/me", headers=bearer(tokens)).json()


@pytest.mark.parametrize("mode", ["rs256", "ps256", "rs256_no_kid"])
def test_rsa_signed_id_tokens_open_the_wallet(oidc_wallet: WalletHandle, provider: Provider, mode: str) -> None:
    provider.mode = mode
    try:
        me = _open_wallet(oidc_wallet.url, f"subject-{mode}")
    finally:
        provider.mode = "good"
    assert me["identifier"] == f"subject-{mode}" and me["provider"] == "oidc:testid"


@pytest.mark.parametrize(("mode", "reason"), [
    ("forged", "signature"), ("unsigned", "signature"), ("wrong_iss", "another provider"),
    ("wrong_aud", "not addressed"), ("expired", ""), ("wrong_nonce", "nonce"),
    ("no_iat", "'iat'"), ("old_iat", "too long ago"), ("wrong_azp", "azp"),
    ("rsa_1024", "signature"), ("rs256_on_ec_key", "signature"), ("ps256_on_rs256_key", "signature"),
    ("hs256_rsa_public_key", "algorithm is not allowed")])
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


@pytest.fixture(scope="module", params=["RS256", "PS256"])
def sandbox_oidc_wallet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[WalletHandle]:
    """The sandbox identity provider signing ID tokens with ``request.param``, and a wallet using it as
    a generic OpenID Connect provider."""
    idp_port, wallet_port = free_port(), free_port()
    idp = f"http://127.0.0.1:{idp_port}"
    config = IdPSandboxConfig(clients=[RegisteredClient("cartera-wallet", IDP_SECRET, (
        f"http://127.0.0.1:{wallet_port}/v1/auth/callback",))], allow_login_hint=True, population_size=50,
        id_token_alg=request.param, issuer_url=idp)
    settings = wallet_settings(tmp_path_factory.mktemp("sandbox-oidc"), wallet_port, "", oidc_providers=[OIDCProvider(
        name="validoidc", issuer=idp, client_id="cartera-wallet", client_secret=IDP_SECRET,
        scope="openid autenticacio_usuari", label="VÀLid (OpenID Connect)")])
    app = create_app(settings)
    with serve(create_idp(config), port=idp_port), serve(app, port=wallet_port) as url:
        yield WalletHandle(url, settings, app, idp)


def test_the_sandbox_provider_signing_rsa_logs_a_citizen_in(sandbox_oidc_wallet: WalletHandle) -> None:
    jwks = httpx.get(f"{sandbox_oidc_wallet.idp_url}/o/oauth2/jwks").json()["keys"]
    assert [k["kty"] for k in jwks] == ["RSA"]
    me = _open_wallet(sandbox_oidc_wallet.url, "12345678Z", "validoidc")
    assert me["identifier"] == "12345678Z" and me["provider"] == "oidc:validoidc"
    assert me["name"] == "Montserrat Puig Ferrer"
