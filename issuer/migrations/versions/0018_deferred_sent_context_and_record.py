"""deferred transactions: the query context a pending query was sent under, and the record a poll heard

A deferred transaction now keeps ``source_context``, the purpose, procedure, legal basis, official and
requesting body its pending query was sent with, so that every poll is sent (and its answer checked)
under the same context even after the tenant edits its source's; and ``sealed_record``, the record a
poll heard from the source, sealed, until the credential is recorded, so that a poll whose signing or
recording failed is retried from it instead of asking the source again (a Via Oberta answer is
delivered once). Transactions made before this migration have neither: they are polled under the
current context, as before. Downgrading drops both: a transaction whose record was kept but not yet
issued then asks the source again, which has forgotten the answer.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-09 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | Sequence[str] | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('deferred_transactions') as batch:
        batch.add_column(sa.Column('source_context', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('sealed_record', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deferred_transactions') as batch:
        batch.drop_column('sealed_record')
        batch.drop_column('source_context')
