"""A request whose DCQL ``credential_sets`` offers alternatives: the preview says, per query, whether the
approval sends it (``shared``), and the verifier receives exactly the queries marked so — not an
alternative another option answers, and an alternative nothing answers blocks nothing (real issuer,
verifier and wallet over HTTP)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System
from tests.wallet_api.test_e2e import make_offer, receive

#: A citizen with a padró and degrees that no other test of this system logs in (``fresh_citizens``
#: hands out others); they never receive a tax certificate.
CITIZEN = generate_population(size=50).citizens[43].identifier
AGENCY = "uni-admissions"


def alternatives_request(system: System, agency: str = AGENCY) -> dict[str, Any]:
    """One credential set with three options, in the verifier's order of preference: a tax certificate
    (the citizen has none), the padró, a diploma (the citizen has both)."""
    templates: dict[str, Any] = {}
    for slug in ("ajuntament-barcelona", "uni-admissions"):
        listed = httpx.get(f"{system.verifier}/v1/templates", headers=system.verifier_headers(slug), timeout=30)
        templates.update({t["name"]: t for t in listed.json()})
    tax, residence, job = templates["grant-application"], templates["residence"], templates["job-application"]
    r = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers(agency), timeout=30, json={
        "dcql_query": {"credentials": [tax["dcql_query"]["credentials"][0], residence["dcql_query"]["credentials"][0],
                                       job["dcql_query"]["credentials"][0]],
                       "credential_sets": [{"options": [["tax"], ["padro"], ["diploma"]]}]},
        "purpose": {"en": "Your tax certificate, your residence or your degree"},
        "trusted_issuers": tax["trusted_issuers"] + residence["trusted_issuers"] + job["trusted_issuers"],
        "anchors_pem": residence["anchors_pem"]})
    assert r.status_code == 201, r.text
    return r.json()


def verifier_result(system: System, request: dict[str, Any], agency: str = AGENCY) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        result = httpx.get(request["status_url"], headers=system.verifier_headers(agency), timeout=10).json()
        if result["status"] != "pending" or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_the_preview_says_which_alternative_is_sent_and_only_that_one_is(system: System) -> None:
    tokens = login(system.wallet, CITIZEN)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", CITIZEN))
    receive(system, tokens, make_offer(system, "uni-barcelona", "university-diploma", CITIZEN))
    request = alternatives_request(system)
    preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                         headers={**bearer(tokens), "Accept-Language": "en"}, timeout=30)
    assert preview.status_code == 201, preview.text
    body = preview.json()
    assert body["satisfiable"] is True
    queries = {q["query_id"]: q for q in body["queries"]}
    # The first option the wallet can answer is the one sent; the others are not, whether or not a
    # credential answers them.
    assert {qid: (q["satisfied"], q["shared"]) for qid, q in queries.items()} == {
        "tax": (False, False), "padro": (True, True), "diploma": (True, False)}
    # The same on a later read of the request (the consent screen reads it so).
    again = httpx.get(f"{system.wallet}/v1/presentations/{body['presentation_id']}", headers=bearer(tokens), timeout=30)
    assert [(q["query_id"], q["shared"]) for q in again.json()["queries"]] == [
        ("tax", False), ("padro", True), ("diploma", False)]
    # The schema documents the flag.
    schema = httpx.get(f"{system.wallet}/openapi.json", timeout=30).json()["components"]["schemas"]["QueryView"]
    assert "shared" in schema["required"] and schema["properties"]["shared"]["description"]

    # A selection for an alternative that is not sent changes nothing: it is ignored.
    diploma_id = queries["diploma"]["options"][0]["credential_id"]
    sent = httpx.post(f"{system.wallet}/v1/presentations/{body['presentation_id']}/approve",
                      json={"selection": {"diploma": diploma_id}}, headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200, sent.text
    assert [d["query_id"] for d in sent.json()["disclosed"]] == [
        qid for qid, q in queries.items() if q["shared"]] == ["padro"]
    result = verifier_result(system, request)
    assert result["status"] == "verified", result
    assert set(result["claims"]) == {qid for qid, q in queries.items() if q["shared"]} == {"padro"}
    shares = httpx.get(f"{system.wallet}/v1/history", params={"kind": "share"}, headers=bearer(tokens)).json()
    assert [d["query_id"] for d in shares[0]["details"]["disclosed"]] == ["padro"]
