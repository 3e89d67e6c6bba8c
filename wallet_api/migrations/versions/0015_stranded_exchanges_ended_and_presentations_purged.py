"""presentations and offers: index what the sweep ends and purges

A worker that stopped while answering a presentation request or accepting an offer left it
'sending', 'declining' or 'accepting' for good. The sweep now ends them once past their expiry
(partial indexes on those states), and deletes presentation requests a day after their expiry
(an index on ``presentations.expires_at``).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | Sequence[str] | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANSWERING = "state IN ('sending', 'declining')"
ACCEPTING = "state = 'accepting'"


def upgrade() -> None:
    op.create_index('ix_presentations_answering', 'presentations', ['expires_at'], unique=False,
                    postgresql_where=sa.text(ANSWERING), sqlite_where=sa.text(ANSWERING))
    op.create_index('ix_presentations_expires_at', 'presentations', ['expires_at'], unique=False)
    op.create_index('ix_offers_accepting', 'offers', ['expires_at'], unique=False,
                    postgresql_where=sa.text(ACCEPTING), sqlite_where=sa.text(ACCEPTING))


def downgrade() -> None:
    op.drop_index('ix_offers_accepting', table_name='offers')
    op.drop_index('ix_presentations_expires_at', table_name='presentations')
    op.drop_index('ix_presentations_answering', table_name='presentations')
