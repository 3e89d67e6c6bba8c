"""rate limits: one GCRA bucket per hashed key, shared by every worker

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 08:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'rate_limits',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('tat', sa.Double(), nullable=False),
        sa.Column('tolerance', sa.Double(), nullable=False),
        sa.Column('allowed', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_limits')),
    )
    with op.batch_alter_table('rate_limits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rate_limits_tat'), ['tat'], unique=False)


def downgrade() -> None:
    op.drop_table('rate_limits')
