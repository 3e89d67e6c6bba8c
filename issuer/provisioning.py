"""Idempotent provisioning of the demo issuers, for the composition root (``cartera run``) and tests.

:func:`provision_demo` creates (or completes) three tenants against the issuer's database:

=====================  =========================================  ====================================
slug                   organisation                               types (Via Oberta product)
=====================  =========================================  ====================================
``uni-barcelona``      Universitat de Barcelona                   university-diploma (TITOLS_UNIVERSITARIS)
``aoc-tax``            Consorci AOC (certificats d'interoperab.)  tax-compliance (ECOT103), working-life (VIDA_LABORAL)
``ajuntament-girona``  Ajuntament de Girona                       padro (RESIDENT)
=====================  =========================================  ====================================

Each gets an ES256 signing key certified by the given (development) CA for its issuer identifier,
the built-in types, and a Via Oberta source pointing at the given (sandbox) URL and signing as the
given requesting-body identity. API keys are stored hashed, so they cannot be read back: pass
``api_keys`` (slug → key, e.g. from ``var/cartera-dev.json``) to keep using the same keys across
runs; tenants without a given key get a new one, returned.
"""

from __future__ import annotations

from typing import Any

import httpx
from cryptography import x509 as cx509
from sqlalchemy import select

from credential_schemas import load_builtin_types
from service_kit.crypto import SecretBox, generate_api_key, hash_api_key, load_master_key
from service_kit.db import Database
from service_kit.migrations import run_migrations_async
from service_kit.outbound import guarded_transport
from ssi.jose import Key

from .app import MIGRATIONS
from .context import IssuerContext, new_id, utcnow
from .keys import attach_token, create_key, discard_created_key
from .models import ApiKey, SigningKey, SourceConfig, Tenant
from .nonces import nonce_key
from .registry import register_type, set_source, tenant_types
from .settings import IssuerSettings
from .tenancy import TenantRef

DEMO_TENANTS: list[dict[str, Any]] = [
    {"slug": "uni-barcelona", "name": "Universitat de Barcelona", "body_id": "Q0818001J",
     "types": {"university-diploma": {"product": "TITOLS_UNIVERSITARIS",
                                      "purpose": "Emissió del títol universitari en format digital",
                                      "procedure": "TITOLS-DIGITALS", "consent": "Si"}}},
    {"slug": "aoc-tax", "name": "Consorci AOC - Certificats d'interoperabilitat", "body_id": "Q0801175A",
     "types": {"tax-compliance": {"product": "ECOT103", "purpose": "Certificat d'estar al corrent d'obligacions tributàries",
                                  "procedure": "ECOT-SUBVENCIONS", "consent": "Si"},
               "working-life": {"product": "VIDA_LABORAL", "purpose": "Informe de vida laboral per a tràmits",
                                "procedure": "VIDA-LABORAL", "consent": "Si"}}},
    {"slug": "ajuntament-girona", "name": "Ajuntament de Girona", "body_id": "P1708500B",
     "types": {"padro": {"product": "RESIDENT", "purpose": "Volant d'empadronament",
                         "procedure": "PADRO-VOLANT", "consent": "Si"}}},
]
DEMO_OFFICIAL = {"official_name": "Oficina de Cartera (demo)", "official_nif": "00000000T"}


def _display(name: str) -> list[dict[str, str]]:
    return [{"name": name, "locale": loc} for loc in ("ca", "es", "en")]


async def provision_demo(settings: IssuerSettings, *, ca_key: Key, ca_cert: cx509.Certificate, viaoberta_url: str,
                         viaoberta_platform_cert_pem: bytes, requester_key_pem: bytes, requester_cert_pem: bytes,
                         api_keys: dict[str, str] | None = None) -> dict[str, Any]:
    """Create the demo tenants (idempotently) and return ``{"issuer_url", "tenants": {slug: {...}}}``.

    Each tenant entry: ``issuer_url``, ``metadata_url``, ``api_key``, ``types`` (ids). Migrations are
    applied first, so this can run before the service has ever started.
    """
    await run_migrations_async(MIGRATIONS, settings.database_url)
    db = Database(settings.database_url)
    master_key = load_master_key(settings)
    ctx = IssuerContext(settings=settings, db=db, box=SecretBox(master_key), nonce_key=nonce_key(master_key))
    token = attach_token(ctx)  # tenant keys made in the PKCS#11 token when key_backend is pkcs11
    builtin = load_builtin_types()
    given = dict(api_keys or {})
    out: dict[str, Any] = {"issuer_url": settings.public_url, "tenants": {}}
    # Sources are validated by building their adapters, which call through the issuer's guarded client.
    ctx.http = httpx.AsyncClient(follow_redirects=False, transport=guarded_transport(settings.outbound_policy()))
    try:
        for spec in DEMO_TENANTS:
            created: SigningKey | None = None
            try:
                async with db.session() as session:
                    row = (await session.execute(select(Tenant).where(Tenant.slug == spec["slug"]))).scalar_one_or_none()
                    if row is None:
                        row = Tenant(id=new_id("t_", 9), slug=spec["slug"], name=spec["name"], display=_display(spec["name"]),
                                     body_id=spec["body_id"], created_at=utcnow())
                        session.add(row)
                        await session.flush()
                    tenant = TenantRef(row.id, row.slug, row.name, row.body_id, list(row.display or []))
                    key = given.get(spec["slug"])
                    if key is None or (await session.execute(select(ApiKey).where(
                            ApiKey.key_hash == hash_api_key(key), ApiKey.tenant_id == tenant.id))).scalar_one_or_none() is None:
                        key = key or generate_api_key()
                        session.add(ApiKey(id=new_id("k_", 9), tenant_id=tenant.id, key_hash=hash_api_key(key), label="demo",
                                           created_at=utcnow(), revoked=False))
                    has_key = (await session.execute(select(SigningKey.kid).where(
                        SigningKey.tenant_id == tenant.id, SigningKey.active.is_(True)))).first()
                    if has_key is None:
                        created = await create_key(ctx, session, tenant, ca_key, ca_cert)
                    existing = await tenant_types(ctx, session, tenant.id)
                    for type_id, source in spec["types"].items():
                        if type_id not in existing:
                            await register_type(ctx, session, tenant, dict(builtin[type_id].definition))
                        if await session.get(SourceConfig, (tenant.id, type_id)) is None:
                            await set_source(ctx, session, tenant, type_id, {
                                "kind": "viaoberta", "endpoint": viaoberta_url, "product": source["product"],
                                "signing_key_pem": requester_key_pem.decode("ascii"),
                                "signing_cert_pem": requester_cert_pem.decode("ascii"),
                                "platform_certs_pem": [viaoberta_platform_cert_pem.decode("ascii")],
                                # The sandbox's pending queries answer within seconds, not Via Oberta's
                                # "within the hour": asked again after one, not thirty.
                                "timeout": 10, "retries": 1, "pending_retry_seconds": 1,
                                "context": {"purpose": source["purpose"], "procedure": source["procedure"],
                                            "consent": source["consent"], **DEMO_OFFICIAL}})
            except BaseException:
                # Not stored after all: a key made for the tenant in the PKCS#11 token goes too.
                await discard_created_key(ctx, created)
                raise
            out["tenants"][spec["slug"]] = {
                "name": spec["name"], "issuer_url": ctx.issuer_url(spec["slug"]), "api_key": key,
                "metadata_url": f"{settings.public_url}/.well-known/openid-credential-issuer/t/{spec['slug']}",
                "login_callback": f"{ctx.issuer_url(spec['slug'])}/login/callback",
                "types": sorted(spec["types"])}
    finally:
        await ctx.http.aclose()
        if token is not None:
            token.close()
        await db.dispose()
    return out
