"""One citizen's wallet cannot reach another's alerts, presentation requests or offers (a 404, never a 500,
and nothing changes for the owner); and the codes the app is told when the verifier refuses an answer
(``verifier_refused``) or the issuer refuses the transaction code (``invalid_tx_code``).

Real issuer, verifier and sandbox over HTTP (the ``system`` fixture).
"""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, agency_request, open_presentation
from tests.wallet_api.test_e2e import make_offer, receive

#: Citizens of the system's population (50) with tax and padró records that no other test logs in
#: (``fresh_citizens`` takes only those with a working-life record too).
OWNER, OTHER, REFUSED_CITIZEN, TX_CITIZEN = [generate_population(size=50).citizens[i].identifier
                                             for i in (5, 6, 10, 12)]


def _scan(system: System, tokens: dict[str, str], offer: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{system.wallet}/v1/offers", json={"offer_uri": offer["offer_uri"]}, headers=bearer(tokens),
                   timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def _alerts(system: System, tokens: dict[str, str]) -> dict[int, dict[str, Any]]:
    r = httpx.get(f"{system.wallet}/v1/alerts", headers=bearer(tokens))
    assert r.status_code == 200, r.text
    return {a["id"]: a for a in r.json()}


def test_marking_alerts_read_never_marks_another_citizens(system: System) -> None:
    owner, other = login(system.wallet, OWNER), login(system.wallet, OTHER)
    _scan(system, owner, make_offer(system, "ajuntament-girona", "padro", OWNER))
    _scan(system, other, make_offer(system, "ajuntament-girona", "padro", OTHER))
    mine = [i for i, a in _alerts(system, owner).items() if not a["read"]]
    assert mine
    theirs = list(_alerts(system, other))
    assert theirs and not set(theirs) & set(mine)

    # The other citizen names the owner's alerts, then marks "all": only their own are read.
    named = httpx.post(f"{system.wallet}/v1/alerts/read", json={"ids": mine}, headers=bearer(other))
    assert named.status_code == 204, named.text
    assert all(not _alerts(system, owner)[i]["read"] for i in mine)
    every = httpx.post(f"{system.wallet}/v1/alerts/read", json={"ids": None}, headers=bearer(other))
    assert every.status_code == 204, every.text
    assert all(a["read"] for a in _alerts(system, other).values())
    owners = _alerts(system, owner)
    assert all(not owners[i]["read"] for i in mine)
    unread = httpx.get(f"{system.wallet}/v1/alerts", params={"unread": "true"}, headers=bearer(owner)).json()
    assert set(mine) <= {a["id"] for a in unread}


def test_another_citizens_presentation_and_offer_ids_are_not_found(system: System) -> None:
    owner, other = login(system.wallet, OWNER), login(system.wallet, OTHER)
    request = agency_request(system)
    pid = open_presentation(system, owner, request)["presentation_id"]
    offer_id = _scan(system, owner, make_offer(system, "ajuntament-girona", "padro", OWNER))["offer_id"]
    before_presentation = httpx.get(f"{system.wallet}/v1/presentations/{pid}", headers=bearer(owner)).json()
    before_offer = httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(owner)).json()

    presentation = f"{system.wallet}/v1/presentations/{pid}"
    offer = f"{system.wallet}/v1/offers/{offer_id}"
    for method, url, body in (("GET", presentation, None), ("POST", f"{presentation}/approve", {}),
                              ("POST", f"{presentation}/decline", None), ("GET", offer, None),
                              ("POST", f"{offer}/accept", {"tx_code": None}), ("POST", f"{offer}/poll", None)):
        r = httpx.request(method, url, json=body, headers=bearer(other), timeout=30)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (method, url, r.status_code, r.text)

    # Nothing changed for the owner: the request is still theirs to answer, the offer theirs to accept.
    assert httpx.get(presentation, headers=bearer(owner)).json() == before_presentation
    assert before_presentation["state"] == "pending"
    assert httpx.get(offer, headers=bearer(owner)).json() == before_offer
    assert before_offer["state"] == "offered"
    status = httpx.get(request["status_url"], headers=system.verifier_headers("ajuntament-barcelona")).json()
    assert status["status"] == "pending"
    assert httpx.get(f"{system.wallet}/v1/history", headers=bearer(other)).json() == []


def test_an_answer_the_verifier_refuses_is_reported_as_verifier_refused(system: System) -> None:
    tokens = login(system.wallet, REFUSED_CITIZEN)
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", REFUSED_CITIZEN))
    request = agency_request(system)
    # The same request opened twice: answered by declining the first, the verifier refuses the second answer.
    first, second = open_presentation(system, tokens, request), open_presentation(system, tokens, request)
    assert second["satisfiable"], second
    declined = httpx.post(f"{system.wallet}/v1/presentations/{first['presentation_id']}/decline",
                          headers=bearer(tokens), timeout=30)
    assert declined.status_code == 200, declined.text
    refused = httpx.post(f"{system.wallet}/v1/presentations/{second['presentation_id']}/approve", json={},
                         headers=bearer(tokens), timeout=30)
    assert refused.status_code == 502 and refused.json()["error"] == "verifier_refused", refused.text
    after = httpx.get(f"{system.wallet}/v1/presentations/{second['presentation_id']}", headers=bearer(tokens)).json()
    assert after["state"] == "failed" and after["error"]["error"] == "verifier_refused", after
    shares = httpx.get(f"{system.wallet}/v1/history", params={"kind": "share"}, headers=bearer(tokens)).json()
    assert [(s["details"]["outcome"], s["details"]["error"]) for s in shares] == [("failed", "verifier_refused")]


def test_a_wrong_transaction_code_is_reported_as_invalid_tx_code_and_can_be_corrected(system: System) -> None:
    tokens = login(system.wallet, TX_CITIZEN)
    offer = make_offer(system, "ajuntament-girona", "padro", TX_CITIZEN)
    assert offer["tx_code"]
    offer_id = _scan(system, tokens, offer)["offer_id"]
    accept = f"{system.wallet}/v1/offers/{offer_id}/accept"
    wrong = "".join("1" if c != "1" else "2" for c in offer["tx_code"])
    refused = httpx.post(accept, json={"tx_code": wrong}, headers=bearer(tokens), timeout=60)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_tx_code", refused.text
    kept = httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(tokens)).json()
    assert kept["state"] == "offered" and kept["error"]["error"] == "invalid_tx_code", kept
    assert httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json() == []
    # The citizen types it again, right this time.
    accepted = httpx.post(accept, json={"tx_code": offer["tx_code"]}, headers=bearer(tokens), timeout=60)
    assert accepted.status_code == 200 and accepted.json()["state"] == "issued", accepted.text
