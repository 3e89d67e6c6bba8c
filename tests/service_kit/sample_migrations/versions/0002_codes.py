"""codes, and an ALTER on nonces (batch mode on SQLite)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "codes",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_codes")),
    )
    with op.batch_alter_table("nonces") as batch:
        batch.add_column(sa.Column("note", sa.String(20), nullable=True))
    with op.batch_alter_table("nonces") as batch:
        batch.drop_column("note")


def downgrade() -> None:
    op.drop_table("codes")
