"""deferred transactions: index expires_at, so the purge of expired ones is a range read

Expired deferred transactions (they hold the citizen's identifier and name, and the sealed
credential response once the source answered) were never deleted; ``grants.purge_expired`` now
deletes them, and expired authorization requests, with the rest of the expired protocol state.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0011'
down_revision: str | Sequence[str] | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_deferred_transactions_expires_at', 'deferred_transactions', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_deferred_transactions_expires_at', table_name='deferred_transactions')
