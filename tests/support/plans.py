"""PostgreSQL plans of a service's own statements, as asyncpg runs them: prepared, then the *generic* plan.

asyncpg prepares every statement; after five executions PostgreSQL may keep a generic plan, chosen
without the parameter values. Before a table's first ANALYZE (a new deployment, a restore, a major
upgrade) such a plan can take an index on a low-selectivity column (tenant, agency, wallet, status)
instead of the unique key, and read every row behind it on each lookup. :func:`generic_plan` shows
the plan actually run (``EXPLAIN (ANALYZE, BUFFERS)``) with ``plan_cache_mode = force_generic_plan``
set on the connection; :func:`rows_filtered_out` and :func:`buffers` sum what it read for nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql

from service_kit.migrations import run_migrations
from tests.support.postgres import PostgresCluster


def _positional(statement: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    compiled = statement.compile(dialect=postgresql.asyncpg.dialect(), compile_kwargs={"render_postcompile": True})
    return str(compiled), tuple(compiled.positiontup), dict(compiled.params)


def _literal(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


async def generic_plan(conn: asyncpg.Connection, name: str, statement: Any, values: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of ``statement`` (a SQLAlchemy statement) run as prepared statement ``name``,
    with ``values`` for its bound parameters. The caller sets ``plan_cache_mode = force_generic_plan``.

    It runs for real: an UPDATE changes its row."""
    sql, order, constants = _positional(statement)
    values = {**constants, **values}
    await conn.execute(f"PREPARE {name} AS {sql}")
    literals = [await conn.fetchval("SELECT quote_nullable($1::text)", _literal(values[p])) for p in order]
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({', '.join(literals)})")
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of ``plan``, depth first."""
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


def rows_filtered_out(plan: dict[str, Any]) -> int:
    """Rows read and then thrown away by a filter or a join filter, over the whole plan."""
    return sum(node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Join Filter", 0)
               for node in plan_nodes(plan))


def buffers(plan: dict[str, Any]) -> int:
    """Shared buffers the statement touched (hit or read)."""
    return int(plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0))


def indexes_used(plan: dict[str, Any]) -> list[str]:
    """Names of the indexes the plan scans, in plan order."""
    return [node["Index Name"] for node in plan_nodes(plan) if "Index Name" in node]


def describe(plan: dict[str, Any]) -> str:
    """One line for an assertion message: node types, indexes, rows filtered out, buffers."""
    steps = [node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else "")
             for node in plan_nodes(plan)]
    return f"{' > '.join(steps)}; {rows_filtered_out(plan)} rows filtered out, {buffers(plan)} buffers"


def plans_before_any_analyze(cluster: PostgresCluster, migrations: Path,
                             fill: Callable[[asyncpg.Connection], Awaitable[None]],
                             steps: dict[str, tuple[Any, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The generic plan of each step (name → (statement, parameter values)), in order, on a new
    database of ``cluster`` migrated to head and filled by ``fill`` (which keeps autovacuum away):
    the plans of a new deployment, a restore or a major upgrade, before any statistics."""
    url = cluster.create_database()
    try:
        run_migrations(migrations, url)
        return asyncio.run(_plans(url, fill, steps))
    finally:
        cluster.drop_database(url)


async def _plans(url: str, fill: Callable[[asyncpg.Connection], Awaitable[None]],
                 steps: dict[str, tuple[Any, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await fill(conn)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        return {name: await generic_plan(conn, f"step{i}", statement, values)
                for i, (name, (statement, values)) in enumerate(steps.items())}
    finally:
        await conn.close()


def wasteful(plans: dict[str, dict[str, Any]], max_buffers: int = 40) -> dict[str, str]:
    """The plans that found nothing they were meant to find, read rows for nothing, or touched
    ``max_buffers`` buffers or more, described; each plan is meant to return exactly one row."""
    return {name: describe(plan) for name, plan in plans.items()
            if plan["Actual Rows"] != 1 or rows_filtered_out(plan) or buffers(plan) >= max_buffers}
