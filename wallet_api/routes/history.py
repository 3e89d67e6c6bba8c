"""History of receipts, shares, declines and deletions: list, search, export.

An entry whose sealed details do not open (tampered with or corrupted in the database, or sealed under
a key the wallet no longer has) is listed and exported with ``unreadable: true``, its id, kind and time
(what the row holds in clear) and ``details: {}``, as the credential list does
(:mod:`wallet_api.routes.credentials`): one broken row must not hide the whole history from the citizen,
nor vanish from it. The audit chain keeps reporting it as broken (``GET /v1/audit/check``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select

from .. import audit
from ..deps import Citizen, Ctx, Principal
from ..models import HistoryEntry
from ..vault import VaultError

router = APIRouter(tags=["history"])
log = logging.getLogger(__name__)


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


async def _entries(ctx: Ctx, me: Principal, kind: str | None, q: str | None, since: dt.datetime | None
                   ) -> list[dict[str, Any]]:
    query = select(HistoryEntry).where(HistoryEntry.wallet_id == me.wallet_id)
    if kind:
        query = query.where(HistoryEntry.kind == kind)
    if since:
        query = query.where(HistoryEntry.created_at >= since)
    async with ctx.db.read_session() as session:
        rows = (await session.execute(query.order_by(HistoryEntry.created_at.desc()).limit(5000))).scalars().all()
    out = []
    needle = (q or "").casefold()
    for row in rows:
        entry = _view(me, row)
        # The details are sealed, so searching happens here, after decryption, within one wallet; an
        # unreadable entry has no text to search, so no `q` matches it.
        if needle and (entry["unreadable"]
                       or needle not in json.dumps(entry["details"], ensure_ascii=False).casefold()):
            continue
        out.append(entry)
    return out


@router.get("/history", response_model=list[HistoryView], summary="My history")
async def list_history(ctx: Ctx, me: Citizen,
                       kind: Annotated[str | None, Query(max_length=20)] = None,
                       q: Annotated[str | None, Query(max_length=200, description=(
                           "Text to search in the details; an unreadable entry never matches."))] = None,
                       # Aware only: a time without a zone names no instant (the citizen's? the server's?),
                       # and the database refuses to guess; such a time answers 400 invalid_request.
                       since: Annotated[AwareDatetime | None, Query(
                           description="ISO 8601 time with a time zone (`Z` or `+01:00`).")] = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    """Every receipt and share, newest first; filter by kind, text and time. An entry whose stored data
    does not open is listed with `unreadable: true`, its id, kind and time and `details: {}`; no text
    search matches it."""
    return (await _entries(ctx, me, kind, q, since))[:limit]


@router.get("/history/export", summary="Export my history as JSON")
async def export_history(ctx: Ctx, me: Citizen) -> Response:
    """The whole history as a JSON file download, with the audit chain (``audit``: every entry, its
    content and salt, the signed checkpoints and their JWKS) that ``cartera audit verify`` checks.
    An entry whose stored data does not open is exported with ``unreadable: true`` and ``details: {}``
    (and ``cartera audit verify`` reports its chain entry as broken)."""
    entries = await _entries(ctx, me, None, None, None)
    body = json.dumps({"format": "cartera-wallet-history", "version": 1,
                       "exported_at": dt.datetime.now(dt.UTC).isoformat(),
                       "entries": [{**e, "created_at": e["created_at"].isoformat()} for e in entries],
                       "audit": await audit.export(ctx, me.key)},
                      ensure_ascii=False, indent=1)
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": 'attachment; filename="wallet-history.json"', "Cache-Control": "no-store"})
