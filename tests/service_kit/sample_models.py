"""A tiny service schema for the service_kit tests (what a service's models module looks like)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from service_kit.db import UTCDateTime, make_base
from service_kit.webhooks import WebhookOutboxMixin

Base = make_base()


class Nonce(Base):
    __tablename__ = "nonces"

    value: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Code(Base):
    __tablename__ = "codes"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    subject: Mapped[str] = mapped_column(String(100))


class Outbox(WebhookOutboxMixin, Base):
    """The outbox table as a service declares it."""
