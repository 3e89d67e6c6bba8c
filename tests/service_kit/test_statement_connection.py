"""``Database.statement_connection`` / ``statement_transaction``: prebuilt statements on asyncpg directly
give exactly what SQLAlchemy gives, raise SQLAlchemy's errors, and keep transaction semantics."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from service_kit.db import Database, StatementResult, UTCDateTime
from tests.service_kit.sample_models import Base, Code
from tests.support.postgres import PostgresCluster

metadata = MetaData()
items = Table(
    "fast_items", metadata,
    Column("id", String(40), primary_key=True),
    Column("doc", JSON),
    Column("at", UTCDateTime()),
    Column("blob", LargeBinary, nullable=True),
    Column("flag", Boolean),
    Column("n", Integer),
    Column("score", Double),
)

INSERT = insert(items)
BY_ID = select(items, func.length(items.c.id).label("id_length")).where(items.c.id == bindparam("item_id"))
BUMP = (update(items).where(items.c.id == bindparam("item_id"), items.c.flag.is_(False))
        .values(n=items.c.n + 1, flag=True).returning(items.c.id, items.c.n))
TOUCH = update(items).where(items.c.n >= bindparam("min_n")).values(flag=False)
DROP = delete(items).where(items.c.id == bindparam("item_id")).returning(items.c.doc)
COUNT = select(func.count()).select_from(items)


@pytest.fixture
def fresh_pg(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A new database on the test cluster (never the shared admin database: other tests migrate there)."""
    url = postgres_cluster.create_database()
    try:
        yield url
    finally:
        postgres_cluster.drop_database(url)


async def _fresh(db: Database, *metadatas: MetaData) -> None:
    for meta in metadatas:
        await db.create_all(meta)


def _row(i: int) -> dict[str, Any]:
    return {"id": f"item-{i}", "doc": {"a": [1, "x", None], "b": {"nested": True}, "i": i},
            "at": dt.datetime(2026, 3, 20, 12, 0, i, tzinfo=dt.UTC), "blob": bytes([i, 0, 255]) if i % 2 else None,
            "flag": False, "n": i, "score": i / 3}


async def _each_way(db: Database, work: Any) -> tuple[Any, Any]:
    """The same work through SQLAlchemy (autocommit_connection) and through statement_connection."""
    async with db.autocommit_connection() as conn:
        reference = await work(conn)
    async with db.statement_connection() as conn:
        fast = await work(conn)
    return reference, fast


def test_prebuilt_statements_give_what_sqlalchemy_gives(database_url: str) -> None:
    async def scenario() -> None:
        db = Database(database_url, pre_ping=False)
        try:
            await _fresh(db, metadata)
            async with db.statement_connection() as conn:
                for i in range(6):  # several executions: from the second on, PostgreSQL takes the driver path
                    await conn.execute(INSERT, _row(i))

            async def read(conn: Any) -> list[Any]:
                return [(await conn.execute(BY_ID, {"item_id": f"item-{i}"})).first() for i in range(6)]

            reference, fast = await _each_way(db, read)
            assert [tuple(r) for r in fast] == [tuple(r) for r in reference]
            for ref, got in zip(reference, fast, strict=True):
                assert got.doc == ref.doc and got.at == ref.at and got.at.tzinfo is not None
                assert got.id_length == ref.id_length == len(ref.id)
                # A float column: asyncpg's result processors depend on the column's type code.
                assert got.score == ref.score and isinstance(got.score, float)
                assert dict(got._mapping) == dict(ref._mapping)

            async with db.statement_connection() as conn:
                bumped = [(await conn.execute(BUMP, {"item_id": f"item-{i}"})).all() for i in range(3)]
                again = (await conn.execute(BUMP, {"item_id": "item-0"})).first()
                touched = (await conn.execute(TOUCH, {"min_n": 4})).rowcount
                touched_again = (await conn.execute(TOUCH, {"min_n": 100})).rowcount
                missing = (await conn.execute(BY_ID, {"item_id": "nope"})).first()
                dropped = [(await conn.execute(DROP, {"item_id": f"item-{i}"})).scalar_one() for i in (4, 5)]
                count = (await conn.execute(COUNT)).scalar()
                count_again = (await conn.execute(COUNT)).scalar_one()
            assert [[tuple(r) for r in rows] for rows in bumped] == [[("item-0", 1)], [("item-1", 2)], [("item-2", 3)]]
            assert again is None  # the flag is set: the conditional update matches nothing
            assert touched == 2 and touched_again == 0  # items 4 and 5
            assert missing is None
            assert [d["i"] for d in dropped] == [4, 5]
            assert count == count_again == 4
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_the_driver_path_is_taken_on_postgresql_only_for_repeated_statements(database_url: str) -> None:
    async def scenario() -> list[str]:
        db = Database(database_url, pre_ping=False)
        try:
            await _fresh(db, metadata)
            kinds = []
            prebuilt = insert(items)  # a statement object of this test only: never executed before
            async with db.statement_connection() as conn:
                for i in range(3):
                    kinds.append(type(await conn.execute(prebuilt, _row(i))).__name__)
                # An ad-hoc statement (a new object each time) stays with SQLAlchemy.
                for _ in range(2):
                    kinds.append(type(await conn.execute(select(items.c.id).limit(1))).__name__)
            return kinds
        finally:
            await db.dispose()

    kinds = asyncio.run(scenario())
    if database_url.startswith("postgresql"):
        assert kinds[:3] == ["CursorResult", StatementResult.__name__, StatementResult.__name__]
    else:
        assert StatementResult.__name__ not in kinds
    assert kinds[3:] == ["CursorResult", "CursorResult"]


def test_driver_errors_come_back_as_sqlalchemy_errors(fresh_pg: str) -> None:
    async def scenario() -> tuple[int, int]:
        db = Database(fresh_pg, pre_ping=False)
        try:
            await _fresh(db, metadata, Base.metadata)
            failures = 0
            async with db.statement_connection() as conn:
                await conn.execute(INSERT, _row(0))
                for _ in range(3):
                    try:
                        await conn.execute(INSERT, _row(0))
                    except IntegrityError:
                        failures += 1
                # The connection is still usable after the errors (no transaction was left open).
                count = (await conn.execute(COUNT)).scalar()
            return failures, count
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == (3, 1)


def test_python_side_column_defaults_still_apply(fresh_pg: str) -> None:
    # Code.used has a Python-side default: such an INSERT needs SQLAlchemy's execution, not the driver's.
    async def scenario() -> list[bool]:
        db = Database(fresh_pg, pre_ping=False)
        try:
            await _fresh(db, Base.metadata)
            stmt = insert(Code.__table__)
            async with db.statement_connection() as conn:
                for i in range(3):
                    await conn.execute(stmt, {"code": f"c{i}", "subject": "s"})
                rows = (await conn.execute(select(Code.used).order_by(Code.code))).all()
            return [row[0] for row in rows]
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == [False, False, False]


def test_statement_transaction_commits_or_rolls_back_everything(database_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        db = Database(database_url, pre_ping=False)
        try:
            await _fresh(db, metadata)
            async with db.statement_transaction() as conn:
                for i in range(3):
                    await conn.execute(INSERT, _row(i))
            with pytest.raises(RuntimeError):
                async with db.statement_transaction() as conn:
                    for i in range(3, 6):  # on PostgreSQL these run on the driver, inside the transaction
                        await conn.execute(INSERT, _row(i))
                    await conn.execute(select(items.c.id).limit(1))  # SQLAlchemy, same transaction
                    raise RuntimeError("abort")
            with pytest.raises(IntegrityError):
                async with db.statement_transaction() as conn:
                    await conn.execute(INSERT, _row(10))
                    await conn.execute(INSERT, _row(0))  # duplicate: the whole transaction goes
            async with db.statement_connection() as conn:
                committed = (await conn.execute(COUNT)).scalar()
                ten = (await conn.execute(BY_ID, {"item_id": "item-10"})).first()
            return committed, 0 if ten is None else 1
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == (3, 0)


def test_concurrent_conditional_updates_have_one_winner(fresh_pg: str) -> None:
    async def scenario() -> int:
        db = Database(fresh_pg, pre_ping=False, pool_size=10, max_overflow=0)
        try:
            await _fresh(db, metadata)
            async with db.statement_connection() as conn:
                for i in range(3):
                    await conn.execute(INSERT, _row(i))
                await conn.execute(BUMP, {"item_id": "item-1"})  # warm: the next ones take the driver path
                await conn.execute(BUMP, {"item_id": "item-2"})

            async def attempt() -> int:
                async with db.statement_connection() as conn:
                    return len((await conn.execute(BUMP, {"item_id": "item-0"})).all())

            return sum(await asyncio.gather(*(attempt() for _ in range(20))))
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == 1


# -- connections kept between StatementConnections (Database.park) ---------------------------------

async def _driver_of(db: Database) -> Any:
    """The asyncpg connection the next StatementConnection runs on."""
    async with db.statement_connection() as conn:
        # COUNT's first run anywhere goes through SQLAlchemy, on a connection that then returns to the
        # pool: compile it on its own connection, so that the one below runs on the driver directly.
        await conn.execute(COUNT)
    async with db.statement_connection() as conn:
        await conn.execute(COUNT)
        return conn._driver


def test_a_statement_connection_reuses_the_connection_the_previous_one_kept(fresh_pg: str) -> None:
    async def scenario() -> tuple[bool, int, int]:
        db = Database(fresh_pg, pre_ping=False, pool_size=8, max_overflow=0)
        try:
            await _fresh(db, metadata)
            first = await _driver_of(db)
            pool = db.engine.sync_engine.pool
            kept = pool.checkedout()  # the kept connection still counts as checked out of the pool
            same = all([await _driver_of(db) is first for _ in range(5)])
            # Many at once: at most a quarter of the pool (2) is kept afterwards.
            await asyncio.gather(*(_driver_of(db) for _ in range(8)))
            return same, kept, len(db._parked)
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == (True, 1, 2)


def test_nothing_is_kept_with_pre_ping_or_after_a_cancelled_statement(fresh_pg: str) -> None:
    async def scenario() -> tuple[int, int, int]:
        pinged = Database(fresh_pg, pre_ping=True, pool_size=4, max_overflow=0)
        db = Database(fresh_pg, pre_ping=False, pool_size=4, max_overflow=0)
        try:
            await _fresh(db, metadata)
            await _driver_of(pinged)
            sleep = select(func.pg_sleep(bindparam("seconds", type_=Double)))

            async with db.statement_connection() as conn:
                await conn.execute(sleep, {"seconds": 0})  # compiled: from now on it runs on the driver
            await _driver_of(db)
            assert len(db._parked) == 1

            async def cut_short() -> None:
                async with db.statement_connection() as conn:
                    await conn.execute(sleep, {"seconds": 5})

            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await cut_short()
            cancelled = len(db._parked)
            # The connection went back to the pool, which the next user gets in a usable state.
            assert (await _fresh_count(db)) == 0
            return len(pinged._parked), cancelled, len(db._parked)
        finally:
            await pinged.dispose()
            await db.dispose()

    assert asyncio.run(scenario()) == (0, 0, 1)


async def _fresh_count(db: Database) -> int:
    async with db.statement_connection() as conn:
        return int((await conn.execute(COUNT)).scalar())


def test_a_kept_connection_goes_back_when_someone_waits_for_the_pool(fresh_pg: str) -> None:
    async def scenario() -> tuple[int, int]:
        db = Database(fresh_pg, pre_ping=False, pool_size=4, max_overflow=0, pool_timeout=5)
        try:
            await _fresh(db, metadata)
            await _driver_of(db)
            assert len(db._parked) == 1
            # The ORM takes the rest of the pool (3 connections): the pool is exhausted.
            sessions = [db.autocommit_session() for _ in range(3)]
            opened = [await s.__aenter__() for s in sessions]
            for s in opened:
                await s.execute(COUNT)
            waiter = asyncio.create_task(_session_count(db))  # waits: nothing left in the pool
            await asyncio.sleep(0.2)
            assert not waiter.done()
            # A statement takes the kept connection and, the pool being exhausted, returns it there.
            await _fresh_count(db)
            count = await asyncio.wait_for(waiter, 3)
            for s in sessions:
                await s.__aexit__(None, None, None)
            return count, len(db._parked)
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == (0, 0)


async def _session_count(db: Database) -> int:
    async with db.autocommit_session() as session:
        return int((await session.execute(COUNT)).scalar())


def test_a_kept_connection_dropped_by_the_server_is_replaced(fresh_pg: str) -> None:
    async def scenario() -> tuple[bool, int]:
        db = Database(fresh_pg, pre_ping=False, pool_size=4, max_overflow=0)
        try:
            await _fresh(db, metadata)
            dead = await _driver_of(db)
            async with db.autocommit_connection() as conn:
                # pg_terminate_backend only signals: wait until the backend has gone.
                await conn.execute(select(func.pg_terminate_backend(dead.get_server_pid())))
                for _ in range(200):
                    gone = (await conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                               {"pid": dead.get_server_pid()})).scalar() == 0
                    if gone:
                        break
                    await asyncio.sleep(0.05)
            failed = False
            try:
                await _fresh_count(db)  # meets the dead connection: fails, and it is discarded
            except Exception:  # noqa: BLE001 - SQLAlchemy's DBAPIError with connection_invalidated
                failed = True
            return failed and await _driver_of(db) is not dead, await _fresh_count(db)
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == (True, 0)
