"""expiry alerts: index the credentials not yet alerted by expiry, so a sweep reads only those

Each background sweep asks for the credentials that expire within ``expiry_alert_days`` and have not
been alerted (``NOT expiry_alerted AND expires_at <= horizon``). Neither column was indexed, so each
sweep read every credential of every citizen. The partial index holds the unalerted credentials by
expiry; an alerted one leaves it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | Sequence[str] | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_credentials_expiry_unalerted', 'credentials', ['expires_at'], unique=False,
                    postgresql_where=sa.text('NOT expiry_alerted'), sqlite_where=sa.text('expiry_alerted = 0'))


def downgrade() -> None:
    op.drop_index('ix_credentials_expiry_unalerted', table_name='credentials')
