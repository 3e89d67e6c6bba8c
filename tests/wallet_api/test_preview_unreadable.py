"""The consent preview no longer offers what approving cannot present.

``GET /v1/presentations/{id}`` answered the preview exactly as kept at the scan: a credential that had
stopped opening since (its stored data damaged) or had been deleted stayed among a query's options, so
an app offered it and the approval failed (409 ``credential_unreadable`` / ``conflict``); an approval
naming no credential took the kept first option even when that was the broken one. Now a pending
request's preview leaves such options out (a required query left with none makes the request not
``satisfiable``), the approval's default is the first option offered now, and each query says, as a
count only (``unreadable_count``), how many credentials of a type it accepts could not be read. A
pending request past its expiry says so (``expired``): it can be neither approved nor declined.

Real issuer, verifier and wallet over HTTP, on a system of this module's own (the tests count
credentials and rely on which one a wallet received first), the sealed columns damaged in the wallet's
SQLite file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import (
    System,
    agency_request,
    execute_sql,
    open_presentation,
    query_sql,
    running_system,
)
from tests.wallet_api.test_e2e import make_offer, receive

_POPULATION = generate_population(size=50).citizens
SCANNED_BROKEN, BROKEN_SINCE, ONLY_ONE, DELETED_SINCE, EXPIRED = (_POPULATION[i].identifier for i in (5, 6, 7, 8, 9))


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("preview-unreadable")) as running:
        yield running


def _damage_credential(system: System, credential_id: str) -> None:
    """One bit of the credential's sealed details flipped, in the database."""
    [(sealed,)] = query_sql(system, "SELECT sealed FROM credentials WHERE id = ?", credential_id)
    execute_sql(system, "UPDATE credentials SET sealed = ? WHERE id = ?",
                sealed[:-1] + bytes([sealed[-1] ^ 1]), credential_id)


def _two_tax_certificates(system: System, citizen: str) -> tuple[dict[str, str], str, str]:
    tokens = login(system.wallet, citizen)
    first, second = (receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", citizen)
                             )["credential_ids"][0] for _ in range(2))
    return tokens, first, second


def _get(system: System, tokens: dict[str, str], presentation_id: str) -> httpx.Response:
    r = httpx.get(f"{system.wallet}/v1/presentations/{presentation_id}", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return r


def _offered(query: dict[str, Any]) -> list[str]:
    return [o["credential_id"] for o in query["options"]]


def _approve(system: System, tokens: dict[str, str], presentation_id: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{system.wallet}/v1/presentations/{presentation_id}/approve", json=body,
                      headers=bearer(tokens), timeout=30)


def test_a_scan_counts_the_credentials_of_a_matching_type_it_could_not_read(own_system: System) -> None:
    tokens, first, second = _two_tax_certificates(own_system, SCANNED_BROKEN)
    _damage_credential(own_system, first)
    preview = open_presentation(own_system, tokens, agency_request(own_system))
    [query] = preview["queries"]
    assert _offered(query) == [second] and preview["satisfiable"] and query["shared"]
    assert query["unreadable_count"] == 1
    # A count only: nothing of the broken credential, not even its id.
    r = _get(own_system, tokens, preview["presentation_id"])
    assert first not in r.text and r.json()["queries"][0]["unreadable_count"] == 1


def test_a_credential_that_stopped_opening_since_the_scan_is_no_longer_offered(own_system: System) -> None:
    tokens, first, second = _two_tax_certificates(own_system, BROKEN_SINCE)
    preview = open_presentation(own_system, tokens, agency_request(own_system))
    [query] = preview["queries"]
    assert _offered(query) == [first, second] and query["unreadable_count"] == 0

    _damage_credential(own_system, first)  # the kept preview's first option
    now = _get(own_system, tokens, preview["presentation_id"])
    assert first not in now.text
    [query] = now.json()["queries"]
    assert _offered(query) == [second] and query["unreadable_count"] == 1
    assert now.json()["satisfiable"] and query["satisfied"] and query["shared"] and not now.json()["expired"]

    # An approval naming no credential takes the first one offered now, not the kept preview's first.
    sent = _approve(own_system, tokens, preview["presentation_id"], {})
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    assert [d["credential_id"] for d in sent.json()["disclosed"]] == [second]


def test_a_request_whose_only_credential_stopped_opening_is_not_satisfiable(own_system: System) -> None:
    tokens = login(own_system.wallet, ONLY_ONE)
    only = receive(own_system, tokens, make_offer(own_system, "aoc-tax", "tax-compliance", ONLY_ONE))["credential_ids"][0]
    preview = open_presentation(own_system, tokens, agency_request(own_system))
    assert preview["satisfiable"]

    _damage_credential(own_system, only)
    now = _get(own_system, tokens, preview["presentation_id"]).json()
    [query] = now["queries"]
    assert now["state"] == "pending" and not now["satisfiable"]
    assert query == {**query, "options": [], "satisfied": False, "shared": False, "reason": "no_credentials",
                     "unreadable_count": 1}
    # Naming it anyway still answers what it did: nothing sent, the request pending, to decline.
    refused = _approve(own_system, tokens, preview["presentation_id"], {"selection": {query["query_id"]: only}})
    assert refused.status_code == 409 and refused.json()["error"] == "credential_unreadable", refused.text

    # An unreadable credential that could not answer anyway (expired, by its clear columns) is not counted.
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    execute_sql(own_system, "UPDATE credentials SET expires_at = ? WHERE id = ?", past, only)
    assert _get(own_system, tokens, preview["presentation_id"]).json()["queries"][0]["unreadable_count"] == 0

    declined = httpx.post(f"{own_system.wallet}/v1/presentations/{preview['presentation_id']}/decline",
                          headers=bearer(tokens), timeout=30)
    assert declined.status_code == 200 and declined.json()["state"] == "declined", declined.text


def test_a_credential_deleted_since_the_scan_is_no_longer_offered(own_system: System) -> None:
    tokens, first, second = _two_tax_certificates(own_system, DELETED_SINCE)
    preview = open_presentation(own_system, tokens, agency_request(own_system))
    assert _offered(preview["queries"][0]) == [first, second]

    assert httpx.delete(f"{own_system.wallet}/v1/credentials/{first}", headers=bearer(tokens)).status_code == 204
    [query] = _get(own_system, tokens, preview["presentation_id"]).json()["queries"]
    assert _offered(query) == [second] and query["unreadable_count"] == 0
    sent = _approve(own_system, tokens, preview["presentation_id"], {})
    assert sent.status_code == 200, sent.text
    assert [d["credential_id"] for d in sent.json()["disclosed"]] == [second]


def test_a_pending_request_past_its_expiry_says_so(own_system: System) -> None:
    tokens = login(own_system.wallet, EXPIRED)
    receive(own_system, tokens, make_offer(own_system, "aoc-tax", "tax-compliance", EXPIRED))
    preview = open_presentation(own_system, tokens, agency_request(own_system))
    assert preview["expired"] is False
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S.%f")
    execute_sql(own_system, "UPDATE presentations SET expires_at = ? WHERE id = ?", past, preview["presentation_id"])

    now = _get(own_system, tokens, preview["presentation_id"]).json()
    assert now["state"] == "pending" and now["expired"] is True
    for action in ("approve", "decline"):
        r = httpx.post(f"{own_system.wallet}/v1/presentations/{preview['presentation_id']}/{action}", json={},
                       headers=bearer(tokens), timeout=30)
        assert r.status_code == 409 and r.json()["error"] == "conflict", (action, r.text)


def test_the_schema_documents_the_count_and_the_expiry(own_system: System) -> None:
    schemas = httpx.get(f"{own_system.wallet}/openapi.json", timeout=30).json()["components"]["schemas"]
    count = schemas["QueryView"]["properties"]["unreadable_count"]
    assert count["type"] == "integer" and count["minimum"] == 0 and "could not be read" in count["description"]
    expired = schemas["PresentationView"]["properties"]["expired"]
    assert expired["type"] == "boolean" and "409 `conflict`" in expired["description"]
