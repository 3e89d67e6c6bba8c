"""The wallet's audit chain in its database, on SQLite and PostgreSQL: appends in the event's
transaction, 20 concurrent events without a fork, and every kind of tampering with stored rows caught
by the service's check and by `cartera audit verify` on the export."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text, update
from typer.testing import CliRunner

from cartera.cli import app as cli
from service_kit.db import Database
from service_kit.migrations import run_migrations_async
from ssi.audit_chain import sign_checkpoint, verify_inclusion
from ssi.jose import Key
from tests.wallet_api.conftest import wallet_settings
from wallet_api import audit
from wallet_api.app import MIGRATIONS
from wallet_api.context import WalletContext, master_box
from wallet_api.models import AuditCheckpoint, AuditEntry, AuditHead, HistoryEntry, Wallet
from wallet_api.store import add_history
from wallet_api.vault import DataKey, Vault, VaultError, new_id


class Env:
    def __init__(self, ctx: WalletContext, key: DataKey) -> None:
        self.ctx, self.key = ctx, key

    @property
    def db(self) -> Database:
        return self.ctx.db


async def make_env(url: str, tmp: Path) -> Env:
    await run_migrations_async(MIGRATIONS, url)
    settings = wallet_settings(tmp, 9, "http://127.0.0.1:9", database_url=url)
    ctx = WalletContext(settings=settings, db=Database(url), vault=Vault(master_box(settings)))
    wallet_id = new_id("wal")
    sealed, key = ctx.vault.new_data_key(wallet_id)
    async with ctx.db.session() as session:
        session.add(Wallet(id=wallet_id, subject_index=os.urandom(16).hex(), data_key=sealed,
                           profile=key.seal("profile", wallet_id, {})))
    return Env(ctx, key)


async def event(env: Env, n: int, kind: str = "share") -> str:
    async with env.db.session() as session:
        return await add_history(session, env.key, kind, {
            "verifier": {"name": "Ajuntament de Girona", "verified": True}, "purpose": f"Padró check {n}",
            "disclosed": [{"claims": [{"path": ["birth_date"], "value": "1990-04-0" + str(n % 9)}]}]})


def run(url: str, tmp: Path, body: Callable[[Env], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        env = await make_env(url, tmp)
        try:
            return await body(env)
        finally:
            await env.db.dispose()

    return asyncio.run(main())


def cli_verify(tmp: Path, doc: dict[str, Any], *extra: str) -> tuple[int, dict[str, Any]]:
    path = tmp / f"export-{os.urandom(4).hex()}.json"
    path.write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["audit", "verify", str(path), "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


def test_twenty_concurrent_events_make_one_linear_chain(database_url: str, tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        # two engines: two worker processes' pools competing for the same wallet's chain
        other = Database(env.ctx.settings.database_url)
        try:
            second = Env(WalletContext(settings=env.ctx.settings, db=other, vault=env.ctx.vault), env.key)
            await asyncio.gather(*(event(env if n % 2 else second, n) for n in range(20)))
        finally:
            await other.dispose()
        async with env.db.read_session() as session:
            seqs = (await session.execute(select(AuditEntry.seq).where(AuditEntry.chain_id == env.key.wallet_id)
                                          .order_by(AuditEntry.seq))).scalars().all()
            head = await session.get(AuditHead, env.key.wallet_id)
        assert seqs == list(range(1, 21))
        assert head is not None and head.seq == 20
        report = await audit.check(env.ctx, env.key)
        assert report.ok, report.as_dict()
        assert report.entries == 20 and report.last_checkpoint_seq == 20

    run(database_url, tmp_path, body)


def test_rolled_back_event_leaves_no_entry_and_the_chain_goes_on(database_url: str, tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await event(env, 1)
        with pytest.raises(RuntimeError):
            async with env.db.session() as session:
                await add_history(session, env.key, "share", {"purpose": "never happened"})
                raise RuntimeError("the share failed after the history was written")
        await event(env, 2)
        async with env.db.read_session() as session:
            count = (await session.execute(select(func.count()).select_from(AuditEntry)
                                           .where(AuditEntry.chain_id == env.key.wallet_id))).scalar_one()
        assert count == 2
        assert (await audit.check(env.ctx, env.key)).ok

    run(database_url, tmp_path, body)


def test_head_proof_jwks_and_digest_hides_values(database_url: str, tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        ids = [await event(env, n) for n in range(5)]
        head = await audit.head(env.ctx, env.key.wallet_id)
        assert head["seq"] == 5 and head["checkpoint"]["seq"] == 5
        proof = await audit.proof(env.ctx, env.key, ids[1])
        keys = [Key.from_jwk(k) for k in (await audit.jwks(env.ctx))["keys"]]
        cp = verify_inclusion(proof, keys, content=proof["content"], salt=proof["salt"])
        assert cp.seq == 5 and proof["content"]["purpose"] == "Padró check 1"
        assert await audit.proof(env.ctx, env.key, "hist_nope") is None
        # nothing in clear in the chain tables says what was disclosed
        async with env.db.read_session() as session:
            rows = [*(await session.execute(text("SELECT * FROM audit_entries"))).all(),
                    *(await session.execute(text("SELECT * FROM audit_checkpoints"))).all()]
        dump = " ".join(str(v) for row in rows for v in row)
        assert "1990-04" not in dump and "Girona" not in dump

    run(database_url, tmp_path, body)


async def _entry(env: Env, seq: int) -> AuditEntry:
    async with env.db.read_session() as session:
        return (await session.execute(select(AuditEntry).where(AuditEntry.chain_id == env.key.wallet_id,
                                                                AuditEntry.seq == seq))).scalar_one()


async def tamper_history_kind(env: Env) -> None:
    row = await _entry(env, 3)
    async with env.db.session() as session:
        await session.execute(update(HistoryEntry).where(HistoryEntry.id == row.entry_id).values(kind="decline"))


async def tamper_history_details(env: Env) -> None:
    """A sealed value copied from another row (the only edit possible without the data key)."""
    first, third = await _entry(env, 1), await _entry(env, 3)
    async with env.db.session() as session:
        source = await session.get(HistoryEntry, first.entry_id)
        await session.execute(update(HistoryEntry).where(HistoryEntry.id == third.entry_id)
                              .values(sealed=source.sealed))


async def tamper_history_resealed(env: Env) -> None:
    """An insider holding the data key rewrites what the citizen sees."""
    row = await _entry(env, 2)
    async with env.db.session() as session:
        await session.execute(update(HistoryEntry).where(HistoryEntry.id == row.entry_id).values(
            sealed=env.key.seal("history", row.entry_id, {"purpose": "nothing to see"})))


async def tamper_delete_event(env: Env) -> None:
    row = await _entry(env, 2)
    async with env.db.session() as session:
        await session.execute(delete(HistoryEntry).where(HistoryEntry.id == row.entry_id))


async def tamper_delete_entry_and_event(env: Env) -> None:
    row = await _entry(env, 2)
    async with env.db.session() as session:
        await session.execute(delete(HistoryEntry).where(HistoryEntry.id == row.entry_id))
        await session.execute(delete(AuditEntry).where(AuditEntry.chain_id == env.key.wallet_id,
                                                       AuditEntry.seq == 2))


async def tamper_reorder(env: Env) -> None:
    async with env.db.session() as session:
        table = AuditEntry.__table__
        cond = table.c.chain_id == env.key.wallet_id
        await session.execute(update(table).where(cond, table.c.seq == 2).values(seq=-2))
        await session.execute(update(table).where(cond, table.c.seq == 3).values(seq=2))
        await session.execute(update(table).where(cond, table.c.seq == -2).values(seq=3))


async def tamper_truncate(env: Env) -> None:
    """Drop the last entries (and their events) although a checkpoint covers them."""
    async with env.db.session() as session:
        rows = (await session.execute(select(AuditEntry).where(AuditEntry.chain_id == env.key.wallet_id,
                                                               AuditEntry.seq > 3))).scalars().all()
        for row in rows:
            await session.execute(delete(HistoryEntry).where(HistoryEntry.id == row.entry_id))
        await session.execute(delete(AuditEntry).where(AuditEntry.chain_id == env.key.wallet_id, AuditEntry.seq > 3))
        await session.execute(update(AuditHead).where(AuditHead.chain_id == env.key.wallet_id).values(seq=3))


async def tamper_forge_checkpoint(env: Env) -> None:
    row = await _entry(env, 5)
    forged = sign_checkpoint(Key.generate("ES256", kid=(await audit.signing_key(env.ctx)).kid),
                             chain=env.key.wallet_id, seq=5, head=row.entry_hash, iat=1)
    async with env.db.session() as session:
        await session.execute(update(AuditCheckpoint).where(AuditCheckpoint.chain_id == env.key.wallet_id)
                              .values(token=forged))


async def tamper_entry_time(env: Env) -> None:
    async with env.db.session() as session:
        await session.execute(update(AuditEntry).where(AuditEntry.chain_id == env.key.wallet_id, AuditEntry.seq == 4)
                              .values(at="2026-01-01T00:00:00.000000+00:00"))


TAMPERING = {
    "history_kind": (tamper_history_kind, "audit.event_mismatch", "audit.event_mismatch"),
    "history_details_swapped": (tamper_history_details, "audit.content_missing", "audit.content_missing"),
    "history_resealed": (tamper_history_resealed, "audit.content_mismatch", "audit.content_mismatch"),
    "event_deleted": (tamper_delete_event, "audit.content_missing", "audit.content_missing"),
    "entry_and_event_deleted": (tamper_delete_entry_and_event, "audit.seq_gap", "audit.seq_gap"),
    "reordered": (tamper_reorder, "audit.broken_link", "audit.broken_link"),
    "tail_truncated": (tamper_truncate, "audit.truncated", "audit.truncated"),
    "checkpoint_forged": (tamper_forge_checkpoint, "audit.bad_signature", "audit.bad_signature"),
    "entry_time_changed": (tamper_entry_time, "audit.hash_mismatch", "audit.hash_mismatch"),
}


def test_tampering_is_detected_by_the_check_and_the_cli(database_url: str, tmp_path: Path) -> None:
    """One wallet per kind of tampering, in one database (migrations run once)."""

    async def body(env: Env) -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        out = {}
        for case, (tamper, _, _) in sorted(TAMPERING.items()):
            wallet_id = new_id("wal")
            sealed, key = env.ctx.vault.new_data_key(wallet_id)
            async with env.db.session() as session:
                session.add(Wallet(id=wallet_id, subject_index=os.urandom(16).hex(), data_key=sealed,
                                   profile=key.seal("profile", wallet_id, {})))
            mine = Env(env.ctx, key)
            for n in range(5):
                await event(mine, n)
            assert (await audit.check(env.ctx, key)).ok  # and checkpoints entry 5
            before = await audit.export(env.ctx, key)
            await tamper(mine)
            out[case] = ((await audit.check(env.ctx, key)).as_dict(), await history_export(mine), before)
        return out

    results = run(database_url, tmp_path, body)
    jwks = tmp_path / "jwks.json"
    for case, (report, exported, before) in results.items():
        _, api_code, cli_code = TAMPERING[case]
        assert not report["ok"] and report["error"]["code"] == api_code, (case, report)
        jwks.write_text(json.dumps(before["jwks"]))
        status, out = cli_verify(tmp_path, exported, "--jwks", str(jwks))
        assert status == 1 and out["error"]["code"] == cli_code, (case, out)
        # the tampered chain against the export saved before: rewritten or dropped history shows too
        if case in ("entry_and_event_deleted", "reordered", "tail_truncated", "entry_time_changed"):
            status, out = cli_verify(tmp_path, exported["audit"], "--previous", str(_write(tmp_path, before)))
            assert status == 1 and out["error"]["code"].startswith("audit."), (case, out)
        ok_status, ok_out = cli_verify(tmp_path, before, "--jwks", str(jwks))
        assert ok_status == 0 and ok_out["ok"] and ok_out["entries"] == 5 and ok_out["keys"] == "given"


async def history_export(env: Env) -> dict[str, Any]:
    """What GET /v1/history/export returns: the history as the citizen sees it, plus the chain."""
    async with env.db.read_session() as session:
        rows = (await session.execute(select(HistoryEntry).where(HistoryEntry.wallet_id == env.key.wallet_id)
                                      )).scalars().all()
    entries = []
    for row in rows:
        try:
            details, unreadable = env.key.open("history", row.id, row.sealed), False
        except VaultError:
            details, unreadable = {}, True  # the API exports it flagged, with no details
        entries.append({"id": row.id, "kind": row.kind, "created_at": row.created_at.isoformat(),
                        "details": details, "unreadable": unreadable})
    return {"format": "cartera-wallet-history", "version": 1, "entries": entries,
            "audit": await audit.export(env.ctx, env.key)}


def _write(tmp: Path, doc: dict[str, Any]) -> Path:
    path = tmp / f"previous-{os.urandom(4).hex()}.json"
    path.write_text(json.dumps(doc))
    return path


def test_background_sweep_checkpoints_every_chain_that_moved(database_url: str, tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await event(env, 1)
        assert await audit.checkpoint_due(env.ctx) == 1
        assert await audit.checkpoint_due(env.ctx) == 0  # nothing new
        await event(env, 2)
        await event(env, 3)
        assert await audit.checkpoint_due(env.ctx) == 1
        async with env.db.read_session() as session:
            seqs = (await session.execute(select(AuditCheckpoint.seq).where(
                AuditCheckpoint.chain_id == env.key.wallet_id).order_by(AuditCheckpoint.seq))).scalars().all()
        assert seqs == [1, 3]

    run(database_url, tmp_path, body)
