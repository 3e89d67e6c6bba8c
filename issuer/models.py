"""The issuer's database: tenants, keys, types, sources, protocol state, issuance records, status lists.

Every piece of protocol state (offers, codes, tokens, nonces, transactions, authorization requests)
lives here so that several workers behave as one. Secrets are stored hashed (``*_hash`` columns:
SHA-256 of 256-bit random values) or sealed with ``SecretBox`` (``sealed_*`` columns). No claim value
is ever stored: issuance records keep the evidence of the source query and of the login only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from service_kit.audit import AuditCheckpointMixin, AuditEntryMixin, AuditHeadMixin
from service_kit.db import UTCDateTime, make_base
from service_kit.ratelimit import RateLimitMixin
from service_kit.webhooks import WebhookOutboxMixin

Base = make_base()


class Tenant(Base):
    """An issuing organisation; its credential issuer identifier is ``<public_url>/t/<slug>``."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    display: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Requesting-body identity used in data-source queries (SCSP Solicitante): NIF and name.
    body_id: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """A tenant's admin API key, stored as ``sha256$<hex>``."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(80), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class SigningKey(Base):
    """A tenant's credential signing key (sealed) and its certificate chain (leaf first, PEM)."""

    __tablename__ = "signing_keys"
    # One active key per tenant: issuance reads "the" active key (keys.store_key locks the tenant row so
    # that rotations at once take turns; this refuses whatever would still slip past).
    __table_args__ = (Index("uq_signing_keys_one_active", "tenant_id", unique=True,
                            postgresql_where=text("active"), sqlite_where=text("active")),)

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    chain_pem: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CredentialTypeRow(Base):
    """A registered credential type definition (versioned; the newest version is the one issued)."""

    __tablename__ = "credential_types"
    __table_args__ = (UniqueConstraint("tenant_id", "type_id", "version", name="uq_credential_types_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    type_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(40))
    vct: Mapped[str] = mapped_column(String(500))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class VctOwner(Base):
    """The one tenant allowed to register types under a ``vct``: the first that registered it.

    A verifier trusts issuers per ``vct``, and every tenant's key is certified by the same issuers CA,
    so a second tenant issuing under a ``vct`` would pass for the first wherever only the CA is
    checked. The primary key settles two registrations at once (credential_types holds several rows
    per ``vct``: the versions, so it cannot carry the constraint itself)."""

    __tablename__ = "vct_owners"

    vct: Mapped[str] = mapped_column(String(500), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class VctShare(Base):
    """A ``vct`` the platform admin shared with a tenant other than its owner: that tenant may register
    types under it as well (one issuer service hosting many town councils, each issuing the one padró
    type that verifiers ask for and list the councils of). Only the platform admin key adds or removes
    a row; a tenant's key never does. Removing it stops new registrations under the ``vct``, nothing
    issued. The foreign key to ``vct_owners``: a ``vct`` is shared once someone owns it."""

    __tablename__ = "vct_shares"

    vct: Mapped[str] = mapped_column(String(500), ForeignKey("vct_owners.vct", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SourceConfig(Base):
    """The data source of one type of one tenant: adapter settings and query context, sealed (may hold keys)."""

    __tablename__ = "source_configs"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    type_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    sealed_config: Mapped[bytes] = mapped_column(LargeBinary)
    kind: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Offer(Base):
    """A credential offer with its pre-authorized code (hashed) and optional transaction code (hashed)."""

    __tablename__ = "offers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(80), unique=True)
    tx_code_hash: Mapped[str | None] = mapped_column(String(80), nullable=True)
    tx_code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    configuration_ids: Mapped[list[str]] = mapped_column(JSON)
    credential_ids: Mapped[dict[str, str]] = mapped_column(JSON)
    subject: Mapped[dict[str, Any]] = mapped_column(JSON)
    selector: Mapped[str | None] = mapped_column(String(100), nullable=True)
    offer_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    burnt: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class AccessToken(Base):
    """An access token (hashed): whom it is for and which configurations it may obtain."""

    __tablename__ = "access_tokens"

    token_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subject: Mapped[dict[str, Any]] = mapped_column(JSON)
    configuration_ids: Mapped[list[str]] = mapped_column(JSON)
    credential_ids: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    selector: Mapped[str | None] = mapped_column(String(100), nullable=True)
    login: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    offer_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    # RFC 9449: the thumbprint of the key the token is bound to (DPoP), or None for a bearer token.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Authorization code flow only: the client the code was issued to (a key proof's ``iss`` must name
    # it) and the request whose code this token redeemed (a second redemption revokes the token).
    client_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    authorization_request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class DPoPProofUse(Base):
    """A DPoP proof ``jti`` seen recently (hashed with the key): a second use is a replay."""

    __tablename__ = "dpop_proof_uses"

    jti_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class Nonce(Base):
    """A ``c_nonce`` (hashed) a key proof has used, kept until the nonce expires so that no other proof
    can use it (nonces are handed out without being stored: ``issuer.nonces``)."""

    __tablename__ = "nonces"

    nonce_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class IssuanceClaim(Base):
    """One issuance per (access token, configuration): inserted before issuing, removed if issuing fails."""

    __tablename__ = "issuance_claims"

    token_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    configuration_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class StoredResponse(Base):
    """A credential response kept sealed for a short time, replayed to an identical retried request."""

    __tablename__ = "stored_responses"
    # A sealed credential response (about 2.7 kB, incompressible) stays in the heap page instead of
    # going to TOAST on every issuance (migration 0008).
    __table_args__ = {"postgresql_with": {"toast_tuple_target": 8160}}

    request_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    status_code: Mapped[int] = mapped_column(Integer)
    sealed_body: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class DeferredTransaction(Base):
    """A credential request the source answered as pending; the wallet polls with ``transaction_id``."""

    __tablename__ = "deferred_transactions"

    transaction_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(80))
    configuration_id: Mapped[str] = mapped_column(String(100))
    credential_id: Mapped[str] = mapped_column(String(40))
    source_reference: Mapped[str] = mapped_column(String(200))
    subject: Mapped[dict[str, Any]] = mapped_column(JSON)
    selector: Mapped[str | None] = mapped_column(String(100), nullable=True)
    login: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    holder_jwks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    request_id: Mapped[str] = mapped_column(String(40))
    offer_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)  # purged after (migration 0011)
    sealed_response: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: When the data source may be asked again (its ``retry_after``); a wallet's poll before then is
    #: answered "pending" without asking it. None: ask at the next poll (migration 0017).
    next_poll_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The query context the pending query was sent under (``issuer.issuance.SENT_CONTEXT_FIELDS``):
    #: its polls carry it again, whatever the tenant's context is now. None: made before migration 0018,
    #: polled under the current context.
    source_context: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    #: The record the source answered with, sealed like ``sealed_response``, kept from the poll that
    #: heard it until the credential is recorded (then cleared): a poll whose signing or recording
    #: failed is retried from it, since the source has delivered its answer and forgotten it.
    sealed_record: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class AuthorizationRequest(Base):
    """An authorization code flow in progress: the wallet's request, the login at VÀLid, our code."""

    __tablename__ = "authorization_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    request_uri_hash: Mapped[str | None] = mapped_column(String(80), unique=True, nullable=True)
    idp_state_hash: Mapped[str | None] = mapped_column(String(80), unique=True, nullable=True)
    code_hash: Mapped[str | None] = mapped_column(String(80), unique=True, nullable=True)
    client_id: Mapped[str] = mapped_column(String(300))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    code_challenge: Mapped[str] = mapped_column(String(200))
    state: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    configuration_ids: Mapped[list[str]] = mapped_column(JSON)
    authorization_details: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    issuer_state: Mapped[str | None] = mapped_column(String(200), nullable=True)
    login_hint: Mapped[str | None] = mapped_column(String(100), nullable=True)
    sealed_idp_verifier: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    subject: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    login: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stage: Mapped[str] = mapped_column(String(20))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class IssuanceRecord(Base):
    """One issued credential (all its batch copies): evidence, validity and status — never claim values."""

    __tablename__ = "issuance_records"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    type_id: Mapped[str] = mapped_column(String(100))
    type_version: Mapped[str] = mapped_column(String(40))
    vct: Mapped[str] = mapped_column(String(500))
    subject_identifier: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(20), default="valid")
    copies: Mapped[int] = mapped_column(Integer, default=1)
    signing_kid: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    login: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notification_id: Mapped[str] = mapped_column(String(64), unique=True)
    notifications: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    offer_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    valid_until: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class StatusList(Base):
    """A tenant's Token Status List: the raw 2-bit entries and the last signed token."""

    __tablename__ = "status_lists"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    size: Mapped[int] = mapped_column(Integer)
    bits: Mapped[int] = mapped_column(Integer)
    allocated: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    token: Mapped[str | None] = mapped_column(Text, nullable=True)
    token_exp: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class StatusEntry(Base):
    """An allocated index of a status list; the primary key makes an index unique (no reuse)."""

    __tablename__ = "status_entries"

    list_id: Mapped[str] = mapped_column(ForeignKey("status_lists.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[str] = mapped_column(ForeignKey("issuance_records.id", ondelete="CASCADE"), index=True)


class WebhookEndpoint(Base):
    """A tenant's webhook receiver; the HMAC secret is sealed."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class WebhookOutbox(WebhookOutboxMixin, Base):
    """Issuance events waiting for delivery (written in the same transaction as the change)."""

    tenant_id: Mapped[str] = mapped_column(String(40), index=True)


class RateLimitBucket(RateLimitMixin, Base):
    """Rate-limit buckets shared by every worker (keys are HMACs, never raw addresses or codes)."""


class AuditEntry(AuditEntryMixin, Base):
    """One entry of a tenant's audit chain (:mod:`issuer.audit`): an issuance record (``entry_id`` = the
    record id, content = the record as issued) or a later event about one (status change,
    withdrawal), whose content is kept here in ``content``. The salt needs no secrecy here: the
    records themselves are in clear in this database."""

    __tablename__ = "audit_entries"
    chain_id: Mapped[str] = mapped_column(String(40), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    salt: Mapped[str] = mapped_column(String(32))
    content: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    # seq too: find_entry wants an id's first entry, and the index then gives it in order (migration 0007).
    __table_args__ = (Index("ix_audit_entries_entry", "chain_id", "entry_id", "seq"),)


class AuditHead(AuditHeadMixin, Base):
    """The head of a tenant's audit chain; its row lock serialises the tenant's appends."""

    __tablename__ = "audit_heads"
    chain_id: Mapped[str] = mapped_column(String(40), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)


class AuditCheckpoint(AuditCheckpointMixin, Base):
    """A checkpoint of a tenant's audit chain signed with the tenant's credential signing key."""

    __tablename__ = "audit_checkpoints"
    chain_id: Mapped[str] = mapped_column(String(40), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
