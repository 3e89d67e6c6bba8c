"""Alembic, driven from code, through the async engine, on SQLite and PostgreSQL alike.

A service keeps its migrations in a folder of its own (``issuer/migrations/`` with ``env.py``,
``script.py.mako`` and ``versions/``); its ``env.py`` is three lines::

    from service_kit.migrations import configure_env
    from issuer.models import Base
    configure_env(Base.metadata, version_table="alembic_version")

Copy ``script.py.mako`` (and ``env.py.txt`` as ``env.py``) from :data:`TEMPLATE_DIR`. No ``alembic.ini``
is needed: :func:`run_migrations` builds the configuration, and the CLI (``cartera db upgrade``) and
service start-up both call it. ``version_table`` lets several services share one PostgreSQL database
if an operator insists, each with its own history table.

Every worker of a service runs the migrations when it starts. On PostgreSQL they take turns under an
advisory lock (:func:`migration_lock_key`), held by the migration's connection for the whole upgrade:
without it workers starting together on a fresh database all created the same tables, and all but one
failed. On SQLite every transaction begins ``BEGIN IMMEDIATE`` (``service_kit.db``), so the upgrade,
one transaction, already waits for the database's single writer (up to its busy timeout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from service_kit.db import engine_for

TEMPLATE_DIR = Path(__file__).parent / "migration_template"

_URL_ATTRIBUTE = "cartera_database_url"
#: First half of the advisory lock key of migrations (``CART``), so that it meets no other lock of ours.
_LOCK_NAMESPACE = 0x43415254


def migration_lock_key(version_table: str) -> tuple[int, int]:
    """The ``pg_advisory_lock(key1, key2)`` key that serialises the migrations of the service whose
    history is ``version_table`` (advisory locks are per database: each database has its own)."""
    crc = zlib.crc32(f"cartera migrations {version_table}".encode())
    return _LOCK_NAMESPACE, (crc - (1 << 32) if crc >= 1 << 31 else crc)


def make_config(script_location: str | Path, url: str) -> Config:
    """An Alembic ``Config`` for a service's migrations folder and database URL (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # Passed as an attribute, not the "sqlalchemy.url" option: ini interpolation would mangle "%" in
    # percent-encoded passwords.
    config.attributes[_URL_ATTRIBUTE] = url
    return config


def run_migrations(script_location: str | Path, url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (``head``) with the migrations in ``script_location``.

    Synchronous, for the CLI; callable from async code too (start-up hooks), where it runs the migration
    on a helper thread — prefer :func:`run_migrations_async` there so the event loop is not blocked.
    """
    command.upgrade(make_config(script_location, url), revision)


async def run_migrations_async(script_location: str | Path, url: str, revision: str = "head") -> None:
    """:func:`run_migrations` on a worker thread, for lifespan hooks."""
    await asyncio.to_thread(run_migrations, script_location, url, revision)


def _run_coroutine(factory: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(main())
        return
    # Called from inside an event loop (e.g. run_migrations from a lifespan hook): asyncio.run would
    # refuse, so run on a helper thread with a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, main()).result()


def configure_env(target_metadata: MetaData, *, version_table: str = "alembic_version") -> None:
    """The whole body of a service's Alembic ``env.py``: run migrations offline or online.

    Online, the migrations run through the async engine (``connection.run_sync``) with the same
    SQLite pragmas as the service. On SQLite ``render_as_batch`` makes ALTERs work (tables are copied)
    and the migrations run in one transaction (SQLite DDL is transactional once we own BEGIN).
    """
    from alembic import context

    config = context.config
    url = config.attributes.get(_URL_ATTRIBUTE) or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: call service_kit.migrations.run_migrations(script_location, url)")
    is_sqlite = str(url).startswith("sqlite")
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "version_table": version_table,
        "render_as_batch": is_sqlite,
        "compare_type": True,
    }

    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **options)
        with context.begin_transaction():
            context.run_migrations()
        return

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, transactional_ddl=True, **options)
        with context.begin_transaction():
            context.run_migrations()

    async def online() -> None:
        engine = engine_for(url, pool_size=1, max_overflow=0)
        try:
            async with engine.connect() as connection:
                locked = connection.dialect.name == "postgresql"
                if locked:
                    # A session lock, taken (and committed) before the migration reads the version table:
                    # a worker that waited for it finds the database upgraded, with nothing left to do.
                    key1, key2 = migration_lock_key(version_table)
                    await connection.execute(text("SELECT pg_advisory_lock(:key1, :key2)"),
                                             {"key1": key1, "key2": key2})
                    await connection.commit()
                try:
                    await connection.run_sync(do_run)
                    await connection.commit()
                finally:
                    if locked:
                        # Closing the connection (engine.dispose below) would release it too.
                        with contextlib.suppress(SQLAlchemyError):
                            await connection.rollback()
                            await connection.execute(text("SELECT pg_advisory_unlock(:key1, :key2)"),
                                                     {"key1": key1, "key2": key2})
                            await connection.commit()
        finally:
            await engine.dispose()

    _run_coroutine(online)
