"""Columns of the two tables every service with an Aries channel keeps for its agent's webhooks.

Each service declares them on its own base and creates them in its own Alembic history
(``class AriesWebhookKey(WebhookKeyMixin, Base)``), as with ``service_kit.ratelimit.RateLimitMixin``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from service_kit.db import UTCDateTime, dialect_insert


class WebhookKeyMixin:
    """SHA-256 of a key the agent may send as ``x-api-key`` (one per managed-agent start, or the configured one)."""

    __tablename__ = "aries_webhook_keys"

    key_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


async def replace_webhook_keys(session: AsyncSession, model: Any, key_hash: str, now: dt.datetime) -> None:
    """Make ``key_hash`` the only webhook key ``model`` (a :class:`WebhookKeyMixin` table) accepts.

    Called with the key of a managed agent this service just started (the agents it replaced are gone:
    a managed agent lives on one host, behind a lock) or of the configured external agent (an operator
    changing the key revokes the old one). Keys left valid for ever would let whoever learnt one, from
    an old agent's environment or logs, post events as the agent. A worker that adopted or attached to
    a running agent does not know its key and calls nothing: that key stays.
    """
    await session.execute(dialect_insert(session, model).values(key_hash=key_hash, created_at=now)
                          .on_conflict_do_nothing())
    await session.execute(delete(model).where(model.key_hash != key_hash))


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
