"""Approving a presentation checks that the chosen credentials may still be presented.

A request is approved some time after it was scanned (its consent screen stays up for up to
``offer_ttl``); the approval sent the chosen credentials whatever had happened to them since: it read
neither the status the background sweep had recorded meanwhile nor, when the last status check was
older than the list's ``ttl``, the issuer's list. A credential revoked or suspended in between went
to the verifier, which fetches the list itself, refused it, and kept the claims. Now a status check that
is due runs at the approval (as the sweep runs it: same rules, same alert), and a credential that is
revoked, suspended or expired answers 409 (``credential_revoked``, ``credential_suspended``,
``credential_expired``): nothing is sent, the request stays pending, and ``GET`` no longer offers it.

Real issuer, verifier and wallet over HTTP, on a system of this module's own without the wallet's
background sweep: only the approval itself checks a status, and a status check falls due when the
test moves it into the past (as time passing past the list's ``ttl`` would).
"""

from __future__ import annotations

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
from tests.wallet_api.test_e2e import make_offer

REVOKED_CITIZEN, SUSPENDED_CITIZEN = (generate_population(size=50).citizens[i].identifier for i in (5, 6))
AGENCY = "ajuntament-barcelona"


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("approval-status"), background_interval=0) as running:
        yield running


def _receive(system: System, tokens: dict[str, str], citizen: str) -> tuple[str, str]:
    """A tax certificate received: ``(wallet credential id, issuer record id)``."""
    offer = make_offer(system, "aoc-tax", "tax-compliance", citizen)
    preview = httpx.post(f"{system.wallet}/v1/offers", json={"offer_uri": offer["offer_uri"]},
                         headers=bearer(tokens), timeout=30).json()
    accepted = httpx.post(f"{system.wallet}/v1/offers/{preview['offer_id']}/accept",
                          json={"tx_code": offer["tx_code"]}, headers=bearer(tokens), timeout=60)
    assert accepted.status_code == 200, accepted.text
    return accepted.json()["credential_ids"][0], offer["credential_ids"]["tax-compliance"]


def _issuer(system: System, record: str, action: str) -> None:
    r = httpx.post(f"{system.issuer}/v1/credentials/{record}/{action}", headers=system.issuer_headers("aoc-tax"),
                   timeout=30)
    assert r.status_code == 200, r.text


def _approve(system: System, tokens: dict[str, str], presentation_id: str, body: dict[str, Any] | None = None
             ) -> httpx.Response:
    return httpx.post(f"{system.wallet}/v1/presentations/{presentation_id}/approve", json=body or {},
                      headers=bearer(tokens), timeout=60)


def _verifier_status(system: System, request: dict[str, Any]) -> str:
    return httpx.get(request["status_url"], headers=system.verifier_headers(AGENCY), timeout=30).json()["status"]


def _wallet_get(system: System, tokens: dict[str, str], path: str, **params: Any) -> Any:
    r = httpx.get(f"{system.wallet}/v1/{path}", params=params, headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _make_due(system: System, credential_id: str) -> None:
    """The list's ttl has passed since the last check: the next one is due."""
    execute_sql(system, "UPDATE credentials SET next_status_check = '2000-01-01 00:00:00.000000' WHERE id = ?",
                credential_id)


def test_a_credential_revoked_after_the_scan_is_not_sent(own_system: System) -> None:
    tokens = login(own_system.wallet, REVOKED_CITIZEN)
    cid, record = _receive(own_system, tokens, REVOKED_CITIZEN)
    request = agency_request(own_system)
    preview = open_presentation(own_system, tokens, request)
    assert [o["credential_id"] for o in preview["queries"][0]["options"]] == [cid] and preview["satisfiable"]

    _issuer(own_system, record, "revoke")  # while the consent screen is up
    # Never checked since it was received (no sweep here): the check is due, so the approval runs it.
    refused = _approve(own_system, tokens, preview["presentation_id"])
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "credential_revoked"
    assert "nothing was sent" in refused.json()["error_description"]
    assert _verifier_status(own_system, request) == "pending"  # nothing reached the verifier
    assert _wallet_get(own_system, tokens, "history", kind="share") == []

    # The citizen is told: the credential reads revoked, with an alert, and the request no longer offers it.
    assert _wallet_get(own_system, tokens, f"credentials/{cid}")["status"] == "revoked"
    assert any(a["kind"] == "revoked" and a["credential_id"] == cid for a in _wallet_get(own_system, tokens, "alerts"))
    now = _wallet_get(own_system, tokens, f"presentations/{preview['presentation_id']}")
    assert now["state"] == "pending" and not now["satisfiable"] and now["queries"][0]["options"] == []
    # Revocation is final, so no check is due any more: the recorded status alone refuses it.
    assert query_sql(own_system, "SELECT next_status_check FROM credentials WHERE id = ?", cid) == [(None,)]
    again = _approve(own_system, tokens, preview["presentation_id"], {"selection": {"tax": cid}})
    assert again.status_code == 409 and again.json()["error"] == "credential_revoked", again.text
    assert _verifier_status(own_system, request) == "pending"

    declined = httpx.post(f"{own_system.wallet}/v1/presentations/{preview['presentation_id']}/decline",
                          headers=bearer(tokens), timeout=30)
    assert declined.status_code == 200 and declined.json()["state"] == "declined", declined.text


def test_a_suspension_is_seen_when_the_check_falls_due_and_so_is_its_lifting(own_system: System) -> None:
    tokens = login(own_system.wallet, SUSPENDED_CITIZEN)
    cid, record = _receive(own_system, tokens, SUSPENDED_CITIZEN)

    # A first share: the approval checks the list (due since the receipt), finds it valid and sends.
    first = agency_request(own_system)
    sent = _approve(own_system, tokens, open_presentation(own_system, tokens, first)["presentation_id"])
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    [(checked_at, next_check)] = query_sql(
        own_system, "SELECT status_checked_at, next_status_check FROM credentials WHERE id = ?", cid)
    assert checked_at is not None and next_check > checked_at  # the next one after the list's ttl

    # Suspended by its issuer after the next request was scanned, and the check falls due.
    second = agency_request(own_system)
    preview = open_presentation(own_system, tokens, second)
    assert [o["credential_id"] for o in preview["queries"][0]["options"]] == [cid]
    _issuer(own_system, record, "suspend")
    _make_due(own_system, cid)
    refused = _approve(own_system, tokens, preview["presentation_id"])
    assert refused.status_code == 409 and refused.json()["error"] == "credential_suspended", refused.text
    assert _verifier_status(own_system, second) == "pending"
    assert _wallet_get(own_system, tokens, f"credentials/{cid}")["status"] == "suspended"
    assert any(a["kind"] == "suspended" for a in _wallet_get(own_system, tokens, "alerts"))
    assert _wallet_get(own_system, tokens, f"presentations/{preview['presentation_id']}")["queries"][0]["options"] == []

    # Reinstated: once its check is due again, the approval sees that too, and sends.
    _issuer(own_system, record, "reinstate")
    _make_due(own_system, cid)
    sent = _approve(own_system, tokens, preview["presentation_id"], {"selection": {"tax": cid}})
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    assert [d["credential_id"] for d in sent.json()["disclosed"]] == [cid]
    assert _wallet_get(own_system, tokens, f"credentials/{cid}")["status"] == "valid"
    assert len(_wallet_get(own_system, tokens, "history", kind="share")) == 2
