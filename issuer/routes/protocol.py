"""OpenID4VCI and OAuth endpoints under ``/t/<slug>`` and the metadata under ``/.well-known/...``.

These URLs are published in metadata and fixed by the protocols, so they live outside ``/v1``.
Errors use the protocol's codes in ``{"error", "error_description"}``.

Retries: the access token authorises one issuance per credential configuration. The first request
for a configuration claims it (a row keyed by token and configuration); its response is kept sealed
for ``replay_window`` seconds under a hash of (token, configuration, proofs). A retried request with
the same proofs — a wallet whose connection timed out — gets that same stored response, never a
second credential; a different request for an already issued configuration is refused.

A process killed mid-issuance (SIGKILL, a lost host) leaves its claim behind with nothing issued (the
record and the stored response commit together). An identical request retried once that claim is
older than any issuance can take (``source_timeout`` + :data:`CLAIM_GRACE_SECONDS`) takes it over
and is served, instead of being told "being processed" until the token expires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from credential_schemas import CredentialType
from service_kit.direct_route import DirectRoute
from service_kit.errors import APIError, safe_description
from service_kit.ratelimit import (
    Limit,
    client_address,
    enforce,
    limiter_of,
    rate_limit_responses,
    refuse_if_blocked,
)
from ssi.encoding import json_loads
from ssi.errors import EncodingError, MessageError
from ssi.oid4vci import (
    AUTHORIZATION_CODE_GRANT,
    CREDENTIAL_REQUEST_DENIED,
    INVALID_CREDENTIAL_REQUEST,
    INVALID_NONCE,
    INVALID_NOTIFICATION_ID,
    INVALID_NOTIFICATION_REQUEST,
    INVALID_PROOF,
    INVALID_REQUEST,
    INVALID_TRANSACTION_ID,
    PRE_AUTHORIZED_CODE_GRANT,
    UNKNOWN_CREDENTIAL_CONFIGURATION,
    UNKNOWN_CREDENTIAL_IDENTIFIER,
    UNSUPPORTED_GRANT_TYPE,
    CredentialRequest,
    DeferredCredentialRequest,
    NotificationRequest,
    TokenRequest,
    proof_oauth_error,
    verify_proof_jwt,
)
from ssi.status_list import STATUS_LIST_JWT_MEDIA_TYPE

from .. import statements
from ..authorization import redeem_authorization_code, requested_configurations
from ..binding import (
    authorization,
    check_presentation,
    plain_bearer_request,
    token_refused,
    token_request_binding,
)
from ..context import IssuerContext, get_ctx, new_secret, secret_hash, utcnow
from ..grants import (
    GuessBudget,
    WrongTxCode,
    access_token,
    new_access_token,
    new_nonce,
    offer_document,
    redeem_pre_authorized_code,
    redeem_pre_authorized_code_within_limits,
    reserve_guess,
)
from ..issuance import (
    Deferred,
    FinalSourceAnswer,
    fetch_record,
    open_polled_record,
    seal_polled_record,
    sent_context,
    sign_and_record,
    subject_from_json,
)
from ..keys import published_keys, signing_algorithms
from ..metadata import authorization_server_metadata, issuer_metadata
from ..models import CredentialTypeRow, DeferredTransaction, IssuanceClaim, IssuanceRecord, StoredResponse
from ..nonces import nonce_expiry
from ..registry import RegisteredType, load_stored_type, tenant_types
from ..sources import Claims, Pending
from ..status import list_token
from ..tenancy import TenantRef, path_tenant, protocol_tenant

log = logging.getLogger(__name__)
router = APIRouter()
#: The token, nonce and credential endpoints: they read their own input and answer with a Response,
#: so FastAPI documents them as usual but calls them directly (service_kit.direct_route).
direct_router = APIRouter(route_class=DirectRoute)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: Beyond the data source's timeout, how long an issuance may take (signing, the database) before a
#: claim with no outcome is taken as abandoned by a dead process.
CLAIM_GRACE_SECONDS = 5.0
METADATA_CACHE = {"Cache-Control": "public, max-age=60"}
#: Notification events kept on an issuance record: the last ones, each distinct (event and description).
NOTIFICATION_EVENTS_KEPT = 10
#: The longest a deferred transaction waits before its data source is asked again, whatever the source
#: estimates (Via Oberta estimates in hours: a pessimistic estimate must not keep the citizen waiting).
DEFERRED_MAX_WAIT = 3600


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers or NO_STORE)


async def _types(ctx: IssuerContext, tenant: TenantRef) -> dict[str, RegisteredType]:
    return await tenant_types(ctx, None, tenant.id)


async def _json_body(request: Request, error: str) -> Any:
    raw = await request.body()
    try:
        return json_loads(raw)
    except EncodingError as exc:
        raise APIError(400, error, "the request body is not valid JSON") from exc


#: More parameters than any OAuth request has: a longer form is refused, not parsed.
MAX_FORM_FIELDS = 64


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise APIError(400, INVALID_REQUEST, "the body must be application/x-www-form-urlencoded")
    # The standard library's parser: Starlette's (python-multipart, callback-driven) cost ~10% of a
    # token request. The body is already size-limited by the middleware.
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, INVALID_REQUEST, "the form cannot be parsed") from exc
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            # The name is the client's: quoted within RFC 6749's error_description characters, cut short.
            raise APIError(400, INVALID_REQUEST, f"parameter {safe_description(key, 40)} is repeated")
        out[key] = value
    return out


# -- metadata -------------------------------------------------------------------------------------

@router.get("/.well-known/openid-credential-issuer/t/{slug}", tags=["metadata"],
            summary="OpenID4VCI Credential Issuer Metadata of a tenant")
async def credential_issuer_metadata(tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                                     ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    return await _issuer_metadata_response(ctx, tenant)


async def _issuer_metadata_response(ctx: IssuerContext, tenant: TenantRef) -> JSONResponse:
    doc = issuer_metadata(ctx, tenant, await _types(ctx, tenant), await signing_algorithms(ctx, tenant.id))
    return _json(doc, headers=METADATA_CACHE)


@router.get("/t/{slug}/.well-known/openid-credential-issuer", include_in_schema=False)
async def credential_issuer_metadata_suffix(tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                                            ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    # Some wallets append the well-known segment instead of inserting it; serve the same document.
    return await _issuer_metadata_response(ctx, tenant)


@router.get("/.well-known/oauth-authorization-server/t/{slug}", tags=["metadata"],
            summary="OAuth 2.0 Authorization Server Metadata of a tenant")
async def as_metadata(tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                      ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    return _json(authorization_server_metadata(ctx, tenant, await _types(ctx, tenant)), headers=METADATA_CACHE)


@router.get("/.well-known/jwt-vc-issuer/t/{slug}", tags=["metadata"],
            summary="JWT VC Issuer Metadata (issuer and jwks) of a tenant")
async def jwt_vc_issuer_metadata(tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                                 ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    async with ctx.db.read_session() as session:
        keys = await published_keys(session, tenant.id)
    return _json({"issuer": ctx.issuer_url(tenant.slug), "jwks": {"keys": [row.public_jwk for row in keys]}},
                 headers=METADATA_CACHE)


async def _type_version(ctx: IssuerContext, tenant_id: str, type_id: str, version: str) -> CredentialType:
    """An earlier version of a type, parsed once per stored row (``ctx.types`` by row id, as the registry
    caches current versions): this is a public URL, and parsing a definition is not free."""
    async with ctx.db.read_session() as session:
        row_id = await session.scalar(select(CredentialTypeRow.id).where(
            CredentialTypeRow.tenant_id == tenant_id, CredentialTypeRow.type_id == type_id,
            CredentialTypeRow.version == version))
        if row_id is None:
            raise APIError(404, "not_found", "no such version of the credential type")
        ctype = ctx.types.get(row_id)
        if ctype is None:
            definition = await session.scalar(select(CredentialTypeRow.definition)
                                              .where(CredentialTypeRow.id == row_id))
            ctype = ctx.types.put(row_id, load_stored_type(definition))
    return ctype  # type: ignore[no-any-return]


@router.get("/t/{slug}/types/{type_id}", tags=["metadata"], summary="SD-JWT VC Type Metadata of a credential type")
async def type_metadata(type_id: str, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                        ctx: IssuerContext = Depends(get_ctx),  # noqa: B008
                        version: str | None = Query(default=None, max_length=40,  # noqa: B008
                                                    description="An earlier version (default: the current one)."),
                        ) -> Response:
    reg = (await _types(ctx, tenant)).get(type_id)
    if reg is None:
        raise APIError(404, "not_found", "no such credential type")
    ctype = reg.ctype
    if version is not None and version != reg.version:
        ctype = await _type_version(ctx, tenant.id, type_id, version)
    # The exact canonical bytes: vct#integrity in credentials is a hash of them.
    return Response(ctype.type_metadata_bytes(), media_type="application/json", headers=METADATA_CACHE)


# -- offers ---------------------------------------------------------------------------------------

@router.get("/t/{slug}/offers/{offer_id}", tags=["oid4vci"], summary="A credential offer by reference")
async def get_offer(offer_id: str, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                    ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    doc = await offer_document(ctx, tenant, offer_id)
    if doc is None:
        raise APIError(404, "not_found", "the offer is unknown, used or expired")
    return _json(doc)


# -- token ----------------------------------------------------------------------------------------

@direct_router.post("/t/{slug}/token", tags=["oid4vci"], summary="OAuth 2.0 token endpoint (pre-authorized and authorization code)",
             responses=rate_limit_responses("slow_down"))
async def token(request: Request, slug: str) -> JSONResponse:
    ctx, tenant = await protocol_tenant(request, slug)
    form = await _form(request)
    # Abuse limits (docs/security.md): per client address and per code, in one statement, before any work.
    # Wrong transaction codes are limited per client (over all offers: it stops enumeration) and per
    # offer (code). A guess is charged to the client's budget before it is compared, in a statement
    # that takes the bucket's row lock, so a burst of guesses cannot all find the budget untouched; a
    # right guess is charged nothing (grants.reserve_guess). The offer's bucket is read in the same
    # statement as the others, refuses below once full, and is charged when a guess fails (each offer
    # also voids itself after tx_code_max_attempts wrong codes, counted exactly).
    limiter, settings = limiter_of(request), ctx.settings
    client = client_address(request, settings.trusted_proxies)
    code = form.get("pre-authorized_code") or form.get("code")
    tx_client = (Limit.parse("tx_code.client", settings.rate_limit_tx_code_client), client)
    tx_offer = [(Limit.parse("tx_code.offer", settings.rate_limit_tx_code_offer), code)]
    guessing = "tx_code" in form or "user_pin" in form
    token_limits = [(Limit.parse("token.client", settings.rate_limit_token_client), client),
                    (Limit.parse("token.code", settings.rate_limit_token_code), code)]
    if limiter is not None and ctx.db.backend == "postgresql" and plain_bearer_request(ctx, request):
        # The common request (a well-formed pre-authorized grant with a transaction code, no DPoP)
        # has nothing to check before the code but the limits: all go in one statement, which
        # redeems only what the limits admit. Anything else takes the general path below.
        parsed_early = _pre_authorized_with_tx_code(form)
        charge = limiter.charge(token_limits, tx_offer) if parsed_early is not None else None
        if parsed_early is not None and charge is not None and charge.shape[0]:
            budget = GuessBudget.of(limiter, *tx_client)
            try:
                offer, access, ttl = await redeem_pre_authorized_code_within_limits(
                    ctx, tenant, parsed_early.pre_authorized_code or "", parsed_early.tx_code or "", limiter, charge,
                    budget)
            except WrongTxCode:
                await limiter.hit(tx_offer)
                raise
            return _token_response(access, ttl, None, list(offer.configuration_ids))
    tx_code_allowance = await enforce(limiter, token_limits, error="slow_down", peek=tx_offer if guessing else ())
    if form.get("grant_type") not in (PRE_AUTHORIZED_CODE_GRANT, AUTHORIZATION_CODE_GRANT):
        if "grant_type" not in form:
            raise APIError(400, INVALID_REQUEST, "grant_type is required")
        raise APIError(400, UNSUPPORTED_GRANT_TYPE, "the grant type is not supported")
    # authorization_details (RFC 9396 §6, OpenID4VCI 1.0 §6.1): the configurations the token is to grant,
    # a subset of the grant's. Its syntax is checked here, before anything is spent; whether the grant
    # covers them, where the code is redeemed (a refusal leaves the code unspent). A parameter sent
    # without a value is as if omitted (RFC 6749 §3.1).
    requested: list[str] | None = None
    if "authorization_details" in form:
        raw_details = form.pop("authorization_details")
        if raw_details:
            requested = requested_configurations(raw_details)[0]
    try:
        parsed = _token_request(form)
    except MessageError as exc:
        raise APIError(400, INVALID_REQUEST, exc.detail) from exc
    # The DPoP proof is checked before the code is spent: a bad proof must not burn the code.
    jkt = await token_request_binding(ctx, request, f"{ctx.issuer_url(tenant.slug)}/token")
    if parsed.grant_type == PRE_AUTHORIZED_CODE_GRANT:
        reserved = False
        if parsed.tx_code is not None:
            refuse_if_blocked(tx_code_allowance, "slow_down")
            budget = GuessBudget.of(limiter, *tx_client)
            if budget is not None and parsed.pre_authorized_code:
                await reserve_guess(ctx, tenant, budget, parsed.pre_authorized_code, parsed.tx_code)
                reserved = True
        try:
            offer, access, ttl = await redeem_pre_authorized_code(ctx, tenant, parsed.pre_authorized_code or "",
                                                                  parsed.tx_code, dpop_jkt=jkt, requested=requested)
        except WrongTxCode:
            if limiter is not None:
                # A wrong code not reserved before (no client budget to charge then) is charged now.
                await limiter.hit(tx_offer if reserved else [tx_client, *tx_offer])
            raise
        configuration_ids = list(offer.configuration_ids) if requested is None else requested
    else:
        grant = await redeem_authorization_code(ctx, tenant, code=parsed.code or "", code_verifier=parsed.code_verifier,
                                                redirect_uri=parsed.redirect_uri, client_id=parsed.client_id,
                                                requested=requested)
        access, ttl = await new_access_token(ctx, tenant, subject=grant.subject, configuration_ids=grant.configuration_ids,
                                             credential_ids=grant.credential_ids, selector=grant.selector,
                                             login=grant.login, offer_id=grant.offer_id, dpop_jkt=jkt,
                                             client_id=grant.client_id, authorization_request_id=grant.request_id)
        configuration_ids = grant.configuration_ids
    return _token_response(access, ttl, jkt, configuration_ids)


def _token_request(form: dict[str, str]) -> TokenRequest:
    """The token request in ``form`` (raises ``MessageError``). Older wallets send the transaction
    code as ``user_pin``."""
    if "tx_code" not in form and "user_pin" in form:
        form = {**form, "tx_code": form["user_pin"]}
    return TokenRequest.from_form(form)


def _pre_authorized_with_tx_code(form: dict[str, str]) -> TokenRequest | None:
    """The form as a pre-authorized code grant with a transaction code, or ``None`` for anything else,
    malformed included, and a request with ``authorization_details``: those get the general path's answer."""
    if form.get("grant_type") != PRE_AUTHORIZED_CODE_GRANT or "authorization_details" in form:
        return None
    try:
        parsed = _token_request(form)
    except MessageError:
        return None
    return parsed if parsed.tx_code and parsed.pre_authorized_code else None


def _token_response(access: str, ttl: int, jkt: str | None, configuration_ids: list[str]) -> JSONResponse:
    body: dict[str, Any] = {"access_token": access, "token_type": "DPoP" if jkt else "Bearer", "expires_in": ttl}
    body["authorization_details"] = [{"type": "openid_credential", "credential_configuration_id": cid,
                                      "credential_identifiers": [cid]} for cid in configuration_ids]
    return _json(body)


# -- nonce ----------------------------------------------------------------------------------------

@direct_router.post("/t/{slug}/nonce", tags=["oid4vci"], summary="Nonce endpoint: a fresh single-use c_nonce")
async def nonce(request: Request, slug: str) -> JSONResponse:
    ctx, tenant = await protocol_tenant(request, slug)
    return _json({"c_nonce": new_nonce(ctx, tenant)})


# -- credential -----------------------------------------------------------------------------------

def _request_hash(token_hash: str, configuration_id: str, proofs: list[str]) -> str:
    material = json.dumps([token_hash, configuration_id, proofs], separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _response_aad(request_hash: str) -> bytes:
    return f"issuer:stored-response:{request_hash}".encode()


async def _request_state(ctx: IssuerContext, request: Request, tenant: TenantRef, token_hash: str,
                         request_hash: str, configuration_id: str) -> tuple[Any, JSONResponse | None, str | None]:
    """The valid access token (or 401), the stored response of an identical earlier request, and the
    request hash of the claim on this configuration (None when unclaimed) — in one query."""
    async with ctx.read_connection() as conn:
        row = (await conn.execute(statements.CREDENTIAL_REQUEST_STATE, {
            "token_hash": token_hash, "tenant_id": tenant.id, "now": utcnow(), "request_hash": request_hash,
            "configuration_id": configuration_id})).first()
    if row is None:
        raise token_refused(ctx, request)
    if row.stored_sealed_body is None:
        return row, None, row.claim_request_hash
    body = json.loads(ctx.box.open(row.stored_sealed_body, _response_aad(request_hash)))
    return row, _json(body, status=row.stored_status_code), None


async def _take_over_abandoned_claim(ctx: IssuerContext, token_row: Any, configuration_id: str,
                                     request_hash: str) -> bool:
    """Whether this request may resume the claim an identical request left (see the module docstring).

    False while the claim is young enough to belong to a live request. An answered request (a stored
    response, even an expired one, or the reserved credential id already recorded) is refused as
    already used. The compare-and-set on ``created_at`` lets exactly one retry take the claim over;
    its nonce was consumed by this very request (the request hash covers the proofs).
    """
    created = token_row.claim_created_at
    now = utcnow()
    if created is None or created > now - dt.timedelta(seconds=ctx.settings.source_timeout + CLAIM_GRACE_SECONDS):
        return False
    reserved = (token_row.credential_ids or {}).get(configuration_id)
    async with ctx.session() as session:
        answered = await session.scalar(select(StoredResponse.expires_at)
                                        .where(StoredResponse.request_hash == request_hash))
        if answered is not None and answered > now:
            return False  # answered since the state was read: the retry will be served the stored response
        if answered is None and reserved:
            answered = await session.scalar(select(IssuanceRecord.id).where(IssuanceRecord.id == reserved))
        if answered is not None:
            raise APIError(400, CREDENTIAL_REQUEST_DENIED, "this access token was already used for this credential")
        taken = await session.execute(update(IssuanceClaim).where(
            IssuanceClaim.token_hash == token_row.token_hash, IssuanceClaim.configuration_id == configuration_id,
            IssuanceClaim.request_hash == request_hash, IssuanceClaim.created_at == created).values(created_at=now))
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def _in_progress() -> APIError:
    return APIError(503, "temporarily_unavailable", "this request is being processed; retry shortly",
                    {"Retry-After": "1"})


async def _same_request_claimed(ctx: IssuerContext, token_hash: str, configuration_id: str, request_hash: str) -> bool:
    """Whether the claim on this configuration was made by an identical request (same proofs)."""
    async with ctx.db.read_session() as session:
        current = await session.scalar(select(IssuanceClaim.request_hash).where(
            IssuanceClaim.token_hash == token_hash, IssuanceClaim.configuration_id == configuration_id))
    return current == request_hash


def _verify_proofs(ctx: IssuerContext, tenant: TenantRef, proofs: list[str],
                   client_id: str | None) -> tuple[list[dict[str, Any]], dict[str, dt.datetime]]:
    """Verify every key proof and its ``c_nonce`` (minted by us, for this tenant, unexpired); return
    the holder keys and the nonces to record as used, with their expiry. A proof's ``iss``, when it
    has one, must be ``client_id`` (the client the token was issued to, known in the authorization
    code flow only: OpenID4VCI 1.0 appendix F.1). Each proof must name another key: a key binds at
    most one credential of the batch (OpenID4VCI 1.0 §8.2), or the copies would be linkable by ``cnf``."""
    audience = ctx.issuer_url(tenant.slug)
    jwks: list[dict[str, Any]] = []
    nonces: dict[str, dt.datetime] = {}
    thumbprints: set[str] = set()
    now = utcnow()
    for proof in proofs:
        try:
            key = verify_proof_jwt(proof, audience=audience, max_age=ctx.settings.proof_max_age, client_id=client_id)
        except MessageError as exc:
            raise APIError(400, proof_oauth_error(exc.code), exc.detail) from exc
        # verify_proof_jwt checked the signature; the payload is now trusted enough to read the nonce.
        payload = json.loads(_b64_payload(proof))
        value = payload.get("nonce")
        if not isinstance(value, str) or not value or len(value) > 200:
            # OpenID4VCI 1.0 §8.3.1.2: a proof without a c_nonce is invalid_proof (invalid_nonce is for
            # a c_nonce that is not, or no longer, valid).
            raise APIError(400, INVALID_PROOF, "the proof carries no c_nonce")
        expires_at = nonce_expiry(ctx.nonce_key, tenant.id, value, now)
        if expires_at is None:
            raise APIError(400, INVALID_NONCE, "the proof's c_nonce is not one of ours, or has expired")
        nonces[value] = expires_at
        thumbprint = key.thumbprint()
        if thumbprint in thumbprints:
            raise APIError(400, INVALID_PROOF, "two proofs are signed with the same key: each credential needs its own")
        thumbprints.add(thumbprint)
        jwks.append(key.public_jwk(include_kid=False))
    return jwks, nonces


def _b64_payload(token: str) -> bytes:
    from ssi.encoding import b64url_decode

    return b64url_decode(token.split(".")[1])


@direct_router.post("/t/{slug}/credential", tags=["oid4vci"], summary="Credential endpoint")
async def credential(request: Request, slug: str) -> JSONResponse:
    ctx, tenant = await protocol_tenant(request, slug)
    auth = authorization(request)
    if auth is None:
        raise token_refused(ctx, request)
    scheme, presented = auth or ("", "")
    data = await _json_body(request, INVALID_CREDENTIAL_REQUEST)
    try:
        parsed = CredentialRequest.parse(data)
    except MessageError as exc:
        raise APIError(400, INVALID_CREDENTIAL_REQUEST, exc.detail) from exc
    proofs = (parsed.proofs.jwt if parsed.proofs is not None else None) or []
    configuration_id = parsed.credential_configuration_id or parsed.credential_identifier or ""
    token_hash = secret_hash(presented)
    request_hash = _request_hash(token_hash, configuration_id, proofs)
    # One read for the token, an identical earlier request's response and the claim on this configuration.
    token_row, stored, claim = await _request_state(ctx, request, tenant, token_hash, request_hash, configuration_id)
    await check_presentation(ctx, request, scheme, presented, token_row.dpop_jkt,
                             f"{ctx.issuer_url(tenant.slug)}/credential")
    if parsed.credential_response_encryption is not None:
        raise APIError(400, "invalid_encryption_parameters", "credential response encryption is not supported")
    if parsed.credential_identifier is not None and parsed.credential_identifier not in token_row.configuration_ids:
        raise APIError(400, UNKNOWN_CREDENTIAL_IDENTIFIER, "the access token grants no such credential identifier")
    types = await _types(ctx, tenant)
    reg = types.get(configuration_id)
    if reg is None:
        raise APIError(400, UNKNOWN_CREDENTIAL_CONFIGURATION, "the issuer offers no such credential configuration")
    if configuration_id not in token_row.configuration_ids:
        raise APIError(400, CREDENTIAL_REQUEST_DENIED, "the access token does not grant this credential")
    if not proofs:
        raise APIError(400, INVALID_PROOF, "a key proof (proofs.jwt) is required")
    if len(proofs) > ctx.settings.batch_size:
        raise APIError(400, INVALID_CREDENTIAL_REQUEST, f"at most {ctx.settings.batch_size} proofs per request")

    if stored is not None:
        return stored
    taken_over = False
    if claim is not None:
        if claim != request_hash:
            raise APIError(400, CREDENTIAL_REQUEST_DENIED, "this access token was already used for this credential")
        taken_over = await _take_over_abandoned_claim(ctx, token_row, configuration_id, request_hash)
        if not taken_over:
            raise _in_progress()

    holder_jwks, nonces = _verify_proofs(ctx, tenant, proofs, token_row.client_id)

    now = utcnow()
    try:
        # One transaction: the nonces are recorded as used (each by exactly one request: a primary
        # key) and the configuration is claimed for this token, or neither.
        claim_expires = token_row.expires_at + dt.timedelta(seconds=ctx.settings.replay_window)
        if taken_over:
            pass  # the claim is ours now, and its nonce was used by this same request before
        elif len(nonces) == 1 and ctx.db.backend == "postgresql":
            # Both in one statement (one round trip): a row back only when the nonce was used here.
            value, expires_at = next(iter(nonces.items()))
            async with ctx.single_statement() as conn:
                claimed = (await conn.execute(statements.PG_CONSUME_NONCE_AND_CLAIM, {
                    "b_nonce_hash": secret_hash(value), "b_tenant_id": tenant.id, "b_nonce_expires_at": expires_at,
                    "b_token_hash": token_row.token_hash, "b_configuration_id": configuration_id,
                    "b_request_hash": request_hash, "b_created_at": now, "b_expires_at": claim_expires})).first()
            if claimed is None:
                raise APIError(400, INVALID_NONCE, "the proof's c_nonce was already used")
        else:
            async with ctx.write_connection() as conn:
                for value, expires_at in nonces.items():
                    used = (await conn.execute(statements.USE_NONCE[ctx.db.backend], {
                        "nonce_hash": secret_hash(value), "tenant_id": tenant.id,
                        "expires_at": expires_at})).first()
                    if used is None:
                        raise APIError(400, INVALID_NONCE, "the proof's c_nonce was already used")
                await conn.execute(statements.INSERT_CLAIM, {
                    "token_hash": token_row.token_hash, "configuration_id": configuration_id,
                    "request_hash": request_hash, "created_at": now, "expires_at": claim_expires})
    except IntegrityError as exc:
        if await _same_request_claimed(ctx, token_row.token_hash, configuration_id, request_hash):
            raise _in_progress() from exc
        raise APIError(400, CREDENTIAL_REQUEST_DENIED, "this access token was already used for this credential") from exc
    except APIError as exc:
        # A resent request racing its own first copy (a wallet whose connection timed out): the copy
        # that lost the nonce is told to retry, and then gets the response stored for the other.
        if exc.error == INVALID_NONCE and await _same_request_claimed(ctx, token_row.token_hash, configuration_id,
                                                                      request_hash):
            raise _in_progress() from exc
        raise

    subject = subject_from_json(token_row.subject)
    credential_id = token_row.credential_ids.get(configuration_id) or f"c_{new_secret()[:16]}"
    # Kept while the token can still send the same request: once the stored answer is gone, a claim
    # without a reserved credential id (authorization code flow) would be taken over and issued again.
    keep_until = max(now + dt.timedelta(seconds=ctx.settings.replay_window), token_row.expires_at)

    def stored_row(body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        return {"request_hash": request_hash, "tenant_id": tenant.id, "status_code": status,
                "sealed_body": ctx.box.seal(json.dumps(body).encode("utf-8"), _response_aad(request_hash)),
                "expires_at": keep_until}

    async def store(conn: Any, body: dict[str, Any], status: int = 200) -> None:
        # Core INSERT: works on the ORM session of the deferred path and on sign_and_record's connection.
        await conn.execute(statements.INSERT_STORED_RESPONSE, stored_row(body, status))

    try:
        outcome = await fetch_record(ctx, tenant, reg, subject, selector=token_row.selector, request_id=None)
        if isinstance(outcome, Deferred) or not hasattr(outcome, "record"):
            transaction_id = new_secret()
            wait = _source_wait(outcome.retry_after)
            body = {"transaction_id": transaction_id, "interval": _pending_interval(ctx, wait)}
            async with ctx.session() as session:
                session.add(DeferredTransaction(
                    transaction_hash=secret_hash(transaction_id), tenant_id=tenant.id, token_hash=token_row.token_hash,
                    configuration_id=configuration_id, credential_id=credential_id, source_reference=outcome.reference,
                    subject=token_row.subject, selector=token_row.selector, login=token_row.login,
                    holder_jwks=holder_jwks, request_id=outcome.reference[:40], offer_id=token_row.offer_id,
                    created_at=now, expires_at=now + dt.timedelta(days=30), sealed_response=None,
                    dpop_jkt=token_row.dpop_jkt, next_poll_at=utcnow() + dt.timedelta(seconds=wait),
                    source_context=sent_context(getattr(outcome, "context", None))))
                await store(session, body, 202)
            return _json(body, status=202)
        issued = await sign_and_record(ctx, tenant, reg, outcome, subject, holder_jwks, credential_id=credential_id,
                                       login=token_row.login, offer_id=token_row.offer_id, finalize=store,
                                       webhooks=bool(token_row.webhooks), stored_row=stored_row)
    except IntegrityError as exc:
        # Another copy of this very request wrote first (a take-over whose original was alive after all):
        # that copy owns the issuance, so its claim stays and the wallet's retry gets its stored answer.
        raise _in_progress() from exc
    except BaseException:
        # Nothing was issued: release the claim so the wallet can try again with a fresh nonce.
        async with ctx.session() as session:
            await session.execute(delete(IssuanceClaim).where(IssuanceClaim.token_hash == token_row.token_hash,
                                                              IssuanceClaim.configuration_id == configuration_id))
        raise
    return _json(issued.body)


# -- deferred -------------------------------------------------------------------------------------

class _AlreadyDone(Exception):
    pass


def _source_wait(retry_after: int) -> int:
    """Seconds until the data source that answered "pending" may be asked again: its ``retry_after``,
    at least a second and at most :data:`DEFERRED_MAX_WAIT`."""
    return min(max(1, int(retry_after)), DEFERRED_MAX_WAIT)


def _pending_interval(ctx: IssuerContext, wait: int) -> int:
    """The ``interval`` a wallet is told after the source answered "pending": never before the source may
    be asked again (``wait``), and never less than ``deferred_interval``."""
    return max(ctx.settings.deferred_interval, wait)


@router.post("/t/{slug}/deferred_credential", tags=["oid4vci"], summary="Deferred credential endpoint")
async def deferred_credential(request: Request, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                              ctx: IssuerContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    # The access token that started the transaction authorises polling it even after the token's own
    # expiry: a registry may take hours, longer than an access token lives.
    auth = authorization(request)
    if auth is None:
        raise token_refused(ctx, request)
    scheme, presented = auth
    token_hash = secret_hash(presented)
    data = await _json_body(request, INVALID_CREDENTIAL_REQUEST)
    try:
        parsed = DeferredCredentialRequest.parse(data)
    except MessageError as exc:
        raise APIError(400, INVALID_CREDENTIAL_REQUEST, exc.detail) from exc
    tx_hash = secret_hash(parsed.transaction_id)
    aad = f"issuer:deferred:{tx_hash}".encode()
    async with ctx.db.read_session() as session:
        row = (await session.execute(select(DeferredTransaction).where(
            DeferredTransaction.transaction_hash == tx_hash, DeferredTransaction.tenant_id == tenant.id,
            DeferredTransaction.token_hash == token_hash))).scalar_one_or_none()
    if row is None or row.expires_at <= utcnow():
        raise APIError(400, INVALID_TRANSACTION_ID, "the transaction id is unknown or expired")
    await check_presentation(ctx, request, scheme, presented, row.dpop_jkt,
                             f"{ctx.issuer_url(tenant.slug)}/deferred_credential")
    if row.sealed_response is not None:
        return _json(json.loads(ctx.box.open(row.sealed_response, aad)))
    subject = subject_from_json(row.subject)
    outcome: Claims | Pending
    if row.sealed_record is not None:
        # An earlier poll heard the source's answer and kept it, then failed before the credential was
        # recorded (no signing key yet, the database, a restart): issue from it. The source is not asked
        # again: it delivered its answer once, and forgot it.
        reg = await _deferred_type(ctx, tenant, row)
        outcome = open_polled_record(ctx, tx_hash, row.sealed_record)
    else:
        now = utcnow()
        if row.next_poll_at is not None and now < row.next_poll_at:
            # Before the time the source gave: asking it again would only hear "pending" again (and cost
            # the registry a query). The wallet is told how long is left.
            left = math.ceil((row.next_poll_at - now).total_seconds())
            return _json({"transaction_id": parsed.transaction_id, "interval": max(1, left)}, status=202)
        reg = await _deferred_type(ctx, tenant, row)
        # One poll at a time asks the source: this one holds the transaction (its next_poll_at) for as long
        # as a query may take. Two polls asking at once would make the source deliver its answer to one and
        # refuse the other, which would then end the transaction under the one that has the data.
        async with ctx.session() as session:
            claimed = (await session.execute(update(DeferredTransaction).where(
                DeferredTransaction.transaction_hash == tx_hash, DeferredTransaction.sealed_response.is_(None),
                DeferredTransaction.sealed_record.is_(None),
                or_(DeferredTransaction.next_poll_at.is_(None), DeferredTransaction.next_poll_at <= now))
                .values(next_poll_at=now + dt.timedelta(seconds=ctx.settings.source_timeout + CLAIM_GRACE_SECONDS))
            )).rowcount
        if not claimed:
            # Another poll is asking the source, or has just heard it: "pending" until it is done.
            return _json({"transaction_id": parsed.transaction_id, "interval": _pending_interval(ctx, 1)},
                         status=202)
        try:
            outcome = await fetch_record(ctx, tenant, reg, subject, selector=row.selector, request_id=None,
                                         poll_reference=row.source_reference, sent=row.source_context)
        except FinalSourceAnswer as exc:
            # The pending query will never complete (the source refused it, holds no record, or answered
            # what cannot be used; its answer is delivered and gone): the transaction ends here, and the
            # wallet is told to stop polling (OpenID4VCI 1.0 §9.3: credential_request_denied). A later
            # poll of it is invalid_transaction_id.
            async with ctx.session() as session:
                await session.execute(delete(DeferredTransaction).where(
                    DeferredTransaction.transaction_hash == tx_hash, DeferredTransaction.sealed_response.is_(None),
                    DeferredTransaction.sealed_record.is_(None)))
            log.info("deferred transaction ended by the data source's answer",
                     extra={"type_id": reg.type_id, "tenant": tenant.slug, "error": exc.error})
            raise APIError(400, CREDENTIAL_REQUEST_DENIED,
                           f"{exc.error_description}; this transaction will not complete") from exc
        if isinstance(outcome, Pending):
            # Still pending: the source's new retry_after sets both the next time it is asked and the interval.
            wait = _source_wait(outcome.retry_after)
            async with ctx.session() as session:
                await session.execute(update(DeferredTransaction).where(
                    DeferredTransaction.transaction_hash == tx_hash, DeferredTransaction.sealed_response.is_(None))
                    .values(next_poll_at=utcnow() + dt.timedelta(seconds=wait)))
            return _json({"transaction_id": parsed.transaction_id, "interval": _pending_interval(ctx, wait)},
                         status=202)
        # Kept before anything else can fail: the source has delivered its answer, and will not again.
        kept = seal_polled_record(ctx, tx_hash, outcome)
        async with ctx.session() as session:
            stored = (await session.execute(update(DeferredTransaction).where(
                DeferredTransaction.transaction_hash == tx_hash, DeferredTransaction.sealed_response.is_(None))
                .values(sealed_record=kept))).rowcount
        if not stored:
            return await _delivered_or_gone(ctx, tx_hash, aad, gone=APIError(
                400, INVALID_TRANSACTION_ID, "the transaction id is unknown or expired"))

    # The sealed response holds every claim of the credential: once delivered it is kept only while a
    # wallet that failed to store it may poll again (a wallet retries a failed store later, Cartera's
    # after an hour), not for the rest of the transaction's 30 days.
    delivered_until = min(row.expires_at,
                          utcnow() + dt.timedelta(seconds=ctx.settings.deferred_kept_after_delivery))

    async def finalize(session: Any, body: dict[str, Any]) -> None:
        # Only one poll may complete the transaction: the conditional update decides. The kept record
        # goes: the sealed response holds what a wallet may still need.
        result = await session.execute(update(DeferredTransaction).where(
            DeferredTransaction.transaction_hash == tx_hash, DeferredTransaction.sealed_response.is_(None))
            .values(sealed_response=ctx.box.seal(json.dumps(body).encode("utf-8"), aad),
                    sealed_record=None, expires_at=delivered_until))
        if not result.rowcount:
            raise _AlreadyDone

    try:
        issued = await sign_and_record(ctx, tenant, reg, outcome, subject, list(row.holder_jwks),
                                       credential_id=row.credential_id, login=row.login, offer_id=row.offer_id,
                                       finalize=finalize)
    except (_AlreadyDone, IntegrityError):
        return await _delivered_or_gone(ctx, tx_hash, aad, gone=APIError(
            503, "temporarily_unavailable", "retry shortly", {"Retry-After": "1"}))
    return _json(issued.body)


async def _deferred_type(ctx: IssuerContext, tenant: TenantRef, row: DeferredTransaction) -> RegisteredType:
    reg = (await _types(ctx, tenant)).get(row.configuration_id)
    if reg is None:
        raise APIError(400, INVALID_TRANSACTION_ID, "the credential type of this transaction is gone")
    return reg


async def _delivered_or_gone(ctx: IssuerContext, tx_hash: str, aad: bytes, *, gone: APIError) -> JSONResponse:
    """The response another poll delivered for the transaction; ``gone`` raised when there is none."""
    async with ctx.db.read_session() as session:
        sealed = (await session.execute(select(DeferredTransaction.sealed_response).where(
            DeferredTransaction.transaction_hash == tx_hash))).scalar_one_or_none()
    if sealed is None:
        raise gone from None
    return _json(json.loads(ctx.box.open(sealed, aad)))


# -- notification ---------------------------------------------------------------------------------

@router.post("/t/{slug}/notification", status_code=204, tags=["oid4vci"], summary="Notification endpoint")
async def notification(request: Request, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                       ctx: IssuerContext = Depends(get_ctx)) -> Response:  # noqa: B008
    scheme, presented = authorization(request) or ("", "")
    token_row = await access_token(ctx, tenant, presented, request)
    await check_presentation(ctx, request, scheme, presented, token_row.dpop_jkt,
                             f"{ctx.issuer_url(tenant.slug)}/notification")
    data = await _json_body(request, INVALID_NOTIFICATION_REQUEST)
    try:
        parsed = NotificationRequest.parse(data)
    except MessageError as exc:
        raise APIError(400, INVALID_NOTIFICATION_REQUEST, exc.detail) from exc
    async with ctx.session() as session:
        record = (await session.execute(select(IssuanceRecord).where(
            IssuanceRecord.notification_id == parsed.notification_id, IssuanceRecord.tenant_id == tenant.id)
            .with_for_update())).scalar_one_or_none()
        # Only the token the credential was issued under (or one from the same login: its offer and
        # login are the token's) may notify about it, not any token of the same citizen.
        if (record is None or record.subject_identifier != token_row.subject.get("identifier")
                or record.offer_id != token_row.offer_id or record.login != token_row.login):
            raise APIError(400, INVALID_NOTIFICATION_ID, "the notification id is unknown")
        event = {"event": parsed.event, "at": utcnow().isoformat()}
        if parsed.event_description:
            event["event_description"] = parsed.event_description[:300]
        kept = list(record.notifications or [])
        if any(_same_event(earlier, event) for earlier in kept):
            return Response(status_code=204, headers=NO_STORE)  # a repeat: nothing to record
        record.notifications = [*kept, event][-NOTIFICATION_EVENTS_KEPT:]
    return Response(status_code=204, headers=NO_STORE)


def _same_event(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("event") == b.get("event") and a.get("event_description") == b.get("event_description")


# -- status lists ---------------------------------------------------------------------------------

@router.get("/t/{slug}/status/{list_id}", tags=["status"], summary="A Token Status List (statuslist+jwt)")
async def status_list(list_id: str, tenant: TenantRef = Depends(path_tenant),  # noqa: B008
                      ctx: IssuerContext = Depends(get_ctx)) -> Response:  # noqa: B008
    token_value = await list_token(ctx, list_id, tenant.id, tenant.slug)
    if token_value is None:
        raise APIError(404, "not_found", "no such status list")
    return Response(token_value, media_type=STATUS_LIST_JWT_MEDIA_TYPE,
                    headers={"Cache-Control": f"public, max-age={ctx.settings.status_list_ttl}"})
