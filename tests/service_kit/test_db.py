"""Database plumbing on SQLite and on a real PostgreSQL: sessions, single-use rows, migrations."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from service_kit.db import Database, DatabaseConfigError, consume_once, mark_used_once
from service_kit.migrations import run_migrations, run_migrations_async
from tests.service_kit.sample_models import Base, Code, Nonce

SAMPLE_MIGRATIONS = Path(__file__).parent / "sample_migrations"
CONCURRENT_ATTEMPTS = 50


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _fresh(url: str) -> Database:
    db = Database(url)
    await db.create_all(Base.metadata)
    return db


def test_consume_once_has_exactly_one_winner_among_concurrent_attempts(database_url: str) -> None:
    async def scenario() -> list[object]:
        # Two Database objects, as two worker processes would have, each with its own pool.
        first, second = await _fresh(database_url), Database(database_url)
        try:
            async with first.session() as s:
                s.add(Nonce(value="n-1", expires_at=now() + dt.timedelta(minutes=5)))

            async def attempt(db: Database) -> object:
                async with db.session() as s:
                    return await consume_once(s, Nonce, Nonce.expires_at > now(), value="n-1")

            dbs = [first, second] * (CONCURRENT_ATTEMPTS // 2)
            results = await asyncio.gather(*(attempt(db) for db in dbs))
            async with first.read_session() as s:
                left = (await s.execute(select(Nonce))).all()
            assert left == []
            return list(results)
        finally:
            await first.dispose()
            await second.dispose()

    results = asyncio.run(scenario())
    winners = [r for r in results if r is not None]
    assert len(results) == CONCURRENT_ATTEMPTS
    assert len(winners) == 1
    assert winners[0].value == "n-1"
    assert winners[0].expires_at.tzinfo is not None


def test_consume_once_leaves_expired_rows_and_refuses_no_condition(database_url: str) -> None:
    async def scenario() -> None:
        db = await _fresh(database_url)
        try:
            async with db.session() as s:
                s.add(Nonce(value="old", expires_at=now() - dt.timedelta(seconds=1)))
            async with db.session() as s:
                assert await consume_once(s, Nonce, Nonce.expires_at > now(), value="old") is None
                assert await consume_once(s, Nonce, value="missing") is None
                with pytest.raises(ValueError):
                    await consume_once(s, Nonce)
                with pytest.raises(ValueError):
                    await consume_once(s, Nonce, nope="x")
            async with db.read_session() as s:
                assert (await s.execute(select(Nonce.value))).scalars().all() == ["old"]
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_mark_used_once_has_exactly_one_winner_and_keeps_the_row(database_url: str) -> None:
    async def scenario() -> list[object]:
        db = await _fresh(database_url)
        try:
            async with db.session() as s:
                s.add(Code(code="c-1", used=False, subject="alice"))

            async def attempt() -> object:
                async with db.session() as s:
                    return await mark_used_once(s, Code.__table__, code="c-1")

            results = await asyncio.gather(*(attempt() for _ in range(CONCURRENT_ATTEMPTS)))
            async with db.read_session() as s:
                row = (await s.execute(select(Code))).scalar_one()
                assert row.used is True
            return list(results)
        finally:
            await db.dispose()

    results = asyncio.run(scenario())
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].subject == "alice"


def test_session_commits_on_success_and_rolls_back_on_error(database_url: str) -> None:
    async def scenario() -> None:
        db = await _fresh(database_url)
        try:
            async with db.session() as s:
                s.add(Nonce(value="kept", expires_at=now()))
            with pytest.raises(RuntimeError):
                async with db.session() as s:
                    s.add(Nonce(value="lost", expires_at=now()))
                    await s.flush()
                    raise RuntimeError("boom")
            async with db.read_session() as s:
                values = (await s.execute(select(Nonce.value))).scalars().all()
            assert values == ["kept"]
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_utc_datetimes_round_trip_aware_and_naive_is_refused(database_url: str) -> None:
    async def scenario() -> None:
        db = await _fresh(database_url)
        try:
            madrid = dt.timezone(dt.timedelta(hours=2))
            moment = dt.datetime(2026, 6, 1, 12, 30, tzinfo=madrid)
            async with db.session() as s:
                s.add(Nonce(value="tz", expires_at=moment))
            async with db.read_session() as s:
                stored = (await s.execute(select(Nonce.expires_at))).scalar_one()
                # Comparisons happen in the database, across the UTC conversion.
                later = (await s.execute(select(Nonce.value).where(Nonce.expires_at > moment - dt.timedelta(minutes=1)))).all()
            assert stored == moment and stored.tzinfo == dt.UTC
            assert later == [("tz",)]
            with pytest.raises(Exception, match="timezone-aware"):
                async with db.session() as s:
                    s.add(Nonce(value="naive", expires_at=dt.datetime(2026, 1, 1)))  # noqa: DTZ001
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_ping_and_backend(database_url: str) -> None:
    async def scenario() -> tuple[bool, str, str]:
        db = Database(database_url)
        try:
            return await db.ping(), db.backend, db.safe_url()
        finally:
            await db.dispose()

    ok, backend, safe = asyncio.run(scenario())
    assert ok is True
    assert backend == ("sqlite" if database_url.startswith("sqlite") else "postgresql")
    if backend == "postgresql":
        password = database_url.split(":")[2].split("@")[0]
        assert password not in safe


def test_sqlite_file_gets_its_folder_and_wal(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "svc.db"

    async def scenario() -> tuple[str, int]:
        db = Database(f"sqlite+aiosqlite:///{target}")
        try:
            async with db.read_session() as s:
                mode = (await s.execute(text("PRAGMA journal_mode"))).scalar_one()
                fks = (await s.execute(text("PRAGMA foreign_keys"))).scalar_one()
            return mode, fks
        finally:
            await db.dispose()

    mode, fks = asyncio.run(scenario())
    assert target.exists()
    assert mode == "wal"
    assert fks == 1


@pytest.mark.parametrize(
    "url",
    ["sqlite:///x.db", "postgresql://u@h/db", "postgresql+psycopg2://u@h/db", "mysql+aiomysql://u@h/db", "not a url"],
)
def test_synchronous_or_unknown_drivers_are_refused(url: str) -> None:
    with pytest.raises(DatabaseConfigError):
        Database(url)


def test_migrations_apply_on_both_backends_and_are_idempotent(database_url: str) -> None:
    run_migrations(SAMPLE_MIGRATIONS, database_url)
    run_migrations(SAMPLE_MIGRATIONS, database_url)  # already at head: nothing to do

    async def inspect_db() -> tuple[set[str], list[str], list[str]]:
        db = Database(database_url)
        try:
            async with db.engine.connect() as conn:
                tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
                columns = await conn.run_sync(lambda c: [col["name"] for col in inspect(c).get_columns("nonces")])
                versions = (await conn.execute(text("SELECT version_num FROM alembic_version_sample"))).scalars().all()
            return tables, columns, list(versions)
        finally:
            await db.dispose()

    tables, columns, versions = asyncio.run(inspect_db())
    assert {"nonces", "codes", "alembic_version_sample"} <= tables
    assert columns == ["value", "expires_at"]  # the batch ALTER added and dropped "note"
    assert versions == ["0002"]


def test_migrations_run_from_inside_an_event_loop(database_url: str) -> None:
    async def scenario() -> bool:
        # As in a lifespan hook: both the async variant and the sync call must work inside a loop.
        await run_migrations_async(SAMPLE_MIGRATIONS, database_url, "0001")
        run_migrations(SAMPLE_MIGRATIONS, database_url)
        db = Database(database_url)
        try:
            async with db.session() as s:
                s.add(Code(code="x", used=False, subject="s"))
                return await mark_used_once(s, Code, code="x") is not None
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) is True
