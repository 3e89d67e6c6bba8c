"""Wallet-initiated issuance is bound to the wallet that started it AND to the browser the issuer sent back.

The issuer's redirect reaches the wallet's unauthenticated ``GET /v1/issuance/callback``. Were the code
redeemed there into the wallet that started the issuance, an attacker could start one in their own wallet,
send the ``authorization_url`` to a victim ("get your diploma"), and receive the credential of the victim
who logged in at the issuer (authorization code injection, RFC 9700 §4.7). So the callback only keeps the
code and hands the browser a one-time completion code for the app; ``POST /v1/issuance/complete`` redeems
it only for the wallet that started the issuance and with that completion code.

Real issuer, sandbox VÀLid (``login_hint``: the citizen who logs in at the issuer) and wallet over HTTP.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.wallet_api.conftest import APP_REDIRECT, bearer, login
from tests.wallet_api.system import System, execute_sql, fresh_citizens

# Others' tests in this folder use the other synthetic citizens.
OWNER, ATTACKER, VICTIM, GUESSER = fresh_citizens(9)[5:9]


def _start(system: System, tokens: dict[str, Any], login_hint: str) -> dict[str, Any]:
    r = httpx.post(f"{system.wallet}/v1/issuance/authorize", headers=bearer(tokens), timeout=30, json={
        "credential_issuer": f"{system.issuer}/t/aoc-tax", "credential_configuration_id": "tax-compliance",
        "redirect_uri": APP_REDIRECT, "login_hint": login_hint})
    assert r.status_code == 200, r.text
    return r.json()


def _browse(url: str, system: System) -> tuple[str, dict[str, list[str]]]:
    """A browser following the authorization URL: issuer → VÀLid (``login_hint`` logs that citizen in)
    → issuer → the wallet's callback → the app. Returns the callback URL and the app redirect's query."""
    callback = ""
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        for _ in range(8):
            response = browser.get(url)
            assert response.status_code in (302, 303), (response.status_code, response.text)
            url = response.headers["location"]
            if url.startswith(f"{system.wallet}/v1/issuance/callback"):
                callback = url
            if url.startswith(APP_REDIRECT):
                return callback, parse_qs(urlsplit(url).query)
    raise AssertionError(f"the browser never came back to the app: {url}")


def _complete(system: System, tokens: dict[str, Any], offer_id: str, completion: str) -> httpx.Response:
    return httpx.post(f"{system.wallet}/v1/issuance/complete", headers=bearer(tokens), timeout=60,
                      json={"offer_id": offer_id, "completion": completion})


def _credentials(system: System, tokens: dict[str, Any]) -> list[dict[str, Any]]:
    r = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _offer(system: System, tokens: dict[str, Any], offer_id: str) -> dict[str, Any]:
    r = httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_callback_receives_nothing_the_app_completes_once(system: System) -> None:
    tokens = login(system.wallet, OWNER)
    started = _start(system, tokens, OWNER)
    callback, back = _browse(started["authorization_url"], system)
    assert set(back) == {"offer_id", "completion"}, back
    assert back["offer_id"] == [started["offer_id"]]
    # The completion code is not in anything the one who started the issuance saw.
    assert back["completion"][0] not in started["authorization_url"]
    # The unauthenticated callback stored nothing.
    assert _credentials(system, tokens) == []
    assert _offer(system, tokens, started["offer_id"])["state"] == "authorizing"

    done = _complete(system, tokens, started["offer_id"], back["completion"][0])
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "issued" and len(done.json()["credential_ids"]) == 1
    detail = httpx.get(f"{system.wallet}/v1/credentials/{done.json()['credential_ids'][0]}",
                       headers=bearer(tokens), timeout=30).json()
    assert detail["claims"]["nif"] == OWNER  # the citizen VÀLid logged in at the issuer

    # Single use: neither the completion nor the issuer's redirect can be replayed.
    again = _complete(system, tokens, started["offer_id"], back["completion"][0])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
    replay = httpx.get(callback, timeout=30)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_request", replay.text
    assert len(_credentials(system, tokens)) == 1


def test_an_authorization_link_sent_to_another_citizen_delivers_nobody_their_credential(system: System) -> None:
    attacker = login(system.wallet, ATTACKER)
    victim = login(system.wallet, VICTIM)
    # The attacker starts an issuance in their own wallet and sends the link to the victim, who logs in
    # at the real issuer through VÀLid ...
    started = _start(system, attacker, VICTIM)
    _, back = _browse(started["authorization_url"], system)
    # The issuer's redirect alone delivers nothing to the attacker's wallet.
    assert _credentials(system, attacker) == []
    assert _offer(system, attacker, started["offer_id"])["state"] == "authorizing"
    # The wallet sends the victim's browser to the app with the completion code (the victim's app,
    # logged in as the victim). Completing there is refused, as for an offer that does not exist.
    offer_id, completion = back["offer_id"][0], back["completion"][0]
    as_victim = _complete(system, victim, offer_id, completion)
    assert as_victim.status_code == 404 and as_victim.json()["error"] == "not_found", as_victim.text
    assert offer_id not in as_victim.text and VICTIM not in as_victim.text
    # The attacker knows the offer id and the authorization URL, never the completion code: whatever
    # they try is refused, and the first wrong try ends the issuance (the issuer's code is dropped).
    request_uri = parse_qs(urlsplit(started["authorization_url"]).query)["request_uri"][0]
    for guess in (offer_id, request_uri.rsplit(":", 1)[-1], secrets.token_urlsafe(32), "x"):
        refused = _complete(system, attacker, offer_id, guess)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    late = _complete(system, attacker, offer_id, completion)
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant", late.text
    shown = _offer(system, attacker, offer_id)
    assert shown["state"] == "failed" and shown["credential_ids"] == [], shown
    # Nobody received the victim's credential.
    assert _credentials(system, attacker) == []
    assert _credentials(system, victim) == []


def test_a_completion_is_refused_when_late_or_malformed(system: System) -> None:
    tokens = login(system.wallet, GUESSER)
    started = _start(system, tokens, GUESSER)
    _, back = _browse(started["authorization_url"], system)
    offer_id, completion = back["offer_id"][0], back["completion"][0]
    for body in ('{}', f'{{"offer_id": "{offer_id}"}}', f'{{"offer_id": "{offer_id}", "completion": "\\ud800"}}',
                 f'{{"offer_id": "{offer_id}", "completion": "{completion}\\u00e9"}}',
                 f'{{"offer_id": "{"a" * 5000}", "completion": "{completion}"}}',
                 '{"offer_id": 1, "completion": null}', '[]', 'not json'):
        r = httpx.post(f"{system.wallet}/v1/issuance/complete", timeout=30, content=body.encode(),
                       headers={**bearer(tokens), "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (body, r.text)
    unauthenticated = httpx.post(f"{system.wallet}/v1/issuance/complete", timeout=30,
                                 json={"offer_id": offer_id, "completion": completion})
    assert unauthenticated.status_code == 401, unauthenticated.text
    # The app completes at once; a completion code kept past COMPLETION_TTL is refused.
    execute_sql(system, "UPDATE offers SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?", offer_id)
    late = _complete(system, tokens, offer_id, completion)
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant", late.text
    assert _credentials(system, tokens) == []
