"""webhook outbox: index created_at, so the retention purge reads only the rows past it

Finished rows (delivered, or out of attempts) stayed for ever; they are now deleted after
``service_kit.webhooks.OUTBOX_RETENTION``, oldest first, through this index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 01:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_webhook_outbox_created_at', 'webhook_outbox', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_outbox_created_at', table_name='webhook_outbox')
