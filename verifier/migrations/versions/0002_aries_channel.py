"""aries channel: present-proof requests, webhook keys and processed webhook events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 06:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service_kit.db

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'aries_presentations',
        sa.Column('tx_id', sa.String(length=43), nullable=False),
        sa.Column('pres_ex_id', sa.String(length=100), nullable=False),
        sa.Column('thread_id', sa.String(length=100), nullable=False),
        sa.Column('query_id', sa.String(length=100), nullable=False),
        sa.Column('vct', sa.String(length=500), nullable=False),
        sa.Column('request', sa.JSON(), nullable=False),
        sa.Column('issuers', sa.JSON(), nullable=False),
        sa.Column('values', sa.JSON(), nullable=False),
        sa.Column('short_code', sa.String(length=64), nullable=False),
        sa.Column('invitation', sa.JSON(), nullable=False),
        sa.Column('invitation_url', sa.Text(), nullable=False),
        sa.Column('created_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tx_id'], ['transactions.id'], name=op.f('fk_aries_presentations_tx_id_transactions'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tx_id', name=op.f('pk_aries_presentations')),
        sa.UniqueConstraint('pres_ex_id', name=op.f('uq_aries_presentations_pres_ex_id')),
        sa.UniqueConstraint('short_code', name=op.f('uq_aries_presentations_short_code')),
    )
    with op.batch_alter_table('aries_presentations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aries_presentations_thread_id'), ['thread_id'], unique=False)
    op.create_table(
        'aries_webhook_keys',
        sa.Column('key_hash', sa.String(length=80), nullable=False),
        sa.Column('created_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key_hash', name=op.f('pk_aries_webhook_keys')),
    )
    with op.batch_alter_table('aries_webhook_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aries_webhook_keys_created_at'), ['created_at'], unique=False)
    op.create_table(
        'aries_webhook_events',
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('received_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_aries_webhook_events')),
    )
    with op.batch_alter_table('aries_webhook_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aries_webhook_events_received_at'), ['received_at'], unique=False)


def downgrade() -> None:
    op.drop_table('aries_webhook_events')
    op.drop_table('aries_webhook_keys')
    op.drop_table('aries_presentations')
