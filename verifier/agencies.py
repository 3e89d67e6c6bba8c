"""Agencies (tenants): creation with a key and relying-party certificate, API keys, authentication.

An agency's request-object signing key is a software key sealed under the master key, or a key in a
PKCS#11 token (``key_backend = "pkcs11"``, or one registered by its label): then ``Agency.signing_key``
holds only a :class:`~service_kit.pkcs11.TokenKeyRef` (``pkcs11:{json}``), and the key is used only
while its public key is the one the agency's certificate names.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509 as cx509
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service_kit.crypto import SecretBox, generate_api_key, hash_api_key
from service_kit.db import Database
from service_kit.pkcs11 import KeyBackend, PKCS11Config, PKCS11Error, Token, TokenKeyRef, open_token
from ssi import x509 as ssi_x509
from ssi.encoding import json_dumps, json_loads
from ssi.errors import DisplayNameError, SSIError
from ssi.jose import Key
from ssi.names import display_name
from verifier.models import Agency, ApiKey
from verifier.statements import AGENCY_BY_KEY_HASH

log = logging.getLogger(__name__)

SLUG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class AgencyError(Exception):
    """An agency cannot be created as asked; ``code`` is stable."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True, slots=True)
class CreatedAgency:
    """A new agency and its first API key (shown once, stored hashed) and webhook secret.

    ``key_generated``: ``token_key`` was generated in the token for this agency (not registered by its
    label), so :func:`discard_generated_key` removes it if the agency is not stored after all."""

    id: str
    slug: str
    name: str
    api_key: str
    webhook_secret: str
    token_key: TokenKeyRef | None = None
    key_generated: bool = False


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
    and the ``response_uri`` host matches. Its commonName and organizationName are ``name``, cut to
    64 bytes of UTF-8 with "…" when longer (:func:`ssi.x509.fit_name`): the agency keeps its whole
    name (up to 200 characters) everywhere else.
    """
    leaf = ssi_x509.issue_certificate(ca_key, ca_cert, agency_key, name, san_dns=[host], days=days,
                                      organization=name)
    return ssi_x509.x5c_from_chain([leaf, ca_cert])


async def create_agency(session: AsyncSession, box: SecretBox, *, slug: str, name: str, ca_key: Key,
                        ca_cert: cx509.Certificate, host: str, key_backend: KeyBackend = "software",
                        hsm: Token | None = None, token_key_label: str | None = None) -> CreatedAgency:
    """Create an agency with a new ES256 key, certificate, API key and webhook secret.

    ``key_backend="pkcs11"`` generates the key in the token ``hsm`` (sensitive, non-extractable);
    ``token_key_label`` registers an existing key of that token instead. Token problems raise
    :class:`PKCS11Error` (``pkcs11.not_configured``, ``pkcs11.key_not_found``...). The rows are
    flushed here, so that a slug taken meanwhile raises ``IntegrityError`` now; a key generated for
    the agency is deleted from the token when anything after its generation fails (the caller does
    the same with :func:`discard_generated_key` if its commit fails), so no orphaned key is left.
    ``name`` is kept as :func:`ssi.names.display_name` gives it (without spaces around it); one with a
    control character, or nothing to read, is ``AgencyError("invalid_name")``.
    """
    check_slug(slug)
    try:
        name = display_name(name)
    except DisplayNameError as exc:
        raise AgencyError("invalid_name", exc.detail) from None
    existing = await session.scalar(select(Agency.id).where(Agency.slug == slug))
    if existing is not None:
        raise AgencyError("agency_exists", "an agency with this slug exists")
    agency_id = str(uuid.uuid4())
    ref: TokenKeyRef | None = None
    generated = False
    if token_key_label or key_backend == "pkcs11":
        if hsm is None:
            raise PKCS11Error("not_configured", "no PKCS#11 token is configured (pkcs11_module, pkcs11_token_label)",
                              http_status=400)
        if token_key_label:
            key, ref = hsm.find_key(token_key_label)
        else:
            key, ref = hsm.generate_key(label=f"cartera-agency-{slug[:40]}-{secrets.token_hex(4)}", alg="ES256")
            generated = True
        stored = ref.encode()
    else:
        key = Key.generate("ES256")
        stored = box.seal(json_dumps(key.private_jwk()).encode(), f"agency:{agency_id}:key".encode())
    try:
        x5c = make_agency_certificate(ca_key, ca_cert, key, name, host)
        webhook_secret = secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        session.add(Agency(
            id=agency_id, slug=slug, name=name,
            signing_key=stored,
            x5c=x5c,
            webhook_secret=box.seal(webhook_secret.encode(), f"agency:{agency_id}:webhook".encode()),
            created_at=now,
        ))
        api_key = await add_api_key(session, agency_id, label="initial")
        await session.flush()
    except BaseException:
        if generated:
            _delete_token_key(hsm, ref)
        raise
    return CreatedAgency(agency_id, slug, name, api_key, webhook_secret, ref, generated)


def _delete_token_key(hsm: Token | None, ref: TokenKeyRef | None) -> None:
    if hsm is None or ref is None:
        return
    try:
        hsm.delete_key(ref)
    except PKCS11Error:
        # The original failure is what the caller must see; the key's label says whose it was.
        log.warning("pkcs11 key of an agency not created could not be deleted",
                    extra={"token": ref.token, "key_label": ref.label})


def discard_generated_key(hsm: Token | None, created: CreatedAgency | None) -> None:
    """Delete from the token the key :func:`create_agency` generated for an agency whose transaction
    then failed to commit. A key registered by its label is never deleted."""
    if created is not None and created.key_generated:
        _delete_token_key(hsm, created.token_key)


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
    A key held in a PKCS#11 token is looked up in ``hsm`` (set at start-up) instead.
    """

    def __init__(self, box: SecretBox, maxsize: int = 256, ttl: float = 600.0, *, hsm: Token | None = None) -> None:
        self.box = box
        self.maxsize = maxsize
        self.ttl = ttl
        self.hsm = hsm
        self._keys: OrderedDict[tuple[str, bytes], tuple[float, Key]] = OrderedDict()

    def key_for(self, agency: Agency) -> Key:
        stored = bytes(agency.signing_key)
        token_ref = TokenKeyRef.is_ref(stored)
        # A reference is short and has no GCM tag: the whole of it is the cache discriminator.
        cache_key = (agency.id, stored if token_ref else stored[-16:])
        now = time.monotonic()
        entry = self._keys.get(cache_key)
        if entry is not None and now - entry[0] < self.ttl:
            return entry[1]
        if token_ref:
            key = self._token_key(agency, stored)
        else:
            key = Key.from_jwk(json_loads(self.box.open(agency.signing_key, f"agency:{agency.id}:key".encode())))
        self._keys[cache_key] = (now, key)
        self._keys.move_to_end(cache_key)
        while len(self._keys) > self.maxsize:
            self._keys.popitem(last=False)
        return key

    def _token_key(self, agency: Agency, stored: bytes) -> Key:
        if self.hsm is None:
            raise PKCS11Error("not_configured", "the agency's key is in a PKCS#11 token, and none is configured")
        try:
            key = self.hsm.key(TokenKeyRef.decode(stored))
        except PKCS11Error as exc:
            # The agency's stored key is missing from the token: the service's failure, not the caller's.
            raise PKCS11Error(exc.code, exc.detail, http_status=503) from exc
        try:
            leaf = ssi_x509.load_certificate(base64.b64decode(agency.x5c[0]))
            certified = ssi_x509.certificate_key(leaf).thumbprint()
        except (SSIError, ValueError, IndexError, TypeError) as exc:
            raise PKCS11Error("key_mismatch", "the agency's certificate cannot be read") from exc
        if certified != key.thumbprint():
            # The reference was edited, or its label now names another key: never sign with it.
            raise PKCS11Error("key_mismatch", "the token key named for this agency is not the certified key")
        return key

    def clear(self) -> None:
        """Forget every opened key (at shutdown, or when the token goes away)."""
        self._keys.clear()

    def webhook_secret(self, agency_id: str, sealed: bytes) -> str:
        return self.box.open(sealed, f"agency:{agency_id}:webhook".encode()).decode()


def key_backend(settings: Any, db: Database, keys: SigningKeys) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan hook (after migrations): open the PKCS#11 token when configured (``keys.hsm``) and
    check every agency key held in a token, so a wrong PIN, a missing token or a missing key stops
    the start-up with a :class:`PKCS11Error` rather than failing request objects later."""

    @contextlib.asynccontextmanager
    async def hook(_app: Any) -> AsyncIterator[None]:
        config = PKCS11Config.from_settings(settings)
        token = open_token(config) if config is not None else None
        keys.hsm = token
        try:
            async with db.read_session() as session:
                rows = (await session.execute(select(Agency))).scalars().all()
            for agency in rows:
                if TokenKeyRef.is_ref(bytes(agency.signing_key)):
                    keys.key_for(agency)
            yield
        finally:
            keys.hsm = None
            keys.clear()
            if token is not None:
                token.close()

    return hook
