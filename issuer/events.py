"""Background work: deliver webhook events from the outbox, purge expired protocol state.

A worker claims a due outbox row by moving its ``next_attempt_at`` forward in one conditional
``UPDATE`` (a lease), so two workers never send the same event at once. The lease runs from the
moment of the claim (a round of slow deliveries must not lease its later rows from the round's
start, into the past) and outlasts a delivery; the outcome is recorded only while the row is still
this claim's (an attempt counted since means another worker claimed it after the lease ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import httpx
from sqlalchemy import update

from service_kit.outbound import CALL_DEADLINE_FACTOR
from service_kit.webhooks import (
    GIVEN_UP,
    DeliveryResult,
    deliver_webhook,
    due_webhooks,
    next_attempt_after,
    purge_finished_webhooks,
)

from .context import IssuerContext, utcnow
from .grants import purge_expired
from .models import WebhookEndpoint, WebhookOutbox

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 12
LEASE = dt.timedelta(seconds=60)


async def deliver_due(ctx: IssuerContext, limit: int = 20) -> int:
    """Deliver the due outbox events once each; returns how many were delivered."""
    async with ctx.db.read_session() as session:
        due = (await session.execute(due_webhooks(WebhookOutbox, utcnow(), max_attempts=MAX_ATTEMPTS, limit=limit))
               ).scalars().all()
    client = ctx.http
    if client is None:
        return 0
    delivered = 0
    for row_id in due:
        try:
            delivered += await _deliver_row(ctx, client, row_id)
        except Exception as exc:  # noqa: BLE001 - one row's failure must not end the round, nor the purges
            # The type only: a message may quote the receiver's answer or the row. The row's lease
            # counted the attempt, so it comes back later and runs out of attempts if it keeps failing.
            log.error("webhook delivery failed unexpectedly",
                      extra={"outbox_id": row_id, "error": type(exc).__name__})
    return delivered


def lease(ctx: IssuerContext) -> dt.timedelta:
    """How long a claim keeps its row: :data:`LEASE`, or longer than one delivery can take (its
    deadline, ``CALL_DEADLINE_FACTOR`` times ``webhook_timeout``) when that is longer."""
    return max(LEASE, dt.timedelta(seconds=CALL_DEADLINE_FACTOR * ctx.settings.webhook_timeout + 30))


async def _deliver_row(ctx: IssuerContext, client: httpx.AsyncClient, row_id: str) -> int:
    """Claim, send and record one outbox row; 1 if it was delivered."""
    # The lease counts the attempt: a row that fails before its outcome is recorded (a secret that
    # no longer opens, a crash) still runs out of attempts instead of coming back forever.
    now = utcnow()
    async with ctx.session() as session:
        claimed = (await session.execute(update(WebhookOutbox).where(
            WebhookOutbox.id == row_id, WebhookOutbox.next_attempt_at <= now, WebhookOutbox.delivered_at.is_(None))
            .values(next_attempt_at=now + lease(ctx), attempts=WebhookOutbox.attempts + 1)
            .returning(WebhookOutbox))).scalar_one_or_none()
        endpoint = await session.get(WebhookEndpoint, claimed.endpoint_id) if claimed is not None else None
    if claimed is None:
        return 0
    # Still this claim's row: no other worker claimed it since (a claim counts an attempt).
    ours = update(WebhookOutbox).where(WebhookOutbox.id == row_id, WebhookOutbox.attempts == claimed.attempts,
                                       WebhookOutbox.delivered_at.is_(None))
    if endpoint is None:
        async with ctx.session() as session:
            await session.execute(ours.values(attempts=MAX_ATTEMPTS, next_attempt_at=GIVEN_UP,
                                              last_error="endpoint removed"))
        return 0
    try:
        secret = ctx.box.open(endpoint.sealed_secret, f"issuer:webhook:{endpoint.id}".encode())
    except Exception as exc:  # noqa: BLE001 - one row's unreadable secret must not stop the others
        log.warning("webhook secret unreadable", extra={"endpoint_id": endpoint.id, "error": type(exc).__name__})
        result = DeliveryResult(False, 0, None, "the endpoint's secret cannot be opened")
    else:
        result = await deliver_webhook(client, endpoint.url, claimed.body, secret, event_id=claimed.id,
                                       max_attempts=1, timeout=ctx.settings.webhook_timeout)
    async with ctx.session() as session:
        if result.delivered:
            await session.execute(ours.values(delivered_at=utcnow(), last_error=None))
        else:
            # Past its lease, another worker may be sending it now: its lease is not ours to shorten.
            await session.execute(ours.values(last_error=result.error,
                                              next_attempt_at=next_attempt_after(claimed.attempts, utcnow(), base=2.0,
                                                                                 max_attempts=MAX_ATTEMPTS)))
    return int(result.delivered)


async def purge_outbox(ctx: IssuerContext) -> int:
    """Delete the outbox rows finished (delivered or given up) ``OUTBOX_RETENTION`` ago."""
    return await purge_finished_webhooks(ctx.session, WebhookOutbox, utcnow(), max_attempts=MAX_ATTEMPTS)


async def run_background(ctx: IssuerContext, interval: float = 1.0) -> None:
    """Deliver webhooks every ``interval`` seconds and purge expired state every few minutes, forever."""
    ticks = 0
    while True:
        try:
            await deliver_due(ctx)
            if ticks % 300 == 0:
                await purge_expired(ctx)
                await purge_outbox(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - background work must survive a failed round (DB restart...)
            log.exception("background round failed")
        ticks += 1
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def background(ctx: IssuerContext):  # type: ignore[no-untyped-def]
    """Run :func:`run_background` for the app's lifetime."""
    task = asyncio.create_task(run_background(ctx))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
