"""protocol state: drop the tenant_id indexes that only ever led PostgreSQL to the wrong plan

Offers, access tokens, nonces, stored responses, deferred transactions and authorization requests
are always found by their own unique key (a hashed code, token, nonce or request), with the tenant
checked on the row found. No query selects them by tenant alone, and tenants are never deleted by
the service, so these indexes served nothing. Worse: before the first ANALYZE of a table (a new
deployment, a restore, a major upgrade) the planner prices ``tenant_id = $1`` and ``token_hash =
$1`` alike, and its generic plan could take the tenant index, reading every row of the tenant on
each request. The benchmark measured exactly that: about 870 rows read per token or offer lookup
after 20 seconds of load. Without the index the unique key is the only way in. One fewer index to
maintain on every insert of the issuance path, too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 18:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('offers', 'access_tokens', 'nonces', 'stored_responses', 'deferred_transactions', 'authorization_requests')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_tenant_id'))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f'ix_{table}_tenant_id'), ['tenant_id'], unique=False)
