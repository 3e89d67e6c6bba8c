"""A throwaway PostgreSQL cluster for tests: initdb into a temp dir, start on a free loopback port.

Debian's ``postgresql`` package provides the binaries (``scripts/ensure-test-deps.sh`` installs it).
``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` OS user created by
the package and every server command runs through ``runuser``. For tests durability is switched off
(fsync, synchronous_commit, full_page_writes): the data is thrown away anyway and tests go much
faster. ``PostgresCluster(durable=True)`` keeps PostgreSQL's own defaults (all three on, a commit
waits for its WAL flush), for benchmarks whose figures must stand for a real deployment;
:meth:`PostgresCluster.durability` reads what the server actually runs with.

Set ``CARTERA_TEST_POSTGRES_URL`` (``postgresql+asyncpg://user:pw@host:port/db``, a role allowed to
create databases) to use an existing server instead, for example a container in CI.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit

from tests.support.servers import free_port

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them with "
    "`bash scripts/ensure-test-deps.sh` (Debian package `postgresql`; `make test` runs it)."
)


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be found or started; the message says what to do."""


def find_pg_bin() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``psql`` (newest Debian version first)."""
    override = os.environ.get("CARTERA_PG_BIN")
    if override:
        candidates = [override]
    else:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
        which = shutil.which("pg_ctl")
        if which:
            candidates.append(str(Path(which).resolve().parent))
    for candidate in candidates:
        folder = Path(candidate)
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise PostgresUnavailable(INSTALL_HINT)


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name.split(".")[0])
    except ValueError:
        return 0


class PostgresCluster:
    """A running PostgreSQL server and the means to create fresh databases on it."""

    def __init__(self, *, durable: bool = False) -> None:
        #: ``False`` (tests): fsync, synchronous_commit and full_page_writes off. ``True``: the server's
        #: defaults (all on). Not applied to an external server (``CARTERA_TEST_POSTGRES_URL``).
        self.durable = durable
        self.host = "127.0.0.1"
        self.port = 0
        self.user = "postgres"
        self.password = ""
        self.admin_db = "postgres"
        self._dir: Path | None = None
        self._bin: Path | None = None
        self._run_as: str | None = None
        self._external = False
        self._counter = 0

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> PostgresCluster:
        """Start a new cluster (or attach to ``CARTERA_TEST_POSTGRES_URL``) and return ``self``."""
        external = os.environ.get("CARTERA_TEST_POSTGRES_URL")
        if external:
            self._attach(external)
            return self
        self._bin = find_pg_bin()
        self._run_as = "postgres" if os.geteuid() == 0 else None
        if self._run_as and shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root needs `runuser` (util-linux) to start PostgreSQL")
        self._dir = Path(tempfile.mkdtemp(prefix="cartera-pg-"))
        data, sock = self._dir / "data", self._dir / "sock"
        sock.mkdir()
        self.password = secrets.token_urlsafe(18)
        pwfile = self._dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            shutil.chown(self._dir, user=self._run_as)
            for item in (sock, pwfile):
                shutil.chown(item, user=self._run_as)
        self._run(
            "initdb", "-D", str(data), "-U", self.user, "--pwfile", str(pwfile), "-E", "UTF8",
            "--locale=C", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256",
        )
        pwfile.unlink()
        self.port = free_port()
        unsafe = [] if self.durable else ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options = " ".join(
            [
                f"-c listen_addresses={self.host}",
                f"-p {self.port}",
                f"-c unix_socket_directories={sock}",
                *unsafe,
                "-c max_connections=300",
                "-c shared_buffers=64MB",
            ]
        )
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self._dir / "server.log"), "-w",
                  "-t", "60", "start")
        # If the test process ends without running fixture finalizers (Ctrl-C, a crash in a hook),
        # still stop the server rather than leaving an orphan postgres behind.
        atexit.register(self.stop)
        return self

    def _attach(self, url: str) -> None:
        parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.user = parts.username or "postgres"
        self.password = parts.password or ""
        self.admin_db = parts.path.lstrip("/") or "postgres"
        self._external = True

    def stop(self) -> None:
        """Stop the server and delete its files (nothing for an external server)."""
        if self._external or self._dir is None or self._bin is None:
            return
        try:
            self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "immediate", "-w", "stop", check=False)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- databases -------------------------------------------------------------------------------
    def url(self, database: str | None = None) -> str:
        """An asyncpg SQLAlchemy URL for ``database`` (the admin database by default)."""
        return (
            f"postgresql+asyncpg://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{database or self.admin_db}"
        )

    def socket_url(self, url: str) -> str:
        """``url`` over the server's Unix-domain socket instead of TCP (an external server: unchanged).

        What a service on the same host as its database would use: a round trip costs both sides
        less CPU than over loopback TCP (about 8 µs each measured here).
        """
        if self._dir is None:
            return url
        name = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1)).path.lstrip("/")
        return (f"postgresql+asyncpg://{quote(self.user, safe='')}:{quote(self.password, safe='')}@/{name}"
                f"?host={quote(str(self._dir / 'sock'), safe='/')}&port={self.port}")

    def create_database(self, prefix: str = "t") -> str:
        """Create a fresh empty database with a unique name and return its URL."""
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}_{secrets.token_hex(3)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, disconnecting its clients."""
        name = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1)).path.lstrip("/")
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def sql(self, statement: str) -> str:
        """Run one SQL statement on the admin database with ``psql`` and return its output."""
        psql = (self._bin / "psql") if self._bin else Path(shutil.which("psql") or "psql")
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(  # noqa: S603 - fixed argv, test-only helper
            [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port),
             "-U", self.user, "-d", self.admin_db, "-At", "-c", statement],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def durability(self) -> dict[str, str]:
        """The durability settings the server runs with, read from it (``SHOW``), not from ``durable``."""
        return {name: self.sql(f"SHOW {name}").strip()
                for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")}

    # --- helpers ---------------------------------------------------------------------------------
    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        assert self._bin is not None
        argv = [str(self._bin / tool), *args]
        if self._run_as:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        # cwd: runuser keeps the current folder, which the postgres user may not be allowed to enter.
        result = subprocess.run(  # noqa: S603 - fixed argv, test-only helper
            argv, capture_output=True, text=True, timeout=120, check=False, cwd=self._dir or "/"
        )
        if check and result.returncode != 0:
            log = ""
            if self._dir and (self._dir / "server.log").exists():
                log = (self._dir / "server.log").read_text()[-2000:]
            raise PostgresUnavailable(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()} {result.stdout.strip()} {log}"
            )

