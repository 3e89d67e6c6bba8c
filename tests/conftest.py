"""Project-wide fixtures: databases for storage tests, on SQLite and on a real PostgreSQL.

- ``postgres_cluster`` / ``postgres_url`` (session): a throwaway PostgreSQL server, started on first use
  (each pytest-xdist worker starts its own; nothing is shared between workers).
- ``database_url`` (function, parametrised ``sqlite`` / ``postgresql``): a fresh, empty database for
  one test.

PostgreSQL tests never skip: without the server binaries they fail, saying to run
``scripts/ensure-test-deps.sh``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresCluster, PostgresUnavailable


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the web wallet's browser tests last, in any selection of tests.

    Their session-scoped browser (Playwright's sync API) keeps an event loop running in the worker's
    main thread until the session ends, and every test after them on that worker then fails in
    ``asyncio.run`` or anyio ("cannot be called from a running event loop"). pytest-xdist hands tests
    out in collection order, so with these last no worker runs another test after one of them.
    """
    items.sort(key=lambda item: item.nodeid.startswith("tests/web_wallet/"))


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """URL (``postgresql+asyncpg://``) of the test cluster's admin database."""
    return postgres_cluster.url()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database URL: a temp SQLite file, or a new database on the test cluster."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database()
    try:
        yield url
    finally:
        cluster.drop_database(url)
