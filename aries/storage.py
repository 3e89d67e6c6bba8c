"""Columns of the two tables every service with an Aries channel keeps for its agent's webhooks.

Each service declares them on its own base and creates them in its own Alembic history
(``class AriesWebhookKey(WebhookKeyMixin, Base)``), as with ``service_kit.ratelimit.RateLimitMixin``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from service_kit.db import UTCDateTime


class WebhookKeyMixin:
    """SHA-256 of a key the agent may send as ``x-api-key`` (one per managed-agent start, or the configured one)."""

    __tablename__ = "aries_webhook_keys"

    key_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


#: How long a processed delivery's key is kept (each service's periodic purge deletes older ones).
#: ACA-Py posts a webhook at most five times, ten seconds apart, from a queue in memory (lost when the
#: agent stops), so re-deliveries come within a minute: days leave a wide margin. One arriving later
#: still acts at most once: every handler moves its row by a conditional ``UPDATE`` on its state.
WEBHOOK_EVENT_RETENTION = dt.timedelta(days=3)


class WebhookEventMixin:
    """A processed delivery, ``<topic>:<thread id>:<state>``: ACA-Py re-delivers, we act once.
    Kept :data:`WEBHOOK_EVENT_RETENTION` (found by ``received_at``, indexed), then purged."""

    __tablename__ = "aries_webhook_events"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
