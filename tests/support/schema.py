"""What a service's migrations build, compared with what its models declare (alembic autogenerate)."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from service_kit.migrations import run_migrations


def migrations_vs_models(migrations: Path, database_url: str, *modules: str) -> list[Any]:
    """Run ``migrations`` to head on ``database_url`` (SQLite or PostgreSQL) and return alembic's
    differences from the metadata of the first of ``modules`` (the others are imported so that their
    tables, declared on the same base, are in it). An empty list: the schema is the models'."""
    run_migrations(migrations, database_url)
    models = [importlib.import_module(name) for name in modules]
    metadata = models[0].Base.metadata
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url.replace("+aiosqlite", ""))
        try:
            with engine.connect() as conn:
                return list(compare_metadata(MigrationContext.configure(conn), metadata))
        finally:
            engine.dispose()
    return asyncio.run(_compare_async(database_url, metadata))


async def _compare_async(url: str, metadata: Any) -> list[Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: list(compare_metadata(MigrationContext.configure(sync), metadata)))
    finally:
        await engine.dispose()
