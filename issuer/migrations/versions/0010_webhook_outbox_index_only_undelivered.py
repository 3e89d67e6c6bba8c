"""webhook outbox: index only the undelivered rows, so a delivery round reads what is due

Every worker asks, every second or two, for the undelivered rows that are due
(``delivered_at IS NULL AND next_attempt_at <= now``). Delivered rows stay in the table (the
delivery record) with a past ``next_attempt_at``, so the index on ``next_attempt_at`` led each
round through every delivery ever made. The partial index holds the undelivered rows only.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | Sequence[str] | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index('ix_webhook_outbox_next_attempt_at', table_name='webhook_outbox')
    op.create_index('ix_webhook_outbox_due', 'webhook_outbox', ['next_attempt_at'], unique=False,
                    postgresql_where=sa.text('delivered_at IS NULL'), sqlite_where=sa.text('delivered_at IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_webhook_outbox_due', table_name='webhook_outbox')
    op.create_index('ix_webhook_outbox_next_attempt_at', 'webhook_outbox', ['next_attempt_at'], unique=False)
