"""stored responses: kept in the table's own pages (toast_tuple_target 8160) on PostgreSQL

Every single-copy issuance writes its sealed response (about 2.7 kB: a credential is encrypted, so it
does not compress) in the issuance statement. Over PostgreSQL's default 2 kB tuple target that row
went to TOAST: a compression attempt that could not succeed, two chunk rows and two entries in the
TOAST index per credential, and the purge deleted them again. Measured with pg_stat_statements at 8
concurrent wallets (bench/issuance.py), the issuance statement touched 63.6 buffers and took 495 µs
on average before, 55.6 and 441 µs after. The row is read back only when a wallet retries the same
request. Rows over 8 kB (large batches) still go to TOAST. SQLite has no such setting: nothing to do.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 21:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stored_responses SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stored_responses RESET (toast_tuple_target)")
