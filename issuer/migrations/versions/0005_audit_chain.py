"""audit chain: entries, heads, signed checkpoints

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service_kit.db

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_entries',
    sa.Column('chain_id', sa.String(length=40), nullable=False),
    sa.Column('salt', sa.String(length=32), nullable=False),
    sa.Column('content', sa.JSON(), nullable=True),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('entry_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['chain_id'], ['tenants.id'], name=op.f('fk_audit_entries_chain_id_tenants'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('chain_id', 'seq', name=op.f('pk_audit_entries'))
    )
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entries_entry', ['chain_id', 'entry_id'], unique=False)
    op.create_table('audit_heads',
    sa.Column('chain_id', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('head', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['chain_id'], ['tenants.id'], name=op.f('fk_audit_heads_chain_id_tenants'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('chain_id', name=op.f('pk_audit_heads'))
    )
    op.create_table('audit_checkpoints',
    sa.Column('chain_id', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.Column('created_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chain_id'], ['tenants.id'], name=op.f('fk_audit_checkpoints_chain_id_tenants'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('chain_id', 'seq', name=op.f('pk_audit_checkpoints'))
    )


def downgrade() -> None:
    op.drop_table('audit_checkpoints')
    op.drop_table('audit_heads')
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entries_entry')
    op.drop_table('audit_entries')
