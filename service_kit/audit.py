"""Audit chains in a service's database: append in the caller's transaction, checkpoint, read back.

The format (hashes, checkpoints, proofs) is :mod:`ssi.audit_chain`; this module stores it. Each
service declares three tables on its own base with these mixins, adding a ``chain_id`` primary-key
column that references what a chain belongs to (a wallet, a tenant)::

    class AuditEntry(AuditEntryMixin, Base):
        __tablename__ = "audit_entries"
        chain_id = mapped_column(ForeignKey("wallets.id", ondelete="CASCADE"), primary_key=True)

Appends are serialised per chain by a row lock on the chain's head row (``SELECT ... FOR UPDATE``
on PostgreSQL; SQLite write transactions are serialised by the database lock already), held until
the caller's transaction ends. Waiters queue on the lock instead of failing and retrying, so a burst
of concurrent events costs no retry storm; the primary key ``(chain_id, seq)`` still refuses a
fork should any code path skip the lock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, String, Text, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from ssi.audit_chain import GENESIS, AuditError, entry_body, entry_hash, sign_checkpoint
from ssi.jose import Key

from .db import UTCDateTime

#: An ORM session or a Core connection (anything with an async ``execute`` and a ``dialect``) in the
#: caller's transaction.
Executor = AsyncSession | AsyncConnection | Any


class AuditEntryMixin:
    """One chain entry: the hashed public fields (``seq``, ``entry_id``, ``kind``, ``at``, ``digest``)
    and the hashes. The content it commits to lives elsewhere (the event's own row)."""

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    entry_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(30))
    at: Mapped[str] = mapped_column(String(40))
    digest: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHeadMixin:
    """The head of one chain (last ``seq`` and hash): the row whose lock serialises appends."""

    seq: Mapped[int] = mapped_column(Integer, default=0)
    head: Mapped[str] = mapped_column(String(64), default=GENESIS)


class AuditCheckpointMixin:
    """A signed checkpoint of one chain at ``seq`` (compact JWS)."""

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Appended:
    """Where an entry landed: its ``seq``, its hash and the previous one."""

    seq: int
    entry_hash: str
    prev_hash: str


def _dialect(conn: Any) -> str:
    # Sessions know their dialect through their bind; connections (SQLAlchemy's, or a service's own
    # statement runner) expose it directly.
    if isinstance(conn, AsyncSession):
        return conn.bind.dialect.name if conn.bind is not None else "sqlite"
    return str(conn.dialect.name)


def timestamp(moment: dt.datetime) -> str:
    """The ``at`` field of an entry: ISO 8601 UTC with microseconds (what UTCDateTime stores)."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


_APPEND_STATEMENTS: dict[tuple[Any, Any], tuple[Any, Any, Any]] = {}


def _append_statements(head_table: Any, entry_table: Any) -> tuple[Any, Any, Any]:
    """The three statements of :func:`append` for these tables, built once: built per call they cost
    more CPU than running them, and the same statement objects run on the driver directly where the
    connection allows it (``service_kit.db.StatementConnection``)."""
    built = _APPEND_STATEMENTS.get((head_table, entry_table))
    if built is None:
        built = (
            select(head_table.c.seq, head_table.c.head).where(head_table.c.chain_id == bindparam("b_chain"))
            .with_for_update(),
            entry_table.insert(),
            update(head_table).where(head_table.c.chain_id == bindparam("b_chain"))
            .values(seq=bindparam("b_seq"), head=bindparam("b_head")),
        )
        _APPEND_STATEMENTS[(head_table, entry_table)] = built
    return built


async def append(conn: Executor, entries: Any, heads: Any, *, chain: str, entry_id: str, kind: str, at: str,
                 digest: str, extra: dict[str, Any] | None = None) -> Appended:
    """Append one entry to ``chain`` in the caller's transaction (``entries``/``heads``: mapped classes)."""
    head_table = heads.__table__
    locked, insert_entry, move_head = _append_statements(head_table, entries.__table__)
    row = (await conn.execute(locked, {"b_chain": chain})).first()
    if row is None:
        await create_head(conn, heads, chain)
        row = (await conn.execute(locked, {"b_chain": chain})).first()
    if row is None:  # the chain's owner was deleted meanwhile (cascade)
        raise AuditError("no_chain", "the chain's owner no longer exists")
    seq, prev = int(row[0]) + 1, str(row[1])
    new_hash = entry_hash(prev, entry_body(chain, seq, entry_id, kind, at, digest))
    await conn.execute(insert_entry, {
        "chain_id": chain, "seq": seq, "entry_id": entry_id, "kind": kind, "at": at, "digest": digest,
        "prev_hash": prev, "entry_hash": new_hash, **(extra or {})})
    await conn.execute(move_head, {"b_chain": chain, "b_seq": seq, "b_head": new_hash})
    return Appended(seq=seq, entry_hash=new_hash, prev_hash=prev)


async def create_head(conn: Executor, heads: Any, chain: str) -> None:
    """Create the head row of an empty chain (before its first entry); a no-op when it exists. A
    concurrent first event creates it too: ON CONFLICT lets one win, then both queue on its lock."""
    insert = (postgresql if _dialect(conn) == "postgresql" else sqlite).insert(heads.__table__)
    await conn.execute(insert.values(chain_id=chain, seq=0, head=GENESIS).on_conflict_do_nothing())


async def head(conn: Executor, heads: Any, chain: str) -> tuple[int, str]:
    """``(seq, hash)`` of the chain's head; ``(0, GENESIS)`` for an empty chain."""
    table = heads.__table__
    row = (await conn.execute(select(table.c.seq, table.c.head).where(table.c.chain_id == chain))).first()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


async def checkpoints(conn: Executor, table_cls: Any, chain: str) -> list[tuple[int, str]]:
    """Every checkpoint of the chain, ``(seq, token)``, oldest first."""
    table = table_cls.__table__
    rows = (await conn.execute(select(table.c.seq, table.c.token).where(table.c.chain_id == chain)
                               .order_by(table.c.seq))).all()
    return [(int(r[0]), str(r[1])) for r in rows]


async def checkpoint(conn: Executor, entries: Any, table_cls: Any, chain: str, key: Key, *,
                     now: dt.datetime, issuer: str | None = None) -> tuple[int, str] | None:
    """Sign and store a checkpoint of the chain's last entry unless one exists; return the latest
    checkpoint ``(seq, token)`` (``None`` for an empty chain).

    The head is read from the entries themselves, not the head row, so a checkpoint always states a
    hash that an entry carries."""
    etable, ctable = entries.__table__, table_cls.__table__
    last = (await conn.execute(select(etable.c.seq, etable.c.entry_hash).where(etable.c.chain_id == chain)
                               .order_by(etable.c.seq.desc()).limit(1))).first()
    if last is None:
        return None
    seq, head_hash = int(last[0]), str(last[1])
    latest = (await conn.execute(select(ctable.c.seq, ctable.c.token).where(ctable.c.chain_id == chain)
                                 .order_by(ctable.c.seq.desc()).limit(1))).first()
    if latest is not None and int(latest[0]) >= seq:
        return int(latest[0]), str(latest[1])
    token = sign_checkpoint(key, chain=chain, seq=seq, head=head_hash, iat=int(now.timestamp()), issuer=issuer)
    insert = (postgresql if _dialect(conn) == "postgresql" else sqlite).insert(ctable)
    await conn.execute(insert.values(chain_id=chain, seq=seq, token=token, created_at=now).on_conflict_do_nothing())
    stored = (await conn.execute(select(ctable.c.token).where(ctable.c.chain_id == chain, ctable.c.seq == seq))).first()
    return seq, str(stored[0]) if stored is not None else token


async def load_entries(conn: Executor, entries: Any, chain: str, *, from_seq: int = 1,
                       to_seq: int | None = None) -> list[dict[str, Any]]:
    """Stored entries of the chain in ``seq`` order, as dicts with the column names plus ``chain``,
    ``id`` and ``hash`` (the export names)."""
    table = entries.__table__
    query = select(table).where(table.c.chain_id == chain, table.c.seq >= from_seq)
    if to_seq is not None:
        query = query.where(table.c.seq <= to_seq)
    rows = (await conn.execute(query.order_by(table.c.seq))).mappings().all()
    return [{**dict(r), "chain": chain, "id": r["entry_id"], "hash": r["entry_hash"]} for r in rows]


def entry_query(entries: Any, chain: str, entry_id: str) -> Any:
    """The first entry of ``entry_id`` in ``chain`` (an id may have later entries: a status change)."""
    table = entries.__table__
    return select(table).where(table.c.chain_id == chain, table.c.entry_id == entry_id).order_by(table.c.seq).limit(1)


async def find_entry(conn: Executor, entries: Any, chain: str, entry_id: str) -> dict[str, Any] | None:
    """The stored entry of ``entry_id`` in ``chain`` (export names as in :func:`load_entries`), or None."""
    row = (await conn.execute(entry_query(entries, chain, entry_id))).mappings().first()
    return None if row is None else {**dict(row), "chain": chain, "id": row["entry_id"], "hash": row["entry_hash"]}


def public_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The export form of a stored entry: hashed fields plus ``prev_hash`` and ``hash``."""
    return {"chain": entry["chain"], "seq": entry["seq"], "id": entry["id"], "kind": entry["kind"],
            "at": entry["at"], "digest": entry["digest"], "prev_hash": entry["prev_hash"], "hash": entry["hash"]}
