"""Signed webhooks: the signature scheme, verification, delivery with retries, and an outbox table mixin.

Signature header (``Cartera-Signature``), in the style of Stripe's::

    Cartera-Signature: t=1732425600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

``v1`` is the lower-case hex HMAC-SHA256, keyed with the endpoint's shared secret, of
``"<t>." + raw request body``; ``t`` is the sending time in Unix seconds. The receiver recomputes it over
the exact bytes it received, compares in constant time, and refuses a ``t`` older (or newer) than a
tolerance (five minutes by default) so that a captured delivery cannot be replayed later. During a secret
rotation the sender may put several ``v1=`` entries in the header; one match is enough. Each delivery
also carries ``Cartera-Event-Id``, the same on every retry, for receivers to drop duplicates.

Durable delivery: the service writes the event in its own database in the same transaction as the change
it reports (a table using :class:`WebhookOutboxMixin`), and a background task in each worker loops:
:func:`claim_due_webhooks` (a short transaction that leases due rows, so two workers never send the same
row at once), :func:`deliver_webhook` for each, then :func:`record_delivery` (delivered, or due again
after an exponential backoff, or given up after ``max_attempts``). A worker that dies mid-delivery only
delays the row until its lease ends. Finished rows (delivered or given up) stay as the delivery record for
:data:`OUTBOX_RETENTION`, then :func:`purge_finished_webhooks` deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx
from sqlalchemy import (
    Index,
    Integer,
    LargeBinary,
    Row,
    Select,
    String,
    Text,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from service_kit.db import UTCDateTime
from service_kit.outbound import CALL_DEADLINE_FACTOR, retry_after_seconds

SIGNATURE_HEADER = "Cartera-Signature"
EVENT_ID_HEADER = "Cartera-Event-Id"
DEFAULT_TOLERANCE_SECONDS = 300

log = logging.getLogger(__name__)


class WebhookSignatureError(Exception):
    """A webhook signature header is malformed, stale or does not match; ``code`` is stable."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = f"webhook.{code}"
        self.detail = detail or code
        super().__init__(f"{self.code}: {self.detail}")


def _as_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _mac(secret: str | bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(_as_bytes(secret), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``Cartera-Signature`` header value for ``body`` sent at ``timestamp`` (now by default)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={ts},v1={_mac(secret, body, ts)}"


def verify_webhook(
    secrets_: str | bytes | list[str | bytes],
    body: bytes,
    header: str | None,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> int:
    """Check a ``Cartera-Signature`` header over the raw ``body``; return its timestamp.

    ``secrets_`` may be one secret or several (during a rotation). Raises
    :class:`WebhookSignatureError` with code ``webhook.malformed``, ``webhook.stale`` or
    ``webhook.mismatch``.
    """
    if not header:
        raise WebhookSignatureError("malformed", "missing signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookSignatureError("malformed", "signature header items must be key=value")
        if key == "t":
            if not value.isdigit() or len(value) > 12:
                raise WebhookSignatureError("malformed", "bad timestamp")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookSignatureError("malformed", "signature header needs t= and v1=")
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookSignatureError("stale", "timestamp outside the tolerance window")
    keys = secrets_ if isinstance(secrets_, list) else [secrets_]
    for secret in keys:
        expected = _mac(secret, body, timestamp)
        for candidate in signatures:
            if hmac.compare_digest(expected.encode(), candidate.encode()):
                return timestamp
    raise WebhookSignatureError("mismatch", "signature does not match")


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of :func:`deliver_webhook`."""

    delivered: bool
    attempts: int
    status_code: int | None
    error: str | None


RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 60.0) -> float:
    """Delay before retry number ``attempt`` (1-based): full-jitter exponential backoff.

    Jitter spreads out retries of many receivers that failed at the same moment.
    """
    return random.uniform(0, min(cap, base * (2 ** (attempt - 1))))  # noqa: S311 - not a secret


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    """Seconds ``Retry-After`` asks for (capped), or ``None`` when absent or unreadable: the header is the
    receiver's to write, and nothing in it may stop a delivery round."""
    seconds = retry_after_seconds(response.headers)
    return None if seconds is None else min(cap, seconds)


#: How much of a receiver's answer is read: only its status and ``Retry-After`` matter. A small body is
#: read to its end (the connection can then serve the next delivery), a larger one is left unread.
ANSWER_READ_BYTES = 16 * 1024


async def _nothing() -> AsyncIterator[bytes]:  # an answer some transport already read (httpx.MockTransport)
    return
    yield b""


async def deliver_webhook(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    secret: str | bytes,
    *,
    event_id: str,
    max_attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    timeout: float | None = None,
    extra_headers: Mapping[str, str] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> DeliveryResult:
    """POST ``body`` (JSON) to ``url``, signed, retrying transient failures with exponential backoff.

    A 2xx answer is success. Network errors, timeouts and 408/425/429/5xx are retried up to
    ``max_attempts`` in total (honouring ``Retry-After`` up to ``max_delay``); any other status is final,
    since sending the same request again would get the same answer. Each attempt is signed afresh, so its
    timestamp is current. The URL and secret are never logged. ``timeout`` (seconds) overrides the
    client's own timeout, which otherwise applies (each service builds its client from its settings);
    an attempt ends within :data:`~service_kit.outbound.CALL_DEADLINE_FACTOR` times it.
    """
    status: int | None = None
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            SIGNATURE_HEADER: sign_webhook(secret, body),
            EVENT_ID_HEADER: event_id,
            **(extra_headers or {}),
        }
        delay: float | None = None
        try:
            # Each wait is bounded by the timeout, the whole attempt by a deadline: a receiver trickling
            # its answer would otherwise hold the delivery loop, and every other endpoint's events.
            async with asyncio.timeout(CALL_DEADLINE_FACTOR * (timeout or client.timeout.read or 5.0)), \
                    client.stream("POST", url, content=body, headers=headers,
                                  timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout) as response:
                # Streamed, and the body never decoded: a receiver's answer (a gzip that inflates to
                # gigabytes) must not cost more than a few kilobytes.
                read = 0
                async for chunk in (response.aiter_raw() if not response.is_stream_consumed else _nothing()):
                    read += len(chunk)
                    if read > ANSWER_READ_BYTES:
                        break
        except TimeoutError:
            status, error = None, "deadline exceeded"
        except httpx.HTTPError as exc:
            status, error = None, type(exc).__name__
        else:
            status = response.status_code
            if 200 <= status < 300:
                return DeliveryResult(True, attempt, status, None)
            error = f"HTTP {status}"
            if status not in RETRY_STATUSES:
                break
            delay = _retry_after(response, max_delay)
        if attempt < max_attempts:
            wait = delay if delay is not None else backoff_delay(attempt, base_delay, max_delay)
            log.info("webhook delivery failed, retrying", extra={"event_id": event_id, "attempt": attempt,
                                                                 "outcome": error, "retry_in": round(wait, 3)})
            await sleep(wait)
    log.warning("webhook delivery gave up", extra={"event_id": event_id, "outcome": error})
    return DeliveryResult(False, attempt, status, error)


class WebhookOutboxMixin:
    """Columns of a durable webhook outbox; a service declares ``class Outbox(WebhookOutboxMixin, Base)``.

    ``body`` is the exact JSON bytes to send (signed as is); ``endpoint_id`` points at the service's own
    table of endpoints (URL and secret, the secret sealed with ``SecretBox``).
    """

    __tablename__ = "webhook_outbox"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(64), index=True)
    event_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Index, ...]:  # noqa: N805 - SQLAlchemy passes the mapped class
        # Deliveries look for undelivered rows that are due. Delivered rows stay (the delivery record)
        # and keep a past next_attempt_at: indexed too, each round of every worker walked them all.
        # The retention purge reads the oldest rows by created_at.
        return (Index("ix_webhook_outbox_due", "next_attempt_at", postgresql_where=text("delivered_at IS NULL"),
                      sqlite_where=text("delivered_at IS NULL")),
                Index("ix_webhook_outbox_created_at", "created_at"))


#: ``next_attempt_at`` of a row that used up its attempts: never due again, so it lies past the range
#: every round reads (``next_attempt_at <= now`` in ``ix_webhook_outbox_due``). With a past time it
#: stayed in that range, and the rows an endpoint down for days gave up were read every round after.
GIVEN_UP = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


#: How long a finished outbox row (delivered, or given up) stays as the record of the delivery, for an
#: operator answering "did you send it?". Far longer than any row's retries (at most 50 attempts an hour
#: apart), so a row still being retried is never old enough; and far shorter than for ever: with webhooks
#: on, the table grew by one row per event with nothing to delete it.
OUTBOX_RETENTION = dt.timedelta(days=14)


def next_attempt_after(attempts: int, now: dt.datetime, base: float = 10.0, cap: float = 3600.0, *,
                       max_attempts: int | None = None) -> dt.datetime:
    """When an outbox row that failed ``attempts`` times is due again (exponential, capped, jittered);
    :data:`GIVEN_UP` once it has had ``max_attempts``."""
    if max_attempts is not None and attempts >= max_attempts:
        return GIVEN_UP
    return now + dt.timedelta(seconds=backoff_delay(attempts, base, cap) + base / 2)


def due_webhooks(model: type[WebhookOutboxMixin], now: dt.datetime, *, max_attempts: int = 12,
                 limit: int = 20) -> Select[tuple[str]]:
    """Ids of up to ``limit`` undelivered rows of ``model`` due at ``now``, the longest-waiting first:
    a range of ``ix_webhook_outbox_due``, which holds the undelivered rows only."""
    return (select(model.id)
            .where(model.delivered_at.is_(None), model.next_attempt_at <= now, model.attempts < max_attempts)
            .order_by(model.next_attempt_at).limit(limit))


async def claim_due_webhooks(
    session: AsyncSession,
    model: type[WebhookOutboxMixin],
    now: dt.datetime,
    *,
    lease: dt.timedelta = dt.timedelta(seconds=120),
    limit: int = 20,
    max_attempts: int = 12,
) -> list[Row[tuple[str, str, str, bytes, int]]]:
    """Lease up to ``limit`` due, undelivered rows for this worker; return ``(id, endpoint_id,
    event_type, body, attempts)`` of each.

    One ``WITH due AS MATERIALIZED (SELECT ... FOR UPDATE SKIP LOCKED) UPDATE ... RETURNING``: on PostgreSQL
    concurrent workers skip each other's rows instead of waiting; on SQLite writers are serialised. The
    lease moves ``next_attempt_at`` forward and counts the attempt, so a crashed worker's rows come back.
    """
    # A materialized CTE: run once. As an IN (subquery) PostgreSQL may rescan the subquery inside a
    # join, and each rescan with SKIP LOCKED can lease another ``limit`` rows.
    due = (due_webhooks(model, now, max_attempts=max_attempts, limit=limit).with_for_update(skip_locked=True)
           .cte("due").prefix_with("MATERIALIZED", dialect="postgresql"))
    stmt = (
        update(model)
        .where(model.id.in_(select(due.c.id)), model.next_attempt_at <= now, model.delivered_at.is_(None))
        .values(next_attempt_at=now + lease, attempts=model.attempts + 1)
        .returning(model.id, model.endpoint_id, model.event_type, model.body, model.attempts)
    )
    result = await session.execute(stmt)
    return list(result.all())


async def record_delivery(
    session: AsyncSession,
    model: type[WebhookOutboxMixin],
    row_id: str,
    result: DeliveryResult,
    now: dt.datetime,
    *,
    attempts: int,
    max_attempts: int | None = None,
) -> None:
    """Store the outcome of delivering a claimed row: delivered, or due again after a backoff (never
    again after ``max_attempts``)."""
    values: dict[str, object] = {"last_error": result.error}
    if result.delivered:
        values["delivered_at"] = now
    else:
        values["next_attempt_at"] = next_attempt_after(attempts, now, max_attempts=max_attempts)
    await session.execute(update(model).where(model.id == row_id).values(**values))


def finished_webhooks(model: type[WebhookOutboxMixin], before: dt.datetime, *, max_attempts: int,
                      limit: int) -> Select[tuple[str]]:
    """Ids of up to ``limit`` rows of ``model`` created before ``before`` and finished (delivered, or
    given up), the oldest first: a range of ``ix_webhook_outbox_created_at``."""
    return (select(model.id)
            .where(model.created_at < before, model.delivered_at.is_not(None) | (model.next_attempt_at == GIVEN_UP)
                   # given up before GIVEN_UP existed (or under a lower max_attempts)
                   | (model.attempts >= max_attempts))
            .order_by(model.created_at).limit(limit))


async def purge_finished_webhooks(
    session: Callable[[], contextlib.AbstractAsyncContextManager[AsyncSession]],
    model: type[WebhookOutboxMixin],
    now: dt.datetime,
    *,
    max_attempts: int,
    retention: dt.timedelta = OUTBOX_RETENTION,
    batch: int = 5000,
) -> int:
    """Delete the finished rows of ``model`` older than ``retention``, ``batch`` rows per transaction
    (``session()`` opens one that commits on exit); returns how many.

    Batches keep each transaction short on the first purge of a table that grew for months."""
    deleted = 0
    while True:
        # The ids first, then a delete by primary key: as one DELETE ... IN (subquery) PostgreSQL may
        # hash-join the batch against a scan of the whole table.
        async with session() as s:
            ids = list((await s.scalars(finished_webhooks(model, now - retention, max_attempts=max_attempts,
                                                          limit=batch))).all())
            if ids:
                await s.execute(delete(model).where(model.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            return deleted
