"""access tokens: the client and the authorization request they were issued to

An authorization code flow token now records its ``client_id`` (a key proof naming another client
is refused, OpenID4VCI 1.0 appendix F.1) and the authorization request whose code it was issued
for, so that a second redemption of that code revokes it (RFC 6749 §4.1.2).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 06:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | Sequence[str] | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('access_tokens') as batch:
        batch.add_column(sa.Column('client_id', sa.String(length=300), nullable=True))
        batch.add_column(sa.Column('authorization_request_id', sa.String(length=64), nullable=True))
        batch.create_index(batch.f('ix_access_tokens_authorization_request_id'), ['authorization_request_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('access_tokens') as batch:
        batch.drop_index(batch.f('ix_access_tokens_authorization_request_id'))
        batch.drop_column('authorization_request_id')
        batch.drop_column('client_id')
