"""credential types: the platform admin shares a vct with other tenants

Since 0015 a ``vct`` belongs to the first tenant that registered it, which kept one issuer service
from hosting several town councils that each issue the shared built-in padró type. ``vct_shares``
lists the tenants, besides the owner, that the platform admin allowed to register types under a
``vct``. No existing row is changed: nothing is shared until the platform admin shares it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service_kit.db

revision: str = '0016'
down_revision: str | Sequence[str] | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('vct_shares',
    sa.Column('vct', sa.String(length=500), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_vct_shares_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vct'], ['vct_owners.vct'], name=op.f('fk_vct_shares_vct_vct_owners'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vct', 'tenant_id', name=op.f('pk_vct_shares'))
    )
    with op.batch_alter_table('vct_shares', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vct_shares_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('vct_shares', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vct_shares_tenant_id'))
    op.drop_table('vct_shares')
