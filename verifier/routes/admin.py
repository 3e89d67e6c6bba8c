"""Platform administration (``/v1/admin``): creating agencies, guarded by the platform admin key."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from sqlalchemy.exc import IntegrityError

from service_kit.crypto import hash_api_key
from service_kit.errors import APIError
from service_kit.pkcs11 import PKCS11Error
from verifier.agencies import AgencyError, CreatedAgency, create_agency, discard_generated_key, verifier_host
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
    created: CreatedAgency | None = None
    try:
        async with svc.db.session() as session:
            created = await create_agency(session, svc.box, slug=body.slug, name=body.name, ca_key=ca[0],
                                          ca_cert=ca[1], host=verifier_host(svc.public_url),
                                          key_backend=body.key_backend or svc.settings.key_backend, hsm=svc.keys.hsm,
                                          token_key_label=body.token_key_label)
    except AgencyError as exc:
        raise APIError(409 if exc.code == "agency_exists" else 400,
                       "conflict" if exc.code == "agency_exists" else "invalid_request", exc.detail) from None
    except PKCS11Error as exc:
        error = {409: "conflict", 503: "temporarily_unavailable"}.get(exc.http_status, "invalid_request")
        raise APIError(exc.http_status, error, exc.detail, extra={"code": exc.code}) from None
    except BaseException as exc:
        # The agency was not stored (its commit failed): a token key generated for it goes too.
        # create_agency has removed it already when the failure was its own (created is None then).
        discard_generated_key(svc.keys.hsm, created)
        if isinstance(exc, IntegrityError):
            # Two creations of one slug at once both found it free; the unique constraint kept one.
            raise APIError(409, "conflict", "an agency with this slug exists") from None
        raise
    assert created is not None
    ref = created.token_key
    return AgencyCreated(id=created.id, slug=created.slug, name=created.name, api_key=created.api_key,
                         webhook_secret=created.webhook_secret, key_backend="pkcs11" if ref else "software",
                         token_key=ref.as_dict() if ref else None)
