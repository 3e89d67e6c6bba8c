"""logins and app codes: index expires_at, so the sweep's purge of the expired ones is a range read

A login that was never finished (``login_transactions``) and an app code that was never exchanged
(``app_codes``) stayed for ever: only a finished login or an exchange deleted its row. Once expired
neither can be used; the background sweep now deletes them, through these indexes.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 10:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0013'
down_revision: str | Sequence[str] | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_login_transactions_expires_at', 'login_transactions', ['expires_at'], unique=False)
    op.create_index('ix_app_codes_expires_at', 'app_codes', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_app_codes_expires_at', table_name='app_codes')
    op.drop_index('ix_login_transactions_expires_at', table_name='login_transactions')
