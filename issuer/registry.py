"""Tenants' credential types (versioned definitions, validated by ``credential_schemas``) and data sources.

A type is registered as a definition document; every registration of an existing ``id`` must carry a
new ``version``, and the newest version is the one issued (credentials already issued keep the
``vct#integrity`` of the version they were issued under). The configuration id in OpenID4VCI metadata
is the type ``id``. A ``vct`` belongs to the tenant that registered it first (``vct_owners``): the
others are refused with ``vct_taken``, unless the platform admin shared the ``vct`` with them
(``vct_shares``: several town councils of one issuer service issuing the one padró type), in which
case they publish the owner's Type Metadata under it.

A data source is the adapter configuration of :func:`issuer.sources.build_source` plus ``context``:
the purpose, procedure, legal basis (consent) and responsible official every query carries. The whole
document is sealed at rest because adapters' settings hold private keys and bearer tokens.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from credential_schemas import CredentialType, SchemaError, load_builtin_types, load_type
from service_kit.crypto import SecretBoxError

from .context import IssuerContext, utcnow
from .models import CredentialTypeRow, SourceConfig, VctOwner, VctShare
from .models import Tenant as TenantRow
from .sources import DataSource, SourceConfigError, SourceContext, build_source, tenant_source_config
from .sources.base import MAX_TIMEOUT
from .tenancy import TenantRef as Tenant

log = logging.getLogger(__name__)

CONTEXT_FIELDS = ("purpose", "procedure", "consent", "official_name", "official_nif")
#: Seconds a worker trusts its cached view of a tenant's types and sources; changes made through
#: another worker become visible after at most this long (changes through this one, at once).
CACHE_SECONDS = 5.0


class RegistryError(Exception):
    """A type or source registration is refused; ``problems`` lists ``{"path", "message"}``."""

    def __init__(self, code: str, detail: str, problems: list[dict[str, str]] | None = None) -> None:
        self.code = code
        self.detail = detail
        self.problems = problems or []
        super().__init__(detail)


@dataclass(frozen=True)
class RegisteredType:
    """A tenant's current version of a type."""

    row_id: int
    type_id: str
    version: str
    ctype: CredentialType

    @cached_property
    def integrity(self) -> str:
        """``vct#integrity`` of this version (hashing the type metadata once, not per credential)."""
        return self.ctype.type_metadata_integrity()

    @cached_property
    def disclosable(self) -> list[Any]:
        """The selectively disclosable claim paths of this version (computed once)."""
        return self.ctype.disclosable_paths()


def builtin_definition(type_id: str) -> dict[str, Any]:
    """The definition document of a built-in type (``credential_schemas/types``)."""
    types = load_builtin_types()
    if type_id not in types:
        raise RegistryError("unknown_builtin", "no built-in type has that id")
    return dict(types[type_id].definition)


def load_stored_type(definition: dict[str, Any]) -> CredentialType:
    """A stored definition as a type; one stored before a validator rule tightened is still served and
    issued (logged), rather than failing every request that lists the tenant's types."""
    try:
        return load_type(definition)
    except SchemaError as exc:
        log.warning("stored type definition no longer passes the validator",
                    extra={"type_id": definition.get("id"), "problems": [str(p) for p in exc.problems[:5]]})
        return load_type(definition, validate=False)


async def register_type(ctx: IssuerContext, session: AsyncSession, tenant: Tenant,
                        definition: dict[str, Any]) -> RegisteredType:
    """Validate and store a type definition (a new id, or a new version of an existing id)."""
    try:
        ctype = load_type(definition)
    except SchemaError as exc:
        problems = [{"path": p.path, "message": p.message} for p in exc.problems]
        raise RegistryError("invalid_type", "the type definition is not valid", problems) from exc
    foreign = _foreign_vct(ctx, tenant, ctype.id, ctype.vct)
    if foreign is not None:
        raise RegistryError("invalid_type", "the type definition is not valid", [{"path": "vct", "message": foreign}])
    # The tenant's registrations take turns (its row locked FOR NO KEY UPDATE: issuance's foreign-key
    # checks do not wait): the checks below then see every version registered before, and the same
    # registration sent twice at once is answered as when sent twice in a row.
    await session.execute(select(TenantRow.id).where(TenantRow.id == tenant.id).with_for_update(key_share=True))
    existing = await _stored_version(session, tenant, ctype)
    if existing is not None:
        return existing
    owner = await _vct_owner(ctx, session, tenant, ctype)
    # Credentials already issued carry vct#integrity, the hash of the Type Metadata at their vct URL: a
    # version (of this or another type) published under the same vct must publish the same metadata,
    # or every credential issued before would fail its wallet's integrity check. New metadata, new vct.
    # A tenant the vct is shared with publishes the owner's: one vct, one type, whichever council issues it.
    publishers = {tenant.id} if owner is None else {tenant.id, owner}
    same_vct = (await session.execute(select(CredentialTypeRow.id, CredentialTypeRow.definition).where(
        CredentialTypeRow.tenant_id.in_(publishers), CredentialTypeRow.vct == ctype.vct)
        .order_by(CredentialTypeRow.id))).all()
    for row_id, stored in same_vct:
        earlier = ctx.types.get(row_id) or ctx.types.put(row_id, load_stored_type(stored))
        if earlier.type_metadata_bytes() != ctype.type_metadata_bytes():
            raise RegistryError("vct_in_use", "credentials were issued under this vct with other Type Metadata "
                                "(name, display or claims); a version that changes them needs a new vct",
                                [{"path": "vct", "message": "already published with different Type Metadata"}])
    if owner is None:
        await _claim_vct(ctx, session, tenant, ctype)
    row = CredentialTypeRow(tenant_id=tenant.id, type_id=ctype.id, version=ctype.version, vct=ctype.vct,
                            definition=ctype.definition, created_at=utcnow())
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        # Stored meanwhile by a registration that did not wait for the lock (a worker of an older
        # release): the same answer as if it had come first, not a 500.
        existing = await _stored_version(session, tenant, ctype)
        if existing is None:
            raise
        return existing
    ctx.types.put(("tenant", tenant.id), (0.0, {}))
    return RegisteredType(row.id, row.type_id, row.version, ctype)


async def _stored_version(session: AsyncSession, tenant: Tenant, ctype: CredentialType) -> RegisteredType | None:
    """The stored version ``ctype`` registers again (``None``: not stored yet), or ``version_exists``
    when that version is stored with another definition."""
    existing = (await session.execute(select(CredentialTypeRow).where(
        CredentialTypeRow.tenant_id == tenant.id, CredentialTypeRow.type_id == ctype.id,
        CredentialTypeRow.version == ctype.version))).scalar_one_or_none()
    if existing is None:
        return None
    if existing.definition == ctype.definition:
        return RegisteredType(existing.id, existing.type_id, existing.version, ctype)
    raise RegistryError("version_exists", "that version of the type is already registered; bump version")


async def _vct_owner(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, ctype: CredentialType) -> str | None:
    """The tenant owning ``ctype.vct`` (``None``: nobody yet), or ``vct_taken`` when it is another
    tenant's and the platform admin has not shared it with this one.

    Every tenant's key chains to the same issuers CA, so a verifier trusting issuers per ``vct`` tells
    tenants apart only by ``iss``: a second tenant issuing under a ``vct`` would pass for the first
    wherever a rule names no issuer. Hence only the owner, and the tenants the platform admin chose."""
    owner = await session.scalar(select(VctOwner.tenant_id).where(VctOwner.vct == ctype.vct))
    if owner is not None and owner != tenant.id and not await _shared_with(session, tenant, ctype.vct):
        raise _taken(ctx, tenant, ctype)
    return owner


async def _shared_with(session: AsyncSession, tenant: Tenant, vct: str) -> bool:
    # FOR SHARE on PostgreSQL: a withdrawal waits for this registration to commit, so none is stored
    # after the withdrawal answered (SQLite writers take turns anyway).
    return await session.scalar(select(VctShare.vct).where(VctShare.vct == vct, VctShare.tenant_id == tenant.id)
                                .with_for_update(read=True)) is not None


def _taken(ctx: IssuerContext, tenant: Tenant, ctype: CredentialType) -> RegistryError:
    return RegistryError("vct_taken", "another tenant of this issuer registered this vct; a type of yours needs "
                         f"a vct of its own, such as {ctx.issuer_url(tenant.slug)}/types/{ctype.id}, unless the "
                         "issuer's platform admin shares this vct with you",
                         [{"path": "vct", "message": "registered by another tenant"}])


async def _claim_vct(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, ctype: CredentialType) -> None:
    """Make ``ctype.vct``, owned by nobody, the tenant's. Two tenants registering one ``vct`` at once
    hold different tenant locks: the primary key of ``vct_owners`` lets one in, and the other is
    refused, even if the vct was shared with it meanwhile (its Type Metadata was not compared with the
    owner's: it registers again)."""
    try:
        async with session.begin_nested():
            session.add(VctOwner(vct=ctype.vct, tenant_id=tenant.id, created_at=utcnow()))
            await session.flush()
        return
    except IntegrityError:
        owner = await session.scalar(select(VctOwner.tenant_id).where(VctOwner.vct == ctype.vct))
        if owner is None:  # not the vct's row that was in the way
            raise
    if owner != tenant.id:
        raise _taken(ctx, tenant, ctype)


# -- vcts shared by the platform admin ------------------------------------------------------------

@dataclass(frozen=True)
class SharedVct:
    vct: str
    tenant_slug: str
    owner_slug: str
    created_at: dt.datetime


async def shared_vcts(session: AsyncSession, tenant_id: str) -> list[SharedVct]:
    """The ``vct``s shared with a tenant, with their owners, in the order they were shared."""
    owner = TenantRow.__table__.alias("owner")
    shared = TenantRow.__table__.alias("shared")
    rows = (await session.execute(
        select(VctShare.vct, shared.c.slug, owner.c.slug, VctShare.created_at)
        .join(shared, shared.c.id == VctShare.tenant_id)
        .join(VctOwner, VctOwner.vct == VctShare.vct).join(owner, owner.c.id == VctOwner.tenant_id)
        .where(VctShare.tenant_id == tenant_id).order_by(VctShare.created_at, VctShare.vct))).all()
    return [SharedVct(*row) for row in rows]


async def share_vct(ctx: IssuerContext, session: AsyncSession, tenant: TenantRow, vct: str) -> tuple[SharedVct, bool]:
    """Let ``tenant`` register types under ``vct`` (the platform admin's decision, never a tenant's).

    ``(the share, whether it is new)``. Refused: a ``vct`` nobody registered (``not_found``: a typo
    would otherwise wait for whoever registers it first), one ``tenant`` owns (``conflict``), one on the
    issuer's own origin (``invalid_request``: it is one tenant's type URL, and the registry refuses it
    from any other)."""
    try:
        own_origin = _origin(vct) == _origin(ctx.settings.public_url)
    except ValueError:
        raise RegistryError("invalid_request", "the vct is not a URL: its port is not a valid port number") from None
    if own_origin:
        raise RegistryError("invalid_request", "a vct on this issuer's origin is one tenant's type URL "
                            "(/t/<slug>/types/<id>); a shared type needs a vct of its own, like the built-in types'")
    owner = (await session.execute(select(VctOwner.tenant_id, TenantRow.slug).join(
        TenantRow, TenantRow.id == VctOwner.tenant_id).where(VctOwner.vct == vct))).first()
    if owner is None:
        raise RegistryError("not_found", "no tenant of this issuer registered this vct: the first tenant to "
                            "register it owns it, and it can be shared after that")
    if owner.tenant_id == tenant.id:
        raise RegistryError("conflict", f"tenant {tenant.slug} owns this vct (it registered it first): there is "
                            "nothing to share with it")
    existing = await session.get(VctShare, (vct, tenant.id))
    if existing is not None:
        return SharedVct(vct, tenant.slug, owner.slug, existing.created_at), False
    row = VctShare(vct=vct, tenant_id=tenant.id, created_at=utcnow())
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        # The same share made at the same moment (or the owner gone meanwhile: the foreign key).
        existing = await session.get(VctShare, (vct, tenant.id))
        if existing is None:
            raise RegistryError("not_found", "no tenant of this issuer owns this vct any more") from None
        return SharedVct(vct, tenant.slug, owner.slug, existing.created_at), False
    log.info("vct shared with a tenant", extra={"vct": vct, "tenant_id": tenant.id, "owner_id": owner.tenant_id})
    return SharedVct(vct, tenant.slug, owner.slug, row.created_at), True


async def withdraw_vct(session: AsyncSession, tenant: TenantRow, vct: str) -> None:
    """Stop ``tenant`` registering new types or versions under ``vct``. What it registered stays (its
    stored versions are still served, so credentials issued under them keep their Type Metadata), and
    nothing issued is revoked. ``not_found`` when the ``vct`` was not shared with it."""
    removed = await session.execute(delete(VctShare).where(VctShare.vct == vct, VctShare.tenant_id == tenant.id))
    if not removed.rowcount:
        raise RegistryError("not_found", f"this vct is not shared with tenant {tenant.slug}")
    log.info("vct share withdrawn", extra={"vct": vct, "tenant_id": tenant.id})


def _origin(url: str) -> tuple[str, int | None]:
    """``(host, port)`` as a client would connect: the scheme's default port filled in and a DNS name's
    trailing dot dropped, so ``https://issuer.example.org.:443/`` is the issuer's own origin too (the
    scheme itself is left out: behind its proxy the issuer's http and https are the same server).
    Raises ``ValueError`` for a port that is out of range or not a number."""
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    return (parts.hostname or "").rstrip(".").lower(), port


def _foreign_vct(ctx: IssuerContext, tenant: Tenant, type_id: str, vct: str) -> str | None:
    """Why ``vct`` is refused when it is on the issuer's own origin but not the URL the issuer serves this
    type's metadata at (a tenant must not claim another tenant's URL); ``None`` when acceptable."""
    own = _origin(ctx.settings.public_url)
    try:
        theirs = _origin(vct)
    except ValueError:  # a port out of range or not a number: no URL anyone serves
        return "the vct's port is not a valid port number"
    if theirs != own:
        return None
    parts = urlsplit(vct)
    # The issuer serves /t/<slug>/types/<id> (the newest version of that type): any other path on its
    # origin is another tenant's, another type's, or nothing it serves.
    if unquote(parts.path) == f"/t/{tenant.slug}/types/{type_id}" and not parts.query:
        return None
    return f"a vct on this issuer's origin must be the type's own URL, {ctx.issuer_url(tenant.slug)}/types/{type_id}"


async def tenant_types(ctx: IssuerContext, session: AsyncSession | None, tenant_id: str) -> dict[str, RegisteredType]:
    """The current (newest) version of each of the tenant's types, by type id.

    Without a ``session`` one is opened only when the cache has to be refilled: on the hot paths the
    cache answers, and an unused ORM session still costs more than the lookup.
    """
    cached = ctx.types.get(("tenant", tenant_id))
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]  # type: ignore[no-any-return]
    if session is None:
        async with ctx.db.read_session() as own:
            return await _load_tenant_types(ctx, own, tenant_id)
    return await _load_tenant_types(ctx, session, tenant_id)


async def _load_tenant_types(ctx: IssuerContext, session: AsyncSession, tenant_id: str) -> dict[str, RegisteredType]:
    rows = (await session.execute(select(CredentialTypeRow.id, CredentialTypeRow.type_id, CredentialTypeRow.version)
                                  .where(CredentialTypeRow.tenant_id == tenant_id)
                                  .order_by(CredentialTypeRow.id))).all()
    newest: dict[str, tuple[int, str]] = {}
    for row_id, type_id, version in rows:
        newest[type_id] = (row_id, version)
    out: dict[str, RegisteredType] = {}
    for type_id, (row_id, version) in newest.items():
        ctype = ctx.types.get(row_id)
        if ctype is None:
            definition = (await session.execute(select(CredentialTypeRow.definition)
                                                .where(CredentialTypeRow.id == row_id))).scalar_one()
            ctype = ctx.types.put(row_id, load_stored_type(definition))
        out[type_id] = RegisteredType(row_id, type_id, version, ctype)
    ctx.types.put(("tenant", tenant_id), (time.monotonic(), out))
    return out


async def type_versions(session: AsyncSession, tenant_id: str, type_id: str) -> list[CredentialTypeRow]:
    """Every registered version of a type, oldest first."""
    return list((await session.execute(select(CredentialTypeRow).where(
        CredentialTypeRow.tenant_id == tenant_id, CredentialTypeRow.type_id == type_id)
        .order_by(CredentialTypeRow.id))).scalars().all())


def _aad(tenant_id: str, type_id: str) -> bytes:
    return f"issuer:{tenant_id}:source:{type_id}".encode()


def _check_context(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise RegistryError("invalid_source", "context must be an object with " + ", ".join(CONTEXT_FIELDS))
    missing = [f for f in CONTEXT_FIELDS if not isinstance(value.get(f), str) or not value[f].strip()]
    if missing:
        raise RegistryError("invalid_source", "context lacks " + ", ".join(missing))
    return {f: value[f] for f in CONTEXT_FIELDS}


async def set_source(ctx: IssuerContext, session: AsyncSession, tenant: Tenant, type_id: str,
                     config: dict[str, Any]) -> SourceConfig:
    """Validate (by building the adapter) and store, sealed, the source configuration of a type."""
    if not isinstance(config, dict):
        raise RegistryError("invalid_source", "the source configuration must be an object")
    adapter = {k: v for k, v in config.items() if k != "context"}
    context = _check_context(config.get("context"))
    try:
        build_source(tenant_source_config(adapter, _connections(ctx, tenant.slug), dev_mode=ctx.settings.dev_mode),
                     http=ctx.http)
        SourceContext(**context, requesting_body_id=tenant.body_id or "-", requesting_body_name=tenant.name)
    except SourceConfigError as exc:
        raise RegistryError("invalid_source", exc.detail) from exc
    except Exception as exc:  # noqa: BLE001 - SourceRefused from the context check, any adapter constructor error
        raise RegistryError("invalid_source", "the source configuration is not usable") from exc
    refused = await _refused_destination(ctx, adapter)
    if refused is not None:
        raise RegistryError("invalid_source", refused)
    ctx.sources.put(("current", tenant.id, type_id), (0.0, None))
    sealed = ctx.box.seal(json.dumps({**adapter, "context": context}).encode("utf-8"), _aad(tenant.id, type_id))
    row = await session.get(SourceConfig, (tenant.id, type_id))
    now = utcnow()
    if row is None:
        row = SourceConfig(tenant_id=tenant.id, type_id=type_id, sealed_config=sealed, kind=str(adapter.get("kind")),
                           updated_at=now)
        session.add(row)
    else:
        row.sealed_config, row.kind, row.updated_at = sealed, str(adapter.get("kind")), now
    return row


def _connections(ctx: IssuerContext, slug: str) -> dict[str, str]:
    """The SQL connections the operator opened to tenant ``slug``: name -> URL."""
    return {name: connection.url.get_secret_value() for name, connection in ctx.settings.sql_connections.items()
            if slug in connection.tenants}


async def _refused_destination(ctx: IssuerContext, adapter: dict[str, Any]) -> str | None:
    """Why the source's URL would be refused when called (``service_kit.outbound``), told at once."""
    url = adapter.get("url") if adapter.get("kind") == "rest" else adapter.get("endpoint")
    if not isinstance(url, str):
        return None
    reason = await ctx.settings.outbound_policy().check_url(url)
    return None if reason is None else f"the source's URL cannot be reached: {reason}"


@dataclass(frozen=True)
class ConfiguredSource:
    """A built adapter with its query context."""

    source: DataSource
    context: dict[str, str]
    kind: str


async def get_source(ctx: IssuerContext, session: AsyncSession | None, tenant_id: str,
                     type_id: str) -> ConfiguredSource | None:
    """The built adapter of a type (cached by configuration version), or ``None`` when none is configured.

    Without a ``session`` one is opened only when the configuration has to be read again.
    """
    recent = ctx.sources.get(("current", tenant_id, type_id))
    if recent is not None and recent[1] is not None and time.monotonic() - recent[0] < CACHE_SECONDS:
        return recent[1]  # type: ignore[no-any-return]
    if session is None:
        async with ctx.db.read_session() as own:
            return await _load_source(ctx, own, tenant_id, type_id)
    return await _load_source(ctx, session, tenant_id, type_id)


async def _load_source(ctx: IssuerContext, session: AsyncSession, tenant_id: str, type_id: str) -> ConfiguredSource | None:
    row = await session.get(SourceConfig, (tenant_id, type_id))
    if row is None:
        return None
    cache_key = (tenant_id, type_id, row.updated_at.isoformat())
    cached = ctx.sources.get(cache_key)
    if cached is not None:
        ctx.sources.put(("current", tenant_id, type_id), (time.monotonic(), cached))
        return cached  # type: ignore[no-any-return]
    try:
        config = json.loads(ctx.box.open(row.sealed_config, _aad(tenant_id, type_id)))
    except (SecretBoxError, ValueError):
        return None
    context = config.pop("context")
    # Checked again: a configuration stored before a rule (or a connection's grant) changed obeys it.
    slug = await session.scalar(select(TenantRow.slug).where(TenantRow.id == tenant_id)) if row.kind == "sql" else ""
    try:
        config = tenant_source_config(config, _connections(ctx, slug or ""), dev_mode=ctx.settings.dev_mode)
        # A source without its own timeout gets the issuer's source_timeout (never the adapter's default),
        # as a per-request timeout at most the adapters' MAX_TIMEOUT: source_timeout is a deadline on the
        # whole query, retries included, and may be longer than any one request may take.
        default = min(ctx.settings.source_timeout, MAX_TIMEOUT)
        source = build_source({"timeout": default, **config}, http=ctx.http)
    except SourceConfigError as exc:
        log.warning("stored source configuration refused", extra={"tenant_id": tenant_id, "type_id": type_id,
                                                                    "reason": exc.detail})
        return None
    built = ctx.sources.put(cache_key, ConfiguredSource(source, context, row.kind))
    ctx.sources.put(("current", tenant_id, type_id), (time.monotonic(), built))
    return built
