"""Issuing SD-JWT VCs: query the data source, map the record to claims, sign one copy per holder key.

The source is queried outside any database transaction (it is a network call); the issuance record,
the status indices, the webhook event and the caller's own rows (stored response, deferred
transaction) are then written in one transaction, so a failure at any point records nothing as issued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from credential_schemas import CredentialSchemaError
from service_kit.errors import APIError
from ssi.oid4vci import CREDENTIAL_REQUEST_DENIED
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.status_list import status_claim

from . import audit, statements
from .context import IssuerContext, new_id, utcnow
from .keys import active_key
from .registry import RegisteredType, get_source
from .sources import (
    BadSourceAnswer,
    Claims,
    Evidence,
    Pending,
    SourceConfigError,
    SourceContext,
    SourceError,
    SourceRefused,
    SourceUnavailable,
    Subject,
    SubjectNotFound,
)
from .status import MAX_DRAWS, allocate, current_list, status_list_uri
from .tenancy import TenantRef as Tenant

log = logging.getLogger(__name__)

#: Writes the caller's own row in the issuance transaction (a Core connection: use Core statements).
Finalize = Callable[[AsyncConnection, dict[str, Any]], Awaitable[None]]

#: The credential response member that tells the citizen's wallet why the registry was queried.
#: OpenID4VCI 1.0 (§8.3, and §9.2 for deferred responses) lets a response carry members it does not
#: define, which a wallet that does not know them ignores. Not the bare ``evidence``: that word already
#: names other structures in this field (W3C VC ``evidence``, OpenID Connect for Identity Assurance's
#: ``verified_claims.evidence``), which a future extension of the response could bring along.
QUERY_EVIDENCE = "query_evidence"

#: ``legal_basis`` codes of :data:`QUERY_EVIDENCE`, by SCSP ``Consentimiento`` (stable: wallets key
#: their translations on them).
LEGAL_BASIS = {"Si": "consent", "Ley": "law", "NoOpo": "no_objection"}


def query_evidence(evidence: dict[str, Any]) -> dict[str, Any]:
    """The :data:`QUERY_EVIDENCE` member for an issuance record's ``evidence``: purpose, procedure,
    legal basis, the responsible official's name, the registry and product, when, and the request id.

    Never a claim value (the evidence holds none) nor anything secret. The official's NIF is left out:
    it is a public servant's personal identifier, which the citizen does not need to know who answers
    for the query (their name does, as Ley 39/2015 art. 53.1.b asks), and a wallet's content is
    copied to backups and devices; it stays in the issuance record for the audit. The emitter's
    transmission id is left out too (the emitter's own reference): ``request_id`` is the one the
    issuer's record and the citizen's wallet have in common, for the citizen to cite.
    """
    official = _official_name(evidence.get("official"))
    out: dict[str, Any] = {
        "purpose": evidence.get("purpose"), "procedure": evidence.get("procedure"),
        "legal_basis": LEGAL_BASIS.get(str(evidence.get("consent"))),
        "official": {"name": official} if official else None,
        "source": {k: v for k, v in (("name", evidence.get("source")), ("product", evidence.get("product"))) if v}
        or None,
        "queried_at": evidence.get("timestamp"), "request_id": evidence.get("request_id")}
    return {k: v for k, v in out.items() if v}


def _official_name(official: Any) -> str | None:
    """The name in the evidence's ``official``, which adapters write as ``Name (NIF)``
    (:meth:`issuer.sources.Evidence.build`); a name may hold parentheses of its own, the NIF is last."""
    if not isinstance(official, str) or not official.strip():
        return None
    name, found, rest = official.rstrip().rpartition(" (")
    if found and rest.endswith(")") and name.strip():
        return name.strip()
    return official.strip()


@dataclass(frozen=True)
class Issued:
    """Credentials issued: the credential response body and the record id."""

    body: dict[str, Any]
    record_id: str


@dataclass(frozen=True)
class Deferred:
    """The source answered pending: poll again with ``reference`` after ``retry_after`` seconds."""

    reference: str
    retry_after: int
    request_id: str


#: The :class:`SourceContext` fields a pending query is sent with. Its deferral keeps them
#: (``DeferredTransaction.source_context``, migration 0018) and every poll carries them again: a poll
#: sent under the context the tenant has edited since would refuse the answer as echoing another
#: purpose or official, after the source had delivered it, and forgotten it.
SENT_CONTEXT_FIELDS = ("purpose", "procedure", "consent", "official_name", "official_nif", "requesting_body_id",
                       "requesting_body_name")


def sent_context(context: SourceContext | None) -> dict[str, str] | None:
    """The :data:`SENT_CONTEXT_FIELDS` of ``context``, to keep with a deferral (``None`` without one)."""
    if context is None:
        return None
    return {name: getattr(context, name) for name in SENT_CONTEXT_FIELDS}


class FinalSourceAnswer(APIError):
    """The data source's answer is final: it refused the query, holds no record for the subject, or
    answered something that cannot be used. Asking again cannot help; for the poll of a pending query,
    the query will never complete (the source has delivered its answer, and forgotten it)."""


def _record_aad(transaction_hash: str) -> bytes:
    return f"issuer:deferred-record:{transaction_hash}".encode()


def seal_polled_record(ctx: IssuerContext, transaction_hash: str, answer: Claims) -> bytes:
    """The record (and its query's evidence) a poll of a pending query heard, sealed for
    ``DeferredTransaction.sealed_record`` and bound to that transaction: kept before anything else can
    fail, since the source has delivered it once and will not again. The deferred credential
    endpoint and the Aries channel both keep it so."""
    return ctx.box.seal(json.dumps({"record": answer.record, "evidence": answer.evidence.as_dict()})
                        .encode("utf-8"), _record_aad(transaction_hash))


def open_polled_record(ctx: IssuerContext, transaction_hash: str, sealed: bytes) -> Claims:
    """The record :func:`seal_polled_record` kept on the transaction ``transaction_hash``."""
    kept = json.loads(ctx.box.open(sealed, _record_aad(transaction_hash)))
    return Claims(record=kept["record"], evidence=Evidence(**kept["evidence"]))


def subject_from_json(data: dict[str, Any]) -> Subject:
    """A :class:`Subject` from its stored JSON form."""
    return Subject(identifier=str(data["identifier"]), identifier_type=str(data.get("identifier_type") or "NIF"),
                   name=str(data.get("name") or ""), birth_date=data.get("birth_date") or None)


def subject_to_json(subject: Subject) -> dict[str, Any]:
    return {"identifier": subject.identifier, "identifier_type": subject.identifier_type, "name": subject.name,
            "birth_date": subject.birth_date}


async def fetch_record(ctx: IssuerContext, tenant: Tenant, reg: RegisteredType, subject: Subject, *,
                       selector: str | None, request_id: str | None, poll_reference: str | None = None,
                       sent: Mapping[str, Any] | None = None) -> Claims | Pending:
    """Query (or poll) the type's data source; map its failures to protocol errors.

    A :class:`Pending` answer carries the context the query was sent under (``context``; keep
    :func:`sent_context` of it); a poll given that as ``sent`` is sent under it again, whatever the
    tenant's context is now (without it, under the current one). A final answer (refused, no record,
    unusable) raises :class:`FinalSourceAnswer`.
    """
    configured = await get_source(ctx, None, tenant.id, reg.type_id)
    if configured is None:
        raise APIError(400, CREDENTIAL_REQUEST_DENIED, "no data source is configured for this credential type")
    try:
        fields = ({name: sent.get(name) for name in SENT_CONTEXT_FIELDS} if sent is not None else
                  {**configured.context, "requesting_body_id": tenant.body_id or tenant.slug,
                   "requesting_body_name": tenant.name})
        context = SourceContext(**fields, selector=selector, **({"request_id": request_id} if request_id else {}))
        if poll_reference is not None:
            call = configured.source.poll(poll_reference, reg.ctype, subject, context)
        else:
            call = configured.source.fetch(reg.ctype, subject, context)
        async with asyncio.timeout(ctx.settings.source_timeout):  # no extra task, unlike wait_for
            answer = await call
        _count_source(ctx, tenant, reg, "pending" if isinstance(answer, Pending) else "ok")
        if isinstance(answer, Pending):
            answer = dataclasses.replace(answer, context=context)
        return answer
    except (SourceUnavailable, TimeoutError) as exc:
        _count_failure(ctx, tenant, reg, "unavailable")
        retry = getattr(exc, "retry_after", None) or 30
        log.warning("data source unavailable", extra={"type_id": reg.type_id, "tenant": tenant.slug})
        raise APIError(503, "temporarily_unavailable", "the data source is unavailable; try again later",
                       {"Retry-After": str(retry)}) from exc
    except SubjectNotFound as exc:
        _count_failure(ctx, tenant, reg, "not_found")
        raise FinalSourceAnswer(400, CREDENTIAL_REQUEST_DENIED, "the registry holds no record for this subject") from exc
    except SourceRefused as exc:
        _count_failure(ctx, tenant, reg, "refused")
        raise FinalSourceAnswer(400, CREDENTIAL_REQUEST_DENIED, "the data source refused the query") from exc
    except SourceConfigError as exc:
        # The source's configuration must change (its URL leads where the outbound policy refuses to
        # connect): no Retry-After, since asking again cannot help; the tenant's operator must act.
        _count_failure(ctx, tenant, reg, "misconfigured")
        log.warning("data source misconfigured", extra={"type_id": reg.type_id, "tenant": tenant.slug,
                                                        "code": exc.code})
        raise APIError(502, "server_error", "the data source is misconfigured; retrying will not help") from exc
    except (BadSourceAnswer, SourceError) as exc:
        _count_failure(ctx, tenant, reg, "bad_answer")
        log.warning("data source answer refused", extra={"type_id": reg.type_id, "code": exc.code})
        raise FinalSourceAnswer(502, "server_error", "the data source's answer could not be used") from exc


def _count_failure(ctx: IssuerContext, tenant: Tenant, reg: RegisteredType, outcome: str) -> None:
    if ctx.source_failures is not None:
        ctx.source_failures.labels(tenant.slug, reg.type_id, outcome).inc()
    _count_source(ctx, tenant, reg, outcome)


def _count_source(ctx: IssuerContext, tenant: Tenant, reg: RegisteredType, outcome: str) -> None:
    if ctx.source_calls is not None:
        ctx.source_calls.labels(tenant.slug, reg.type_id, outcome).inc()


def _event(event_type: str, tenant: Tenant, record_id: str, type_id: str) -> bytes:
    return json.dumps({"id": new_id("evt_"), "type": event_type, "tenant": tenant.slug, "credential_id": record_id,
                       "credential_type": type_id, "created_at": utcnow().isoformat()}).encode("utf-8")


async def enqueue_event(conn: AsyncSession | AsyncConnection, tenant: Tenant, event_type: str, record_id: str,
                        type_id: str) -> None:
    """Write a webhook event for every endpoint of the tenant subscribed to it (same transaction).

    ``conn`` is an ORM session or a Core connection in the caller's transaction.
    """
    endpoints = (await conn.execute(statements.TENANT_WEBHOOKS, {"tenant_id": tenant.id})).all()
    now = utcnow()
    rows = [{"id": new_id("wh_"), "endpoint_id": endpoint_id, "event_type": event_type,
             "body": _event(event_type, tenant, record_id, type_id), "attempts": 0, "created_at": now,
             "next_attempt_at": now, "tenant_id": tenant.id}
            for endpoint_id, events in endpoints if not events or event_type in events]
    if rows:
        await conn.execute(statements.INSERT_OUTBOX, rows)


async def sign_and_record(ctx: IssuerContext, tenant: Tenant, reg: RegisteredType, claims_outcome: Claims,
                          subject: Subject, holder_jwks: list[dict[str, Any]], *, credential_id: str,
                          login: dict[str, Any], offer_id: str | None, finalize: Finalize | None = None,
                          webhooks: bool = True,
                          stored_row: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Issued:
    """Map, sign one credential per holder key, and record everything in one transaction.

    ``webhooks=False`` (the caller read, during this request, that the tenant has no webhook
    endpoint) skips the outbox query. ``stored_row`` (the ``stored_responses`` row ``finalize``
    writes) lets a single-copy issuance without webhooks on PostgreSQL write everything in one
    statement (:func:`_record_in_one_statement`).
    """
    now = utcnow()
    try:
        claims = reg.ctype.map_claims(claims_outcome.record, now=now)
        expires = reg.ctype.expires_at(now)
    except CredentialSchemaError as exc:
        log.warning("source record does not fit the type", extra={"type_id": reg.type_id, "code": exc.code})
        raise APIError(502, "server_error", "the data source's record does not fit the credential type") from exc
    except (ValueError, OverflowError, TypeError) as exc:
        # A type stored before the validator refused what produces these (an overflowing duration,
        # overlapping mappings): still the tenant's data problem, answered as one, never a 500.
        log.warning("source record does not fit the type", extra={"type_id": reg.type_id,
                                                                    "code": type(exc).__name__})
        raise APIError(502, "server_error", "the data source's record does not fit the credential type") from exc
    iat = int(now.timestamp())
    exp = int(expires.timestamp())
    issuer = ctx.issuer_url(tenant.slug)
    integrity = reg.integrity
    disclosable = reg.disclosable
    notification_id = new_id("n_", 16)
    signer = ctx.keys.get(("active", tenant.id))
    if signer is None:
        async with ctx.db.read_session() as session:
            signer = await active_key(ctx, session, tenant.id)
    if signer is None:
        raise APIError(503, "temporarily_unavailable", "the issuer has no signing key yet", {"Retry-After": "60"})
    if signer.not_after < expires:
        # A credential must not outlive its x5c chain: verifiers check the chain when it is presented.
        expires = signer.not_after
        exp = int(expires.timestamp())
    record = {
        "id": credential_id, "tenant_id": tenant.id, "type_id": reg.type_id, "type_version": reg.version,
        "vct": reg.ctype.vct, "subject_identifier": subject.identifier, "status": "valid",
        "copies": len(holder_jwks), "signing_kid": signer.key.kid or "",
        "evidence": claims_outcome.evidence.as_dict(), "login": login, "notification_id": notification_id,
        "notifications": [], "offer_id": offer_id, "issued_at": now, "valid_until": expires, "status_changed_at": None}

    told = query_evidence(record["evidence"])

    def sign(slots: list[tuple[str, int]]) -> dict[str, Any]:
        credentials = []
        for jwk, (list_id, idx) in zip(holder_jwks, slots, strict=True):
            credentials.append({"credential": issue_sd_jwt_vc(
                claims, vct=reg.ctype.vct, issuer=issuer, key=signer.key, holder_jwk=jwk, disclosable=disclosable,
                x5c=signer.x5c, kid=signer.key.kid, status=status_claim(idx, status_list_uri(ctx, tenant.slug, list_id)),
                iat=iat, nbf=iat, exp=exp, vct_integrity=integrity)})
        # The same body is returned, stored for an identical retry and sealed for deferred polls, so
        # each of them carries the evidence.
        body = {"credentials": credentials, "notification_id": notification_id}
        if told:
            body[QUERY_EVIDENCE] = told
        return body

    if stored_row is not None and not webhooks and len(holder_jwks) == 1 and ctx.db.backend == "postgresql":
        done = await _record_in_one_statement(ctx, tenant, record, sign, stored_row)
        if done is not None:
            body, seq = done
            await audit.checkpoint_if_due(ctx, tenant.id, seq, signer=signer.key, issuer=issuer)
            return _issued(ctx, tenant, reg, record, body)
    # Prebuilt Core statements in one transaction (issuer.statements): record, status indices, webhook
    # events, the caller's own row and the record's audit chain entry commit together or not at all.
    # The chain entry comes last: its head-row lock serialises the tenant's issuances until COMMIT, so
    # it is taken when nothing but the COMMIT is left. (The chain append cannot join a single
    # INSERT ... CTE statement, which is why issuance is a short transaction and not one statement.)
    async with ctx.write_connection() as conn:
        await conn.execute(statements.INSERT_RECORD, record)
        body = sign(await allocate(ctx, conn, tenant.id, credential_id, len(holder_jwks)))
        if webhooks:
            await enqueue_event(conn, tenant, "credential.issued", credential_id, reg.type_id)
        if finalize is not None:
            await finalize(conn, body)
        await audit.record_issuance(conn, record, signer=signer.key, issuer=issuer)
    return _issued(ctx, tenant, reg, record, body)


def _issued(ctx: IssuerContext, tenant: Tenant, reg: RegisteredType, record: dict[str, Any],
            body: dict[str, Any]) -> Issued:
    if ctx.issued_counter is not None:
        ctx.issued_counter.labels(tenant.slug, reg.type_id).inc(record["copies"])
    log.info("credential issued", extra={"credential_id": record["id"], "type_id": reg.type_id,
                                         "copies": record["copies"], "tenant": tenant.slug})
    return Issued(body=body, record_id=record["id"])


async def _record_in_one_statement(ctx: IssuerContext, tenant: Tenant, record: dict[str, Any],
                                   sign: Callable[[list[tuple[str, int]]], dict[str, Any]],
                                   stored_row: Callable[[dict[str, Any]], dict[str, Any]],
                                   ) -> tuple[dict[str, Any], int] | None:
    """Sign and write a single-copy issuance with ``statements.PG_ISSUE_ONE_COPY``: the record, its
    status index, the stored response and the audit chain entry in one round trip instead of a
    seven-statement transaction (and the chain head stays locked for one statement, not until a
    COMMIT). Returns the response body and the chain entry's ``seq``; ``None`` when random draws keep
    hitting taken indices, so that the transaction path (which marks a list full) takes over."""
    base = {f"r_{name}": record[name] for name in statements.RECORD_COLUMNS}
    base["b_record_id"] = record["id"]
    base.update(audit.issued_entry_parameters(record))
    async with ctx.single_statement() as conn:
        list_id, size = await current_list(ctx, conn, tenant.id)
        for _ in range(MAX_DRAWS):
            idx = secrets.randbelow(size)
            body = sign([(list_id, idx)])
            params = {**base, "b_list_id": list_id, "b_idx": idx}
            params.update({f"s_{name}": value for name, value in stored_row(body).items()})
            row = (await conn.execute(statements.PG_ISSUE_ONE_COPY, params)).first()
            if not row.chained:
                await audit.create_chain(conn, tenant.id)  # the tenant's first issuance; nothing was written
                continue
            if row.took:
                return body, int(row.seq)
    return None
