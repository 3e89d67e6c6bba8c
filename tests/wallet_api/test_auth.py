"""Citizen login through the VÀLid-compatible sandbox IdP, tokens, refresh, sessions, logout."""

from __future__ import annotations

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING, DEMO_NO_DEGREE
from tests.wallet_api.conftest import APP_REDIRECT, WalletHandle, bearer, login
from wallet_api.auth import pkce_pair


def _app_code(client: httpx.Client, wallet_url: str, identifier: str, challenge: str) -> str:
    """A login started with the app's PKCE ``challenge``, up to the one-time code at the app redirect."""
    r = client.get(f"{wallet_url}/v1/auth/login", params={
        "redirect_uri": APP_REDIRECT, "login_hint": identifier, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert r.status_code == 302, r.text
    back = client.get(client.get(r.headers["location"]).headers["location"])
    return httpx.URL(back.headers["location"]).params["code"]


def test_login_creates_wallet_for_asserted_identifier(wallet: WalletHandle) -> None:
    tokens = login(wallet.url, DEMO_EVERYTHING)
    me = httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens))
    assert me.status_code == 200
    assert me.json()["identifier"] == DEMO_EVERYTHING
    again = login(wallet.url, DEMO_EVERYTHING)
    me2 = httpx.get(f"{wallet.url}/v1/me", headers=bearer(again)).json()
    assert me2["wallet_id"] == me.json()["wallet_id"]
    other = login(wallet.url, DEMO_NO_DEGREE)
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(other)).json()["wallet_id"] != me2["wallet_id"]


def test_refresh_rotates_and_reuse_is_refused(wallet: WalletHandle) -> None:
    tokens = login(wallet.url, DEMO_EVERYTHING)
    r = httpx.post(f"{wallet.url}/v1/auth/token", data={"grant_type": "refresh_token",
                                                         "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200
    fresh = r.json()
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(fresh)).status_code == 200
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens)).status_code == 401  # old access token replaced
    reuse = httpx.post(f"{wallet.url}/v1/auth/token", json={"grant_type": "refresh_token",
                                                           "refresh_token": tokens["refresh_token"]})
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"


def test_app_code_single_use_and_bound_to_redirect(wallet: WalletHandle) -> None:
    verifier, challenge = pkce_pair()
    with httpx.Client(follow_redirects=False) as client:
        code = _app_code(client, wallet.url, DEMO_EVERYTHING, challenge)
        wrong = client.post(f"{wallet.url}/v1/auth/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/other",
            "code_verifier": verifier})
        assert wrong.status_code == 400
        # the code was consumed by the failed attempt: a stolen code cannot be retried
        again = client.post(f"{wallet.url}/v1/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                                 "redirect_uri": APP_REDIRECT, "code_verifier": verifier})
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_an_intercepted_app_code_is_worthless_without_the_apps_verifier(wallet: WalletHandle) -> None:
    """Another app registering the same private-use scheme receives the redirect (RFC 8252 §8.1): it
    has the code and the public redirect URI, not the verifier, which never left the genuine app."""
    verifier, challenge = pkce_pair()
    for stolen in ({}, {"code_verifier": pkce_pair()[0]}, {"code_verifier": challenge}, {"code_verifier": ""}):
        with httpx.Client(follow_redirects=False, headers={"User-Agent": "victim-phone"}) as victim:
            code = _app_code(victim, wallet.url, DEMO_EVERYTHING, challenge)
        with httpx.Client(headers={"User-Agent": "interceptor"}) as thief:
            r = thief.post(f"{wallet.url}/v1/auth/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": APP_REDIRECT, **stolen})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", (stolen, r.text)
        # the attempt spent the code: the genuine app, verifier in hand, logs in again
        late = httpx.post(f"{wallet.url}/v1/auth/token", json={
            "grant_type": "authorization_code", "code": code, "redirect_uri": APP_REDIRECT, "code_verifier": verifier})
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
    with httpx.Client(follow_redirects=False) as app:
        code = _app_code(app, wallet.url, DEMO_EVERYTHING, challenge)
        tokens = app.post(f"{wallet.url}/v1/auth/token", json={
            "grant_type": "authorization_code", "code": code, "redirect_uri": APP_REDIRECT, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens.json())).json()["identifier"] == DEMO_EVERYTHING


@pytest.mark.parametrize("pkce", [
    {}, {"code_challenge_method": "S256"}, {"code_challenge": pkce_pair()[1]},
    {"code_challenge": pkce_pair()[1], "code_challenge_method": "plain"},
    {"code_challenge": pkce_pair()[0], "code_challenge_method": "S256"},  # a verifier, not a challenge
    {"code_challenge": pkce_pair()[1][:42] + "=", "code_challenge_method": "S256"}])
def test_a_login_without_an_s256_challenge_is_refused(wallet: WalletHandle, pkce: dict[str, str]) -> None:
    r = httpx.get(f"{wallet.url}/v1/auth/login", params={"redirect_uri": APP_REDIRECT, "state": "s", **pkce})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


def test_unregistered_app_redirect_refused(wallet: WalletHandle) -> None:
    r = httpx.get(f"{wallet.url}/v1/auth/login", params={"redirect_uri": "https://evil.example/cb",
                                                         "code_challenge": pkce_pair()[1], "code_challenge_method": "S256"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_sessions_logins_logout_and_revoke(wallet: WalletHandle) -> None:
    phone = login(wallet.url, DEMO_NO_DEGREE, user_agent="phone-A", method="certificat")
    tablet = login(wallet.url, DEMO_NO_DEGREE, user_agent="tablet-B")
    sessions = httpx.get(f"{wallet.url}/v1/sessions", headers=bearer(phone)).json()
    agents = {s["user_agent"] for s in sessions}
    assert {"phone-A", "tablet-B"} <= agents
    logins = httpx.get(f"{wallet.url}/v1/me/logins", headers=bearer(phone)).json()
    mine = next(s for s in logins if s["id"] == phone["session_id"])
    assert mine["method"] == "certificat" and mine["assurance_level"] == "high" and mine["current"]
    # revoke the tablet from the phone
    assert httpx.delete(f"{wallet.url}/v1/sessions/{tablet['session_id']}", headers=bearer(phone)).status_code == 204
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(tablet)).status_code == 401
    refresh = httpx.post(f"{wallet.url}/v1/auth/token", data={"grant_type": "refresh_token",
                                                              "refresh_token": tablet["refresh_token"]})
    assert refresh.status_code == 400
    assert httpx.post(f"{wallet.url}/v1/auth/logout", headers=bearer(phone)).status_code == 204
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(phone)).status_code == 401


def test_other_citizens_sessions_are_404(wallet: WalletHandle) -> None:
    a = login(wallet.url, DEMO_EVERYTHING)
    b = login(wallet.url, DEMO_NO_DEGREE)
    assert httpx.delete(f"{wallet.url}/v1/sessions/{b['session_id']}", headers=bearer(a)).status_code == 404
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(b)).status_code == 200
    ids = {s["id"] for s in httpx.get(f"{wallet.url}/v1/me/logins", headers=bearer(a)).json()}
    assert b["session_id"] not in ids


def test_bad_tokens_and_bodies_never_500(wallet: WalletHandle) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        assert httpx.get(f"{wallet.url}/v1/credentials", headers=headers).status_code == 401
    assert httpx.post(f"{wallet.url}/v1/auth/token", content=b"{bad",
                      headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(f"{wallet.url}/v1/auth/token", data={"grant_type": "password"}).status_code == 400
    assert httpx.get(f"{wallet.url}/v1/auth/callback", params={"state": "x", "code": "y"}).status_code == 400
    assert httpx.get(f"{wallet.url}/v1/auth/callback").status_code == 400
    tokens = login(wallet.url, DEMO_EVERYTHING)
    for path in ("/v1/offers", "/v1/presentations", "/v1/backup/import", "/v1/backup/export"):
        r = httpx.post(f"{wallet.url}{path}", content=b"[1,", headers={**bearer(tokens),
                                                                        "content-type": "application/json"})
        assert r.status_code == 400, path
        r = httpx.post(f"{wallet.url}{path}", json={"offer_uri": 5, "request_uri": [], "passphrase": {}},
                       headers=bearer(tokens))
        assert r.status_code == 400, path
    for bad in ("openid-credential-offer://?nothing=1", "garbage", "openid-credential-offer://?credential_offer=%7B"):
        r = httpx.post(f"{wallet.url}/v1/offers", json={"offer_uri": bad}, headers=bearer(tokens))
        assert r.status_code == 400 and r.json()["error"] == "invalid_offer"
    r = httpx.post(f"{wallet.url}/v1/presentations", json={"request_uri": "openid4vp://?x=1"}, headers=bearer(tokens))
    assert r.status_code == 400
