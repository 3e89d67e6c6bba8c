"""Platform administration (``/v1/admin``): creating agencies, guarded by the platform admin key."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request

from service_kit.crypto import hash_api_key
from service_kit.errors import APIError
from verifier.agencies import AgencyError, create_agency, verifier_host
from verifier.routes.deps import UNAUTHORIZED, Services, Svc, bearer_token
from verifier.schemas import AgencyCreated, AgencyIn

router = APIRouter(prefix="/admin", tags=["admin"])


def require_admin(request: Request) -> None:
    """The platform admin key in ``Authorization: Bearer``; 401 otherwise (404 when none is configured)."""
    svc: Services = request.app.state.services
    configured = svc.settings.admin_api_key
    if configured is None:
        raise APIError(404, "not_found", "the platform admin API is not enabled")
    token = bearer_token(request) or ""
    if not hmac.compare_digest(hash_api_key(token), hash_api_key(configured.get_secret_value())):
        raise APIError(401, "unauthorized", "the admin key is not valid", UNAUTHORIZED)


@router.post("/agencies", response_model=AgencyCreated, status_code=201, summary="Create an agency",
             dependencies=[Depends(require_admin)])
async def create_agency_route(body: AgencyIn, svc: Svc) -> AgencyCreated:
    ca = svc.rp_ca
    if ca is None:
        raise APIError(409, "conflict", "no relying-party CA is configured (rp_ca_key_file, rp_ca_cert_file)")
    try:
        async with svc.db.session() as session:
            created = await create_agency(session, svc.box, slug=body.slug, name=body.name, ca_key=ca[0],
                                          ca_cert=ca[1], host=verifier_host(svc.public_url))
    except AgencyError as exc:
        raise APIError(409 if exc.code == "agency_exists" else 400,
                       "conflict" if exc.code == "agency_exists" else "invalid_request", exc.detail) from None
    return AgencyCreated(id=created.id, slug=created.slug, name=created.name, api_key=created.api_key,
                         webhook_secret=created.webhook_secret)
