"""The verifier's background task: deliver due webhooks, expire overdue requests, purge claims and
finished webhook deliveries.

Runs in every worker process; rows are claimed with a conditional ``UPDATE`` (a lease on
``next_attempt_at``, from the moment of the claim and longer than a delivery can take) so two workers
never send the same delivery at once; an outcome is recorded only while the row is still that claim's.
A new outbox row wakes the local task at once (``kick``); others are found on the next tick
(``worker_interval``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from service_kit.crypto import SecretBox
from service_kit.db import Database
from service_kit.outbound import CALL_DEADLINE_FACTOR
from service_kit.webhooks import (
    DeliveryResult,
    deliver_webhook,
    due_webhooks,
    next_attempt_after,
    purge_finished_webhooks,
)
from verifier.models import Agency, WebhookOutbox
from verifier.transactions import sweep, utcnow, webhook_body

log = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 12
#: Seconds between purges of finished outbox rows: they age in days, no need to look every second.
OUTBOX_PURGE_INTERVAL = 300.0


async def deliver_due(db: Database, box: SecretBox, client: httpx.AsyncClient, *, limit: int = 50) -> int:
    """Send every due outbox row once (one attempt each; failures are rescheduled). Returns deliveries."""
    async with db.read_session() as session:
        due = list((await session.scalars(due_webhooks(WebhookOutbox, utcnow(), max_attempts=MAX_ATTEMPTS,
                                                       limit=limit))).all())
    delivered = 0
    for row_id in due:
        try:
            delivered += await _deliver_row(db, box, client, row_id)
        except Exception as exc:  # noqa: BLE001 - one row's failure must not end the round, nor the sweeps
            # The type only: a message may quote the receiver's answer or the row. The row's lease
            # counted the attempt, so it comes back later and runs out of attempts if it keeps failing.
            log.error("webhook delivery failed unexpectedly",
                      extra={"outbox_id": row_id, "error": type(exc).__name__})
    return delivered


def lease(client: httpx.AsyncClient) -> dt.timedelta:
    """How long a claim keeps its row: :data:`LEASE`, or longer than one delivery can take (its
    deadline, ``CALL_DEADLINE_FACTOR`` times the client's read timeout) when that is longer."""
    return max(LEASE, dt.timedelta(seconds=CALL_DEADLINE_FACTOR * (client.timeout.read or 5.0) + 30))


async def _deliver_row(db: Database, box: SecretBox, client: httpx.AsyncClient, row_id: str) -> int:
    """Claim, send and record one outbox row; 1 if it was delivered."""
    # The lease counts the attempt: a row that fails before its outcome is recorded (its agency
    # deleted, a secret that no longer opens, a crash) runs out of attempts instead of coming
    # back every minute for ever. It runs from now, not from the start of the round: after a round
    # of slow deliveries that would be in the past, and another worker would send the row too.
    now = utcnow()
    async with db.session() as session:
        row = (await session.execute(
            update(WebhookOutbox).where(WebhookOutbox.id == row_id, WebhookOutbox.next_attempt_at <= now,
                                        WebhookOutbox.delivered_at.is_(None))
            .values(next_attempt_at=now + lease(client), attempts=WebhookOutbox.attempts + 1)
            .returning(WebhookOutbox))).scalar_one_or_none()
        if row is None:
            return 0
        agency = await session.get(Agency, row.endpoint_id)
    body = await webhook_body(db, box, row.body) if agency is not None else None
    if agency is None or body is None:
        result = DeliveryResult(False, 0, None, "the agency was removed" if agency is None
                                else "the transaction was removed")
        attempts = MAX_ATTEMPTS  # nobody left to deliver to, or nothing left to tell
    else:
        attempts = row.attempts
        try:
            secret = box.open(agency.webhook_secret, f"agency:{agency.id}:webhook".encode())
        except Exception as exc:  # noqa: BLE001 - one row's unreadable secret must not stop the others
            log.warning("webhook secret unreadable", extra={"agency": agency.id, "error": type(exc).__name__})
            result = DeliveryResult(False, 0, None, "the agency's webhook secret cannot be opened")
        else:
            result = await deliver_webhook(client, row.url, body, secret, event_id=row.id, max_attempts=1)
    finished = utcnow()
    # Still this claim's row: no other worker claimed it since (a claim counts an attempt). Past its
    # lease another worker may be sending it now: its claim is not ours to overwrite.
    ours = update(WebhookOutbox).where(WebhookOutbox.id == row_id, WebhookOutbox.attempts == row.attempts,
                                       WebhookOutbox.delivered_at.is_(None))
    async with db.session() as session:
        if result.delivered:
            await session.execute(ours.values(delivered_at=finished, last_error=None))
        else:
            await session.execute(ours.values(
                attempts=attempts, last_error=result.error,
                next_attempt_at=next_attempt_after(attempts, finished, base=2.0, cap=600.0,
                                                   max_attempts=MAX_ATTEMPTS)))
    return int(result.delivered)


async def purge_outbox(db: Database) -> int:
    """Delete the outbox rows finished (delivered or given up) ``OUTBOX_RETENTION`` ago."""
    return await purge_finished_webhooks(db.session, WebhookOutbox, utcnow(), max_attempts=MAX_ATTEMPTS)


class BackgroundWorker:
    """The periodic loop, started and stopped with the app."""

    def __init__(self, db: Database, box: SecretBox, client: httpx.AsyncClient, interval: float) -> None:
        self.db = db
        self.box = box
        self.client = client
        self.interval = interval
        self._wake = asyncio.Event()
        self._last_sweep = 0.0
        self._last_outbox_purge = -OUTBOX_PURGE_INTERVAL

    def kick(self) -> None:
        """Run the loop now (a webhook was queued)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await deliver_due(self.db, self.box, self.client)
                # Housekeeping on its own clock: a burst of webhooks must not multiply the sweeps.
                if time.monotonic() - self._last_sweep >= self.interval:
                    self._last_sweep = time.monotonic()
                    await sweep(self.db, self.box)
                if time.monotonic() - self._last_outbox_purge >= OUTBOX_PURGE_INTERVAL:
                    self._last_outbox_purge = time.monotonic()
                    await purge_outbox(self.db)
            except Exception:  # noqa: BLE001 - the loop must survive a database hiccup
                log.exception("verifier background task failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """Lifespan hook: run :class:`BackgroundWorker` for the app's lifetime."""
    worker: BackgroundWorker = app.state.worker
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
