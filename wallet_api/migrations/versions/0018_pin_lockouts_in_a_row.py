"""wallets.pin_lockouts: PIN lockouts in a row, so that each lasts longer and the last ends the sessions

The PIN lock was a fixed window that started afresh: ``pin_max_attempts`` guesses every
``pin_lock_seconds``, for as long as a session lived (480 a day with the defaults, a 4-digit PIN in
about three weeks). ``pin_lockouts`` counts the lockouts since the last right PIN: each doubles the next
lock, and the ``pin_max_lockouts``-th ends the wallet's sessions (``wallet_api.pin``).

Existing wallets start at 0. The PIN hashes stored unsealed are sealed under the wallets' data keys at
start-up (``wallet_api.pin.seal_legacy_pin_hashes``), which needs the master key a migration does not have.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | Sequence[str] | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('wallets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pin_lockouts', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('wallets', schema=None) as batch_op:
        batch_op.drop_column('pin_lockouts')
