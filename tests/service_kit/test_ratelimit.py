"""The database-backed rate limiter: GCRA semantics, atomicity across workers, hashed keys, cleanup,
client addresses behind proxies, and the services' migrations creating its table."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text
from starlette.requests import Request

from service_kit.db import Database, make_base
from service_kit.errors import APIError
from service_kit.migrations import run_migrations
from service_kit.ratelimit import (
    Limit,
    RateLimiter,
    RateLimitExceeded,
    RateLimitMixin,
    client_address,
    enforce,
    parse_rate,
    rate_limit_responses,
)
from tests.support.postgres import PostgresCluster

Base = make_base()


class Bucket(RateLimitMixin, Base):
    """The table as a service declares it."""


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def _fresh(url: str) -> Database:
    db = Database(url)
    await db.create_all(Base.metadata)
    return db


def test_burst_then_refusal_with_retry_after_then_refill(database_url: str) -> None:
    async def scenario() -> None:
        db = await _fresh(database_url)
        clock = Clock()
        limiter = RateLimiter(db, Bucket, secret=b"s", clock=clock)
        limit = Limit("t", 3, 30.0)  # 3 at once, one more every 10 s
        try:
            for _ in range(3):
                assert (await limiter.hit([(limit, "1.2.3.4")])).allowed
            refused = await limiter.hit([(limit, "1.2.3.4")])
            assert not refused.allowed and refused.limit == "t" and refused.retry_after == 10
            # A refused hit costs nothing: after 9 s it is still 1 s to wait, after 10 s one fits.
            clock.now += 9
            assert (await limiter.hit([(limit, "1.2.3.4")])).retry_after == 1
            clock.now += 1
            assert (await limiter.hit([(limit, "1.2.3.4")])).allowed
            assert not (await limiter.hit([(limit, "1.2.3.4")])).allowed
            # Another identity has its own bucket; a long pause refills to the full burst, not beyond.
            assert (await limiter.hit([(limit, "5.6.7.8")])).allowed
            clock.now += 3600
            assert all([(await limiter.hit([(limit, "1.2.3.4")])).allowed for _ in range(3)])
            assert not (await limiter.hit([(limit, "1.2.3.4")])).allowed
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_concurrent_hits_from_two_workers_never_exceed_the_burst(database_url: str) -> None:
    async def scenario() -> list[bool]:
        # Two Database objects with their own pools, as two worker processes would have.
        first, second = await _fresh(database_url), Database(database_url)
        clock = Clock()
        limiters = [RateLimiter(db, Bucket, secret=b"same", clock=clock) for db in (first, second)]
        limit = Limit("c", 10, 3600.0)
        try:
            decisions = await asyncio.gather(*(limiters[i % 2].hit([(limit, "k")]) for i in range(40)))
            return [d.allowed for d in decisions]
        finally:
            await first.dispose()
            await second.dispose()

    allowed = asyncio.run(scenario())
    assert allowed.count(True) == 10


def test_one_statement_charges_every_bucket_and_reports_the_longest_wait(database_url: str) -> None:
    async def scenario() -> None:
        db = await _fresh(database_url)
        clock = Clock()
        limiter = RateLimiter(db, Bucket, clock=clock)
        client, code = Limit("client", 5, 50.0), Limit("code", 1, 60.0)
        try:
            assert (await limiter.hit([(client, "ip"), (code, "c1")])).allowed
            refused = await limiter.hit([(client, "ip"), (code, "c1")])
            assert not refused.allowed and refused.limit == "code" and refused.retry_after == 60
            # The client bucket was charged by both requests (2 of 5 used): 3 more fit, then no.
            for n in range(3):
                assert (await limiter.hit([(client, "ip"), (code, f"other{n}")])).allowed
            assert (await limiter.hit([(client, "ip")])).limit == "client"
            # Disabled limits and missing identities are skipped, not counted.
            assert (await limiter.hit([(Limit("off", 0, 1.0), "ip"), (code, None), (code, "")])).allowed
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_blocked_looks_without_charging_and_cost_counts_several_hits(database_url: str) -> None:
    async def scenario() -> None:
        db = await _fresh(database_url)
        clock = Clock()
        limiter = RateLimiter(db, Bucket, clock=clock)
        failures = Limit("failures", 2, 20.0)
        try:
            for _ in range(5):
                assert (await limiter.blocked([(failures, "offer")])).allowed
            assert (await limiter.hit([(failures, "offer")], cost=2)).allowed
            blocked = await limiter.blocked([(failures, "offer")])
            assert not blocked.allowed and blocked.retry_after == 10
            with pytest.raises(RateLimitExceeded) as info:
                await limiter.check([(failures, "offer")])
            assert info.value.retry_after == 10 and info.value.limit == "failures"
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_hit_and_peek_charges_one_list_and_only_reads_the_other(database_url: str) -> None:
    async def scenario() -> None:
        db = await _fresh(database_url)
        clock = Clock()
        limiter = RateLimiter(db, Bucket, clock=clock)
        requests, failures = Limit("requests", 3, 30.0), Limit("failures", 1, 60.0)
        try:
            # Peeking never charges: the failure bucket stays empty however often it is read.
            for _ in range(3):
                charged, peeked = await limiter.hit_and_peek([(requests, "ip")], [(failures, "ip")])
                assert charged.allowed and peeked.allowed
            charged, peeked = await limiter.hit_and_peek([(requests, "ip")], [(failures, "ip")])
            assert not charged.allowed and charged.limit == "requests" and peeked.allowed
            assert (await limiter.hit([(failures, "ip")])).allowed  # a failed guess is charged apart
            clock.now += 10.0  # one request back in the requests bucket; the failure bucket still full
            charged, peeked = await limiter.hit_and_peek([(requests, "ip")], [(failures, "ip")])
            assert charged.allowed
            assert not peeked.allowed and peeked.limit == "failures" and peeked.retry_after == 50
            assert peeked == await limiter.blocked([(failures, "ip")])
            # Through the FastAPI helper: the charged list refuses with a 429, the peeked one is returned.
            assert not (await enforce(limiter, [(Limit("other", 5, 5.0), "ip")], peek=[(failures, "ip")])).allowed
            with pytest.raises(APIError) as refused:
                await enforce(limiter, [(requests, "ip")], peek=[(failures, "ip")])
            assert refused.value.status_code == 429
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_keys_are_hmacs_and_stale_rows_are_cleaned_up(database_url: str) -> None:
    async def scenario() -> None:
        db = await _fresh(database_url)
        clock = Clock()
        limiter = RateLimiter(db, Bucket, secret=b"one", clock=clock)
        limit = Limit("login.client", 1, 10.0)  # one hit: a 10-second debt
        try:
            await limiter.hit([(limit, "203.0.113.7"), (Limit("long", 1, 1000.0), "203.0.113.7")])
            async with db.read_session() as s:
                keys = [row[0] for row in (await s.execute(select(Bucket.key))).all()]
            assert len(keys) == 2 and all(len(k) == 64 and "203" not in k for k in keys)
            assert limiter.bucket_key(limit, "203.0.113.7") in keys
            # Same secret in another worker: same key; another secret: another key.
            assert RateLimiter(db, Bucket, secret=b"one").bucket_key(limit, "203.0.113.7") in keys
            assert RateLimiter(db, Bucket, secret=b"two").bucket_key(limit, "203.0.113.7") not in keys
            clock.now += 5  # both buckets still hold a debt
            assert await limiter.cleanup() == 0
            clock.now += 10  # the 10-second bucket is full again, the 1000-second one is not
            assert await limiter.cleanup() == 1
            # The periodic cleanup also runs from hit() (at most once a minute per process).
            clock.now += 2000
            await limiter.hit([(limit, "198.51.100.1")])
            async with db.read_session() as s:
                left = (await s.execute(select(Bucket.key))).scalars().all()
            assert left == [limiter.bucket_key(limit, "198.51.100.1")]
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_a_disabled_limiter_allows_everything_and_touches_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await _fresh(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        limiter = RateLimiter(db, Bucket, enabled=False)
        try:
            for _ in range(5):
                assert (await limiter.hit([(Limit("x", 1, 60.0), "k")])).allowed
            assert (await limiter.blocked([(Limit("x", 1, 60.0), "k")])).allowed
            async with db.read_session() as s:
                assert (await s.execute(select(Bucket))).all() == []
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_enforce_raises_the_429_with_retry_after(tmp_path: Path) -> None:
    async def scenario() -> APIError:
        db = await _fresh(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        limiter = RateLimiter(db, Bucket, clock=Clock())
        try:
            await enforce(None, [(Limit("x", 1, 60.0), "k")])  # no limiter: nothing to do
            await enforce(limiter, [(Limit("x", 1, 60.0), "k")], error="slow_down")
            with pytest.raises(APIError) as info:
                await enforce(limiter, [(Limit("x", 1, 60.0), "k")], error="slow_down")
            return info.value
        finally:
            await db.dispose()

    error = asyncio.run(scenario())
    assert error.status_code == 429 and error.error == "slow_down"
    assert error.headers["Retry-After"] == "60"
    assert set(error.body()) == {"error", "error_description"}
    doc = rate_limit_responses("slow_down")[429]
    assert "Retry-After" in doc["headers"]
    assert doc["content"]["application/json"]["schema"]["properties"]["error"]["enum"] == ["slow_down"]


@pytest.mark.parametrize(("spec", "expected"), [
    ("600/60", (600, 60.0)), (" 5/1.5s ", (5, 1.5)), ("0", (0, 1.0)), ("off", (0, 1.0)),
])
def test_parse_rate_accepts_burst_per_seconds(spec: str, expected: tuple[int, float]) -> None:
    assert parse_rate(spec) == expected
    assert Limit.parse("n", spec).enabled is (expected[0] > 0)


@pytest.mark.parametrize("spec", ["600", "a/60", "5/0", "5/-1", "-1/60", "5/9999999", "5/x"])
def test_parse_rate_refuses_malformed_values(spec: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        parse_rate(spec)


def test_limit_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Limit("x", -1, 60.0)
    with pytest.raises(ValueError):
        Limit("x", 1, 0.0)
    assert Limit("x", 4, 60.0).interval == 15.0


def _request(peer: str, forwarded: list[str] | None = None) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded or []]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 5000),
                    "query_string": b""})


def test_client_address_trusts_forwarded_for_only_from_configured_proxies() -> None:
    spoofed = _request("198.51.100.9", ["1.1.1.1"])
    assert client_address(spoofed) == "198.51.100.9"
    assert client_address(spoofed, ["10.0.0.0/8"]) == "198.51.100.9"
    # Behind a trusted proxy: the right-most untrusted hop, whatever the client put on the left.
    proxied = _request("10.0.0.2", ["6.6.6.6, 203.0.113.5, 10.0.0.7"])
    assert client_address(proxied, ["10.0.0.0/8"]) == "203.0.113.5"
    assert client_address(_request("10.0.0.2", ["203.0.113.5", "10.0.0.3"]), ["10.0.0.0/8"]) == "203.0.113.5"
    # Only trusted hops: the left-most one; no header: the proxy itself; IPv6 and single addresses work.
    assert client_address(_request("10.0.0.2", ["10.0.0.5"]), ["10.0.0.0/8"]) == "10.0.0.5"
    assert client_address(_request("10.0.0.2"), ["10.0.0.0/8"]) == "10.0.0.2"
    assert client_address(_request("::1", ["2001:db8::1"]), ["::1"]) == "2001:db8::/64"
    assert client_address(_request("127.0.0.1", ["garbage, 203.0.113.5"]), ["127.0.0.1"]) == "203.0.113.5"


def test_an_ipv6_client_is_its_64_and_a_mapped_ipv4_address_is_the_ipv4_one() -> None:
    """Every address of a /64 belongs to one subscriber: one bucket for all of them, not 2^64. A dual-stack
    listener sees IPv4 peers as ::ffff:a.b.c.d: a trusted IPv4 proxy is trusted seen that way too, and
    a client counts the same whichever way it is seen."""
    one_subscriber = {client_address(_request(f"2001:db8:1:2::{i:x}")) for i in range(1, 6)}
    assert one_subscriber == {"2001:db8:1:2::/64"}
    assert client_address(_request("2001:db8:1:3::1")) == "2001:db8:1:3::/64"
    assert client_address(_request("::ffff:198.51.100.9")) == client_address(_request("198.51.100.9")) \
        == "198.51.100.9"
    # The trusted proxy 10.0.0.5, seen as ::ffff:10.0.0.5: its X-Forwarded-For is read.
    assert client_address(_request("::ffff:10.0.0.5", ["198.51.100.7"]), ["10.0.0.0/8"]) == "198.51.100.7"
    assert client_address(_request("::ffff:10.0.0.5", ["198.51.100.7, ::ffff:10.0.0.9"]), ["10.0.0.0/8"]) \
        == "198.51.100.7"
    assert client_address(_request("10.0.0.5", ["2001:db8:9::77"]), ["::ffff:10.0.0.0/104"]) == "2001:db8:9::/64"
    # Not trusted: the peer, mapped or not, and its header is ignored.
    assert client_address(_request("::ffff:203.0.113.9", ["1.2.3.4"]), ["10.0.0.0/8"]) == "203.0.113.9"


@pytest.mark.parametrize("service", ["issuer", "verifier", "wallet_api"])
def test_each_service_migration_creates_the_table_its_model_declares(tmp_path: Path, service: str) -> None:
    root = Path(__file__).resolve().parents[2]
    run_migrations(root / service / "migrations", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    models = importlib.import_module(f"{service}.models")
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), models.Base.metadata)
            columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(rate_limits)")}
    finally:
        engine.dispose()
    assert columns == {"key", "tat", "tolerance", "allowed"}
    assert not [d for d in diff if "rate_limits" in str(d)]


def test_many_concurrent_hits_on_sqlite_queue_instead_of_failing(tmp_path: Path) -> None:
    async def scenario() -> list[bool]:
        db = await _fresh(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}")
        limiter = RateLimiter(db, Bucket, clock=Clock())
        limit = Limit("busy", 150, 3600.0)
        try:
            decisions = await asyncio.gather(*(limiter.hit([(limit, "k"), (Limit("other", 10**6, 60.0), str(i))])
                                               for i in range(400)))
            return [d.allowed for d in decisions]
        finally:
            await db.dispose()

    allowed = asyncio.run(scenario())
    assert allowed.count(True) == 150


def test_a_database_failure_lets_the_request_through_and_says_so(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, bool]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no rate_limits table at all
        limiter = RateLimiter(db, Bucket)
        try:
            hit = await limiter.hit([(Limit("x", 1, 60.0), "203.0.113.9")])
            looked = await limiter.blocked([(Limit("x", 1, 60.0), "203.0.113.9")])
            return hit.allowed, looked.allowed
        finally:
            await db.dispose()

    with caplog.at_level("WARNING", logger="cartera.ratelimit"):
        assert asyncio.run(scenario()) == (True, True)
    assert "rate limiter unavailable" in caplog.text and "203.0.113.9" not in caplog.text


def test_a_busy_bucket_is_rewritten_in_place_on_postgresql(postgres_cluster: PostgresCluster) -> None:
    """Every hit rewrites its bucket's row. With nothing indexed but the key, PostgreSQL rewrites it as a
    heap-only (HOT) update: no new index entries, and the old versions pruned from the page. (With
    ``tat`` indexed, as up to the services' rate-limit index migrations, none of them were.)"""
    url = postgres_cluster.create_database()

    async def scenario() -> tuple[int, int]:
        db = await _fresh(url)
        limiter = RateLimiter(db, Bucket, secret=b"s", clock=Clock())
        try:
            for _ in range(60):
                await limiter.hit([(Limit("busy", 1_000, 60.0), "203.0.113.9")])
        finally:
            await db.dispose()  # a backend's table statistics reach pg_stat when it exits
        check = Database(url)
        try:
            for _ in range(100):
                async with check.autocommit_connection() as conn:
                    row = (await conn.execute(text(
                        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'rate_limits'"))).one()
                if row[0] >= 59:
                    return int(row[0]), int(row[1])
                await asyncio.sleep(0.1)
            return int(row[0]), int(row[1])
        finally:
            await check.dispose()

    updates, hot = asyncio.run(scenario())
    assert updates >= 59 and hot >= updates - 2, (updates, hot)
