"""The wallet's schema: what the migrations build is what the models declare, and on PostgreSQL a row of
a citizen's wallet found by its id is read alone whatever the statistics say."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import delete, select, update

from tests.support.plans import (
    describe,
    indexes_used,
    plan_nodes,
    plans_before_any_analyze,
    rows_filtered_out,
    wasteful,
)
from tests.support.postgres import PostgresCluster
from tests.support.schema import migrations_vs_models
from wallet_api.models import Credential, Offer, Presentation, Session

MIGRATIONS = Path(__file__).resolve().parents[2] / "wallet_api" / "migrations"
WALLET = "wallet-bench"
ROWS = 1000
LAST = ROWS - 1  # the rows looked up come late in an index on the wallet: a plan using it reads the others first


def test_migrations_at_head_build_exactly_the_models_schema(database_url: str) -> None:
    assert migrations_vs_models(MIGRATIONS, database_url, "wallet_api.models") == []


async def _one_busy_wallet(conn: asyncpg.Connection) -> None:
    """A new deployment (or a restore, or a major upgrade): a thousand rows of one wallet in each table
    and no statistics yet, which autovacuum is kept from gathering during the test."""
    for table in ("wallets", "sessions", "credentials", "offers", "presentations"):
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    await conn.execute("INSERT INTO wallets (id, subject_index, data_key, profile, created_at, pin_failures) "
                       f"VALUES ('{WALLET}', 'subject', '\\x00', '\\x00', now(), 0)")
    rows = f"FROM generate_series(1, {ROWS}) AS i"
    await conn.execute(
        "INSERT INTO sessions (id, wallet_id, access_hash, access_expires_at, refresh_hash, refresh_expires_at, "
        "created_at, last_used_at, revoked, provider, method, assurance_level, user_agent) "
        f"SELECT 'session' || i, '{WALLET}', 'access' || i, now(), 'refresh' || i, now(), "
        f"now() + i * interval '1 second', now(), false, 'idp', '', '', '' {rows}")
    await conn.execute(
        "INSERT INTO credentials (id, wallet_id, vct, issuer, sealed, status, expiry_alerted, created_at) "
        f"SELECT 'cred' || i, '{WALLET}', 'vct', 'https://issuer', '\\x00', 'valid', false, "
        f"now() + i * interval '1 second' {rows}")
    await conn.execute(
        "INSERT INTO offers (id, wallet_id, issuer, kind, state, state_hash, sealed, created_at, expires_at) "
        f"SELECT 'offer' || i, '{WALLET}', 'https://issuer', 'offer', 'offered', 'state' || i, '\\x00', now(), "
        f"now() + interval '1 hour' {rows}")
    await conn.execute(
        "INSERT INTO presentations (id, wallet_id, state, sealed, created_at, expires_at) "
        f"SELECT 'pres' || i, '{WALLET}', 'pending', '\\x00', now(), now() + interval '1 hour' {rows}")
    await conn.execute("SET plan_cache_mode = force_generic_plan")


def _offer_and_presentation_steps() -> dict[str, tuple[Any, dict[str, Any]]]:
    now = dt.datetime.now(dt.UTC)
    # The statements of wallet_api.receiving and wallet_api.sharing: a row of the citizen's own wallet,
    # by its id (the WHERE clause keeps another wallet's row out).
    steps = {
        "offer read (load_offer)": select(Offer).where(Offer.id == f"offer{LAST}", Offer.wallet_id == WALLET),
        "offer state moved (_transition)": update(Offer).where(
            Offer.id == f"offer{LAST - 1}", Offer.wallet_id == WALLET, Offer.state.in_(["offered", "authorizing"]),
        ).values(state="accepting").returning(Offer.id),
        "offer saved (_save_offer)": update(Offer).where(Offer.id == f"offer{LAST - 2}", Offer.wallet_id == WALLET)
        .values(state="issued", sealed=b"\x01").returning(Offer.id),
        "presentation read (load_presentation)": select(Presentation).where(
            Presentation.id == f"pres{LAST}", Presentation.wallet_id == WALLET),
        "presentation claimed (_claim_state)": update(Presentation).where(
            Presentation.id == f"pres{LAST - 1}", Presentation.wallet_id == WALLET, Presentation.state == "pending",
            Presentation.expires_at > now).values(state="sending").returning(Presentation.id),
        "presentation finished (_finish)": update(Presentation).where(
            Presentation.id == f"pres{LAST - 2}", Presentation.wallet_id == WALLET)
        .values(state="sent", sealed=b"\x01").returning(Presentation.id),
    }
    return {step: (statement, {}) for step, statement in steps.items()}


def test_offer_and_presentation_steps_read_only_their_row_before_postgresql_has_statistics(
        postgres_cluster: PostgresCluster) -> None:
    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _one_busy_wallet, _offer_and_presentation_steps())
    # Found by the primary key, the wallet checked on that row. With an index on wallet_id the generic
    # plans used it here and filtered out every other row of the wallet.
    assert not wasteful(plans), wasteful(plans)


def _session_and_credential_steps() -> dict[str, tuple[Any, dict[str, Any]]]:
    # The statements of wallet_api.auth.revoke_session, wallet_api.store.load_credentials (one credential,
    # then all of them) and the credential deletion route, and the logins listing of wallet_api.routes.auth.
    steps = {
        "session revoked (revoke_session)": update(Session).where(
            Session.id == f"session{LAST}", Session.wallet_id == WALLET,
        ).values(revoked=True, access_hash=None, refresh_hash=None).returning(Session.id),
        "credential read (load_credentials)": select(Credential).where(Credential.wallet_id == WALLET)
        .where(Credential.id == f"cred{LAST}").order_by(Credential.created_at, Credential.id),
        "credential deleted (delete_credential)": delete(Credential).where(
            Credential.id == f"cred{LAST - 1}", Credential.wallet_id == WALLET).returning(Credential.id),
        "listing: logins": select(Session).where(Session.wallet_id == WALLET)
        .order_by(Session.created_at.desc()).limit(500),
        "listing: credentials": select(Credential).where(Credential.wallet_id == WALLET)
        .order_by(Credential.created_at, Credential.id),
    }
    return {step: (statement, {}) for step, statement in steps.items()}


def test_session_and_credential_lookups_read_only_their_row_and_listings_keep_their_index(
        postgres_cluster: PostgresCluster) -> None:
    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _one_busy_wallet, _session_and_credential_steps())
    listings = {step: plans.pop(step) for step in list(plans) if step.startswith("listing")}
    # One row read: the (wallet_id, id) index answers on both columns, and so does the primary key.
    # With an index on wallet_id alone the generic plans used it and filtered out the wallet's other rows.
    assert not wasteful(plans), wasteful(plans)
    # The listings that index serves: the wallet's rows through it, none read for nothing.
    assert listings["listing: logins"]["Actual Rows"] == 500
    assert listings["listing: credentials"]["Actual Rows"] == ROWS - 1  # one deleted above
    for step, plan in listings.items():
        assert rows_filtered_out(plan) == 0, f"{step}: {describe(plan)}"
        assert indexes_used(plan) in (["ix_sessions_wallet_id_id"], ["ix_credentials_wallet_id_id"]), describe(plan)


@pytest.mark.parametrize("table", ["sessions", "credentials"])
def test_tables_listed_by_wallet_index_the_wallet_with_the_id(table: str) -> None:
    """Listed by wallet, found by id and wallet: the wallet's index carries the id, never the wallet alone."""
    models = importlib.import_module("wallet_api.models")
    indexed = [tuple(c.name for c in index.columns) for index in models.Base.metadata.tables[table].indexes]
    assert [cols for cols in indexed if cols[0] == "wallet_id"] == [("wallet_id", "id")]


@pytest.mark.parametrize("table", ["offers", "presentations"])
def test_tables_found_by_id_have_no_index_on_the_wallet(table: str) -> None:
    """Found by their id only: an index on wallet_id serves no query and misleads the planner."""
    models = importlib.import_module("wallet_api.models")
    indexed = [tuple(c.name for c in index.columns) for index in models.Base.metadata.tables[table].indexes]
    assert not [cols for cols in indexed if cols[0] == "wallet_id"]


# -- the background sweep ------------------------------------------------------------------------

DUE = 7  # of ROWS credentials (and offers) whose check (poll) is due; the others are not, or never again


async def _few_due(conn: asyncpg.Connection) -> None:
    """A thousand credentials, offers and presentation requests, analyzed: most credentials checked recently or revoked (no
    next check), and alerted or far from expiry; most offers not pending (no next poll); DUE of each
    are due. (Before any statistics PostgreSQL reads a table this small whole, index or not.)"""
    for table in ("wallets", "credentials", "offers", "presentations"):
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    await conn.execute("INSERT INTO wallets (id, subject_index, data_key, profile, created_at, pin_failures) "
                       f"VALUES ('{WALLET}', 'subject', '\\x00', '\\x00', now(), 0)")
    rows = f"FROM generate_series(1, {ROWS}) AS i"
    await conn.execute(
        "INSERT INTO credentials (id, wallet_id, vct, issuer, sealed, status, next_status_check, expires_at, "
        f"expiry_alerted, created_at) SELECT 'cred' || i, '{WALLET}', 'vct', 'https://issuer', '\\x00', "
        f"CASE WHEN i > {DUE} AND i % 3 = 0 THEN 'revoked' ELSE 'valid' END, "
        f"CASE WHEN i <= {DUE} THEN now() - i * interval '1 minute' WHEN i % 3 = 0 THEN NULL "
        f"ELSE now() + interval '1 hour' END, "
        # DUE expire within days and are not alerted yet; of the others half were alerted, half expire late.
        f"CASE WHEN i <= {DUE} OR i % 2 = 0 THEN now() + i * interval '1 minute' + interval '5 days' "
        f"ELSE now() + interval '400 days' END, i > {DUE} AND i % 2 = 0, now() {rows}")
    # Due an hour ago: the test's clock was read before the cluster was migrated and seeded, which
    # can take seconds on a loaded machine (a second ago was after it, and nothing was due).
    await conn.execute(
        "INSERT INTO offers (id, wallet_id, issuer, kind, state, state_hash, sealed, created_at, expires_at, "
        f"next_poll_at) SELECT 'offer' || i, '{WALLET}', 'https://issuer', 'offer', "
        f"CASE WHEN i <= {DUE} OR i % 5 = 0 THEN 'pending' ELSE 'issued' END, 'state' || i, '\\x00', now(), "
        f"now() + interval '1 hour', CASE WHEN i <= {DUE} THEN now() - interval '1 hour' "
        f"WHEN i % 5 = 0 THEN now() + interval '5 seconds' END {rows}")
    # Offers a stopped worker left accepting (DUE), and acceptances under way.
    await conn.execute(
        "INSERT INTO offers (id, wallet_id, issuer, kind, state, sealed, created_at, expires_at) "
        f"SELECT 'accepting' || i, '{WALLET}', 'https://issuer', 'offer', 'accepting', '\\x00', now(), "
        f"CASE WHEN i <= {DUE} THEN now() - interval '1 hour' ELSE now() + interval '10 minutes' END "
        f"FROM generate_series(1, {2 * DUE}) AS i")
    # Offers that ended long ago (DUE, to purge).
    await conn.execute(
        "INSERT INTO offers (id, wallet_id, issuer, kind, state, sealed, created_at, expires_at) "
        f"SELECT 'ended' || i, '{WALLET}', 'https://issuer', 'offer', 'issued', '\\x00', "
        f"now() - interval '40 days', now() - interval '40 days' FROM generate_series(1, {DUE}) AS i")
    # Presentation requests: DUE left sending or declining by a stopped worker, DUE ended two days ago
    # (to purge), the others ended within the day, or being answered.
    await conn.execute(
        "INSERT INTO presentations (id, wallet_id, state, sealed, created_at, expires_at) "
        f"SELECT 'presentation' || i, '{WALLET}', "
        f"CASE WHEN i <= {DUE} THEN (CASE WHEN i % 2 = 0 THEN 'sending' ELSE 'declining' END) "
        f"WHEN i <= {2 * DUE} THEN 'sent' WHEN i % 3 = 0 THEN 'sending' WHEN i % 3 = 1 THEN 'sent' "
        f"ELSE 'declined' END, '\\x00', now(), "
        f"CASE WHEN i <= {DUE} THEN now() - interval '1 hour' WHEN i <= {2 * DUE} THEN now() - interval '2 days' "
        f"WHEN i % 3 = 0 THEN now() + interval '10 minutes' ELSE now() - interval '1 hour' END {rows}")
    await conn.execute("ANALYZE credentials")
    await conn.execute("ANALYZE offers")
    await conn.execute("ANALYZE presentations")


def test_the_background_sweep_reads_only_what_is_due_on_postgresql(postgres_cluster: PostgresCluster) -> None:
    from wallet_api.background import (
        OFFER_KEPT,
        PRESENTATION_KEPT,
        ended_offers,
        ended_presentations,
        expiry_alerts_due,
        polls_due,
        status_checks_due,
        stranded_offers,
        stranded_presentations,
    )

    now = dt.datetime.now(dt.UTC)
    stranded = now - dt.timedelta(minutes=15)
    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _few_due, {
        "status checks due": (status_checks_due(now), {}), "deferred polls due": (polls_due(now), {}),
        "expiry alerts due": (expiry_alerts_due(now + dt.timedelta(days=30)), {}),
        "presentations left answering": (stranded_presentations(stranded), {}),
        "offers left accepting": (stranded_offers(stranded), {}),
        "ended presentations purged": (ended_presentations(now - PRESENTATION_KEPT), {}),
        "ended offers purged": (ended_offers(now - OFFER_KEPT, now), {})})
    # Without the indexes each sweep read all the credentials, offers and presentations: about 993 rows
    # filtered out of each.
    for step, index in (("status checks due", "ix_credentials_next_status_check"),
                        ("deferred polls due", "ix_offers_next_poll_at"),
                        ("expiry alerts due", "ix_credentials_expiry_unalerted"),
                        ("presentations left answering", "ix_presentations_answering"),
                        ("offers left accepting", "ix_offers_accepting"),
                        ("ended presentations purged", "ix_presentations_expires_at"),
                        ("ended offers purged", "ix_offers_created_at")):
        assert indexes_used(plans[step]) == [index], f"{step}: {describe(plans[step])}"
    for step, plan in plans.items():
        assert plan["Actual Rows"] == DUE, f"{step}: {describe(plan)}"
        assert not [n for n in plan_nodes(plan) if n["Node Type"] == "Seq Scan"], f"{step}: {describe(plan)}"
        assert rows_filtered_out(plan) == 0, f"{step}: {describe(plan)}"


def _sqlite_value(value: Any) -> Any:
    return value.isoformat(" ") if isinstance(value, dt.datetime) else value


def test_the_background_sweep_reads_only_what_is_due_on_sqlite(tmp_path: Path) -> None:
    import sqlite3

    from sqlalchemy.dialects import sqlite

    from service_kit.migrations import run_migrations
    from wallet_api.background import (
        expiry_alerts_due,
        polls_due,
        status_checks_due,
        stranded_offers,
        stranded_presentations,
    )

    database = tmp_path / "wallet.sqlite"
    run_migrations(MIGRATIONS, f"sqlite+aiosqlite:///{database}")
    now = dt.datetime.now(dt.UTC)
    with sqlite3.connect(database) as conn:
        for name, statement in (("status checks", status_checks_due(now)), ("deferred polls", polls_due(now)),
                                ("expiry alerts", expiry_alerts_due(now)),
                                ("presentations left answering", stranded_presentations(now)),
                                ("offers left accepting", stranded_offers(now))):
            compiled = statement.compile(dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True})
            plan = " / ".join(row[3] for row in conn.execute(
                f"EXPLAIN QUERY PLAN {compiled}", [_sqlite_value(compiled.params[p]) for p in compiled.positiontup]))
            # A range of the partial index (no SCAN of the table, no sort of it).
            assert "USING INDEX ix_" in plan and "SCAN" not in plan and "TEMP B-TREE" not in plan, f"{name}: {plan}"


MOVED = 3  # of CHAINS, those whose head moved past their latest checkpoint
CHAINS = 20_000  # a table of a few pages PostgreSQL reads whole, index or not


async def _chains_mostly_checkpointed(conn: asyncpg.Connection) -> None:
    """CHAINS wallets, each with an audit chain checkpointed at its head but MOVED; analyzed."""
    for table in ("wallets", "audit_heads"):
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    rows = f"FROM generate_series(1, {CHAINS}) AS i"
    await conn.execute("INSERT INTO wallets (id, subject_index, data_key, profile, created_at, pin_failures) "
                       f"SELECT 'w' || i, 'subject' || i, '\\x00', '\\x00', now(), 0 {rows}")
    await conn.execute("INSERT INTO audit_heads (chain_id, seq, head, checkpointed) "
                       f"SELECT 'w' || i, 10, 'h', CASE WHEN i <= {MOVED} THEN 7 ELSE 10 END {rows}")
    await conn.execute("ANALYZE audit_heads")


def test_the_sweep_finds_the_chains_due_for_a_checkpoint_without_reading_the_others(
        postgres_cluster: PostgresCluster) -> None:
    from wallet_api.audit import chains_due_for_a_checkpoint

    plans = plans_before_any_analyze(postgres_cluster, MIGRATIONS, _chains_mostly_checkpointed,
                                     {"due": (chains_due_for_a_checkpoint(), {})})
    due = plans["due"]
    # Before, the sweep joined every head to the latest of every chain's checkpoints, each minute.
    assert due["Actual Rows"] == MOVED and not rows_filtered_out(due), describe(due)
    assert indexes_used(due) == ["ix_audit_heads_checkpoint_due"], describe(due)


def test_migration_0012_records_each_chains_latest_checkpoint(tmp_path: Path) -> None:
    import sqlite3

    from service_kit.migrations import run_migrations

    path = tmp_path / "wallet.sqlite"
    database_url = f"sqlite+aiosqlite:///{path}"
    run_migrations(MIGRATIONS, database_url, "0011")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for wallet, seq, checkpoints in (("a", 5, (2, 5)), ("b", 9, (4,)), ("c", 3, ())):
            conn.execute("INSERT INTO wallets (id, subject_index, data_key, profile, created_at, pin_failures) "
                         "VALUES (?, ?, x'00', x'00', '2026-01-01', 0)", (wallet, wallet))
            conn.execute("INSERT INTO audit_heads (chain_id, seq, head) VALUES (?, ?, 'h')", (wallet, seq))
            for cp in checkpoints:
                conn.execute("INSERT INTO audit_checkpoints (chain_id, seq, token, created_at) "
                             "VALUES (?, ?, 't', '2026-01-01')", (wallet, cp))
        conn.commit()
    run_migrations(MIGRATIONS, database_url)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert dict(conn.execute("SELECT chain_id, checkpointed FROM audit_heads")) == {"a": 5, "b": 4, "c": 0}
