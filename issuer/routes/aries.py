"""Aries channel routes of the issuer: the JSON-LD context of each credential type.

DIDComm wallets (ACA-Py and others) expand the W3C credentials of the Aries channel with the type's
context, served here at the stable, versioned URL that :func:`aries.jsonld.context_url` puts in the
credential: ``<issuer>/v1/aries/contexts/<type id>/<version>`` (``<issuer>`` is the tenant's issuer
identifier, ``/t/<slug>``). The document is generated from the registered type definition, so every
claim is defined. See docs/aries.md.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from aries.jsonld import generate_context
from aries.status import status_context
from credential_schemas import load_type
from service_kit.errors import APIError

from ..context import IssuerContext, get_ctx
from ..registry import tenant_types, type_versions
from ..tenancy import TenantRef, path_tenant

router = APIRouter()

# Contexts are immutable per version: let wallets and agents cache them for a day.
_CACHE = {"Cache-Control": "public, max-age=86400"}


@router.get("/t/{slug}/v1/aries/contexts/status/1", tags=["aries"],
            summary="JSON-LD context of the Aries channel's status list credentials")
async def status_list_context(tenant: TenantRef = Depends(path_tenant)) -> JSONResponse:  # noqa: B008
    return JSONResponse(status_context(), media_type="application/ld+json", headers=_CACHE)


@router.get("/t/{slug}/v1/aries/contexts/{type_id}/{version}", tags=["aries"],
            summary="JSON-LD context of a credential type (Aries channel)")
async def type_context(type_id: str, version: str, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                       ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    async with ctx.db.read_session() as session:
        registered = (await tenant_types(ctx, session, tenant.id)).get(type_id)
        if registered is None:
            raise APIError(404, "not_found", "no such credential type")
        ctype = registered.ctype
        if version != registered.version:
            rows = [r for r in await type_versions(session, tenant.id, type_id) if r.version == version]
            if not rows:
                raise APIError(404, "not_found", "no such version of the credential type")
            ctype = load_type(rows[0].definition)
    return JSONResponse(generate_context(ctype), media_type="application/ld+json", headers=_CACHE)
