"""aries channel: exchanges, tenant DIDs, webhook keys and processed webhook events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service_kit.db

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'aries_exchanges',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('tenant_id', sa.String(length=40), nullable=False),
        sa.Column('type_id', sa.String(length=100), nullable=False),
        sa.Column('proof_type', sa.String(length=40), nullable=False),
        sa.Column('subject', sa.JSON(), nullable=False),
        sa.Column('selector', sa.String(length=100), nullable=True),
        sa.Column('short_code_hash', sa.String(length=80), nullable=False),
        sa.Column('invitation_msg_id', sa.String(length=100), nullable=False),
        sa.Column('invitation', sa.JSON(), nullable=False),
        sa.Column('invitation_url', sa.Text(), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('connection_id', sa.String(length=100), nullable=True),
        sa.Column('cred_ex_id', sa.String(length=100), nullable=True),
        sa.Column('thread_id', sa.String(length=100), nullable=True),
        sa.Column('credential_id', sa.String(length=40), nullable=True),
        sa.Column('error', sa.String(length=100), nullable=True),
        sa.Column('created_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_aries_exchanges_tenant_id_tenants'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_aries_exchanges')),
        sa.UniqueConstraint('short_code_hash', name=op.f('uq_aries_exchanges_short_code_hash')),
        sa.UniqueConstraint('invitation_msg_id', name=op.f('uq_aries_exchanges_invitation_msg_id')),
        sa.UniqueConstraint('cred_ex_id', name=op.f('uq_aries_exchanges_cred_ex_id')),
        sa.UniqueConstraint('thread_id', name=op.f('uq_aries_exchanges_thread_id')),
    )
    with op.batch_alter_table('aries_exchanges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aries_exchanges_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_aries_exchanges_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_aries_exchanges_expires_at'), ['expires_at'], unique=False)
    op.create_table(
        'aries_tenant_dids',
        sa.Column('tenant_id', sa.String(length=40), nullable=False),
        sa.Column('proof_type', sa.String(length=40), nullable=False),
        sa.Column('did', sa.String(length=300), nullable=False),
        sa.Column('created_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_aries_tenant_dids_tenant_id_tenants'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant_id', 'proof_type', name=op.f('pk_aries_tenant_dids')),
    )
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
    op.drop_table('aries_tenant_dids')
    op.drop_table('aries_exchanges')
