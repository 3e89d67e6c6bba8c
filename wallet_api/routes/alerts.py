"""Alerts: list, mark read, and a Server-Sent Events stream for the app."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StrictInt
from sqlalchemy import select, update

from service_kit.errors import APIError

from ..deps import Citizen, Ctx
from ..models import Alert, Session, utcnow

router = APIRouter(tags=["alerts"])

#: The largest alert id: an ``INTEGER`` column holds no more on PostgreSQL (SQLite's holds 2**63 - 1).
#: An id the client names (``Last-Event-ID``, ``after``, ``ids``) above it, or below 0, names no alert
#: and is refused with 400 ``invalid_request`` before the database sees it.
MAX_ALERT_ID = 2**31 - 1
#: ``Last-Event-ID``: ASCII digits only (``str.isdigit`` takes ``²`` and other digits ``int`` refuses),
#: at most ten of them: no more than an alert id has.
_EVENT_ID = re.compile("[0-9]{1,10}")


class AlertView(BaseModel):
    id: int = Field(description="Increasing id (the SSE event id).")
    kind: str = Field(description="offer_received | credential_received | issuance_pending | expiring | "
                      "suspended | revoked | reinstated | pin_set | pin_changed | pin_removed | "
                      "pin_reset | pin_locked.")
    credential_id: str | None
    message: str
    read: bool
    created_at: dt.datetime


def _view(row: Alert) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "credential_id": row.credential_id, "message": row.message,
            "read": row.read, "created_at": row.created_at}


@router.get("/alerts", response_model=list[AlertView], summary="My alerts")
async def list_alerts(ctx: Ctx, me: Citizen, unread: bool = False,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
    """Alerts, newest first (`unread=true` for the unread ones)."""
    query = select(Alert).where(Alert.wallet_id == me.wallet_id)
    if unread:
        query = query.where(Alert.read.is_(False))
    async with ctx.db.read_session() as session:
        rows = (await session.execute(query.order_by(Alert.id.desc()).limit(limit))).scalars().all()
    return [_view(r) for r in rows]


class MarkRead(BaseModel):
    # Strict: lax mode would read true/false as alert ids 1/0 and mark alerts nobody named.
    ids: list[Annotated[StrictInt, Field(ge=0, le=MAX_ALERT_ID)]] | None = Field(
        default=None, max_length=1000, description="Alerts to mark (alert ids, 0 to 2^31 - 1); null marks all.")


@router.post("/alerts/read", status_code=204, summary="Mark alerts read")
async def mark_read(ctx: Ctx, me: Citizen, body: MarkRead) -> None:
    """Mark the given alerts (or all) as read."""
    stmt = update(Alert).where(Alert.wallet_id == me.wallet_id)
    if body.ids is not None:
        stmt = stmt.where(Alert.id.in_(body.ids))
    async with ctx.db.session() as session:
        await session.execute(stmt.values(read=True).execution_options(synchronize_session=False))


@router.get("/alerts/stream", summary="Alerts as Server-Sent Events",
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream(ctx: Ctx, me: Citizen, request: Request,
                 last_event_id: Annotated[str | None, Header()] = None,
                 after: Annotated[int | None, Query(ge=0, le=MAX_ALERT_ID,
                                                    description="Send alerts after this id.")] = None,
                 ) -> StreamingResponse:
    """New alerts as they appear (`event: alert`, `id:` = alert id; resume with `Last-Event-ID`).

    The stream reads the database, so it works behind several workers. It ends (the response closes)
    once its access token stops working — logout, the session revoked, the tokens refreshed, or the
    token expired: reconnect with the current token and `Last-Event-ID`."""
    cursor = after
    if cursor is None and last_event_id is not None:
        if not _EVENT_ID.fullmatch(last_event_id) or int(last_event_id) > MAX_ALERT_ID:
            raise APIError(400, "invalid_request", "Last-Event-ID must be an alert id")
        cursor = int(last_event_id)
    if cursor is None:
        async with ctx.db.read_session() as session:
            top = (await session.execute(select(Alert.id).where(Alert.wallet_id == me.wallet_id)
                                         .order_by(Alert.id.desc()).limit(1))).scalar_one_or_none()
        cursor = top or 0
    wallet_id = me.wallet_id
    # The stream lives as long as the access token it was opened with: checked on every poll, so a
    # logout, a revocation from another device, a refresh (which replaces the token) or its expiry
    # ends the stream before any later alert is sent.
    token_alive = select(Session.id).where(Session.id == me.session.id, Session.access_hash == me.session.access_hash,
                                           Session.revoked.is_(False))

    async def events() -> AsyncIterator[bytes]:
        nonlocal cursor
        yield b": connected\n\n"
        idle = 0.0
        while not await request.is_disconnected():
            async with ctx.db.read_session() as session:
                if (await session.execute(token_alive.where(Session.access_expires_at > utcnow()))).first() is None:
                    return
                rows = (await session.execute(select(Alert).where(Alert.wallet_id == wallet_id, Alert.id > cursor)
                                              .order_by(Alert.id).limit(100))).scalars().all()
            for row in rows:
                cursor = row.id
                payload = _view(row)
                payload["created_at"] = row.created_at.isoformat()
                yield f"id: {row.id}\nevent: alert\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
            await asyncio.sleep(0.5)
            idle += 0.5
            if idle >= 15:
                idle = 0
                yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
