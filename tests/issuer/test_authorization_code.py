"""The authorization code flow's edges: VÀLid failing at the callback, offers taken by ``issuer_state``,
pushed requests and the client id, the token request's ``client_id``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from sandbox.population import DEMO_EVERYTHING, DEMO_TAX_NEGATIVE
from ssi.jose import Key
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT, build_proof_jwt
from tests.issuer.conftest import IssuerEnv, Sandbox, make_settings, start_issuer
from tests.issuer.helpers import LIMITS
from tests.support.servers import free_port, serve
from tests.support.wallet_client import IssuerError, WalletClient

pytestmark = pytest.mark.anyio

REDIRECT = "http://127.0.0.1:9/cb"
CLIENT = "w"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def _push(http: httpx.AsyncClient, base: str, scope: str, **extra: str) -> tuple[str, str]:
    """A pushed request (state ``s1``); returns (code_verifier, request_uri)."""
    verifier, challenge = _pkce()
    r = await http.post(f"{base}/par", data={
        "response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT, "code_challenge": challenge,
        "code_challenge_method": "S256", "state": "s1", "scope": scope, **extra})
    assert r.status_code == 201, r.text
    return verifier, r.json()["request_uri"]


async def _idp_state(http: httpx.AsyncClient, base: str, request_uri: str) -> str:
    """Start the login; the state the issuer gave the identity provider."""
    r = await http.get(f"{base}/authorize", params={"client_id": CLIENT, "request_uri": request_uri})
    assert r.status_code == 303, r.text
    return _query(r.headers["location"])["state"]


async def _login(http: httpx.AsyncClient, base: str, scope: str, login_hint: str, **extra: str) -> tuple[str, dict]:
    """Push, log in at the sandbox VÀLid and come back; returns (code_verifier, the wallet's redirect query)."""
    verifier, request_uri = await _push(http, base, scope, login_hint=login_hint, **extra)
    url = f"{base}/authorize?" + urlencode({"client_id": CLIENT, "request_uri": request_uri})
    for _ in range(10):
        if url.startswith(REDIRECT):
            break
        response = await http.get(url)
        assert response.status_code in (302, 303), response.text
        url = response.headers["location"]
    return verifier, _query(url)


async def _token(http: httpx.AsyncClient, base: str, code: str, verifier: str, **extra: str) -> httpx.Response:
    return await http.post(f"{base}/token", data={"grant_type": "authorization_code", "code": code,
                                                  "code_verifier": verifier, "redirect_uri": REDIRECT, **extra})


# -- VÀLid failing at the callback ---------------------------------------------------------------------

def _assert_error_back_at_the_wallet(response: httpx.Response, base: str, error: str) -> None:
    assert response.status_code == 303, (response.status_code, response.text)
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    back = _query(location)
    assert (back["error"], back["state"], back["iss"]) == (error, "s1", base)
    assert "code" not in back


async def test_idp_refusing_the_login_code_sends_server_error_back_to_the_wallet(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        _, request_uri = await _push(http, base, "university-diploma")
        state = await _idp_state(http, base, request_uri)
        refused = await http.get(f"{base}/login/callback", params={"state": state, "code": "not-a-valid-code"})
        replayed = await http.get(f"{base}/login/callback", params={"state": state, "code": "not-a-valid-code"})
    _assert_error_back_at_the_wallet(refused, base, "server_error")
    # The request is over (the wallet starts again): its state is not taken a second time.
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_request"


@dataclass
class FailingIdP:
    """An issuer whose identity provider answers as ``behaviour`` says (``token``, ``userinfo``)."""

    env: IssuerEnv
    behaviour: dict[str, str] = field(default_factory=dict)


def _fake_idp(behaviour: dict[str, str]) -> FastAPI:
    app = FastAPI()

    def answer(kind: str, good: Any) -> Response:
        mode = behaviour.get(kind, "ok")
        if mode == "array":
            return JSONResponse(["not", "an", "object"])
        if mode == "not-json":
            return PlainTextResponse("<html>maintenance</html>")
        return JSONResponse(good)

    @app.post("/token")
    async def token() -> Response:
        if behaviour.get("token") == "slow":
            await asyncio.sleep(3)
        return answer("token", {"access_token": "at-" + secrets.token_urlsafe(8), "token_type": "Bearer"})

    @app.get("/userinfo")
    async def userinfo() -> Response:
        return answer("userinfo", {"identifier": DEMO_EVERYTHING, "name": "Titular", "surnames": "de Prova"})

    return app


@pytest.fixture(scope="module")
def failing_idp(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailingIdP]:
    behaviour: dict[str, str] = {}
    with serve(_fake_idp(behaviour)) as idp_url:
        folder = tmp_path_factory.mktemp("issuer-failing-idp")
        settings = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", free_port(), folder)
        settings = settings.model_copy(update={"idp_token_url": f"{idp_url}/token",
                                               "idp_userinfo_url": f"{idp_url}/userinfo", "idp_timeout": 0.5})
        for env in start_issuer(sandbox, settings):
            yield FailingIdP(env, behaviour)


@pytest.mark.parametrize(("token", "userinfo", "error"), [
    ("array", "ok", "server_error"),        # the token answer is JSON but not an object
    ("not-json", "ok", "server_error"),
    ("ok", "array", "server_error"),        # getUserInfo is JSON but not an object
    ("ok", "not-json", "server_error"),
    ("slow", "ok", "temporarily_unavailable"),  # no answer within idp_timeout
])
async def test_idp_failures_at_the_callback_go_back_to_the_wallet(failing_idp: FailingIdP, token: str, userinfo: str,
                                                                  error: str) -> None:
    base = failing_idp.env.issuer("uni-barcelona")
    failing_idp.behaviour.update(token=token, userinfo=userinfo)
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        _, request_uri = await _push(http, base, "university-diploma")
        state = await _idp_state(http, base, request_uri)
        response = await http.get(f"{base}/login/callback", params={"state": state, "code": "idp-code"})
    _assert_error_back_at_the_wallet(response, base, error)


async def test_a_working_fake_idp_logs_the_citizen_in(failing_idp: FailingIdP) -> None:
    """The fake identity provider above is good enough to log in with: the failures are its answers."""
    base = failing_idp.env.issuer("uni-barcelona")
    failing_idp.behaviour.update(token="ok", userinfo="ok")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        verifier, request_uri = await _push(http, base, "university-diploma")
        state = await _idp_state(http, base, request_uri)
        back = _query((await http.get(f"{base}/login/callback", params={"state": state, "code": "c"})).headers["location"])
        token = await _token(http, base, back["code"], verifier, client_id=CLIENT)
    assert token.status_code == 200, token.text


# -- offers taken by issuer_state ------------------------------------------------------------------------

async def _offer(http: httpx.AsyncClient, env: IssuerEnv, slug: str, type_id: str, *,
                 authorization_code: bool = True) -> dict[str, Any]:
    r = await http.post(f"{env.url}/v1/offers", headers=env.headers(slug), json={
        "credential_configuration_ids": [type_id], "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"},
        "tx_code": False, "authorization_code": authorization_code})
    assert r.status_code == 201, r.text
    return r.json()


async def _pre_authorized(http: httpx.AsyncClient, env: IssuerEnv, slug: str, offer: dict[str, Any]) -> httpx.Response:
    code = offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"]
    return await http.post(f"{env.issuer(slug)}/token", data={"grant_type": PRE_AUTHORIZED_CODE_GRANT,
                                                              "pre-authorized_code": code})


async def test_an_offer_taken_by_issuer_state_is_used_up_for_both_grants(issuer_env: IssuerEnv) -> None:
    slug, base = "aoc-tax", issuer_env.issuer("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await _offer(http, issuer_env, slug, "tax-compliance")
        wallet = WalletClient(http)
        first = await wallet.authorize(base, "tax-compliance", login_hint=DEMO_EVERYTHING, issuer_state=offer["offer_id"])
        with pytest.raises(IssuerError) as again:
            await wallet.authorize(base, "tax-compliance", login_hint=DEMO_EVERYTHING, issuer_state=offer["offer_id"])
        pre_authorized = await _pre_authorized(http, issuer_env, slug, offer)
        served = await http.get(offer["credential_offer_uri"])
    assert first.access_token
    assert again.value.error == "invalid_request"
    assert pre_authorized.status_code == 400 and pre_authorized.json()["error"] == "invalid_grant"
    assert served.status_code == 404


async def test_an_offer_redeemed_by_its_pre_authorized_code_cannot_be_taken_by_issuer_state(issuer_env: IssuerEnv) -> None:
    slug, base = "aoc-tax", issuer_env.issuer("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await _offer(http, issuer_env, slug, "tax-compliance")
        assert (await _pre_authorized(http, issuer_env, slug, offer)).status_code == 200
        with pytest.raises(IssuerError) as refused:
            await WalletClient(http).authorize(base, "tax-compliance", login_hint=DEMO_EVERYTHING,
                                               issuer_state=offer["offer_id"])
    assert refused.value.error == "invalid_request"


async def test_the_first_grant_to_reach_the_token_endpoint_takes_the_offer(issuer_env: IssuerEnv) -> None:
    """A citizen logged in with issuer_state, then the offer's pre-authorized code is redeemed: the
    authorization code no longer obtains the offer (and the other way round)."""
    slug, base = "aoc-tax", issuer_env.issuer("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await _offer(http, issuer_env, slug, "tax-compliance")
        verifier, back = await _login(http, base, "tax-compliance", DEMO_EVERYTHING, issuer_state=offer["offer_id"])
        assert (await _pre_authorized(http, issuer_env, slug, offer)).status_code == 200
        late_code = await _token(http, base, back["code"], verifier, client_id=CLIENT)

        offer = await _offer(http, issuer_env, slug, "tax-compliance")
        verifier, back = await _login(http, base, "tax-compliance", DEMO_EVERYTHING, issuer_state=offer["offer_id"])
        won = await _token(http, base, back["code"], verifier, client_id=CLIENT)
        late_pre_authorized = await _pre_authorized(http, issuer_env, slug, offer)
    assert late_code.status_code == 400 and late_code.json()["error"] == "invalid_grant"
    assert won.status_code == 200, won.text
    assert late_pre_authorized.status_code == 400 and late_pre_authorized.json()["error"] == "invalid_grant"


async def test_issuer_state_needs_an_offer_with_the_authorization_code_grant(issuer_env: IssuerEnv) -> None:
    slug, base = "aoc-tax", issuer_env.issuer("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await _offer(http, issuer_env, slug, "tax-compliance", authorization_code=False)
        with pytest.raises(IssuerError) as no_grant:
            await WalletClient(http).authorize(base, "tax-compliance", login_hint=DEMO_EVERYTHING,
                                               issuer_state=offer["offer_id"])
        unknown = await http.post(f"{base}/par", data={
            "response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT, "code_challenge": _pkce()[1],
            "code_challenge_method": "S256", "scope": "tax-compliance", "issuer_state": "o_nosuchoffer"})
        pre_authorized = await _pre_authorized(http, issuer_env, slug, offer)
    assert no_grant.value.error == "invalid_request"
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_request"
    assert pre_authorized.status_code == 200  # refusing issuer_state did not spend the offer


async def test_an_expired_offer_is_not_taken_by_issuer_state(issuer_env: IssuerEnv) -> None:
    slug, base = "aoc-tax", issuer_env.issuer("aoc-tax")
    database = issuer_env.settings.database_url.split("///", 1)[1]

    def expire(offer_id: str) -> None:
        with contextlib.closing(sqlite3.connect(database)) as conn:
            conn.execute("UPDATE offers SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (offer_id,))
            conn.commit()

    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await _offer(http, issuer_env, slug, "tax-compliance")
        expire(offer["offer_id"])
        with pytest.raises(IssuerError) as at_authorize:
            await WalletClient(http).authorize(base, "tax-compliance", login_hint=DEMO_EVERYTHING,
                                               issuer_state=offer["offer_id"])
        # Expired between the login and the token request.
        offer = await _offer(http, issuer_env, slug, "tax-compliance")
        verifier, back = await _login(http, base, "tax-compliance", DEMO_EVERYTHING, issuer_state=offer["offer_id"])
        expire(offer["offer_id"])
        at_token = await _token(http, base, back["code"], verifier, client_id=CLIENT)
    assert at_authorize.value.error == "invalid_request"
    assert at_token.status_code == 400 and at_token.json()["error"] == "invalid_grant"


async def test_issuer_state_still_accepts_only_the_offers_subject(issuer_env: IssuerEnv) -> None:
    slug, base = "aoc-tax", issuer_env.issuer("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await _offer(http, issuer_env, slug, "tax-compliance")
        _, refused = await _login(http, base, "tax-compliance", DEMO_TAX_NEGATIVE, issuer_state=offer["offer_id"])
        pre_authorized = await _pre_authorized(http, issuer_env, slug, offer)
    assert refused["error"] == "access_denied" and "code" not in refused
    assert pre_authorized.status_code == 200  # another person's login did not spend the offer


# -- pushed requests, client ids ------------------------------------------------------------------------

async def test_a_pushed_request_is_not_burnt_by_another_client(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        _, request_uri = await _push(http, base, "university-diploma")
        other = await http.get(f"{base}/authorize", params={"client_id": "other", "request_uri": request_uri})
        without = await http.get(f"{base}/authorize", params={"request_uri": request_uri})
        right = await http.get(f"{base}/authorize", params={"client_id": CLIENT, "request_uri": request_uri})
        replay = await http.get(f"{base}/authorize", params={"client_id": CLIENT, "request_uri": request_uri})
    for refused in (other, without, replay):
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    assert right.status_code == 303
    assert right.headers["location"].startswith(issuer_env.settings.idp_authorize_url)


async def test_par_refuses_a_request_uri_parameter(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        _, request_uri = await _push(http, base, "university-diploma")
        nested = await http.post(f"{base}/par", data={
            "response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT, "code_challenge": _pkce()[1],
            "code_challenge_method": "S256", "scope": "university-diploma", "request_uri": request_uri})
    assert nested.status_code == 400 and nested.json()["error"] == "invalid_request"
    assert "request_uri" in nested.json()["error_description"]


async def test_the_token_endpoint_requires_the_client_id_for_an_authorization_code(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        verifier, back = await _login(http, base, "university-diploma", DEMO_EVERYTHING)
        without = await _token(http, base, back["code"], verifier)
        empty = await _token(http, base, back["code"], verifier, client_id="")
        right = await _token(http, base, back["code"], verifier, client_id=CLIENT)
        verifier, back = await _login(http, base, "university-diploma", DEMO_EVERYTHING)
        other = await _token(http, base, back["code"], verifier, client_id="other")
    for refused in (without, empty):
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
        assert "client_id" in refused.json()["error_description"]
    assert right.status_code == 200, right.text  # the refused requests did not spend the code
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"


# -- the token's client: a replayed code, a key proof naming another client ---------------------------

async def _credential(http: httpx.AsyncClient, base: str, access: str, *, client_id: str | None = None) -> httpx.Response:
    nonce = (await http.post(f"{base}/nonce")).json()["c_nonce"]
    proof = build_proof_jwt(Key.generate(), audience=base, nonce=nonce, client_id=client_id)
    return await http.post(f"{base}/credential", headers={"Authorization": f"Bearer {access}"},
                           json={"credential_configuration_id": "university-diploma", "proofs": {"jwt": [proof]}})


async def test_a_code_presented_twice_revokes_the_token_issued_on_it(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        verifier, back = await _login(http, base, "university-diploma", DEMO_EVERYTHING)
        first = await _token(http, base, back["code"], verifier, client_id=CLIENT)
        assert first.status_code == 200, first.text
        again = await _token(http, base, back["code"], verifier, client_id=CLIENT)
        revoked = await _credential(http, base, first.json()["access_token"])
        # A code used up by a refused redemption (a wrong verifier) has no token to revoke; the next
        # presentation is refused all the same.
        verifier, back = await _login(http, base, "university-diploma", DEMO_EVERYTHING)
        wrong = await _token(http, base, back["code"], _pkce()[0], client_id=CLIENT)
        after_wrong = await _token(http, base, back["code"], verifier, client_id=CLIENT)
        # An unreplayed code's token is untouched.
        verifier, back = await _login(http, base, "university-diploma", DEMO_EVERYTHING)
        kept = await _token(http, base, back["code"], verifier, client_id=CLIENT)
        issued = await _credential(http, base, kept.json()["access_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert revoked.status_code == 401 and revoked.json()["error"] == "invalid_token"
    for refused in (wrong, after_wrong):
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert issued.status_code == 200, issued.text


async def test_a_replay_racing_the_redemption_leaves_no_usable_token(issuer_env: IssuerEnv) -> None:
    """Redemption and replay at once: whichever order the database puts them in, no token survives
    (the redemption's token is refused, or deleted by the replay)."""
    base = issuer_env.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        for _ in range(3):
            verifier, back = await _login(http, base, "university-diploma", DEMO_EVERYTHING)
            answers = await asyncio.gather(*(_token(http, base, back["code"], verifier, client_id=CLIENT)
                                             for _ in range(4)))
            tokens = [a.json()["access_token"] for a in answers if a.status_code == 200]
            assert len(tokens) <= 1, [a.text for a in answers]
            for access in tokens:
                used = await _credential(http, base, access)
                assert used.status_code == 401, used.text


async def test_a_key_proof_must_not_name_another_client(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        verifier, back = await _login(http, base, "university-diploma", DEMO_EVERYTHING)
        access = (await _token(http, base, back["code"], verifier, client_id=CLIENT)).json()["access_token"]
        other = await _credential(http, base, access, client_id="another-wallet")
        named = await _credential(http, base, access, client_id=CLIENT)
        verifier, back = await _login(http, base, "university-diploma", DEMO_EVERYTHING)
        access = (await _token(http, base, back["code"], verifier, client_id=CLIENT)).json()["access_token"]
        unnamed = await _credential(http, base, access)
    assert other.status_code == 400 and other.json()["error"] == "invalid_proof", other.text
    assert "iss" in other.json()["error_description"]
    assert named.status_code == 200, named.text  # the refused proof did not spend the token
    assert unnamed.status_code == 200, unnamed.text  # iss is optional
