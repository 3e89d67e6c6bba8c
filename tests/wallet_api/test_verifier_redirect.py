"""The ``redirect_uri`` a verifier answers with (OpenID4VP 1.0 §8.2) reaches the app only when it is a
URL the app may follow: https (http to loopback in dev mode), at most 2,048 characters. A
``javascript:`` URL or any other scheme was handed back verbatim, for a native app to open in the
citizen's name (the wallet review's ``t2_vp``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING, generate_population
from ssi.oid4vp import unsigned_request_object
from tests.wallet_api.conftest import Recorder, WalletHandle, bearer, login
from tests.wallet_api.system import open_presentation, running_system
from tests.wallet_api.test_e2e import make_offer, receive

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
    "https://agency.example/" + "a" * 4100,
])
def test_a_redirect_the_app_may_not_follow_is_dropped(wallet: WalletHandle, recorder: Recorder, answer: dict,
                                                       redirect: str) -> None:
    r = _decline_with(wallet, recorder, redirect, state="s-bad")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "declined"
    assert r.json()["redirect_uri"] is None
    assert redirect not in r.text


@pytest.mark.parametrize("redirect", [
    "https://agency.example/done?session=abc",
    # The same-device flow: the verifier's redirect URI (up to 2,000 characters) with its response code.
    "https://agency.example/" + "a" * 1976 + "#response_code=3E5Z" + "x" * 40,
])
def test_an_https_redirect_reaches_the_app(wallet: WalletHandle, recorder: Recorder, answer: dict,
                                           redirect: str) -> None:
    r = _decline_with(wallet, recorder, redirect, state="s-good")
    assert r.status_code == 200, r.text
    assert r.json()["redirect_uri"] == redirect


def test_the_same_device_flow_reaches_the_agency_with_its_response_code(tmp_path: Path) -> None:
    """Cartera's verifier answers with ``<agency redirect>#response_code=...``: the app must get it whole,
    fragment included, and the agency's exchange of that code must give the verified result."""
    with running_system(tmp_path, background_interval=0) as system:
        tokens = login(system.wallet, DEMO_EVERYTHING)
        receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", DEMO_EVERYTHING))
        agency = system.verifier_headers("ajuntament-barcelona")
        created = httpx.post(f"{system.verifier}/v1/requests", headers=agency,
                             json={"template": "grant-application", "redirect_uri": "https://agency.example/done"})
        assert created.status_code == 201, created.text
        preview = open_presentation(system, tokens, created.json())
        sent = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                          headers=bearer(tokens), timeout=60)
        assert sent.status_code == 200, sent.text
        redirect = sent.json()["redirect_uri"]
        assert redirect is not None and redirect.startswith("https://agency.example/done#response_code="), redirect
        code = redirect.split("#response_code=", 1)[1]
        exchanged = httpx.post(f"{system.verifier}/v1/requests/{created.json()['id']}/exchange", headers=agency,
                               json={"response_code": code})
        assert exchanged.status_code == 200, exchanged.text
        assert exchanged.json()["status"] == "verified", exchanged.text
