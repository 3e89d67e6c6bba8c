"""What every request handler needs: settings, database, secret box, caches; and small shared helpers.

One :class:`IssuerContext` per app (``app.state.ctx``). Its caches (unsealed signing keys, parsed
credential types, built data sources) are bounded and safe to lose: the database is the truth, so two
workers behave as one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service_kit.crypto import SecretBox
from service_kit.db import Database

from .settings import IssuerSettings

V = TypeVar("V")


class BoundedCache(Generic[V]):
    """A small LRU map: at most ``size`` entries, the least recently used dropped first.

    An entry put with ``ttl`` (seconds) is forgotten that long after it was put, so what another worker
    changed in the database is seen after at most ``ttl``.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._expires: dict[Hashable, float] = {}

    def get(self, key: Hashable) -> V | None:
        value = self._data.get(key)
        if value is not None:
            expires = self._expires.get(key)
            if expires is not None and time.monotonic() >= expires:
                del self._data[key]
                del self._expires[key]
                return None
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V, ttl: float | None = None) -> V:
        self._data[key] = value
        self._data.move_to_end(key)
        if ttl is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = time.monotonic() + ttl
        while len(self._data) > self.size:
            dropped, _ = self._data.popitem(last=False)
            self._expires.pop(dropped, None)
        return value

    def discard(self, key: Hashable) -> None:
        self._data.pop(key, None)
        self._expires.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
        self._expires.clear()


@dataclass
class IssuerContext:
    """Per-app state shared by the routes and service modules."""

    settings: IssuerSettings
    db: Database
    box: SecretBox
    #: MAC key of the stateless ``c_nonce`` values (``issuer.nonces.nonce_key`` of the master key).
    nonce_key: bytes
    #: For calls to what tenants name (sources, webhooks): guarded by the outbound policy.
    http: httpx.AsyncClient | None = None
    #: For VÀLid, which the operator's settings name: not restricted to the outbound policy.
    idp_http: httpx.AsyncClient | None = None
    keys: BoundedCache[Any] = field(default_factory=lambda: BoundedCache(256))
    types: BoundedCache[Any] = field(default_factory=lambda: BoundedCache(512))
    sources: BoundedCache[Any] = field(default_factory=lambda: BoundedCache(256))
    tenants: BoundedCache[Any] = field(default_factory=lambda: BoundedCache(256))
    status_lists: BoundedCache[Any] = field(default_factory=lambda: BoundedCache(256))
    #: The PKCS#11 token of tenant keys held in hardware (``service_kit.pkcs11.Token``), opened at start-up.
    hsm: Any = None
    _write_lock: asyncio.Lock | None = field(default=None, repr=False)
    #: Prometheus counters (set by the app): credentials issued, source failures.
    issued_counter: Any = None
    source_failures: Any = None
    source_calls: Any = None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A read-write transaction (commit on success). On SQLite, writers of this process queue here.

        SQLite has one writer at a time; concurrent ``BEGIN IMMEDIATE`` transactions would otherwise
        wait in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and wastes most of
        the time under load. Queuing on an asyncio lock hands the write lock over without sleeping.
        PostgreSQL needs no such thing: its row locks do the job.
        """
        if self.db.backend != "sqlite":
            async with self.db.session() as session:
                yield session
            return
        async with self._sqlite_lock(), self.db.session() as session:
            yield session

    def _sqlite_lock(self) -> asyncio.Lock:
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return self._write_lock

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[AsyncConnection]:
        """:meth:`session` without the ORM: a Core connection in one transaction (commit on success).

        For the prebuilt statements of :mod:`issuer.statements`; SQLite writers queue as in :meth:`session`.
        """
        if self.db.backend != "sqlite":
            # Prebuilt statements run on asyncpg directly, in the transaction (service_kit.db).
            async with self.db.statement_transaction() as conn:
                yield conn  # type: ignore[misc]
            return
        async with self._sqlite_lock(), self.db.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def single_statement(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for statements that are atomic by themselves (one INSERT, one SELECT).

        PostgreSQL: ``AUTOCOMMIT`` (no BEGIN/COMMIT round trips; two statements here are NOT one
        transaction). SQLite: a write transaction like :meth:`write_connection`.
        """
        if self.db.backend != "sqlite":
            # Prebuilt statements run on asyncpg directly (service_kit.db.StatementConnection).
            async with self.db.statement_connection() as conn:
                yield conn  # type: ignore[misc]
            return
        async with self._sqlite_lock(), self.db.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for reads: ``AUTOCOMMIT`` on PostgreSQL, a deferred transaction on SQLite."""
        async with self.db.statement_connection() as conn:
            yield conn  # type: ignore[misc]

    @property
    def public_url(self) -> str:
        return self.settings.public_url

    def issuer_url(self, slug: str) -> str:
        """The credential issuer identifier of tenant ``slug``."""
        return f"{self.settings.public_url}/t/{slug}"


async def get_ctx(request: Request) -> IssuerContext:
    """FastAPI dependency: the app's :class:`IssuerContext`.

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, a thread hop
    (and GIL handover) per request that a py-spy profile put at ~10% of the issuer's CPU.
    """
    return request.app.state.ctx  # type: ignore[no-any-return]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id(prefix: str = "", nbytes: int = 12) -> str:
    """A random identifier (not a secret by itself), URL-safe."""
    return prefix + secrets.token_urlsafe(nbytes)


def new_secret() -> str:
    """A 256-bit random secret (codes, tokens, nonces, transaction ids)."""
    return secrets.token_urlsafe(32)


def secret_hash(value: str) -> str:
    """What is stored for a secret: SHA-256 hex. Enough for 256-bit random values (nothing to guess)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_tx_code(length: int) -> str:
    """A numeric transaction code of ``length`` digits (uniform, leading zeros allowed)."""
    return f"{secrets.randbelow(10 ** length):0{length}d}"
