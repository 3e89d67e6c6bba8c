"""The webhook outbox: concurrent workers lease disjoint due rows; outcomes are recorded."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from service_kit.db import Database
from service_kit.webhooks import (
    GIVEN_UP,
    OUTBOX_RETENTION,
    DeliveryResult,
    claim_due_webhooks,
    purge_finished_webhooks,
    record_delivery,
)
from tests.service_kit.sample_models import Base, Outbox


def test_workers_claim_disjoint_rows_and_record_outcomes(database_url: str) -> None:
    now = dt.datetime.now(dt.UTC)

    async def scenario() -> None:
        first, second = Database(database_url), Database(database_url)
        try:
            await first.create_all(Base.metadata)
            async with first.session() as s:
                for i in range(30):
                    s.add(Outbox(id=f"due-{i}", endpoint_id="ep", event_type="t", body=b"{}", attempts=0,
                                 created_at=now, next_attempt_at=now - dt.timedelta(seconds=i)))
                for i in range(5):
                    s.add(Outbox(id=f"later-{i}", endpoint_id="ep", event_type="t", body=b"{}", attempts=0,
                                 created_at=now, next_attempt_at=now + dt.timedelta(minutes=5)))
                s.add(Outbox(id="done", endpoint_id="ep", event_type="t", body=b"{}", attempts=1,
                             created_at=now, next_attempt_at=now, delivered_at=now))

            async def claim(db: Database) -> list[str]:
                async with db.session() as s:
                    return [row.id for row in await claim_due_webhooks(s, Outbox, now, limit=20)]

            a, b = await asyncio.gather(claim(first), claim(second))
            assert not set(a) & set(b)
            assert set(a) | set(b) == {f"due-{i}" for i in range(30)}
            assert len(a) <= 20 and len(b) <= 20
            async with first.session() as s:
                assert await claim_due_webhooks(s, Outbox, now) == []  # all leased

            async with first.session() as s:
                await record_delivery(s, Outbox, "due-0", DeliveryResult(True, 1, 200, None), now, attempts=1)
                await record_delivery(s, Outbox, "due-1", DeliveryResult(False, 5, 503, "HTTP 503"), now, attempts=1)
            async with first.read_session() as s:
                rows = {r.id: r for r in (await s.execute(select(Outbox))).scalars()}
            assert rows["due-0"].delivered_at == now and rows["due-0"].attempts == 1
            assert rows["due-1"].delivered_at is None and rows["due-1"].last_error == "HTTP 503"
            assert rows["due-1"].next_attempt_at > now
            # After the lease, an undelivered row is due again.
            async with first.session() as s:
                again = await claim_due_webhooks(s, Outbox, now + dt.timedelta(hours=2), limit=100)
            ids = {row.id for row in again}
            assert "due-1" in ids and "due-0" not in ids and "done" not in ids
            assert {f"later-{i}" for i in range(5)} <= ids
        finally:
            await first.dispose()
            await second.dispose()

    asyncio.run(scenario())


def test_a_row_that_used_up_its_attempts_is_never_due_again(database_url: str) -> None:
    """Recorded with its last attempt failed, a row leaves every round's range for good (``GIVEN_UP``);
    one attempt earlier it is due again after a backoff."""
    now = dt.datetime.now(dt.UTC)

    async def scenario() -> dict[str, dt.datetime]:
        db = Database(database_url)
        try:
            await db.create_all(Base.metadata)
            async with db.session() as s:
                for row_id in ("last-try", "one-more"):
                    s.add(Outbox(id=row_id, endpoint_id="ep", event_type="t", body=b"{}", attempts=0,
                                 created_at=now, next_attempt_at=now))
            failed = DeliveryResult(False, 1, 503, "HTTP 503")
            async with db.session() as s:
                await record_delivery(s, Outbox, "last-try", failed, now, attempts=12, max_attempts=12)
                await record_delivery(s, Outbox, "one-more", failed, now, attempts=11, max_attempts=12)
            async with db.read_session() as s:
                return {r.id: r.next_attempt_at for r in (await s.execute(select(Outbox))).scalars()}
        finally:
            await db.dispose()

    due = asyncio.run(scenario())
    assert due["last-try"] == GIVEN_UP
    assert now < due["one-more"] < now + dt.timedelta(hours=2)


def test_finished_rows_are_purged_after_the_retention_and_nothing_else(database_url: str) -> None:
    """Delivered and given-up rows go once ``OUTBOX_RETENTION`` old, in batches; a row still owed a
    delivery stays whatever its age, and so do the recent records."""
    now = dt.datetime.now(dt.UTC)
    old = now - OUTBOX_RETENTION - dt.timedelta(minutes=1)
    recent = now - OUTBOX_RETENTION + dt.timedelta(minutes=1)

    def row(row_id: str, created: dt.datetime, *, delivered: bool = False, attempts: int = 1,
            next_attempt_at: dt.datetime | None = None) -> Outbox:
        return Outbox(id=row_id, endpoint_id="ep", event_type="t", body=b"{}", attempts=attempts, created_at=created,
                      next_attempt_at=next_attempt_at or created, delivered_at=created if delivered else None)

    async def scenario() -> tuple[int, int, set[str]]:
        db = Database(database_url)
        try:
            await db.create_all(Base.metadata)
            async with db.session() as s:
                s.add_all([row(f"old-delivered-{i}", old - dt.timedelta(seconds=i), delivered=True) for i in range(7)])
                s.add(row("old-given-up", old, attempts=12, next_attempt_at=GIVEN_UP))
                # Given up before GIVEN_UP existed: a past next_attempt_at, its attempts used up.
                s.add(row("old-given-up-earlier", old, attempts=12))
                # Given up under a lower limit than today's (an operator raised webhook_max_attempts).
                s.add(row("old-given-up-lower-limit", old, attempts=5, next_attempt_at=GIVEN_UP))
                s.add(row("old-still-owed", old, attempts=3, next_attempt_at=now + dt.timedelta(hours=1)))
                s.add(row("recent-delivered", recent, delivered=True))
                s.add(row("recent-given-up", recent, attempts=12, next_attempt_at=GIVEN_UP))
            deleted = await purge_finished_webhooks(db.session, Outbox, now, max_attempts=12, batch=3)
            again = await purge_finished_webhooks(db.session, Outbox, now, max_attempts=12, batch=3)
            async with db.read_session() as s:
                left = set((await s.scalars(select(Outbox.id))).all())
            return deleted, again, left
        finally:
            await db.dispose()

    deleted, again, left = asyncio.run(scenario())
    assert deleted == 10 and again == 0
    assert left == {"old-still-owed", "recent-delivered", "recent-given-up"}
