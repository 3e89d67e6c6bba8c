"""background sweep: index the due status checks and deferred polls, so a sweep reads only what is due

Every ``background_interval`` (60 s by default) each wallet process asks for the credentials whose
status check is due (``next_status_check <= now``) and the pending offers whose poll is due
(``next_poll_at <= now``). Neither column was indexed, so each sweep read every credential and every
offer of every citizen, due or not. Both indexes are partial (``IS NOT NULL``): a revoked credential
is never checked again and now has no next check, and only pending offers have a next poll, so the
indexes hold what a sweep may take and nothing else.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Revocation is final: the sweep already skipped revoked credentials; now they leave its index.
    op.execute("UPDATE credentials SET next_status_check = NULL WHERE status = 'revoked'")
    op.create_index('ix_credentials_next_status_check', 'credentials', ['next_status_check'], unique=False,
                    postgresql_where=sa.text('next_status_check IS NOT NULL'),
                    sqlite_where=sa.text('next_status_check IS NOT NULL'))
    op.create_index('ix_offers_next_poll_at', 'offers', ['next_poll_at'], unique=False,
                    postgresql_where=sa.text('next_poll_at IS NOT NULL'),
                    sqlite_where=sa.text('next_poll_at IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_offers_next_poll_at', table_name='offers')
    op.drop_index('ix_credentials_next_status_check', table_name='credentials')
