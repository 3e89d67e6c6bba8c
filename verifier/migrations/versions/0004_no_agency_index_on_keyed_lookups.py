"""transactions and templates: drop the agency_id indexes that only ever led PostgreSQL to the wrong plan

A transaction is always found by its id (the agency checked on the row found: the result read with the
API key, the Aries part of a request), a template by its agency *and* name. Before the first ANALYZE
of a table (a new deployment, a restore, a major upgrade) the planner prices ``agency_id = $1`` like
the unique key, and the generic plan of those prepared statements took the agency index, reading
every transaction or template of the agency on each request. ``ix_transactions_agency_id`` serves
nothing else: no query lists an agency's transactions, and agencies are never deleted by the
service. ``ix_templates_agency_id`` duplicates the leading column of ``uq_templates_agency_name``,
which serves the agency's template listing (``agency_id = $1 ORDER BY name``) as well. Without them
the unique keys are the only way in, and one index fewer is maintained on every new transaction.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 20:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('transactions', 'templates')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_agency_id'))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f'ix_{table}_agency_id'), ['agency_id'], unique=False)
