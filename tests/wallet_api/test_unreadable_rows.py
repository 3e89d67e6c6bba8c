"""A stored row that does not open (tampered with or corrupted in the database) is a clean, documented
error, and the rest of the wallet keeps working: the credential list flags the broken credential
(``unreadable``) instead of failing, showing it answers 500 ``server_error`` "stored data of this wallet
could not be opened" (no code, value nor trace in the body; one error log line with the vault error's
code and the wallet id), and the citizen can still see, present and delete the others, and delete it.

Real issuer and wallet over HTTP (``system`` fixture); the sealed column corrupted in the SQLite file.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, execute_sql, query_sql
from tests.wallet_api.test_e2e import make_offer, receive

#: A citizen no other test of this system logs in.
CITIZEN = generate_population(size=50).citizens[23].identifier
UNREADABLE = {"error": "server_error", "error_description": "stored data of this wallet could not be opened"}


def test_a_corrupted_credential_is_flagged_and_the_rest_of_the_wallet_keeps_working(
        system: System, caplog: pytest.LogCaptureFixture) -> None:
    tokens = login(system.wallet, CITIZEN)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", CITIZEN))
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", CITIZEN))
    listed = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens), timeout=30).json()
    assert len(listed) == 2 and not any(c.get("unreadable") for c in listed)
    broken, good = listed
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens), timeout=30).json()["wallet_id"]

    # One bit of the broken credential's sealed details flipped, directly in the database.
    [(sealed,)] = query_sql(system, "SELECT sealed FROM credentials WHERE id = ?", broken["id"])
    execute_sql(system, "UPDATE credentials SET sealed = ? WHERE id = ?",
                sealed[:-1] + bytes([sealed[-1] ^ 1]), broken["id"])

    # The list still answers, the broken one flagged with what the row holds in clear.
    r = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    flagged, intact = r.json()
    assert flagged["id"] == broken["id"] and flagged["unreadable"] is True
    assert {k: flagged[k] for k in ("vct", "issuer", "issued_at", "expires_at", "status")} == \
        {k: broken[k] for k in ("vct", "issuer", "issued_at", "expires_at", "status")}
    # (the background sweep may have checked its status meanwhile)
    assert {**intact, "status_checked_at": None} == {**good, "status_checked_at": None}

    # Showing it: a clean 500, nothing of the row in the body; one error line naming the code and wallet.
    with caplog.at_level(logging.ERROR, logger="wallet_api.app"):
        shown = httpx.get(f"{system.wallet}/v1/credentials/{broken['id']}", headers=bearer(tokens), timeout=30)
    assert shown.status_code == 500 and shown.json() == UNREADABLE, shown.text
    assert shown.headers["cache-control"] == "no-store"
    lines = [r for r in caplog.records if r.name == "wallet_api.app"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert lines[0].code == "vault.decrypt_failed" and lines[0].wallet == wallet_id  # type: ignore[attr-defined]
    assert CITIZEN not in lines[0].getMessage() and lines[0].exc_info is None

    # The other credential is shown as ever, and the broken one can be deleted.
    assert httpx.get(f"{system.wallet}/v1/credentials/{good['id']}", headers=bearer(tokens),
                     timeout=30).status_code == 200
    deleted = httpx.delete(f"{system.wallet}/v1/credentials/{broken['id']}", headers=bearer(tokens), timeout=30)
    assert deleted.status_code == 204, deleted.text
    assert [c["id"] for c in httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens),
                                        timeout=30).json()] == [good["id"]]
    history = httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens), timeout=30).json()
    assert "deletion" in {h["kind"] for h in history}
