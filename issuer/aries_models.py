"""Tables of the issuer's Aries channel (migration 0003): exchanges, tenant DIDs, webhook keys and events.

Like the rest of the issuer's state they live in its database, so several workers behave as one. No
claim value is stored: an exchange keeps the subject (as an offer does), the type and the agent's
record ids; the credential itself has its shared :class:`~issuer.models.IssuanceRecord`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aries.storage import WebhookEventMixin, WebhookKeyMixin
from service_kit.db import UTCDateTime

from .models import Base


class AriesExchange(Base):
    """One invitation for one subject and type, then its connection and issue-credential exchange.

    ``state``: ``invited`` → ``offering`` (connection seen, claimed once) → ``offered`` → ``issued``,
    or ``failed``/``abandoned`` (nothing recorded as issued: the issuance record is removed). Between
    ``offering`` and ``offered``, ``pending`` while the data source has not answered (the deferred
    issuance of :mod:`issuer.aries_channel`); in that state ``expires_at`` is the next poll's time. While
    ``offered``, ``expires_at`` is when the offer went out (exchanges offered before that was kept: the
    invitation's expiry or the last poll, neither earlier), from which ``aries_offer_ttl`` counts.
    """

    __tablename__ = "aries_exchanges"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    type_id: Mapped[str] = mapped_column(String(100))
    proof_type: Mapped[str] = mapped_column(String(40))
    subject: Mapped[dict[str, Any]] = mapped_column(JSON)
    selector: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: SHA-256 of the short URL's code: the invitation is a bearer capability, like a pre-authorized code.
    short_code_hash: Mapped[str] = mapped_column(String(80), unique=True)
    invitation_msg_id: Mapped[str] = mapped_column(String(100), unique=True)
    invitation: Mapped[dict[str, Any]] = mapped_column(JSON)
    invitation_url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), index=True)
    connection_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    cred_ex_id: Mapped[str | None] = mapped_column(String(100), nullable=True, unique=True)
    thread_id: Mapped[str | None] = mapped_column(String(100), nullable=True, unique=True)
    credential_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AriesTenantDid(Base):
    """The did:key a tenant signs with, per signature suite (created in the agent's wallet on first use)."""

    __tablename__ = "aries_tenant_dids"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    proof_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    did: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AriesWebhookKey(WebhookKeyMixin, Base):
    pass


class AriesWebhookEvent(WebhookEventMixin, Base):
    pass
