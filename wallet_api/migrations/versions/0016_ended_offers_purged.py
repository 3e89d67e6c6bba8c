"""offers: index created_at, so the sweep deletes the ended offers a month after their receipt

An offer's row (the issuer's metadata, the exchange's tokens) stayed for ever once the exchange had
ended; the background sweep now deletes it ``OFFER_KEPT`` after it was received, through this index.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 01:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0016'
down_revision: str | Sequence[str] | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_offers_created_at', 'offers', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_offers_created_at', table_name='offers')
