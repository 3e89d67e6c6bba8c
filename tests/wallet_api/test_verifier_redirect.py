"""The ``redirect_uri`` a verifier answers with (OpenID4VP 1.0 §8.2) reaches the app only when it is a
URL the app may follow: https (http to loopback in dev mode), at most 2,048 characters. A
``javascript:`` URL or any other scheme was handed back verbatim, for a native app to open in the
citizen's name (the wallet review's ``t2_vp``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from sandbox.population import generate_population
from ssi.oid4vp import unsigned_request_object
from tests.wallet_api.conftest import Recorder, WalletHandle, bearer, login

#: A citizen of the wallet fixture's population; the test declines, so its wallet's content is not read.
CITIZEN = generate_population(size=50).citizens[4].identifier


@pytest.fixture
def answer(recorder: Recorder) -> Iterator[dict]:
    yield recorder.answer
    recorder.answer = {}


def _decline_with(wallet: WalletHandle, recorder: Recorder, redirect: str, state: str) -> httpx.Response:
    recorder.answer = {"redirect_uri": redirect}
    client_id = f"redirect_uri:{recorder.url}/response"
    token = unsigned_request_object({
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post",
        "response_uri": f"{recorder.url}/response", "nonce": f"n-{state}", "state": state, "iat": int(time.time()),
        "dcql_query": {"credentials": [{"id": "pid", "format": "dc+sd-jwt", "meta": {"vct_values": ["urn:x:pid"]},
                                        "claims": [{"path": ["given_name"]}]}]}})
    headers = bearer(login(wallet.url, CITIZEN))
    scanned = httpx.post(f"{wallet.url}/v1/presentations",
                         json={"request_uri": f"openid4vp://?client_id={quote(client_id)}&request={token}"},
                         headers=headers, timeout=30)
    assert scanned.status_code == 201, scanned.text
    return httpx.post(f"{wallet.url}/v1/presentations/{scanned.json()['presentation_id']}/decline",
                      headers=headers, timeout=30)


@pytest.mark.parametrize("redirect", [
    "javascript:alert(document.domain)//",
    "intent://scan/#Intent;scheme=zxing;end",
    "data:text/html,<script>alert(1)</script>",
    "https://agency.example/done#fragment",
    "https://agency.example/" + "a" * 2100,
])
def test_a_redirect_the_app_may_not_follow_is_dropped(wallet: WalletHandle, recorder: Recorder, answer: dict,
                                                       redirect: str) -> None:
    r = _decline_with(wallet, recorder, redirect, state="s-bad")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "declined"
    assert r.json()["redirect_uri"] is None
    assert redirect not in r.text


def test_an_https_redirect_reaches_the_app(wallet: WalletHandle, recorder: Recorder, answer: dict) -> None:
    r = _decline_with(wallet, recorder, "https://agency.example/done?session=abc", state="s-good")
    assert r.status_code == 200, r.text
    assert r.json()["redirect_uri"] == "https://agency.example/done?session=abc"
