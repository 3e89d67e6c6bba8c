"""sessions and credentials: index (wallet_id, id) instead of wallet_id, so a row looked up by id reads itself

A session is revoked, and a credential read or deleted, by its id with the citizen's wallet checked in
the same WHERE clause (``id = $1 AND wallet_id = $2``). Before the first ANALYZE of a table (a new
deployment, a restore, a major upgrade) the planner prices ``wallet_id = $2`` like the primary key,
and the generic plans of those prepared statements took the wallet index, reading every session or
credential of the wallet for one. Unlike the offers' and presentations' indexes (0005) these serve a
listing: the wallet's logins (newest first) and its credentials (oldest first). An index on
(wallet_id, id) still serves both listings exactly as the wallet_id index did (the wallet's rows, then
a sort), and it answers the lookup on both columns: whichever index the planner picks, one row is read.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 21:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('sessions', 'credentials')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(f'ix_{table}_wallet_id_id', ['wallet_id', 'id'], unique=False)
            batch_op.drop_index(batch_op.f(f'ix_{table}_wallet_id'))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f'ix_{table}_wallet_id'), ['wallet_id'], unique=False)
            batch_op.drop_index(f'ix_{table}_wallet_id_id')
