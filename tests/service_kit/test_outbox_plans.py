"""The webhook outbox of every service, on PostgreSQL: a delivery round reads the rows that are due,
not the record of every delivery made before (``ix_webhook_outbox_due``, partial on the undelivered);
the retention purge reads the rows past the retention, not the month of records that are not."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

import asyncpg
import pytest

from service_kit.webhooks import GIVEN_UP, OUTBOX_RETENTION, due_webhooks, finished_webhooks
from tests.support.plans import (
    describe,
    indexes_used,
    plan_nodes,
    plans_before_any_analyze,
    rows_filtered_out,
)
from tests.support.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
DELIVERED = 2000
DUE = 5
GIVEN_UP_ROWS = 1000

#: service → (its own outbox columns with a value, rows the outbox refers to)
SERVICES = {
    "issuer": ({"tenant_id": "'tenant'"}, []),
    "verifier": ({"url": "'https://agency.example/hook'"}, []),
    "wallet_api": ({"wallet_id": "'wallet'"}, [
        "INSERT INTO wallets (id, subject_index, data_key, profile, created_at, pin_failures) "
        "VALUES ('wallet', 'subject', '\\x00', '\\x00', now(), 0)"]),
}


def _fill(service: str):  # noqa: ANN202 - the fill callback of plans_before_any_analyze
    extra, before = SERVICES[service]
    columns = ", ".join(extra)
    values = ", ".join(extra.values())

    async def fill(conn: asyncpg.Connection) -> None:
        for statement in before:
            await conn.execute(statement)
        rows = "(id, endpoint_id, event_type, body, attempts, created_at, next_attempt_at, delivered_at, " + columns + ")"
        # A month of deliveries, then DUE rows waiting and as many retries scheduled for later.
        await conn.execute(
            f"INSERT INTO webhook_outbox {rows} SELECT 'sent' || i, 'endpoint', 'event', '\\x00', 1, "
            f"now() - i * interval '20 minutes', now() - i * interval '20 minutes', "
            f"now() - i * interval '20 minutes', {values} FROM generate_series(1, {DELIVERED}) AS i")
        await conn.execute(
            f"INSERT INTO webhook_outbox {rows} SELECT 'due' || i, 'endpoint', 'event', '\\x00', 0, now(), "
            f"now() - i * interval '1 second', NULL, {values} FROM generate_series(1, {DUE}) AS i")
        await conn.execute(
            f"INSERT INTO webhook_outbox {rows} SELECT 'later' || i, 'endpoint', 'event', '\\x00', 2, now(), "
            f"now() + i * interval '1 minute', NULL, {values} FROM generate_series(1, {DUE}) AS i")
        # A week of an endpoint down: rows that used up their attempts, left where no round reads them.
        await conn.execute(
            f"INSERT INTO webhook_outbox {rows} SELECT 'given-up' || i, 'endpoint', 'event', '\\x00', 12, "
            f"now() - i * interval '10 minutes', $1, NULL, {values} FROM generate_series(1, {GIVEN_UP_ROWS}) AS i",
            GIVEN_UP)
        await conn.execute("ANALYZE webhook_outbox")

    return fill


def _outbox(service: str) -> type:
    model = importlib.import_module(f"{service}.models")
    return next(m.class_ for m in model.Base.registry.mappers if m.local_table.name == "webhook_outbox")


@pytest.mark.parametrize("service", list(SERVICES))
def test_a_delivery_round_reads_only_the_due_rows(postgres_cluster: PostgresCluster, service: str) -> None:
    outbox = _outbox(service)
    # Half a minute on: the fill runs after this line, and its due rows (a second or more before its
    # now()) must be due whatever the time it takes; the later ones are a minute or more ahead.
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    plans = plans_before_any_analyze(postgres_cluster, ROOT / service / "migrations", _fill(service),
                                     {"due": (due_webhooks(outbox, now), {})})
    plan = plans["due"]
    # With the index on every row's next_attempt_at the round walked the 2,000 delivered rows too, and
    # with a past next_attempt_at it would walk the 1,000 given up.
    assert plan["Actual Rows"] == DUE, describe(plan)
    assert indexes_used(plan) == ["ix_webhook_outbox_due"], describe(plan)
    assert rows_filtered_out(plan) == 0, describe(plan)


@pytest.mark.parametrize("service", list(SERVICES))
def test_the_retention_purge_reads_only_the_rows_past_it(postgres_cluster: PostgresCluster, service: str) -> None:
    outbox = _outbox(service)
    # Ten minutes on, so that no delivery (one every 20 minutes) sits on the boundary: the ones made
    # 14 days ago or earlier, i = 1008..2000, are past it.
    cutoff = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10) - OUTBOX_RETENTION
    past = DELIVERED - 1008 + 1
    plans = plans_before_any_analyze(postgres_cluster, ROOT / service / "migrations", _fill(service),
                                     {"purge": (finished_webhooks(outbox, cutoff, max_attempts=12, limit=5000), {})})
    plan = plans["purge"]
    # Without ix_webhook_outbox_created_at every purge read the whole table: the 1,007 recent deliveries,
    # the 1,000 given up this week and the rows still owed. (The rows found are then deleted by id.)
    assert indexes_used(plan) == ["ix_webhook_outbox_created_at"], describe(plan)
    assert not [n for n in plan_nodes(plan) if n["Node Type"] == "Seq Scan"], describe(plan)
    assert rows_filtered_out(plan) == 0, describe(plan)
    assert plan["Actual Rows"] == past, describe(plan)
