"""Helpers for the issuer's concurrency tests: an issuer app in-process on a database of its own, a
tenant row, and a second PostgreSQL connection that holds a row lock so that concurrent requests all
reach the same point before any goes on (an interleaving forced, not hoped for)."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from issuer.app import create_app
from issuer.context import IssuerContext
from issuer.models import Tenant
from issuer.settings import IssuerSettings
from issuer.tenancy import TenantRef

#: Longest wait for concurrent requests to reach a lock: a guard against a hang, never the assertion.
HANG_GUARD = 60.0


def issuer_settings(database_url: str, data_dir: Path, **overrides: Any) -> IssuerSettings:
    return IssuerSettings(database_url=database_url, master_key=secrets.token_hex(32), admin_api_key="a" * 40,
                          dev_mode=True, public_url="http://127.0.0.1:1", data_dir=data_dir, **overrides)


@asynccontextmanager
async def running_issuer(settings: IssuerSettings) -> AsyncIterator[tuple[IssuerContext, httpx.AsyncClient]]:
    """The issuer app started in-process (migrations run, no background loop) and a client to it."""
    app = create_app(settings, run_background=False, configure_logs=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=settings.public_url, timeout=HANG_GUARD) as client:
        yield app.state.ctx, client


async def add_tenant(ctx: IssuerContext, slug: str = "race") -> TenantRef:
    async with ctx.session() as session:
        session.add(Tenant(id=f"t_{slug}", slug=slug, name=slug, display=[], body_id="", created_at=dt.datetime.now(dt.UTC)))
    return TenantRef(f"t_{slug}", slug, slug, "", [])


def pg_dsn(database_url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy ``postgresql+asyncpg://`` URL."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def lock_waiters(conn: asyncpg.Connection) -> int:
    """How many other sessions of this database are waiting for a lock now (``conn`` may be in a
    transaction: the activity snapshot it took is dropped first)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND pid <> pg_backend_pid()"))


async def until_waiting(conn: asyncpg.Connection, count: int) -> None:
    """Return once ``count`` sessions wait for a lock (the ones ``conn`` holds)."""
    async with asyncio.timeout(HANG_GUARD):
        while await lock_waiters(conn) < count:
            await asyncio.sleep(0.01)
