"""Tables of the verifier's Aries channel (migration 0002): proof requests, webhook keys and events.

The result itself lives in the shared :class:`~verifier.models.Transaction` row, exactly as for
OpenID4VP; this table keeps what is needed to judge the DIDComm answer (our own copy of the request,
never the agent's) and the invitation behind the short URL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aries.storage import WebhookEventMixin, WebhookKeyMixin
from service_kit.db import UTCDateTime

from .models import Base


class AriesPresentation(Base):
    """A present-proof 2.0 request of one transaction."""

    __tablename__ = "aries_presentations"

    tx_id: Mapped[str] = mapped_column(ForeignKey("transactions.id", ondelete="CASCADE"), primary_key=True)
    pres_ex_id: Mapped[str] = mapped_column(String(100), unique=True)
    thread_id: Mapped[str] = mapped_column(String(100), index=True)
    query_id: Mapped[str] = mapped_column(String(100))
    vct: Mapped[str] = mapped_column(String(500))
    #: ``aries.presentation.ProofRequest`` fields (claims, challenge, domain, proof type, definition).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The https issuer identifiers trusted for this type (their DIDs are read from ``<iss>/v1/aries/issuer``).
    issuers: Mapped[list[str]] = mapped_column(JSON)
    #: Claim name -> accepted values (DCQL ``values``), checked on the disclosed claims.
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    short_code: Mapped[str] = mapped_column(String(64), unique=True)
    invitation: Mapped[dict[str, Any]] = mapped_column(JSON)
    invitation_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AriesWebhookKey(WebhookKeyMixin, Base):
    pass


class AriesWebhookEvent(WebhookEventMixin, Base):
    pass
