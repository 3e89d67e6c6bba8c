"""deferred transactions: when the data source may be asked again

A deferred transaction now records ``next_poll_at``, the moment the data source said it might answer
(its ``retry_after``, at most an hour away): a wallet polling before it is told how long is left and the
source is not asked again. Transactions created before this migration have none, and their next poll
asks the source as before.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service_kit.db

revision: str = '0017'
down_revision: str | Sequence[str] | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('deferred_transactions') as batch:
        batch.add_column(sa.Column('next_poll_at', service_kit.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deferred_transactions') as batch:
        batch.drop_column('next_poll_at')
