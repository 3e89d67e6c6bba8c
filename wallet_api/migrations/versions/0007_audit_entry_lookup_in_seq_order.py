"""audit entries: index (chain_id, entry_id, seq), so an entry's lookup reads that entry, not the chain

``service_kit.audit.find_entry`` asks for the first entry of an id in a chain (``chain_id = $1 AND
entry_id = $2 ORDER BY seq LIMIT 1``: an id may have later entries). With the index on (chain_id,
entry_id) the order had to come from a sort, and the planner preferred walking the primary key
(chain_id, seq) in order until the id turned up: 994 rows filtered out in a 1,000-entry chain
without statistics. An inclusion proof then read the wallet's chain up to its entry: every share and
login before it. With seq in the index the lookup is one index range, already in order: three
buffers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 19:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entries_entry')
        batch_op.create_index('ix_audit_entries_entry', ['chain_id', 'entry_id', 'seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entries_entry')
        batch_op.create_index('ix_audit_entries_entry', ['chain_id', 'entry_id'], unique=False)
