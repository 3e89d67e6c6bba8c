"""The verifier's Aries channel: present-proof 2.0 requests from templates, answers judged by our policies.

A request variant of the agency API (docs/aries.md): from one of the agency's templates, the Credential
Query for one type becomes a DIF presentation definition (:func:`aries.presentation.build_proof_request`:
the claims asked, ``limit_disclosure: required`` for BBS+, a fresh challenge, the verifier's domain),
sent connectionless in an out-of-band invitation whose short URL the desk shows as a QR code. The
result is the same :class:`~verifier.models.Transaction` as for OpenID4VP: the agent's
``present_proof_v2_0`` webhook (authenticated, once per event key) makes the verifier read the
record from its agent, apply :func:`aries.presentation.check_presentation` with the template's trust
(the https issuer identifiers it lists, whose DIDs each issuer publishes at ``<iss>/v1/aries/issuer``;
status lists fetched only under those identifiers) and the DCQL ``values``, and finish the transaction
as ``verified`` (the requested claims only) or ``rejected`` (the failed check's code); a record
abandoned before any presentation arrived (the holder refused) ends ``declined`` with ``aries.declined``,
as OpenID4VP ends a wallet's ``access_denied``. A sweep in every worker reads the agent's record of
pending requests (:meth:`VerifierAriesChannel.check_pending`), so a lost webhook leaves none pending.
An agent that does not answer (:func:`aries.errors.transient`) judges nothing: the transaction is left
``pending``, the webhook answers 503 (ACA-Py delivers it again) and the sweep finds it after that.

The DIDs are trusted on the OpenID4VC channel's terms, not the web host's: the document is a JWT
(``typ`` ``aries-issuer+jwt``) whose key the transaction's :class:`~verifier.verification.TrustPolicy`
must resolve for the issuer and the asked ``vct`` (``x5c`` chained to the verifier's and the template's
anchors with the issuer URL in the leaf's SAN, or the issuer's JWT VC Issuer Metadata where the rule
says ``metadata: true``), as it would for that issuer's SD-JWT VC. A document that is unsigned or
fails that check contributes no DID, and an answer from no trusted DID names why
(``aries.issuer_document_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import bindparam, delete, select, update

from aries import channel, cleanup, webhooks
from aries.client import BBS, ED25519, AdminClient
from aries.errors import AgentRequestFailed, AriesError, VerificationFailed, WebhookRefused, transient
from aries.presentation import ProofRequest, build_proof_request, check_presentation, precheck_presentation
from aries.service import (
    AgentRuntime,
    agent_client,
    loopback_base,
    start_runtime,
    unavailable_error,
    webhook_key_hash,
)
from aries.status import status_lookup
from aries.storage import replace_webhook_keys
from credential_schemas import CredentialType, load_builtin_types
from service_kit.crypto import load_master_key
from service_kit.db import dialect_insert
from service_kit.errors import APIError
from service_kit.outbound import guarded_transport
from ssi.dcql import SD_JWT_VC_FORMAT, value_matches
from ssi.errors import JOSEError, SSIError
from ssi.jose import check_time_claims, parse_jws, verify_parsed
from ssi.oid4vci import check_url
from verifier.agencies import verifier_host
from verifier.aries_models import AriesPresentation, AriesWebhookEvent, AriesWebhookKey
from verifier.models import Agency, Template, Transaction
from verifier.schemas import purpose_problem
from verifier.settings import VerifierSettings
from verifier.statements import checked_on_the_row
from verifier.transactions import (
    DIDCOMM_RESPONSE_MODE,
    FINAL_STATUSES,
    RequestSpec,
    _claim,
    _finish,
    create_transaction,
    utcnow,
)
from verifier.verification import (
    CheckError,
    FetchError,
    PresentationVerifier,
    TransactionContext,
    TrustPolicy,
    fetch_bytes,
)

log = logging.getLogger(__name__)

#: The Aries part of one of the agency's transactions (``tx_id``, ``agency_id``), found by its key only:
#: the agency is checked on the transaction found (tests/verifier/test_schema.py reads the plan).
#: The pending request behind a short URL (``code``, ``now``): found by the code, the transaction by its
#: id, its status and expiry checked on the row (see ``verifier.statements.checked_on_the_row``).
PRESENTATION_FOR_CODE = (select(AriesPresentation).join(Transaction, Transaction.id == AriesPresentation.tx_id)
                         .where(AriesPresentation.short_code == bindparam("code"),
                                checked_on_the_row(Transaction.status, "pending"),
                                Transaction.expires_at > bindparam("now")))
PRESENTATION_FOR_TX = (select(AriesPresentation).join(Transaction, Transaction.id == AriesPresentation.tx_id)
                       .where(AriesPresentation.tx_id == bindparam("tx_id"),
                              Transaction.agency_id == bindparam("agency_id")))

#: The states of a presentation record the verifier acts on (the others wait).
JUDGED_STATES = ("presentation-received", "done", "abandoned")
#: A pending request this old has its agent record read by the sweep, which acts as a lost webhook
#: would have (ACA-Py's delivery queue lives in memory); each worker's sweep runs this often.
PENDING_CHECK_AFTER = dt.timedelta(seconds=20)
PENDING_CHECK_EVERY = 20.0
PENDING_CHECK_BATCH = 100

#: The code of a request the holder's agent refused without presenting (the transaction ends ``declined``).
DECLINED = "aries.declined"

#: The suites a verifier can ask for (an issuer publishing anything else is not followed).
SUITES = frozenset({BBS, ED25519})

#: The ``typ`` of the signed issuer document (and, as ``application/<typ>``, what the verifier asks for).
ISSUER_DOCUMENT_TYP = "aries-issuer+jwt"
ISSUER_DOCUMENT_ACCEPT = f"application/{ISSUER_DOCUMENT_TYP}"


@dataclass(frozen=True, slots=True)
class IssuerDocuments:
    """The trusted issuers' documents for one request: those whose signature the policy trusts (their
    claims), those refused (why), and the issuers that did not answer."""

    verified: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, VerificationFailed] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)

    def dids(self) -> dict[str, str]:
        """``{did: issuer identifier}`` of the verified documents."""
        found: dict[str, str] = {}
        for issuer, claims in self.verified.items():
            found.update({str(did): issuer for did in claims["dids"].values()})
        return found

    def explain(self, exc: VerificationFailed) -> VerificationFailed:
        """An answer from no trusted DID while some document was refused: that refusal says why; while
        some trusted issuer did not answer, ``aries.issuer_document_unavailable`` (its DIDs are unknown,
        not untrusted: the same answer may verify once it answers, as OpenID4VP's
        ``sd_jwt_vc.metadata_unavailable``)."""
        if exc.code == "aries.untrusted_issuer" and self.refused:
            return next(iter(self.refused.values()))
        if exc.code == "aries.untrusted_issuer" and self.unreachable:
            return VerificationFailed("issuer_document_unavailable", "the issuer document of "
                                      f"{', '.join(self.unreachable)} could not be fetched; its DIDs are unknown")
        return exc


def types_by_vct() -> dict[str, CredentialType]:
    """The credential types the verifier can ask for over DIDComm, by ``vct``."""
    return {t.vct: t for t in load_builtin_types().values()}


def query_for_aries(dcql_query: dict[str, Any], query_id: str | None) -> tuple[str, str, list[str], dict[str, Any]]:
    """``(query id, vct, claim names, values per claim)`` of one Credential Query, or 400 when DIDComm cannot ask it."""
    queries = dcql_query.get("credentials") or []
    chosen = [q for q in queries if isinstance(q, dict) and (query_id is None or q.get("id") == query_id)]
    if not chosen:
        raise APIError(400, "invalid_request", "the template has no such credential query")
    query = chosen[0]
    if query.get("format") != SD_JWT_VC_FORMAT:
        # Templates of another format are refused when written; one stored before is not asked either.
        raise APIError(400, "invalid_request", f"the credential query's format must be {SD_JWT_VC_FORMAT!r}")
    if query.get("claim_sets") or dcql_query.get("credential_sets") and len(queries) > 1:
        raise APIError(400, "invalid_request", "claim_sets and credential_sets cannot be asked over DIDComm")
    if query.get("trusted_authorities"):
        raise APIError(400, "invalid_request",
                       "trusted_authorities cannot be asked over DIDComm: its credentials carry no X.509 chain")
    vcts = (query.get("meta") or {}).get("vct_values") or []
    if len(vcts) != 1:
        raise APIError(400, "invalid_request", "an Aries request needs exactly one vct in the credential query")
    names: list[str] = []
    values: dict[str, Any] = {}
    for claim in query.get("claims") or []:
        path = claim.get("path") or []
        if len(path) != 1 or not isinstance(path[0], str):
            raise APIError(400, "invalid_request", "an Aries request asks top-level claims only")
        names.append(path[0])
        if claim.get("values") is not None:
            values[path[0]] = claim["values"]
    if not names:
        raise APIError(400, "invalid_request", "an Aries request must ask for at least one claim")
    return str(query.get("id")), str(vcts[0]), names, values


class VerifierAriesChannel:
    """Per-app state: the agent runtime and an HTTP client for issuer DIDs and status lists."""

    def __init__(self, settings: VerifierSettings, db: Any, box: Any) -> None:
        self.settings = settings
        self.db = db
        self.box = box
        self.runtime: AgentRuntime | None = None
        self.http: httpx.AsyncClient | None = None
        #: The OpenID4VP channel's verifier (its anchors, metadata cache, algorithms, leeway), set at
        #: start-up: the issuer documents are checked with its trust policy, not one of our own.
        self.verifier: PresentationVerifier | None = None
        #: Where :meth:`check_pending`'s next turn starts (the creation time of the last request read).
        self._pending_cursor = dt.datetime.min.replace(tzinfo=dt.UTC)

    @property
    def enabled(self) -> bool:
        return self.settings.aries_enabled

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start (or connect to) the agent after the migrations; stop it at shutdown."""
        if not self.enabled:
            yield
            return
        s = self.settings
        local = loopback_base(s.host, s.port)
        self.runtime = await start_runtime(
            name="cartera-verifier", label="Cartera verifier", admin_url=s.aries_admin_url,
            admin_api_key=s.aries_admin_api_key.get_secret_value() if s.aries_admin_api_key else None,
            webhook_key=s.aries_webhook_key.get_secret_value() if s.aries_webhook_key else None,
            data_dir=s.data_dir / "aries-verifier", inbound_port=s.aries_inbound_port,
            admin_port=s.aries_admin_port, endpoint=s.aries_endpoint, webhook_url=f"{local}/v1/aries/webhooks",
            master_key=load_master_key(s), extra_args=[],
            admin_timeout=s.aries_admin_timeout)
        # Issuers' keys and status lists at URLs agencies' templates name: the outbound policy's
        # destinations only, as on the OpenID4VP channel (service_kit.outbound).
        self.http = httpx.AsyncClient(timeout=s.http_timeout, follow_redirects=False,
                                      transport=guarded_transport(s.outbound_policy()))
        self.verifier = app.state.services.verifier
        try:
            if self.runtime.webhook_key:
                async with self.db.session() as session:
                    await replace_webhook_keys(session, AriesWebhookKey, webhook_key_hash(self.runtime.webhook_key),
                                               utcnow())
            tasks = [asyncio.create_task(cleanup.run_periodically(self.remove_settled_records),
                                         name="aries-record-cleanup"),
                     asyncio.create_task(self._sweep_loop(), name="aries-pending-sweep")]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await self.http.aclose()
            await self.runtime.stop()
            self.runtime = None

    async def remove_settled_records(self) -> int:
        """Remove from the agent the finished presentation records of judged transactions that the
        judgement's own removal missed (:mod:`aries.cleanup`): each holds the disclosed claims."""
        async def settled(ids: list[str]) -> tuple[set[str], set[str]]:
            async with self.db.read_session() as session:
                rows = (await session.execute(select(AriesPresentation.pres_ex_id, Transaction.status).join(
                    Transaction, Transaction.id == AriesPresentation.tx_id).where(
                    AriesPresentation.pres_ex_id.in_(ids)))).all()
            return {r[0] for r in rows if r[1] in FINAL_STATUSES}, {r[0] for r in rows}

        return await cleanup.remove_settled_records(self.agent_client(), "presentation", settled, utcnow())

    async def check_pending(self, limit: int = PENDING_CHECK_BATCH) -> int:
        """Read the agent's record of pending requests older than :data:`PENDING_CHECK_AFTER` and act as
        a lost ``present_proof_v2_0`` webhook would have: precheck and verify a received presentation,
        judge a ``done`` or ``abandoned`` one. Returns how many records were read.

        Through :meth:`_process`, as a webhook: the event's key is inserted first, so the sweeps of
        several workers and a late webhook act once. The pending requests are read in turns of
        ``limit``, oldest first, so that all of them are read however many wait."""
        if self.runtime is None:
            return 0
        now = utcnow()
        async with self.db.read_session() as session:
            rows = list((await session.execute(
                select(AriesPresentation.pres_ex_id, AriesPresentation.created_at)
                .join(Transaction, Transaction.id == AriesPresentation.tx_id)
                .where(Transaction.status == "pending", Transaction.expires_at > now,
                       AriesPresentation.created_at <= now - PENDING_CHECK_AFTER,
                       AriesPresentation.created_at > self._pending_cursor)
                .order_by(AriesPresentation.created_at).limit(limit))).all())
        self._pending_cursor = rows[-1][1] if len(rows) == limit else dt.datetime.min.replace(tzinfo=dt.UTC)
        for pres_ex_id, _ in rows:
            try:
                record = await self.agent_client().pres_record(pres_ex_id)
            except AgentRequestFailed as exc:
                if exc.status == 404:
                    continue
                raise
            state = str(record.get("state"))
            if state not in JUDGED_STATES:
                continue
            event = webhooks.WebhookEvent("present_proof_v2_0", str(record.get("thread_id") or pres_ex_id),
                                          pres_ex_id, state, record)
            try:
                processed = await self._process(event)
            except AriesError as exc:
                if not transient(exc):
                    raise
                log.warning("aries presentation left to be judged again", extra={
                    "pres_ex_id": pres_ex_id, "state": state, "code": exc.code})
                continue
            if processed == "processed":
                log.warning("aries presentation found by the sweep (its webhook was lost)",
                            extra={"pres_ex_id": pres_ex_id, "state": state})
        return len(rows)

    async def _sweep_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() - last < PENDING_CHECK_EVERY:
                continue
            last = time.monotonic()
            try:
                await self.check_pending()
            except Exception as exc:  # noqa: BLE001 - the next round tries again (agent or database back)
                log.error("aries pending sweep failed", extra={"error": type(exc).__name__})

    def agent(self) -> AdminClient:
        """The admin client, or 404 (channel off) / 503 (agent gone)."""
        return agent_client(self.runtime, enabled=self.enabled, owner="verifier")

    # -- requests -----------------------------------------------------------------------------------

    async def create_request(self, agency: Agency, template_name: str, *, query_id: str | None,
                             expires_in: int | None, webhook_url: str | None) -> tuple[Transaction, str,
                                                                                        AriesPresentation]:
        """A transaction answered over DIDComm; returns ``(transaction, watch token, presentation row)``."""
        agent = self.agent()
        async with self.db.read_session() as session:
            template = (await session.execute(select(Template).where(
                Template.agency_id == agency.id, Template.name == template_name))).scalar_one_or_none()
        if template is None:
            raise APIError(404, "not_found", "no such template for this agency")
        problem = purpose_problem(template.purpose)
        if problem is not None:
            # A template stored before purpose texts were checked: the text would reach the holder's wallet
            # as the presentation definition's purpose, as OpenID4VP's request object carries it. Refused
            # alike (verifier.routes.agency), before the agent or any issuer is asked.
            raise APIError(400, "invalid_request", f"template {template.name!r}, purpose: {problem}; replace the "
                                                   "template's purpose")
        qid, vct, claims, values = query_for_aries(template.dcql_query, query_id)
        ctype = types_by_vct().get(vct)
        if ctype is None:
            raise APIError(400, "invalid_request", "this credential type is not offered over DIDComm")
        issuers = next((rule.get("issuers") for rule in template.trusted_issuers if rule.get("vct") == vct), None)
        if not issuers:
            raise APIError(400, "invalid_request", "an Aries request needs the template to list its trusted issuers "
                                                   "(https identifiers) for this type")
        for issuer in issuers:
            try:
                check_url(issuer, allow_http_loopback=self.settings.dev_mode)
            except ValueError as exc:
                raise APIError(400, "invalid_request", "trusted issuers must be https identifiers") from exc
        trust = _trust_context(template.trusted_issuers, template.anchors_pem)
        proof_type = self.settings.aries_proof_types.get(ctype.id) or await self.issuers_suite(issuers, vct, trust)
        try:
            request = build_proof_request(ctype, claims, domain=verifier_host(self.settings.public_url),
                                          proof_type=proof_type,
                                          purpose=template.purpose.get("en") or next(iter(template.purpose.values())))
        except VerificationFailed as exc:
            raise APIError(400, "invalid_request", exc.detail, extra={"code": exc.code}) from exc
        try:
            exchange, invitation = await channel.request_proof(agent, request, label=agency.name)
        except AriesError as exc:
            raise unavailable_error(exc) from exc
        spec = RequestSpec(dcql_query=template.dcql_query, purpose=template.purpose,
                           trusted_issuers=template.trusted_issuers, anchors_pem=template.anchors_pem or [],
                           retention_seconds=template.retention_seconds, response_mode=DIDCOMM_RESPONSE_MODE,
                           client_id_prefix=self.settings.default_client_id_prefix
                           if self.settings.default_client_id_prefix != "redirect_uri" else "x509_san_dns",
                           expires_in=expires_in or self.settings.request_ttl, webhook_url=webhook_url,
                           template_name=template.name)
        row = AriesPresentation(pres_ex_id=exchange.record_id, thread_id=exchange.thread_id, query_id=qid, vct=vct,
                                request=asdict(request), issuers=list(issuers), values=values,
                                short_code=secrets.token_urlsafe(16), invitation=invitation.invitation,
                                invitation_url=invitation.invitation_url, created_at=utcnow())
        async with self.db.session() as session:
            created = await create_transaction(session, self.box, agency, spec, public_url=self.settings.public_url)
            await session.flush()
            row.tx_id = created.transaction.id
            session.add(row)
        return created.transaction, created.watch_token, row

    async def presentation_for_code(self, code: str) -> AriesPresentation | None:
        """The pending request behind a short URL."""
        if not code or len(code) > 64:
            return None
        async with self.db.read_session() as session:
            return (await session.execute(PRESENTATION_FOR_CODE, {"code": code, "now": utcnow()})).scalar_one_or_none()

    async def presentation_for_tx(self, agency: Agency, tx_id: str) -> AriesPresentation | None:
        """The Aries part of one of the agency's transactions."""
        async with self.db.read_session() as session:
            return (await session.execute(PRESENTATION_FOR_TX, {"tx_id": tx_id, "agency_id": agency.id})
                    ).scalar_one_or_none()

    # -- webhooks -----------------------------------------------------------------------------------

    async def receive(self, headers: Mapping[str, str], topic: str, body: bytes) -> str:
        """Authenticate, parse and process one delivery once; ``processed``, ``duplicate`` or ``ignored``."""
        given = headers.get("x-api-key") or ""
        known = None
        if given and len(given) <= 200:
            async with self.db.read_session() as session:
                known = await session.get(AriesWebhookKey, webhook_key_hash(given))
        if known is None:
            raise WebhookRefused("webhook_unauthorized", "webhook without the right x-api-key")
        event = webhooks.parse(topic, body)
        if topic != "present_proof_v2_0" or event.state not in JUDGED_STATES:
            return "ignored"
        try:
            return await self._process(event)
        except AriesError as exc:
            if not transient(exc):
                raise
            # The agent did not answer: nothing was judged, the event's key is forgotten. 503 makes
            # ACA-Py deliver it again (every 10 s, four times); after that the sweep finds the request.
            log.warning("aries presentation left to be judged again", extra={
                "pres_ex_id": event.record_id, "state": event.state, "code": exc.code})
            raise unavailable_error(exc) from exc

    async def _process(self, event: webhooks.WebhookEvent) -> str:
        """Process one event once (its stored key inserted first): ``processed`` or ``duplicate``."""
        async with self.db.session() as session:
            first = (await session.execute(dialect_insert(session, AriesWebhookEvent).values(
                key=event.stored_key, received_at=utcnow()).on_conflict_do_nothing()
                .returning(AriesWebhookEvent.key))).scalar_one_or_none()
        if first is None:
            return "duplicate"
        try:
            await self._judge(event)
        except Exception:
            async with self.db.session() as session:
                await session.execute(delete(AriesWebhookEvent).where(AriesWebhookEvent.key == event.stored_key))
            raise
        return "processed"

    async def _judge(self, event: webhooks.WebhookEvent) -> None:
        async with self.db.read_session() as session:
            row = (await session.execute(select(AriesPresentation).where(
                AriesPresentation.pres_ex_id == event.record_id))).scalar_one_or_none()
            tx = await session.get(Transaction, row.tx_id) if row is not None else None
        if row is None or tx is None:
            return
        refused = None
        if event.state == "presentation-received":
            if tx.status != "pending":
                # Judged (or being judged) already: a re-delivery after the first processing failed, or
                # the "done" event of an agent that verified on its own processed first. The agent's
                # record is done or gone by now; asking it to verify again would only fail (404/400).
                return
            refused = await self._verify_if_well_formed(row, tx)
            if refused is None:
                return  # the agent verifies it now; its "done" webhook brings the judgement
        now = utcnow()
        if not await _claim(self.db, tx.id, now):
            return  # answered, expired, or being judged by another delivery
        status, errors, credentials = "rejected", [], None
        try:
            if refused is not None:
                raise refused
            # The agent's record, not the webhook's copy: the policies read what the agent verified.
            record = await self.agent_client().pres_record(row.pres_ex_id)
            request = ProofRequest(**{**row.request, "claims": tuple(row.request["claims"])})
            issuer_url, claims, expires_at = await self._check(record, request, row)
            status = "verified"
            credentials = {row.query_id: [{
                "issuer": issuer_url, "vct": row.vct, "valid_from": None,
                "valid_until": expires_at.isoformat() if expires_at else None,
                "key_source": "aries:did", "claims": claims}]}
        except VerificationFailed as exc:
            if exc.code == DECLINED:
                # No answer, not a wrong one: ended as OpenID4VP ends a wallet's access_denied.
                status, errors = "declined", [CheckError(exc.code, None, exc.detail)]
            else:
                errors = [CheckError(exc.code, row.query_id, exc.detail)]
        except AriesError as exc:
            if transient(exc):
                # No answer from the agent is no judgement: rejected, the transaction would stay so for
                # good (a presentation that may well verify). Given back to be judged again.
                await self._release(tx.id)
                raise
            errors = [CheckError(exc.code, row.query_id, exc.detail)]
        except Exception:  # noqa: BLE001 - never leave a transaction stuck in "processing"
            log.exception("aries presentation check failed unexpectedly")
            errors = [CheckError("verifier.internal_error", row.query_id, "the presentation could not be checked")]
        # The row is ours ("processing") and no redelivery can claim it again: a failed write must not
        # escape (receive() would forget the event and the redelivery find nothing to do). Each write is
        # conditional on "processing", so of these two and the expiry sweep exactly one reports.
        try:
            finished = await _finish(self.db, self.box, tx, status=status, errors=errors, credentials=credentials,
                                     now=utcnow(), from_status="processing")
        except Exception:  # noqa: BLE001 - the fallback below carries no claims to write
            log.exception("aries presentation result could not be written; recording an internal error")
            status, errors = "rejected", [CheckError("verifier.internal_error", row.query_id,
                                                     "the presentation could not be checked")]
            try:
                finished = await _finish(self.db, self.box, tx, status=status, errors=errors, credentials=None,
                                         now=utcnow(), from_status="processing")
            except Exception:  # noqa: BLE001 - left "processing": the sweep expires it (with its webhook)
                log.exception("aries presentation left for the expiry sweep", extra={"transaction_id": tx.id})
                return
        log.info("aries presentation judged", extra={
            "transaction_id": tx.id, "status": status if finished.won else "expired before the check ended",
            "codes": [e.code for e in errors]})
        # The agent keeps every exchange record (--preserve-exchange-records), this one with the
        # holder's presentation: the disclosed claims, in the agent's wallet for ever. Ours are sealed
        # and deleted after the template's retention; the agent's copy goes once the result is written.
        try:
            await self.agent_client().delete_pres_record(row.pres_ex_id)
        except AriesError as exc:
            log.warning("aries presentation record not removed from the agent",
                        extra={"transaction_id": tx.id, "code": exc.code})

    async def _release(self, tx_id: str) -> None:
        """Give back a transaction this worker claimed and could not judge (``processing`` →
        ``pending``), so that a re-delivery or the sweep judges it; one that cannot be given back is
        ended by the expiry sweep, as any left ``processing``."""
        try:
            async with self.db.session() as session:
                await session.execute(update(Transaction).where(
                    Transaction.id == tx_id, checked_on_the_row(Transaction.status, "processing"))
                    .values(status="pending"))
        except Exception:  # noqa: BLE001 - the caller's error is the one to report
            log.exception("aries transaction left processing for the expiry sweep", extra={"transaction_id": tx_id})

    async def _verify_if_well_formed(self, row: AriesPresentation, tx: Transaction) -> AriesError | None:
        """Ask the agent to verify a received presentation whose shape and contexts pass
        :func:`~aries.presentation.precheck_presentation` (None); or the refusal, when they do not: the
        presentation is then judged, and rejected, without being verified.

        The agent does not verify on its own (no ``--auto-verify-presentation``): verifying a JSON-LD
        signature loads every context the holder wrote, and ACA-Py fetches an unknown one with no
        timeout, following redirects, outside the outbound policy, from inside its event loop.
        A record no longer ``presentation-received`` is left to its own state's webhook (None).

        The agent's errors: a transient one (:func:`aries.errors.transient`) is raised, so that the event
        is processed again; a record the agent does not have is refused (``aries.agent_request_failed``);
        a refusal to verify (400: the record moved on, or its verification failed and the agent
        abandoned it) is left to the record's next state.
        """
        try:
            record = await self.agent_client().pres_record(row.pres_ex_id)
        except AgentRequestFailed as exc:
            if transient(exc):
                raise
            return exc
        if record.get("state") != "presentation-received":
            # Past it already: verified by an agent run with --auto-verify-presentation (``done``), or
            # abandoned. That state's own webhook (or the sweep) brings the judgement.
            return None
        request = ProofRequest(**{**row.request, "claims": tuple(row.request["claims"])})
        documents = await self.issuer_documents(list(row.issuers), row.vct,
                                                _trust_context(tx.trusted_issuers, tx.anchors_pem))
        try:
            precheck_presentation(record, request, trusted_issuers=documents.dids())
        except VerificationFailed as exc:
            return documents.explain(exc)
        try:
            await self.agent_client().verify_presentation(row.pres_ex_id)
        except AgentRequestFailed as exc:
            if transient(exc):
                raise
            if exc.status == 404:
                return exc
            log.info("aries presentation not verified by the agent; left to its next state",
                     extra={"pres_ex_id": row.pres_ex_id, "status": exc.status})
        return None

    def agent_client(self) -> AdminClient:
        if self.runtime is None:
            raise AriesError("agent_unavailable", "the Aries agent is not running")
        self.runtime.check()
        return self.runtime.client

    async def _issuer_document(self, issuer: str, vct: str, policy: TrustPolicy) -> dict[str, Any]:
        """The claims of ``<iss>/v1/aries/issuer`` once its signature is trusted for ``vct`` by ``policy``
        (read bounded, within the call deadline, as the verifier's other fetches). Raises
        :class:`FetchError` (no answer) or :class:`VerificationFailed` (an answer not to trust)."""
        assert self.http is not None and self.verifier is not None
        body = await fetch_bytes(self.http, f"{issuer}/v1/aries/issuer", accept=ISSUER_DOCUMENT_ACCEPT,
                                 max_bytes=self.settings.max_fetch_bytes)
        try:
            jws = parse_jws(body.decode("ascii").strip())
            claims = jws.json_payload()
        except (UnicodeDecodeError, JOSEError) as exc:
            raise VerificationFailed("issuer_document_unsigned", f"the issuer document of {issuer} is not a "
                                     "signed JWT; its DIDs are not trusted") from exc
        if jws.header.get("typ") != ISSUER_DOCUMENT_TYP:
            raise VerificationFailed("issuer_document_unsigned", f"the issuer document of {issuer} is not an "
                                     f"{ISSUER_DOCUMENT_TYP}; its DIDs are not trusted")
        if "x5c" not in jws.header and policy.metadata_issuer(issuer):
            await self.verifier.metadata.prefetch(issuer)
        now = time.time()
        try:
            # The key as for an SD-JWT VC of ``vct`` from ``issuer``: the URL the template trusts, not the
            # document's own ``iss`` (the leaf's SAN must name it).
            key = policy.resolve(jws.header, {"vct": vct, "iss": issuer}, now=now).key
        except SSIError as exc:
            raise VerificationFailed("issuer_document_untrusted", f"the issuer document of {issuer} is not "
                                     f"signed by a key trusted for that issuer ({exc.code})") from exc
        try:
            verify_parsed(jws, key, self.verifier.algorithms)
        except JOSEError as exc:
            raise VerificationFailed("issuer_document_bad_signature", f"the issuer document of {issuer} does "
                                     f"not verify ({exc.code})") from exc
        if claims.get("iss") != issuer:
            raise VerificationFailed("issuer_document_invalid", f"the issuer document of {issuer} names "
                                     "another issuer")
        try:
            check_time_claims(claims, now=now, leeway=self.verifier.leeway, require=("iat", "exp"))
        except JOSEError as exc:
            raise VerificationFailed("issuer_document_invalid", f"the issuer document of {issuer} is not "
                                     f"valid now ({exc.code})") from exc
        dids, suites = claims.get("dids"), claims.get("suites", {})
        if not isinstance(dids, dict) or not all(isinstance(d, str) for d in dids.values()) \
                or not isinstance(suites, dict):
            raise VerificationFailed("issuer_document_invalid", f"the issuer document of {issuer} has no "
                                     "readable dids or suites")
        return claims

    async def issuer_documents(self, issuers: list[str], vct: str, trust: TransactionContext) -> IssuerDocuments:
        """The documents of the trusted issuers, fetched at once and checked with the transaction's trust."""
        assert self.verifier is not None
        policy = self.verifier.policy(trust)

        async def one(issuer: str) -> dict[str, Any] | VerificationFailed | None:
            try:
                return await self._issuer_document(issuer, vct, policy)
            except FetchError:
                return None
            except VerificationFailed as exc:
                return exc

        documents = IssuerDocuments()
        for issuer, got in zip(issuers, await asyncio.gather(*(one(i) for i in issuers)), strict=True):
            if got is None:
                documents.unreachable.append(issuer)
            elif isinstance(got, VerificationFailed):
                documents.refused[issuer] = got
            else:
                documents.verified[issuer] = got
        if documents.refused:
            log.warning("aries issuer documents refused", extra={
                "issuers": list(documents.refused), "codes": [e.code for e in documents.refused.values()]})
        return documents

    async def issuers_suite(self, issuers: list[str], vct: str, trust: TransactionContext) -> str:
        """The signature suite to ask for ``vct`` when the settings pin none: the one the trusted issuers
        publish for it in their verified documents. A request in another suite could never be answered
        (an Ed25519 credential cannot yield a BBS+ derived proof, and the holder's agent presents a BBS+
        one only derived). Issuers that publish no suite for it leave BBS+; issuers that disagree answer
        400, as one request cannot ask both. When no document verifies, no answer could be trusted: 400
        with the refusal's code when every issuer answered one we refuse (the template's trust or the
        issuer's set-up must change), else 503 (one may answer shortly)."""
        documents = await self.issuer_documents(issuers, vct, trust)
        if not documents.verified:
            if documents.refused and not documents.unreachable:
                refusal = next(iter(documents.refused.values()))
                raise APIError(400, "invalid_request", refusal.detail, extra={"code": refusal.code})
            raise APIError(503, "temporarily_unavailable", "no trusted issuer answered at <iss>/v1/aries/issuer; "
                                                           "try again shortly", headers={"Retry-After": "30"})
        suites = set()
        for document in documents.verified.values():
            suite = document["suites"].get(vct)
            if suite in SUITES:
                suites.add(suite)
        if len(suites) > 1:
            raise APIError(400, "invalid_request", "the trusted issuers sign this type with different signature "
                                                   "suites; pin one in CARTERA_VERIFIER_ARIES_PROOF_TYPES")
        return suites.pop() if suites else BBS

    async def _check(self, record: dict[str, Any], request: ProofRequest,
                     row: AriesPresentation) -> tuple[str, dict[str, Any], dt.datetime | None]:
        assert self.http is not None
        async with self.db.read_session() as session:
            tx = await session.get(Transaction, row.tx_id)  # its trust: the template's when it was asked
        assert tx is not None
        documents = await self.issuer_documents(list(row.issuers), row.vct,
                                                _trust_context(tx.trusted_issuers, tx.anchors_pem))
        dids = documents.dids()
        lookup = status_lookup(self.agent_client(), self.http, max_bytes=self.settings.max_fetch_bytes,
                               allowed_prefixes=tuple(f"{issuer}/" for issuer in row.issuers))
        try:
            verified = await check_presentation(record, request, trusted_issuers=dids, status_lookup=lookup)
        except VerificationFailed as exc:
            explained = documents.explain(exc)
            if explained is exc:
                raise
            raise explained from exc
        check_values(verified.claims, row.values or {})
        return dids[verified.issuer], verified.claims, verified.expires_at


def check_values(claims: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Raise ``values_mismatch`` unless each claim named in ``values`` has one of its accepted values,
    compared as the OpenID4VP channel compares them (:func:`ssi.dcql.value_matches`: by type and
    value, so ``true`` is not ``1``, nor ``1`` ``true`` or ``1.0``)."""
    for name, accepted in values.items():
        if not value_matches(claims.get(name), accepted):
            raise VerificationFailed("values_mismatch", f"claim {name} has none of the accepted values")


def _trust_context(trusted_issuers: list[dict[str, Any]] | None, anchors_pem: list[str] | None) -> TransactionContext:
    """What :meth:`PresentationVerifier.policy` reads of a transaction (its rules and extra anchors)."""
    return TransactionContext(client_id="", nonce="", dcql_query={}, trusted_issuers=list(trusted_issuers or []),
                              anchors_pem=list(anchors_pem or []))
