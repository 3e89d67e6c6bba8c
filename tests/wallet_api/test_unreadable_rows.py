"""A stored row that does not open (tampered with or corrupted in the database) is a clean, documented
error, and the rest of the wallet keeps working: the credential list flags the broken credential
(``unreadable``) instead of failing, showing it answers 500 ``server_error`` "stored data of this wallet
could not be opened" (no code, value nor trace in the body; one error log line with the vault error's
code and the wallet id), and the citizen can still see, present and delete the others, and delete it.
Likewise the history: a broken entry is listed, searched past and exported flagged (``unreadable``), and
the audit chain still reports it as broken.

Real issuer and wallet over HTTP (``system`` fixture); the sealed column corrupted in the SQLite file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cartera.cli import app as cli
from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, agency_request, execute_sql, open_presentation, query_sql
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


#: Two more citizens no other test of this system logs in: the one whose history row breaks, and
#: another whose rows must never show in it.
HISTORY_OWNER, HISTORY_OTHER = [generate_population(size=50).citizens[i].identifier for i in (25, 32)]


def _history(system: System, tokens: dict[str, str], **params: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{system.wallet}/v1/history", params=params, headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, (params, r.text)
    return r.json()


def _audit_verify(tmp_path: Path, export: str) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "wallet-history.json"
    path.write_text(export)
    result = CliRunner().invoke(cli, ["audit", "verify", str(path), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_an_unreadable_history_entry_is_flagged_and_the_rest_of_the_history_still_answers(
        system: System, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    other = login(system.wallet, HISTORY_OTHER)
    receive(system, other, make_offer(system, "ajuntament-girona", "padro", HISTORY_OTHER))
    [other_receipt] = _history(system, other)
    tokens = login(system.wallet, HISTORY_OWNER)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", HISTORY_OWNER))
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", HISTORY_OWNER))
    request = agency_request(system)
    preview = open_presentation(system, tokens, request, language="en")
    shared = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                        headers=bearer(tokens), timeout=30)
    assert shared.status_code == 200, shared.text
    before = _history(system, tokens)
    assert [h["kind"] for h in before] == ["share", "receipt", "receipt"]
    assert not any(h.get("unreadable") for h in before)
    share, good, broken = before
    needle = broken["details"]["credential_id"]  # in that entry's details only
    assert [h["id"] for h in _history(system, tokens, q=needle)] == [broken["id"]]

    # The row sealed under a key this wallet does not have: the other citizen's sealed details, copied
    # in the database over the owner's oldest receipt.
    [(original,)] = query_sql(system, "SELECT sealed FROM history WHERE id = ?", broken["id"])
    [(foreign,)] = query_sql(system, "SELECT sealed FROM history WHERE id = ?", other_receipt["id"])
    execute_sql(system, "UPDATE history SET sealed = ? WHERE id = ?", foreign, broken["id"])
    try:
        flagged = {**broken, "details": {}, "unreadable": True}
        with caplog.at_level(logging.WARNING, logger="wallet_api.routes.history"):
            listed = _history(system, tokens)
        assert listed == [share, good, flagged]
        lines = [r for r in caplog.records if r.name == "wallet_api.routes.history"]
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING
        assert lines[0].entry == broken["id"]  # type: ignore[attr-defined]
        assert needle not in lines[0].getMessage() and lines[0].exc_info is None
        assert not hasattr(lines[0], "details")

        # The filters on what the row holds in clear still find it; no text search does.
        assert _history(system, tokens, kind="receipt") == [good, flagged]
        assert _history(system, tokens, kind="share") == [share]
        assert _history(system, tokens, since=broken["created_at"]) == [share, good, flagged]
        assert _history(system, tokens, since=good["created_at"]) == [share, good]
        assert _history(system, tokens, q=needle) == []
        assert _history(system, tokens, q="stored") == [good]  # both receipts' outcome, before
        assert _history(system, tokens, q="barcelona") == [share]
        assert _history(system, tokens, limit="2") == [share, good]

        # The export: every entry, the broken one flagged the same way; the audit chain in it (and
        # `cartera audit verify`, and the server's check) still calls that entry broken.
        exported = httpx.get(f"{system.wallet}/v1/history/export", headers=bearer(tokens), timeout=30)
        assert exported.status_code == 200, exported.text
        doc = exported.json()
        # (the same instants: the list writes UTC as `Z`, the export as `+00:00`)
        assert [{**e, "created_at": dt.datetime.fromisoformat(e["created_at"])} for e in doc["entries"]] == \
            [{**e, "created_at": dt.datetime.fromisoformat(e["created_at"])} for e in listed]
        chained = {e["id"]: e for e in doc["audit"]["entries"]}
        assert "content" not in chained[broken["id"]] and chained[good["id"]]["content"] == good["details"]
        status, report = _audit_verify(tmp_path, exported.text)
        assert status == 1 and report["error"]["code"] == "audit.content_missing"
        assert report["error"]["entry_id"] == broken["id"]
        check = httpx.get(f"{system.wallet}/v1/audit/check", headers=bearer(tokens), timeout=30).json()
        assert not check["ok"] and check["error"]["code"] == "audit.content_missing"
        assert check["error"]["entry_id"] == broken["id"]
        audit_export = httpx.get(f"{system.wallet}/v1/audit/export", headers=bearer(tokens), timeout=30)
        assert audit_export.status_code == 200 and audit_export.json()["entries"] == doc["audit"]["entries"]
        proof = httpx.get(f"{system.wallet}/v1/audit/entries/{broken['id']}/proof", headers=bearer(tokens),
                          timeout=30)
        assert proof.status_code == 200 and proof.json()["content"] is None, proof.text

        # Nothing of the other citizen's, whose sealed bytes the broken row holds, shows in the owner's
        # answers; the other citizen's own history is as it was.
        for text in (json.dumps(listed), exported.text, audit_export.text, proof.text):
            assert other_receipt["id"] not in text and other_receipt["details"]["credential_id"] not in text
        assert _history(system, other) == [other_receipt]
    finally:
        execute_sql(system, "UPDATE history SET sealed = ? WHERE id = ?", original, broken["id"])
    assert _history(system, tokens) == before
    assert httpx.get(f"{system.wallet}/v1/audit/check", headers=bearer(tokens), timeout=30).json()["ok"]
