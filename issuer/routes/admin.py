"""Admin API under ``/v1``: tenants, credential types, data sources, offers, issuance records, keys, webhooks.

Every endpoint but the platform admin's is authenticated with the tenant's API key (``Authorization:
Bearer ck_...``) and sees only that tenant's data; creating tenants and sharing a ``vct`` with a tenant
need the platform admin key.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal

from cryptography import x509 as cx509
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service_kit.crypto import generate_api_key, hash_api_key
from service_kit.errors import APIError
from service_kit.outbound import refused_destination
from service_kit.pkcs11 import PKCS11Error
from ssi.jose import Key
from ssi.names import DisplayName, checked_display_name

from ..context import IssuerContext, get_ctx, new_id, new_secret, utcnow
from ..grants import create_offer
from ..keys import (
    SigningKeyError,
    create_key,
    discard_created_key,
    import_key,
    key_summary,
    load_ca,
    register_token_key,
)
from ..models import ApiKey, IssuanceRecord, SigningKey, SourceConfig, Tenant, WebhookEndpoint
from ..registry import (
    RegistryError,
    SharedVct,
    builtin_definition,
    register_type,
    set_source,
    share_vct,
    shared_vcts,
    tenant_types,
    type_versions,
    withdraw_vct,
)
from ..status import set_record_status
from ..tenancy import TenantRef, admin_tenant, bearer, forget_api_key, platform_admin
from . import API_PREFIX

log = logging.getLogger(__name__)

router = APIRouter(prefix=API_PREFIX, tags=["admin"])

#: Largest ``offset`` of a listing: beyond it the databases' 64-bit integers overflow (a 500), and no
#: tenant pages that far.
MAX_OFFSET = 1_000_000_000
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,39}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- tenants --------------------------------------------------------------------------------------

def _display_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """An issuer display entry: its ``name``, which wallets show citizens, is checked as a tenant's name."""
    name = entry.get("name")
    return {**entry, "name": checked_display_name(name, "name ")} if isinstance(name, str) else entry


class TenantCreate(_Model):
    slug: str = Field(pattern=SLUG_PATTERN, description="URL name: the issuer identifier is `<public_url>/t/<slug>`.",
                      examples=["uni-barcelona"])
    name: DisplayName = Field(min_length=1, max_length=200, examples=["Universitat de Barcelona"],
                              description="Kept without spaces around it; no control characters (line breaks, tabs, "
                                          "C1 or bidirectional controls): citizens read it, and certificates carry it.")
    body_id: str = Field(default="", max_length=40, description="Requesting-body identifier (NIF) in source queries.",
                         examples=["Q0818001J"])
    display: list[Annotated[dict[str, Any], AfterValidator(_display_entry)]] = Field(
        default_factory=list, description="Issuer display entries (`name`, `locale`, `logo`); a `name` is checked as "
                                          "the tenant's is.")


class TenantCreated(BaseModel):
    tenant_id: str
    slug: str
    issuer_url: str
    api_key: str = Field(description="The tenant's first admin API key. Shown once; stored hashed.")
    signing_kid: str | None = Field(description="Key created under the configured CA, if one is configured.")


class TenantInfo(BaseModel):
    tenant_id: str
    slug: str
    name: str
    issuer_url: str
    credential_offer_metadata: str = Field(description="Where wallets read the issuer metadata.")


def _load_ca(ctx: IssuerContext) -> tuple[Key, cx509.Certificate] | None:
    try:
        return load_ca(ctx.settings)
    except SigningKeyError as exc:  # checked at start-up: the file went away or changed since
        log.error("issuer CA unreadable", extra={"code": exc.code})
        raise APIError(503, "temporarily_unavailable", f"the issuer cannot certify keys now: {exc.detail}; "
                                                       "the operator must restore the file",
                       headers={"Retry-After": "60"}) from None


@router.post("/tenants", status_code=201, response_model=TenantCreated, dependencies=[Depends(platform_admin)],
             summary="Create a tenant (platform admin key)")
async def create_tenant(body: TenantCreate, ctx: IssuerContext = Depends(get_ctx)) -> TenantCreated:  # noqa: B008
    api_key = generate_api_key()
    tenant = Tenant(id=new_id("t_", 9), slug=body.slug, name=body.name, display=body.display, body_id=body.body_id,
                    created_at=utcnow())
    ca = _load_ca(ctx)
    kid = None
    created: SigningKey | None = None
    try:
        try:
            async with ctx.session() as session:
                session.add(tenant)
                await session.flush()
                session.add(ApiKey(id=new_id("k_", 9), tenant_id=tenant.id, key_hash=hash_api_key(api_key),
                                   label="initial", created_at=utcnow(), revoked=False))
                if ca is not None:
                    ref = TenantRef(tenant.id, tenant.slug, tenant.name, tenant.body_id, list(tenant.display))
                    created = await create_key(ctx, session, ref, ca[0], ca[1])
                    kid = created.kid
        except BaseException:
            # Not stored after all (the commit failed): a key made for it in the PKCS#11 token goes too.
            await discard_created_key(ctx, created)
            raise
    except IntegrityError as exc:
        raise APIError(409, "conflict", "a tenant with that slug exists") from exc
    return TenantCreated(tenant_id=tenant.id, slug=tenant.slug, issuer_url=ctx.issuer_url(tenant.slug), api_key=api_key,
                         signing_kid=kid)


@router.get("/tenant", response_model=TenantInfo, summary="The authenticated tenant")
async def get_tenant(tenant: TenantRef = Depends(admin_tenant), ctx: IssuerContext = Depends(get_ctx)) -> TenantInfo:  # noqa: B008
    url = ctx.issuer_url(tenant.slug)
    return TenantInfo(tenant_id=tenant.id, slug=tenant.slug, name=tenant.name, issuer_url=url,
                      credential_offer_metadata=f"{ctx.public_url}/.well-known/openid-credential-issuer/t/{tenant.slug}")


class ApiKeyCreated(BaseModel):
    api_key: str
    key_id: str


@router.post("/tenant/api-keys", status_code=201, response_model=ApiKeyCreated, summary="Create another admin API key")
async def add_api_key(tenant: TenantRef = Depends(admin_tenant), ctx: IssuerContext = Depends(get_ctx)) -> ApiKeyCreated:  # noqa: B008
    key = generate_api_key()
    key_id = new_id("k_", 9)
    async with ctx.session() as session:
        session.add(ApiKey(id=key_id, tenant_id=tenant.id, key_hash=hash_api_key(key), label="api", created_at=utcnow(),
                           revoked=False))
    return ApiKeyCreated(api_key=key, key_id=key_id)


class ApiKeyInfo(BaseModel):
    """An admin API key as listed: never the key or its hash."""

    key_id: str
    label: str = Field(description="`initial` (made with the tenant) or `api` (made through the API).")
    created_at: dt.datetime
    revoked: bool
    current: bool = Field(description="Whether this is the key authenticating the request.")


def _key_info(row: ApiKey, current_hash: str) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=row.id, label=row.label, created_at=row.created_at, revoked=row.revoked,
                      current=row.key_hash == current_hash)


@router.get("/tenant/api-keys", response_model=list[ApiKeyInfo], summary="The tenant's admin API keys")
async def list_api_keys(request: Request, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                        ctx: IssuerContext = Depends(get_ctx)) -> list[ApiKeyInfo]:  # noqa: B008
    current = hash_api_key(bearer(request) or "")
    async with ctx.db.read_session() as session:
        rows = (await session.execute(select(ApiKey).where(ApiKey.tenant_id == tenant.id)
                                      .order_by(ApiKey.created_at, ApiKey.id))).scalars().all()
    return [_key_info(row, current) for row in rows]


@router.delete("/tenant/api-keys/{key_id}", response_model=ApiKeyInfo,
               summary="Revoke an admin API key (other workers refuse it after at most 5 seconds)",
               responses={404: {"description": "No such key for this tenant"},
                          409: {"description": "It is the tenant's last valid key"}})
async def revoke_api_key(request: Request, key_id: str = Path(max_length=40),  # noqa: B008
                         tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                         ctx: IssuerContext = Depends(get_ctx)) -> ApiKeyInfo:  # noqa: B008
    current = hash_api_key(bearer(request) or "")
    async with ctx.session() as session:
        # The tenant row locked: two keys revoking each other at once cannot leave the tenant with none.
        await session.execute(select(Tenant.id).where(Tenant.id == tenant.id).with_for_update())
        row = (await session.execute(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant.id))
               ).scalar_one_or_none()
        if row is None:
            raise APIError(404, "not_found", "no such API key")
        if not row.revoked:
            others = (await session.execute(select(func.count()).select_from(ApiKey).where(
                ApiKey.tenant_id == tenant.id, ApiKey.revoked.is_(False), ApiKey.id != row.id))).scalar_one()
            if others == 0:
                raise APIError(409, "conflict", "this is the tenant's last valid API key: create another one "
                               "(POST /v1/tenant/api-keys) before revoking it")
            row.revoked = True
        info = _key_info(row, current)
    # This worker refuses it at once; the others when their cache entry expires (API_KEY_CACHE_SECONDS).
    forget_api_key(ctx, row.key_hash)
    return info


# -- types ----------------------------------------------------------------------------------------

class TypeRegister(_Model):
    definition: dict[str, Any] | None = Field(default=None, description="A type definition (see docs/credential-types.md).")
    builtin: str | None = Field(default=None, description="Or the id of a built-in type to register as is.",
                                examples=["university-diploma"])


class TypeSummary(BaseModel):
    id: str
    version: str
    versions: list[str]
    vct: str
    name: str
    type_metadata_url: str
    vct_integrity: str
    source_configured: bool
    source_kind: str | None


async def _summary(ctx: IssuerContext, session: Any, tenant: TenantRef, reg: Any) -> TypeSummary:
    versions = [row.version for row in await type_versions(session, tenant.id, reg.type_id)]
    source = await session.get(SourceConfig, (tenant.id, reg.type_id))
    return TypeSummary(id=reg.type_id, version=reg.version, versions=versions, vct=reg.ctype.vct, name=reg.ctype.name,
                       type_metadata_url=f"{ctx.issuer_url(tenant.slug)}/types/{reg.type_id}",
                       vct_integrity=reg.ctype.type_metadata_integrity(), source_configured=source is not None,
                       source_kind=source.kind if source is not None else None)


def _registry_error(exc: RegistryError) -> APIError:
    return APIError(409 if exc.code in ("version_exists", "vct_in_use", "vct_taken") else 400, exc.code, exc.detail,
                    extra={"problems": exc.problems} if exc.problems else None)


def _error_schema(*codes: str) -> dict[str, Any]:
    return {"type": "object", "required": ["error", "error_description"], "properties": {
        "error": {"type": "string", "enum": list(codes)}, "error_description": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "object", "properties": {
            "path": {"type": "string"}, "message": {"type": "string"}}}}}}


REGISTER_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The definition is not valid (`invalid_type`, with `problems`), names no built-in type "
                         "(`unknown_builtin`), or the body is malformed (`invalid_request`)."},
    409: {"description": "`vct_taken`: another tenant of this issuer registered the definition's `vct` (a `vct` "
                         "belongs to one tenant) and the platform admin has not shared it with this one; "
                         "`vct_in_use`: this tenant, or the owner of a `vct` shared with it, published other "
                         "Type Metadata under the `vct`; `version_exists`: that version is registered with "
                         "another definition.",
          "content": {"application/json": {
              "schema": _error_schema("vct_taken", "vct_in_use", "version_exists"),
              "example": {"error": "vct_taken", "error_description": "another tenant of this issuer registered "
                          "this vct; a type of yours needs a vct of its own, such as "
                          "https://issuer.example.org/t/ajuntament-girona/types/tax-compliance, unless the "
                          "issuer's platform admin shares this vct with you",
                          "problems": [{"path": "vct", "message": "registered by another tenant"}]}}}},
}


@router.post("/types", status_code=201, response_model=TypeSummary, responses=REGISTER_RESPONSES,
             summary="Register a credential type (or a new version)")
async def register(body: TypeRegister, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                   ctx: IssuerContext = Depends(get_ctx)) -> TypeSummary:  # noqa: B008
    if (body.definition is None) == (body.builtin is None):
        raise APIError(400, "invalid_request", "give exactly one of definition and builtin")
    try:
        definition = body.definition if body.definition is not None else builtin_definition(body.builtin or "")
        async with ctx.session() as session:
            reg = await register_type(ctx, session, tenant, definition)
            return await _summary(ctx, session, tenant, reg)
    except RegistryError as exc:
        raise _registry_error(exc) from exc


@router.get("/types", response_model=list[TypeSummary], summary="The tenant's credential types")
async def list_types(tenant: TenantRef = Depends(admin_tenant), ctx: IssuerContext = Depends(get_ctx)) -> list[TypeSummary]:  # noqa: B008
    async with ctx.db.read_session() as session:
        types = await tenant_types(ctx, session, tenant.id)
        return [await _summary(ctx, session, tenant, reg) for _, reg in sorted(types.items())]


@router.get("/types/{type_id}", response_model=TypeSummary, summary="One credential type")
async def get_type(type_id: str, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                   ctx: IssuerContext = Depends(get_ctx)) -> TypeSummary:  # noqa: B008
    async with ctx.db.read_session() as session:
        reg = (await tenant_types(ctx, session, tenant.id)).get(type_id)
        if reg is None:
            raise APIError(404, "not_found", "no such credential type")
        return await _summary(ctx, session, tenant, reg)


@router.put("/types/{type_id}/source", response_model=TypeSummary,
            summary="Configure the data source of a type (adapter settings plus query context)")
async def put_source(type_id: str, request: Request, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                     ctx: IssuerContext = Depends(get_ctx)) -> TypeSummary:  # noqa: B008
    from .protocol import _json_body

    config = await _json_body(request, "invalid_request")
    try:
        async with ctx.session() as session:
            reg = (await tenant_types(ctx, session, tenant.id)).get(type_id)
            if reg is None:
                raise APIError(404, "not_found", "no such credential type")
            await set_source(ctx, session, tenant, type_id, config)
            await session.flush()
            return await _summary(ctx, session, tenant, reg)
    except RegistryError as exc:
        raise _registry_error(exc) from exc


# -- vcts shared with tenants (platform admin) ----------------------------------------------------
# A vct belongs to the tenant that registered it first; the platform admin, and only it, lets other
# tenants register types under it too: one issuer service hosting many town councils, each issuing
# the one padró type that an agency asks for, listing the councils it trusts.

class VctShareCreate(_Model):
    vct: str = Field(min_length=1, max_length=500, description="A `vct` a tenant of this issuer registered (its "
                                                               "owner): the tenant may register types under it too.",
                     examples=["https://types.cartera.example/padro/v1"])


class VctShareInfo(BaseModel):
    vct: str
    tenant: str = Field(description="Slug of the tenant the `vct` is shared with.")
    owner: str = Field(description="Slug of the tenant that owns the `vct` (the first that registered it).")
    shared_at: dt.datetime


def _share_info(share: SharedVct) -> VctShareInfo:
    return VctShareInfo(vct=share.vct, tenant=share.tenant_slug, owner=share.owner_slug, shared_at=share.created_at)


_PLATFORM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "`unauthorized`: not the platform admin key (a tenant's API key is not it).",
          "content": {"application/json": {"schema": _error_schema("unauthorized")}}},
    403: {"description": "`access_denied`: the platform admin API is off (no `CARTERA_ISSUER_ADMIN_API_KEY`).",
          "content": {"application/json": {"schema": _error_schema("access_denied")}}},
}
_NO_TENANT = {"description": "`not_found`: no tenant has that slug.",
              "content": {"application/json": {"schema": _error_schema("not_found")}}}


async def _tenant_by_slug(session: Any, slug: str) -> Tenant:
    row = (await session.execute(select(Tenant).where(Tenant.slug == slug))).scalar_one_or_none()
    if row is None:
        raise APIError(404, "not_found", "no such tenant")
    return row


def _share_error(exc: RegistryError) -> APIError:
    return APIError({"not_found": 404, "conflict": 409}.get(exc.code, 400), exc.code, exc.detail)


SlugPath = Path(max_length=63, description="The tenant's slug.", examples=["ajuntament-salt"])


@router.get("/tenants/{slug}/shared-vcts", response_model=list[VctShareInfo], dependencies=[Depends(platform_admin)],
            responses={**_PLATFORM_RESPONSES, 404: _NO_TENANT},
            summary="The vcts shared with a tenant (platform admin key)")
async def list_shared_vcts(slug: str = SlugPath, ctx: IssuerContext = Depends(get_ctx)) -> list[VctShareInfo]:  # noqa: B008
    async with ctx.db.read_session() as session:
        tenant = await _tenant_by_slug(session, slug)
        return [_share_info(share) for share in await shared_vcts(session, tenant.id)]


@router.post("/tenants/{slug}/shared-vcts", status_code=201, response_model=VctShareInfo,
             dependencies=[Depends(platform_admin)],
             summary="Share a vct with a tenant: it may register types under it too (platform admin key)",
             responses={**_PLATFORM_RESPONSES,
                        200: {"description": "Already shared with the tenant: the share as it was.",
                              "model": VctShareInfo},
                        400: {"description": "`invalid_request`: a `vct` on this issuer's own origin (one tenant's "
                                             "type URL), or a malformed body.",
                              "content": {"application/json": {"schema": _error_schema("invalid_request")}}},
                        404: {"description": "`not_found`: no tenant has that slug, or no tenant registered the `vct` "
                                             "(it is shared once its first registrant owns it).",
                              "content": {"application/json": {"schema": _error_schema("not_found")}}},
                        409: {"description": "`conflict`: the tenant owns the `vct`.",
                              "content": {"application/json": {"schema": _error_schema("conflict")}}}})
async def add_shared_vct(body: VctShareCreate, response: Response, slug: str = SlugPath,
                         ctx: IssuerContext = Depends(get_ctx)) -> VctShareInfo:  # noqa: B008
    try:
        async with ctx.session() as session:
            share, created = await share_vct(ctx, session, await _tenant_by_slug(session, slug), body.vct)
    except RegistryError as exc:
        raise _share_error(exc) from exc
    if not created:
        response.status_code = 200
    return _share_info(share)


@router.delete("/tenants/{slug}/shared-vcts", status_code=204, dependencies=[Depends(platform_admin)],
               summary="Withdraw a vct shared with a tenant: no new types or versions under it; nothing issued "
                       "is revoked (platform admin key)",
               responses={**_PLATFORM_RESPONSES,
                          404: {"description": "`not_found`: no tenant has that slug, or the `vct` is not shared "
                                               "with it.",
                                "content": {"application/json": {"schema": _error_schema("not_found")}}}})
async def remove_shared_vct(slug: str = SlugPath,
                            vct: str = Query(min_length=1, max_length=500, description="The shared `vct`."),  # noqa: B008
                            ctx: IssuerContext = Depends(get_ctx)) -> Response:  # noqa: B008
    try:
        async with ctx.session() as session:
            await withdraw_vct(session, await _tenant_by_slug(session, slug), vct)
    except RegistryError as exc:
        raise _share_error(exc) from exc
    return Response(status_code=204)


# -- offers ---------------------------------------------------------------------------------------

class SubjectIn(_Model):
    identifier: str = Field(pattern=IDENTIFIER_PATTERN, description="NIF/NIE of the citizen.", examples=["12345678Z"])
    identifier_type: Literal["NIF", "DNI", "NIE", "Pasaporte"] = "NIF"
    name: str = Field(default="", max_length=200, description="Full name. Required for types with a mandatory claim read from `subject.name` (the offer is refused with `invalid_request` otherwise).")
    birth_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")


class OfferCreate(_Model):
    credential_configuration_ids: list[str] = Field(min_length=1, max_length=10, examples=[["university-diploma"]])
    subject: SubjectIn
    tx_code: bool = Field(default=True, description="Protect the offer with a numeric transaction code.")
    by_reference: bool = Field(default=True, description="`credential_offer_uri` (true) or the offer by value.")
    selector: str | None = Field(default=None, max_length=100,
                                 description="Picks one record when the source holds several (a degree's NumTitulo).")
    authorization_code: bool = Field(default=False, description="Also offer the authorization code grant "
                                                                "(`issuer_state`): the citizen logs in at VÀLid.")


class OfferCreated(BaseModel):
    offer_id: str
    offer_uri: str = Field(description="`openid-credential-offer://` link to show as a QR code.")
    credential_offer_uri: str
    offer: dict[str, Any]
    tx_code: str | None = Field(description="Give it to the citizen by another channel. Shown once.")
    credential_ids: dict[str, str]
    expires_at: dt.datetime


@router.post("/offers", status_code=201, response_model=OfferCreated, summary="Create a pre-authorized credential offer")
async def new_offer(body: OfferCreate, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                    ctx: IssuerContext = Depends(get_ctx)) -> OfferCreated:  # noqa: B008
    known = await tenant_types(ctx, None, tenant.id)
    unknown = [cid for cid in body.credential_configuration_ids if cid not in known]
    if unknown or len(set(body.credential_configuration_ids)) != len(body.credential_configuration_ids):
        raise APIError(400, "invalid_request", "unknown or repeated credential configuration id")
    subject = body.subject.model_dump()
    subject["identifier"] = subject["identifier"].upper()
    for cid in body.credential_configuration_ids:
        missing = [f for f in known[cid].ctype.required_subject_fields() if not subject.get(f)]
        if missing:
            raise APIError(400, "invalid_request",
                           f"credential type {cid} needs subject.{', subject.'.join(missing)} in the offer")
    if body.authorization_code and not ctx.settings.authorization_code_flow:
        raise APIError(400, "invalid_request", "the authorization code flow is off: no wallet client is registered "
                                               "(CARTERA_ISSUER_OAUTH_CLIENTS) or no identity provider is configured "
                                               "(CARTERA_ISSUER_IDP_AUTHORIZE_URL, _TOKEN_URL, _USERINFO_URL)")
    created = await create_offer(ctx, tenant, body.credential_configuration_ids, subject, with_tx_code=body.tx_code,
                                 by_reference=body.by_reference, selector=body.selector,
                                 authorization_code=body.authorization_code)
    return OfferCreated(offer_id=created.offer_id, offer_uri=created.offer_uri,
                        credential_offer_uri=created.credential_offer_uri, offer=created.offer, tx_code=created.tx_code,
                        credential_ids=created.credential_ids, expires_at=created.expires_at)


# -- issuance records ----------------------------------------------------------------------------

class CredentialRecord(BaseModel):
    credential_id: str
    type_id: str
    type_version: str
    vct: str
    subject_identifier: str
    status: Literal["valid", "revoked", "suspended"]
    copies: int
    signing_kid: str
    issued_at: dt.datetime
    valid_until: dt.datetime
    status_changed_at: dt.datetime | None
    evidence: dict[str, Any] = Field(description="Source query evidence: request/transmission ids, product, purpose, "
                                                 "official, consent. Never claim values.")
    login: dict[str, Any]
    notifications: list[dict[str, Any]]
    offer_id: str | None


def _record(row: IssuanceRecord) -> CredentialRecord:
    return CredentialRecord(credential_id=row.id, type_id=row.type_id, type_version=row.type_version, vct=row.vct,
                            subject_identifier=row.subject_identifier, status=row.status,  # type: ignore[arg-type]
                            copies=row.copies, signing_kid=row.signing_kid, issued_at=row.issued_at,
                            valid_until=row.valid_until, status_changed_at=row.status_changed_at,
                            evidence=row.evidence, login=row.login, notifications=row.notifications,
                            offer_id=row.offer_id)


class RecordPage(BaseModel):
    total: int
    items: list[CredentialRecord]


@router.get("/credentials", response_model=RecordPage, summary="List issuance records")
async def list_records(tenant: TenantRef = Depends(admin_tenant), ctx: IssuerContext = Depends(get_ctx),  # noqa: B008
                       type_id: str | None = Query(default=None, alias="type"),  # noqa: B008
                       subject: str | None = Query(default=None, max_length=40),  # noqa: B008
                       status: Literal["valid", "revoked", "suspended"] | None = None,
                       limit: int = Query(default=50, ge=1, le=500),
                       offset: int = Query(default=0, ge=0, le=MAX_OFFSET)) -> RecordPage:  # noqa: B008
    conditions = [IssuanceRecord.tenant_id == tenant.id]
    if type_id:
        conditions.append(IssuanceRecord.type_id == type_id)
    if subject:
        conditions.append(IssuanceRecord.subject_identifier == subject.upper())
    if status:
        conditions.append(IssuanceRecord.status == status)
    async with ctx.db.read_session() as session:
        total = (await session.execute(select(func.count()).select_from(IssuanceRecord).where(*conditions))).scalar_one()
        rows = (await session.execute(select(IssuanceRecord).where(*conditions)
                                      .order_by(IssuanceRecord.issued_at.desc()).limit(limit).offset(offset))).scalars()
        return RecordPage(total=total, items=[_record(r) for r in rows])


async def _own_record(session: Any, tenant: TenantRef, credential_id: str, lock: bool = False) -> IssuanceRecord:
    stmt = select(IssuanceRecord).where(IssuanceRecord.id == credential_id, IssuanceRecord.tenant_id == tenant.id)
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).scalar_one_or_none()
    if row is None:
        raise APIError(404, "not_found", "no such credential")
    return row


@router.get("/credentials/{credential_id}", response_model=CredentialRecord, summary="One issuance record")
async def get_record(credential_id: str, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                     ctx: IssuerContext = Depends(get_ctx)) -> CredentialRecord:  # noqa: B008
    async with ctx.db.read_session() as session:
        return _record(await _own_record(session, tenant, credential_id))


_TRANSITIONS = {"revoke": ("revoked", {"valid", "suspended"}), "suspend": ("suspended", {"valid"}),
                "reinstate": ("valid", {"suspended"})}


@router.post("/credentials/{credential_id}/{action}", response_model=CredentialRecord,
             summary="Revoke, suspend or reinstate a credential (every copy); the status list is re-signed")
async def change_status(credential_id: str, action: Literal["revoke", "suspend", "reinstate"],
                        tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                        ctx: IssuerContext = Depends(get_ctx)) -> CredentialRecord:  # noqa: B008
    from ..issuance import enqueue_event

    target, allowed_from = _TRANSITIONS[action]
    async with ctx.session() as session:
        row = await _own_record(session, tenant, credential_id, lock=True)
        if row.status == target:
            return _record(row)
        if row.status not in allowed_from:
            raise APIError(409, "conflict", f"a {row.status} credential cannot be {target}")
        await set_record_status(ctx, session, row, tenant.slug, target)
        await enqueue_event(session, tenant, f"credential.{target}", row.id, row.type_id)
        return _record(row)


# -- keys -----------------------------------------------------------------------------------------

class KeyInfo(BaseModel):
    kid: str
    active: bool
    created_at: str
    retired_at: str | None
    certificate_subject: str
    not_after: str
    san_uris: list[str]
    backend: Literal["software", "pkcs11"] = Field(default="software", description="Where the private key is.")
    token_key: dict[str, str] | None = Field(default=None, description="For a PKCS#11 key: `token`, `label`, `id` "
                                                                       "(CKA_ID, hex) and `alg` of the key in the token.")


class KeyRotate(_Model):
    private_key_pem: str | None = Field(default=None, description="Import this key (PKCS#8 PEM) instead of generating one.")
    certificate_chain_pem: str | None = Field(default=None, description="Its certificate chain, leaf first (also for "
                                                                        "`token_key_label`).")
    backend: Literal["software", "pkcs11"] | None = Field(
        default=None, description="Where a generated key is made (default: the `key_backend` setting): `pkcs11` "
                                  "generates it in the configured token, non-extractable.")
    token_key_label: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Register this existing key of the PKCS#11 token (made with the token's own tools) instead of "
                    "generating one; certified by the issuer's CA unless `certificate_chain_pem` is given.")


@router.get("/keys", response_model=list[KeyInfo], summary="The tenant's signing keys")
async def list_keys(tenant: TenantRef = Depends(admin_tenant), ctx: IssuerContext = Depends(get_ctx)) -> list[KeyInfo]:  # noqa: B008
    async with ctx.db.read_session() as session:
        rows = (await session.execute(select(SigningKey).where(SigningKey.tenant_id == tenant.id)
                                      .order_by(SigningKey.created_at.desc()))).scalars()
        return [KeyInfo(**key_summary(r)) for r in rows]  # type: ignore[arg-type]


@router.post("/keys/rotate", status_code=201, response_model=KeyInfo,
             summary="Rotate the signing key (old credentials keep verifying)")
async def rotate_key(body: KeyRotate, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                     ctx: IssuerContext = Depends(get_ctx)) -> KeyInfo:  # noqa: B008
    created: SigningKey | None = None
    try:
        try:
            async with ctx.session() as session:
                if body.token_key_label:
                    if body.private_key_pem:
                        raise APIError(400, "invalid_request", "give either private_key_pem or token_key_label")
                    row = await register_token_key(ctx, session, tenant, body.token_key_label, ca=_load_ca(ctx),
                                                   chain_pem=body.certificate_chain_pem)
                elif body.private_key_pem or body.certificate_chain_pem:
                    if not (body.private_key_pem and body.certificate_chain_pem):
                        raise APIError(400, "invalid_request", "give both private_key_pem and certificate_chain_pem")
                    row = await import_key(ctx, session, tenant, body.private_key_pem, body.certificate_chain_pem)
                else:
                    ca = _load_ca(ctx)
                    if ca is None:
                        raise APIError(400, "invalid_request",
                                       "no CA is configured: import a key with its certificate chain")
                    row = created = await create_key(ctx, session, tenant, ca[0], ca[1], backend=body.backend)
                await session.flush()
                return KeyInfo(**key_summary(row))  # type: ignore[arg-type]
        except BaseException:
            # Not stored after all (the commit failed): the key generated for it in the PKCS#11 token goes
            # too (never one registered by its label).
            await discard_created_key(ctx, created)
            raise
    except IntegrityError as exc:
        # kid is the key's thumbprint: this key is registered already (and stays as it was).
        raise APIError(409, "conflict", "this key is already registered") from exc
    except SigningKeyError as exc:
        raise APIError(400, exc.code, exc.detail) from exc
    except PKCS11Error as exc:
        status = exc.http_status
        error = {409: "conflict", 503: "temporarily_unavailable"}.get(status, "invalid_request")
        raise APIError(status, error, exc.detail, extra={"code": exc.code}) from exc


# -- webhooks -------------------------------------------------------------------------------------

EVENTS = ("credential.issued", "credential.revoked", "credential.suspended", "credential.valid")


class WebhookCreate(_Model):
    url: str = Field(pattern=r"^https?://", max_length=2000, examples=["https://uni.example/hooks/cartera"])
    events: list[Literal["credential.issued", "credential.revoked", "credential.suspended", "credential.valid"]] = Field(
        default_factory=list, description="Events to send; empty: all.")


class WebhookInfo(BaseModel):
    id: str
    url: str
    events: list[str]
    secret: str | None = Field(default=None, description="HMAC secret (Cartera-Signature). Shown once, at creation.")


@router.post("/webhooks", status_code=201, response_model=WebhookInfo, summary="Register a webhook endpoint")
async def add_webhook(body: WebhookCreate, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                      ctx: IssuerContext = Depends(get_ctx)) -> WebhookInfo:  # noqa: B008
    refused = await refused_destination(body.url, ctx.settings.outbound_policy(), dev_mode=ctx.settings.dev_mode)
    if refused is not None:
        raise APIError(400, "invalid_request", refused)
    secret = new_secret()
    hook_id = new_id("wh_", 9)
    async with ctx.session() as session:
        session.add(WebhookEndpoint(id=hook_id, tenant_id=tenant.id, url=body.url, events=list(body.events),
                                    sealed_secret=ctx.box.seal(secret.encode(), f"issuer:webhook:{hook_id}".encode()),
                                    created_at=utcnow()))
    return WebhookInfo(id=hook_id, url=body.url, events=list(body.events), secret=secret)


@router.get("/webhooks", response_model=list[WebhookInfo], summary="The tenant's webhook endpoints")
async def list_webhooks(tenant: TenantRef = Depends(admin_tenant), ctx: IssuerContext = Depends(get_ctx)) -> list[WebhookInfo]:  # noqa: B008
    async with ctx.db.read_session() as session:
        rows = (await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant.id))).scalars()
        return [WebhookInfo(id=r.id, url=r.url, events=list(r.events)) for r in rows]


@router.delete("/webhooks/{hook_id}", status_code=204, summary="Remove a webhook endpoint")
async def delete_webhook(hook_id: str, tenant: TenantRef = Depends(admin_tenant),  # noqa: B008
                         ctx: IssuerContext = Depends(get_ctx)) -> Response:  # noqa: B008
    async with ctx.session() as session:
        row = (await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.id == hook_id,
                                                                   WebhookEndpoint.tenant_id == tenant.id))).scalar_one_or_none()
        if row is None:
            raise APIError(404, "not_found", "no such webhook")
        await session.delete(row)
    return Response(status_code=204)
