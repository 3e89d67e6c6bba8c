"""used_refresh_tokens: the refresh tokens already rotated, so that presenting one again revokes its session

A reused refresh token was only refused: its hash was no longer stored, so the wallet could not tell a
reuse from an unknown token, and a thief who refreshed first kept the session. The hash of every
rotated token is now kept until the token would have expired (the background sweep deletes it then,
through the ``expires_at`` index); presented again, it revokes its session.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service_kit.db import UTCDateTime

revision: str = '0017'
down_revision: str | Sequence[str] | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'used_refresh_tokens',
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('session_id', sa.String(length=40), nullable=False),
        sa.Column('expires_at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('token_hash'),
    )
    op.create_index('ix_used_refresh_tokens_session_id', 'used_refresh_tokens', ['session_id'], unique=False)
    op.create_index('ix_used_refresh_tokens_expires_at', 'used_refresh_tokens', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_used_refresh_tokens_expires_at', table_name='used_refresh_tokens')
    op.drop_index('ix_used_refresh_tokens_session_id', table_name='used_refresh_tokens')
    op.drop_table('used_refresh_tokens')
