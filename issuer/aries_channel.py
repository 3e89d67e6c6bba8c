"""The issuer's Aries channel: invitations for a subject, issue-credential 2.0 over DIDComm, W3C status lists.

Flow (docs/aries.md):

1. An operator creates an invitation for a subject and a type (admin API). The issuer asks its agent
   for an out-of-band invitation (``create_unique_did=true``, ``did:peer:2``) and stores the exchange;
   the QR code carries a short URL served by the issuer that answers with the invitation. Agent down:
   HTTP 503, nothing stored.
2. The wallet connects; the agent's ``connections`` webhook (authenticated, processed once per event
   key, the exchange claimed by a conditional ``UPDATE``; lost, the sweep finds the connection after
   :data:`INVITED_CHECK_AFTER`) makes the issuer query the type's data source
   (the same adapter and mapping as OpenID4VCI), write the shared issuance record with a status index
   of the tenant's status list, build the W3C VC (:func:`aries.jsonld.build_credential`) with a
   ``BitstringStatusListEntry`` and offer it (``ld_proof``, the suite configured for the type).
   A source that answers *pending* keeps the connection and the exchange (``pending``, its source
   reference and the query context it was sent under in a :class:`~issuer.models.DeferredTransaction`);
   a sweep in every worker polls the source on the deferred flow's schedule, under that context, and
   offers the credential when the data arrive. The record a poll hears is kept, sealed, on the deferral
   until the offer is out: the source delivers it once, and a poll whose offer failed offers from it.
3. The holder's request (``request-received``) is answered only when it follows one of our offers:
   the agent does not issue on its own (no ``--auto-respond-credential-request``), because ACA-Py
   accepts a request that answers no offer and would sign whatever credential it describes, under any
   DID of its wallet. A request matching an offer is checked against it by ACA-Py (``ld_proof``:
   request detail == offer detail) and then issued here; any other is left unanswered.
4. ``issue_credential_v2_0`` webhooks finish the exchange: ``credential-issued``/``done`` emit the
   ``credential.issued`` event; ``abandoned`` removes the issuance record (nothing recorded as issued)
   unless the credential had left already. A sweep reads the agent's record of exchanges ``offered``
   for longer than :data:`OFFERED_CHECK_AFTER`, so a lost webhook leaves nothing stuck; an offer the
   holder leaves unanswered for ``aries_offer_ttl`` is withdrawn (``abandoned``, record removed).

Revocation uses the shared status list (:mod:`issuer.status`): the W3C list served for the Aries
credentials is derived from the same entries, so revoking through the admin API flips both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from sqlalchemy import delete, select, update

from aries import channel, cleanup, webhooks
from aries.client import BBS, ED25519, AdminClient
from aries.errors import AgentRequestFailed, AgentUnavailable, AriesError, WebhookRefused, transient
from aries.jsonld import (
    BBS_V1,
    ED25519_2020,
    build_credential,
    contexts_document,
    status_context_url,
    status_entry,
)
from aries.service import (
    AgentRuntime,
    agent_client,
    loopback_base,
    start_runtime,
    unavailable_error,
    webhook_key_hash,
)
from aries.status import MIN_ENTRIES, set_bit, sign_list, status_list_credential
from aries.storage import replace_webhook_keys
from credential_schemas import CredentialSchemaError
from service_kit.crypto import load_master_key
from service_kit.db import dialect_insert
from service_kit.errors import APIError
from ssi import status_list as sl
from ssi.qr import qr_png, qr_svg

from . import audit
from .aries_models import AriesExchange, AriesTenantDid, AriesWebhookEvent, AriesWebhookKey
from .context import BoundedCache, IssuerContext, new_id, secret_hash, utcnow
from .issuance import (
    FinalSourceAnswer,
    enqueue_event,
    fetch_record,
    open_polled_record,
    seal_polled_record,
    sent_context,
    subject_from_json,
)
from .models import DeferredTransaction, IssuanceRecord, StatusEntry, StatusList, Tenant
from .registry import RegisteredType, get_source, tenant_types
from .sources import Claims, Pending
from .status import allocate
from .tenancy import TenantRef

log = logging.getLogger(__name__)

SUITES = {"bbs": BBS, "ed25519": ED25519}
SUITE_NAMES = {v: k for k, v in SUITES.items()}
SUITE_CONTEXTS = {BBS: BBS_V1, ED25519: ED25519_2020}
ISSUED_STATES = ("credential-issued", "done")
#: Our exchange states after which the agent's record serves nothing.
SETTLED_STATES = ("issued", "failed", "abandoned")
#: How long a source may keep an Aries issuance pending (as an OpenID4VCI deferred transaction lives).
DEFERRED_TTL = dt.timedelta(days=30)
#: A poll in progress moves the exchange's next poll this far ahead, so that other workers skip it (the
#: default of the ``aries_poll_lease`` setting; renewed while the poll runs).
POLL_LEASE = dt.timedelta(seconds=60)
#: Seconds between two sweeps for due deferred exchanges and stalled offers (each a cheap indexed query).
SWEEP_EVERY = 1.0
#: Added to the longest an offering attempt can take before the sweep takes its exchange over.
OFFER_GRACE = dt.timedelta(seconds=120)
#: An exchange ``offered`` this long without news has its agent record read by the sweep (the webhook
#: that should have moved it on may be lost: ACA-Py's delivery queue lives in memory); then again after
#: as long, and so on.
OFFERED_CHECK_AFTER = dt.timedelta(minutes=2)
#: An invitation this long ``invited`` has the agent asked for its connection (the ``connections``
#: webhook may be lost: ACA-Py's delivery queue lives in memory); then again after as long, until it expires.
INVITED_CHECK_AFTER = dt.timedelta(minutes=2)
#: How long a holder's request waits for the offer's record id to be stored before it is taken for a
#: request that answers no offer of ours (the agent can deliver it before ``send-offer`` answered).
REQUEST_MATCH_WAIT = 5.0
#: ``token_hash`` of an Aries deferral: no access token polls it (a SHA-256 hex digest never equals this).
NO_TOKEN = "aries"  # noqa: S105 - a marker, not a secret


def _surely_unsent(exc: BaseException) -> bool:
    """Whether an offer call that failed with ``exc`` certainly sent nothing: it could not connect, or
    the agent answered with an error status (ACA-Py answers once its handler has run, and a failing
    handler stops before or instead of sending). A lost answer, or a success we cannot read: the offer
    may be out."""
    if isinstance(exc, AgentUnavailable):
        return not exc.maybe_done
    return isinstance(exc, AgentRequestFailed) and exc.status >= 400


class _Unsettled(Exception):  # noqa: N818 - a control-flow signal, not an error shown to anyone
    """An offering attempt stopped where an offer may be out or a record could not be withdrawn.

    The exchange is left as it is (``offering`` or ``pending``): after its lease, the sweep finds out
    from the record and the agent what happened, and adopts the offer or withdraws the record.
    """


class _LeaseLost(Exception):  # noqa: N818 - a control-flow signal, not an error shown to anyone
    """A deferred poll found, right before offering, that its exchange's lease is no longer its own:
    another worker polls the exchange now, and only that one may offer."""


@dataclass
class _Lease:
    """A deferred poll's hold on its exchange: the ``expires_at`` it last wrote (its conditional writes
    compare it), how far each renewal moves it, and whether it was found taken. ``lock`` serialises
    the renewals (:meth:`IssuerAriesChannel._keep_lease`) with the poll's own writes under the lease."""

    exchange_id: str
    until: dt.datetime
    span: dt.timedelta
    lost: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def deferred_key(exchange_id: str) -> str:
    """Primary key of the :class:`DeferredTransaction` that keeps an Aries exchange's source reference."""
    return f"aries:{exchange_id}"


@dataclass(frozen=True)
class CreatedInvitation:
    """What the admin API answers for a new invitation (the short URL's code appears here only)."""

    exchange_id: str
    invitation_url: str
    short_url: str
    proof_type: str
    expires_at: dt.datetime
    qr_png: bytes
    qr_svg: str




def _credential_left(record: Mapping[str, Any]) -> bool:
    """Whether an agent exchange record (or its webhook payload, which carries ``by_format`` only)
    holds the issued credential."""
    by_format = record.get("by_format")
    return bool(record.get("cred_issue") or (isinstance(by_format, Mapping) and by_format.get("cred_issue")))


def _tenant_ref(row: Tenant) -> TenantRef:
    return TenantRef(row.id, row.slug, row.name, row.body_id, list(row.display or []))


def w3c_bits(data: bytes, bits: int, size: int) -> bytes:
    """The W3C bitstring (MSB first, at least 131,072 entries) of a Token Status List's entries.

    A bit is set while the entry is not valid (revoked, or suspended until reinstated).
    """
    entries = sl.StatusList._from_bytes(data, bits)
    out = bytearray(max(size, MIN_ENTRIES) // 8 + (1 if max(size, MIN_ENTRIES) % 8 else 0))
    raw = bytes(data)
    per_byte = 8 // bits
    for byte_index, byte in enumerate(raw):
        if not byte:
            continue  # all entries of this byte valid: the common case, skipped cheaply
        first = byte_index * per_byte
        for idx in range(first, min(first + per_byte, size)):
            if entries.get(idx) != sl.VALID:
                set_bit(out, idx, True)
    return bytes(out)


def _agent_time(record: dict[str, Any]) -> dt.datetime | None:
    """When the agent last changed ``record`` (ACA-Py's ``updated_at``, ISO 8601 in UTC), or None when it
    does not say in a form we read (callers then take the present, the later and stricter time)."""
    value = record.get("updated_at")
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class IssuerAriesChannel:
    """Per-app state of the channel: the agent runtime and caches that are safe to lose."""

    def __init__(self, ctx: IssuerContext) -> None:
        self.ctx = ctx
        self.runtime: AgentRuntime | None = None
        self._dids: BoundedCache[str] = BoundedCache(256)
        self._lists: BoundedCache[dict[str, Any]] = BoundedCache(64)

    @property
    def enabled(self) -> bool:
        return self.ctx.settings.aries_enabled

    # -- life cycle ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        """Start (or connect to) the agent after the migrations; stop it at shutdown."""
        if not self.enabled:
            yield
            return
        settings = self.ctx.settings
        configured_key = settings.aries_webhook_key.get_secret_value() if settings.aries_webhook_key else None
        admin_key = settings.aries_admin_api_key.get_secret_value() if settings.aries_admin_api_key else None
        local = loopback_base(settings.host, settings.port)
        self.runtime = await start_runtime(
            name="cartera-issuer", label="Cartera issuer", admin_url=settings.aries_admin_url,
            admin_api_key=admin_key, webhook_key=configured_key, data_dir=settings.data_dir / "aries-issuer",
            inbound_port=settings.aries_inbound_port, admin_port=settings.aries_admin_port,
            endpoint=settings.aries_endpoint, webhook_url=f"{local}/v1/aries/webhooks",
            master_key=load_master_key(settings), contexts=await self._contexts(),
            extra_args=["--auto-accept-requests"],
            admin_timeout=settings.aries_admin_timeout)
        sweep: asyncio.Task[None] | None = None
        record_cleanup: asyncio.Task[None] | None = None
        try:
            if self.runtime.webhook_key:
                await self._store_webhook_key(self.runtime.webhook_key)
            sweep = asyncio.create_task(self._poll_loop(), name="aries-deferred-sweep")
            # On its own: a long cleanup (an agent holding months of records) must not hold up polls.
            record_cleanup = asyncio.create_task(cleanup.run_periodically(self.remove_settled_records),
                                                 name="aries-record-cleanup")
            yield
        finally:
            for task in (t for t in (sweep, record_cleanup) if t is not None):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.runtime.stop()
            self.runtime = None

    async def _contexts(self) -> dict[str, Any]:
        """Contexts of every registered type of every tenant (the agent pre-caches them)."""
        documents: dict[str, Any] = {}
        async with self.ctx.db.read_session() as session:
            for row in (await session.execute(select(Tenant))).scalars():
                types = [reg.ctype for reg in (await tenant_types(self.ctx, session, row.id)).values()]
                documents.update(contexts_document(types, self.ctx.issuer_url(row.slug)))
        return documents

    async def _store_webhook_key(self, key: str) -> None:
        async with self.ctx.session() as session:
            await replace_webhook_keys(session, AriesWebhookKey, webhook_key_hash(key), utcnow())

    def agent(self) -> AdminClient:
        """The admin client, or 404 (channel off) / 503 (agent gone)."""
        return agent_client(self.runtime, enabled=self.enabled, owner="issuer")

    # -- DIDs ---------------------------------------------------------------------------------------

    async def tenant_did(self, tenant_id: str, proof_type: str) -> str:
        """The tenant's did:key for ``proof_type``, created in the agent's wallet on first use."""
        cached = self._dids.get((tenant_id, proof_type))
        if cached is not None:
            return cached
        async with self.ctx.db.read_session() as session:
            did = (await session.execute(select(AriesTenantDid.did).where(
                AriesTenantDid.tenant_id == tenant_id, AriesTenantDid.proof_type == proof_type))).scalar_one_or_none()
        if did is None:
            created = await self.agent().create_did_key(proof_type)
            async with self.ctx.session() as session:
                await session.execute(dialect_insert(session, AriesTenantDid).values(
                    tenant_id=tenant_id, proof_type=proof_type, did=created, created_at=utcnow()
                ).on_conflict_do_nothing())
            async with self.ctx.db.read_session() as session:
                # Another worker may have won the insert: its DID is the tenant's.
                did = (await session.execute(select(AriesTenantDid.did).where(
                    AriesTenantDid.tenant_id == tenant_id, AriesTenantDid.proof_type == proof_type))).scalar_one()
        return self._dids.put((tenant_id, proof_type), did)

    async def published_dids(self, tenant_id: str) -> dict[str, str]:
        """``{suite: did}`` of the tenant (what verifiers trust for its https identifier)."""
        async with self.ctx.db.read_session() as session:
            rows = (await session.execute(select(AriesTenantDid.proof_type, AriesTenantDid.did).where(
                AriesTenantDid.tenant_id == tenant_id))).all()
        return {proof_type: did for proof_type, did in rows}

    def proof_type(self, type_id: str) -> str:
        return self.ctx.settings.aries_proof_types.get(type_id, ED25519)

    # -- invitations --------------------------------------------------------------------------------

    async def create_invitation(self, tenant: TenantRef, type_id: str, subject: dict[str, Any],
                                selector: str | None) -> CreatedInvitation:
        """An invitation bound to ``subject`` for a credential of ``type_id`` (nothing stored if the agent fails)."""
        agent = self.agent()
        async with self.ctx.db.read_session() as session:
            reg = (await tenant_types(self.ctx, session, tenant.id)).get(type_id)
            source = await get_source(self.ctx, session, tenant.id, type_id) if reg is not None else None
        if reg is None:
            raise APIError(400, "invalid_request", "unknown credential type")
        if source is None:
            raise APIError(400, "invalid_request", "no data source is configured for this credential type")
        proof_type = self.proof_type(type_id)
        exchange_id = new_id("ax_", 12)
        code = secrets.token_urlsafe(16)
        try:
            await self.tenant_did(tenant.id, proof_type)
            invitation = await channel.invite(agent, alias=exchange_id, label=tenant.name)
        except AriesError as exc:
            raise unavailable_error(exc) from exc
        now = utcnow()
        expires = now + dt.timedelta(seconds=self.ctx.settings.aries_invitation_ttl)
        async with self.ctx.session() as session:
            session.add(AriesExchange(
                id=exchange_id, tenant_id=tenant.id, type_id=type_id, proof_type=proof_type, subject=subject,
                selector=selector, short_code_hash=secret_hash(code), invitation_msg_id=invitation.invi_msg_id,
                invitation=invitation.invitation, invitation_url=invitation.invitation_url, state="invited",
                created_at=now, expires_at=expires, updated_at=now))
        short_url = f"{self.ctx.issuer_url(tenant.slug)}/v1/aries/i/{code}"
        png, svg = await asyncio.gather(asyncio.to_thread(qr_png, short_url), asyncio.to_thread(qr_svg, short_url))
        # The worker's pid: with several workers sharing one agent, operators see which one acted.
        log.info("aries invitation created", extra={"exchange_id": exchange_id, "type_id": type_id,
                                                    "tenant": tenant.slug, "worker_pid": os.getpid()})
        return CreatedInvitation(exchange_id, invitation.invitation_url, short_url, proof_type, expires, png, svg)

    async def invitation_for_code(self, tenant: TenantRef, code: str) -> AriesExchange | None:
        """The unexpired, unanswered exchange whose short URL carries ``code``."""
        if not code or len(code) > 100:
            return None
        async with self.ctx.db.read_session() as session:
            return (await session.execute(select(AriesExchange).where(
                AriesExchange.short_code_hash == secret_hash(code), AriesExchange.tenant_id == tenant.id,
                AriesExchange.state == "invited", AriesExchange.expires_at > utcnow()))).scalar_one_or_none()

    async def exchange(self, tenant: TenantRef, exchange_id: str) -> AriesExchange | None:
        """One of the tenant's exchanges."""
        async with self.ctx.db.read_session() as session:
            return (await session.execute(select(AriesExchange).where(
                AriesExchange.id == exchange_id, AriesExchange.tenant_id == tenant.id))).scalar_one_or_none()

    # -- webhooks -----------------------------------------------------------------------------------

    async def authenticate(self, headers: Mapping[str, str]) -> None:
        """Refuse a delivery whose ``x-api-key`` hash is not one of ours (:class:`WebhookRefused`)."""
        given = headers.get("x-api-key") or ""
        if given and len(given) <= 200:
            async with self.ctx.db.read_session() as session:
                found = await session.get(AriesWebhookKey, webhook_key_hash(given))
            if found is not None:
                return
        raise WebhookRefused("webhook_unauthorized", "webhook without the right x-api-key")

    async def receive(self, headers: Mapping[str, str], topic: str, body: bytes) -> str:
        """Authenticate, parse and process one delivery once; returns ``processed``, ``duplicate`` or ``ignored``."""
        await self.authenticate(headers)
        event = webhooks.parse(topic, body)
        relevant = (topic == "connections" and event.state in ("active", "completed")) or (
            topic == "issue_credential_v2_0" and event.state in ("request-received", *ISSUED_STATES, "abandoned"))
        if not relevant:
            return "ignored"
        if not await self._first_delivery(event.stored_key):
            return "duplicate"
        try:
            if topic == "connections":
                await self._on_connection(event)
            else:
                await self._on_credential(event)
        except Exception:
            # Let ACA-Py deliver again: forget the key so the re-delivery is processed.
            async with self.ctx.session() as session:
                await session.execute(delete(AriesWebhookEvent).where(AriesWebhookEvent.key == event.stored_key))
            raise
        return "processed"

    async def _first_delivery(self, key: str) -> bool:
        async with self.ctx.session() as session:
            stmt = (dialect_insert(session, AriesWebhookEvent).values(key=key, received_at=utcnow())
                    .on_conflict_do_nothing().returning(AriesWebhookEvent.key))
            return (await session.execute(stmt)).scalar_one_or_none() is not None

    async def _on_connection(self, event: webhooks.WebhookEvent) -> None:
        await self._connected(str(event.payload.get("invitation_msg_id") or ""), event.record_id)

    async def _connected(self, invitation_msg_id: str, connection_id: str) -> None:
        """The wallet's connection through an invitation is active: claim its exchange once and offer."""
        if not invitation_msg_id or not connection_id:
            return
        # The credential id is reserved with the claim: should this attempt stop half-way, the sweep
        # that takes the exchange over finds by this id whether a record was committed.
        async with self.ctx.session() as session:
            claimed = (await session.execute(
                update(AriesExchange).where(AriesExchange.invitation_msg_id == invitation_msg_id,
                                            AriesExchange.state == "invited", AriesExchange.expires_at > utcnow())
                .values(state="offering", connection_id=connection_id, credential_id=new_id("c_", 12),
                        updated_at=utcnow())
                .returning(AriesExchange.id))).scalar_one_or_none()
        if claimed is None:
            return
        await self._attempt(claimed, self._offer(claimed))

    async def _attempt(self, exchange_id: str, work: Awaitable[None]) -> None:
        """Run one offering attempt of an ``offering`` exchange; never leave it stranded there.

        A typed failure (source, agent, claims) fails the exchange with its code; any other exception
        fails it with ``internal_error``: by then nothing is left recorded (a record committed before the
        failure is withdrawn) and no offer went out. Not given back to ``invited`` for a re-delivery: that
        would query the citizen's registry again and again for the same bug, and leave the exchange
        stranded there once the agent gives up re-delivering. When an offer may be out, or a record could
        not be withdrawn (:class:`_Unsettled`), the exchange stays ``offering``: :meth:`resume_stalled`
        settles it after the lease without offering twice.
        """
        try:
            await work
        except _Unsettled as exc:
            log.error("aries offer left to the sweep", extra={"exchange_id": exchange_id, "reason": str(exc),
                                                              "error": type(exc.__cause__).__name__})
        except (APIError, AriesError, CredentialSchemaError) as exc:
            code = exc.code if isinstance(exc, AriesError | CredentialSchemaError) else exc.error
            log.warning("aries offer failed", extra={"exchange_id": exchange_id, "code": code})
            await self._fail_offering(exchange_id, str(code)[:100])
        except Exception as exc:  # noqa: BLE001 - recorded as the exchange's failure, not swallowed silently
            # The type only: a database error's text may carry statement parameters (a subject).
            log.error("aries offer failed unexpectedly", extra={"exchange_id": exchange_id,
                                                                "error": type(exc).__name__})
            await self._fail_offering(exchange_id, "internal_error")

    async def _fail_offering(self, exchange_id: str, code: str) -> None:
        # Only while still offering (a takeover may have finished it); its reserved id named no record.
        async with self.ctx.session() as session:
            await session.execute(update(AriesExchange).where(
                AriesExchange.id == exchange_id, AriesExchange.state == "offering").values(
                state="failed", error=code, credential_id=None, updated_at=utcnow()))

    async def _offer(self, exchange_id: str) -> None:
        """Query the source; offer the credential, or keep the exchange ``pending`` when the source defers."""
        ex, tenant, reg = await self._load(exchange_id)
        await self._query_and_offer(ex, tenant, reg, str(ex.credential_id))

    async def _query_and_offer(self, ex: AriesExchange, tenant: TenantRef, reg: RegisteredType,
                               credential_id: str) -> None:
        subject = subject_from_json(ex.subject)
        answer = await fetch_record(self.ctx, tenant, reg, subject, selector=ex.selector, request_id=None)
        if isinstance(answer, Pending):
            await self._defer(ex, answer, credential_id)
            return
        await self._record_and_offer(ex, tenant, reg, answer, credential_id=credential_id)

    async def _load(self, exchange_id: str) -> tuple[AriesExchange, TenantRef, RegisteredType]:
        async with self.ctx.db.read_session() as session:
            ex = (await session.execute(select(AriesExchange).where(AriesExchange.id == exchange_id))).scalar_one()
            tenant = _tenant_ref((await session.execute(select(Tenant).where(Tenant.id == ex.tenant_id))).scalar_one())
            reg = (await tenant_types(self.ctx, session, tenant.id)).get(ex.type_id)
        if reg is None:
            raise AriesError("type_gone", "the credential type is no longer registered")
        return ex, tenant, reg

    async def _record_and_offer(self, ex: AriesExchange, tenant: TenantRef, reg: RegisteredType,
                                answer: Claims, *, credential_id: str,
                                claim: Callable[[], Awaitable[None]] | None = None) -> None:
        """Record the issuance (with a status index) and offer the credential on the exchange's connection.

        ``credential_id``: the id reserved when the exchange was claimed (or by its deferral, as an
        OpenID4VCI deferred transaction does), so that a takeover finds what this attempt committed.
        Any failure between the record and the offer withdraws the record (nothing undelivered stays
        valid); raises :class:`_Unsettled` when that is not certain: the withdrawal failed, or the offer
        went out but the exchange could not be marked ``offered``. ``claim`` (a deferred poll's) runs
        immediately before the agent is asked to send: when it raises (:class:`_LeaseLost`) the record
        is withdrawn and nothing is sent.
        """
        ctx = self.ctx
        now = utcnow()
        claims = reg.ctype.map_claims(answer.record, now=now)
        did = await self.tenant_did(tenant.id, ex.proof_type)
        issuer_url = ctx.issuer_url(tenant.slug)
        subject = subject_from_json(ex.subject)
        async with ctx.session() as session:
            record = IssuanceRecord(
                id=credential_id, tenant_id=tenant.id, type_id=reg.type_id, type_version=reg.version,
                vct=reg.ctype.vct, subject_identifier=subject.identifier, status="valid", copies=1,
                signing_kid=f"aries:{SUITE_NAMES[ex.proof_type]}", evidence=answer.evidence.as_dict(),
                login={"method": "operator", "channel": "aries", "exchange_id": ex.id},
                notification_id=new_id("n_", 16), notifications=[], offer_id=None, issued_at=now,
                valid_until=reg.ctype.expires_at(now))
            session.add(record)
            await session.flush()
            ((list_id, idx),) = await allocate(ctx, session, tenant.id, credential_id, 1)
            await audit.record_row(session, record)
        list_url = f"{issuer_url}/v1/aries/status/{list_id}/{SUITE_NAMES[ex.proof_type]}"
        try:
            credential = build_credential(reg.ctype, claims, issuer_did=did, issuer_base_url=issuer_url,
                                          proof_type=ex.proof_type, issued_at=now,
                                          status=status_entry(list_url, idx))
            agent = self.agent_client()
        except Exception:
            await self._withdraw(credential_id)
            raise
        if claim is not None:
            try:
                await claim()
            except Exception:
                await self._withdraw(credential_id)
                raise
        try:
            sent = await channel.offer(agent, str(ex.connection_id), credential, ex.proof_type)
        except Exception as exc:
            if not _surely_unsent(exc):
                # The agent may have sent the offer and, the holder accepting, issue the credential on
                # its own: withdrawn, the record would leave that credential with no record and its
                # status index free for another. After the lease the sweep adopts the offer it finds
                # on the agent, or withdraws the record and offers again.
                raise _Unsettled("the offer may have gone out") from exc
            await self._withdraw(credential_id)
            raise
        try:
            await self._mark_offered(ex.id, sent.record_id, sent.thread_id, credential_id)
        except Exception as exc:
            raise _Unsettled("offer sent, exchange not marked offered") from exc

    async def _mark_offered(self, exchange_id: str, cred_ex_id: str, thread_id: str, credential_id: str) -> bool:
        async with self.ctx.session() as session:
            marked = (await session.execute(
                update(AriesExchange).where(AriesExchange.id == exchange_id,
                                            AriesExchange.state.in_(("offering", "pending")))
                .values(state="offered", cred_ex_id=cred_ex_id, thread_id=thread_id, credential_id=credential_id,
                        expires_at=utcnow(), updated_at=utcnow()).returning(AriesExchange.id))).scalar_one_or_none()
            if marked is not None:
                # A deferred exchange is finished with its source: nothing is left to poll.
                await session.execute(delete(DeferredTransaction).where(
                    DeferredTransaction.transaction_hash == deferred_key(exchange_id)))
        if marked is None:
            log.warning("aries offer sent for an exchange no longer offering", extra={"exchange_id": exchange_id})
        return marked is not None

    async def _withdraw(self, credential_id: str) -> None:
        """:meth:`_forget_record`, or :class:`_Unsettled` when that fails (the sweep withdraws it later)."""
        try:
            await self._forget_record(credential_id)
        except Exception as exc:
            raise _Unsettled("record not withdrawn") from exc

    # -- offers left half-way (a worker stopped or stuck while offering) ----------------------------------

    def offer_lease(self) -> dt.timedelta:
        """How long an ``offering`` exchange belongs to the attempt that claimed it (its ``updated_at``).

        Longer than an attempt can take: one source query and two agent calls, each bounded by its
        timeout, plus :data:`OFFER_GRACE`. After it the attempt's worker is taken to be gone.
        """
        settings = self.ctx.settings
        return dt.timedelta(seconds=settings.source_timeout + 2 * settings.aries_admin_timeout) + OFFER_GRACE

    async def resume_stalled(self, limit: int = 20) -> int:
        """Take over every exchange left ``offering`` beyond the lease; returns how many were taken over.

        Each is claimed by a conditional ``UPDATE`` of its ``updated_at`` (which starts a new lease), so
        that several workers sweeping together take it over once.
        """
        if self.runtime is None:
            return 0
        stale = utcnow() - self.offer_lease()
        async with self.ctx.db.read_session() as session:
            stalled = list((await session.execute(select(AriesExchange.id).where(
                AriesExchange.state == "offering", AriesExchange.updated_at <= stale)
                .order_by(AriesExchange.updated_at).limit(limit))).scalars())
        taken = 0
        for exchange_id in stalled:
            async with self.ctx.session() as session:
                claimed = (await session.execute(
                    update(AriesExchange).where(AriesExchange.id == exchange_id, AriesExchange.state == "offering",
                                                AriesExchange.updated_at <= stale)
                    .values(updated_at=utcnow()).returning(AriesExchange.id))).scalar_one_or_none()
            if claimed is None:
                continue
            taken += 1
            log.warning("aries offer taken over", extra={"exchange_id": exchange_id, "worker_pid": os.getpid()})
            await self._attempt(exchange_id, self._resume(exchange_id))
        return taken

    async def _resume(self, exchange_id: str) -> None:
        """Finish an offer whose attempt stopped half-way, never offering twice."""
        ex, tenant, reg = await self._load(exchange_id)
        try:
            # Exchanges claimed before credential ids were reserved: their record is found by its login.
            record_id = ex.credential_id or await self._record_of(ex)
            outcome = await self._previous_attempt(ex, record_id) if record_id else "none"
        except _Unsettled:
            raise
        except Exception as exc:
            # Not known whether an offer is out: never failed for that, asked again after the lease.
            raise _Unsettled("the earlier attempt could not be settled") from exc
        if outcome == "adopted":
            return
        credential_id = ex.credential_id if ex.credential_id and outcome == "none" else await self._reserve(ex.id)
        if credential_id is None:
            return  # no longer offering: finished elsewhere
        await self._query_and_offer(ex, tenant, reg, credential_id)

    async def _record_of(self, ex: AriesExchange) -> str | None:
        async with self.ctx.db.read_session() as session:
            rows = (await session.execute(select(IssuanceRecord.id, IssuanceRecord.login).where(
                IssuanceRecord.tenant_id == ex.tenant_id,
                IssuanceRecord.subject_identifier == subject_from_json(ex.subject).identifier,
                IssuanceRecord.type_id == ex.type_id))).all()
        return next((str(rid) for rid, login in rows if (login or {}).get("exchange_id") == ex.id), None)

    async def _reserve(self, exchange_id: str) -> str | None:
        """A fresh credential id for the exchange, stored before anything is recorded under it (None: the
        exchange is no longer ``offering``)."""
        async with self.ctx.session() as session:
            return (await session.execute(update(AriesExchange).where(
                AriesExchange.id == exchange_id, AriesExchange.state == "offering").values(
                credential_id=new_id("c_", 12), updated_at=utcnow())
                .returning(AriesExchange.credential_id))).scalar_one_or_none()

    async def _previous_attempt(self, ex: AriesExchange, record_id: str) -> str:
        """Settle what an earlier attempt left under ``record_id``: ``none`` (it recorded nothing),
        ``adopted`` (its offer reached the agent: the exchange now follows it) or ``withdrawn`` (it
        recorded but never offered: the record is withdrawn, audited as such)."""
        async with self.ctx.db.read_session() as session:
            if await session.get(IssuanceRecord, record_id) is None:
                return "none"
            entries = (await session.execute(select(StatusEntry.list_id, StatusEntry.idx).where(
                StatusEntry.record_id == record_id))).all()
        try:
            found = await self._sent_offer(ex, {(str(list_id), str(idx)) for list_id, idx in entries})
        except AriesError as exc:
            raise _Unsettled("the agent could not tell whether the offer was sent") from exc
        if found is not None:
            await self._adopt(ex.id, found, record_id)
            return "adopted"
        await self._withdraw(record_id)
        log.info("aries record of an unsent offer withdrawn", extra={"exchange_id": ex.id,
                                                                     "credential_id": record_id})
        return "withdrawn"

    async def _sent_offer(self, ex: AriesExchange, entries: set[tuple[str, str]]) -> dict[str, Any] | None:
        """The agent's credential exchange on the exchange's connection that offers the credential whose
        status entry is one of ``entries`` (``(list id, index)``: what the record allocated), or None."""
        if not entries or not ex.connection_id:
            return None
        for item in await self.agent_client().cred_records(connection_id=str(ex.connection_id)):
            record = item.get("cred_ex_record") or {}
            offer = ((record.get("by_format") or {}).get("cred_offer") or {}).get("ld_proof") or {}
            status = (offer.get("credential") or {}).get("credentialStatus") or {}
            # statusListCredential: <issuer>/v1/aries/status/<list id>/<suite>
            parts = str(status.get("statusListCredential") or "").split("/")
            if len(parts) >= 2 and (parts[-2], str(status.get("statusListIndex"))) in entries:
                return dict(record)
        return None

    async def _adopt(self, exchange_id: str, record: dict[str, Any], credential_id: str) -> None:
        """Follow the credential exchange an earlier attempt started (its offer is already out)."""
        cred_ex_id = str(record["cred_ex_id"])
        if not await self._mark_offered(exchange_id, cred_ex_id, str(record["thread_id"]), credential_id):
            return
        log.info("aries offer adopted", extra={"exchange_id": exchange_id, "credential_id": credential_id})
        # The webhooks of the states it reached before the exchange knew its id found nothing to finish.
        with contextlib.suppress(AriesError):
            record = (await self.agent_client().cred_record(cred_ex_id))["cred_ex_record"]
        state = str(record.get("state"))
        if state == "request-received":
            await self.agent_client().issue(cred_ex_id)
        elif state in (*ISSUED_STATES, "abandoned"):
            await self._settle(cred_ex_id, state, issued=_credential_left(record))

    # -- deferred issuance (the source answered pending) -----------------------------------------------

    def _poll_delay(self, retry_after: int) -> dt.timedelta:
        # As the OpenID4VCI deferred flow tells a wallet: the source's estimate, at least the deferred
        # interval, bounded so a long estimate that proves pessimistic does not leave the citizen waiting.
        settings = self.ctx.settings
        return dt.timedelta(seconds=max(settings.deferred_interval,
                                        min(retry_after, settings.aries_deferred_max_interval)))

    async def _defer(self, ex: AriesExchange, answer: Pending, credential_id: str) -> None:
        """Keep the connection and the exchange; remember the source's reference to poll it later.

        The reference lives in a :class:`~issuer.models.DeferredTransaction` (the OpenID4VCI deferred
        machinery: the same columns, the same :func:`~issuer.issuance.fetch_record` poll), keyed
        ``aries:<exchange id>`` and bound to no access token; the exchange turns ``pending`` and its
        ``expires_at`` becomes the moment of the next poll. The credential id reserved at the claim moves
        to the deferral (an exchange shows a credential id only while it names a record or may soon).
        The query context the query was sent under is kept with it (``source_context``): every poll is
        sent under it again, whatever the tenant's context is by then.
        """
        now = utcnow()
        async with self.ctx.session() as session:
            session.add(DeferredTransaction(
                transaction_hash=deferred_key(ex.id), tenant_id=ex.tenant_id, token_hash=NO_TOKEN,
                configuration_id=ex.type_id, credential_id=credential_id, source_reference=answer.reference,
                subject=ex.subject, selector=ex.selector,
                login={"method": "operator", "channel": "aries", "exchange_id": ex.id}, holder_jwks=[],
                request_id=answer.reference[:40], offer_id=None, created_at=now,
                expires_at=now + DEFERRED_TTL,
                sealed_response=None, dpop_jkt=None, source_context=sent_context(answer.context)))
            await session.execute(update(AriesExchange).where(AriesExchange.id == ex.id).values(
                state="pending", credential_id=None, expires_at=now + self._poll_delay(answer.retry_after),
                updated_at=now))
        log.info("aries issuance deferred by the source", extra={"exchange_id": ex.id, "type_id": ex.type_id})

    def poll_lease(self) -> dt.timedelta:
        """How long a poll holds its exchange (``aries_poll_lease``; :data:`POLL_LEASE` by default).
        Renewed every third of it while the poll runs (:meth:`_keep_lease`)."""
        return dt.timedelta(seconds=self.ctx.settings.aries_poll_lease)

    async def poll_due(self, limit: int = 20) -> int:
        """Poll the source of every ``pending`` exchange whose time has come; returns how many were polled.

        Each exchange is leased by a conditional ``UPDATE`` (its next poll moved :meth:`poll_lease`
        past the moment of the claim, not past the start of the sweep, which after slow polls could be
        in the past) before its source is asked, so several workers sweeping together never poll one
        exchange twice at once. The lease is renewed while the poll runs (a slow source or agent does
        not lose it; a worker gone or stuck does), and the offer is sent only after a conditional
        ``UPDATE`` found the lease still this poll's and moved it past the longest an offer can take
        (:meth:`_claim_for_offer`): at most one offer per exchange, however long a poll takes. What
        the poll then writes to the exchange (rescheduled, failed) is written only while the lease is
        still this poll's: past it, another worker may be polling it.
        """
        if self.runtime is None:
            return 0
        async with self.ctx.db.read_session() as session:
            due = list((await session.execute(select(AriesExchange.id).where(
                AriesExchange.state == "pending", AriesExchange.expires_at <= utcnow())
                .order_by(AriesExchange.expires_at).limit(limit))).scalars())
        polled = 0
        for exchange_id in due:
            now = utcnow()
            lease = _Lease(exchange_id, now + self.poll_lease(), self.poll_lease())
            async with self.ctx.session() as session:
                leased = (await session.execute(
                    update(AriesExchange).where(AriesExchange.id == exchange_id, AriesExchange.state == "pending",
                                                AriesExchange.expires_at <= now)
                    .values(expires_at=lease.until).returning(AriesExchange.id))).scalar_one_or_none()
            if leased is None:
                continue
            polled += 1
            await self._poll_leased(exchange_id, lease)
        return polled

    async def _poll_leased(self, exchange_id: str, lease: _Lease) -> None:
        keeper = asyncio.create_task(self._keep_lease(lease), name=f"aries-lease-{exchange_id}")
        try:
            try:
                await self._poll_one(exchange_id, lease)
            finally:
                keeper.cancel()
                # asyncio.wait, not `await keeper` under suppress(CancelledError): that would also
                # swallow a cancellation of this task itself (shutdown) arriving meanwhile.
                await asyncio.wait([keeper])
                if not keeper.cancelled() and keeper.exception() is not None:
                    log.warning("aries deferred poll's lease keeper failed", extra={
                        "exchange_id": exchange_id, "error": type(keeper.exception()).__name__})
        except asyncio.CancelledError:
            # Shutting down mid-poll: the exchange is due again at the next poll interval, not after the lease.
            await asyncio.shield(self._reschedule(exchange_id, 0, lease))
            raise
        except _LeaseLost:
            log.warning("aries deferred poll lost its lease; nothing offered, the exchange is left to the poll "
                        "that has it", extra={"exchange_id": exchange_id})
        except _Unsettled as exc:
            # An offer may be out: the next poll settles it from the record and the agent, after the
            # offer lease (as a takeover would), not the short poll lease: an offer whose answer was
            # lost may reach the agent's records only once its slow call ends.
            log.error("aries deferred offer left to the next poll", extra={
                "exchange_id": exchange_id, "reason": str(exc), "error": type(exc.__cause__).__name__})
            async with self.ctx.session() as session:
                await session.execute(update(AriesExchange).where(
                    AriesExchange.id == exchange_id, AriesExchange.state == "pending",
                    AriesExchange.expires_at == lease.until).values(expires_at=utcnow() + self.offer_lease()))
        except (APIError, AriesError, CredentialSchemaError) as exc:
            code = exc.code if isinstance(exc, AriesError | CredentialSchemaError) else exc.error
            if (isinstance(exc, APIError) and exc.status_code == 503) or (
                    isinstance(exc, AriesError) and transient(exc)):
                # The source (or our agent) is down for now: keep the exchange, ask again later. A
                # record the poll heard is kept on the deferral: the next poll offers it without asking.
                await self._reschedule(exchange_id, 30, lease)
                return
            log.warning("aries deferred issuance failed", extra={"exchange_id": exchange_id, "code": code})
            await self._fail_deferred(exchange_id, str(code)[:100], lease)

    async def _renew(self, lease: _Lease, span: dt.timedelta) -> bool:
        """Move the lease to ``span`` from now, if it is still this poll's (a conditional ``UPDATE`` on
        the ``expires_at`` it last wrote); otherwise mark it lost. Serialised with the poll's other
        writes under the lease (``lease.lock``)."""
        async with lease.lock:
            if lease.lost:
                return False
            until = utcnow() + span
            async with self.ctx.session() as session:
                renewed = (await session.execute(update(AriesExchange).where(
                    AriesExchange.id == lease.exchange_id, AriesExchange.state == "pending",
                    AriesExchange.expires_at == lease.until).values(expires_at=until)
                    .returning(AriesExchange.id))).scalar_one_or_none()
            if renewed is None:
                lease.lost = True
                return False
            lease.until, lease.span = until, span
            return True

    async def _keep_lease(self, lease: _Lease) -> None:
        """Renew the poll's lease every third of it while the poll runs (the heartbeat): a slow source
        or agent keeps its exchange. A renewal that fails for the database is tried again at the next
        beat; one that finds the lease taken stops (the offer's claim then refuses to send)."""
        while not lease.lost:
            await asyncio.sleep(self.poll_lease().total_seconds() / 3)
            try:
                await self._renew(lease, lease.span)
            except Exception as exc:  # noqa: BLE001 - the next beat tries again; the claim decides anyway
                log.warning("aries poll lease not renewed", extra={"exchange_id": lease.exchange_id,
                                                                    "error": type(exc).__name__})

    async def _claim_for_offer(self, lease: _Lease) -> None:
        """Right before the offer goes to the agent: the lease must still be this poll's, and is moved
        past the longest an offer can take (:meth:`offer_lease`), so no other worker takes the exchange
        while the offer is on its way; it settles it afterwards (adopts the offer) if this one stops.
        Raises :class:`_LeaseLost` otherwise: another worker has the exchange, nothing may be sent."""
        if not await self._renew(lease, self.offer_lease()):
            raise _LeaseLost()

    async def _poll_one(self, exchange_id: str, lease: _Lease) -> None:
        ex, tenant, reg = await self._load(exchange_id)
        async with self.ctx.db.read_session() as session:
            row = (await session.execute(select(DeferredTransaction).where(
                DeferredTransaction.transaction_hash == deferred_key(exchange_id)))).scalar_one_or_none()
        if row is None:
            raise AriesError("deferral_lost", "the deferred source reference is gone")
        if row.expires_at <= utcnow():
            raise AriesError("source_pending_expired", "the data source did not answer in time")
        # Asking the source consumes its answer: with our agent gone it would be lost, so wait instead.
        try:
            self.agent_client()
        except AriesError as exc:
            raise unavailable_error(exc) from exc
        # An earlier poll that got its data may have stopped after recording the credential.
        credential_id = row.credential_id
        outcome = await self._previous_attempt(ex, credential_id)
        if outcome == "adopted":
            return
        if outcome == "withdrawn":
            credential_id = new_id("c_", 12)
            async with self.ctx.session() as session:
                await session.execute(update(DeferredTransaction).where(
                    DeferredTransaction.transaction_hash == deferred_key(exchange_id)).values(
                    credential_id=credential_id))
        answer: Claims | Pending
        if row.sealed_record is not None:
            # An earlier poll heard the source's answer and kept it, then failed before its offer went out
            # (the agent, the database, a restart): offer from it. The source is not asked again: it
            # delivered its answer once, and forgot it (Via Oberta then answers 0207, a final refusal).
            answer = open_polled_record(self.ctx, row.transaction_hash, row.sealed_record)
        else:
            try:
                # Under the context the query was sent with (None: deferred before migration 0018,
                # polled under the current one): the answer echoes it, and is refused otherwise.
                answer = await fetch_record(self.ctx, tenant, reg, subject_from_json(row.subject),
                                            selector=row.selector, request_id=None,
                                            poll_reference=row.source_reference, sent=row.source_context)
            except FinalSourceAnswer:
                if await self._kept_record(exchange_id) is not None:
                    # A poll that lost its lease heard the answer and kept it meanwhile: offer from it
                    # at the next poll instead of failing the exchange.
                    await self._reschedule(exchange_id, 0, lease)
                    return
                raise
            if isinstance(answer, Pending):
                await self._reschedule(exchange_id, answer.retry_after, lease)
                return
            # Kept before anything else can fail; it goes with the deferral once the offer is out
            # (_mark_offered), or the exchange fails. Not before: an offer that surely did not go out
            # withdraws the record, and the next poll needs the data again.
            await self._keep_record(exchange_id, seal_polled_record(self.ctx, row.transaction_hash, answer))
        # Claimed before the record too: a poll that lost its lease records nothing under the id the
        # poll that has the exchange now works with.
        await self._claim_for_offer(lease)
        await self._record_and_offer(ex, tenant, reg, answer, credential_id=credential_id,
                                     claim=lambda: self._claim_for_offer(lease))

    async def _keep_record(self, exchange_id: str, sealed: bytes) -> None:
        """Keep the record a poll heard on the exchange's deferral (``sealed_record``); a deferral gone
        meanwhile (the exchange settled by another worker) is :class:`_LeaseLost`."""
        async with self.ctx.session() as session:
            kept = (await session.execute(update(DeferredTransaction).where(
                DeferredTransaction.transaction_hash == deferred_key(exchange_id)).values(sealed_record=sealed)
                .returning(DeferredTransaction.transaction_hash))).scalar_one_or_none()
        if kept is None:
            raise _LeaseLost()

    async def _kept_record(self, exchange_id: str) -> bytes | None:
        async with self.ctx.db.read_session() as session:
            return (await session.execute(select(DeferredTransaction.sealed_record).where(
                DeferredTransaction.transaction_hash == deferred_key(exchange_id)))).scalar_one_or_none()

    async def _reschedule(self, exchange_id: str, retry_after: int, lease: _Lease) -> None:
        """The next poll of a ``pending`` exchange, unless the poll's lease (``expires_at``) was lost."""
        async with lease.lock, self.ctx.session() as session:
            await session.execute(update(AriesExchange).where(
                AriesExchange.id == exchange_id, AriesExchange.state == "pending",
                AriesExchange.expires_at == lease.until).values(
                expires_at=utcnow() + self._poll_delay(retry_after), updated_at=utcnow()))

    async def _fail_deferred(self, exchange_id: str, code: str, lease: _Lease) -> None:
        """Fail a deferred exchange whose poll failed, if it is still ``pending`` under that poll's lease:
        a poll past its lease must not fail an exchange another worker has polled since, and perhaps
        offered (``offered``, or ``pending`` with that worker's lease while it offers)."""
        async with lease.lock, self.ctx.session() as session:
            failed = (await session.execute(update(AriesExchange).where(
                AriesExchange.id == exchange_id, AriesExchange.state == "pending",
                AriesExchange.expires_at == lease.until).values(state="failed", error=code, updated_at=utcnow())
                .returning(AriesExchange.id))).scalar_one_or_none()
            if failed is not None:
                await session.execute(delete(DeferredTransaction).where(
                    DeferredTransaction.transaction_hash == deferred_key(exchange_id)))
        if failed is None:
            log.warning("aries deferred poll failed after its lease; the exchange is left to the poll that has it",
                        extra={"exchange_id": exchange_id, "code": code})

    async def remove_settled_records(self) -> int:
        """Remove from the agent the finished exchange records of settled exchanges (issued, failed,
        abandoned) that the webhook's removal missed (:mod:`aries.cleanup`)."""
        async def settled(ids: list[str]) -> tuple[set[str], set[str]]:
            async with self.ctx.db.read_session() as session:
                rows = (await session.execute(select(AriesExchange.cred_ex_id, AriesExchange.state).where(
                    AriesExchange.cred_ex_id.in_(ids)))).all()
            return {r[0] for r in rows if r[1] in SETTLED_STATES}, {r[0] for r in rows}

        return await cleanup.remove_settled_records(self.agent_client(), "credential", settled, utcnow())

    async def _poll_loop(self) -> None:
        while True:
            for sweep in (self.poll_due, self.resume_stalled, self.check_invited, self.check_offered):
                try:
                    await sweep()
                except Exception as exc:  # noqa: BLE001 - the sweep must outlive one bad round (database hiccup)
                    # The type only: a database error's text may carry statement parameters (a subject).
                    log.error("aries deferred sweep failed", extra={"error": type(exc).__name__,
                                                                   "sweep": sweep.__name__})
            await asyncio.sleep(SWEEP_EVERY)

    def agent_client(self) -> AdminClient:
        """The admin client for background steps (typed Aries errors instead of HTTP errors)."""
        if self.runtime is None:
            raise AriesError("agent_unavailable", "the Aries agent is not running")
        self.runtime.check()
        return self.runtime.client

    async def _forget_record(self, credential_id: str) -> None:
        async with self.ctx.session() as session:
            record = await session.get(IssuanceRecord, credential_id)
            if record is not None:
                await audit.record_withdrawal(session, record)
            await session.execute(delete(StatusEntry).where(StatusEntry.record_id == credential_id))
            await session.execute(delete(IssuanceRecord).where(IssuanceRecord.id == credential_id))

    async def _exchange_of(self, cred_ex_id: str, wait: float) -> Any:
        """Our exchange (id, state, expires_at) following the agent record ``cred_ex_id``, waiting up to ``wait``
        seconds for it: the holder may answer before the offer's ids are stored."""
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            async with self.ctx.db.read_session() as session:
                row = (await session.execute(select(AriesExchange.id, AriesExchange.state, AriesExchange.expires_at)
                                             .where(AriesExchange.cred_ex_id == cred_ex_id))).first()
            if row is not None or asyncio.get_running_loop().time() >= deadline:
                return row
            await asyncio.sleep(0.1)

    async def _on_credential(self, event: webhooks.WebhookEvent) -> None:
        cred_ex_id = event.record_id
        row = await self._exchange_of(cred_ex_id, REQUEST_MATCH_WAIT)
        if event.state == "request-received":
            await self._answer_request(cred_ex_id, row)
            return
        if row is None:
            return
        await self._finish(row.id, cred_ex_id, event.state, event.payload)

    async def _finish(self, exchange_id: str, cred_ex_id: str, state: str, record: Mapping[str, Any]) -> None:
        """Settle the exchange as the agent record's ``state`` says, and remove an acknowledged record."""
        await self._settle(cred_ex_id, state, issued=_credential_left(record))
        if state == "done":
            # Acknowledged by the holder: the agent keeps every exchange record
            # (--preserve-exchange-records), this one with the credential and its claims, for ever;
            # the issuer keeps no claim values. The exchange is settled ("issued"), never taken over.
            try:
                await self.agent_client().delete_cred_record(cred_ex_id)
            except AriesError as exc:
                log.warning("aries credential exchange not removed from the agent",
                            extra={"exchange_id": exchange_id, "code": exc.code})

    async def _answer_request(self, cred_ex_id: str, row: Any) -> None:
        """Issue on a holder's request that follows one of our ``offered`` exchanges, and on no other.

        ACA-Py has checked that a request following an offer asks for exactly the offered credential;
        a request that follows no offer would be signed as the holder wrote it, so it never is. Such a
        record is left on the agent, not deleted: it may also follow an offer whose ids a stopped
        worker never stored, which the stalled-offer sweep adopts (and then issues on); the agent
        record cleanup removes the others as orphans (:mod:`aries.cleanup`).
        """
        if row is None:
            log.warning("aries credential request that follows no known offer left unanswered",
                        extra={"record_id": cred_ex_id})
            return
        if row.state != "offered":
            return  # settled already (a repeated request, an abandoned exchange): nothing to issue
        if self._offer_expired(row.expires_at):
            # Too late: the sweep withdraws the offer (a request answered now could race that).
            log.info("aries credential request after the offer expired left unanswered",
                     extra={"exchange_id": row.id})
            return
        await self.agent_client().issue(cred_ex_id)

    async def check_invited(self, limit: int = 20) -> int:
        """Ask the agent for the connection of each unexpired invitation left ``invited`` for
        :data:`INVITED_CHECK_AFTER` and, when the wallet did connect, act as the lost ``connections``
        webhook would have (:meth:`_connected`: the same conditional claim, so a late webhook and this
        sweep offer once); returns how many were checked.

        Each is claimed by a conditional ``UPDATE`` of its ``updated_at`` (the next check comes as long
        after), so workers sweeping together ask once.
        """
        if self.runtime is None:
            return 0
        now = utcnow()
        stale = now - INVITED_CHECK_AFTER
        async with self.ctx.db.read_session() as session:
            waiting = list((await session.execute(select(AriesExchange.id, AriesExchange.invitation_msg_id).where(
                AriesExchange.state == "invited", AriesExchange.expires_at > now, AriesExchange.updated_at <= stale)
                .order_by(AriesExchange.updated_at).limit(limit))).all())
        checked = 0
        for exchange_id, invitation_msg_id in waiting:
            async with self.ctx.session() as session:
                claimed = (await session.execute(
                    update(AriesExchange).where(AriesExchange.id == exchange_id, AriesExchange.state == "invited",
                                                AriesExchange.updated_at <= stale)
                    .values(updated_at=utcnow()).returning(AriesExchange.id))).scalar_one_or_none()
            if claimed is None:
                continue
            checked += 1
            found = await self.agent_client().connections(invitation_msg_id=str(invitation_msg_id))
            active = next((c for c in found if c.get("state") in ("active", "completed")), None)
            if active is not None:
                log.warning("aries connection found by the sweep (its webhook was lost)",
                            extra={"exchange_id": exchange_id})
                await self._connected(str(invitation_msg_id), str(active.get("connection_id") or ""))
        return checked

    def offer_ttl(self) -> dt.timedelta:
        """How long an offer waits for the holder's answer (``aries_offer_ttl``), counted from when it
        went out: an ``offered`` exchange's ``expires_at``."""
        return dt.timedelta(seconds=self.ctx.settings.aries_offer_ttl)

    async def check_offered(self, limit: int = 20) -> int:
        """Read the agent's record of exchanges ``offered`` without news for :data:`OFFERED_CHECK_AFTER`
        and act as its lost webhook would have; returns how many were checked. An offer still unanswered
        :meth:`offer_ttl` after it went out is withdrawn (:meth:`_withdraw_offer`).

        Each is claimed by a conditional ``UPDATE`` of its ``updated_at`` (the next check comes as long
        after), so workers sweeping together read it once. A record the agent no longer has is left:
        only its webhook could tell what became of it, and the exchange stays ``offered``.
        """
        if self.runtime is None:
            return 0
        stale = utcnow() - OFFERED_CHECK_AFTER
        async with self.ctx.db.read_session() as session:
            waiting = list((await session.execute(select(
                AriesExchange.id, AriesExchange.cred_ex_id, AriesExchange.expires_at).where(
                AriesExchange.state == "offered", AriesExchange.updated_at <= stale)
                .order_by(AriesExchange.updated_at).limit(limit))).all())
        checked = 0
        for exchange_id, cred_ex_id, offered_at in waiting:
            async with self.ctx.session() as session:
                claimed = (await session.execute(
                    update(AriesExchange).where(AriesExchange.id == exchange_id, AriesExchange.state == "offered",
                                                AriesExchange.updated_at <= stale)
                    .values(updated_at=utcnow()).returning(AriesExchange.id))).scalar_one_or_none()
            if claimed is None or not cred_ex_id:
                continue
            checked += 1
            try:
                record = (await self.agent_client().cred_record(cred_ex_id)).get("cred_ex_record") or {}
            except AgentRequestFailed as exc:
                if exc.status == 404:
                    continue
                raise
            state = str(record.get("state"))
            if state in (*ISSUED_STATES, "abandoned"):
                await self._finish(exchange_id, cred_ex_id, state, record)
            elif self._offer_expired(offered_at, grace=2 * self.admin_timeout()):
                await self._withdraw_offer(exchange_id, cred_ex_id)
            elif state == "request-received" and not self._offer_expired(offered_at, at=_agent_time(record)):
                # A request whose webhook was lost, answered as the webhook would have: only if it came
                # before the deadline (in the grace above, a late one must not be issued by the sweep).
                await self.agent_client().issue(cred_ex_id)
        return checked

    def _offer_expired(self, offered_at: dt.datetime, grace: dt.timedelta = dt.timedelta(0),
                       at: dt.datetime | None = None) -> bool:
        """Whether the offer that went out at ``offered_at`` is past its deadline (and ``grace``: the sweep
        withdraws it only once any request answered just before the deadline has been issued) at ``at``
        (default: now)."""
        return offered_at + self.offer_ttl() + grace <= (at or utcnow())

    def admin_timeout(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.ctx.settings.aries_admin_timeout)

    async def _withdraw_offer(self, exchange_id: str, cred_ex_id: str) -> None:
        """Withdraw an offer the holder left unanswered past :meth:`offer_ttl`: the agent's record (the
        offered claims) would stay for ever, and the issuance record valid with its status index.

        A problem report abandons the agent's record, so that the agent no longer issues on it, and tells
        the holder's agent, which then no longer requests it. The exchange is then settled from the
        record as its ``abandoned`` webhook would (:meth:`_settle`: the issuance record withdrawn by the
        same conditional ``UPDATE``, unless the credential left before the report), and the record
        deleted. Nothing is issued meanwhile: past the deadline no request is answered
        (:meth:`_answer_request`), not even one crossing the report (ACA-Py takes it on the abandoned
        record).
        """
        agent = self.agent_client()
        record: Mapping[str, Any] = {}
        try:
            await agent.cred_problem_report(cred_ex_id, "the offer has expired")
            record = (await agent.cred_record(cred_ex_id)).get("cred_ex_record") or {}
        except AgentRequestFailed as exc:
            if exc.status != 404:
                raise
        issued = _credential_left(record)
        await self._settle(cred_ex_id, "abandoned", issued=issued)
        log.info("aries offer withdrawn unanswered", extra={"exchange_id": exchange_id, "issued": issued})
        if record and not issued:
            try:
                await agent.delete_cred_record(cred_ex_id)
            except AriesError as exc:  # the periodic cleanup removes it (a settled exchange's record)
                log.warning("aries credential exchange not removed from the agent",
                            extra={"exchange_id": exchange_id, "code": exc.code})

    async def _settle(self, cred_ex_id: str, state: str, *, issued: bool = False) -> None:
        """Finish the ``offered`` exchange following ``cred_ex_id``: issued, or abandoned (record removed).

        ``issued``: the agent's record holds the issued credential. ACA-Py abandons a record on any
        problem report, in any state, and delivers webhooks concurrently: a holder reporting a problem
        just after receiving the credential must not have its record (and the status entry that can
        revoke it) removed, nor the status index handed to someone else.
        """
        if state in ISSUED_STATES or issued:
            async with self.ctx.session() as session:
                done = (await session.execute(
                    update(AriesExchange).where(AriesExchange.cred_ex_id == cred_ex_id,
                                                AriesExchange.state == "offered")
                    .values(state="issued", updated_at=utcnow())
                    .returning(AriesExchange.credential_id, AriesExchange.type_id, AriesExchange.tenant_id))).first()
                if done is None:
                    return
                credential_id, type_id, tenant_id = done
                tenant = _tenant_ref((await session.execute(select(Tenant).where(Tenant.id == tenant_id))).scalar_one())
                await enqueue_event(session, tenant, "credential.issued", str(credential_id), type_id)
            if self.ctx.issued_counter is not None:
                self.ctx.issued_counter.labels(tenant.slug, type_id).inc()
            log.info("credential issued", extra={"credential_id": credential_id, "type_id": type_id,
                                                 "tenant": tenant.slug, "channel": "aries",
                                                 "worker_pid": os.getpid()})
            return
        async with self.ctx.session() as session:
            gone = (await session.execute(
                update(AriesExchange).where(AriesExchange.cred_ex_id == cred_ex_id, AriesExchange.state == "offered")
                .values(state="abandoned", updated_at=utcnow()).returning(AriesExchange.credential_id))).first()
        if gone is not None and gone[0]:
            await self._forget_record(str(gone[0]))

    # -- status lists -------------------------------------------------------------------------------

    async def status_list(self, tenant: TenantRef, list_id: str, suite: str) -> dict[str, Any] | None:
        """The signed ``BitstringStatusListCredential`` of one of the tenant's lists, or None."""
        proof_type = SUITES.get(suite)
        if proof_type is None or len(list_id) > 40:
            return None
        async with self.ctx.db.read_session() as session:
            row = (await session.execute(select(StatusList.data, StatusList.bits, StatusList.size, StatusList.version)
                                         .where(StatusList.id == list_id, StatusList.tenant_id == tenant.id))).first()
            did = (await session.execute(select(AriesTenantDid.did).where(
                AriesTenantDid.tenant_id == tenant.id, AriesTenantDid.proof_type == proof_type))).scalar_one_or_none()
        if row is None or did is None:
            return None
        data, bits, size, version = row
        cache_key = (list_id, suite, version)
        cached = self._lists.get(cache_key)
        if cached is not None:
            return cached
        issuer_url = self.ctx.issuer_url(tenant.slug)
        unsigned = status_list_credential(
            list_url=f"{issuer_url}/v1/aries/status/{list_id}/{suite}", issuer_did=did,
            bits=await asyncio.to_thread(w3c_bits, bytes(data), bits, size),
            context_url=status_context_url(issuer_url),
            issued_at=utcnow().replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ"),
            suite_context=SUITE_CONTEXTS[proof_type])
        try:
            signed = await sign_list(self.agent(), unsigned, proof_type)
        except AriesError as exc:
            raise unavailable_error(exc) from exc
        return self._lists.put(cache_key, signed)




def qr_png_base64(png: bytes) -> str:
    """PNG bytes as base64 (JSON-safe)."""
    return base64.b64encode(png).decode("ascii")
