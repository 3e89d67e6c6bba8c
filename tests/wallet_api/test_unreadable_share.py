"""Approving a preview whose chosen credential stopped opening since (damaged, or sealed under a key the
wallet no longer has) answered 500 ``server_error``: it is now 409 ``credential_unreadable``, nothing is
sent to the verifier, nothing recorded, and the request can still be approved with another credential
(or declined).

Real issuer, verifier and wallet over HTTP (the ``system`` fixture), the credential's sealed details
damaged in the wallet's SQLite file.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, agency_request, execute_sql, open_presentation, query_sql
from tests.wallet_api.test_e2e import make_offer, receive

#: A citizen with a positive tax certificate (a grant application accepts it) no other test logs in
#: but test_unreadable_backup's import test, which adds nothing this test reads.
SHARE_CITIZEN = generate_population(size=50).citizens[19].identifier


def _damage_credential(system: System, credential_id: str) -> None:
    """One bit of the credential's sealed details flipped, in the database."""
    [(sealed,)] = query_sql(system, "SELECT sealed FROM credentials WHERE id = ?", credential_id)
    execute_sql(system, "UPDATE credentials SET sealed = ? WHERE id = ?",
                sealed[:-1] + bytes([sealed[-1] ^ 1]), credential_id)


def _history_kinds(system: System, tokens: dict[str, str]) -> set[str]:
    r = httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return {h["kind"] for h in r.json()}


def _verifier_status(system: System, request: dict[str, Any], agency: str = "ajuntament-barcelona") -> str:
    return httpx.get(request["status_url"], headers=system.verifier_headers(agency), timeout=30).json()["status"]


def test_approving_with_a_credential_that_stopped_opening_is_a_409_and_sends_nothing(system: System) -> None:
    tokens = login(system.wallet, SHARE_CITIZEN)
    first = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", SHARE_CITIZEN))["credential_ids"][0]
    second = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", SHARE_CITIZEN))["credential_ids"][0]
    request = agency_request(system)
    preview = open_presentation(system, tokens, request)
    assert preview["satisfiable"]
    [query] = preview["queries"]
    assert {o["credential_id"] for o in query["options"]} == {first, second}

    _damage_credential(system, first)
    url = f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve"
    refused = httpx.post(url, json={"selection": {query["query_id"]: first}}, headers=bearer(tokens), timeout=30)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "credential_unreadable" and "choose another" in refused.json()["error_description"]
    # Nothing sent, nothing recorded, the request still pending.
    assert _verifier_status(system, request) == "pending"
    state = httpx.get(f"{system.wallet}/v1/presentations/{preview['presentation_id']}", headers=bearer(tokens))
    assert state.json()["state"] == "pending"
    assert "share" not in _history_kinds(system, tokens)

    # Choosing the other credential answers the request.
    sent = httpx.post(url, json={"selection": {query["query_id"]: second}}, headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    assert [d["credential_id"] for d in sent.json()["disclosed"]] == [second]
    deadline = time.monotonic() + 10
    while _verifier_status(system, request) == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _verifier_status(system, request) == "verified"
