"""Agencies (tenants): creation with a key and relying-party certificate, API keys, authentication."""

from __future__ import annotations

import datetime as dt
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509 as cx509
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service_kit.crypto import SecretBox, generate_api_key, hash_api_key
from ssi import x509 as ssi_x509
from ssi.encoding import json_dumps, json_loads
from ssi.jose import Key
from verifier.models import Agency, ApiKey
from verifier.statements import AGENCY_BY_KEY_HASH

SLUG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class AgencyError(Exception):
    """An agency cannot be created as asked; ``code`` is stable."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True, slots=True)
class CreatedAgency:
    """A new agency and its first API key (shown once, stored hashed) and webhook secret."""

    id: str
    slug: str
    name: str
    api_key: str
    webhook_secret: str


def check_slug(slug: str) -> str:
    """A slug is 2-64 lower-case letters, digits and hyphens."""
    if not (2 <= len(slug) <= 64) or not set(slug) <= SLUG_CHARS or slug.startswith("-"):
        raise AgencyError("invalid_slug", "a slug is 2-64 characters: a-z, 0-9 and '-'")
    return slug


def verifier_host(public_url: str) -> str:
    """The host name of the verifier's public URL: the DNS SAN of agency certificates."""
    return (urlsplit(public_url).hostname or "localhost").lower()


def make_agency_certificate(ca_key: Key, ca_cert: cx509.Certificate, agency_key: Key, name: str,
                            host: str, *, days: int = 365) -> list[str]:
    """The agency's relying-party certificate chain (leaf first, then the CA) as ``x5c``.

    The leaf names the verifier's host as DNS SAN, so that ``x509_san_dns:<host>`` identifies it
    and the ``response_uri`` host matches.
    """
    leaf = ssi_x509.issue_certificate(ca_key, ca_cert, agency_key, name, san_dns=[host], days=days,
                                      organization=name)
    return ssi_x509.x5c_from_chain([leaf, ca_cert])


async def create_agency(session: AsyncSession, box: SecretBox, *, slug: str, name: str, ca_key: Key,
                        ca_cert: cx509.Certificate, host: str) -> CreatedAgency:
    """Create an agency with a new ES256 key, certificate, API key and webhook secret."""
    check_slug(slug)
    existing = await session.scalar(select(Agency.id).where(Agency.slug == slug))
    if existing is not None:
        raise AgencyError("agency_exists", "an agency with this slug exists")
    agency_id = str(uuid.uuid4())
    key = Key.generate("ES256")
    x5c = make_agency_certificate(ca_key, ca_cert, key, name, host)
    webhook_secret = secrets.token_urlsafe(32)
    now = dt.datetime.now(dt.UTC)
    session.add(Agency(
        id=agency_id, slug=slug, name=name,
        signing_key=box.seal(json_dumps(key.private_jwk()).encode(), f"agency:{agency_id}:key".encode()),
        x5c=x5c,
        webhook_secret=box.seal(webhook_secret.encode(), f"agency:{agency_id}:webhook".encode()),
        created_at=now,
    ))
    api_key = await add_api_key(session, agency_id, label="initial")
    return CreatedAgency(agency_id, slug, name, api_key, webhook_secret)


async def add_api_key(session: AsyncSession, agency_id: str, *, label: str = "") -> str:
    """A new API key for the agency; only its hash is stored."""
    api_key = generate_api_key()
    session.add(ApiKey(id=str(uuid.uuid4()), agency_id=agency_id, key_hash=hash_api_key(api_key), label=label,
                       created_at=dt.datetime.now(dt.UTC)))
    return api_key


async def agency_for_api_key(session: AsyncSession | AsyncConnection, api_key: str) -> Agency | None:
    """The agency owning ``api_key`` (looked up by its hash), or ``None``.

    A plain row with the columns of :class:`Agency` (read-only), not an ORM object: building ORM
    instances costs more CPU than the query on this path, which every agency call takes.
    """
    if not api_key or len(api_key) > 200:
        return None
    result = await session.execute(AGENCY_BY_KEY_HASH, {"key_hash": hash_api_key(api_key)})
    return result.first()  # type: ignore[return-value]


class SigningKeys:
    """Agencies' opened signing keys: unsealed once per process, kept at most ``ttl`` seconds, bounded.

    Every request object is signed with one, so unsealing (AES-GCM) and importing the JWK per request
    would be wasted work. Keyed by the agency and the sealed blob's GCM tag, so a rotated key (a new
    sealed value) is never served from the old entry; the TTL bounds how long a private key stays in
    memory after its agency stops being used. Safe to lose (re-opened from the database).
    """

    def __init__(self, box: SecretBox, maxsize: int = 256, ttl: float = 600.0) -> None:
        self.box = box
        self.maxsize = maxsize
        self.ttl = ttl
        self._keys: OrderedDict[tuple[str, bytes], tuple[float, Key]] = OrderedDict()

    def key_for(self, agency: Agency) -> Key:
        cache_key = (agency.id, bytes(agency.signing_key[-16:]))
        now = time.monotonic()
        entry = self._keys.get(cache_key)
        if entry is not None and now - entry[0] < self.ttl:
            return entry[1]
        jwk = json_loads(self.box.open(agency.signing_key, f"agency:{agency.id}:key".encode()))
        key = Key.from_jwk(jwk)
        self._keys[cache_key] = (now, key)
        self._keys.move_to_end(cache_key)
        while len(self._keys) > self.maxsize:
            self._keys.popitem(last=False)
        return key

    def webhook_secret(self, agency_id: str, sealed: bytes) -> str:
        return self.box.open(sealed, f"agency:{agency_id}:webhook".encode()).decode()
