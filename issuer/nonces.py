"""``c_nonce`` values the issuer can check without having stored them.

The nonce endpoint is unauthenticated: storing a row per call let anyone grow a table, and cost a
database round trip on every issuance. A nonce is instead ``base64url(expiry ‖ 16 random bytes ‖
tag)``, the tag an HMAC-SHA-256 (truncated to 128 bits) under a key derived from the master key over
the tenant id, the expiry and the random bytes: unpredictable, bound to one tenant, with a lifetime
nobody can extend. Single use is still the database's: a nonce is recorded (hashed) when a proof
consumes it, under a primary key, so of concurrent requests carrying it exactly one gets it, and the
record is kept until the nonce would have expired anyway (then purged).

Every worker derives the same key from the same master key, so any worker accepts any worker's
nonce. Changing the master key invalidates outstanding nonces (a wallet asks for a new one).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ssi.encoding import EncodingError, b64url_decode, b64url_encode

_INFO = b"cartera issuer c_nonce v1"
_RANDOM = 16
_TAG = 16
_LENGTH = 8 + _RANDOM + _TAG
#: Characters of a nonce (base64url of 40 octets, unpadded).
NONCE_CHARS = 54


def nonce_key(master_key: bytes) -> bytes:
    """The MAC key of nonces, derived from (and never equal to) the service's master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master_key)


def _tag(key: bytes, tenant_id: str, body: bytes) -> bytes:
    message = tenant_id.encode("utf-8") + b"\x00" + body
    return hmac.new(key, message, hashlib.sha256).digest()[:_TAG]


def mint_nonce(key: bytes, tenant_id: str, ttl: int, now: dt.datetime) -> str:
    """A new nonce for ``tenant_id``, valid for ``ttl`` seconds from ``now``."""
    expires = int(now.timestamp()) + ttl
    body = expires.to_bytes(8, "big") + secrets.token_bytes(_RANDOM)
    return b64url_encode(body + _tag(key, tenant_id, body))


def nonce_expiry(key: bytes, tenant_id: str, nonce: str, now: dt.datetime) -> dt.datetime | None:
    """When ``nonce`` expires, if it was minted with ``key`` for ``tenant_id`` and is still fresh;
    ``None`` for anything else (malformed, forged, another tenant's, expired). Says nothing about
    whether it was used: that is the database's record."""
    if len(nonce) != NONCE_CHARS:
        return None
    try:
        raw = b64url_decode(nonce)
    except EncodingError:
        return None
    if len(raw) != _LENGTH or b64url_encode(raw) != nonce:
        # A second spelling of the same octets would pass the single-use check (kept by the text's
        # hash) once more. ssi's decoder refuses them already; this does not depend on it.
        return None
    body, tag = raw[:-_TAG], raw[-_TAG:]
    if not hmac.compare_digest(tag, _tag(key, tenant_id, body)):
        return None
    expires = int.from_bytes(body[:8], "big")
    if expires <= now.timestamp():
        return None
    return dt.datetime.fromtimestamp(expires, dt.UTC)
