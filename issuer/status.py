"""Token Status Lists hosted by the issuer: allocation of indices, status changes, signed list tokens.

Each tenant has lists of ``status_list_size`` entries (at least 100,000, for herd privacy) of 2 bits
(0 valid, 1 invalid, 2 suspended). Indices are drawn at random; the primary key of ``status_entries``
(list, index) guarantees no reuse, and a collision simply draws again (``INSERT ... ON CONFLICT DO
NOTHING``). When random draws keep colliding the list is marked full and a new one is started.
The signed token is regenerated and stored whenever a status changes, and refreshed when it nears
its ``exp``; the endpoint serves the stored token.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ssi import status_list as sl

from . import audit, statements
from .context import IssuerContext, new_id, utcnow
from .keys import active_key
from .models import IssuanceRecord, StatusEntry, StatusList

BITS = 2
STATUS_VALUES = {"valid": sl.VALID, "revoked": sl.INVALID, "suspended": sl.SUSPENDED}
MAX_DRAWS = 8


def status_list_uri(ctx: IssuerContext, slug: str, list_id: str) -> str:
    """The URI of a status list (the ``sub`` of its token and the ``uri`` in credentials)."""
    return f"{ctx.issuer_url(slug)}/status/{list_id}"


#: Seconds a worker remembers its tenant's current (not full) list; safe to lose, and a list marked full
#: meanwhile by another worker is still correct to draw from (the primary key refuses a taken index).
CURRENT_LIST_SECONDS = 5.0


def cached_current_list(ctx: IssuerContext, tenant_id: str) -> tuple[str, int] | None:
    """:func:`current_list` from this worker's cache only (None when it would need the database)."""
    cached = ctx.status_lists.get(tenant_id)
    if cached is not None and time.monotonic() - cached[0] < CURRENT_LIST_SECONDS:
        return cached[1], cached[2]
    return None


async def current_list(ctx: IssuerContext, conn: AsyncSession | AsyncConnection, tenant_id: str) -> tuple[str, int]:
    """``(list_id, size)`` of the tenant's newest list that is not full, created when there is none
    (in ``conn``'s transaction; an empty list committed on its own is harmless)."""
    cached = cached_current_list(ctx, tenant_id)
    if cached is not None:
        return cached
    row = (await conn.execute(statements.CURRENT_STATUS_LIST, {"tenant_id": tenant_id})).first()
    if row is not None:
        ctx.status_lists.put(tenant_id, (time.monotonic(), row.id, row.size))
        return row.id, row.size
    size = ctx.settings.status_list_size
    list_id = new_id("sl", 9)
    await conn.execute(statements.INSERT_STATUS_LIST, {
        "id": list_id, "tenant_id": tenant_id, "size": size, "bits": BITS, "allocated": 0,
        "data": bytes((size * BITS + 7) // 8), "token": None, "token_exp": None, "version": 0, "full": False,
        "created_at": utcnow()})
    # Not cached: the list becomes visible to others only when this transaction commits.
    return list_id, size


async def allocate(ctx: IssuerContext, conn: AsyncSession | AsyncConnection, tenant_id: str, record_id: str,
                   count: int) -> list[tuple[str, int]]:
    """Allocate ``count`` fresh random indices for ``record_id``; returns ``(list_id, idx)`` pairs.

    ``conn`` is an ORM session or a Core connection in the caller's transaction (prebuilt statements).
    """
    out: list[tuple[str, int]] = []
    take = statements.TAKE_STATUS_INDEX[ctx.db.backend]
    list_id, size = await current_list(ctx, conn, tenant_id)
    while len(out) < count:
        for _ in range(MAX_DRAWS):
            idx = secrets.randbelow(size)
            got = (await conn.execute(take, {"list_id": list_id, "idx": idx, "record_id": record_id})).first()
            if got is not None:
                out.append((list_id, idx))
                break
        else:
            await conn.execute(statements.MARK_STATUS_LIST_FULL, {"list_id": list_id})
            ctx.status_lists.clear()
            list_id, size = await current_list(ctx, conn, tenant_id)
    return out


async def _sign(ctx: IssuerContext, session: AsyncSession, row: StatusList, slug: str, data: bytes) -> tuple[str, dt.datetime]:
    signer = await active_key(ctx, session, row.tenant_id)
    if signer is None:
        raise RuntimeError("the tenant has no signing key")
    now = int(utcnow().timestamp())
    exp = now + ctx.settings.status_list_validity
    token = sl.sign_status_list_token(sl.StatusList._from_bytes(data, row.bits), uri=status_list_uri(ctx, slug, row.id),
                                      key=signer.key, iat=now, exp=exp, ttl=ctx.settings.status_list_ttl,
                                      x5c=signer.x5c)
    return token, dt.datetime.fromtimestamp(exp, dt.UTC)


async def set_record_status(ctx: IssuerContext, session: AsyncSession, record: IssuanceRecord, slug: str,
                            status: str) -> None:
    """Set the status of every copy of ``record`` and re-sign the affected lists (in this transaction)."""
    value = STATUS_VALUES[status]
    entries = (await session.execute(select(StatusEntry.list_id, StatusEntry.idx)
                                     .where(StatusEntry.record_id == record.id))).all()
    by_list: dict[str, list[int]] = {}
    for list_id, idx in entries:
        by_list.setdefault(list_id, []).append(idx)
    for list_id, indices in by_list.items():
        # FOR UPDATE: two concurrent changes on PostgreSQL must not overwrite each other's bits (SQLite
        # serialises writers already).
        row = (await session.execute(select(StatusList).where(StatusList.id == list_id).with_for_update())).scalar_one()
        lst = sl.StatusList._from_bytes(row.data, row.bits)
        for idx in indices:
            lst.set(idx, value)
        data = lst.to_bytes()
        token, exp = await _sign(ctx, session, row, slug, data)
        row.data, row.token, row.token_exp, row.version = data, token, exp, row.version + 1
    record.status = status
    record.status_changed_at = utcnow()
    await audit.record_status(session, record, status)


async def list_token(ctx: IssuerContext, list_id: str, tenant_id: str, slug: str) -> str | None:
    """The stored token of a list, re-signed first when missing or past half its lifetime.

    Reads take no write lock; only a refresh does (on SQLite a write lock serialises the service).
    """
    async with ctx.db.read_session() as session:
        row = (await session.execute(select(StatusList.token, StatusList.token_exp).where(
            StatusList.id == list_id, StatusList.tenant_id == tenant_id))).first()
    if row is None:
        return None
    half = dt.timedelta(seconds=ctx.settings.status_list_validity / 2)
    if row[0] is not None and row[1] is not None and row[1] - utcnow() >= half:
        return str(row[0])
    async with ctx.session() as session:
        current = (await session.execute(select(StatusList).where(StatusList.id == list_id)
                                         .with_for_update())).scalar_one()
        if current.token is not None and current.token_exp is not None and current.token_exp - utcnow() >= half:
            return current.token
        token, exp = await _sign(ctx, session, current, slug, current.data)
        current.token, current.token_exp = token, exp
        return token
