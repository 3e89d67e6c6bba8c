"""Rows that do not open no longer block a backup or its import.

A history entry cannot be deleted, so one that does not open (damaged, or sealed under a key the wallet
no longer has) made every backup export answer 500 for good; so did a credential that does not open,
until deleted. The export now holds everything that opens and says what it left out: how many beside
the ciphertext (``skipped_count``), which ones only inside the encrypted file (``skipped``, which the
import reports back as ``skipped_at_export``), as the file is kept where others may read it. An import compared the file's history with every ``imported`` entry of the
wallet and answered 500 when one of them did not open: such an entry is now passed over, logged by id.

Real issuer, verifier and wallet over HTTP (the ``system`` fixture), the sealed columns damaged in the
wallet's SQLite file.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import httpx
import pytest

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, bound_backup, login
from tests.wallet_api.system import System, execute_sql, query_sql
from tests.wallet_api.test_e2e import make_offer, receive
from wallet_api.backup import open_backup

#: Citizens of the system's population with tax and padró records that no other test logs in (the
#: population has 50; 13, 19 and 20 were the last unused): the second's wallet is shared with
#: test_unreadable_share, whose tests read nothing the import test here adds.
BACKUP_CITIZEN, IMPORT_CITIZEN = [generate_population(size=50).citizens[i].identifier for i in (20, 19)]
PASSPHRASE = "correct horse battery"


def _damage(system: System, table: str, row_id: str) -> None:
    """One bit of the row's sealed value flipped, in the database."""
    [(sealed,)] = query_sql(system, f"SELECT sealed FROM {table} WHERE id = ?", row_id)  # noqa: S608 - fixed names
    execute_sql(system, f"UPDATE {table} SET sealed = ? WHERE id = ?",  # noqa: S608
                sealed[:-1] + bytes([sealed[-1] ^ 1]), row_id)


def _history(system: System, tokens: dict[str, str]) -> list[dict[str, Any]]:
    r = httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _export(system: System, tokens: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{system.wallet}/v1/backup/export", json={"passphrase": PASSPHRASE}, headers=bearer(tokens),
                      timeout=60)


def _import(system: System, tokens: dict[str, str], backup: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{system.wallet}/v1/backup/import", json={"passphrase": PASSPHRASE, "backup": backup},
                      headers={**bearer(tokens), "Accept-Language": "ca"}, timeout=60)


def test_the_backup_holds_what_opens_and_lists_what_it_left_out(
        system: System, caplog: pytest.LogCaptureFixture) -> None:
    tokens = login(system.wallet, BACKUP_CITIZEN)
    padro = receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", BACKUP_CITIZEN))["credential_ids"][0]
    tax = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", BACKUP_CITIZEN))["credential_ids"][0]
    listed = {c["id"]: c for c in httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()}
    tax_receipt, padro_receipt = _history(system, tokens)
    assert tax_receipt["details"]["credential_id"] == tax and padro_receipt["details"]["credential_id"] == padro

    clean = _export(system, tokens)
    assert clean.status_code == 200, clean.text

    # The padró's receipt (a history entry: it cannot be deleted) and the padró itself stop opening.
    _damage(system, "history", padro_receipt["id"])
    _damage(system, "credentials", padro)
    with caplog.at_level(logging.WARNING, logger="wallet_api.backup"):
        exported = _export(system, tokens)
    assert exported.status_code == 200, exported.text
    backup = exported.json()
    # Beside the ciphertext, how many were left out; nothing of which ones (ids, kinds, times).
    assert backup["skipped_count"] == 2 and "skipped" not in backup
    assert padro not in exported.text and padro_receipt["id"] not in exported.text
    assert "receipt" not in exported.text
    # Inside the file: each left-out row by id, kind (`credential`, or the history kind) and the time it
    # was stored.
    content = open_backup(backup, PASSPHRASE)
    assert [(s["id"], s["kind"]) for s in content["skipped"]] == [(padro, "credential"),
                                                                   (padro_receipt["id"], "receipt")]
    stored = [dt.datetime.fromisoformat(s["created_at"]) for s in content["skipped"]]
    assert all(t.tzinfo is not None for t in stored)
    assert stored[1] == dt.datetime.fromisoformat(padro_receipt["created_at"])
    # The credential list shows what the id names: the padró, flagged.
    flagged = {c["id"]: c for c in httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()}
    assert flagged[padro]["unreadable"] is True and flagged[padro]["vct"] == listed[padro]["vct"]
    # Logged by id only; nothing of the entry's content.
    lines = [r for r in caplog.records if r.name == "wallet_api.backup"]
    assert [getattr(r, "entry", None) for r in lines] == [padro_receipt["id"]]
    assert lines[0].levelno == logging.WARNING and tax not in lines[0].getMessage()

    # And what opens.
    assert [c["vct"] for c in content["credentials"]] == [listed[tax]["vct"]]
    assert [h["id"] for h in content["history"]] == [tax_receipt["id"]]

    # The round trip: the tax certificate deleted, the file restores it and reports what it lacks.
    assert httpx.delete(f"{system.wallet}/v1/credentials/{tax}", headers=bearer(tokens)).status_code == 204
    r = _import(system, tokens, backup)
    assert r.status_code == 200, r.text
    assert r.json() == {"credentials_added": 1, "credentials_expired": 0, "history_imported": 0,
                        "skipped_at_export": 2}
    restored = [c for c in httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()
                if not c.get("unreadable")]
    assert [c["vct"] for c in restored] == [listed[tax]["vct"]]
    restore = next(h for h in _history(system, tokens) if h["kind"] == "restore")
    assert restore["details"]["skipped_at_export"] == 2
    # A file that also has the list beside the ciphertext (as exports did for a while) imports as any
    # other: that copy is not read (an empty one does not hide the two the content lists).
    legacy = _import(system, tokens, {**backup, "skipped": []})
    assert legacy.status_code == 200, legacy.text
    assert legacy.json() == {"credentials_added": 0, "credentials_expired": 0, "history_imported": 0,
                             "skipped_at_export": 2}
    # Nothing left out, the export says so; and a file without `skipped` in its content (as every file
    # exported before has none) still imports, reporting nothing left out.
    assert clean.json()["skipped_count"] == 0 and "skipped" not in clean.json()
    assert open_backup(clean.json(), PASSPHRASE)["skipped"] == []
    settings = system.wallet_app.state.wallet.settings
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens)).json()["wallet_id"]
    older = bound_backup(settings, wallet_id, {"credentials": [], "history": content["history"]}, PASSPHRASE)
    again = _import(system, tokens, older)
    assert again.status_code == 200 and again.json()["skipped_at_export"] == 0, again.text


def test_an_import_passes_over_an_imported_entry_that_does_not_open(
        system: System, caplog: pytest.LogCaptureFixture) -> None:
    tokens = login(system.wallet, IMPORT_CITIZEN)
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens)).json()["wallet_id"]
    settings = system.wallet_app.state.wallet.settings
    event = {"id": "hist_fromanotherdevice1", "kind": "share", "created_at": "2026-01-02T03:04:05+00:00",
             "details": {"verifier": {"name": "Ajuntament"}, "purpose": "imported share", "disclosed": [],
                         "outcome": "sent"}}
    backup = bound_backup(settings, wallet_id, {"credentials": [], "history": [event]}, PASSPHRASE)
    first = _import(system, tokens, backup)
    assert first.status_code == 200 and first.json()["history_imported"] == 1, first.text
    [imported] = [h for h in _history(system, tokens)
                  if h["kind"] == "imported" and h["details"].get("original_id") == event["id"]]
    assert _import(system, tokens, backup).json()["history_imported"] == 0  # compared: there already

    _damage(system, "history", imported["id"])
    with caplog.at_level(logging.WARNING, logger="wallet_api.backup"):
        r = _import(system, tokens, backup)
    # Not comparable, the entry is passed over (and the file's event imported again) instead of a 500.
    assert r.status_code == 200 and r.json()["history_imported"] == 1, r.text
    lines = [rec for rec in caplog.records if rec.name == "wallet_api.backup"]
    assert [getattr(rec, "entry", None) for rec in lines] == [imported["id"]]
    assert lines[0].levelno == logging.WARNING and "imported share" not in lines[0].getMessage()

    # A `skipped` list of the wrong shape is refused like any other bad member.
    bad = bound_backup(settings, wallet_id, {"credentials": [], "history": [], "skipped": [{"id": 3}]}, PASSPHRASE)
    refused = _import(system, tokens, bad)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_backup", refused.text
    assert refused.json()["error_description"].startswith("skipped[0].id")
