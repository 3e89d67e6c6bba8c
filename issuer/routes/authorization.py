"""Authorization code flow endpoints: ``/par``, ``/authorize``, ``/login/callback`` (see :mod:`issuer.authorization`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse

from ..authorization import RedirectableError, create_request, finish_login, start_login
from ..context import IssuerContext, get_ctx
from ..registry import tenant_types
from ..tenancy import TenantRef, path_tenant
from .protocol import NO_STORE, _form

router = APIRouter()


async def _known(ctx: IssuerContext, tenant: TenantRef) -> set[str]:
    return set(await tenant_types(ctx, None, tenant.id))


def _query(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in out:
            from service_kit.errors import APIError, safe_description

            # The name is the client's: quoted within RFC 6749's error_description characters, cut short.
            raise APIError(400, "invalid_request", f"parameter {safe_description(key, 40)} is repeated")
        out[key] = value
    return out


@router.post("/t/{slug}/par", status_code=201, tags=["oauth"], summary="Pushed authorization request (RFC 9126)")
async def par(request: Request, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
              ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    params = await _form(request)
    request_uri, _ = await create_request(ctx, tenant, params, await _known(ctx, tenant), pushed=True)
    return JSONResponse({"request_uri": request_uri, "expires_in": ctx.settings.par_ttl}, status_code=201,
                        headers=NO_STORE)


@router.get("/t/{slug}/authorize", tags=["oauth"], summary="Authorization endpoint: logs the citizen in at VÀLid")
async def authorize(request: Request, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                    ctx: IssuerContext = Depends(get_ctx)) -> RedirectResponse:  # noqa: B008
    try:
        url = await start_login(ctx, tenant, _query(request), await _known(ctx, tenant))
    except RedirectableError as exc:
        return RedirectResponse(exc.location, status_code=303, headers=NO_STORE)
    return RedirectResponse(url, status_code=303, headers=NO_STORE)


@router.get("/t/{slug}/login/callback", tags=["oauth"], summary="Return from VÀLid")
async def login_callback(request: Request, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                         ctx: IssuerContext = Depends(get_ctx)) -> RedirectResponse:  # noqa: B008
    url = await finish_login(ctx, tenant, _query(request))
    return RedirectResponse(url, status_code=303, headers=NO_STORE)
