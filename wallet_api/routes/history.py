"""History of receipts, shares, declines and deletions: list, search, export.

An entry whose sealed details do not open (tampered with or corrupted in the database, or sealed under
a key the wallet no longer has) is listed and exported with ``unreadable: true``, its id, kind and time
(what the row holds in clear) and ``details: {}``, as the credential list does
(:mod:`wallet_api.routes.credentials`): one broken row must not hide the whole history from the citizen,
nor vanish from it. The audit chain keeps reporting it as broken (``GET /v1/audit/check``).

Citizens can see every share ever made (DESIGN.md), so nothing here stops at a fixed number of rows: the
list pages back with an opaque ``before`` cursor (the ``(created_at, id)`` of the last row read, the
order being ``created_at`` then ``id``, both descending, so rows with the same time are neither skipped
nor repeated), and the export and the search read the history in batches of :data:`BATCH` rows. A
search opens every row it reads (the details are sealed: the database cannot search them), so one
request reads at most :data:`SEARCH_SCAN_LIMIT` rows and hands back a cursor to go on from there."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import and_, or_, select

from service_kit.errors import APIError
from ssi.encoding import b64url_decode, b64url_encode
from ssi.errors import EncodingError

from .. import audit
from ..deps import Citizen, Ctx, Principal
from ..models import HistoryEntry
from ..vault import VaultError

router = APIRouter(tags=["history"])
log = logging.getLogger(__name__)

#: Rows read (and opened) per database query by the search and the export: what one request holds
#: of the history at a time, besides the entries it answers with.
BATCH = 500
#: The most rows one search request reads before it answers with the matches found so far and a
#: cursor to go on from (:data:`NEXT_HEADER`): a bound on the work of one request.
SEARCH_SCAN_LIMIT = 5000
#: The response header carrying the cursor of the next page, present only when rows remain.
NEXT_HEADER = "Cartera-Next-Before"
_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_BAD_CURSOR = "before must be a cursor the wallet gave (the Cartera-Next-Before header)"

Cursor = tuple[dt.datetime, str]


class HistoryView(BaseModel):
    id: str
    kind: str = Field(description="receipt | share | decline | deletion | imported (from a backup: the original "
                      "kind, time and id in `details`) | restore (a backup import).")
    created_at: dt.datetime
    details: dict[str, Any] = Field(description="Receipts: issuer, type, claim names. Shares: verifier (name only "
                                    "when verified), purpose, each credential and the claims disclosed with "
                                    "their values, outcome. `{}` when the entry is unreadable.")
    unreadable: bool = Field(default=False, description=(
        "The stored entry does not open (tampered with or corrupted, or sealed under a key the wallet no "
        "longer has): only its id, kind and time are known and `details` is `{}`. A text search (`q`) "
        "never matches it; without `q` it is listed when it matches `kind` and `since`, and the export "
        "includes it flagged the same way. `GET /v1/audit/check` reports its chain entry as broken."))


def _view(me: Principal, row: HistoryEntry) -> dict[str, Any]:
    """What the citizen sees of one history row: its details, or the row's clear columns flagged
    ``unreadable`` when its sealed details do not open."""
    try:
        details = me.key.open("history", row.id, row.sealed)
    except VaultError:
        # The entry id only: the wallet is known from it, and nothing of the row's content is.
        log.warning("a history entry does not open; listed as unreadable", extra={"entry": row.id})
        return {"id": row.id, "kind": row.kind, "created_at": row.created_at, "details": {}, "unreadable": True}
    return {"id": row.id, "kind": row.kind, "created_at": row.created_at, "details": details, "unreadable": False}


def encode_cursor(row: HistoryEntry) -> str:
    """The opaque cursor of the rows after ``row`` (older, or as old with a smaller id)."""
    at = row.created_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return b64url_encode(f"{at}|{row.id}".encode())


def decode_cursor(value: str) -> Cursor:
    """``(created_at, id)`` of a cursor from :func:`encode_cursor`; 400 ``invalid_request`` for anything
    else (it only narrows a query of the citizen's own history, so nothing else needs checking)."""
    try:
        at, _, entry_id = b64url_decode(value).decode("ascii").partition("|")
        created_at = dt.datetime.fromisoformat(at)
        if created_at.tzinfo is None or not _ENTRY_ID.fullmatch(entry_id):
            raise ValueError("not a cursor")
        # In UTC here, as the database compares it: a time at the edge of the calendar fails now, cleanly.
        created_at = created_at.astimezone(dt.UTC)
    except (EncodingError, ValueError, OverflowError) as exc:
        raise APIError(400, "invalid_request", _BAD_CURSOR) from exc
    return created_at, entry_id


def _query(me: Principal, kind: str | None, since: dt.datetime | None, after: Cursor | None) -> Any:
    """The wallet's rows (of ``kind``, from ``since``) after the cursor ``after``, newest first, in an
    order that is total: ``created_at`` then ``id``, both descending."""
    query = select(HistoryEntry).where(HistoryEntry.wallet_id == me.wallet_id)
    if kind:
        query = query.where(HistoryEntry.kind == kind)
    if since:
        query = query.where(HistoryEntry.created_at >= since)
    if after is not None:
        at, entry_id = after
        query = query.where(or_(HistoryEntry.created_at < at,
                                and_(HistoryEntry.created_at == at, HistoryEntry.id < entry_id)))
    return query.order_by(HistoryEntry.created_at.desc(), HistoryEntry.id.desc())


async def _rows(ctx: Ctx, me: Principal, kind: str | None, since: dt.datetime | None, after: Cursor | None,
                size: int) -> list[HistoryEntry]:
    """At most ``size`` rows after ``after``, read in a short transaction of their own."""
    async with ctx.db.read_session() as session:
        return list((await session.execute(_query(me, kind, since, after).limit(size))).scalars().all())


async def _any_after(ctx: Ctx, me: Principal, kind: str | None, since: dt.datetime | None, row: HistoryEntry
                     ) -> bool:
    async with ctx.db.read_session() as session:
        query = _query(me, kind, since, (row.created_at, row.id)).with_only_columns(HistoryEntry.id).limit(1)
        return (await session.execute(query)).first() is not None


def _matches(entry: dict[str, Any], needle: str) -> bool:
    # The details are sealed, so searching happens here, after decryption, within one wallet; an
    # unreadable entry has no text to search, so no `q` matches it.
    return not entry["unreadable"] and needle in json.dumps(entry["details"], ensure_ascii=False).casefold()


async def _page(ctx: Ctx, me: Principal, kind: str | None, q: str | None, since: dt.datetime | None,
                after: Cursor | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """``(entries, cursor of the next page or None when no row remains)``.

    Without ``q`` the database selects the page (``limit`` + 1 rows: whether one remains). With ``q``,
    batches of :data:`BATCH` rows are opened and searched until ``limit`` entries match, the history
    ends, or :data:`SEARCH_SCAN_LIMIT` rows were read; the cursor is then the last row read, matched or
    not, so the next page goes on from there."""
    if not q:
        rows = await _rows(ctx, me, kind, since, after, limit + 1)
        page = rows[:limit]
        return [_view(me, row) for row in page], encode_cursor(page[-1]) if len(rows) > limit else None
    needle = q.casefold()
    found: list[dict[str, Any]] = []
    scanned = 0
    last: HistoryEntry | None = None
    while scanned < SEARCH_SCAN_LIMIT:
        size = min(BATCH, SEARCH_SCAN_LIMIT - scanned)
        rows = await _rows(ctx, me, kind, since, after, size)
        for row in rows:
            scanned += 1
            last = row
            entry = _view(me, row)
            if _matches(entry, needle):
                found.append(entry)
                if len(found) == limit:
                    break
        if len(found) == limit or len(rows) < size:
            break
        after = (rows[-1].created_at, rows[-1].id)
    if last is None or not await _any_after(ctx, me, kind, since, last):
        return found, None
    return found, encode_cursor(last)


@router.get("/history", response_model=list[HistoryView], summary="My history", responses={200: {"headers": {
    NEXT_HEADER: {"description": "Present when older entries remain: pass it as `before` for the next page. "
                  "Absent on the last page.", "schema": {"type": "string"}}}}})
async def list_history(ctx: Ctx, me: Citizen, response: Response,
                       kind: Annotated[str | None, Query(max_length=20)] = None,
                       q: Annotated[str | None, Query(max_length=200, description=(
                           "Text to search in the details; an unreadable entry never matches. One request "
                           f"reads at most {SEARCH_SCAN_LIMIT} entries: it may answer fewer than `limit` "
                           "matches (even none) with a `Cartera-Next-Before` header to search on from "
                           "there."))] = None,
                       # Aware only: a time without a zone names no instant (the citizen's? the server's?),
                       # and the database refuses to guess; such a time answers 400 invalid_request.
                       since: Annotated[AwareDatetime | None, Query(
                           description="ISO 8601 time with a time zone (`Z` or `+01:00`).")] = None,
                       before: Annotated[str | None, Query(max_length=200, description=(
                           "Opaque cursor: the `Cartera-Next-Before` header of the previous page; the page "
                           "then holds the entries after it (older, in the same order), with the same "
                           "`kind`, `q` and `since`. Anything else answers 400 `invalid_request`."))] = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    """Every receipt and share, newest first (by time, then id); filter by kind, text and time, and
    page back with `before`: each entry is on exactly one page. An entry whose stored data does not
    open is listed with `unreadable: true`, its id, kind and time and `details: {}`; no text search
    matches it."""
    if since is not None:
        try:
            since = since.astimezone(dt.UTC)  # as the database compares it
        except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+05:00: no UTC time
            raise APIError(400, "invalid_request", "since is out of range") from exc
    entries, next_cursor = await _page(ctx, me, kind, q, since, decode_cursor(before) if before else None, limit)
    if next_cursor is not None:
        response.headers[NEXT_HEADER] = next_cursor
    return entries


def _exported(entry: dict[str, Any]) -> str:
    return json.dumps({**entry, "created_at": entry["created_at"].isoformat()}, ensure_ascii=False)


async def _export_body(ctx: Ctx, me: Principal, head: str, chain_scope: tuple[int, int | None], jwks: dict[str, Any]
                       ) -> AsyncIterator[str]:
    """The export document, its entries and then its audit chain read and sent :data:`BATCH` rows at
    a time: what the export holds in memory does not grow with the history."""
    yield head
    after: Cursor | None = None
    first = True
    while True:
        rows = await _rows(ctx, me, None, None, after, BATCH)
        if rows:
            yield ("" if first else ",\n") + ",\n".join(_exported(_view(me, row)) for row in rows)
            first = False
        if len(rows) < BATCH:
            break
        after = (rows[-1].created_at, rows[-1].id)
    yield '\n], "audit": '
    # Exactly the JSON text json.dumps gave of the whole chain document, read BATCH entries at a time.
    async for part in audit.export_text(ctx, me.key, chain_scope, jwks, compact=False):
        yield part
    yield "}\n"


@router.get("/history/export", summary="Export my history as JSON",
            responses={200: {"content": {"application/json": {}}}})
async def export_history(ctx: Ctx, me: Citizen) -> StreamingResponse:
    """The whole history as a JSON file download, newest first, with the audit chain (``audit``: every
    entry, its content and salt, the signed checkpoints and their JWKS) that ``cartera audit verify``
    checks. An entry whose stored data does not open is exported with ``unreadable: true`` and
    ``details: {}`` (and ``cartera audit verify`` reports its chain entry as broken). The entries, then
    the chain's entries and checkpoints, are read and sent 500 at a time: should the database fail
    midway, the download ends early and is not valid JSON."""
    # Before any byte is sent, so that a failure there is a clean error: the checkpoint that ends the
    # exported chain (signed now if events came after the last one) and the keys that check it. The
    # chain is exported up to that checkpoint (audit.export_scope): an event recorded while the download
    # runs may be in `entries` and not yet in `audit` (it is in the next export), and no checkpoint is
    # past the chain's last exported entry unless entries were removed.
    scope = await audit.export_scope(ctx, me.wallet_id)
    jwks = await audit.jwks(ctx)
    head = json.dumps({"format": "cartera-wallet-history", "version": 1,
                       "exported_at": dt.datetime.now(dt.UTC).isoformat()}, ensure_ascii=False)[:-1]
    body = _export_body(ctx, me, f'{head}, "entries": [\n', scope, jwks)
    return StreamingResponse(body,
                             media_type="application/json", headers={
                                 "Content-Disposition": 'attachment; filename="wallet-history.json"',
                                 "Cache-Control": "no-store"})
