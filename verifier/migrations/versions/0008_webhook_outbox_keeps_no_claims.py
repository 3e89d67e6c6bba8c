"""webhook outbox: keep no claims; the body is rendered from the transaction when it is sent

An outbox row held the whole webhook body, the verified claims included, in clear and for ever
(delivered rows stay as the record of the delivery), while the transaction's own copy of the claims
is sealed and deleted at ``purge_at``. A row now holds ``{"event", "transaction_id"}`` only, and
``verifier.transactions.webhook_body`` renders the result when the row is sent. This revision takes
the ``result`` out of every row written before it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 23:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE webhook_outbox SET body = convert_to((convert_from(body, 'UTF8')::jsonb - 'result')::text, "
                   "'UTF8') WHERE convert_from(body, 'UTF8')::jsonb -> 'result' IS NOT NULL")
    else:
        op.execute("UPDATE webhook_outbox SET body = CAST(json_remove(CAST(body AS TEXT), '$.result') AS BLOB) "
                   "WHERE json_type(CAST(body AS TEXT), '$.result') IS NOT NULL")


def downgrade() -> None:
    pass  # the claims are gone from the outbox; the worker of 0007 would send the rows without a result
