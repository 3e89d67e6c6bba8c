"""Aries channel routes of the issuer: the JSON-LD context of each credential type.

DIDComm wallets (ACA-Py and others) expand the W3C credentials of the Aries channel with the type's
context, served here at the stable, versioned URL that :func:`aries.jsonld.context_url` puts in the
credential: ``<issuer>/v1/aries/contexts/<type id>/<version>`` (``<issuer>`` is the tenant's issuer
identifier, ``/t/<slug>``). The document is generated from the registered type definition, so every
claim is defined. Also public here: the short invitation URL (``/v1/aries/i/<code>``), the signed W3C
status list credentials (``/v1/aries/status/<list>/<suite>``) and the tenant's DIDs
(``/v1/aries/issuer``): a verifier trusting the tenant's https identifier trusts these DIDs, so it asks
for them as a JWT signed with the tenant's key and its ``x5c`` chain, which it checks against the same
anchors as the tenant's SD-JWT VCs (a plain JSON copy stays for people; no verifier trusts it). See
docs/aries.md.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from aries.jsonld import generate_context
from aries.status import status_context
from service_kit.errors import APIError
from ssi.encoding import json_dumps
from ssi.jose import sign_jws

from ..aries_channel import IssuerAriesChannel
from ..context import IssuerContext, get_ctx
from ..keys import active_key
from ..registry import load_stored_type, tenant_types, type_versions
from ..tenancy import TenantRef, path_tenant
from .aries_admin import get_channel

router = APIRouter()

# Contexts are immutable per version: let wallets and agents cache them for a day.
_CACHE = {"Cache-Control": "public, max-age=86400"}
# The contexts are served as application/ld+json (what JSON-LD processors ask for), not application/json.
_JSON_LD: dict[int | str, dict[str, Any]] = {200: {"content": {"application/ld+json": {"schema": {"type": "object"}}}}}


@router.get("/t/{slug}/v1/aries/contexts/status/1", tags=["aries"], responses=_JSON_LD,
            summary="JSON-LD context of the Aries channel's status list credentials")
async def status_list_context(tenant: TenantRef = Depends(path_tenant)) -> JSONResponse:  # noqa: B008
    return JSONResponse(status_context(), media_type="application/ld+json", headers=_CACHE)


@router.get("/t/{slug}/v1/aries/contexts/{type_id}/{version}", tags=["aries"], responses=_JSON_LD,
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
            ctype = load_stored_type(rows[0].definition)
    return JSONResponse(generate_context(ctype), media_type="application/ld+json", headers=_CACHE)


@router.get("/t/{slug}/v1/aries/i/{code}", tags=["aries"],
            summary="Short invitation URL: the out-of-band invitation (JSON when asked, else a redirect)",
            responses={200: {"content": {"application/json": {}}}, 302: {"description": "To the `?oob=` URL."}})
async def short_invitation(code: str, request: Request, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                           aries: IssuerAriesChannel = Depends(get_channel)) -> Response:  # noqa: B008
    row = await aries.invitation_for_code(tenant, code) if aries.enabled else None
    if row is None:
        raise APIError(404, "not_found", "no such invitation (or it was used or expired)")
    headers = {"Cache-Control": "no-store"}
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(row.invitation, headers=headers)
    return RedirectResponse(row.invitation_url, status_code=302, headers=headers)


@router.get("/t/{slug}/v1/aries/status/{list_id}/{suite}", tags=["aries"],
            summary="W3C Bitstring Status List credential of the Aries channel (signed by the tenant's DID)")
async def aries_status_list(list_id: str, suite: str, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                            aries: IssuerAriesChannel = Depends(get_channel),  # noqa: B008
                            ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    document = await aries.status_list(tenant, list_id, suite) if aries.enabled else None
    if document is None:
        raise APIError(404, "not_found", "no such status list")
    return JSONResponse(document, media_type="application/ld+json",
                        headers={"Cache-Control": f"public, max-age={ctx.settings.status_list_ttl}"})


class AriesIssuerInfo(BaseModel):
    issuer: str = Field(description="The tenant's credential issuer identifier (https).")
    dids: dict[str, str] = Field(description="The did:key it signs Aries credentials with, per signature suite.")
    suites: dict[str, str] = Field(
        default_factory=dict,
        description="The signature suite of each credential type it issues over DIDComm, by `vct` "
                    "(`Ed25519Signature2020` or `BbsBlsSignature2020`): what a verifier asks the holder to present.")


#: Media type (and JWT ``typ``) of the signed issuer document; verifiers ask for it with ``Accept``.
ISSUER_DOCUMENT_TYPE = "aries-issuer+jwt"
ISSUER_DOCUMENT_MEDIA_TYPE = f"application/{ISSUER_DOCUMENT_TYPE}"
#: Lifetime of a signed document: a verifier fetches it for every request and answer, so a day bounds how
#: long a copy taken before a change (a DID withdrawn, a key rotated) can be replayed.
ISSUER_DOCUMENT_SECONDS = 86_400
#: A signed document is reused this long (for the same content and key): the endpoint is public, and a
#: signature per GET would let anyone keep a PKCS#11 token busy.
ISSUER_DOCUMENT_REUSE_SECONDS = 300


async def _signed_issuer_document(ctx: IssuerContext, tenant: TenantRef, info: AriesIssuerInfo) -> str:
    async with ctx.db.read_session() as session:
        signer = await active_key(ctx, session, tenant.id)
    if signer is None:
        raise APIError(503, "temporarily_unavailable", "the issuer has no signing key")
    content = {"dids": info.dids, "suites": info.suites}
    cache_key = ("aries-issuer-document", tenant.id, signer.key.kid,
                 hashlib.sha256(json_dumps(content).encode("utf-8")).hexdigest())
    cached = ctx.keys.get(cache_key)
    if cached is not None:
        return str(cached)
    now = int(time.time())
    # Never valid past the certificate that vouches for it: a verifier checks the chain at its own now.
    exp = min(now + ISSUER_DOCUMENT_SECONDS, int(signer.not_after.timestamp()))
    token = sign_jws({"typ": ISSUER_DOCUMENT_TYPE, "kid": signer.key.kid, "x5c": signer.x5c},
                     {"iss": info.issuer, "iat": now, "exp": exp, **content}, signer.key)
    return str(ctx.keys.put(cache_key, token, ttl=ISSUER_DOCUMENT_REUSE_SECONDS))


@router.get("/t/{slug}/v1/aries/issuer", tags=["aries"], response_model=AriesIssuerInfo,
            summary="The tenant's Aries DIDs: verifiers trusting this issuer identifier trust these DIDs",
            description="With `Accept: application/aries-issuer+jwt`, the same members as claims of a JWT "
                        "(`typ` `aries-issuer+jwt`, `iss`, `iat`, `exp`, `dids`, `suites`) signed with the "
                        "tenant's current key, its `x5c` chain in the header: the only form verifiers trust. "
                        "Otherwise plain JSON, for people.",
            responses={200: {"content": {ISSUER_DOCUMENT_MEDIA_TYPE: {"schema": {"type": "string"}}}}})
async def aries_issuer(request: Request, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                       aries: IssuerAriesChannel = Depends(get_channel),  # noqa: B008
                       ctx: IssuerContext = Depends(get_ctx)) -> Any:  # noqa: B008
    if not aries.enabled:
        info = AriesIssuerInfo(issuer=ctx.issuer_url(tenant.slug), dids={})
    else:
        types = await tenant_types(ctx, None, tenant.id)
        info = AriesIssuerInfo(issuer=ctx.issuer_url(tenant.slug), dids=await aries.published_dids(tenant.id),
                               suites={reg.ctype.vct: aries.proof_type(type_id) for type_id, reg in types.items()})
    if ISSUER_DOCUMENT_MEDIA_TYPE in request.headers.get("accept", ""):
        return Response(await _signed_issuer_document(ctx, tenant, info), media_type=ISSUER_DOCUMENT_MEDIA_TYPE,
                        headers={"Cache-Control": "no-cache", "Vary": "Accept"})
    return JSONResponse(info.model_dump(), headers={"Vary": "Accept"})
