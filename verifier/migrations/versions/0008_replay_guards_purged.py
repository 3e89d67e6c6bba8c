"""replay guards: presentation digests and Aries webhook keys purged after their retention

``used_presentations`` and ``aries_webhook_events`` grew by a row per presentation and per processed
agent webhook, and nothing deleted them; the sweep (``transactions.sweep``) now deletes the digests
older than ``USED_PRESENTATION_RETENTION`` and the keys older than
``aries.storage.WEBHOOK_EVENT_RETENTION``. Each delete is a range of an index the table has had from
the start (``ix_used_presentations_created_at``, 0001; ``ix_aries_webhook_events_received_at``,
0002): no schema change. The revision keeps the verifier's numbering in step with the purge it
documents.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 10:10:00
"""

from collections.abc import Sequence

revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
