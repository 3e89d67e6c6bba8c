"""The verifier's schema: what the migrations build is what the models declare, and on PostgreSQL the
lookups of a transaction or a template by its key read their own row whatever the statistics say."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select

from tests.support.plans import describe, indexes_used, plans_before_any_analyze, rows_filtered_out, wasteful
from tests.support.postgres import PostgresCluster
from tests.support.schema import migrations_vs_models
from verifier import statements
from verifier.aries_channel import PRESENTATION_FOR_CODE, PRESENTATION_FOR_TX
from verifier.models import Template

MIGRATIONS = Path(__file__).resolve().parents[2] / "verifier" / "migrations"
AGENCY = "agency-bench"
ROWS = 3000
LAST = ROWS - 1  # the rows looked up come late in an index on the agency: a plan using it reads the others first


def test_migrations_at_head_build_exactly_the_models_schema(database_url: str) -> None:
    assert migrations_vs_models(MIGRATIONS, database_url, "verifier.models", "verifier.aries_models") == []


async def _one_busy_agency(conn: asyncpg.Connection) -> None:
    """A new deployment (or a restore, or a major upgrade): thousands of transactions and templates of
    one agency and no statistics yet, which autovacuum is kept from gathering during the test."""
    for table in ("agencies", "api_keys", "templates", "transactions", "aries_presentations"):
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    await conn.execute("INSERT INTO agencies (id, slug, name, signing_key, x5c, webhook_secret, created_at) "
                       f"VALUES ('{AGENCY}', 'bench', 'Bench', '\\x00', '[]', '\\x00', now())")
    await conn.execute("INSERT INTO api_keys (id, agency_id, key_hash, label, created_at) "
                       f"VALUES ('key', '{AGENCY}', 'sha256$key', '', now())")
    await conn.execute(
        "INSERT INTO templates (id, agency_id, name, dcql_query, purpose, trusted_issuers, anchors_pem, "
        "retention_seconds, response_mode, created_at, updated_at) "
        f"SELECT 'tpl' || i, '{AGENCY}', 'name' || i, '{{}}', '{{}}', '[]', '[]', 60, 'direct_post', now(), now() "
        f"FROM generate_series(1, {ROWS}) AS i")
    await conn.execute(
        "INSERT INTO transactions (id, agency_id, dcql_query, purpose, trusted_issuers, anchors_pem, "
        "retention_seconds, client_id, response_mode, nonce, state, status, created_at, expires_at, "
        "watch_token_hash, errors, record) "
        f"SELECT 'tx' || i, '{AGENCY}', '{{}}', '{{}}', '[]', '[]', 60, 'client', 'direct_post', 'nonce' || i, "
        "'state', 'pending', now(), now() + interval '1 hour', 'watch', '[]', '{}' "
        f"FROM generate_series(1, {ROWS}) AS i")
    await conn.execute(
        "INSERT INTO aries_presentations (tx_id, pres_ex_id, thread_id, query_id, vct, request, issuers, "
        "values, short_code, invitation, invitation_url, created_at) "
        "SELECT 'tx' || i, 'pres' || i, 'thread' || i, 'q', 'vct', '{}', '[]', '{}', 'code' || i, '{}', 'url', "
        f"now() FROM generate_series(1, {ROWS}) AS i")
    await conn.execute("SET plan_cache_mode = force_generic_plan")


def test_agency_lookups_read_only_their_row_before_postgresql_has_statistics(
        postgres_cluster: PostgresCluster) -> None:
    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _one_busy_agency, {
        "result read with the API key": (statements.TRANSACTION_FOR_KEY_HASH, {
            "key_hash": "sha256$key", "tx_id": f"tx{LAST}"}),
        "template read with the API key": (statements.AGENCY_AND_TEMPLATE_BY_KEY_HASH, {
            "key_hash": "sha256$key", "name": f"name{LAST}"}),
        "Aries part of a transaction": (PRESENTATION_FOR_TX, {"tx_id": f"tx{LAST}", "agency_id": AGENCY}),
        "agency's templates": (select(Template).where(Template.agency_id == AGENCY).order_by(Template.name), {}),
    })
    listing = plans.pop("agency's templates")
    # One row per table, found by its unique key: nothing read and thrown away. With an index on
    # agency_id the generic plans used it here and filtered out the agency's other rows.
    assert not wasteful(plans), wasteful(plans)
    # The listing the dropped template index served goes through the unique (agency_id, name) index.
    assert listing["Actual Rows"] == ROWS
    assert indexes_used(listing) == ["uq_templates_agency_name"], describe(listing)


DEAD_CHECKS = 150


async def _one_busy_agency_with_dead_checks(conn: asyncpg.Connection) -> None:
    """:func:`_one_busy_agency`, and the first transactions answered but stuck in ``processing`` (their
    check's process stopped) an hour past their expiry."""
    await _one_busy_agency(conn)
    await conn.execute("UPDATE transactions SET status = 'processing', expires_at = now() - interval '1 hour' "
                       f"WHERE id IN (SELECT 'tx' || i FROM generate_series(1, {DEAD_CHECKS}) AS i)")


def test_status_checks_read_only_their_row_before_postgresql_has_statistics(
        postgres_cluster: PostgresCluster) -> None:
    now = dt.datetime.now(dt.UTC)  # the last 2,850 transactions pending and unexpired
    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _one_busy_agency_with_dead_checks, {
        "claim": (statements.CLAIM_TRANSACTION, {"tx_id": f"tx{LAST}", "now": now}),
        "claim and record the digest": (statements.CLAIM_AND_RECORD_DIGEST_PG, {
            "tx_id": f"tx{LAST - 1}", "now": now, "digest": "digest", "created": now}),
        "finish (expire a pending request)": (statements.FINISH_TRANSACTION, {
            "tx_id": f"tx{LAST - 2}", "from_status": "pending", "new_status": "expired", "new_errors": [],
            "new_completed_at": now, "new_purge_at": now, "new_result": None, "new_record": {},
            "new_response_code_hash": None}),
        "Aries short URL": (PRESENTATION_FOR_CODE, {"code": f"code{LAST - 3}", "now": now}),
        # The query of verifier.transactions.sweep, which ix_transactions_status_expires is kept for:
        # overdue pending requests and dead checks ("processing" past expiry) ...
        "sweep": (statements.OVERDUE_TRANSACTIONS, {"now": now + dt.timedelta(hours=2), "limit": 200}),
        # ... now, when only the dead checks are due.
        "sweep (dead checks)": (statements.OVERDUE_TRANSACTIONS, {"now": now, "limit": 200}),
    })
    sweep, dead = plans.pop("sweep"), plans.pop("sweep (dead checks)")
    # Found by the transaction id, the status and expiry checked on that row. Written as plain
    # equalities, they matched the sweep's (status, expires_at) index, and the generic plans scanned
    # every pending transaction of the table to pick one.
    assert not wasteful(plans), wasteful(plans)
    # ... while the sweep still finds the overdue requests through that index, the stuck "processing"
    # ones among them, and reads nothing else (the pending requests not yet due are not read).
    assert sweep["Actual Rows"] == 200
    assert indexes_used(sweep) == ["ix_transactions_status_expires"], describe(sweep)
    assert dead["Actual Rows"] == DEAD_CHECKS
    assert indexes_used(dead) == ["ix_transactions_status_expires"], describe(dead)
    assert not rows_filtered_out(dead), describe(dead)


KEPT = 4  # finished transactions whose claims are past their retention and still kept


async def _a_month_of_finished_transactions(conn: asyncpg.Connection) -> None:
    """:func:`_one_busy_agency` after a month: every transaction finished, their claims purged long
    ago or never kept (a rejection), but KEPT whose retention has just run out; analyzed."""
    await _one_busy_agency(conn)
    await conn.execute(
        "UPDATE transactions SET status = 'verified', completed_at = now() - i * interval '10 minutes', "
        "purge_at = now() - i * interval '10 minutes' + interval '1 minute', "
        f"result = CASE WHEN i <= {KEPT} THEN '\\x00'::bytea END, "
        f"claims_deleted_at = CASE WHEN i > {KEPT} AND i % 2 = 0 THEN now() END "
        f"FROM generate_series(1, {ROWS}) AS i WHERE id = 'tx' || i")
    await conn.execute("ANALYZE transactions")


def test_the_claims_purge_reads_only_the_claims_still_kept(postgres_cluster: PostgresCluster) -> None:
    now = dt.datetime.now(dt.UTC)
    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _a_month_of_finished_transactions, {
        "purge": (statements.PURGE_CLAIMS, {"now": now, "deleted_at": now})})
    purge = plans["purge"]
    # With purge_at indexed on every row the sweep walked the 3,000 finished transactions each second.
    assert indexes_used(purge) == ["ix_transactions_claims_to_purge"], describe(purge)
    assert purge["Actual Rows"] == KEPT and not rows_filtered_out(purge), describe(purge)


@pytest.mark.parametrize("table", ["transactions", "templates"])
def test_keyed_tables_have_no_index_on_the_agency_alone(table: str) -> None:
    """Found by their own unique key: an index on agency_id alone serves no query and misleads the planner."""
    models = importlib.import_module("verifier.models")
    indexed = [tuple(c.name for c in index.columns) for index in models.Base.metadata.tables[table].indexes]
    assert ("agency_id",) not in indexed
