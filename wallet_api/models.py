"""Database tables of the wallet API.

What is stored in clear is only what the service needs to find rows and schedule work: ids, the
credential type (``vct``), the issuer URL, times, status and counters. Everything a citizen's
credentials say — claim values, the credentials themselves, holder private keys, history details,
protocol secrets (pre-authorized codes, transaction ids, access tokens at issuers) — is sealed under
the wallet's data key (:mod:`wallet_api.vault`), with associated data binding each value to its wallet,
table and row. Citizens are found through a keyed hash of their identifier, never the identifier.
App access and refresh tokens are stored as SHA-256 hashes.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from service_kit.audit import AuditCheckpointMixin, AuditEntryMixin, AuditHeadMixin
from service_kit.db import UTCDateTime, make_base
from service_kit.ratelimit import RateLimitMixin
from service_kit.webhooks import WebhookOutboxMixin

Base = make_base()


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class ServiceKey(Base):
    """Service-wide secrets sealed under the master key (e.g. the key of the subject index)."""

    __tablename__ = "service_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Wallet(Base):
    """One citizen's wallet; ``subject_index`` is an HMAC of provider and identifier."""

    __tablename__ = "wallets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_index: Mapped[str] = mapped_column(String(64), unique=True)
    data_key: Mapped[bytes] = mapped_column(LargeBinary)  # sealed by the master SecretBox
    profile: Mapped[bytes] = mapped_column(LargeBinary)  # sealed: name, identifier, email
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The PIN's scrypt hash sealed under the data key (``sealed$...``, :mod:`wallet_api.pin`); NULL: no PIN.
    pin_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    pin_locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Lockouts in a row (a right PIN clears them): each doubles the next lock (wallet migration 0018).
    pin_lockouts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class LoginTransaction(Base):
    """A login in progress at an identity provider (keyed by the hash of ``state``)."""

    __tablename__ = "login_transactions"
    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(40))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # PKCE verifier, nonce, app redirect, app state
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    #: Indexed for the background sweep, which deletes the logins never finished (wallet migration 0013).
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class AppCode(Base):
    """A one-time code handed to the app after login, exchanged for tokens (its HMAC under the token key
    stored, :func:`wallet_api.vault.token_mac`)."""

    __tablename__ = "app_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(40), ForeignKey("sessions.id", ondelete="CASCADE"))
    #: One HMAC of the app's redirect URI and its PKCE S256 challenge: the exchange needs both
    #: (``wallet_api.auth._app_code_binding``).
    redirect_uri_hash: Mapped[str] = mapped_column(String(64))
    #: Indexed for the background sweep, which deletes the codes never exchanged (wallet migration 0013).
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class Session(Base):
    """An app session: opaque access and refresh tokens (their HMACs under the token key), with its login
    record."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"))
    access_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    access_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    refresh_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    refresh_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    provider: Mapped[str] = mapped_column(String(40))
    method: Mapped[str] = mapped_column(String(40), default="")
    assurance_level: Mapped[str] = mapped_column(String(20), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")

    # Found by id with the wallet checked (``id = ? AND wallet_id = ?``) and listed by wallet: an index on
    # wallet_id alone misled PostgreSQL's plans of the lookup (wallet migration 0006).
    __table_args__ = (Index("ix_sessions_wallet_id_id", "wallet_id", "id"),)


class UsedRefreshToken(Base):
    """A refresh token that was rotated (its hash), kept until it would have expired: presented again,
    it is a reuse — a stolen copy, or the citizen's own copy after a thief refreshed first — and its
    session is revoked (docs/security.md, "The wallet")."""

    __tablename__ = "used_refresh_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Indexed for the delete of a wallet's sessions (the cascade), wallet migration 0017.
    session_id: Mapped[str] = mapped_column(String(40), ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    #: When the token would have expired; the background sweep deletes the row then (wallet migration 0017).
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class Credential(Base):
    """A credential in the vault; its copies (one per holder key) are in ``credential_copies``."""

    __tablename__ = "credentials"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"))
    vct: Mapped[str] = mapped_column(String(500))
    issuer: Mapped[str] = mapped_column(String(500))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # display, type metadata, notification info
    issued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="valid")
    status_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_status_check: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expiry_alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # Found by id with the wallet checked (``id = ? AND wallet_id = ?``) and listed by wallet: an index on
    # wallet_id alone misled PostgreSQL's plans of the lookup (wallet migration 0006). The background
    # sweep takes the credentials whose status check is due; a revoked one has none (wallet migration 0009).
    __table_args__ = (Index("ix_credentials_wallet_id_id", "wallet_id", "id"),
                      Index("ix_credentials_next_status_check", "next_status_check",
                            postgresql_where=text("next_status_check IS NOT NULL"),
                            sqlite_where=text("next_status_check IS NOT NULL")),
                      # ... and the credentials about to expire that it has not alerted on (migration 0011).
                      Index("ix_credentials_expiry_unalerted", "expires_at",
                            postgresql_where=text("NOT expiry_alerted"), sqlite_where=text("expiry_alerted = 0")))


class CredentialCopy(Base):
    """One issued copy of a credential: the SD-JWT VC and its holder private key, sealed."""

    __tablename__ = "credential_copies"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    credential_id: Mapped[str] = mapped_column(String(40), ForeignKey("credentials.id", ondelete="CASCADE"), index=True)
    wallet_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


#: The predicates of the partial indexes on the exchanges under way, as SQL text: a query's condition
#: must be these literals (not bound parameters) for PostgreSQL's generic plans to use the index.
OFFER_ACCEPTING = "state = 'accepting'"
PRESENTATION_ANSWERING = "state IN ('sending', 'declining')"


class Offer(Base):
    """A received credential offer, or a wallet-initiated issuance, until it ends."""

    __tablename__ = "offers"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"))
    issuer: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(20), default="offer")  # offer | authorization
    # offered|authorizing|accepting|pending|polling|issued|failed|declined
    state: Mapped[str] = mapped_column(String(20), default="offered")
    # An authorization: the HMAC (token key) of its OAuth ``state`` until the issuer's callback, then that of the
    # app's one-time completion code (``receiving.completion_hash``) until the app completes it.
    state_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_poll_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # The background sweep polls the pending offers that are due; only those have a next poll (wallet
    # migration 0009).
    # ... and fails the ones a stopped worker left 'accepting' (wallet migration 0015).
    __table_args__ = (Index("ix_offers_next_poll_at", "next_poll_at",
                            postgresql_where=text("next_poll_at IS NOT NULL"),
                            sqlite_where=text("next_poll_at IS NOT NULL")),
                      Index("ix_offers_accepting", "expires_at", postgresql_where=text(OFFER_ACCEPTING),
                            sqlite_where=text(OFFER_ACCEPTING)),
                      # ... and deletes the ended ones a month after they were received (migration 0016).
                      Index("ix_offers_created_at", "created_at"))


class Presentation(Base):
    """A presentation request received by the wallet, until approved, declined or expired."""

    __tablename__ = "presentations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"))
    # pending|sending|declining|sent|declined|failed
    state: Mapped[str] = mapped_column(String(20), default="pending")
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    # The sweep ends the requests a stopped worker left answering, and deletes the ended ones a day
    # after their expiry (wallet migration 0015).
    __table_args__ = (Index("ix_presentations_answering", "expires_at",
                            postgresql_where=text(PRESENTATION_ANSWERING),
                            sqlite_where=text(PRESENTATION_ANSWERING)),
                      Index("ix_presentations_expires_at", "expires_at"))


class HistoryEntry(Base):
    """One event of the wallet's history (receipt, share, decline, deletion); details sealed."""

    __tablename__ = "history"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_history_wallet_time", "wallet_id", "created_at"),)


class Alert(Base):
    """An alert for the citizen (expiring, suspended, revoked, offer, issued, PIN set/changed/reset/locked)."""

    __tablename__ = "alerts"
    # An increasing integer: the SSE stream resumes after the last id the app saw (Last-Event-ID).
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wallet_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))
    credential_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    read: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_alerts_wallet_id", "wallet_id", "id"),)


class AlertWebhookOutbox(WebhookOutboxMixin, Base):
    """Alerts waiting to be pushed to the configured webhook (``webhook_url``); written in the same
    transaction as the alert, delivered by the background loop with signed, retried POSTs.

    ``body`` holds what the alert row holds in clear (kind, message naming a type or issuer, ids), never
    a claim value. ``endpoint_id`` is always ``"alerts"``: the wallet has one configured endpoint."""

    wallet_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"), index=True)


class RateLimitBucket(RateLimitMixin, Base):
    """Rate-limit buckets shared by every worker (keys are HMACs, never raw addresses or codes)."""


class AuditEntry(AuditEntryMixin, Base):
    """One entry of the wallet's audit chain (:mod:`wallet_api.audit`): a history event (``entry_id`` =
    the history row) or a login (``entry_id`` = the session). ``sealed`` holds the content salt — and,
    for logins, which have no history row, the content itself — under the wallet's data key, so the
    digest in clear cannot be tested against guessed claim values."""

    __tablename__ = "audit_entries"
    chain_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)

    # seq too: find_entry wants an id's first entry, and the index then gives it in order (migration 0007).
    __table_args__ = (Index("ix_audit_entries_entry", "chain_id", "entry_id", "seq"),)


class AuditHead(AuditHeadMixin, Base):
    """The head of a wallet's audit chain; its row lock serialises the wallet's events."""

    __tablename__ = "audit_heads"
    chain_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"), primary_key=True)
    #: The seq of the chain's latest checkpoint: the sweep signs one for the heads that moved past it,
    #: found through the partial index (wallet migration 0012) instead of every head and checkpoint.
    checkpointed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (Index("ix_audit_heads_checkpoint_due", "chain_id", postgresql_where=text("seq > checkpointed"),
                            sqlite_where=text("seq > checkpointed")),)


class AuditCheckpoint(AuditCheckpointMixin, Base):
    """A checkpoint of a wallet's audit chain signed with the wallet service's audit key."""

    __tablename__ = "audit_checkpoints"
    chain_id: Mapped[str] = mapped_column(String(40), ForeignKey("wallets.id", ondelete="CASCADE"), primary_key=True)
