"""The web wallet's login uses PKCE towards the wallet API: a fresh verifier kept in the tab's
``sessionStorage``, only its S256 challenge in the login URL, the verifier sent with the one-time code
(so another app that took the redirect could not redeem the code), and nothing of it left afterwards."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Request

from tests.wallet_api.system import System, fresh_citizens

CITIZEN = fresh_citizens(13)[12]  # the others' tests use the first twelve


def test_the_login_sends_an_s256_challenge_and_redeems_the_code_with_its_verifier(system: System, phone) -> None:
    citizen = phone()
    page = citizen.page
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    citizen.login(CITIZEN)  # the cards view: the API redeemed the code

    starts = [r for r in requests if urlsplit(r.url).path == "/v1/auth/login"]
    assert len(starts) == 1
    query = parse_qs(urlsplit(starts[0].url).query)
    assert query["code_challenge_method"] == ["S256"]
    challenge = query["code_challenge"][0]
    redeems = [json.loads(r.post_data or "{}") for r in requests
               if urlsplit(r.url).path == "/v1/auth/token" and r.method == "POST"]
    redeem = next(body for body in redeems if body.get("grant_type") == "authorization_code")
    verifier = redeem["code_verifier"]
    assert 43 <= len(verifier) <= 128
    assert base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode() == challenge
    # the verifier never travelled in a URL, and the tab forgot it (and the state) once the code was redeemed
    assert not [r.url for r in requests if verifier in r.url]
    assert page.evaluate("() => [sessionStorage.getItem('cartera.loginVerifier'), "
                         "sessionStorage.getItem('cartera.loginState')]") == [None, None]

    # A second login makes a fresh verifier.
    citizen.page.evaluate("() => sessionStorage.clear()")
    requests.clear()
    citizen.login(CITIZEN)
    again = next(parse_qs(urlsplit(r.url).query)["code_challenge"][0] for r in requests
                 if urlsplit(r.url).path == "/v1/auth/login")
    assert again != challenge
