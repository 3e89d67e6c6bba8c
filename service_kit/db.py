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
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        ) if not in_memory else create_async_engine(parsed, echo=echo, hide_parameters=True)
        _install_sqlite_hooks(engine, in_memory=in_memory)
        return engine
    # Statement errors quote their parameters (identifiers, sealed data) unless told not to: they end
    # in exceptions, and exceptions in logs.
    return create_async_engine(
        parsed,
        echo=echo,
        hide_parameters=True,
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
    default here; the services use :meth:`from_settings`: ``database_pool_size``, 20, no overflow), so
    services x workers x that must stay under PostgreSQL's ``max_connections`` (100 by default); with
    more workers, lower these or put PgBouncer in front. Up to a quarter of the pool may be kept by
    :meth:`park` between single statements.
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
        # Connections StatementConnection keeps between its uses (see park): a checkout from the
        # engine's pool goes through a greenlet and costs ~80 µs of CPU, about as much as the statement.
        # Not with pre-ping, which must see every checkout.
        self._parked: list[Any] = []
        self._park_limit = 0 if pre_ping else max(1, pool_size // 4)
        self._capacity = pool_size + max(0, max_overflow)

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

    @asynccontextmanager
    async def statement_connection(self) -> AsyncIterator[StatementConnection | AsyncConnection]:
        """:meth:`autocommit_connection` for prebuilt statements: on PostgreSQL they run on asyncpg
        directly (see :class:`StatementConnection`); on SQLite it is :meth:`autocommit_connection`
        itself (one transaction). Only ``execute`` and ``dialect`` are common to both."""
        if self.backend != "postgresql":
            async with self.autocommit_connection() as conn:
                yield conn  # type: ignore[misc]
            return
        statements = StatementConnection(self)
        try:
            yield statements
        finally:
            await statements.close()

    @asynccontextmanager
    async def statement_transaction(self) -> AsyncIterator[StatementConnection | AsyncConnection]:
        """A Core connection in one transaction (commit on success, rollback on error) whose prebuilt
        statements run on asyncpg directly on PostgreSQL, inside that same transaction (see
        :class:`StatementConnection`); on SQLite an ordinary ``engine.begin()`` connection."""
        async with self.engine.begin() as conn:
            yield StatementConnection(self, conn) if self.backend == "postgresql" else conn

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

    def unpark(self) -> Any:
        """A connection :meth:`park` kept, or ``None``."""
        return self._parked.pop() if self._parked else None

    def park(self, raw: Any) -> bool:
        """Keep ``raw`` (a pool-proxied connection with no transaction open) for the next
        StatementConnection instead of returning it to the pool; ``False`` when it must go back.

        It goes back when the pool is exhausted, since someone may be waiting for a connection;
        otherwise anyone asking the pool gets one without waiting. At most a quarter of the pool is
        kept, so the ORM sessions always have the rest.
        """
        if len(self._parked) >= self._park_limit or not raw.is_valid:
            return False
        if self.engine.sync_engine.pool.checkedout() >= self._capacity:  # type: ignore[attr-defined]
            return False
        self._parked.append(raw)
        return True

    async def dispose(self) -> None:
        """Close every pooled connection."""
        from sqlalchemy.util import greenlet_spawn

        parked, self._parked = self._parked, []
        for raw in parked:
            await greenlet_spawn(raw.close)
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


# -- Prebuilt statements straight on the driver (PostgreSQL hot paths) --------------------------------
#
# A py-spy profile of the issuer under load put SQLAlchemy's per-execute machinery (execution context,
# parameter processing, cursor and result wrappers, greenlet hops) at about 0.2 ms of CPU per
# statement, beside asyncpg's 0.05 ms: more than the signing of a credential. A prebuilt Core
# statement is compiled once here, with SQLAlchemy's own compiler and type processors, and then runs
# on the pooled asyncpg connection directly: same SQL, same parameter conversion, same pool.

_FAST_CACHE_SIZE = 512
# A statement object seen a second time goes to the driver; ad-hoc statements (a new object per
# call) never are, and keep SQLAlchemy's own compiled cache, which is cheaper for them.
_FALLBACK = object()
_MISSING = object()


class _Compiled:
    """One statement compiled for asyncpg: SQL with ``$n`` placeholders and how to build its arguments."""

    __slots__ = ("statement", "sql", "slots", "returns_rows", "result_processors", "row_type", "needs_result_types")

    def __init__(self, statement: Any, sql: str, slots: list[tuple[str, Any, Any]], returns_rows: bool,
                 result_processors: list[Any] | None) -> None:
        self.statement = statement  # held so that its id() cannot be reused while cached
        self.sql = sql
        self.slots = slots
        self.returns_rows = returns_rows
        self.result_processors = result_processors
        self.row_type: type[tuple[Any, ...]] | None = None
        self.needs_result_types = False

    def set_result_types(self, dialect: Dialect, type_codes: list[Any]) -> None:
        """Result processors of the statement's columns, as SQLAlchemy would pick them for these
        driver type codes (``None``: unknown, which most types do not need)."""
        columns = list(self.statement.exported_columns)
        processors = [c.type.dialect_impl(dialect).result_processor(dialect, code)
                      for c, code in zip(columns, type_codes, strict=True)]
        self.result_processors = processors if any(p is not None for p in processors) else None
        self.needs_result_types = False

    def arguments(self, parameters: dict[str, Any]) -> list[Any]:
        args = []
        for name, default, processor in self.slots:
            value = parameters.get(name, default)
            if value is _MISSING:
                raise StatementParameterError(f"a value is required for bind parameter {name!r}")
            args.append(processor(value) if processor is not None else value)
        return args

    def make_rows(self, records: list[Any]) -> list[Any]:
        if not records:
            return []
        if self.row_type is None:
            self.row_type = _row_type(list(records[0].keys()))
        make = self.row_type._make  # type: ignore[attr-defined]
        processors = self.result_processors
        if processors is None:
            return [make(record) for record in records]
        return [make([p(v) if p is not None else v for p, v in zip(processors, record, strict=True)])
                for record in records]


class StatementParameterError(Exception):
    """A prebuilt statement was executed without one of its bind parameters (a programming error)."""


def _row_type(names: list[str]) -> type[tuple[Any, ...]]:
    from collections import namedtuple

    base = namedtuple("Row", names, rename=True)  # type: ignore[misc]

    class FastRow(base):  # type: ignore[valid-type,misc]
        """A result row: a named tuple, plus ``_mapping`` like SQLAlchemy's ``Row``."""

        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(zip(names, self, strict=True))

    return FastRow


def _compile_for_driver(statement: Any, keys: frozenset[str], dialect: Dialect) -> _Compiled | None:
    """Compile ``statement`` as SQLAlchemy would for these parameter names, or ``None`` when it needs
    something only SQLAlchemy's execution does (Python-side column defaults, expanding IN lists)."""
    from sqlalchemy.sql import Executable

    if not isinstance(statement, Executable) or not hasattr(statement, "exported_columns"):
        return None
    try:
        compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
    except Exception:  # noqa: BLE001 - whatever SQLAlchemy's own path would say, let it say it
        return None
    sql = compiled.string
    if (getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None)
            or "POSTCOMPILE" in sql or compiled.positiontup is None or getattr(compiled, "literal_execute_params", None)):
        return None
    slots = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        default = _MISSING if name in keys or bind.required else bind.effective_value
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        slots.append((name, default, processor))
    columns = list(statement.exported_columns)
    compiled_statement = _Compiled(statement, sql, slots, bool(columns), None)
    try:
        compiled_statement.set_result_types(dialect, [None] * len(columns))
    except Exception:  # noqa: BLE001 - a processor that needs the column's type code (numerics on asyncpg)
        compiled_statement.needs_result_types = True
    return compiled_statement


# Compiled (or refused) statements, by statement object and parameter names; and, apart, statements
# seen once, so that ad-hoc statements (a new object per call) never push the prebuilt ones out.
_FAST_STATEMENTS: dict[tuple[int, frozenset[str]], Any] = {}
_SEEN_STATEMENTS: dict[tuple[int, frozenset[str]], Any] = {}


def _fast_compiled(statement: Any, parameters: dict[str, Any], dialect: Dialect) -> _Compiled | None:
    keys = frozenset(parameters)
    cache_key = (id(statement), keys)
    entry = _FAST_STATEMENTS.get(cache_key)
    if entry is not None:
        if isinstance(entry, _Compiled):
            if entry.statement is statement:
                return entry
        elif entry[0] is statement:
            return None  # refused: SQLAlchemy runs it
    seen = _SEEN_STATEMENTS.get(cache_key)
    if seen is None or seen is not statement:
        if len(_SEEN_STATEMENTS) >= _FAST_CACHE_SIZE:
            _SEEN_STATEMENTS.clear()
        _SEEN_STATEMENTS[cache_key] = statement  # held, so that its id() is not reused meanwhile
        return None
    del _SEEN_STATEMENTS[cache_key]
    compiled = _compile_for_driver(statement, keys, dialect)
    if len(_FAST_STATEMENTS) >= _FAST_CACHE_SIZE:
        _FAST_STATEMENTS.clear()
    _FAST_STATEMENTS[cache_key] = compiled if compiled is not None else (statement, _FALLBACK)
    return compiled


class StatementResult:
    """The rows of a statement run on the driver: the part of SQLAlchemy's ``Result`` the services use."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Any:
        return iter(self._rows)

    def all(self) -> list[Any]:
        """Every row."""
        return list(self._rows)

    def first(self) -> Any:
        """The first row, or ``None``."""
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        """The only row, ``None`` without rows; ``MultipleResultsFound`` with several."""
        from sqlalchemy.exc import MultipleResultsFound

        if len(self._rows) > 1:
            raise MultipleResultsFound("multiple rows were found when one or none was required")
        return self.first()

    def one(self) -> Any:
        """The only row; ``NoResultFound`` or ``MultipleResultsFound`` otherwise."""
        from sqlalchemy.exc import NoResultFound

        row = self.one_or_none()
        if row is None:
            raise NoResultFound("no row was found when one was required")
        return row

    def scalar(self) -> Any:
        """The first column of the first row, or ``None``."""
        return self._rows[0][0] if self._rows else None

    def scalar_one_or_none(self) -> Any:
        """The first column of the only row, or ``None``."""
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        """The first column of the only row."""
        return self.one()[0]

    def scalars(self) -> StatementResult:
        """The first column of every row (``first()``, ``all()``, ``one()``... then give values)."""
        return _ScalarResult([row[0] for row in self._rows], len(self._rows))


class _ScalarResult(StatementResult):
    __slots__ = ()

    def scalar(self) -> Any:
        return self.first()

    def scalar_one(self) -> Any:
        return self.one()

    def scalar_one_or_none(self) -> Any:
        return self.one_or_none()


class StatementConnection:
    """An ``AUTOCOMMIT`` connection whose repeated statements run on the driver directly.

    ``execute(statement, parameters)`` behaves like ``AsyncConnection.execute``: a statement object
    executed a second time (a prebuilt, module-level statement) is compiled once by SQLAlchemy and
    then runs on a pooled asyncpg connection taken straight from the engine's pool (no ``Connection``
    object, no per-checkout isolation-level switch: asyncpg outside a transaction is autocommit), or
    one the previous StatementConnection kept (:meth:`Database.park`) — without pre-ping only.
    Anything else (ad-hoc statements, lists of parameter sets) goes through an SQLAlchemy
    ``AUTOCOMMIT`` connection; at most one pooled connection is held at a time. Driver errors come back
    as SQLAlchemy's (``IntegrityError``...), so callers catch the same exceptions. Each statement
    commits on its own: two statements here are never one transaction. Use it through
    :meth:`Database.statement_connection`.
    """

    def __init__(self, db: Database, transaction: AsyncConnection | None = None) -> None:
        self._db = db
        self._raw: Any = None  # a pool-proxied DBAPI connection, while no SQLAlchemy connection is open
        # In a transaction (Database.statement_transaction) every statement runs on that connection.
        self._conn: AsyncConnection | None = transaction
        self._transactional = transaction is not None
        self._direct = True
        self._driver: Any = None
        self._answered = True

    @property
    def dialect(self) -> Dialect:
        """The engine's dialect."""
        return self._db.engine.dialect

    def __getattr__(self, name: str) -> Any:
        # In a transaction, the rest of AsyncConnection's API is the transaction's connection's.
        conn = self.__dict__.get("_conn")
        if conn is None:
            raise AttributeError(f"StatementConnection has no attribute {name!r} outside a transaction")
        return getattr(conn, name)

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        """Execute ``statement`` with ``parameters`` (a dict, a list of dicts, or ``None``)."""
        if self._direct and (parameters is None or isinstance(parameters, dict)):
            compiled = _fast_compiled(statement, parameters or {}, self._db.engine.dialect)
            if compiled is not None and (self._driver is not None or await self._take_driver()):
                return await self._run(compiled, parameters or {})
        if self._conn is None:
            await self._release_raw()
            self._conn = await self._db._autocommit_engine.connect()
            self._driver = None
        return await self._conn.execute(statement, parameters)

    async def _run(self, compiled: _Compiled, parameters: dict[str, Any]) -> StatementResult:
        import asyncpg
        from sqlalchemy import exc as sa_exc

        args = compiled.arguments(parameters)
        # Until the server has answered, the connection may be mid-statement (a cancelled request):
        # such a connection goes back to the pool, never to the next StatementConnection (park).
        self._answered = False
        try:
            if compiled.needs_result_types:
                # Once per statement: the column type codes some processors depend on.
                prepared = await self._driver.prepare(compiled.sql)
                compiled.set_result_types(self.dialect, [a.type.oid for a in prepared.get_attributes()])
            if compiled.returns_rows:
                records = await self._driver.fetch(compiled.sql, *args)
                self._answered = True
                return StatementResult(compiled.make_rows(records), len(records))
            status = await self._driver.execute(compiled.sql, *args)
            self._answered = True
        except asyncpg.exceptions.IntegrityConstraintViolationError as error:
            self._answered = True
            raise sa_exc.IntegrityError(compiled.sql, args, error) from error
        except asyncpg.PostgresError as error:
            self._answered = True
            raise sa_exc.DBAPIError(compiled.sql, args, error) from error
        except (asyncpg.exceptions.InterfaceError, asyncpg.exceptions.InternalClientError, OSError) as error:
            # A dropped connection: invalidate it, as SQLAlchemy would, so the pool opens a new one. (A
            # connection cut mid-statement by a server restart is left in a state where the next
            # statement fails with InternalClientError: it is just as dead.)
            await self._invalidate()
            raise sa_exc.DBAPIError(compiled.sql, args, error, connection_invalidated=True) from error
        tail = status.rsplit(" ", 1)[-1] if isinstance(status, str) else ""
        return StatementResult([], int(tail) if tail.isdigit() else -1)

    async def _take_driver(self) -> bool:
        """Get the asyncpg connection; in a transaction, make sure BEGIN went out first. False when
        this SQLAlchemy version's asyncpg adapter is not the one this was written for: everything
        then goes through SQLAlchemy."""
        if self._conn is None:
            self._raw = self._db.unpark() or await self._db.engine.raw_connection()
            self._driver = self._raw.driver_connection
            return True
        raw = await self._conn.get_raw_connection()
        if self._transactional:
            # SQLAlchemy's adapter sends BEGIN lazily, at its first statement: if ours came first it
            # would run outside the transaction. Start it as the adapter would (its own method).
            adapter = raw.dbapi_connection
            start = getattr(adapter, "_start_transaction", None)
            if start is None or not hasattr(adapter, "_transaction"):
                self._direct = False
                return False
            if adapter._transaction is None:
                await start()
        self._driver = raw.driver_connection
        return True

    async def _invalidate(self) -> None:
        from sqlalchemy.util import greenlet_spawn

        if self._conn is not None:
            await self._conn.invalidate()
        elif self._raw is not None:
            raw, self._raw = self._raw, None
            await greenlet_spawn(raw.invalidate)
        self._driver = None

    async def _release_raw(self) -> None:
        from sqlalchemy.util import greenlet_spawn

        if self._raw is not None:
            raw, self._raw = self._raw, None
            self._driver = None
            # No transaction was begun on it: kept for the next statement as it is, or back to the
            # pool (whose reset-on-return is then a no-op).
            if not (self._answered and self._db.park(raw)):
                await greenlet_spawn(raw.close)

    async def close(self) -> None:
        """Return the connection to the pool (a transaction's connection is its owner's to close)."""
        if self._transactional:
            return
        await self._release_raw()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._driver = None
            await conn.close()
