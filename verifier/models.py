"""The verifier's tables: agencies, their API keys and templates, transactions, replay guard, outbox.

Secrets are never stored in clear: API keys as SHA-256 hashes, private keys and disclosed claims
sealed with ``SecretBox``, response codes and watch tokens hashed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from service_kit.db import UTCDateTime, make_base
from service_kit.ratelimit import RateLimitMixin
from service_kit.webhooks import WebhookOutboxMixin

Base = make_base()


class Agency(Base):
    """A tenant: an agency with its own request-signing key and relying-party certificate."""

    __tablename__ = "agencies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Private JWK (JSON) sealed with SecretBox, aad ``agency:<id>:key``.
    signing_key: Mapped[bytes] = mapped_column(LargeBinary)
    #: x5c of the agency certificate, leaf first.
    x5c: Mapped[list[str]] = mapped_column(JSON)
    #: Webhook HMAC secret sealed with SecretBox, aad ``agency:<id>:webhook``.
    webhook_secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """An agency's admin API key, stored as ``sha256$<hex>``."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(80), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Template(Base):
    """A reusable presentation request: DCQL query, purpose, trusted issuers, retention."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("agency_id", "name", name="uq_templates_agency_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    dcql_query: Mapped[dict[str, Any]] = mapped_column(JSON)
    purpose: Mapped[dict[str, str]] = mapped_column(JSON)
    trusted_issuers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    anchors_pem: Mapped[list[str]] = mapped_column(JSON, default=list)
    retention_seconds: Mapped[int] = mapped_column(Integer)
    response_mode: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Transaction(Base):
    """One presentation request and, once answered, its result.

    ``status``: ``pending`` → (``processing`` while one response is checked) → ``verified`` |
    ``rejected`` | ``declined`` | ``expired``. Claims (sealed) are removed at ``purge_at``; the rest
    of the row, the record of the check, stays.
    """

    __tablename__ = "transactions"
    # The sweep's two queries: overdue requests, and claims past their retention. The second index
    # holds only the transactions whose claims are still kept (verifier migration 0007): every
    # finished transaction has a purge_at, and with all of them indexed each sweep walked them all.
    __table_args__ = (Index("ix_transactions_status_expires", "status", "expires_at"),
                      Index("ix_transactions_claims_to_purge", "purge_at",
                            postgresql_where=text("result IS NOT NULL AND claims_deleted_at IS NULL"),
                            sqlite_where=text("result IS NOT NULL AND claims_deleted_at IS NULL")))

    id: Mapped[str] = mapped_column(String(43), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id", ondelete="CASCADE"))
    template_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    dcql_query: Mapped[dict[str, Any]] = mapped_column(JSON)
    purpose: Mapped[dict[str, str]] = mapped_column(JSON)
    trusted_issuers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    anchors_pem: Mapped[list[str]] = mapped_column(JSON, default=list)
    retention_seconds: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[str] = mapped_column(Text)
    response_mode: Mapped[str] = mapped_column(String(20))
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(64))
    #: Ephemeral ECDH-ES private JWK for ``direct_post.jwt``, sealed (aad ``tx:<id>:enc``).
    encryption_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    purge_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    redirect_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_code_hash: Mapped[str | None] = mapped_column(String(80), nullable=True)
    watch_token_hash: Mapped[str] = mapped_column(String(80))
    #: Verified claims per credential query id (JSON), sealed (aad ``tx:<id>:result``).
    result: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: Failed checks: ``[{"code", "query_id", "detail"}]`` (no claim values).
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: What was checked, kept after the claims are purged: per query id, issuer, vct, validity.
    record: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    claims_deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsedPresentation(Base):
    """SHA-256 of every ``vp_token`` presentation accepted for checking: the same one never twice."""

    __tablename__ = "used_presentations"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(43))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class WebhookOutbox(WebhookOutboxMixin, Base):
    """Webhook deliveries (``endpoint_id`` is the agency id; its secret is on the agency row)."""

    url: Mapped[str] = mapped_column(Text)


class RateLimitBucket(RateLimitMixin, Base):
    """Rate-limit buckets shared by every worker (keys are HMACs, never raw addresses or codes)."""
