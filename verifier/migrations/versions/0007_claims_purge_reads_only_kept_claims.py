"""transactions: index purge_at only where claims are still kept, so the purge reads what is due

Every sweep (each second, in every worker) deletes the claims of finished transactions past their
retention (``purge_at <= now AND claims_deleted_at IS NULL AND result IS NOT NULL``). Every
finished transaction has a ``purge_at``, kept after its claims are deleted and set also when there
were none, so the index on ``purge_at`` led each sweep through every transaction ever finished. The
partial index holds only the transactions whose claims are still kept.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = 'result IS NOT NULL AND claims_deleted_at IS NULL'


def upgrade() -> None:
    op.drop_index('ix_transactions_purge_at', table_name='transactions')
    op.create_index('ix_transactions_claims_to_purge', 'transactions', ['purge_at'], unique=False,
                    postgresql_where=sa.text(KEPT), sqlite_where=sa.text(KEPT))


def downgrade() -> None:
    op.drop_index('ix_transactions_claims_to_purge', table_name='transactions')
    op.create_index('ix_transactions_purge_at', 'transactions', ['purge_at'], unique=False)
