"""Aries channel: the admin endpoint creating invitations, and the agent's webhook receiver (``/v1``).

``POST /v1/aries/invitations`` (tenant API key) creates an out-of-band invitation bound to a subject
and a credential type, as ``POST /v1/offers`` does for OpenID4VCI. ``POST /v1/aries/webhooks/topic/
{topic}/`` is where the issuer's ACA-Py agent posts its events, authenticated by its ``x-api-key``
(compared by hash against the keys in the database); payloads are never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from aries.errors import WebhookRefused
from aries.service import webhook_refused_error
from service_kit.errors import APIError

from ..aries_channel import IssuerAriesChannel, qr_png_base64
from ..tenancy import TenantRef, admin_tenant
from . import API_PREFIX
from .admin import SubjectIn

router = APIRouter(prefix=API_PREFIX, tags=["aries"])
log = logging.getLogger(__name__)


async def get_channel(request: Request) -> IssuerAriesChannel:
    """FastAPI dependency: the app's Aries channel (async: no thread-pool hop per request)."""
    return request.app.state.aries  # type: ignore[no-any-return]


class InvitationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"type": "university-diploma", "subject": {"identifier": "12345678Z"}}]})

    type: str = Field(min_length=1, max_length=100, description="The credential type id to issue over DIDComm.")
    subject: SubjectIn = Field(description="The citizen the connection is bound to (identity established by the "
                                           "operator, as for an OpenID4VCI offer).")
    selector: str | None = Field(default=None, max_length=100,
                                 description="Picks one record when the source holds several (a degree's NumTitulo).")


class InvitationCreated(BaseModel):
    exchange_id: str = Field(description="Follow the exchange with `GET /v1/aries/invitations/{exchange_id}`.")
    invitation_url: str = Field(description="The out-of-band invitation URL (`?oob=`), long.")
    short_url: str = Field(description="Served by the issuer, answers with the invitation; the QR code carries it. "
                                       "A bearer capability until the wallet connects: give it to the citizen only.")
    proof_type: Literal["Ed25519Signature2020", "BbsBlsSignature2020"]
    expires_at: dt.datetime
    qr_png_base64: str = Field(description="QR code of `short_url`, PNG, base64.")
    qr_svg: str = Field(description="QR code of `short_url`, SVG.")


class ExchangeInfo(BaseModel):
    exchange_id: str
    type: str
    subject_identifier: str
    proof_type: str
    state: Literal["invited", "offering", "pending", "offered", "issued", "failed", "abandoned"] = Field(
        description="invited → offering (wallet connected) → offered → issued; or failed / abandoned. `pending`: "
                    "the data source answered asynchronously; the issuer polls it and offers when the data arrive.")
    credential_id: str | None = Field(description="The issuance record (shared with OpenID4VCI: revoke it through "
                                                  "`/v1/credentials/{id}/revoke`).")
    error: str | None = Field(description="Code of the failure, when failed.")
    created_at: dt.datetime
    expires_at: dt.datetime = Field(description="Until when the invitation may be used; while `pending`, when the "
                                                "data source is asked next; while `offered`, when the offer went "
                                                "out (`aries_offer_ttl` counts from it).")


@router.post("/aries/invitations", status_code=201, response_model=InvitationCreated,
             summary="Create an Aries (DIDComm) out-of-band invitation for a subject and a credential type",
             responses={503: {"description": "The Aries agent is unavailable (`code: aries.agent_unavailable`); "
                                             "nothing is stored."},
                        404: {"description": "The Aries channel is not enabled."}})
async def create_invitation(body: InvitationCreate, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                            aries: IssuerAriesChannel = Depends(get_channel)) -> InvitationCreated:  # noqa: B008
    subject = body.subject.model_dump()
    subject["identifier"] = subject["identifier"].upper()
    created = await aries.create_invitation(tenant, body.type, subject, body.selector)
    return InvitationCreated(exchange_id=created.exchange_id, invitation_url=created.invitation_url,
                             short_url=created.short_url, proof_type=created.proof_type,  # type: ignore[arg-type]
                             expires_at=created.expires_at, qr_png_base64=qr_png_base64(created.qr_png),
                             qr_svg=created.qr_svg)


@router.get("/aries/invitations/{exchange_id}", response_model=ExchangeInfo, summary="One Aries exchange")
async def get_exchange(exchange_id: str, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                       aries: IssuerAriesChannel = Depends(get_channel)) -> ExchangeInfo:  # noqa: B008
    row = await aries.exchange(tenant, exchange_id[:60])
    if row is None:
        raise APIError(404, "not_found", "no such exchange")
    return ExchangeInfo(exchange_id=row.id, type=row.type_id, subject_identifier=str(row.subject.get("identifier")),
                        proof_type=row.proof_type, state=row.state,  # type: ignore[arg-type]
                        credential_id=row.credential_id, error=row.error, created_at=row.created_at,
                        expires_at=row.expires_at)


@router.post("/aries/webhooks/topic/{topic}/", summary="Webhook receiver of the issuer's ACA-Py agent",
             responses={401: {"description": "Missing or wrong `x-api-key`."}})
async def webhook(topic: str, request: Request,
                  aries: IssuerAriesChannel = Depends(get_channel)) -> JSONResponse:  # noqa: B008
    if not aries.enabled:
        raise APIError(404, "not_found", "the Aries channel is not enabled on this issuer")
    try:
        outcome = await aries.receive(request.headers, topic, await request.body())
    except WebhookRefused as exc:
        raise webhook_refused_error(exc) from exc
    return JSONResponse({"outcome": outcome})
