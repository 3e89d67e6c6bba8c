"""Two verifier workers never send one webhook delivery at once, however slow the receivers.

As in the issuer (``tests/issuer/test_webhook_lease.py``): a round leased every row from the time it
began, so after a minute of slow deliveries its later rows were leased into the past and another worker
sent them too; and a worker past its lease recorded its outcome over another worker's claim. The clock
(``verifier.worker.utcnow``) and the deliveries are the test's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service_kit.crypto import SecretBox
from service_kit.db import Database
from service_kit.migrations import run_migrations
from service_kit.webhooks import DeliveryResult
from verifier import worker
from verifier.models import Agency, WebhookOutbox

pytestmark = pytest.mark.anyio

MIGRATIONS = Path(__file__).resolve().parents[2] / "verifier" / "migrations"
T0 = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
#: Longer than any lease: a worker paused this long has lost its claim.
STALL = dt.timedelta(hours=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


async def _outbox(database_url: str, box: SecretBox, rows: int) -> tuple[Database, list[str]]:
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    db = Database(database_url)
    ids = [f"d{i}" for i in range(rows)]
    async with db.session() as session:
        session.add(Agency(id="agency", slug="agency", name="Agency", signing_key=b"\0", x5c=[],
                           webhook_secret=box.seal(b"secret", b"agency:agency:webhook"), created_at=T0))
        await session.flush()
        session.add_all(WebhookOutbox(id=i, endpoint_id="agency", url="https://receiver.example/hook", event_type="e",
                                      body=b"{}", attempts=0, created_at=T0,
                                      next_attempt_at=T0 - dt.timedelta(seconds=1, microseconds=-n))
                        for n, i in enumerate(ids))
    return db, ids


async def _rows(db: Database) -> dict[str, WebhookOutbox]:
    async with db.read_session() as session:
        return {r.id: r for r in (await session.execute(select(WebhookOutbox))).scalars()}


async def _body(db: Database, box: SecretBox, stored: bytes) -> bytes:
    return stored


async def test_rows_reached_late_in_a_slow_round_are_not_sent_twice(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, box = Clock(), SecretBox(os.urandom(32))
    monkeypatch.setattr(worker, "utcnow", clock)
    monkeypatch.setattr(worker, "webhook_body", _body)
    db, ids = await _outbox(database_url, box, 6)
    sending: set[str] = set()
    sent: list[tuple[str, str]] = []
    twice: list[str] = []
    b_ran = False
    try:
        async with httpx.AsyncClient(timeout=5) as a, httpx.AsyncClient(timeout=5) as b:

            async def deliver(client: Any, url: str, body: bytes, secret: Any, *, event_id: str,
                              **_: Any) -> DeliveryResult:
                nonlocal b_ran
                name = "A" if client is a else "B"
                if event_id in sending:
                    twice.append(event_id)
                sent.append((name, event_id))
                if name == "A":
                    sending.add(event_id)
                    clock.now += dt.timedelta(seconds=15)  # under the delivery deadline (4 x 5 s)
                    if clock.now - T0 >= worker.LEASE and not b_ran:
                        b_ran = True  # the other worker's round, a minute into this one
                        await worker.deliver_due(db, box, b)
                    sending.discard(event_id)
                return DeliveryResult(True, 1, 200, None)

            monkeypatch.setattr(worker, "deliver_webhook", deliver)
            await worker.deliver_due(db, box, a)
        rows = await _rows(db)
    finally:
        await db.dispose()
    assert b_ran
    assert twice == [], sent
    assert sorted(e for _, e in sent) == ids, sent
    assert all(rows[i].delivered_at is not None and rows[i].attempts == 1 for i in ids)


async def test_a_worker_past_its_lease_does_not_record_over_the_next_claim(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, box = Clock(), SecretBox(os.urandom(32))
    monkeypatch.setattr(worker, "utcnow", clock)
    monkeypatch.setattr(worker, "webhook_body", _body)
    db, _ = await _outbox(database_url, box, 1)
    a_stalled, b_sending, a_recorded = asyncio.Event(), asyncio.Event(), asyncio.Event()
    sent: list[str] = []
    try:
        async with httpx.AsyncClient() as a, httpx.AsyncClient() as b, httpx.AsyncClient() as c:
            names = {id(a): "A", id(b): "B", id(c): "C"}

            async def deliver(client: Any, url: str, body: bytes, secret: Any, *, event_id: str,
                              **_: Any) -> DeliveryResult:
                name = names[id(client)]
                sent.append(name)
                if name == "A":
                    clock.now += STALL  # paused past its lease: B claims the row meanwhile; A then fails
                    a_stalled.set()
                    await b_sending.wait()
                    return DeliveryResult(False, 1, 500, "HTTP 500")
                if name == "B":
                    b_sending.set()
                    await a_recorded.wait()  # still sending when A records its outcome, and when C looks
                return DeliveryResult(True, 1, 200, None)

            monkeypatch.setattr(worker, "deliver_webhook", deliver)

            async def worker_a() -> None:
                await worker.deliver_due(db, box, a)
                clock.now += dt.timedelta(seconds=10)  # past any retry A's failure could have scheduled
                await worker.deliver_due(db, box, c)
                a_recorded.set()

            async def worker_b() -> None:
                await a_stalled.wait()
                await worker.deliver_due(db, box, b)

            async with asyncio.timeout(60):  # a guard against a hang, not the assertion
                await asyncio.gather(worker_a(), worker_b())
        row = (await _rows(db))["d0"]
    finally:
        await db.dispose()
    assert sent == ["A", "B"], sent  # C found nothing due: B's lease was left alone
    assert row.delivered_at is not None and row.attempts == 2 and row.last_error is None
