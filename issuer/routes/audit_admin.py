"""Admin API for the tenant's audit chain: head and checkpoint, a record's proof, a check, an export."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from service_kit.audit_api import NO_STORE, CheckView, HeadView, ProofView
from service_kit.errors import APIError

from .. import audit
from ..context import IssuerContext, get_ctx
from ..tenancy import TenantRef, admin_tenant
from . import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["audit"])


@router.get("/audit/head", response_model=HeadView, summary="The tenant's audit chain head and latest checkpoint")
async def audit_head(tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                     ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """Entries so far, the head hash and a checkpoint covering it (signed now with the tenant's key if needed)."""
    return JSONResponse(await audit.head(ctx, tenant.id, tenant.slug), headers=NO_STORE)


@router.get("/audit/credentials/{credential_id}/proof", response_model=ProofView,
            summary="Proof that an issuance record is in the tenant's chain")
async def audit_proof(credential_id: str = Path(max_length=64), tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                      ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """The record's entry, the entries linking it to the next signed checkpoint, and that checkpoint."""
    found = await audit.proof(ctx, tenant.id, tenant.slug, credential_id)
    if found is None:
        raise APIError(404, "not_found", "no such audit entry")
    return JSONResponse(found, headers=NO_STORE)


@router.get("/audit/check", response_model=CheckView, summary="Check the tenant's chain against its records")
async def audit_check(tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                      ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """Recompute every digest and hash, verify every checkpoint, check every record is chained and its
    status matches its chained status changes; `ok: false` names the first problem."""
    return JSONResponse((await audit.check(ctx, tenant.id, tenant.slug)).as_dict(), headers=NO_STORE)


@router.get("/audit/export", summary="Export the tenant's audit chain (for `cartera audit verify`)")
async def audit_export(tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                       ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """Every entry with its content and salt, every checkpoint and the tenant's JWKS."""
    return JSONResponse(await audit.export(ctx, tenant.id, tenant.slug), headers={
        **NO_STORE, "Content-Disposition": 'attachment; filename="issuer-audit-chain.json"'})
