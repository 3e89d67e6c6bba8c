"""Tenants' signing keys: created under a CA or imported, sealed at rest, rotated without breaking old credentials.

A rotation makes the new key active and retires the old one: retired keys stay in the tenant's JWT VC
Issuer Metadata (``jwks``) until their certificate expires, so credentials signed before the rotation
keep verifying by ``x5c`` (their own chain) and by metadata (the ``kid``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509 as cx509
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ssi import x509 as ssi_x509
from ssi.errors import SSIError
from ssi.jose import Key

from .context import IssuerContext, utcnow
from .models import SigningKey
from .tenancy import TenantRef as Tenant


class SigningKeyError(Exception):
    """A key or certificate given to the issuer is unusable; ``code`` is stable."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


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
    """A leaf certificate for a tenant key: SAN URI = the issuer identifier, SAN DNS = its host."""
    host = urlsplit(issuer_url).hostname or ""
    return ssi_x509.issue_certificate(ca_key, ca_cert, key, name, san_uris=[issuer_url], san_dns=[host] if host else [],
                                      days=days, organization=name)


async def store_key(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, key: Key,
                    chain: list[cx509.Certificate]) -> SigningKey:
    """Seal ``key``, store it with its chain, make it the active key (the previous one is retired)."""
    kid = key.thumbprint()
    now = utcnow()
    await session.execute(update(SigningKey).where(SigningKey.tenant_id == tenant.id, SigningKey.active.is_(True))
                          .values(active=False, retired_at=now))
    row = SigningKey(kid=kid, tenant_id=tenant.id, sealed_private_key=ctx.box.seal(key.private_pem(), _aad(tenant.id, kid)),
                     chain_pem=_chain_pem(chain), public_jwk={**key.public_jwk(include_kid=False), "kid": kid,
                                                                "alg": key.alg, "use": "sig"},
                     active=True, created_at=now)
    session.add(row)
    ctx.keys.clear()
    return row


async def create_key(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, ca_key: Key,
                     ca_cert: cx509.Certificate) -> SigningKey:
    """Generate an ES256 key, certify it with the CA for the tenant's identifier, make it active."""
    key = Key.generate("ES256")
    cert = issue_tenant_certificate(ca_key, ca_cert, key, ctx.issuer_url(tenant.slug), tenant.name)
    return await store_key(ctx, session, tenant, key, [cert])


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
    if not ssi_x509.san_matches(chain[0], ctx.issuer_url(tenant.slug)) and \
            ctx.issuer_url(tenant.slug) not in ssi_x509.san_uris(chain[0]):
        raise SigningKeyError("bad_key", "the leaf certificate does not name the issuer identifier in its SAN")
    return await store_key(ctx, session, tenant, key, chain)


async def active_key(ctx: IssuerContext, session: AsyncSession, tenant_id: str) -> ActiveKey | None:
    """The tenant's active signing key (unsealed, cached) or ``None`` when it has none."""
    cached = ctx.keys.get(("active", tenant_id))
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    row = (await session.execute(select(SigningKey).where(SigningKey.tenant_id == tenant_id,
                                                          SigningKey.active.is_(True)))).scalar_one_or_none()
    if row is None:
        return None
    pem = ctx.box.open(row.sealed_private_key, _aad(tenant_id, row.kid))
    key = Key.from_pem(pem, kid=row.kid)
    chain = ssi_x509.load_pem_certificates(row.chain_pem.encode("ascii"))
    not_after = min(cert.not_valid_after_utc for cert in chain)
    return ctx.keys.put(("active", tenant_id), ActiveKey(key=key, x5c=ssi_x509.x5c_from_chain(chain),
                                                         not_after=not_after))


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


def key_summary(row: SigningKey) -> dict[str, object]:
    """A key as the admin API shows it (public parts only)."""
    chain = ssi_x509.load_pem_certificates(row.chain_pem.encode("ascii"))
    leaf = chain[0]
    return {"kid": row.kid, "active": row.active, "created_at": row.created_at.isoformat(),
            "retired_at": row.retired_at.isoformat() if row.retired_at else None,
            "certificate_subject": ssi_x509.certificate_subject_name(leaf),
            "not_after": leaf.not_valid_after_utc.isoformat(), "san_uris": ssi_x509.san_uris(leaf)}
