"""aries webhook keys: purged after their retention, through the received_at index of 0003

The keys of processed ACA-Py webhooks (``aries_webhook_events``) were never deleted;
``grants.purge_expired`` now deletes those older than ``aries.storage.WEBHOOK_EVENT_RETENTION``.
The delete is a range of ``ix_aries_webhook_events_received_at`` (migration 0003): no schema
change. The revision keeps the issuer's numbering in step with the purge it documents.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

revision: str = '0012'
down_revision: str | Sequence[str] | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
