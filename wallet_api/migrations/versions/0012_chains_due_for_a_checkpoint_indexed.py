"""audit heads: remember the last checkpointed seq, so the sweep finds the chains due without a scan

Every background sweep (each minute, in every process) looked for the chains whose head had moved
past their last checkpoint: the maximum checkpoint of every chain (a GROUP BY over every checkpoint
ever signed) joined to every wallet's head. ``audit_heads.checkpointed`` now holds the seq of the
chain's latest checkpoint (filled here from the checkpoints), and a partial index holds the heads
that moved past it: the sweep reads those only.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | Sequence[str] | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = 'seq > checkpointed'


def upgrade() -> None:
    with op.batch_alter_table('audit_heads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checkpointed', sa.Integer(), nullable=False, server_default='0'))
    op.execute("UPDATE audit_heads SET checkpointed = coalesce((SELECT max(c.seq) FROM audit_checkpoints c "
               "WHERE c.chain_id = audit_heads.chain_id), 0)")
    op.create_index('ix_audit_heads_checkpoint_due', 'audit_heads', ['chain_id'], unique=False,
                    postgresql_where=sa.text(DUE), sqlite_where=sa.text(DUE))


def downgrade() -> None:
    op.drop_index('ix_audit_heads_checkpoint_due', table_name='audit_heads')
    with op.batch_alter_table('audit_heads', schema=None) as batch_op:
        batch_op.drop_column('checkpointed')
