"""credential types: a vct belongs to one tenant

Every tenant's signing key is certified by the same issuers CA, and a verifier trusts issuers per
``vct``: a tenant registering another tenant's ``vct`` (say the tax agency's, from a town council)
issued credentials that a rule trusting the CA accepted as the tax agency's type. Registration now
claims the ``vct`` in ``vct_owners``, whose primary key lets one tenant in when two register at once.

Existing rows: each ``vct`` goes to the tenant that registered it first (its oldest
``credential_types`` row). Another tenant that registered it as well keeps the versions it has
(credentials were issued under them), but can register no new one; each such ``vct`` is logged with
the tenants sharing it, for the operator to look into (docs/issuer.md, "Credential types").

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 18:00:00
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service_kit.db

revision: str = '0015'
down_revision: str | Sequence[str] | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)


def upgrade() -> None:
    op.create_table('vct_owners',
    sa.Column('vct', sa.String(length=500), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', service_kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_vct_owners_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vct', name=op.f('pk_vct_owners'))
    )
    with op.batch_alter_table('vct_owners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vct_owners_tenant_id'), ['tenant_id'], unique=False)

    types = sa.table('credential_types', sa.column('id', sa.Integer), sa.column('tenant_id', sa.String),
                     sa.column('vct', sa.String), sa.column('created_at', service_kit.db.UTCDateTime()))
    owners = sa.table('vct_owners', sa.column('vct', sa.String), sa.column('tenant_id', sa.String),
                      sa.column('created_at', service_kit.db.UTCDateTime()))
    first = types.alias('first')
    bind = op.get_bind()
    bind.execute(owners.insert().from_select(
        ['vct', 'tenant_id', 'created_at'],
        sa.select(types.c.vct, types.c.tenant_id, types.c.created_at).where(
            types.c.id == sa.select(sa.func.min(first.c.id)).where(first.c.vct == types.c.vct).scalar_subquery())))
    shared = bind.execute(
        sa.select(types.c.vct, types.c.tenant_id).distinct()
        .where(types.c.vct.in_(sa.select(types.c.vct).group_by(types.c.vct)
                               .having(sa.func.count(sa.distinct(types.c.tenant_id)) > 1)))
        .order_by(types.c.vct, types.c.tenant_id)).all()
    by_vct: dict[str, list[str]] = {}
    for vct, tenant_id in shared:
        by_vct.setdefault(vct, []).append(tenant_id)
    for vct, tenants in by_vct.items():
        log.warning("vct registered by several tenants; it now belongs to the first, the others can register "
                    "no new version under it", extra={"vct": vct, "tenant_ids": tenants})


def downgrade() -> None:
    with op.batch_alter_table('vct_owners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vct_owners_tenant_id'))
    op.drop_table('vct_owners')
