"""The agency API (``/v1``): templates, presentation requests, results, QR codes, live status."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from service_kit.errors import APIError
from service_kit.outbound import refused_destination
from service_kit.ratelimit import Limit, client_address, enforce, limiter_of, rate_limit_responses
from service_kit.security import no_store
from ssi import x509 as ssi_x509
from ssi.dcql import parse_dcql_query
from ssi.errors import SSIError
from ssi.oid4vci import check_url
from ssi.qr import qr_png, qr_svg
from verifier.agencies import verifier_host
from verifier.models import Agency, Template, Transaction
from verifier.routes.deps import AgencyDep, Services, Svc, authenticated_row, bearer_token, current_agency
from verifier.schemas import (
    UNENFORCEABLE_AUTHORITY,
    AgencyOut,
    ExchangeIn,
    RequestIn,
    RequestOut,
    ResultOut,
    TemplateIn,
    TemplateOut,
    purpose_problem,
    unenforceable_authority,
)
from verifier.statements import AGENCY_AND_TEMPLATE_BY_KEY_HASH, TEMPLATE_BY_NAME, TRANSACTION_FOR_KEY_HASH
from verifier.transactions import (
    FINAL_STATUSES,
    RequestSpec,
    create_transaction,
    is_transaction_id,
    read_transaction,
    result_body,
    token_hash,
    utcnow,
    wallet_uris,
)

router = APIRouter(tags=["agency"])

_NOT_FOUND = "no such request for this agency"
Scheme = Annotated[str, Query(pattern="^(openid4vp|haip-vp)$", description="Link scheme shown in the QR code.")]


def _template_out(t: Template) -> TemplateOut:
    return TemplateOut(id=t.id, name=t.name, dcql_query=t.dcql_query, purpose=t.purpose,
                       trusted_issuers=t.trusted_issuers, anchors_pem=t.anchors_pem or [],
                       retention_seconds=t.retention_seconds, response_mode=t.response_mode,  # type: ignore[arg-type]
                       created_at=t.created_at.isoformat(), updated_at=t.updated_at.isoformat())


def _require_holder_binding(dcql_query: dict[str, Any], *, template: str | None = None) -> None:
    """Refuse a Credential Query with ``require_cryptographic_holder_binding: false``: Cartera always
    requires holder binding (a KB-JWT signed with the credential's ``cnf`` key, for this request's
    nonce and client id), so a query saying otherwise would promise wallets what is never accepted."""
    for cq in dcql_query.get("credentials") or ():
        if isinstance(cq, dict) and cq.get("require_cryptographic_holder_binding") is False:
            where = f"template {template!r}, " if template is not None else ""
            raise APIError(400, "invalid_request",
                           f"{where}credential query {cq.get('id')!r}: require_cryptographic_holder_binding false "
                           "is not supported; this verifier always requires cryptographic holder binding "
                           "(omit the member or set it to true)")


def _require_enforceable_authorities(dcql_query: dict[str, Any], *, template: str) -> None:
    """Refuse a stored template naming a ``trusted_authorities`` type the verifier cannot check (one
    stored before such queries were refused): wallets would offer nothing, and every answer fail."""
    try:
        qid = unenforceable_authority(parse_dcql_query(dcql_query, strict=False))
    except SSIError:
        return  # anything else wrong with it is found where the query is used, as before
    if qid is not None:
        raise APIError(400, "invalid_request", f"template {template!r}, credential query {qid!r}: "
                                               f"{UNENFORCEABLE_AUTHORITY}")


def _require_showable_purpose(purpose: Any, *, template: str) -> None:
    """Refuse a stored template whose purpose wallets could not show as the agency stored it (a text
    with a control character or a bidirectional override, stored before such texts were refused):
    the agency reads it and replaces it (PUT), and no request carries it to citizens meanwhile."""
    problem = purpose_problem(purpose)
    if problem is not None:
        raise APIError(400, "invalid_request", f"template {template!r}, purpose: {problem}; replace the "
                                               "template's purpose")


def _require_listed_issuers(rules: list[dict[str, Any]], settings: Any, *, template: str | None = None) -> None:
    """Refuse, outside development mode, a trust rule whose ``issuers`` is null. Such a rule trusted
    any issuer whose ``x5c`` chains to an anchor, and one issuers CA certifies every tenant of an
    issuer service: any of them could issue a type another registered. A template stored with one
    before this rule is refused here too, rather than rejecting every answer
    (``verifier.trust_rule_without_issuers``)."""
    if settings.dev_mode:
        return
    for index, rule in enumerate(rules):
        if rule.get("issuers") is None:
            where = f"template {template!r}, " if template is not None else ""
            raise APIError(400, "invalid_request",
                           f"{where}trusted_issuers[{index}]: list the issuers accepted for this vct (`issuers`); "
                           "a rule without them, which trusts every issuer the trust anchors certify, is accepted "
                           "only in development mode")


def _check_anchors(pems: list[str]) -> None:
    for pem in pems:
        try:
            if not ssi_x509.load_pem_certificates(pem.encode("utf-8")):
                raise ValueError("empty")
        except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's bad input
            raise APIError(400, "invalid_request", "anchors_pem holds no valid PEM certificate") from exc


@router.get("/agency", response_model=AgencyOut, summary="The calling agency")
async def whoami(agency: AgencyDep, svc: Svc) -> AgencyOut:
    import base64

    leaf = ssi_x509.load_certificate(base64.b64decode(agency.x5c[0]))
    return AgencyOut(id=agency.id, slug=agency.slug, name=agency.name, certificate_chain=agency.x5c,
                     client_ids={"x509_san_dns": f"x509_san_dns:{verifier_host(svc.public_url)}",
                                 "x509_hash": f"x509_hash:{ssi_x509.x509_hash(leaf)}"})


@router.get("/templates", response_model=list[TemplateOut], summary="List the agency's templates")
async def list_templates(agency: AgencyDep, svc: Svc) -> list[TemplateOut]:
    async with svc.db.read_session() as session:
        rows = (await session.scalars(select(Template).where(Template.agency_id == agency.id)
                                      .order_by(Template.name))).all()
    return [_template_out(t) for t in rows]


@router.post("/templates", response_model=TemplateOut, status_code=201, summary="Create a template")
async def create_template(body: TemplateIn, agency: AgencyDep,
                          svc: Svc) -> TemplateOut:
    _require_holder_binding(body.dcql_query)
    _require_listed_issuers([r.model_dump() for r in body.trusted_issuers], svc.settings)
    _check_anchors(body.anchors_pem)
    now = utcnow()
    conflict = APIError(409, "conflict", "a template with this name exists")
    try:
        async with svc.db.session() as session:
            exists = await session.scalar(select(Template.id).where(Template.agency_id == agency.id,
                                                                     Template.name == body.name))
            if exists is not None:
                raise conflict
            template = Template(id=str(uuid.uuid4()), agency_id=agency.id, name=body.name,
                                dcql_query=body.dcql_query, purpose=body.purpose,
                                trusted_issuers=[r.model_dump() for r in body.trusted_issuers],
                                anchors_pem=body.anchors_pem, retention_seconds=body.retention_seconds,
                                response_mode=body.response_mode, created_at=now, updated_at=now)
            session.add(template)
    except IntegrityError:
        # Two creations of the same name at once both found none (PostgreSQL, READ COMMITTED): the
        # unique constraint (agency, name) lets one in and refuses the other when it commits.
        raise conflict from None
    return _template_out(template)


async def _template(svc: Services, agency: Agency, name: str) -> Template:
    async with svc.db.statement_connection() as conn:
        template = (await conn.execute(TEMPLATE_BY_NAME, {"agency_id": agency.id, "name": name})).first()
    if template is None:
        raise APIError(404, "not_found", "no such template for this agency")
    return template


@router.get("/templates/{name}", response_model=TemplateOut, summary="Read a template")
async def read_template(name: str, agency: AgencyDep,
                        svc: Svc) -> TemplateOut:
    return _template_out(await _template(svc, agency, name))


@router.put("/templates/{name}", response_model=TemplateOut, summary="Replace a template")
async def replace_template(name: str, body: TemplateIn, agency: AgencyDep,
                           svc: Svc) -> TemplateOut:
    if body.name != name:
        raise APIError(400, "invalid_request", "the body's name must be the template's name")
    _require_holder_binding(body.dcql_query)
    _require_listed_issuers([r.model_dump() for r in body.trusted_issuers], svc.settings)
    _check_anchors(body.anchors_pem)
    template = await _template(svc, agency, name)
    async with svc.db.session() as session:
        await session.execute(update(Template).where(Template.id == template.id).values(
            dcql_query=body.dcql_query, purpose=body.purpose,
            trusted_issuers=[r.model_dump() for r in body.trusted_issuers], anchors_pem=body.anchors_pem,
            retention_seconds=body.retention_seconds, response_mode=body.response_mode, updated_at=utcnow()))
    return _template_out(await _template(svc, agency, name))


@router.delete("/templates/{name}", status_code=204, summary="Delete a template")
async def delete_template(name: str, agency: AgencyDep,
                          svc: Svc) -> Response:
    template = await _template(svc, agency, name)
    async with svc.db.session() as session:
        obj = await session.get(Template, template.id)
        if obj is not None:
            await session.delete(obj)
    return Response(status_code=204)


async def check_destinations(svc: Services, webhook_url: str | None, redirect_uri: str | None = None) -> None:
    """400 unless the agency's webhook is https (http to loopback in ``dev_mode``) at an address the
    outbound policy lets the verifier reach (``service_kit.outbound``), and its ``redirect_uri``, where
    the wallet sends the citizen's browser, is https outside ``dev_mode``."""
    settings = svc.settings
    if webhook_url is not None:
        refused = await refused_destination(webhook_url, settings.outbound_policy(), dev_mode=settings.dev_mode)
        if refused is not None:
            raise APIError(400, "invalid_request", f"webhook_url: {refused}")
    if redirect_uri is not None:
        try:
            check_url(redirect_uri, allow_http_loopback=settings.dev_mode)
        except ValueError as exc:
            raise APIError(400, "invalid_request", f"redirect_uri {exc}") from None


def _spec(body: RequestIn, template: Template | None, svc: Services) -> RequestSpec:
    settings = svc.settings
    prefix = body.client_id_prefix or settings.default_client_id_prefix
    if prefix == "redirect_uri" and not settings.dev_mode:
        raise APIError(400, "invalid_request", "the redirect_uri client id prefix is for development mode only")
    if template is not None:
        # A template stored before such queries were refused is refused here rather than sent to wallets.
        _require_holder_binding(template.dcql_query, template=template.name)
        _require_enforceable_authorities(template.dcql_query, template=template.name)
        _require_listed_issuers(template.trusted_issuers, settings, template=template.name)
        _require_showable_purpose(template.purpose, template=template.name)
        return RequestSpec(dcql_query=template.dcql_query, purpose=template.purpose,
                           trusted_issuers=template.trusted_issuers, anchors_pem=template.anchors_pem or [],
                           retention_seconds=template.retention_seconds,
                           response_mode=body.response_mode or template.response_mode, client_id_prefix=prefix,
                           expires_in=body.expires_in or settings.request_ttl, webhook_url=body.webhook_url,
                           redirect_uri=body.redirect_uri, template_name=template.name)
    assert body.dcql_query is not None and body.purpose is not None and body.trusted_issuers is not None
    _require_holder_binding(body.dcql_query)
    _require_listed_issuers([r.model_dump() for r in body.trusted_issuers], settings)
    _check_anchors(body.anchors_pem or [])
    return RequestSpec(dcql_query=body.dcql_query, purpose=body.purpose,
                       trusted_issuers=[r.model_dump() for r in body.trusted_issuers],
                       anchors_pem=body.anchors_pem or [],
                       retention_seconds=body.retention_seconds if body.retention_seconds is not None
                       else settings.default_retention,
                       response_mode=body.response_mode or "direct_post.jwt", client_id_prefix=prefix,
                       expires_in=body.expires_in or settings.request_ttl, webhook_url=body.webhook_url,
                       redirect_uri=body.redirect_uri)


async def _agency_and_template(request: Request) -> tuple[Any, Any, str | None]:
    """Authenticate first (401 before any body error, as on every agency route) and, when the body
    names a template, read it in the same query: ``(agency, template or None, name looked up)``."""
    name: str | None = None
    if bearer_token(request) is not None:
        try:
            raw = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raw = None
        candidate = raw.get("template") if isinstance(raw, dict) else None
        name = candidate if isinstance(candidate, str) and len(candidate) <= 100 else None
    if name is None:
        return await current_agency(request), None, None
    row = await authenticated_row(request, AGENCY_AND_TEMPLATE_BY_KEY_HASH, {"name": name})
    fields = row._mapping
    agency = SimpleNamespace(**{c.name: fields[c.name] for c in Agency.__table__.c})
    template = (SimpleNamespace(**{c.name: fields[f"template_{c.name}"] for c in Template.__table__.c})
                if row.template_id is not None else None)
    return agency, template, name


async def limit_request_creation(request: Request) -> None:
    """Rate limits on creating presentation requests, per agency API key and per client address
    (429 ``too_many_requests`` with ``Retry-After``); checked before authentication, so floods of bad
    keys are limited too. Keys are stored as HMACs only."""
    settings = request.app.state.settings
    await enforce(limiter_of(request), [
        (Limit.parse("requests.key", settings.rate_limit_requests_key), bearer_token(request)),
        (Limit.parse("requests.client", settings.rate_limit_requests_client),
         client_address(request, settings.trusted_proxies)),
    ])


@router.post("/requests", response_model=RequestOut, status_code=201, summary="Create a presentation request",
             dependencies=[Depends(no_store), Depends(limit_request_creation)], responses=rate_limit_responses())
async def create_request(body: RequestIn, auth: Annotated[tuple[Any, Any, str | None], Depends(_agency_and_template)],
                         svc: Svc) -> RequestOut:
    """From a template (read in the same query as the API key check) or ad hoc."""
    agency, template, looked_up = auth
    if body.template != looked_up:
        # The dependency read the name from the raw body; the validated body disagrees (it cannot
        # for valid JSON, but never use a template other than the one the body names).
        template = await _template(svc, agency, body.template) if body.template is not None else None
    elif body.template is not None and template is None:
        raise APIError(404, "not_found", "no such template for this agency")
    await check_destinations(svc, body.webhook_url, body.redirect_uri)
    spec = _spec(body, template, svc)
    # One INSERT: atomic by itself, so no BEGIN/COMMIT round trips on PostgreSQL.
    async with svc.db.statement_connection() as conn:
        created = await create_transaction(conn, svc.box, agency, spec, public_url=svc.public_url)
    tx = created.transaction
    base = f"{svc.public_url}/v1/requests/{tx.id}"
    return RequestOut(id=tx.id, client_id=tx.client_id, **wallet_uris(tx, svc.public_url), status_url=base,
                      events_url=f"{base}/events?watch={created.watch_token}", qr_png_url=f"{base}/qr.png",
                      qr_svg_url=f"{base}/qr.svg", expires_at=tx.expires_at.isoformat())


async def _own_transaction(svc: Services, agency: Agency, tx_id: str) -> Transaction:
    async with svc.db.statement_connection() as conn:
        tx = await read_transaction(conn, tx_id)
    # Another agency's transaction is reported exactly like a missing one.
    if tx is None or tx.agency_id != agency.id:
        raise APIError(404, "not_found", _NOT_FOUND)
    return tx


@router.get("/requests/{tx_id}", response_model=ResultOut, summary="Read a request's result",
            dependencies=[Depends(no_store)])
async def read_result(tx_id: str, request: Request, svc: Svc) -> dict[str, Any]:
    # An id of another form matches no row (the API key is still checked: 401 before 404).
    row = await authenticated_row(request, TRANSACTION_FOR_KEY_HASH,
                                  {"tx_id": tx_id if is_transaction_id(tx_id) else ""})
    # Another agency's transaction is reported exactly like a missing one.
    if row.id is None:
        raise APIError(404, "not_found", _NOT_FOUND)
    return result_body(row, svc.box)  # type: ignore[arg-type]


@router.post("/requests/{tx_id}/exchange", response_model=ResultOut, summary="Exchange a same-device response_code",
             dependencies=[Depends(no_store)])
async def exchange(tx_id: str, body: ExchangeIn, agency: AgencyDep,
                   svc: Svc) -> dict[str, Any]:
    tx = await _own_transaction(svc, agency, tx_id)
    async with svc.db.session() as session:
        hit = await session.execute(
            update(Transaction).where(Transaction.id == tx.id,
                                      Transaction.response_code_hash == token_hash(body.response_code))
            .values(response_code_hash=None).returning(Transaction.id))
        if hit.first() is None:
            raise APIError(400, "invalid_grant", "the response_code is not valid (or was used)")
    return result_body(tx, svc.box)


def _wallet_uri(tx: Transaction, svc: Services, scheme: str) -> str:
    uris = wallet_uris(tx, svc.public_url)
    return uris["haip_uri"] if scheme == "haip-vp" else uris["uri"]


@router.get("/requests/{tx_id}/qr.png", summary="QR code (PNG) of the request link",
            responses={200: {"content": {"image/png": {}}}})
async def qr_png_route(tx_id: str, agency: AgencyDep, svc: Svc, scheme: Scheme = "openid4vp") -> Response:
    tx = await _own_transaction(svc, agency, tx_id)
    png = await asyncio.to_thread(qr_png, _wallet_uri(tx, svc, scheme))
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/requests/{tx_id}/qr.svg", summary="QR code (SVG) of the request link",
            responses={200: {"content": {"image/svg+xml": {}}}})
async def qr_svg_route(tx_id: str, agency: AgencyDep, svc: Svc, scheme: Scheme = "openid4vp") -> Response:
    tx = await _own_transaction(svc, agency, tx_id)
    svg = await asyncio.to_thread(qr_svg, _wallet_uri(tx, svc, scheme))
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/requests/{tx_id}/events", summary="Live status (Server-Sent Events)",
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(tx_id: str, request: Request, svc: Svc,
                 watch: Annotated[str, Query(min_length=10, max_length=100)]) -> StreamingResponse:
    """``event: status`` with the result body whenever the status changes; ends at a final status.

    Authorised by the watch token returned when the request was created (``EventSource`` cannot send
    an ``Authorization`` header); it only grants reading this one request's result.
    """
    tx = None
    if is_transaction_id(tx_id):
        async with svc.db.read_session() as session:
            tx = await session.get(Transaction, tx_id)
    if tx is None or tx.watch_token_hash != token_hash(watch):
        raise APIError(404, "not_found", _NOT_FOUND)

    async def stream() -> AsyncIterator[bytes]:
        last: str | None = None
        deadline = tx.expires_at + dt.timedelta(seconds=5)
        yield b"retry: 2000\n\n"
        while True:
            async with svc.db.read_session() as session:
                current = await session.get(Transaction, tx_id)
            if current is None:
                return
            body = result_body(current, svc.box)
            if body["status"] != last:
                last = body["status"]
                yield f"event: status\ndata: {json.dumps(body)}\n\n".encode()
            if last in FINAL_STATUSES or utcnow() > deadline or await request.is_disconnected():
                return
            await asyncio.sleep(0.4)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
