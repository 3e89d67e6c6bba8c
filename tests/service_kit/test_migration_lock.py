"""Workers that start together migrate one database one at a time, and all start.

Every worker runs the migrations at start-up. On a fresh PostgreSQL database, workers starting together
all created the same tables and all but one failed (UniqueViolation); now they take turns under an
advisory lock and the later ones find the database at head. On SQLite the upgrade is one ``BEGIN
IMMEDIATE`` transaction and waits for the single writer.
"""

from __future__ import annotations

import multiprocessing
import queue
from pathlib import Path

import asyncpg
import pytest

from tests.support.postgres import PostgresCluster

MIGRATIONS = Path(__file__).resolve().parents[2] / "issuer" / "migrations"
WORKERS = 4
#: Longest a worker may take: a guard against a hang, never the assertion.
HANG_GUARD = 300


def _migrate(url: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    """A worker's start-up migration, begun at the same moment as the others'."""
    import issuer.models  # noqa: F401 - imported before the barrier, so that the workers start together
    from service_kit.migrations import run_migrations

    barrier.wait()
    try:
        run_migrations(MIGRATIONS, url)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


def _start_together(url: str) -> list[str]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    workers = [context.Process(target=_migrate, args=(url, barrier, results)) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    outcomes = []
    try:
        for _ in workers:
            outcomes.append(results.get(timeout=HANG_GUARD))
    except queue.Empty:
        outcomes.append("a worker never finished")
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    return outcomes


async def _version(url: str) -> str:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


def _head() -> str:
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("0*.py"))


def test_workers_starting_together_on_a_fresh_postgresql_database_all_migrate(
        postgres_cluster: PostgresCluster) -> None:
    import asyncio

    # Once is enough: without the lock, four workers released by the barrier onto a fresh database
    # collide on creating the schema every time (10 runs out of 10 failed), so a repetition adds only time.
    url = postgres_cluster.create_database()
    try:
        assert _start_together(url) == ["ok"] * WORKERS
        assert asyncio.run(_version(url)) == _head()
    finally:
        postgres_cluster.drop_database(url)


def test_workers_starting_together_on_a_fresh_sqlite_database_all_migrate(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}"
    assert _start_together(url) == ["ok"] * WORKERS
    db = sqlite3.connect(tmp_path / "issuer.db")
    try:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(_head(),)]
    finally:
        db.close()


@pytest.mark.anyio
async def test_a_migration_waits_for_the_lock_and_holds_it_while_it_upgrades(
        postgres_cluster: PostgresCluster) -> None:
    """The mechanism: while another session holds the service's migration lock, a worker's migration
    waits without touching the database; it upgrades once the lock is free."""
    import asyncio

    from service_kit.migrations import migration_lock_key, run_migrations_async

    url = postgres_cluster.create_database()
    other = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await other.execute("SELECT pg_advisory_lock($1, $2)", *migration_lock_key("alembic_version"))
        migrating = asyncio.create_task(run_migrations_async(MIGRATIONS, url))
        async with asyncio.timeout(HANG_GUARD):
            while not await other.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                await asyncio.sleep(0.01)
        assert await other.fetchval("SELECT to_regclass('alembic_version')") is None
        await other.execute("SELECT pg_advisory_unlock($1, $2)", *migration_lock_key("alembic_version"))
        await migrating
        assert await other.fetchval("SELECT version_num FROM alembic_version") == _head()
        # Released at the end: it can be taken at once.
        assert await other.fetchval("SELECT pg_try_advisory_lock($1, $2)", *migration_lock_key("alembic_version"))
    finally:
        await other.close()
        postgres_cluster.drop_database(url)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
