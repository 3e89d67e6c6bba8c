"""nonces

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

import service_kit.db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nonces",
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("expires_at", service_kit.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("value", name=op.f("pk_nonces")),
    )


def downgrade() -> None:
    op.drop_table("nonces")
