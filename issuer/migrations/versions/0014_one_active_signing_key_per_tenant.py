"""signing keys: one active key per tenant

Two key rotations at once (through two workers) could each retire the keys active when they began and
insert their own, leaving the tenant with several active keys: issuance, status list signing and audit
checkpoints then failed (they read "the" active key). Rotations now lock the tenant row; this partial
unique index makes a second active key impossible. Tenants that already have several keep the newest
(by ``created_at``, then ``kid``) active; the others are retired now.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 12:00:00
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service_kit.db

revision: str = '0014'
down_revision: str | Sequence[str] | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    keys = sa.table('signing_keys', sa.column('kid', sa.String), sa.column('tenant_id', sa.String),
                    sa.column('active', sa.Boolean), sa.column('created_at', service_kit.db.UTCDateTime()),
                    sa.column('retired_at', service_kit.db.UTCDateTime()))
    newer = keys.alias('newer')
    op.get_bind().execute(
        keys.update()
        .where(keys.c.active.is_(True), sa.exists().where(
            newer.c.tenant_id == keys.c.tenant_id, newer.c.active.is_(True),
            sa.or_(newer.c.created_at > keys.c.created_at,
                   sa.and_(newer.c.created_at == keys.c.created_at, newer.c.kid > keys.c.kid))))
        .values(active=False, retired_at=dt.datetime.now(dt.UTC)))
    op.create_index('uq_signing_keys_one_active', 'signing_keys', ['tenant_id'], unique=True,
                    postgresql_where=sa.text('active'), sqlite_where=sa.text('active'))


def downgrade() -> None:
    op.drop_index('uq_signing_keys_one_active', table_name='signing_keys')
