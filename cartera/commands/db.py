"""`cartera db upgrade`: apply each service's Alembic migrations to its configured database.

Each service also migrates at start-up; this command is for operators who upgrade the schema before
rolling out new containers (one run against PostgreSQL, then start any number of workers). Every
service reads its database URL from its own environment variables (``CARTERA_ISSUER_DATABASE_URL``,
``CARTERA_VERIFIER_DATABASE_URL``, ``CARTERA_WALLET_DATABASE_URL``), falling back to a SQLite file in its
``data_dir`` (``var/`` by default).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cartera.console import console, error_summary, fail, print_json, safe

app = typer.Typer(help="Database schema of the services (Alembic migrations).", no_args_is_help=True)


@dataclass(frozen=True)
class ServiceSchema:
    """Where a service keeps its settings class and its migrations folder."""

    name: str
    settings: str  # "module:Class"
    migrations: str  # module whose MIGRATIONS constant is the Alembic folder


SERVICES: dict[str, ServiceSchema] = {
    "issuer": ServiceSchema("issuer", "issuer.settings:IssuerSettings", "issuer.app"),
    "verifier": ServiceSchema("verifier", "verifier.settings:VerifierSettings", "verifier.app"),
    "wallet": ServiceSchema("wallet", "wallet_api.settings:WalletSettings", "wallet_api.app"),
}


class Which(StrEnum):
    issuer = "issuer"
    verifier = "verifier"
    wallet = "wallet"
    all = "all"


def _load(path: str) -> object:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def safe_url(url: str) -> str:
    """The database URL with any password hidden (it is printed)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def head_revision(migrations: Path) -> str:
    """The newest revision of a migrations folder."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(migrations)).get_heads()
    return ",".join(heads) or "none"


def _transient(exc: BaseException) -> bool:
    """Whether a connection error may go away by itself: the server is not listening yet (refused, no
    route, its name not yet in DNS), is starting up or shutting down (the postgres image's init server),
    or did not answer in time. Wrong passwords, missing databases and bad URLs are not."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (OSError, TimeoutError)):
            return True
        if type(current).__name__ in ("CannotConnectNowError", "TooManyConnectionsError",
                                      "ConnectionDoesNotExistError"):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return False


def wait_for_database(url: str, seconds: float, *, report: Callable[[str], None] = print) -> None:
    """Return once the database at ``url`` accepts a connection, trying for up to ``seconds``.

    For a one-shot migration job started with the database server (compose): the first connections may
    be refused. Transient errors are retried (with ``report`` telling of each wait); others, and the
    last one after the deadline, are raised.
    """
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def probe(timeout: float) -> None:
        engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": timeout})
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            asyncio.run(probe(max(1.0, min(5.0, remaining))))
            return
        except Exception as exc:
            remaining = deadline - time.monotonic()
            if not _transient(exc) or remaining <= 0:
                raise
            delay = min(1.0, remaining)
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            report(f"waiting for the database ({remaining:.0f} s left, attempt {attempt}): {reason}")
            time.sleep(delay)


def upgrade_service(schema: ServiceSchema, database_url: str | None = None, *, wait: float = 0,
                    report: Callable[[str], None] = print) -> dict[str, str]:
    """Upgrade one service's database to the newest revision; return what was done (printable).

    ``wait``: seconds to keep retrying while a PostgreSQL server refuses connections (see
    :func:`wait_for_database`); 0 tries once.
    """
    from service_kit.migrations import run_migrations

    settings_cls = _load(schema.settings)
    settings = settings_cls(**({"database_url": database_url} if database_url else {}))  # type: ignore[operator]
    migrations = Path(_load(f"{schema.migrations}:MIGRATIONS"))  # type: ignore[arg-type]
    url = settings.database_url
    if wait > 0 and url.startswith("postgresql"):
        wait_for_database(url, wait, report=report)
    if url.startswith("sqlite"):
        # A fresh installation: the SQLite file's folder may not exist yet.
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    run_migrations(migrations, url)
    return {"service": schema.name, "database": safe_url(url), "revision": head_revision(migrations)}


def _progress(message: str) -> None:
    """Progress while waiting for the database, on stderr (stdout may be --json)."""
    import sys

    print(message, file=sys.stderr, flush=True)


@app.command("upgrade")
def upgrade(
    service: Annotated[Which, typer.Option("--service", help="Which service's database to upgrade.")] = Which.all,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Database URL to use instead of the service's configuration (one service only).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print [{"service", "database", "revision"}].')] = False,
    wait: Annotated[float, typer.Option(
        "--wait", min=0, metavar="SECONDS",
        help="Keep retrying for up to this long while the PostgreSQL server refuses connections or is still "
             "starting (a migration job started with the database). 0: try once.")] = 0,
) -> None:
    """Apply the Alembic migrations of the issuer, verifier and/or wallet to their configured databases.

    Configuration comes from each service's environment variables (for example
    CARTERA_ISSUER_DATABASE_URL=postgresql+asyncpg://user:password@host/issuer); without one, the
    service's SQLite file under its data_dir (var/ by default). Safe to run again: an up-to-date
    database is left as it is.
    """
    chosen = list(SERVICES.values()) if service is Which.all else [SERVICES[service.value]]
    if database_url and len(chosen) > 1:
        fail("--database-url needs --service (each service owns its database)")
    done: list[dict[str, str]] = []
    for schema in chosen:
        started = time.monotonic()
        try:
            with console.status(f"Upgrading the {schema.name} database…"):
                row = upgrade_service(schema, database_url, wait=wait, report=_progress)
        except Exception as exc:  # noqa: BLE001 - any driver or settings error becomes a readable message
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                fail(f"{schema.name}: invalid configuration ({problems})")
            fail(f"{schema.name}: migration failed ({error_summary(exc)})",
                 hint="check the database URL and that the database server is reachable")
        done.append(row)
        if not as_json:
            console.print(f"[green]✓[/] {row['service']}: {safe(row['database'])} at revision {safe(row['revision'])} "
                          f"({time.monotonic() - started:.1f} s)", highlight=False)
    if as_json:
        print_json(done)
