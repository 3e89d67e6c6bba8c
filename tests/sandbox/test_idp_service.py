"""The development identity provider driven as a relying party drives VÀLid, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from sandbox.idp_service import IdPSandboxConfig, RegisteredClient, create_app
from sandbox.population import generate_population
from ssi.encoding import b64url_decode
from ssi.jose import ID_TOKEN_ALGORITHMS, Key, verify_jws
from tests.support.servers import free_port, serve

REDIRECT = "https://wallet.example/callback"
CLIENT = RegisteredClient("wallet", "s3cret-wallet", (REDIRECT, "https://wallet.example/other"))
OTHER = RegisteredClient("other-rp", "other-secret", ("https://other.example/cb",))
DEMO = "12345678Z"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = IdPSandboxConfig(clients=[CLIENT, OTHER], allow_login_hint=True,
                              population=generate_population(size=1000))
    with serve(create_app(config)) as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, follow_redirects=False, timeout=10) as client:
        yield client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(http: httpx.Client, **extra: str) -> dict[str, list[str]]:
    params = {"response_type": "code", "client_id": CLIENT.client_id, "redirect_uri": REDIRECT,
              "scope": "autenticacio_usuari", "state": "st-1", "login_hint": DEMO}
    params.update(extra)
    response = http.get("/o/oauth2/auth", params={k: v for k, v in params.items() if v != ""})
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


def token(http: httpx.Client, code: str, *, secret: str = CLIENT.client_secret, redirect_uri: str = REDIRECT,
          verifier: str | None = None, basic: bool = False) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        form["code_verifier"] = verifier
    if basic:
        return http.post("/o/oauth2/token", data=form, auth=(CLIENT.client_id, secret))
    form.update(client_id=CLIENT.client_id, client_secret=secret)
    return http.post("/o/oauth2/token", data=form)


def test_full_flow_with_pkce_and_basic_auth(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    query = authorize(http, code_challenge=challenge, code_challenge_method="S256", login_method="certificat")
    assert query["state"] == ["st-1"]
    response = token(http, query["code"][0], verifier=verifier, basic=True)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    info = http.get("/serveis-rest/getUserInfo", params={"AccessToken": body["access_token"]})
    assert info.status_code == 200
    user = info.json()
    citizen = generate_population(size=1000).get(DEMO)
    assert user["identifier"] == DEMO and user["identifierType"] == "NIF"
    assert user["name"] == citizen.name and user["surname1"] == citizen.surname1
    assert user["surname2"] == citizen.surname2 and user["surnames"] == citizen.surnames
    assert user["email"] == citizen.email
    assert user["method"] == "certificat" and user["assuranceLevel"] == "high"


def test_form_client_auth_without_pkce_and_nie_citizen(http: httpx.Client) -> None:
    query = authorize(http, login_hint="Y1234567X")
    response = token(http, query["code"][0])
    assert response.status_code == 200
    user = http.get("/serveis-rest/getUserInfo", headers={"Authorization": f"Bearer {response.json()['access_token']}"}).json()
    assert user["identifierType"] == "NIE" and user["method"] == "idcatmobil" and user["assuranceLevel"] == "substantial"


def test_wrong_code_is_refused(http: httpx.Client) -> None:
    response = token(http, "not-a-code")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_reused_code_is_refused_and_revokes_the_token(http: httpx.Client) -> None:
    code = authorize(http)["code"][0]
    first = token(http, code)
    assert first.status_code == 200
    second = token(http, code)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    info = http.get("/serveis-rest/getUserInfo", params={"AccessToken": first.json()["access_token"]})
    assert info.status_code == 401 and info.json()["error"] == "invalid_token"


def test_wrong_redirect_uri_at_token_endpoint_is_refused(http: httpx.Client) -> None:
    code = authorize(http)["code"][0]
    response = token(http, code, redirect_uri="https://wallet.example/other")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    # the refused attempt burnt the code: it cannot be retried
    assert token(http, code).json()["error"] == "invalid_grant"


def test_unregistered_redirect_uri_is_never_redirected_to(http: httpx.Client) -> None:
    response = http.get("/o/oauth2/auth", params={"response_type": "code", "client_id": CLIENT.client_id,
                                                  "redirect_uri": "https://evil.example/cb",
                                                  "scope": "autenticacio_usuari", "login_hint": DEMO})
    assert response.status_code == 400 and "location" not in response.headers
    assert "redirect_uri" in response.text


def test_wrong_client_secret_is_refused(http: httpx.Client) -> None:
    code = authorize(http)["code"][0]
    response = token(http, code, secret="wrong")
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    basic = token(http, code, secret="wrong", basic=True)
    assert basic.status_code == 401 and "www-authenticate" in basic.headers
    # a failed client authentication does not consume the code
    assert token(http, code).status_code == 200


@pytest.mark.parametrize("credentials", [
    b"Basic \xc3\xa9\xc3\xa9",  # UTF-8 bytes in the header: not base64's ASCII (was a 500, ValueError)
    b"Basic \xe9",  # Latin-1 obs-text
    b"Basic ***",  # not base64
    b"Basic " + base64.b64encode(b"wallet:\xff"),  # base64 of what is not UTF-8
], ids=["utf8", "latin1", "not-base64", "not-utf8"])
def test_unreadable_basic_credentials_are_invalid_client(http: httpx.Client, credentials: bytes) -> None:
    code = authorize(http)["code"][0]
    response = http.post("/o/oauth2/token", headers={"Authorization": credentials},
                         data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT})
    assert response.status_code == 401, response.text
    assert response.json() == {"error": "invalid_client", "error_description": "malformed Basic credentials"}
    assert response.headers["www-authenticate"] == 'Basic realm="idp"'
    # a non-ASCII secret, well encoded, is just a wrong one
    wrong = http.post("/o/oauth2/token", headers={"Authorization": b"Basic " + base64.b64encode(
        "wallet:\u00e9\u20ac".encode())}, data={"grant_type": "authorization_code", "code": code})
    assert wrong.status_code == 401 and wrong.json()["error_description"] == "client authentication failed"
    assert token(http, code).status_code == 200  # neither consumed the code


def test_code_of_another_client_is_refused(http: httpx.Client) -> None:
    code = authorize(http)["code"][0]
    response = http.post("/o/oauth2/token", data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": REDIRECT},
                         auth=(OTHER.client_id, OTHER.client_secret))
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_wrong_pkce_verifier_is_refused(http: httpx.Client) -> None:
    _verifier, challenge = pkce()
    code = authorize(http, code_challenge=challenge, code_challenge_method="S256")["code"][0]
    other_verifier, _ = pkce()
    response = token(http, code, verifier=other_verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_missing_pkce_verifier_is_refused(http: httpx.Client) -> None:
    _verifier, challenge = pkce()
    code = authorize(http, code_challenge=challenge, code_challenge_method="S256")["code"][0]
    assert token(http, code).json()["error"] == "invalid_grant"


def test_plain_pkce_and_bad_scope_and_response_type_are_redirected_errors(http: httpx.Client) -> None:
    assert authorize(http, code_challenge="a" * 43, code_challenge_method="plain")["error"] == ["invalid_request"]
    assert authorize(http, scope="openid")["error"] == ["invalid_scope"]
    query = authorize(http, response_type="token")
    assert query["error"] == ["unsupported_response_type"] and query["state"] == ["st-1"]
    assert authorize(http, login_hint="00000000T")["error"] == ["access_denied"]


def test_unknown_client_and_bad_grant_type(http: httpx.Client) -> None:
    response = http.get("/o/oauth2/auth", params={"response_type": "code", "client_id": "nobody",
                                                  "scope": "autenticacio_usuari"})
    assert response.status_code == 400 and "location" not in response.headers
    response = http.post("/o/oauth2/token", data={"grant_type": "client_credentials", "client_id": CLIENT.client_id,
                                                  "client_secret": CLIENT.client_secret})
    assert response.json()["error"] == "unsupported_grant_type"
    response = http.post("/o/oauth2/token", data={"grant_type": "authorization_code", "code": "x",
                                                  "client_secret": CLIENT.client_secret},
                         auth=(CLIENT.client_id, CLIENT.client_secret))
    assert response.json()["error"] == "invalid_request"


def test_login_page_is_marked_and_accessible_and_the_form_logs_in(http: httpx.Client) -> None:
    params = {"response_type": "code", "client_id": CLIENT.client_id, "redirect_uri": REDIRECT,
              "scope": "autenticacio_usuari", "state": "xyz", "q": "puig ferrer"}
    page = http.get("/o/oauth2/auth", params=params)
    assert page.status_code == 200
    text = page.text
    assert "DEVELOPMENT IDENTITY PROVIDER — synthetic citizens only" in text
    assert "Montserrat Puig Ferrer" in text and DEMO in text
    assert not re.search(r"(src|href)=['\"]https?://", text)  # no external resources
    for control_id in re.findall(r"<input[^>]* id='([^']+)'", text):
        assert f"for='{control_id}'" in text
    form = {k: v for k, v in params.items() if k != "q"}
    form.update(identifier=DEMO, login_method="clave", action="login")
    response = http.post("/o/oauth2/login", data=form)
    assert response.status_code == 303
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["xyz"]
    access = token(http, query["code"][0]).json()["access_token"]
    user = http.get("/serveis-rest/getUserInfo", params={"AccessToken": access}).json()
    assert user["method"] == "clave" and user["identifier"] == DEMO


def test_login_page_escapes_reflected_input_and_cancel_denies(http: httpx.Client) -> None:
    params = {"response_type": "code", "client_id": CLIENT.client_id, "redirect_uri": REDIRECT,
              "scope": "autenticacio_usuari", "state": "'><script>alert(1)</script>", "q": "<b>x"}
    page = http.get("/o/oauth2/auth", params=params)
    assert "<script>alert(1)" not in page.text and "<b>x" not in page.text
    form = {k: v for k, v in params.items() if k != "q"}
    form["action"] = "cancel"
    response = http.post("/o/oauth2/login", data=form)
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["access_denied"]


def test_login_hint_is_refused_unless_enabled() -> None:
    config = IdPSandboxConfig(clients=[CLIENT], allow_login_hint=False, population=generate_population(size=50))
    with serve(create_app(config)) as url, httpx.Client(base_url=url) as http:
        response = http.get("/o/oauth2/auth", params={"response_type": "code", "client_id": CLIENT.client_id,
                                                      "redirect_uri": REDIRECT, "scope": "autenticacio_usuari",
                                                      "login_hint": DEMO}, follow_redirects=False)
        assert response.status_code == 200 and "Log in" in response.text  # the page, not a code


def test_expired_code_is_refused() -> None:
    config = IdPSandboxConfig(clients=[CLIENT], allow_login_hint=True, code_ttl=0, population=generate_population(size=50))
    with serve(create_app(config)) as url, httpx.Client(base_url=url, follow_redirects=False) as http:
        code = authorize(http)["code"][0]
        import time

        time.sleep(0.05)
        assert token(http, code).json()["error"] == "invalid_grant"


def test_no_id_token_and_no_discovery_by_default(http: httpx.Client) -> None:
    # VÀLid's plain OAuth 2.0, as the issuer and the wallet's VÀLid login use it
    assert http.get("/.well-known/openid-configuration").status_code == 404
    assert http.get("/o/oauth2/jwks").status_code == 404
    code = authorize(http, scope="openid autenticacio_usuari", nonce="n-1")["code"][0]
    assert "id_token" not in token(http, code).json()


@pytest.fixture(scope="module", params=["RS256", "PS256", "ES256"])
def oidc_url(request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    config = IdPSandboxConfig(clients=[CLIENT], allow_login_hint=True, population=generate_population(size=50),
                              id_token_alg=request.param, issuer_url=f"http://127.0.0.1:{port}")
    with serve(create_app(config), port=port) as url:
        yield url


def test_id_tokens_signed_with_the_chosen_algorithm_and_published_key(oidc_url: str) -> None:
    with httpx.Client(base_url=oidc_url, follow_redirects=False, timeout=10) as http:
        doc = http.get("/.well-known/openid-configuration").json()
        alg = doc["id_token_signing_alg_values_supported"][0]
        assert doc["issuer"] == oidc_url and doc["jwks_uri"] == f"{oidc_url}/o/oauth2/jwks"
        assert doc["token_endpoint"] == f"{oidc_url}/o/oauth2/token"
        [jwk] = http.get(doc["jwks_uri"]).json()["keys"]
        assert jwk["alg"] == alg and jwk["use"] == "sig" and jwk["kid"] and "d" not in jwk
        assert jwk["kty"] == ("EC" if alg == "ES256" else "RSA")
        if jwk["kty"] == "RSA":
            assert len(b64url_decode(jwk["n"])) * 8 >= 2048
        # the interactive path carries the nonce through the login form
        params = {"response_type": "code", "client_id": CLIENT.client_id, "redirect_uri": REDIRECT,
                  "scope": "openid autenticacio_usuari", "state": "s", "nonce": "n-42"}
        assert "name='nonce' value='n-42'" in http.get("/o/oauth2/auth", params=params).text
        back = http.post("/o/oauth2/login", data={**params, "identifier": DEMO, "login_method": "certificat",
                                                  "action": "login"})
        code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
        id_token = token(http, code).json()["id_token"]
        verified = verify_jws(id_token, Key.from_jwk(jwk), ID_TOKEN_ALGORITHMS)
        assert verified.header == {"alg": alg, "kid": jwk["kid"], "typ": "JWT"}
        checked = jwcrypto_jws.JWS()
        checked.deserialize(id_token)
        checked.verify(jwcrypto_jwk.JWK(**jwk), alg=alg)  # and by another library
        claims = verified.json_payload()
        assert claims["iss"] == oidc_url and claims["aud"] == CLIENT.client_id and claims["sub"] == DEMO
        assert claims["nonce"] == "n-42" and claims["acr"] == "high" and claims["amr"] == ["certificat"]
        assert claims["name"] == "Montserrat Puig Ferrer" and claims["exp"] > claims["iat"]
        # without openid in the scope (what the issuer asks for): no ID token, VÀLid as before
        plain = authorize(http)["code"][0]
        assert "id_token" not in token(http, plain).json()
        too_long = authorize(http, scope="openid autenticacio_usuari", nonce="n" * 501)
        assert too_long["error"] == ["invalid_request"]


def test_id_token_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="id_token_alg"):
        create_app(IdPSandboxConfig(clients=[CLIENT], population_size=5, id_token_alg="HS256",
                                    issuer_url="http://127.0.0.1:1"))
    with pytest.raises(ValueError, match="issuer_url"):
        create_app(IdPSandboxConfig(clients=[CLIENT], population_size=5, id_token_alg="RS256"))
