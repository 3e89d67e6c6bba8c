"""Why the issuer queried the registry behind a credential, end to end over HTTP: the issuer's credential
response carries it (``query_evidence``), the wallet keeps it with the credential and its receipt, and
shows it to the citizen exactly as the issuer's record has it, without any claim value nor the
official's NIF. Immediate and deferred issuance."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from sandbox.population import DEMO_PENDING, generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System
from tests.wallet_api.test_e2e import make_offer, receive

#: Citizens with tax and padró records that no other test of this system logs in.
TAX_CITIZEN, PADRO_CITIZEN = [generate_population(size=50).citizens[i].identifier for i in (44, 49)]
#: The demo official of every provisioned data source (issuer.provisioning.DEMO_OFFICIAL).
OFFICIAL_NAME, OFFICIAL_NIF = "Oficina de Cartera (demo)", "00000000T"


def _record(system: System, slug: str, subject: str, request_id: str) -> dict[str, Any]:
    """The issuer's issuance record of the query ``request_id`` (its admin API)."""
    r = httpx.get(f"{system.issuer}/v1/credentials", params={"subject": subject, "limit": 500},
                  headers=system.issuer_headers(slug), timeout=30)
    assert r.status_code == 200, r.text
    found = [item for item in r.json()["items"] if item["evidence"]["request_id"] == request_id]
    assert len(found) == 1, found
    return found[0]


def _expected(evidence: dict[str, Any]) -> dict[str, Any]:
    """What the wallet must show for the record's evidence (docs/issuer.md, "query_evidence")."""
    assert evidence["official"] == f"{OFFICIAL_NAME} ({OFFICIAL_NIF})"  # the record keeps the NIF
    return {"purpose": evidence["purpose"], "procedure": evidence["procedure"],
            "legal_basis": {"Si": "consent", "Ley": "law", "NoOpo": "no_objection"}[evidence["consent"]],
            "official": {"name": OFFICIAL_NAME}, "source": {"name": evidence["source"], "product": evidence["product"]},
            "queried_at": evidence["timestamp"], "request_id": evidence["request_id"]}


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for inner in value.values() for leaf in _leaves(inner)]
    if isinstance(value, list):
        return [leaf for inner in value for leaf in _leaves(inner)]
    return [] if value is None or isinstance(value, bool) else [str(value)]


def _no_claim_value_in(shown: dict[str, Any], claims: dict[str, Any], subject: str) -> None:
    texts = _leaves(shown)
    # Names, addresses, identifiers: not codes such as POSITIVE, nor dates (the query's day may well be
    # the certificate's issue date).
    personal = [v for v in _leaves(claims) if len(v) >= 4 and not v.isupper() and not re.fullmatch(r"[\d:T.+-]+", v)]
    assert personal, claims
    for value in _leaves(claims):
        assert value not in texts, value  # no member of the evidence is a claim value
    for value in personal + [subject]:
        assert all(value not in text for text in texts), value  # nor holds one (names, addresses, the NIF)
    assert OFFICIAL_NIF not in json.dumps(shown)


def _check(system: System, tokens: dict[str, str], slug: str, subject: str, credential_id: str) -> dict[str, Any]:
    headers = {**bearer(tokens), "Accept-Language": "en"}
    detail = httpx.get(f"{system.wallet}/v1/credentials/{credential_id}", headers=headers, timeout=30)
    assert detail.status_code == 200, detail.text
    shown = detail.json()["query_evidence"]
    assert shown is not None, "the wallet shows no evidence for the credential"
    record = _record(system, slug, subject, shown["request_id"])
    assert shown == _expected(record["evidence"])
    _no_claim_value_in(shown, detail.json()["claims"], subject)
    history = httpx.get(f"{system.wallet}/v1/history", params={"kind": "receipt"}, headers=headers, timeout=30)
    [receipt] = [h for h in history.json() if h["details"].get("credential_id") == credential_id]
    assert receipt["details"]["query_evidence"] == shown
    return shown


def test_the_credential_and_its_receipt_show_the_query_the_issuer_recorded(system: System) -> None:
    for slug, type_id, subject in (("aoc-tax", "tax-compliance", TAX_CITIZEN),
                                   ("ajuntament-girona", "padro", PADRO_CITIZEN)):
        tokens = login(system.wallet, subject)
        result = receive(system, tokens, make_offer(system, slug, type_id, subject))
        assert result["state"] == "issued"
        shown = _check(system, tokens, slug, subject, result["credential_ids"][0])
        assert shown["source"]["name"] == "viaoberta" and shown["legal_basis"] == "consent"
    # The OpenAPI document types the member (a client can rely on its shape).
    schemas = httpx.get(f"{system.wallet}/openapi.json", timeout=30).json()["components"]["schemas"]
    assert "query_evidence" in schemas["CredentialDetail"]["properties"]
    assert set(schemas["QueryEvidence"]["properties"]) == {"purpose", "procedure", "legal_basis", "official",
                                                         "source", "queried_at", "request_id"}


def test_a_deferred_credential_shows_the_query_of_its_delivery(system: System) -> None:
    tokens = login(system.wallet, DEMO_PENDING)
    pending = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", DEMO_PENDING))
    assert pending["state"] == "pending"
    offer_id = pending["offer_id"]
    deadline = time.monotonic() + 20
    while True:
        r = httpx.post(f"{system.wallet}/v1/offers/{offer_id}/poll", headers=bearer(tokens), timeout=30)
        body = httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(tokens), timeout=30).json()
        if body["state"] == "issued" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert body["state"] == "issued", (r.text, body)
    _check(system, tokens, "aoc-tax", DEMO_PENDING, body["credential_ids"][0])
