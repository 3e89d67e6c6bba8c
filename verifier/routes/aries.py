"""Aries channel routes of the verifier (``/v1``): the request variant, its QR codes and short URL, webhooks.

``POST /v1/aries/requests`` (agency API key) creates a present-proof 2.0 request from one of the
agency's templates, wrapped in an out-of-band invitation; its result is read like any other with
``GET /v1/requests/{id}`` (and its live status at ``events_url``). The QR code carries the short URL
``/v1/aries/i/{code}``, which answers with the invitation. The agent posts its events to
``/v1/aries/webhooks/topic/{topic}/`` with its ``x-api-key``; payloads are never logged.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aries.errors import WebhookRefused
from aries.service import webhook_refused_error
from service_kit.errors import APIError
from service_kit.ratelimit import rate_limit_responses
from service_kit.security import no_store
from ssi.oid4vci import check_url
from ssi.qr import qr_png, qr_svg
from verifier.aries_channel import VerifierAriesChannel
from verifier.routes.agency import check_destinations, limit_request_creation
from verifier.routes.deps import AgencyDep, Svc

router = APIRouter(tags=["aries"])


def get_channel(request: Request) -> VerifierAriesChannel:
    """FastAPI dependency: the app's Aries channel."""
    return request.app.state.aries  # type: ignore[no-any-return]


Channel = Annotated[VerifierAriesChannel, Depends(get_channel)]


class AriesRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"template": "job-application"}]})

    template: str = Field(min_length=1, max_length=100, description="Name of one of the agency's templates.")
    query_id: str | None = Field(default=None, max_length=100,
                                 description="The template's Credential Query to ask (default: the first).")
    expires_in: int | None = Field(default=None, ge=30, le=86_400, description="Lifetime of the request, seconds.")
    webhook_url: str | None = Field(default=None, max_length=2000,
                                    description="Where the signed result webhook is POSTed.")

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        return value if value is None else check_url(value, allow_http_loopback=True)


class AriesRequestOut(BaseModel):
    id: str = Field(description="Transaction id: the result is read with `GET /v1/requests/{id}`, as for OpenID4VP.")
    uri: str = Field(description="What the QR code carries: the short URL (same as `short_url`).")
    short_url: str = Field(description="Served by the verifier, answers with the out-of-band invitation.")
    invitation_url: str = Field(description="The out-of-band invitation URL (`?oob=`), long.")
    proof_type: str = Field(description="Signature suite asked (BbsBlsSignature2020: selective disclosure).")
    claims: list[str] = Field(description="The claims asked (and the only ones reported).")
    status_url: str
    events_url: str = Field(description="Server-Sent Events with the live status (carries a watch token).")
    qr_png_url: str
    qr_svg_url: str
    expires_at: str


@router.post("/aries/requests", response_model=AriesRequestOut, status_code=201,
             summary="Create an Aries (DIDComm present-proof 2.0) request from a template",
             dependencies=[Depends(no_store), Depends(limit_request_creation)],
             responses={503: {"description": "The Aries agent is unavailable (`code: aries.agent_unavailable`)."},
                        404: {"description": "No such template, or the Aries channel is not enabled."},
                        **rate_limit_responses()})
async def create_aries_request(body: AriesRequestIn, agency: AgencyDep, svc: Svc, aries: Channel) -> AriesRequestOut:
    await check_destinations(svc, body.webhook_url)
    tx, watch, row = await aries.create_request(agency, body.template, query_id=body.query_id,
                                                expires_in=body.expires_in, webhook_url=body.webhook_url)
    base = f"{svc.public_url}/v1/requests/{tx.id}"
    short_url = f"{svc.public_url}/v1/aries/i/{row.short_code}"
    return AriesRequestOut(id=tx.id, uri=short_url, short_url=short_url, invitation_url=row.invitation_url,
                           proof_type=row.request["proof_type"], claims=list(row.request["claims"]), status_url=base,
                           events_url=f"{base}/events?watch={watch}",
                           qr_png_url=f"{svc.public_url}/v1/aries/requests/{tx.id}/qr.png",
                           qr_svg_url=f"{svc.public_url}/v1/aries/requests/{tx.id}/qr.svg",
                           expires_at=tx.expires_at.isoformat())


async def _short_url(aries: VerifierAriesChannel, agency: AgencyDep, svc: Svc, tx_id: str) -> str:
    row = await aries.presentation_for_tx(agency, tx_id[:60]) if aries.enabled else None
    if row is None:
        raise APIError(404, "not_found", "no such request for this agency")
    return f"{svc.public_url}/v1/aries/i/{row.short_code}"


@router.get("/aries/requests/{tx_id}/qr.png", summary="QR code (PNG) of an Aries request's short URL",
            responses={200: {"content": {"image/png": {}}}})
async def aries_qr_png(tx_id: str, agency: AgencyDep, svc: Svc, aries: Channel) -> Response:
    png = await asyncio.to_thread(qr_png, await _short_url(aries, agency, svc, tx_id))
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/aries/requests/{tx_id}/qr.svg", summary="QR code (SVG) of an Aries request's short URL",
            responses={200: {"content": {"image/svg+xml": {}}}})
async def aries_qr_svg(tx_id: str, agency: AgencyDep, svc: Svc, aries: Channel) -> Response:
    svg = await asyncio.to_thread(qr_svg, await _short_url(aries, agency, svc, tx_id))
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/aries/i/{code}", summary="Short URL: the out-of-band invitation (JSON when asked, else a redirect)",
            responses={200: {"content": {"application/json": {}}}, 302: {"description": "To the `?oob=` URL."}})
async def aries_short_url(code: str, request: Request, aries: Channel) -> Response:
    row = await aries.presentation_for_code(code) if aries.enabled else None
    if row is None:
        raise APIError(404, "not_found", "no such request (or it was answered or expired)")
    headers = {"Cache-Control": "no-store"}
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(row.invitation, headers=headers)
    return RedirectResponse(row.invitation_url, status_code=302, headers=headers)


@router.post("/aries/webhooks/topic/{topic}/", summary="Webhook receiver of the verifier's ACA-Py agent",
             responses={401: {"description": "Missing or wrong `x-api-key`."}})
async def aries_webhook(topic: str, request: Request, aries: Channel) -> JSONResponse:
    if not aries.enabled:
        raise APIError(404, "not_found", "the Aries channel is not enabled on this verifier")
    try:
        outcome = await aries.receive(request.headers, topic, await request.body())
    except WebhookRefused as exc:
        raise webhook_refused_error(exc) from exc
    return JSONResponse({"outcome": outcome})
