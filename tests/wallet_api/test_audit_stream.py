"""``GET /v1/audit/export`` and ``GET /v1/audit/check`` read the chain a batch at a time.

Both built the whole chain in memory first: every chain entry with its content (all the history's
details), every checkpoint, the JSON text of it all, and, for the check, a map of every entry by id.
Now the export streams the document and the check goes over the entries, then the checkpoints, then the
history rows, :data:`wallet_api.audit.BATCH` (500) rows at a time, keeping only the previous hash and
the counts. The export is the same text byte for byte, and the check the same report, also when the
chain is broken right at a page boundary.

The first tests seed a long history in a real wallet over HTTP (the ``wallet`` fixture: no background
sweep signs checkpoints meanwhile) and measure memory with ``tracemalloc`` in this process, where the
wallet's server thread runs. The others run the check and the export on a wallet of their own (its
database, its code, no HTTP) with pages of four rows, tampered with in the database in each way the
check must report, and compare them with what the whole document gave: the former export, built as
the former code built it, and ``ssi.audit_chain.verify_chain`` over it, then the history rows looked up
in a map of every entry, as the former check did.
"""

from __future__ import annotations

import asyncio
import json
import os
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from starlette.responses import JSONResponse

from sandbox.population import generate_population
from service_kit import audit as chain_store
from service_kit.db import Database
from ssi.audit_chain import sign_checkpoint, verify_chain
from ssi.jose import Key
from tests.wallet_api.conftest import WalletHandle, bearer, login, offline_wallet
from wallet_api import audit
from wallet_api.context import WalletContext, master_box
from wallet_api.models import AuditCheckpoint, AuditEntry, AuditHead, HistoryEntry, Wallet
from wallet_api.store import add_history
from wallet_api.vault import DataKey, Vault, new_id

#: A citizen no other test logs in to the ``wallet`` fixture's wallet.
CITIZEN = generate_population(size=50).citizens[21].identifier
#: Events seeded: ten batches and a last one that is not full, each with this much text (what a share with
#: many claims carries, and more): the chain is ten times what the export and the check hold at once.
SEEDED = 5_213
PADDING = 2_000


def _details(index: int) -> dict[str, Any]:
    return {"verifier": {"name": f"Ajuntament de Sant Adrià {index}", "verified": index % 2 == 0},
            "purpose": "Sol·licitud d'ajut — pàgina €", "outcome": "sent", "note": "ç" * PADDING}


async def former_export(ctx: WalletContext, key: DataKey) -> dict[str, Any]:
    """The chain document as ``wallet_api.audit.export`` built it before: every entry and every
    checkpoint read at once (after the checkpoint the export signs first)."""
    await audit.ensure_checkpoint(ctx, key.wallet_id)
    chain = audit.chain_id(key.wallet_id)
    async with ctx.db.read_session() as session:
        stored = await chain_store.load_entries(session, AuditEntry, chain)
        rows = {r.id: r for r in (await session.execute(
            select(HistoryEntry).where(HistoryEntry.wallet_id == key.wallet_id))).scalars()}
        items = [await audit.exported_entry(session, key, entry, rows) for entry in stored]
        cps = await chain_store.checkpoints(session, AuditCheckpoint, chain)
    return {"format": audit.EXPORT_FORMAT, "version": 1, "chain": chain, "entries": items,
            "checkpoints": [t for _, t in cps], "jwks": await audit.jwks(ctx),
            "jwks_uri": f"{ctx.settings.public_url}{audit.API_PREFIX}/audit/jwks"}


async def former_check(ctx: WalletContext, key: DataKey) -> dict[str, Any]:
    """The report ``wallet_api.audit.check`` gave before: ``verify_chain`` over the whole export, then
    every history row looked up in a map of every chain entry by id."""
    doc = await former_export(ctx, key)
    report = verify_chain(doc["chain"], doc["entries"], doc["checkpoints"], [await audit.signing_key(ctx)],
                          require_content=True)
    if not report.ok:
        return report.as_dict()
    chained = {e["id"]: e for e in doc["entries"]}
    async with ctx.db.read_session() as session:
        rows = (await session.execute(select(HistoryEntry.id, HistoryEntry.kind, HistoryEntry.created_at)
                                      .where(HistoryEntry.wallet_id == key.wallet_id))).all()
    for row_id, kind, created_at in rows:
        entry = chained.get(row_id)
        if entry is None:
            return report.fail("unchained_event", "a history entry has no chain entry", entry_id=row_id).as_dict()
        if entry["kind"] != kind or entry["at"] != chain_store.timestamp(created_at):
            return report.fail("event_mismatch", "a history entry's kind or time differs from its chain entry",
                               entry["seq"], row_id).as_dict()
    return report.as_dict()


# -- a long history over HTTP ------------------------------------------------------------------------

def _run(settings: Any, work: Callable[[Database], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        db = Database(settings.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(go())


def _context(wallet: WalletHandle, db: Database) -> WalletContext:
    return WalletContext(settings=wallet.settings, db=db, vault=Vault(master_box(wallet.settings)))


async def _key(ctx: WalletContext, wallet_id: str) -> DataKey:
    async with ctx.db.read_session() as session:
        row = await session.get(Wallet, wallet_id)
    assert row is not None
    return ctx.vault.data_key(row)


@pytest.fixture(scope="module")
def seeded(wallet: WalletHandle) -> tuple[dict[str, str], str]:
    tokens = login(wallet.url, CITIZEN)
    wallet_id = httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens), timeout=30).json()["wallet_id"]

    async def seed(db: Database) -> None:
        async with db.read_session() as session:
            count = (await session.execute(select(func.count()).select_from(AuditEntry)
                                           .where(AuditEntry.chain_id == wallet_id))).scalar_one()
        if count >= SEEDED:
            return
        key = await _key(_context(wallet, db), wallet_id)
        for start in range(0, SEEDED, 500):
            async with db.session() as session:
                for index in range(start, min(start + 500, SEEDED)):
                    await add_history(session, key, "share", _details(index))

    _run(wallet.settings, seed)
    return tokens, wallet_id


def _traced(work: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        return work(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_export_streams_the_former_document_byte_for_byte(
        wallet: WalletHandle, seeded: tuple[dict[str, str], str], tmp_path: Path) -> None:
    tokens, wallet_id = seeded
    path = tmp_path / "chain.json"

    def download() -> httpx.Headers:
        with httpx.stream("GET", f"{wallet.url}/v1/audit/export", headers=bearer(tokens), timeout=300) as r, \
                path.open("wb") as out:
            assert r.status_code == 200, r.read()
            for piece in r.iter_raw(65536):
                out.write(piece)
            return r.headers

    headers, peak = _traced(download)
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert headers["content-disposition"] == 'attachment; filename="wallet-audit-chain.json"'

    async def former(db: Database) -> bytes:
        ctx = _context(wallet, db)
        return bytes(JSONResponse(await former_export(ctx, await _key(ctx, wallet_id))).body)

    expected = _run(wallet.settings, former)
    assert path.read_bytes() == expected  # what JSONResponse wrote of the whole document
    size = len(expected)
    assert size > 20_000_000 and len(json.loads(expected)["entries"]) >= SEEDED + 1
    # Built whole, the document took over three times its size (89 MB traced for 24 MB: the entries with
    # their contents, then their JSON text); streamed, the download holds a batch or two of them,
    # whatever the chain's length (11 MB).
    assert peak < size, (peak, size)
    print(f"audit export {size} bytes, peak traced {peak} bytes")


def test_the_check_of_a_long_chain_holds_a_batch_at_a_time(
        wallet: WalletHandle, seeded: tuple[dict[str, str], str]) -> None:
    tokens, wallet_id = seeded
    response, peak = _traced(lambda: httpx.get(f"{wallet.url}/v1/audit/check", headers=bearer(tokens), timeout=300))
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    report = response.json()
    assert report["ok"], report
    assert report["entries"] >= SEEDED + 1 and report["kinds"]["share"] >= SEEDED

    async def former(db: Database) -> tuple[dict[str, Any], int]:
        ctx = _context(wallet, db)
        key = await _key(ctx, wallet_id)
        return await former_check(ctx, key), len(JSONResponse(await former_export(ctx, key)).body)

    expected, size = _run(wallet.settings, former)
    assert report == expected
    # The former check held the whole export (every content, every history row) and a map of it: 53 MB
    # traced for a chain whose export is 24 MB. Now a batch of entries at a time (7 MB).
    assert peak < size, (peak, size)
    print(f"audit check of {report['entries']} entries ({size} bytes exported), peak traced {peak} bytes")


# -- page boundaries, on a wallet of the test's own --------------------------------------------------

PAGE = 4
EVENTS = 13  # pages 1-4, 5-8, 9-12 and 13
CHECKPOINTS_AFTER = (3, 7, 10)  # and 13, signed by the check itself


async def _entry(ctx: WalletContext, key: DataKey, seq: int) -> AuditEntry:
    async with ctx.db.read_session() as session:
        return (await session.execute(select(AuditEntry).where(AuditEntry.chain_id == key.wallet_id,
                                                                AuditEntry.seq == seq))).scalar_one()


async def swap_across_pages(ctx: WalletContext, key: DataKey) -> None:
    """Entries 4 and 5 (the last of a page and the first of the next) trade places."""
    table = AuditEntry.__table__
    cond = table.c.chain_id == key.wallet_id
    async with ctx.db.session() as session:
        await session.execute(update(table).where(cond, table.c.seq == 4).values(seq=-4))
        await session.execute(update(table).where(cond, table.c.seq == 5).values(seq=4))
        await session.execute(update(table).where(cond, table.c.seq == -4).values(seq=5))


async def delete_first_of_a_page(ctx: WalletContext, key: DataKey) -> None:
    row = await _entry(ctx, key, 5)
    async with ctx.db.session() as session:
        await session.execute(delete(HistoryEntry).where(HistoryEntry.id == row.entry_id))
        await session.execute(delete(AuditEntry).where(AuditEntry.chain_id == key.wallet_id, AuditEntry.seq == 5))


async def delete_a_whole_page(ctx: WalletContext, key: DataKey) -> None:
    async with ctx.db.session() as session:
        await session.execute(delete(AuditEntry).where(AuditEntry.chain_id == key.wallet_id,
                                                       AuditEntry.seq.between(5, 8)))


async def change_time_last_of_a_page(ctx: WalletContext, key: DataKey) -> None:
    async with ctx.db.session() as session:
        await session.execute(update(AuditEntry).where(AuditEntry.chain_id == key.wallet_id, AuditEntry.seq == 8)
                              .values(at="2026-01-01T00:00:00.000000+00:00"))


async def delete_event_last_of_a_page(ctx: WalletContext, key: DataKey) -> None:
    row = await _entry(ctx, key, 4)
    async with ctx.db.session() as session:
        await session.execute(delete(HistoryEntry).where(HistoryEntry.id == row.entry_id))


async def change_kind_first_of_a_page(ctx: WalletContext, key: DataKey) -> None:
    row = await _entry(ctx, key, 9)
    async with ctx.db.session() as session:
        await session.execute(update(HistoryEntry).where(HistoryEntry.id == row.entry_id).values(kind="decline"))


async def truncate_tail(ctx: WalletContext, key: DataKey) -> None:
    """Entries 12 and 13 and their events dropped, though checkpoint 13 covers them."""
    async with ctx.db.session() as session:
        for seq in (12, 13):
            row = (await session.execute(select(AuditEntry.entry_id).where(
                AuditEntry.chain_id == key.wallet_id, AuditEntry.seq == seq))).scalar_one()
            await session.execute(delete(HistoryEntry).where(HistoryEntry.id == row))
        await session.execute(delete(AuditEntry).where(AuditEntry.chain_id == key.wallet_id, AuditEntry.seq >= 12))
        await session.execute(update(AuditHead).where(AuditHead.chain_id == key.wallet_id).values(seq=11))


async def truncate_everything(ctx: WalletContext, key: DataKey) -> None:
    """Every entry and event dropped; the checkpoints stay."""
    async with ctx.db.session() as session:
        await session.execute(delete(HistoryEntry).where(HistoryEntry.wallet_id == key.wallet_id))
        await session.execute(delete(AuditEntry).where(AuditEntry.chain_id == key.wallet_id))


async def forge_a_checkpoint(ctx: WalletContext, key: DataKey) -> None:
    row = await _entry(ctx, key, 7)
    forged = sign_checkpoint(Key.generate("ES256", kid=(await audit.signing_key(ctx)).kid),
                             chain=key.wallet_id, seq=7, head=row.entry_hash, iat=1)
    async with ctx.db.session() as session:
        await session.execute(update(AuditCheckpoint).where(AuditCheckpoint.chain_id == key.wallet_id,
                                                            AuditCheckpoint.seq == 7).values(token=forged))


async def sign_a_wrong_head(ctx: WalletContext, key: DataKey) -> None:
    """Checkpoint 10 (on the second page of checkpoints) signed by the service's own key, over entry 9's
    hash."""
    row = await _entry(ctx, key, 9)
    wrong = sign_checkpoint(await audit.signing_key(ctx), chain=key.wallet_id, seq=10, head=row.entry_hash, iat=1)
    async with ctx.db.session() as session:
        await session.execute(update(AuditCheckpoint).where(AuditCheckpoint.chain_id == key.wallet_id,
                                                            AuditCheckpoint.seq == 10).values(token=wrong))


async def add_an_unchained_event(ctx: WalletContext, key: DataKey) -> None:
    entry_id = new_id("hist")
    async with ctx.db.session() as session:
        session.add(HistoryEntry(id=entry_id, wallet_id=key.wallet_id, kind="share",
                                 sealed=key.seal("history", entry_id, {"purpose": "never chained"})))


async def untouched(ctx: WalletContext, key: DataKey) -> None:
    return None


TAMPERING: dict[str, tuple[Callable[[WalletContext, DataKey], Awaitable[None]], str | None]] = {
    "untouched": (untouched, None),
    "swap_across_pages": (swap_across_pages, "audit.broken_link"),
    "delete_first_of_a_page": (delete_first_of_a_page, "audit.seq_gap"),
    "delete_a_whole_page": (delete_a_whole_page, "audit.seq_gap"),
    "change_time_last_of_a_page": (change_time_last_of_a_page, "audit.hash_mismatch"),
    "delete_event_last_of_a_page": (delete_event_last_of_a_page, "audit.content_missing"),
    "change_kind_first_of_a_page": (change_kind_first_of_a_page, "audit.event_mismatch"),
    "truncate_tail": (truncate_tail, "audit.truncated"),
    "truncate_everything": (truncate_everything, "audit.truncated"),
    "forge_a_checkpoint": (forge_a_checkpoint, "audit.bad_signature"),
    "sign_a_wrong_head": (sign_a_wrong_head, "audit.checkpoint_mismatch"),
    "add_an_unchained_event": (add_an_unchained_event, "audit.unchained_event"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_the_check_and_the_export_page_by_page_say_what_the_whole_chain_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.setattr(audit, "BATCH", PAGE)
    tamper, code = TAMPERING[case]

    async def body() -> None:
        async with offline_wallet(tmp_path) as ctx:
            wallet_id = new_id("wal")
            sealed, key = ctx.vault.new_data_key(wallet_id)
            async with ctx.db.session() as session:
                session.add(Wallet(id=wallet_id, subject_index=os.urandom(16).hex(), data_key=sealed,
                                   profile=key.seal("profile", wallet_id, {})))
            for n in range(1, EVENTS + 1):
                async with ctx.db.session() as session:
                    await add_history(session, key, "share", {"purpose": f"event {n}", "n": n})
                if n in CHECKPOINTS_AFTER:
                    await audit.ensure_checkpoint(ctx, wallet_id)
            assert (await audit.check(ctx, key)).ok  # and signs checkpoint 13
            await tamper(ctx, key)

            report = (await audit.check(ctx, key)).as_dict()
            assert report == await former_check(ctx, key)
            assert report["ok"] if code is None else report["error"]["code"] == code, report

            scope = await audit.export_scope(ctx, wallet_id)
            keys = await audit.jwks(ctx)
            text = "".join([part async for part in audit.export_text(ctx, key, scope, keys)])
            former = await former_export(ctx, key)
            assert text.encode() == bytes(JSONResponse(former).body)
            spaced = "".join([part async for part in audit.export_text(ctx, key, scope, keys, compact=False)])
            assert spaced == json.dumps(former, ensure_ascii=False)
            assert await audit.export(ctx, key) == former

    asyncio.run(body())
