"""The wallet's audit chain: every receipt, share, decline, deletion and login, hash-chained per wallet.

An event's chain entry is written in the transaction that writes the event (:func:`record`, called by
:func:`wallet_api.store.add_history` and at login), so there is no event without its entry and no
entry without its event. The entry's digest commits to exactly what the citizen sees in the history
(the details) under a random salt sealed with the wallet's data key: the digest stands in clear, the
details and the salt stay sealed, as the history always was.

Checkpoints are signed with the wallet service's audit key (ES256, created on first use, sealed
under the master key in ``service_keys``, published at ``GET /v1/audit/jwks``). They are signed by
the background sweep for every chain that moved (:func:`checkpoint_due`, every
``background_interval``) and when the citizen looks at the chain (head, proof, export, check) and
there are entries past the last checkpoint, so every proof ends at a signature and the hot path of an
event signs nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit import audit as store
from ssi.audit_chain import (
    AuditError,
    ChainReport,
    content_digest,
    inclusion_proof,
    new_salt,
    verify_chain,
)
from ssi.encoding import json_dumps, json_loads
from ssi.jose import Key

from .context import WalletContext
from .models import AuditCheckpoint, AuditEntry, AuditHead, HistoryEntry, ServiceKey, utcnow
from .vault import DataKey, VaultError, service_key_aad

log = logging.getLogger(__name__)

AUDIT_KEY = "audit_signing"
EXPORT_FORMAT = "cartera-audit-chain"
API_PREFIX = "/v1"
#: Kinds whose content is the history row's details; other kinds (login) carry their own.
HISTORY_BACKED = "history"
_signers: WeakKeyDictionary[Any, Key] = WeakKeyDictionary()


def chain_id(wallet_id: str) -> str:
    """The chain of a wallet is named after it."""
    return wallet_id


async def record(session: AsyncSession, key: DataKey, *, entry_id: str, kind: str, at: dt.datetime,
                 content: dict[str, Any], own_content: bool = False) -> store.Appended:
    """Append an event to the wallet's chain in ``session``'s transaction.

    ``own_content``: the event has no history row (a login), so the content is sealed in the entry."""
    salt = new_salt()
    sealed = key.seal("audit", entry_id, {"salt": salt, **({"content": content} if own_content else {})})
    return await store.append(session, AuditEntry, AuditHead, chain=chain_id(key.wallet_id), entry_id=entry_id,
                              kind=kind, at=store.timestamp(at), digest=content_digest(content, salt),
                              extra={"sealed": sealed})


async def record_login(session: AsyncSession, key: DataKey, *, session_id: str, provider: str, method: str,
                       assurance_level: str) -> None:
    """Chain a login (the app session it opened); no identifier or claim value goes in."""
    await record(session, key, entry_id=session_id, kind="login", at=utcnow(), own_content=True,
                 content={"session_id": session_id, "provider": provider, "method": method,
                          "assurance_level": assurance_level})


# -- the service's audit key -----------------------------------------------------------------------

async def signing_key(ctx: WalletContext) -> Key:
    """The wallet service's checkpoint key, created (sealed under the master key) on first use."""
    cached = _signers.get(ctx.vault)
    if cached is not None:
        return cached
    async with ctx.db.read_session() as session:
        row = await session.get(ServiceKey, AUDIT_KEY)
    if row is None:
        fresh = Key.generate("ES256")
        try:
            async with ctx.db.session() as session:
                session.add(ServiceKey(name=AUDIT_KEY, sealed=ctx.vault.box.seal(
                    store_json(fresh.private_jwk()), service_key_aad(AUDIT_KEY))))
        except IntegrityError:
            pass  # another worker made one at the same moment: theirs is used
        async with ctx.db.read_session() as session:
            row = await session.get(ServiceKey, AUDIT_KEY)
    if row is None:
        raise AuditError("no_key", "the audit signing key could not be created")
    jwk = json_loads(ctx.vault.box.open(row.sealed, service_key_aad(AUDIT_KEY)))
    key = Key.from_jwk(jwk, alg="ES256")
    key.kid = key.thumbprint()
    _signers[ctx.vault] = key
    return key


def store_json(value: Any) -> bytes:
    """Compact UTF-8 JSON bytes (what the master box seals)."""
    return json_dumps(value).encode("utf-8")


async def jwks(ctx: WalletContext) -> dict[str, Any]:
    """The public keys that sign the wallet's checkpoints."""
    key = await signing_key(ctx)
    return {"keys": [{**key.public_jwk(), "alg": "ES256", "use": "sig"}]}


async def ensure_checkpoint(ctx: WalletContext, wallet_id: str) -> tuple[int, str] | None:
    """The latest checkpoint of the wallet's chain, signing one first if entries came after it."""
    key = await signing_key(ctx)
    chain = chain_id(wallet_id)
    async with ctx.db.session() as session:
        latest = await store.checkpoint(session, AuditEntry, AuditCheckpoint, chain, key, now=utcnow(),
                                        issuer=ctx.settings.public_url)
        if latest is not None:
            # Never backwards: another worker may have recorded a later checkpoint meanwhile.
            await session.execute(update(AuditHead).where(AuditHead.chain_id == chain,
                                                          AuditHead.checkpointed < latest[0])
                                  .values(checkpointed=latest[0]))
        return latest


def chains_due_for_a_checkpoint(batch: int = 100) -> Select[tuple[str]]:
    """Up to ``batch`` chains whose head moved past their latest checkpoint: the rows of the partial
    index ``ix_audit_heads_checkpoint_due``, which holds those heads only."""
    return select(AuditHead.chain_id).where(AuditHead.seq > AuditHead.checkpointed).limit(batch)


async def checkpoint_due(ctx: WalletContext, *, batch: int = 100) -> int:
    """Sign a checkpoint for every chain (up to ``batch``) whose head moved past its last checkpoint;
    return how many. Run by the background sweep, so checkpoints are periodic even for a citizen who
    never opens the audit view; several workers may run it (a duplicate checkpoint is not stored). A
    chain that fails is logged and left for the next sweep; the others are checkpointed regardless."""
    async with ctx.db.read_session() as session:
        due = (await session.execute(chains_due_for_a_checkpoint(batch))).scalars().all()
    signed = 0
    for wallet_id in due:
        try:
            await ensure_checkpoint(ctx, wallet_id)
        except Exception as exc:  # noqa: BLE001 - one chain must not stop every other wallet's checkpoints
            # Ids and the error's type only; the chain is due again at the next sweep.
            log.warning("could not checkpoint an audit chain", extra={"wallet": wallet_id,
                                                                      "reason": type(exc).__name__})
            continue
        signed += 1
    return signed


# -- reading the chain back ------------------------------------------------------------------------

async def head(ctx: WalletContext, wallet_id: str) -> dict[str, Any]:
    """The chain head and the latest checkpoint (signed now if the head moved past it)."""
    latest = await ensure_checkpoint(ctx, wallet_id)
    async with ctx.db.read_session() as session:
        seq, head_hash = await store.head(session, AuditHead, chain_id(wallet_id))
    return {"chain": chain_id(wallet_id), "seq": seq, "head": head_hash,
            "checkpoint": None if latest is None else {"seq": latest[0], "token": latest[1]}}


async def proof(ctx: WalletContext, key: DataKey, entry_id: str) -> dict[str, Any] | None:
    """The inclusion proof of one entry (``None``: not an entry of this wallet), with the entry's
    content and salt so the citizen can check the digest too."""
    chain = chain_id(key.wallet_id)
    latest = await ensure_checkpoint(ctx, key.wallet_id)
    async with ctx.db.read_session() as session:
        found = await store.find_entry(session, AuditEntry, chain, entry_id)
        if found is None or latest is None:
            return None
        cps = await store.checkpoints(session, AuditCheckpoint, chain)
        seq_end, token = next(((s, t) for s, t in cps if s >= found["seq"]), latest)
        entries = await store.load_entries(session, AuditEntry, chain, from_seq=found["seq"], to_seq=seq_end)
        content, salt = await _content(session, key, found)
    return {**inclusion_proof(entries, found["seq"], token), "content": content, "salt": salt}


async def _content(session: AsyncSession, key: DataKey, entry: dict[str, Any],
                   rows: dict[str, HistoryEntry] | None = None) -> tuple[Any, str | None]:
    """``(content, salt)`` of an entry: the history row's details, or the entry's own sealed content.
    ``rows``: the wallet's history rows by id, when already loaded."""
    try:
        opened = key.open("audit", entry["id"], entry["sealed"])
    except VaultError:
        return None, None
    if "content" in opened:
        return opened["content"], opened.get("salt")
    row = rows.get(entry["id"]) if rows is not None else await session.get(HistoryEntry, entry["id"])
    if row is None or row.wallet_id != key.wallet_id:
        return None, opened.get("salt")
    try:
        return key.open("history", row.id, row.sealed), opened.get("salt")
    except VaultError:
        return None, opened.get("salt")


async def exported_entry(session: AsyncSession, key: DataKey, entry: dict[str, Any],
                         rows: dict[str, HistoryEntry] | None = None) -> dict[str, Any]:
    """A chain entry as an export gives it: its public members, with its content and salt when they open.
    ``rows``: the history rows it may commit to, by id, when already loaded."""
    content, salt = await _content(session, key, entry, rows)
    item = store.public_entry(entry)
    if content is not None:
        item["content"] = content
    if salt is not None:
        item["salt"] = salt
    return item


async def export(ctx: WalletContext, key: DataKey) -> dict[str, Any]:
    """The wallet's chain as a self-contained document: every entry with its content and salt, every
    checkpoint, and the JWKS of the checkpoint key (checked offline by ``cartera audit verify``)."""
    await ensure_checkpoint(ctx, key.wallet_id)
    chain = chain_id(key.wallet_id)
    async with ctx.db.read_session() as session:
        stored = await store.load_entries(session, AuditEntry, chain)
        rows = {r.id: r for r in (await session.execute(
            select(HistoryEntry).where(HistoryEntry.wallet_id == key.wallet_id))).scalars()}
        items = [await exported_entry(session, key, entry, rows) for entry in stored]
        cps = await store.checkpoints(session, AuditCheckpoint, chain)
    return {"format": EXPORT_FORMAT, "version": 1, "chain": chain, "entries": items,
            "checkpoints": [t for _, t in cps], "jwks": await jwks(ctx),
            "jwks_uri": f"{ctx.settings.public_url}{API_PREFIX}/audit/jwks"}


async def check(ctx: WalletContext, key: DataKey) -> ChainReport:
    """Check the stored chain against the stored events: recompute every digest and hash, check every
    checkpoint signature, and check that every history row of the wallet has its entry."""
    doc = await export(ctx, key)
    keys = [await signing_key(ctx)]
    report = verify_chain(doc["chain"], doc["entries"], doc["checkpoints"], keys, require_content=True)
    if not report.ok:
        return report
    chained = {e["id"]: e for e in doc["entries"]}
    async with ctx.db.read_session() as session:
        rows = (await session.execute(select(HistoryEntry.id, HistoryEntry.kind, HistoryEntry.created_at)
                                      .where(HistoryEntry.wallet_id == key.wallet_id))).all()
    for row_id, kind, created_at in rows:
        entry = chained.get(row_id)
        if entry is None:
            return report.fail("unchained_event", "a history entry has no chain entry", entry_id=row_id)
        if entry["kind"] != kind or entry["at"] != store.timestamp(created_at):
            return report.fail("event_mismatch", "a history entry's kind or time differs from its chain entry",
                               entry["seq"], row_id)
    return report
