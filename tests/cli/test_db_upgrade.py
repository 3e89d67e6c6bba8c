"""`cartera db upgrade`: each service's migrations applied to the database its settings name."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
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


def test_wait_retries_a_refused_connection_for_the_time_given(tmp_path: Path) -> None:
    started = time.monotonic()
    down = _cli("db", "upgrade", "--service", "issuer", "--wait", "3", cwd=tmp_path,
                env={"CARTERA_ISSUER_DATABASE_URL": "postgresql+asyncpg://u:hunter2@127.0.0.1:9/x"})
    assert down.returncode == 1 and "migration failed" in down.stderr
    assert "waiting for the database" in down.stderr  # progress, while retrying
    assert time.monotonic() - started >= 3
    assert "hunter2" not in down.stderr + down.stdout and "Traceback" not in down.stderr


def _forward_when(ready: threading.Event, target: tuple[str, int]) -> tuple[int, threading.Event]:
    """A TCP port that refuses connections until ``ready`` is set, then forwards them to ``target``
    (a database server that starts listening after the migration job was started)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        ready.wait(60)
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return port, stop


def test_wait_upgrades_once_the_server_comes_up(tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_cluster.create_database(prefix="dbwait"))
    refused = threading.Event()
    port, stop = _forward_when(refused, (url.host or "127.0.0.1", url.port or 5432))
    late = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARTERA_")}
    job = subprocess.Popen([*CARTERA, "db", "upgrade", "--service", "wallet", "--wait", "60", "--json"],
                           cwd=tmp_path, env={**clean, "CARTERA_WALLET_DATABASE_URL": late},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert job.stderr is not None
        first = job.stderr.readline()  # the job reports its first refused connection: now the server "starts"
        assert "waiting for the database" in first, first
        refused.set()
        stdout, rest = job.communicate(timeout=120)
    finally:
        stop.set()
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, first + rest
    assert json.loads(stdout)[0]["service"] == "wallet"
    assert "alembic_version" in asyncio.run(_pg_tables(url.render_as_string(hide_password=False)))


def test_a_server_that_never_answers_is_a_readable_error(tmp_path: Path) -> None:
    """A connection timeout's message is empty: the error names the exception alone, no traceback."""
    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts (the kernel's backlog), never answers
        port = server.getsockname()[1]
        down = _cli("db", "upgrade", "--service", "issuer", "--wait", "2", cwd=tmp_path,
                    env={"CARTERA_ISSUER_DATABASE_URL": f"postgresql+asyncpg://u:hunter2@127.0.0.1:{port}/x"})
    assert down.returncode == 1, down.stderr
    assert "issuer: migration failed (TimeoutError)" in down.stderr, down.stderr
    assert "Traceback" not in down.stderr and "hunter2" not in down.stderr + down.stdout
