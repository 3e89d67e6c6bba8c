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
