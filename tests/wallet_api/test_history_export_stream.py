"""The history export streams its audit part too: what it holds in memory does not grow with the history.

``GET /v1/history/export`` streamed its entries 500 at a time, but built the audit chain part whole
first (every chain entry, the content of each — all the history's details — and the whole JSON text),
so a wallet with a long history made one download hold all of it at once. The chain's entries and
checkpoints are now read and sent 500 at a time as well, the document unchanged byte for byte: the
audit part is exactly the JSON of ``GET /v1/audit/export`` (streamed the same way since:
test_audit_stream.py) written as the export always wrote it, and it verifies.

A real wallet over HTTP (the ``wallet`` fixture: no background sweep signs checkpoints meanwhile), its
history seeded with thousands of events recorded as the wallet records them (sealed, each with its
chain entry), straight in its database. Memory is measured with ``tracemalloc`` in this process, where
the wallet's server thread runs, while the download is read in pieces and written to a file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from sandbox.population import generate_population
from service_kit.db import Database
from ssi.audit_chain import verify_chain
from ssi.jose import Key
from tests.wallet_api.conftest import WalletHandle, bearer, login
from wallet_api.context import master_box
from wallet_api.models import AuditEntry, HistoryEntry, Wallet
from wallet_api.store import add_history
from wallet_api.vault import Vault

#: A citizen no other test logs in to the ``wallet`` fixture's wallet.
CITIZEN = generate_population(size=50).citizens[26].identifier
#: Events seeded: ten times what the export reads at a time, and a last batch that is not full.
SEEDED = 5_321
#: Each event's details carry this much text (what a share with many claims carries, and more).
PADDING = 4_000


def _details(index: int) -> dict[str, Any]:
    # Non-ASCII text (written as is, not escaped), nested values, and a different size for each.
    return {"verifier": {"name": f"Ajuntament de Sant Adrià {index}", "verified": index % 2 == 0},
            "purpose": "Sol·licitud d'ajut — pàgina €", "outcome": "sent",
            "disclosed": [{"query_id": "padro", "claims": [{"path": ["address", "street"], "value": "x" * (index % 97)}]}],
            "note": "ç" * PADDING}


def _run(settings: Any, work: Any) -> Any:
    async def go() -> Any:
        db = Database(settings.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(go())


def _seed(wallet: WalletHandle, wallet_id: str) -> None:
    """``SEEDED`` events recorded as the wallet records them (history row and chain entry), one of
    them then damaged in the database (it is exported unreadable, its chain entry without content)."""
    async def write(db: Database) -> None:
        async with db.session() as session:
            row = await session.get(Wallet, wallet_id)
            assert row is not None
            key = Vault(master_box(wallet.settings)).data_key(row)
            for index in range(SEEDED):
                await add_history(session, key, "share", _details(index))
        async with db.session() as session:
            damaged = (await session.execute(select(HistoryEntry).where(HistoryEntry.wallet_id == wallet_id)
                                             .order_by(HistoryEntry.id).limit(1))).scalar_one()
            damaged.sealed = damaged.sealed[:-1] + bytes([damaged.sealed[-1] ^ 1])

    _run(wallet.settings, write)


def _chain_length(wallet: WalletHandle, wallet_id: str) -> int:
    async def count(db: Database) -> int:
        async with db.read_session() as session:
            return (await session.execute(select(func.count()).select_from(AuditEntry)
                                          .where(AuditEntry.chain_id == wallet_id))).scalar_one()

    return _run(wallet.settings, count)


@pytest.fixture(scope="module")
def seeded(wallet: WalletHandle) -> dict[str, str]:
    tokens = login(wallet.url, CITIZEN)
    wallet_id = httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens), timeout=30).json()["wallet_id"]
    if _chain_length(wallet, wallet_id) < SEEDED:
        _seed(wallet, wallet_id)
    return tokens


def _download(wallet: WalletHandle, tokens: dict[str, str], path: Path) -> tuple[int, int]:
    """Read the export in pieces into ``path``; ``(bytes, peak bytes traced meanwhile)``."""
    tracemalloc.start()
    try:
        size = 0
        with httpx.stream("GET", f"{wallet.url}/v1/history/export", headers=bearer(tokens), timeout=300) as r, \
                path.open("wb") as out:
            assert r.status_code == 200, r.read()
            for piece in r.iter_raw(65536):
                out.write(piece)
                size += len(piece)
        return size, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _audit_text(document: str) -> str:
    """The text of the export's ``audit`` member, as written (the document's last member)."""
    marker = '\n], "audit": '
    assert document.count(marker) == 1 and document.endswith("}\n")
    return document[document.index(marker) + len(marker):-2]


def test_the_audit_part_is_the_chain_export_byte_for_byte_and_verifies(
        wallet: WalletHandle, seeded: dict[str, str], tmp_path: Path) -> None:
    tokens = seeded
    path = tmp_path / "export.json"
    _download(wallet, tokens, path)
    text = path.read_text(encoding="utf-8")
    chain = httpx.get(f"{wallet.url}/v1/audit/export", headers=bearer(tokens), timeout=300)
    assert chain.status_code == 200
    # What the export wrote before: json.dumps of the chain document, non-ASCII as is.
    assert _audit_text(text) == json.dumps(chain.json(), ensure_ascii=False)
    assert "ç" * PADDING in _audit_text(text)

    doc = json.loads(text)
    audit = doc["audit"]
    assert len(audit["entries"]) >= SEEDED + 1  # the seeded events and the login
    assert [e["seq"] for e in audit["entries"]] == list(range(1, len(audit["entries"]) + 1))
    assert audit["checkpoints"] and len(doc["entries"]) >= SEEDED
    assert sum(1 for e in doc["entries"] if e["unreadable"]) == 1
    assert sum(1 for e in audit["entries"] if "content" not in e) == 1  # the damaged one's
    keys = [Key.from_jwk(jwk, alg="ES256") for jwk in audit["jwks"]["keys"]]
    report = verify_chain(audit["chain"], audit["entries"], audit["checkpoints"], keys)
    assert report.ok, report.as_dict()
    assert report.entries == len(audit["entries"]) and report.checkpoints == len(audit["checkpoints"])


def test_the_export_of_a_long_history_does_not_hold_it_in_memory(
        wallet: WalletHandle, seeded: dict[str, str], tmp_path: Path) -> None:
    tokens = seeded
    path = tmp_path / "export.json"
    size, peak = _download(wallet, tokens, path)
    audit_size = len(_audit_text(path.read_text(encoding="utf-8")).encode())
    assert audit_size > 40_000_000  # "ç" is two bytes: the seeded details alone are over 40 MB
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert size == path.stat().st_size and digest
    # Built whole, the audit part took three times its size (the rows, their details, the text: 148 MB
    # traced for these 46 MB); streamed, the download never holds as much as the audit part alone
    # (26 MB: a few batches of rows, whatever the history's length).
    assert peak < audit_size, (peak, audit_size)
    print(f"export {size} bytes, audit part {audit_size} bytes, peak traced {peak} bytes")


#: A citizen of its own for the test that deletes chain entries.
GAPPED_CITIZEN = generate_population(size=50).citizens[27].identifier


def test_an_export_whose_first_chain_batch_was_deleted_is_still_json_and_reports_the_gap(
        wallet: WalletHandle, tmp_path: Path) -> None:
    """Rows 1-500 of the chain deleted in the database: the export wrote ``"entries": [, {...}``, a
    download no JSON reader (nor ``cartera audit verify``) could open, where the tampering should show."""
    from wallet_api.routes.history import BATCH

    tokens = login(wallet.url, GAPPED_CITIZEN)
    wallet_id = httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens), timeout=30).json()["wallet_id"]

    async def seed_then_delete(db: Database) -> None:
        async with db.session() as session:
            row = await session.get(Wallet, wallet_id)
            assert row is not None
            key = Vault(master_box(wallet.settings)).data_key(row)
            for index in range(BATCH + 20):
                await add_history(session, key, "share", {"outcome": "sent", "n": index})
        async with db.session() as session:
            entries = (await session.execute(select(AuditEntry).where(AuditEntry.chain_id == wallet_id)
                                             .where(AuditEntry.seq <= BATCH))).scalars().all()
            assert len(entries) == BATCH
            for entry in entries:
                await session.delete(entry)

    _run(wallet.settings, seed_then_delete)
    path = tmp_path / "gapped.json"
    _download(wallet, tokens, path)
    audit = json.loads(path.read_text(encoding="utf-8"))["audit"]
    assert audit["entries"] and audit["entries"][0]["seq"] == BATCH + 1
    keys = [Key.from_jwk(jwk, alg="ES256") for jwk in audit["jwks"]["keys"]]
    assert not verify_chain(audit["chain"], audit["entries"], audit["checkpoints"], keys).ok
