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
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit import audit as store
from ssi.audit_chain import (
    GENESIS,
    AuditError,
    ChainReport,
    Checkpoint,
    content_digest,
    entry_hash,
    inclusion_proof,
    new_salt,
    verify_checkpoint,
)
from ssi.audit_chain import entry_body_of as entry_fields  # the entry checks verify_chain makes
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


#: Chain entries (each with the history row it commits to), checkpoints and history rows read per
#: database query by the export and the check: what one of them holds of a chain at a time.
BATCH = 500



def _compact(value: Any) -> str:
    """JSON as an API answer writes it (``JSONResponse``: compact, non-ASCII as is)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _spaced(value: Any) -> str:
    """JSON as ``json.dumps`` writes it by default (a space after ``,`` and ``:``), non-ASCII as is."""
    return json.dumps(value, ensure_ascii=False)


def _stored(chain: str, row: Any) -> dict[str, Any]:
    """A stored entry row in the form :func:`service_kit.audit.load_entries` gives."""
    return {**dict(row), "chain": chain, "id": row["entry_id"], "hash": row["entry_hash"]}


async def entries_after(ctx: WalletContext, key: DataKey, after: int, last: int, limit: int
                        ) -> list[dict[str, Any]]:
    """Up to ``limit`` entries of the wallet's chain past ``seq`` ``after`` and up to ``last``, in ``seq``
    order, each in its exported form (:func:`exported_entry`: with its content and salt when they open),
    read in a short transaction of their own with the history rows they commit to. By ``seq`` from
    ``after``, not by ranges: an entry deleted in the database leaves a gap, never an empty page."""
    chain = chain_id(key.wallet_id)
    table = AuditEntry.__table__
    async with ctx.db.read_session() as session:
        stored = [_stored(chain, row) for row in (await session.execute(
            select(table).where(table.c.chain_id == chain, table.c.seq > after, table.c.seq <= last)
            .order_by(table.c.seq).limit(limit))).mappings()]
        ids = list({entry["id"] for entry in stored})
        rows = {row.id: row for row in (await session.execute(select(HistoryEntry).where(
            HistoryEntry.wallet_id == key.wallet_id, HistoryEntry.id.in_(ids)))).scalars()} if ids else {}
        return [await exported_entry(session, key, entry, rows) for entry in stored]


async def checkpoints_after(ctx: WalletContext, chain: str, after: int, last: int | None, limit: int
                            ) -> list[tuple[int, str]]:
    """Up to ``limit`` checkpoints of ``chain`` past ``seq`` ``after`` (and up to ``last`` unless it is
    ``None``), oldest first."""
    query = select(AuditCheckpoint.seq, AuditCheckpoint.token).where(AuditCheckpoint.chain_id == chain,
                                                                      AuditCheckpoint.seq > after)
    if last is not None:
        query = query.where(AuditCheckpoint.seq <= last)
    async with ctx.db.read_session() as session:
        rows = (await session.execute(query.order_by(AuditCheckpoint.seq).limit(limit))).all()
    return [(int(seq), str(token)) for seq, token in rows]


async def _all_entries(ctx: WalletContext, key: DataKey, last: int) -> AsyncIterator[list[dict[str, Any]]]:
    after = 0
    while True:
        page = await entries_after(ctx, key, after, last, BATCH)
        if page:
            yield page
        if len(page) < BATCH:
            return
        after = page[-1]["seq"]


async def _all_checkpoints(ctx: WalletContext, chain: str, last: int | None) -> AsyncIterator[list[tuple[int, str]]]:
    after = 0
    while True:
        page = await checkpoints_after(ctx, chain, after, last, BATCH)
        if page:
            yield page
        if len(page) < BATCH:
            return
        after = page[-1][0]


async def export_scope(ctx: WalletContext, wallet_id: str) -> tuple[int, int | None]:
    """What an export or a check covers: ``(last entry, last checkpoint or None for all)``.

    The chain's latest checkpoint is signed first if events came after it; the chain is taken up to it
    (an event recorded meanwhile is in the next export, and no checkpoint lies past the exported entries
    unless entries were removed), with every checkpoint up to it. A chain whose entries are all gone
    has no checkpoint to stop at: then every checkpoint is taken, and shows the truncation."""
    latest = await ensure_checkpoint(ctx, wallet_id)
    return (0, None) if latest is None else (latest[0], latest[0])


async def export_text(ctx: WalletContext, key: DataKey, scope: tuple[int, int | None], jwks_doc: dict[str, Any],
                      *, compact: bool = True) -> AsyncIterator[str]:
    """The chain export document (``{"format", "version", "chain", "entries", "checkpoints", "jwks",
    "jwks_uri"}``) as JSON text, in pieces: its entries and checkpoints read :data:`BATCH` at a time
    (:func:`entries_after`), never all at once. ``compact``: written as ``GET /v1/audit/export`` always
    answered it (``JSONResponse``); otherwise as ``json.dumps`` writes it, as the history export always
    wrote its ``audit`` member. Either is exactly the text that writing the whole document gave."""
    dumps, item, member = (_compact, ",", ":") if compact else (_spaced, ", ", ": ")
    chain = chain_id(key.wallet_id)
    last, checkpoint_bound = scope
    yield dumps({"format": EXPORT_FORMAT, "version": 1, "chain": chain})[:-1] + f'{item}"entries"{member}['
    wrote = False
    async for page in _all_entries(ctx, key, last):
        yield (item if wrote else "") + item.join(dumps(entry) for entry in page)
        wrote = True
    yield f']{item}"checkpoints"{member}['
    wrote = False
    async for checkpoints in _all_checkpoints(ctx, chain, checkpoint_bound):
        yield (item if wrote else "") + item.join(dumps(token) for _, token in checkpoints)
        wrote = True
    yield (f']{item}"jwks"{member}{dumps(jwks_doc)}{item}"jwks_uri"{member}'
           f'{dumps(f"{ctx.settings.public_url}{API_PREFIX}/audit/jwks")}}}')


async def export(ctx: WalletContext, key: DataKey) -> dict[str, Any]:
    """The wallet's chain as one self-contained document (:func:`export_text`, parsed): every entry with
    its content and salt, every checkpoint, and the JWKS of the checkpoint key (checked offline by
    ``cartera audit verify``). It holds the whole chain: the API streams the text instead."""
    scope = await export_scope(ctx, key.wallet_id)
    return json.loads("".join([part async for part in export_text(ctx, key, scope, await jwks(ctx))]))


class _ChainCheck:
    """:func:`ssi.audit_chain.verify_chain` (``require_content``) fed a page of entries at a time, then a
    page of checkpoints at a time, with the same report: the same checks in the same order, so the same
    first problem. It keeps the previous hash and the counts, not every entry's hash: once every entry
    checked out, the hash of entry ``n`` is the one stored with it, read back for the checkpoints."""

    def __init__(self, chain: str) -> None:
        self.report = ChainReport(chain=chain)
        self.prev = GENESIS
        self.failed = False

    def entries(self, page: list[dict[str, Any]]) -> None:
        report = self.report
        for item in page:
            index = report.entries + 1
            entry_id = item.get("id")
            try:
                body = entry_fields(item)
            except AuditError as exc:
                self._fail("bad_entry", exc.detail, index, entry_id if isinstance(entry_id, str) else None)
                return
            if body["chain"] != report.chain:
                self._fail("wrong_chain", "the entry names another chain", body["seq"], body["id"])
                return
            if body["seq"] != index:
                what = "missing or reordered entries" if body["seq"] > index else "duplicate or reordered entries"
                self._fail("seq_gap", f"expected seq {index}, found {body['seq']}: {what}", index, body["id"])
                return
            if "prev_hash" in item and item["prev_hash"] != self.prev:
                self._fail("broken_link", "prev_hash does not match the previous entry's hash", index, body["id"])
                return
            if "content" not in item:
                self._fail("content_missing", "the entry's event is missing", index, body["id"])
                return
            try:
                digest = content_digest(item["content"], item.get("salt") if isinstance(item.get("salt"), str) else "")
            except AuditError as exc:
                self._fail(exc.code.split(".", 1)[-1], exc.detail, index, body["id"])
                return
            if digest != body["digest"]:
                self._fail("content_mismatch", "the entry's content does not match its digest", index, body["id"])
                return
            self.prev = entry_hash(self.prev, body)
            if item.get("hash") != self.prev:
                self._fail("hash_mismatch", "the recomputed hash differs from the stored one", index, body["id"])
                return
            report.entries = index
            report.kinds[body["kind"]] = report.kinds.get(body["kind"], 0) + 1

    def entries_done(self) -> None:
        self.report.head = self.prev

    async def checkpoints(self, ctx: WalletContext, page: list[tuple[int, str]], keys: list[Key]) -> None:
        report = self.report
        checked: list[Checkpoint | AuditError] = []
        for _, token in page:
            try:
                checked.append(verify_checkpoint(token, keys))
            except AuditError as exc:
                checked.append(exc)
        covered = {c.seq for c in checked if isinstance(c, Checkpoint) and 1 <= c.seq <= report.entries}
        heads: dict[int, str] = {}
        if covered:
            async with ctx.db.read_session() as session:
                heads = {int(seq): str(entry_hash_) for seq, entry_hash_ in (await session.execute(
                    select(AuditEntry.seq, AuditEntry.entry_hash).where(
                        AuditEntry.chain_id == report.chain, AuditEntry.seq.in_(sorted(covered))))).all()}
        for outcome in checked:
            if isinstance(outcome, AuditError):
                self._fail(outcome.code.split(".", 1)[-1], outcome.detail)
                return
            if outcome.chain != report.chain:
                self._fail("wrong_chain", "a checkpoint names another chain")
                return
            if outcome.seq not in covered:
                self._fail("truncated", f"a checkpoint covers entry {outcome.seq} but the chain has "
                           f"{report.entries}: entries were removed", outcome.seq)
                return
            if heads.get(outcome.seq) != outcome.head:
                self._fail("checkpoint_mismatch", f"the chain's hash at entry {outcome.seq} differs from the "
                           "signed one", outcome.seq)
                return
            report.checkpoints += 1
            report.last_checkpoint_seq = max(report.last_checkpoint_seq, outcome.seq)

    def _fail(self, code: str, detail: str, seq: int | None = None, entry_id: str | None = None) -> None:
        self.report.fail(code, detail, seq, entry_id)
        self.failed = True


async def check(ctx: WalletContext, key: DataKey) -> ChainReport:
    """Check the stored chain against the stored events: recompute every digest and hash, check every
    checkpoint signature, and check that every history row of the wallet has its entry.

    What the export covers is checked (:func:`export_scope`), read :data:`BATCH` rows at a time: the
    entries with their contents, then the checkpoints, then the history rows. The report is the one
    :func:`ssi.audit_chain.verify_chain` gives for the export, then the first history row that is not
    chained as it says. A history row recorded after the checked chain (its entry past it) is left for
    the next check."""
    last, checkpoint_bound = await export_scope(ctx, key.wallet_id)
    keys = [await signing_key(ctx)]
    verifier = _ChainCheck(chain_id(key.wallet_id))
    async for page in _all_entries(ctx, key, last):
        verifier.entries(page)
        if verifier.failed:
            return verifier.report
    verifier.entries_done()
    async for checkpoints in _all_checkpoints(ctx, verifier.report.chain, checkpoint_bound):
        await verifier.checkpoints(ctx, checkpoints, keys)
        if verifier.failed:
            return verifier.report
    return await _check_history(ctx, key, verifier.report, last)


async def _check_history(ctx: WalletContext, key: DataKey, report: ChainReport, last: int) -> ChainReport:
    """That every history row of the wallet has its chain entry, of its kind and time: the rows read
    :data:`BATCH` at a time (by time, then id), each page's entries looked up by id (the last of an id,
    as a lookup of every entry by id gives)."""
    chain = chain_id(key.wallet_id)
    after: tuple[dt.datetime, str] | None = None
    while True:
        query = select(HistoryEntry.id, HistoryEntry.kind, HistoryEntry.created_at).where(
            HistoryEntry.wallet_id == key.wallet_id)
        if after is not None:
            query = query.where(or_(HistoryEntry.created_at > after[0],
                                    and_(HistoryEntry.created_at == after[0], HistoryEntry.id > after[1])))
        async with ctx.db.read_session() as session:
            rows = (await session.execute(query.order_by(HistoryEntry.created_at, HistoryEntry.id)
                                          .limit(BATCH))).all()
            chained: dict[str, tuple[int, str, str]] = {}
            later: set[str] = set()
            if rows:
                for entry_id, seq, kind, at in (await session.execute(
                        select(AuditEntry.entry_id, AuditEntry.seq, AuditEntry.kind, AuditEntry.at).where(
                            AuditEntry.chain_id == chain, AuditEntry.entry_id.in_([r[0] for r in rows]))
                        .order_by(AuditEntry.seq))).all():
                    if seq <= last:
                        chained[entry_id] = (int(seq), kind, at)
                    else:
                        later.add(entry_id)
        for row_id, kind, created_at in rows:
            entry = chained.get(row_id)
            if entry is None:
                if row_id in later:
                    continue  # recorded after the checked chain: the next check covers it
                return report.fail("unchained_event", "a history entry has no chain entry", entry_id=row_id)
            if entry[1] != kind or entry[2] != store.timestamp(created_at):
                return report.fail("event_mismatch", "a history entry's kind or time differs from its chain entry",
                                   entry[0], row_id)
        if len(rows) < BATCH:
            return report
        after = (rows[-1][2], rows[-1][0])
