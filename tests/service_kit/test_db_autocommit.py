"""``Database.autocommit_session`` and ``pre_ping=False`` on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select, text

from service_kit.db import Database
from tests.service_kit.sample_models import Base, Nonce


def test_autocommit_statements_are_visible_at_once_and_survive_a_later_failure(database_url: str) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        db = Database(database_url, pre_ping=False)
        other = Database(database_url)
        try:
            await db.create_all(Base.metadata)
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
            async with db.autocommit_session() as session:
                session.add(Nonce(value="a", expires_at=expires))
                await session.flush()
                # Another pool sees the row before the block ends: it was committed by itself.
                async with other.read_session() as reader:
                    seen = list((await reader.scalars(select(Nonce.value))).all())
            if db.backend == "postgresql":
                # The first statement stays committed when a later one fails (no enclosing transaction).
                try:
                    async with db.autocommit_session() as session:
                        await session.execute(text("INSERT INTO nonces (value, expires_at) VALUES ('b', now())"))
                        await session.execute(text("SELECT no_such_column FROM nonces"))
                except Exception:  # noqa: BLE001 - the failing statement is the point of the test
                    pass
            async with other.read_session() as reader:
                after = sorted((await reader.scalars(select(Nonce.value))).all())
            return seen, after
        finally:
            await db.dispose()
            await other.dispose()

    seen, after = asyncio.run(scenario())
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    if backend == "postgresql":
        assert seen == ["a"]
        assert after == ["a", "b"]
    else:
        # SQLite: an ordinary transaction, committed when the block ends.
        assert seen == []
        assert after == ["a"]


def test_a_pool_without_pre_ping_recovers_after_its_connections_are_killed(postgres_url: str) -> None:
    async def scenario() -> list[bool]:
        db = Database(postgres_url, pre_ping=False, pool_size=2)
        admin = Database(postgres_url)
        outcomes: list[bool] = []
        try:
            async with db.autocommit_session() as session:
                await session.execute(text("SELECT 1"))
            async with admin.autocommit_session() as session:
                await session.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                           "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            for _ in range(3):
                try:
                    async with db.autocommit_session() as session:
                        outcomes.append((await session.scalar(text("SELECT 1"))) == 1)
                except Exception:  # noqa: BLE001 - the one statement meeting a dead connection fails
                    outcomes.append(False)
            return outcomes
        finally:
            await db.dispose()
            await admin.dispose()

    outcomes = asyncio.run(scenario())
    # At most the first attempt meets the dead connection; the pool is then replaced.
    assert outcomes[1:] == [True, True]
