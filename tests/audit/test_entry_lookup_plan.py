"""Finding one entry of a long audit chain (an inclusion proof) reads that entry, not the chain before it.

``service_kit.audit.find_entry`` asks for an id's first entry (``ORDER BY seq LIMIT 1``). With an
index on (chain_id, entry_id) only, PostgreSQL without statistics walked the primary key in ``seq``
order to the entry: 2,994 rows filtered out in a 3,000-entry issuer chain, 994 in a 1,000-entry
wallet chain (migrations 0006). Both services' migrations 0007 put ``seq`` in the index.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import asyncpg
import pytest

from service_kit.audit import entry_query
from tests.support.plans import plans_before_any_analyze, wasteful
from tests.support.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
CHAIN = "chain-bench"
#: Per service: the chain's owner row, the columns its entries add to the shared mixin's, a chain
#: length and the entries' ids (``c_...`` credential ids, history ids) with which the old index misled
#: the planner. Which plan wins without statistics depends on the table's size and row width: the
#: old index was not always wrong, so these are the shapes it was seen failing with.
OWNERS = {
    "issuer": ("INSERT INTO tenants (id, slug, name, display, body_id, created_at) "
               f"VALUES ('{CHAIN}', 'bench', 'Bench', '[]', '', now())", "salt, content", "'salt', NULL", 3000, "c_"),
    "wallet_api": ("INSERT INTO wallets (id, subject_index, data_key, profile, created_at, pin_failures) "
                   f"VALUES ('{CHAIN}', 'subject', '\\x00', '\\x00', now(), 0)", "sealed", "'\\x00'", 1000, "history"),
}


@pytest.mark.parametrize("service", sorted(OWNERS))
def test_an_audit_entry_is_found_without_reading_the_chain_before_it(postgres_cluster: PostgresCluster,
                                                                     service: str) -> None:
    owner, columns, values, rows, prefix = OWNERS[service]

    async def one_long_chain(conn: asyncpg.Connection) -> None:
        await conn.execute("ALTER TABLE audit_entries SET (autovacuum_enabled = false)")
        await conn.execute(owner)
        await conn.execute(
            f"INSERT INTO audit_entries (chain_id, seq, entry_id, kind, at, digest, prev_hash, entry_hash, {columns}) "
            f"SELECT '{CHAIN}', i, '{prefix}' || i, 'issued', 'at', 'digest', 'prev', 'hash', {values} "
            f"FROM generate_series(1, {rows}) AS i")

    entries = importlib.import_module(f"{service}.models").AuditEntry
    plans = plans_before_any_analyze(postgres_cluster, ROOT / service / "migrations", one_long_chain, {
        "audit entry": (entry_query(entries, CHAIN, f"{prefix}{rows - 5}"), {})})
    assert not wasteful(plans, max_buffers=10), wasteful(plans)
