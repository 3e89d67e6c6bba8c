"""`cartera db upgrade`: each service's migrations applied to the database its settings name."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.postgres import PostgresCluster

CARTERA = [sys.executable, "-m", "cartera.cli"]


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARTERA_")}
    return subprocess.run([*CARTERA, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**clean, **(env or {})})


async def _pg_tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_upgrade_all_on_default_sqlite_files_is_idempotent(tmp_path: Path) -> None:
    first = _cli("db", "upgrade", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    for service in ("issuer", "verifier", "wallet"):
        assert f"✓ {service}" in first.stdout
        tables = _tables(tmp_path / "var" / f"{service}.db")
        assert "alembic_version" in tables and len(tables) > 2
    again = _cli("db", "upgrade", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rows = json.loads(again.stdout)
    assert [r["service"] for r in rows] == ["issuer", "verifier", "wallet"]
    assert all(r["revision"] and r["database"].startswith("sqlite+aiosqlite:///") for r in rows)


def test_upgrade_one_service_from_its_environment_on_postgresql(tmp_path: Path,
                                                                postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.create_database(prefix="dbup")
    result = _cli("db", "upgrade", "--service", "verifier", "--json", cwd=tmp_path,
                  env={"CARTERA_VERIFIER_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)[0]
    assert row["service"] == "verifier" and row["database"].startswith("postgresql+asyncpg://")
    password = postgres_cluster.password
    assert not password or password not in result.stdout  # the URL is printed without its password
    tables = asyncio.run(_pg_tables(url))
    assert "alembic_version" in tables and len(tables) > 2
    assert not (tmp_path / "var").exists()  # nothing went to SQLite


def test_bad_configuration_is_a_readable_error(tmp_path: Path) -> None:
    down = _cli("db", "upgrade", "--service", "issuer", cwd=tmp_path,
                env={"CARTERA_ISSUER_DATABASE_URL": "postgresql+asyncpg://u:hunter2@127.0.0.1:9/x"})
    assert down.returncode == 1 and "migration failed" in down.stderr
    assert "hunter2" not in down.stderr + down.stdout and "Traceback" not in down.stderr
    both = _cli("db", "upgrade", "--database-url", "sqlite+aiosqlite:///x.db", cwd=tmp_path)
    assert both.returncode == 1 and "--service" in both.stderr
    wrong = _cli("db", "upgrade", "--service", "nope", cwd=tmp_path)
    assert wrong.returncode == 2
