"""Two issuer workers never poll one deferred Aries exchange at once, and a poll that lost its lease
does not fail an exchange another worker took over (and may be offering).

``poll_due`` read the time once per sweep and leased each exchange it reached to that time plus the
lease: after slow polls the later ones were leased into the past, and another worker's sweep polled
them too. And a failed poll marked its exchange ``failed`` whatever its state: over the ``offered`` of
the worker that polled it since, or under it while that worker was offering. A poll renews its lease
while it runs (the heartbeat): a slow source does not lose its exchange to another worker's sweep, and
the heartbeat ends with the poll.

The clock (``issuer.aries_channel.utcnow``) and the polls (``_poll_one``) are the test's; no agent runs.
The heartbeat beats in real time (every third of a lease shortened to :data:`LEASE`) and renews the
lease from the test's clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import issuer.aries_channel as aries_channel
from aries.errors import AriesError
from issuer.aries_channel import IssuerAriesChannel, deferred_key
from issuer.aries_models import AriesExchange
from issuer.models import DeferredTransaction
from tests.issuer.races import add_tenant, issuer_settings, running_issuer

pytestmark = pytest.mark.anyio

T0 = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
#: Longer than any lease: a worker paused this long has lost its claim.
STALL = dt.timedelta(hours=1)
SUBJECT = {"identifier": "12345678Z", "name": "Titular"}
#: The poll lease of the heartbeat tests (``aries_poll_lease``, its smallest value): a beat every 1/6 s.
LEASE = 0.5
#: Longest wait for one heartbeat (a beat comes every third of :data:`LEASE`): a guard, not a pace.
BEAT_WAIT = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


async def _pending(ctx: Any, count: int) -> list[str]:
    """``count`` deferred exchanges, due (their next poll a second ago), each with its source reference."""
    tenant = await add_tenant(ctx)
    ids = [f"ax{i}" for i in range(count)]
    async with ctx.session() as session:
        for n, exchange_id in enumerate(ids):
            session.add(AriesExchange(
                id=exchange_id, tenant_id=tenant.id, type_id="padro", proof_type="Ed25519Signature2020",
                subject=SUBJECT, short_code_hash=f"code-{n}", invitation_msg_id=f"msg-{n}", invitation={},
                invitation_url="https://example/i", state="pending", connection_id=f"conn-{n}", created_at=T0,
                expires_at=T0 - dt.timedelta(seconds=1, microseconds=-n), updated_at=T0))
            session.add(DeferredTransaction(
                transaction_hash=deferred_key(exchange_id), tenant_id=tenant.id, token_hash="aries",
                configuration_id="padro", credential_id=f"c_{n}", source_reference=f"ref-{n}", subject=SUBJECT,
                selector=None, login={"method": "operator", "channel": "aries", "exchange_id": exchange_id},
                holder_jwks=[], request_id=f"ref-{n}", offer_id=None, created_at=T0,
                expires_at=T0 + dt.timedelta(days=30), sealed_response=None, dpop_jkt=None))
    return ids


def _channels(ctx: Any) -> tuple[IssuerAriesChannel, IssuerAriesChannel]:
    workers = IssuerAriesChannel(ctx), IssuerAriesChannel(ctx)
    for channel in workers:
        channel.runtime = object()  # type: ignore[assignment] - "an agent runs": the polls are the test's
    return workers


async def _exchange(ctx: Any, exchange_id: str) -> tuple[AriesExchange, bool]:
    async with ctx.db.read_session() as session:
        row = await session.get(AriesExchange, exchange_id)
        deferral = await session.scalar(select(DeferredTransaction.transaction_hash).where(
            DeferredTransaction.transaction_hash == deferred_key(exchange_id)))
    return row, deferral is not None


async def test_exchanges_reached_late_in_a_slow_sweep_are_not_polled_twice(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(aries_channel, "utcnow", clock)
    async with running_issuer(issuer_settings(database_url, tmp_path)) as (ctx, _):
        ids = await _pending(ctx, 6)
        a, b = _channels(ctx)
        polling: set[str] = set()
        polled: list[tuple[str, str]] = []
        twice: list[str] = []
        b_ran = False

        async def poll_one(self: IssuerAriesChannel, exchange_id: str, *_: Any) -> None:
            nonlocal b_ran
            worker = "A" if self is a else "B"
            if exchange_id in polling:
                twice.append(exchange_id)  # (an error here would be taken for the poll's own)
            polled.append((worker, exchange_id))
            if worker == "A":
                polling.add(exchange_id)
                clock.now += dt.timedelta(seconds=15)  # a slow source, well within the lease
                if clock.now - T0 >= aries_channel.POLL_LEASE and not b_ran:
                    b_ran = True  # the other worker's sweep, a minute into this one
                    await b.poll_due()
                polling.discard(exchange_id)
            # The source answered and the credential was offered: nothing left to poll.
            await self._mark_offered(exchange_id, f"cx-{exchange_id}", f"th-{exchange_id}", f"c-{exchange_id}")

        monkeypatch.setattr(IssuerAriesChannel, "_poll_one", poll_one)
        await a.poll_due()
    assert b_ran
    assert twice == [], polled
    assert sorted(e for _, e in polled) == ids, polled


async def test_a_poll_past_its_lease_does_not_fail_the_exchange_another_worker_offers(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(aries_channel, "utcnow", clock)
    async with running_issuer(issuer_settings(database_url, tmp_path)) as (ctx, _):
        (exchange_id,) = await _pending(ctx, 1)
        a, b = _channels(ctx)
        a_stalled, b_polling, a_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        seen_after_a: list[tuple[str, bool]] = []
        offered: list[bool] = []

        async def poll_one(self: IssuerAriesChannel, polled_id: str, *_: Any) -> None:
            if self is a:
                clock.now += STALL  # paused past its lease: B polls the exchange meanwhile; A's source then fails
                a_stalled.set()
                await b_polling.wait()
                raise AriesError("source_refused", "the data source refused")
            b_polling.set()
            await a_done.wait()  # B got the data and offers while A's failure is handled
            offered.append(await self._mark_offered(polled_id, "cred-ex-1", "thread-1", "c_0"))

        monkeypatch.setattr(IssuerAriesChannel, "_poll_one", poll_one)

        async def worker_a() -> None:
            await a.poll_due()
            row, deferral = await _exchange(ctx, exchange_id)
            seen_after_a.append((row.state, deferral))
            a_done.set()

        async def worker_b() -> None:
            await a_stalled.wait()
            await b.poll_due()

        async with asyncio.timeout(60):  # a guard against a hang, not the assertion
            await asyncio.gather(worker_a(), worker_b())
        row, deferral = await _exchange(ctx, exchange_id)
    assert seen_after_a == [("pending", True)]  # left to B, its source reference kept
    assert offered == [True]
    assert (row.state, row.error, row.cred_ex_id, deferral) == ("offered", None, "cred-ex-1", False)


async def _beat(ctx: Any, clock: Clock, exchange_id: str) -> bool:
    """Half a lease passes on the clock; then wait for the poll's heartbeat to renew the exchange's lease
    from there (a lease ending later than any written before the clock moved). False: no renewal came
    within :data:`BEAT_WAIT` seconds."""
    clock.now += dt.timedelta(seconds=LEASE / 2)
    written_before = clock.now + dt.timedelta(seconds=LEASE / 2)  # the latest a renewal before could reach
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BEAT_WAIT
    while loop.time() < deadline:
        row, _ = await _exchange(ctx, exchange_id)
        if row.expires_at > written_before:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_poll_slower_than_its_lease_keeps_its_exchange_while_it_runs(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A's source takes two leases to answer. Its heartbeat renews the lease every third of it, so B's
    sweep in the meantime finds nothing due, and A still holds the exchange when it offers. Without the
    heartbeat B re-claims the exchange A is still polling (and A, its lease taken, may not offer)."""
    clock = Clock()
    monkeypatch.setattr(aries_channel, "utcnow", clock)
    async with running_issuer(issuer_settings(database_url, tmp_path, aries_poll_lease=LEASE)) as (ctx, _):
        (exchange_id,) = await _pending(ctx, 1)
        a, b = _channels(ctx)
        beats: list[bool] = []
        b_polled: list[str] = []
        a_offered: list[bool] = []

        async def poll_one(self: IssuerAriesChannel, polled_id: str, lease: Any) -> None:
            if self is b:
                b_polled.append(polled_id)
                return
            for _ in range(4):  # a slow source: two leases in steps of half of one
                if all(beats):
                    beats.append(await _beat(ctx, clock, polled_id))
                else:  # past a missed beat, the clock goes on without waiting for beats that will not come
                    clock.now += dt.timedelta(seconds=LEASE / 2)
            assert clock.now > T0 + dt.timedelta(seconds=LEASE)  # the lease taken at the claim is over
            await b.poll_due()  # another worker's sweep, while A's poll runs
            await self._claim_for_offer(lease)  # what a poll whose source answered does before offering
            a_offered.append(await self._mark_offered(polled_id, "cred-ex-1", "thread-1", "c_0"))

        monkeypatch.setattr(IssuerAriesChannel, "_poll_one", poll_one)
        async with asyncio.timeout(60):  # a guard against a hang, not the assertion
            assert await a.poll_due() == 1
        row, deferral = await _exchange(ctx, exchange_id)
    assert b_polled == [], "another worker polled an exchange whose poll was still running"
    assert beats == [True] * 4
    assert a_offered == [True]
    assert (row.state, row.cred_ex_id, deferral) == ("offered", "cred-ex-1", False)


@pytest.mark.parametrize("ending", ["finished", "cancelled"])
async def test_the_heartbeat_ends_with_its_poll(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str) -> None:
    """Once a poll has returned (its source answered pending: rescheduled), or was cancelled (a worker
    shutting down: the exchange handed back), its heartbeat task is over, and the exchange's next poll
    stays where the poll put it while another poll's heartbeat, which shares the channel, beats twice."""
    clock = Clock()
    monkeypatch.setattr(aries_channel, "utcnow", clock)
    async with running_issuer(issuer_settings(database_url, tmp_path, aries_poll_lease=LEASE)) as (ctx, _):
        first, second = await _pending(ctx, 2)
        (a, _b) = _channels(ctx)
        keepers: list[asyncio.Task[Any]] = []
        real_keep_lease = IssuerAriesChannel._keep_lease

        async def keep_lease(self: IssuerAriesChannel, lease: Any) -> None:
            task = asyncio.current_task()
            assert task is not None
            keepers.append(task)
            await real_keep_lease(self, lease)

        beats: dict[str, list[bool]] = {first: [], second: []}
        blocked = asyncio.Event()

        async def poll_one(self: IssuerAriesChannel, polled_id: str, lease: Any) -> None:
            if polled_id == second:
                beats[second] += [await _beat(ctx, clock, second), await _beat(ctx, clock, second)]
                await self._reschedule(polled_id, 0, lease)
                return
            beats[first].append(await _beat(ctx, clock, first))  # the heartbeat runs: there is one to end
            if ending == "finished":
                await self._reschedule(polled_id, 0, lease)  # as for a source that answered pending
                return
            blocked.set()
            await asyncio.Event().wait()  # the source has not answered when the worker shuts down

        monkeypatch.setattr(IssuerAriesChannel, "_keep_lease", keep_lease)
        monkeypatch.setattr(IssuerAriesChannel, "_poll_one", poll_one)
        async with asyncio.timeout(60):  # a guard against a hang, not the assertion
            if ending == "finished":
                assert await a.poll_due(limit=1) == 1
            else:
                sweep = asyncio.create_task(a.poll_due(limit=1))
                await blocked.wait()
                sweep.cancel()
                await asyncio.wait([sweep], timeout=BEAT_WAIT)
                assert sweep.cancelled(), "the cancelled poll did not end: it waits for its heartbeat"
            assert beats[first] == [True], "no heartbeat ran during the poll"
            assert len(keepers) == 1 and keepers[0].done(), "the heartbeat outlived its poll"
            after_poll, _ = await _exchange(ctx, first)
            # Rescheduled or handed back, in both cases to the next poll's time (the deferred interval).
            assert after_poll.expires_at == clock.now + dt.timedelta(seconds=ctx.settings.deferred_interval)
            # The next sweep polls the other exchange: a heartbeat that beats twice meanwhile, whereas
            # the first exchange's lease stays as the first poll left it.
            assert await a.poll_due(limit=1) == 1
        later, _ = await _exchange(ctx, first)
    assert beats[second] == [True, True]
    assert later.expires_at == after_poll.expires_at
    assert len(keepers) == 2 and all(task.done() for task in keepers)
