"""Tenants' signing keys: created under a CA or imported, sealed at rest, rotated without breaking old credentials.

A rotation makes the new key active and retires the old one: retired keys stay in the tenant's JWT VC
Issuer Metadata (``jwks``) until their certificate expires, so credentials signed before the rotation
keep verifying by ``x5c`` (their own chain) and by metadata (the ``kid``).

Two backends (``key_backend``): ``software`` keys are sealed with the master key in
``sealed_private_key``; ``pkcs11`` keys are generated in (or registered from) a PKCS#11 token and that
column holds only a :class:`~service_kit.pkcs11.TokenKeyRef` (``pkcs11:{json}``: token, key label, key
id, algorithm), so no column or migration was needed. The ``kid`` is the key's JWK thumbprint in both
cases, and a token key is only used when its public key still has that thumbprint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cryptography import x509 as cx509
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.pkcs11 import KeyBackend, PKCS11Config, PKCS11Error, Token, TokenKeyRef, open_token
from ssi import x509 as ssi_x509
from ssi.errors import SSIError
from ssi.jose import Key

from .context import IssuerContext, utcnow
from .models import SigningKey
from .models import Tenant as TenantRow
from .settings import IssuerSettings
from .tenancy import TenantRef as Tenant

log = logging.getLogger(__name__)

#: Seconds a worker keeps signing with the active key it cached: after a rotation (or an import)
#: through another worker, new credentials, status lists and audit checkpoints are signed with the new
#: key after at most this long (through the same worker, at once). As ``registry.CACHE_SECONDS``.
ACTIVE_KEY_CACHE_SECONDS = 5.0


class SigningKeyError(Exception):
    """A key or certificate given to the issuer is unusable; ``code`` is stable."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


def load_ca(settings: IssuerSettings) -> tuple[Key, cx509.Certificate] | None:
    """The development/issuing CA that certifies tenants' keys (``ca_key_file``/``ca_cert_file``), or
    ``None`` when not configured; ``SigningKeyError("ca_unreadable")`` naming the setting (never the
    key) when a configured file cannot be read or parsed. Read when a tenant is created or its key
    rotated, and once at start-up so that a wrong mount stops the service rather than those calls."""
    if settings.ca_key_file is None or settings.ca_cert_file is None:
        return None
    setting = "ca_key_file"
    try:
        key = Key.from_pem(settings.ca_key_file.read_bytes())
        setting = "ca_cert_file"
        cert = ssi_x509.load_pem_certificates(settings.ca_cert_file.read_bytes())[0]
    except (OSError, SSIError, IndexError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SigningKeyError("ca_unreadable", f"CARTERA_ISSUER_{setting.upper()} cannot be read or parsed "
                                               f"({reason})") from None
    return key, cert


@dataclass(frozen=True)
class ActiveKey:
    """The key a tenant signs with now, its ``x5c`` chain (leaf first) and when the leaf expires."""

    key: Key
    x5c: list[str]
    not_after: dt.datetime


def _aad(tenant_id: str, kid: str) -> bytes:
    return f"issuer:{tenant_id}:signing-key:{kid}".encode()


def _chain_pem(chain: list[cx509.Certificate]) -> str:
    return "".join(ssi_x509.cert_to_pem(c).decode("ascii") for c in chain)


#: Lifetime of tenant certificates made by the issuer's CA: longer than the longest credential validity
#: (diplomas: five years), because a verifier checks the x5c chain when the credential is presented.
TENANT_CERT_DAYS = 6 * 366


def issue_tenant_certificate(ca_key: Key, ca_cert: cx509.Certificate, key: Key, issuer_url: str, name: str,
                             days: int = TENANT_CERT_DAYS) -> cx509.Certificate:
    """A leaf certificate for a tenant key naming the issuer identifier as its only SAN (a URI).

    No DNS SAN for the host: tenants share it, and a verifier that binds ``iss`` through the host would
    take one tenant's key for any other's.
    """
    return ssi_x509.issue_certificate(ca_key, ca_cert, key, name, san_uris=[issuer_url], days=days,
                                      organization=name)


async def store_key(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, key: Key,
                    chain: list[cx509.Certificate], *, token_ref: TokenKeyRef | None = None) -> SigningKey:
    """Store ``key`` with its chain and make it the active key (the previous one is retired).

    A software key is sealed; a token key (``token_ref``) is stored as that reference only.

    The tenant's row is locked first, so that rotations at once (through several workers) take turns:
    otherwise each retires the keys active when it began, none sees the key the other inserts, and the
    tenant is left with several active keys (``uq_signing_keys_one_active`` now refuses that). ``FOR NO
    KEY UPDATE``: the foreign-key checks of issuance, which lock the tenant row ``FOR KEY SHARE``, do
    not wait for it.
    """
    kid = key.thumbprint()
    if token_ref is not None:
        stored = token_ref.encode()
    else:
        stored = ctx.box.seal(key.private_pem(), _aad(tenant.id, kid))
    await session.execute(select(TenantRow.id).where(TenantRow.id == tenant.id).with_for_update(key_share=True))
    now = utcnow()  # once the lock is ours: the active key is the newest
    await session.execute(update(SigningKey).where(SigningKey.tenant_id == tenant.id, SigningKey.active.is_(True))
                          .values(active=False, retired_at=now))
    row = SigningKey(kid=kid, tenant_id=tenant.id, sealed_private_key=stored,
                     chain_pem=_chain_pem(chain), public_jwk={**key.public_jwk(include_kid=False), "kid": kid,
                                                                "alg": key.alg, "use": "sig"},
                     active=True, created_at=now)
    session.add(row)
    ctx.keys.clear()
    return row


async def create_key(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, ca_key: Key,
                     ca_cert: cx509.Certificate, *, backend: KeyBackend | None = None) -> SigningKey:
    """Generate an ES256 key, certify it with the CA for the tenant's identifier, make it active.

    ``backend`` (default: the ``key_backend`` setting) says where: in software, or in the PKCS#11
    token (sensitive, non-extractable, labelled ``cartera-<slug>-<random>``). A token key is made
    before its certificate and its row: when either fails (the row is flushed here, so that a row the
    database refuses is refused now), the key is deleted from the token again, so no orphaned key is
    left in the HSM. The caller does the same with :func:`discard_created_key` when its transaction
    then fails to commit.
    """
    if (backend or ctx.settings.key_backend) == "pkcs11":
        token = require_token(ctx)
        key, ref = token.generate_key(label=_token_label(tenant.slug), alg="ES256")
        try:
            cert = issue_tenant_certificate(ca_key, ca_cert, key, ctx.issuer_url(tenant.slug), tenant.name)
            row = await store_key(ctx, session, tenant, key, [cert], token_ref=ref)
            await session.flush()
        except BaseException:
            _delete_token_key(token, ref)
            raise
        return row
    key = Key.generate("ES256")
    cert = issue_tenant_certificate(ca_key, ca_cert, key, ctx.issuer_url(tenant.slug), tenant.name)
    return await store_key(ctx, session, tenant, key, [cert])


def _delete_token_key(token: Token, ref: TokenKeyRef) -> None:
    try:
        token.delete_key(ref)
    except PKCS11Error:
        # The original failure is what the caller must see; the key's label says whose it was.
        log.warning("pkcs11 key of a signing key not stored could not be deleted",
                    extra={"token": ref.token, "key_label": ref.label})


async def discard_created_key(ctx: IssuerContext, row: SigningKey | None) -> None:
    """Delete from the token the key :func:`create_key` generated for ``row`` when the transaction that
    was to store the row failed (to commit, or after ``create_key`` returned): with the row gone, nothing
    refers to the key. A software key (nothing in a token) is left alone; so is ``None`` (no key was made).

    The row is looked for first: a commit that failed on the client's side may have succeeded on the
    database's, and a key its active row names must stay. When the database cannot say, the key is kept
    too (logged): an orphan costs a token slot, a row naming a deleted key stops the tenant signing.
    Only for rows of :func:`create_key`: a token key registered by its label (:func:`register_token_key`)
    was not made here and is never deleted."""
    if row is None or ctx.hsm is None:
        return
    stored = bytes(row.sealed_private_key)
    if not TokenKeyRef.is_ref(stored):
        return
    ref = TokenKeyRef.decode(stored)
    try:
        async with ctx.db.read_session() as session:
            kept = await session.scalar(select(SigningKey.kid).where(SigningKey.kid == row.kid,
                                                                     SigningKey.tenant_id == row.tenant_id))
    except Exception:  # noqa: BLE001 - the original failure is what the caller must see
        log.warning("pkcs11 key of a signing key perhaps not stored was kept: the database did not answer",
                    extra={"token": ref.token, "key_label": ref.label})
        return
    if kept is None:
        _delete_token_key(ctx.hsm, ref)


def _token_label(slug: str) -> str:
    import secrets  # noqa: PLC0415 - only for token key labels

    return f"cartera-{slug[:40]}-{secrets.token_hex(4)}"


def require_token(ctx: IssuerContext) -> Token:
    """The configured PKCS#11 token, or :class:`PKCS11Error` ``pkcs11.not_configured``."""
    token: Token | None = ctx.hsm
    if token is None:
        raise PKCS11Error("not_configured", "no PKCS#11 token is configured (pkcs11_module, pkcs11_token_label)",
                          http_status=400)
    return token


async def register_token_key(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, label: str, *,
                             ca: tuple[Key, cx509.Certificate] | None = None,
                             chain_pem: str | None = None) -> SigningKey:
    """Make an existing token key (created with the token's own tools) the tenant's active key.

    Its certificate is issued by the issuer's CA (``ca``), or given (``chain_pem``, leaf first), in which
    case the leaf must certify that key and name the issuer identifier, as for :func:`import_key`.
    """
    token = require_token(ctx)
    key, ref = token.find_key(label)
    if key.alg not in ("ES256", "ES384", "EdDSA"):
        raise SigningKeyError("bad_key", "the token key must be an ES256, ES384 or EdDSA key")
    if chain_pem:
        chain = _checked_chain(ctx, tenant, key, chain_pem)
    elif ca is not None:
        chain = [issue_tenant_certificate(ca[0], ca[1], key, ctx.issuer_url(tenant.slug), tenant.name)]
    else:
        raise SigningKeyError("bad_key", "give the key's certificate chain, or configure the issuer's CA")
    return await store_key(ctx, session, tenant, key, chain, token_ref=ref)


def _checked_chain(ctx: IssuerContext, tenant: Tenant, key: Key, chain_pem: str) -> list[cx509.Certificate]:
    try:
        chain = ssi_x509.load_pem_certificates(chain_pem.encode("utf-8"))
    except (SSIError, ValueError) as exc:
        raise SigningKeyError("bad_key", "the certificate chain cannot be read") from exc
    if not chain:
        raise SigningKeyError("bad_key", "the certificate chain is empty")
    if ssi_x509.certificate_key(chain[0]).thumbprint() != key.thumbprint():
        raise SigningKeyError("bad_key", "the leaf certificate does not certify this key")
    if not ssi_x509.san_matches(chain[0], ctx.issuer_url(tenant.slug)):
        raise SigningKeyError("bad_key", "the leaf certificate does not name the issuer identifier in its SAN")
    return chain


async def import_key(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, private_key_pem: str,
                     chain_pem: str) -> SigningKey:
    """Import a key and its chain (leaf first); the leaf must certify the key and name the issuer URL."""
    try:
        key = Key.from_pem(private_key_pem.encode("utf-8"))
        chain = ssi_x509.load_pem_certificates(chain_pem.encode("utf-8"))
    except (SSIError, ValueError) as exc:
        raise SigningKeyError("bad_key", "the private key or the certificate chain cannot be read") from exc
    if not chain:
        raise SigningKeyError("bad_key", "the certificate chain is empty")
    if not key.is_private or key.alg not in ("ES256", "ES384", "EdDSA"):
        raise SigningKeyError("bad_key", "the key must be a private ES256, ES384 or EdDSA key")
    leaf_key = ssi_x509.certificate_key(chain[0])
    if leaf_key.thumbprint() != key.thumbprint():
        raise SigningKeyError("bad_key", "the leaf certificate does not certify this key")
    if not ssi_x509.san_matches(chain[0], ctx.issuer_url(tenant.slug)):
        raise SigningKeyError("bad_key", "the leaf certificate does not name the issuer identifier in its SAN")
    return await store_key(ctx, session, tenant, key, chain)


async def active_key(ctx: IssuerContext, session: AsyncSession, tenant_id: str) -> ActiveKey | None:
    """The tenant's active signing key (unsealed, cached for ``ACTIVE_KEY_CACHE_SECONDS``) or ``None``."""
    cached = ctx.keys.get(("active", tenant_id))
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    row = (await session.execute(select(SigningKey).where(SigningKey.tenant_id == tenant_id,
                                                          SigningKey.active.is_(True)))).scalar_one_or_none()
    if row is None:
        return None
    key = open_signing_key(ctx, row)
    chain = ssi_x509.load_pem_certificates(row.chain_pem.encode("ascii"))
    not_after = min(cert.not_valid_after_utc for cert in chain)
    # With an expiry: ``store_key`` clears only this worker's cache, and issuance reads this entry
    # directly, so another worker's rotation must reach it through the expiry.
    return ctx.keys.put(("active", tenant_id), ActiveKey(key=key, x5c=ssi_x509.x5c_from_chain(chain),
                                                         not_after=not_after), ttl=ACTIVE_KEY_CACHE_SECONDS)


def open_signing_key(ctx: IssuerContext, row: SigningKey) -> Key:
    """The usable key of a stored row: unsealed (software) or bound to the token (PKCS#11)."""
    stored = bytes(row.sealed_private_key)
    if not TokenKeyRef.is_ref(stored):
        return Key.from_pem(ctx.box.open(stored, _aad(row.tenant_id, row.kid)), kid=row.kid)
    try:
        key = require_token(ctx).key(TokenKeyRef.decode(stored), kid=row.kid)
    except PKCS11Error as exc:
        # A stored key the token no longer has is the service's failure, not the client's request.
        raise PKCS11Error(exc.code, exc.detail, http_status=503) from exc
    if key.thumbprint() != row.kid:
        # The reference was edited, or the label now names another key: never sign with it.
        raise PKCS11Error("key_mismatch", "the token key named for this tenant is not the key that was certified")
    return key


def attach_token(ctx: IssuerContext) -> Token | None:
    """Open the PKCS#11 token the settings name (if any) as ``ctx.hsm``; the caller closes it."""
    config = PKCS11Config.from_settings(ctx.settings)
    token = open_token(config) if config is not None else None
    ctx.hsm = token
    return token


@contextlib.asynccontextmanager
async def key_backend(ctx: IssuerContext) -> AsyncIterator[None]:
    """For the app's lifespan (after migrations, before background work): open the PKCS#11 token when
    configured and check that every active token key of every tenant is in it, so a wrong PIN, a
    missing token or a missing key stops the start-up with a :class:`PKCS11Error` instead of failing
    issuances later. The token is released at shutdown."""
    token = attach_token(ctx)
    try:
        async with ctx.db.read_session() as session:
            rows = (await session.execute(select(SigningKey).where(SigningKey.active.is_(True)))).scalars().all()
        for row in rows:
            if TokenKeyRef.is_ref(bytes(row.sealed_private_key)):
                open_signing_key(ctx, row)
        yield
    finally:
        ctx.hsm = None
        ctx.keys.clear()
        if token is not None:
            token.close()


async def published_keys(session: AsyncSession, tenant_id: str) -> list[SigningKey]:
    """Keys to publish in ``jwks``: the active one and retired ones whose certificate is still valid."""
    rows = (await session.execute(select(SigningKey).where(SigningKey.tenant_id == tenant_id)
                                  .order_by(SigningKey.created_at.desc()))).scalars().all()
    now = dt.datetime.now(dt.UTC)
    out = []
    for row in rows:
        chain = ssi_x509.load_pem_certificates(row.chain_pem.encode("ascii"))
        if row.active or (chain and chain[0].not_valid_after_utc > now):
            out.append(row)
    return out


#: The JWS algorithm of a published key (the key kinds ``store_key`` accepts).
_JWK_ALGORITHMS = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("OKP", "Ed25519"): "EdDSA"}


async def signing_algorithms(ctx: IssuerContext, tenant_id: str) -> list[str]:
    """The algorithms of the tenant's published keys, the active key's first: the metadata's
    ``credential_signing_alg_values_supported``. Cached as the active key is (``ACTIVE_KEY_CACHE_SECONDS``,
    cleared by a rotation on this worker): a metadata request reads no key rows and parses no
    certificates while the entry lives. ``["ES256"]`` (what a created key uses) for a tenant without keys."""
    cached = ctx.keys.get(("signing-algorithms", tenant_id))
    if cached is not None:
        return list(cached)
    async with ctx.db.read_session() as session:
        rows = await published_keys(session, tenant_id)
    rows = sorted(rows, key=lambda row: not row.active)  # stable: the active key, then newest first
    found = [_JWK_ALGORITHMS.get((str(row.public_jwk.get("kty")), str(row.public_jwk.get("crv")))) for row in rows]
    algorithms = list(dict.fromkeys(alg for alg in found if alg)) or ["ES256"]
    return list(ctx.keys.put(("signing-algorithms", tenant_id), tuple(algorithms), ttl=ACTIVE_KEY_CACHE_SECONDS))


def key_summary(row: SigningKey) -> dict[str, object]:
    """A key as the admin API shows it (public parts only)."""
    chain = ssi_x509.load_pem_certificates(row.chain_pem.encode("ascii"))
    leaf = chain[0]
    stored = bytes(row.sealed_private_key)
    token_key = TokenKeyRef.decode(stored).as_dict() if TokenKeyRef.is_ref(stored) else None
    return {"kid": row.kid, "active": row.active, "created_at": row.created_at.isoformat(),
            "retired_at": row.retired_at.isoformat() if row.retired_at else None,
            "certificate_subject": ssi_x509.certificate_subject_name(leaf),
            "not_after": leaf.not_valid_after_utc.isoformat(), "san_uris": ssi_x509.san_uris(leaf),
            "backend": "pkcs11" if token_key else "software", "token_key": token_key}
