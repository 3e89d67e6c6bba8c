"""Two issuer workers never send one webhook event at once, however slow the receivers.

A round used to read the time once and lease every row it reached to that time plus the lease: after a
minute of slow deliveries the next rows were leased into the past, and another worker sent them too,
while the first was sending them. And a worker whose lease had run out recorded its outcome over the
claim another worker had made since (a failure moved the row's next attempt to a few seconds away,
where a third worker took it while the second was still sending it).

The clock is the test's (``issuer.events.utcnow``), and the deliveries are the test's: a worker's
"slow" delivery moves the clock on and lets the other worker run a round meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from issuer import events
from issuer.models import WebhookEndpoint, WebhookOutbox
from service_kit.webhooks import DeliveryResult
from tests.issuer.races import add_tenant, issuer_settings, running_issuer

pytestmark = pytest.mark.anyio

T0 = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
#: Longer than any lease: a worker paused this long has lost its claim.
STALL = dt.timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


async def _outbox(ctx: Any, rows: int) -> list[str]:
    tenant = await add_tenant(ctx)
    async with ctx.session() as session:
        session.add(WebhookEndpoint(id="hook", tenant_id=tenant.id, url="https://receiver.example/hook", events=[],
                                    created_at=T0, sealed_secret=ctx.box.seal(b"secret", b"issuer:webhook:hook")))
        await session.flush()
        ids = [f"evt{i}" for i in range(rows)]
        session.add_all(WebhookOutbox(id=i, endpoint_id="hook", event_type="credential.issued", body=b"{}", attempts=0,
                                      created_at=T0, next_attempt_at=T0 - dt.timedelta(seconds=1, microseconds=-n),
                                      tenant_id=tenant.id)
                        for n, i in enumerate(ids))
    return ids


async def _rows(ctx: Any) -> dict[str, WebhookOutbox]:
    async with ctx.db.read_session() as session:
        return {r.id: r for r in (await session.execute(select(WebhookOutbox))).scalars()}


async def test_rows_reached_late_in_a_slow_round_are_not_sent_twice(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(events, "utcnow", clock)
    async with running_issuer(issuer_settings(database_url, tmp_path)) as (ctx, _):
        ids = await _outbox(ctx, 6)
        a, b = ctx, dataclasses.replace(ctx, http=object())
        slow = dt.timedelta(seconds=15)  # under the delivery deadline (4 x webhook_timeout = 20 s)
        sending: set[str] = set()
        sent: list[tuple[str, str]] = []
        twice: list[str] = []
        b_ran = False

        async def deliver(client: Any, url: str, body: bytes, secret: Any, *, event_id: str, **_: Any) -> DeliveryResult:
            nonlocal b_ran
            worker = "A" if client is a.http else "B"
            if event_id in sending:
                twice.append(event_id)  # (an assertion here would be logged and swallowed by the round)
            sent.append((worker, event_id))
            if worker == "A":
                sending.add(event_id)
                clock.now += slow
                if clock.now - T0 >= events.LEASE and not b_ran:
                    b_ran = True  # the other worker's round, a minute into this one
                    await events.deliver_due(b)
                sending.discard(event_id)
            return DeliveryResult(True, 1, 200, None)

        monkeypatch.setattr(events, "deliver_webhook", deliver)
        await events.deliver_due(a)
        rows = await _rows(ctx)
    assert b_ran
    assert twice == [], sent
    assert sorted(e for _, e in sent) == ids, sent
    assert all(rows[i].delivered_at is not None and rows[i].attempts == 1 for i in ids)


async def test_a_worker_past_its_lease_does_not_record_over_the_next_claim(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(events, "utcnow", clock)
    async with running_issuer(issuer_settings(database_url, tmp_path)) as (ctx, _):
        await _outbox(ctx, 1)
        a, b, c = ctx, dataclasses.replace(ctx, http=object()), dataclasses.replace(ctx, http=object())
        names = {id(a.http): "A", id(b.http): "B", id(c.http): "C"}
        a_stalled, b_sending, a_recorded = asyncio.Event(), asyncio.Event(), asyncio.Event()
        sent: list[str] = []

        async def deliver(client: Any, url: str, body: bytes, secret: Any, *, event_id: str, **_: Any) -> DeliveryResult:
            worker = names[id(client)]
            sent.append(worker)
            if worker == "A":
                # Stalled past its lease (a paused process): B claims the row meanwhile; A then fails.
                clock.now += STALL
                a_stalled.set()
                await b_sending.wait()
                return DeliveryResult(False, 1, 500, "HTTP 500")
            if worker == "B":
                b_sending.set()
                await a_recorded.wait()  # still sending when A records its outcome, and when C looks
            return DeliveryResult(True, 1, 200, None)

        monkeypatch.setattr(events, "deliver_webhook", deliver)

        async def worker_a() -> None:
            await events.deliver_due(a)
            clock.now += dt.timedelta(seconds=10)  # past any retry A's failure could have scheduled
            await events.deliver_due(c)
            a_recorded.set()

        async def worker_b() -> None:
            await a_stalled.wait()
            await events.deliver_due(b)

        async with asyncio.timeout(60):  # a guard against a hang, not the assertion
            await asyncio.gather(worker_a(), worker_b())
        row = (await _rows(ctx))["evt0"]
    assert sent == ["A", "B"], sent  # C found nothing due: B's lease was left alone
    assert row.delivered_at is not None and row.attempts == 2 and row.last_error is None
