"""Wallet-facing OpenID4VP endpoints: the ``request_uri`` and the ``response_uri`` of each transaction.

They live under ``/v1/wallet/`` because OpenID4VP publishes them inside each request (no well-known
location), so they version like the rest of the API.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service_kit.errors import APIError
from ssi.oid4vp import REQUEST_OBJECT_MEDIA_TYPE
from verifier.models import Agency, Transaction
from verifier.routes.deps import Services, Svc
from verifier.statements import TRANSACTION_WITH_AGENCY_KEY
from verifier.transactions import (
    DIDCOMM_RESPONSE_MODE,
    answer,
    is_transaction_id,
    signed_request_object,
    utcnow,
)

router = APIRouter(prefix="/wallet", tags=["wallet"])

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELD = 500_000


async def read_form(request: Request, allowed: frozenset[str] | None = None) -> dict[str, str]:
    """The form fields of a ``application/x-www-form-urlencoded`` POST; repeated or huge fields refused."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise APIError(400, "invalid_request", "the body must be application/x-www-form-urlencoded",
                       extra={"code": "verifier.bad_form"})
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises several types for bad input
        raise APIError(400, "invalid_request", "the form cannot be parsed", extra={"code": "verifier.bad_form"}) from exc
    fields: dict[str, str] = {}
    for name in form:
        values = form.getlist(name)
        if len(values) != 1 or not isinstance(values[0], str):
            raise APIError(400, "invalid_request", "a form field is repeated or not text",
                           extra={"code": "verifier.bad_form"})
        if len(values[0]) > MAX_FIELD:
            raise APIError(400, "invalid_request", "a form field is too large", extra={"code": "verifier.bad_form"})
        if allowed is None or name in allowed:
            fields[name] = values[0]
    return fields


async def _pending(svc: Services, tx_id: str) -> tuple[Transaction, Agency]:
    # One query for the transaction and the agency columns the request object needs; plain rows. An id
    # of another form is unknown without a query.
    row = None
    if is_transaction_id(tx_id):
        async with svc.db.statement_connection() as conn:
            row = (await conn.execute(TRANSACTION_WITH_AGENCY_KEY, {"tx_id": tx_id})).first()
    tx: Any = row
    agency: Any = (SimpleNamespace(id=row.agency_id, signing_key=row.agency_signing_key, x5c=row.agency_x5c)
                   if row is not None else None)
    if tx is None or agency is None or tx.response_mode == DIDCOMM_RESPONSE_MODE:
        raise APIError(404, "invalid_request", "unknown request", extra={"code": "verifier.unknown_transaction"})
    if tx.status != "pending" or tx.expires_at <= utcnow():
        raise APIError(400, "invalid_request", "the request is no longer open",
                       extra={"code": "verifier.expired_transaction" if tx.status in ("pending", "expired")
                              else "verifier.already_answered"})
    return tx, agency


def _request_object_response(svc: Services, tx: Transaction, agency: Agency, wallet_nonce: str | None) -> Response:
    def sign() -> str:
        return signed_request_object(tx, agency, svc.keys, svc.box, public_url=svc.public_url,
                                     algorithms=svc.verifier.algorithms, wallet_nonce=wallet_nonce)

    # Without a wallet_nonce every fetch asks for the same request: signed once per transaction
    # (verifier.request_objects), not once per call. A wallet_nonce is echoed in a fresh object.
    token = sign() if wallet_nonce is not None else svc.request_objects.get_or_sign(tx, agency, sign)
    return Response(token, media_type=REQUEST_OBJECT_MEDIA_TYPE, headers={"Cache-Control": "no-store"})


@router.get("/requests/{tx_id}", summary="Request object (request_uri)",
            responses={200: {"content": {REQUEST_OBJECT_MEDIA_TYPE: {}}}})
async def get_request_object(tx_id: str, svc: Svc) -> Response:
    tx, agency = await _pending(svc, tx_id)
    return _request_object_response(svc, tx, agency, None)


@router.post("/requests/{tx_id}", summary="Request object with wallet_nonce (request_uri_method=post)",
             responses={200: {"content": {REQUEST_OBJECT_MEDIA_TYPE: {}}}})
async def post_request_object(tx_id: str, request: Request, svc: Svc) -> Response:
    form = await read_form(request, frozenset({"wallet_nonce", "wallet_metadata"}))
    tx, agency = await _pending(svc, tx_id)
    wallet_nonce = form.get("wallet_nonce")
    if wallet_nonce is not None and not (1 <= len(wallet_nonce) <= 200):
        raise APIError(400, "invalid_request", "wallet_nonce is too long", extra={"code": "verifier.bad_form"})
    return _request_object_response(svc, tx, agency, wallet_nonce)


@router.post("/responses/{tx_id}", summary="Authorization Response (response_uri, direct_post[.jwt])")
async def post_response(tx_id: str, request: Request, svc: Svc) -> JSONResponse:
    """Check the ``vp_token`` (or record the wallet's error). 200 with ``{}`` (or ``redirect_uri``) when
    verified or declined; 400 with ``errors`` (each failed check with its code) when rejected."""
    form = await read_form(request, frozenset({"vp_token", "state", "response", "error", "error_description"}))
    outcome = await answer(svc.db, svc.box, svc.verifier, tx_id, form)
    counter = getattr(request.app.state, "verifications", None)
    if counter is not None:
        counter.labels(outcome=outcome.status).inc()
    if outcome.webhook:
        svc.worker.kick()
    headers = {"Cache-Control": "no-store"}
    if outcome.status == "rejected":
        body: dict[str, Any] = {"error": "invalid_request", "error_description": "the presentation was rejected",
                                "errors": outcome.errors}
        return JSONResponse(body, status_code=400, headers=headers)
    return JSONResponse({"redirect_uri": outcome.redirect_uri} if outcome.redirect_uri else {}, headers=headers)
