"""The issuer's schema: what the migrations build is what the models declare, and on PostgreSQL the
protocol lookups (offer code, access token, nonce) read their own row whatever the statistics say,
and a sealed credential response stays in its table's page instead of going to TOAST."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import os
from pathlib import Path

import asyncpg
import pytest

from issuer import statements
from service_kit.migrations import run_migrations
from tests.support.plans import describe, indexes_used, plan_nodes, plans_before_any_analyze, wasteful
from tests.support.postgres import PostgresCluster
from tests.support.schema import migrations_vs_models

MIGRATIONS = Path(__file__).resolve().parents[2] / "issuer" / "migrations"
TENANT = "t_bench"
ROWS = 3000


def test_migrations_at_head_build_exactly_the_models_schema(database_url: str) -> None:
    assert migrations_vs_models(MIGRATIONS, database_url, "issuer.models", "issuer.aries_models") == []


async def _one_busy_tenant(conn: asyncpg.Connection) -> None:
    """A new deployment (or a restore, or a major upgrade): thousands of rows of one tenant and no
    statistics yet, which autovacuum is kept from gathering during the test."""
    for table in ("offers", "access_tokens", "nonces"):
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    await conn.execute("INSERT INTO tenants (id, slug, name, display, body_id, created_at) "
                       f"VALUES ('{TENANT}', 'bench', 'Bench', '[]', '', now())")
    await conn.execute(
        "INSERT INTO offers (id, tenant_id, code_hash, tx_code_hash, tx_code_attempts, configuration_ids, "
        "credential_ids, subject, offer_json, used, burnt, created_at, expires_at) "
        f"SELECT 'o' || i, '{TENANT}', 'code' || i, 'tx' || i, 0, '[\"t\"]', '{{}}', '{{}}', '{{}}', false, false, "
        f"now(), now() + interval '1 hour' FROM generate_series(1, {ROWS}) AS i")
    await conn.execute(
        "INSERT INTO access_tokens (token_hash, tenant_id, subject, configuration_ids, credential_ids, login, "
        f"expires_at) SELECT 'token' || i, '{TENANT}', '{{}}', '[\"t\"]', '{{}}', '{{}}', now() + interval '1 hour' "
        f"FROM generate_series(1, {ROWS}) AS i")
    await conn.execute("INSERT INTO nonces (nonce_hash, tenant_id, expires_at) "
                       f"SELECT 'nonce' || i, '{TENANT}', now() + interval '1 hour' FROM generate_series(1, {ROWS}) i")


def test_protocol_lookups_read_only_their_row_before_postgresql_has_statistics(
        postgres_cluster: PostgresCluster) -> None:
    now = dt.datetime.now(dt.UTC)
    later = now + dt.timedelta(minutes=5)
    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _one_busy_tenant, {
        "access token": (statements.CREDENTIAL_REQUEST_STATE, {
            "token_hash": "token1234", "tenant_id": TENANT, "now": now, "request_hash": "r", "configuration_id": "t"}),
        "offer code": (statements.PG_REDEEM_OFFER_AND_INSERT_TOKEN, {
            "b_code_hash": "code1234", "b_tenant_id": TENANT, "now": now, "b_tx_code_hash": "tx1234",
            "b_max_attempts": 3, "b_token_hash": "new-token", "b_expires_at": later, "b_dpop_jkt": None}),
        "nonce": (statements.PG_CONSUME_NONCE_AND_CLAIM, {
            "b_nonce_hash": "a-new-one", "b_tenant_id": TENANT, "b_nonce_expires_at": later, "b_token_hash": "token1234",
            "b_configuration_id": "t", "b_request_hash": "r", "b_created_at": now, "b_expires_at": later}),
    })
    # One row per table, found by its unique key: nothing read and thrown away. With an index on
    # tenant_id the generic plans used it here and filtered out every other row of the tenant.
    assert not wasteful(plans), wasteful(plans)


UNANSWERED = 7  # of ROWS Aries exchanges, invitations nobody answered that expired days ago
OPEN = 5  # invitations still open


async def _exchanges_mostly_done(conn: asyncpg.Connection) -> None:
    """ROWS Aries exchanges, analyzed: almost all went on (issued) long after their invitation expired."""
    await conn.execute("ALTER TABLE aries_exchanges SET (autovacuum_enabled = false)")
    await conn.execute("INSERT INTO tenants (id, slug, name, display, body_id, created_at) "
                       f"VALUES ('{TENANT}', 'bench', 'Bench', '[]', '', now())")
    await conn.execute(
        "INSERT INTO aries_exchanges (id, tenant_id, type_id, proof_type, subject, short_code_hash, "
        "invitation_msg_id, invitation, invitation_url, state, created_at, expires_at, updated_at) "
        f"SELECT 'ax' || i, '{TENANT}', 't', 'p', '{{}}', 'code' || i, 'msg' || i, '{{}}', 'u', "
        f"CASE WHEN i <= {UNANSWERED + OPEN} THEN 'invited' ELSE 'issued' END, now() - interval '3 days', "
        f"CASE WHEN i <= {UNANSWERED} OR i > {UNANSWERED + OPEN} THEN now() - interval '3 days' "
        f"ELSE now() + interval '1 hour' END, now() FROM generate_series(1, {ROWS}) AS i")
    await conn.execute("ANALYZE aries_exchanges")


def test_the_purge_of_unanswered_invitations_reads_only_the_invitations(postgres_cluster: PostgresCluster) -> None:
    from issuer.grants import INVITATION_KEPT, unanswered_invitations

    now = dt.datetime.now(dt.UTC)
    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _exchanges_mostly_done,
                                     {"purge": (unanswered_invitations(now - INVITATION_KEPT), {})})
    plan = plans["purge"]
    # With the state as a bound parameter a generic plan took the expires_at index and read every
    # exchange whose invitation expired long ago (all of them, nearly).
    scans = [n for n in plan_nodes(plan) if "Scan" in n["Node Type"]]
    assert indexes_used(plan) == ["ix_aries_exchanges_state"], describe(plan)
    assert sum(n["Actual Rows"] for n in scans) == UNANSWERED, describe(plan)
    assert sum(n.get("Rows Removed by Filter", 0) for n in scans) <= OPEN, describe(plan)


@pytest.mark.parametrize("table", ["offers", "access_tokens", "nonces", "stored_responses", "deferred_transactions",
                                   "authorization_requests"])
def test_protocol_state_has_no_index_led_by_the_tenant(table: str) -> None:
    """Found by their own unique key only: an index on tenant_id serves no query and misleads the planner."""
    models = importlib.import_module("issuer.models")
    indexed = [tuple(c.name for c in index.columns) for index in models.Base.metadata.tables[table].indexes]
    assert not [cols for cols in indexed if cols[0] == "tenant_id"]


async def _toast_pages_after_storing_a_response(url: str) -> tuple[int, int]:
    """Store one sealed-response-sized row (random bytes compress no better than a sealed body) and
    return (its stored size, the pages of the table's TOAST relation)."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute("INSERT INTO stored_responses (request_hash, tenant_id, status_code, sealed_body, expires_at) "
                           "VALUES ('r1', 't', 200, $1, now())", os.urandom(2700))
        await conn.execute("CHECKPOINT")
        size = await conn.fetchval("SELECT pg_column_size(sealed_body) FROM stored_responses")
        toast = await conn.fetchval("SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'stored_responses'")
        return int(size), int(toast) // 8192
    finally:
        await conn.close()


@pytest.mark.parametrize(("revision", "toasted"), [("0007", True), ("head", False)])
def test_a_sealed_credential_response_stays_in_the_table_page(postgres_cluster: PostgresCluster, revision: str,
                                                               toasted: bool) -> None:
    """Issuance writes a ~2.7 kB sealed response per credential: past PostgreSQL's default 2 kB tuple
    target it went to TOAST (chunk rows and index entries per credential); from migration 0008 it
    stays inline. Revision 0007 shows the test can tell the two apart."""
    url = postgres_cluster.create_database()
    run_migrations(MIGRATIONS, url, revision)
    size, toast_pages = asyncio.run(_toast_pages_after_storing_a_response(url))
    assert size >= 2700  # not compressed either way
    assert (toast_pages > 0) is toasted
