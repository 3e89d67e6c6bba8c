"""offers and presentations: drop the wallet_id indexes that only ever led PostgreSQL to the wrong plan

An offer or a presentation request is always found by its id with the citizen's wallet checked in the
same WHERE clause (``id = $1 AND wallet_id = $2``), or an offer by its unique state hash. No query
lists a wallet's offers or presentations, and wallets are never deleted by the service, so these
indexes served nothing. Worse: before the first ANALYZE of a table (a new deployment, a restore, a
major upgrade) the planner prices ``wallet_id = $2`` like the primary key, and the generic plans of
those prepared statements took the wallet index, reading every offer or presentation of the wallet
on each step of an issuance or a presentation. Without the index the primary key is the only way in.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('offers', 'presentations')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_wallet_id'))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f'ix_{table}_wallet_id'), ['wallet_id'], unique=False)
