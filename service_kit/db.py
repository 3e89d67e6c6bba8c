"""Async database access: engine and sessions, per-service declarative bases, single-use rows.

SQLite (``sqlite+aiosqlite``) is the default and PostgreSQL (``postgresql+asyncpg``) the production
choice; the same code runs on both. Each service declares its own models on its own base::

    Base = make_base()

    class Nonce(Base):
        __tablename__ = "nonces"
        value: Mapped[str] = mapped_column(primary_key=True)
        expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

so every service has separate metadata (and its own Alembic history). Sessions are short and
explicit::

    async with db.session() as session:   # commits on success, rolls back on error
        row = await consume_once(session, Nonce, Nonce.expires_at > now, value=nonce)
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, Row, Table, TypeDecorator, delete, event, text, update
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.elements import ColumnElement

# Constraint names are spelled out so Alembic can alter and drop them on every backend (SQLite batch
# mode recreates tables and needs names to find constraints again).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 10_000


class DatabaseConfigError(Exception):
    """The database URL is unusable (unknown driver, synchronous driver, malformed)."""


def make_base() -> type[DeclarativeBase]:
    """Return a fresh declarative base with its own ``MetaData`` (and the naming convention).

    Call it once per service, in the service's models module; never share a base between services.
    Where a type checker must see a class, write the equivalent explicitly::

        class Base(DeclarativeBase):
            metadata = MetaData(naming_convention=NAMING_CONVENTION)
    """

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    return Base


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite stores no time zone and gives back naive values; this type refuses naive input (a common
    source of off-by-hours bugs) and always returns aware UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        value = value.astimezone(dt.UTC)
        # SQLite compares datetimes as text: store them naive in UTC so comparisons stay correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def _parse_url(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseConfigError("database URL is malformed") from exc
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseConfigError(f"unsupported database backend {parsed.get_backend_name()!r}")
    driver = parsed.get_driver_name()
    if parsed.get_backend_name() == "sqlite" and driver != "aiosqlite":
        raise DatabaseConfigError("SQLite URLs must use the async driver: sqlite+aiosqlite:///path.db")
    if parsed.get_backend_name() == "postgresql" and driver != "asyncpg":
        raise DatabaseConfigError("PostgreSQL URLs must use the async driver: postgresql+asyncpg://...")
    return parsed


def engine_for(
    url: str | URL,
    *,
    echo: bool = False,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
    connect_timeout: float = 10.0,
    pre_ping: bool = True,
) -> AsyncEngine:
    """Create an async engine with Cartera's settings for the URL's backend.

    SQLite: the parent folder is created; each connection gets WAL, ``foreign_keys=ON``, a busy
    timeout and ``synchronous=NORMAL``; transactions start with ``BEGIN IMMEDIATE`` so that a
    read-then-write transaction never fails half-way with "database is locked" (SQLite cannot upgrade a
    read snapshot to a write lock once another writer committed). PostgreSQL: a bounded pool with
    pre-ping and recycling, so connections dropped by a proxy or a restart are replaced transparently.

    ``pre_ping=False`` skips the liveness probe at each checkout: with asyncpg it is three round trips
    (BEGIN, an empty query, ROLLBACK), often more than the work the session does. Without it a
    connection dropped by the server fails the one statement that meets it; SQLAlchemy then discards
    every pooled connection older than the failure, so the next request reconnects.
    """
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
        if not in_memory:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            parsed,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        ) if not in_memory else create_async_engine(parsed, echo=echo)
        _install_sqlite_hooks(engine, in_memory=in_memory)
        return engine
    return create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={"timeout": connect_timeout, "command_timeout": 60},
    )


def _install_sqlite_hooks(engine: AsyncEngine, *, in_memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One service's database: an async engine plus session factories.

    ``async with db.session() as s`` commits when the block succeeds and rolls back when it raises.
    ``db.read_session()`` is for read-only work: on SQLite it does not take the write lock.

    Pool sizing: each worker process holds up to ``pool_size + max_overflow`` connections (5 + 10 by
    default), so services x workers x 15 must stay under PostgreSQL's ``max_connections`` (100 by
    default); with more workers, lower these or put PgBouncer in front.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        echo: bool = False,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        pre_ping: bool = True,
    ) -> None:
        self.url: URL = _parse_url(url)
        self.engine: AsyncEngine = engine_for(
            self.url, echo=echo, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout,
            pre_ping=pre_ping,
        )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
        )
        # PostgreSQL only: SQLite's BEGIN is issued by our own "begin" hook, which autocommit would skip
        # the COMMIT of; and on SQLite a transaction costs no round trip anyway. There it is DEFERRED:
        # single statements need no write lock taken up front (reads take none at all), and a
        # transaction whose first statement writes waits in the busy handler like IMMEDIATE does.
        self._autocommit_engine = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.backend == "postgresql" else self.engine.execution_options(sqlite_begin="DEFERRED")
        )
        self._autocommit_sessions = async_sessionmaker(self._autocommit_engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Database:
        """The database a service's settings describe: its URL and pool (``database_pool_size``
        connections, no overflow, pre-ping as ``database_pre_ping`` says)."""
        return cls(settings.database_url, pre_ping=settings.database_pre_ping,
                   pool_size=settings.database_pool_size, max_overflow=0)

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.url.get_backend_name()

    def safe_url(self) -> str:
        """The URL with its password hidden, for logs and status pages."""
        return self.url.render_as_string(hide_password=True)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A read-write session in one transaction: commit on success, rollback on error."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (deferred transaction on SQLite), never committed.

        Closing it ends the transaction without expiring loaded objects, so rows read here stay usable
        after the block.
        """
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def autocommit_session(self) -> AsyncIterator[AsyncSession]:
        """A session whose statements each commit on their own (PostgreSQL ``AUTOCOMMIT``).

        For hot paths made of single statements that are atomic by themselves (``SELECT``, one
        ``INSERT``, a conditional ``UPDATE ... RETURNING``): PostgreSQL gets no ``BEGIN``/``COMMIT``
        round trips. Never rely on two statements here being one transaction: on PostgreSQL they are
        not (on SQLite this is an ordinary :meth:`session`, committed at the end).
        """
        async with self._autocommit_sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def autocommit_connection(self) -> AsyncIterator[AsyncConnection]:
        """:meth:`autocommit_session` without the ORM: a Core connection, for the hottest paths.

        Executing prebuilt Core statements with bound parameters here skips the ORM's statement
        construction, unit of work and instance loading, which cost more CPU than a short query.
        The same rule: each statement stands alone on PostgreSQL; on SQLite one transaction.
        """
        if self.backend == "postgresql":
            async with self._autocommit_engine.connect() as conn:
                yield conn
        else:
            async with self._autocommit_engine.begin() as conn:
                yield conn

    async def ping(self, timeout: float = 2.0) -> bool:
        """Whether the database answers ``SELECT 1`` within ``timeout`` seconds."""

        async def _probe() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(_probe(), timeout)
        except Exception:  # noqa: BLE001 - any failure means "not ready"; the caller reports 503
            return False
        return True

    async def create_all(self, metadata: MetaData) -> None:
        """Create every table of ``metadata`` (tests and throwaway databases; services use migrations)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _table_of(target: Any) -> Table:
    table = getattr(target, "__table__", target)
    if not isinstance(table, Table):
        raise TypeError("expected a Table or a mapped class")
    return table


def _conditions(table: Table, clauses: tuple[ColumnElement[bool], ...], where: dict[str, Any]) -> list[Any]:
    if not clauses and not where:
        # A condition-less consume would empty the table: never what the caller meant.
        raise ValueError("consume_once needs at least one condition")
    conditions: list[Any] = list(clauses)
    for name, value in where.items():
        if name not in table.c:
            raise ValueError(f"table {table.name} has no column {name!r}")
        conditions.append(table.c[name] == value)
    return conditions


async def consume_once(
    session: AsyncSession, target: Any, *clauses: ColumnElement[bool], **where: Any
) -> Row[Any] | None:
    """Delete the row matching the conditions and return it, or ``None`` if another caller got it.

    One statement, ``DELETE ... WHERE ... RETURNING``, so of any number of concurrent callers exactly
    one gets the row: on PostgreSQL the losers wait on the row lock and then find it gone; on SQLite
    writers are serialised. Use it for nonces, authorization and pre-authorized codes. ``clauses`` add
    conditions such as ``Nonce.expires_at > now`` (an expired row is then left alone, not consumed).
    """
    table = _table_of(target)
    stmt = delete(table).where(*_conditions(table, clauses, where)).returning(*table.c)
    result = await session.execute(stmt)
    rows = result.all()
    return rows[0] if rows else None


async def mark_used_once(
    session: AsyncSession,
    target: Any,
    *clauses: ColumnElement[bool],
    used_column: str = "used",
    **where: Any,
) -> Row[Any] | None:
    """Flip ``used_column`` from false to true on the matching row and return it, at most once.

    ``UPDATE ... SET used = true WHERE ... AND used = false RETURNING``: the same guarantee as
    :func:`consume_once` for values whose row must be kept (for audit, or to detect replays later).
    """
    table = _table_of(target)
    if used_column not in table.c:
        raise ValueError(f"table {table.name} has no column {used_column!r}")
    column = table.c[used_column]
    conditions = [*_conditions(table, clauses, where), column.is_(False)]
    stmt = update(table).where(*conditions).values({used_column: True}).returning(*table.c)
    result = await session.execute(stmt)
    rows = result.all()
    return rows[0] if rows else None


def dialect_insert(session: AsyncSession, model: Any) -> Any:
    """``INSERT`` for the session's dialect, so ``on_conflict_do_nothing``/``do_update`` work on both
    PostgreSQL and SQLite."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)
