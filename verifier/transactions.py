"""Presentation transactions: creation, request objects, answering, results, expiry, purge, webhooks.

All state is in the database: a transaction row is claimed with one conditional ``UPDATE`` when an
answer arrives (``pending`` → ``processing``), so of two concurrent answers exactly one is checked,
on any number of workers. The final state is written by another conditional ``UPDATE`` (from the
status read), so of a check finishing and the expiry sweep exactly one outcome, and one webhook, wins:
a ``processing`` row whose check never finished (process stopped, write failed) is expired by the
sweep like a pending one. Presentation digests go into ``used_presentations`` (primary key), so a
``vp_token`` that was checked once is refused everywhere afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from aries.storage import WEBHOOK_EVENT_RETENTION
from service_kit.crypto import SecretBox
from service_kit.db import Database
from service_kit.errors import APIError
from ssi import x509 as ssi_x509
from ssi.encoding import json_dumps, json_loads
from ssi.errors import SSIError
from ssi.jose import Key
from ssi.oid4vp import (
    SELF_ISSUED_AUDIENCE,
    VPTokenResponse,
    build_authorization_request_uri,
    parse_direct_post_jwt,
    sign_request_object,
    unsigned_request_object,
)
from verifier.agencies import SigningKeys, verifier_host
from verifier.aries_models import AriesWebhookEvent
from verifier.models import Agency, Transaction, UsedPresentation, WebhookOutbox
from verifier.statements import (
    CLAIM_AND_RECORD_DIGEST_PG,
    CLAIM_TRANSACTION,
    FINISH_TRANSACTION,
    INSERT_TRANSACTION,
    OVERDUE_TRANSACTIONS,
    PURGE_CLAIMS,
    RECORD_DIGEST,
    TRANSACTION_BY_ID,
    checked_on_the_row,
)
from verifier.verification import CheckError, Outcome, PresentationVerifier, TransactionContext

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"verified", "rejected", "declined", "expired"})
#: How long a presentation digest is kept in ``used_presentations``. A ``vp_token`` is accepted only by
#: the one transaction whose nonce and client id its (required) KB-JWT signs, and only while that
#: transaction is pending, before its ``expires_at``: at most 86,400 s (the largest ``expires_in`` or
#: ``request_ttl``) after the transaction was created, so at most that long after the digest's
#: ``created_at``. The KB-JWT's ``iat`` window (``kb_max_age`` + ``clock_leeway``) is tighter by
#: default, but ``kb_max_age`` has no upper bound, so the transaction's is the bound relied on. Two
#: days, twice that, so clocks that differ between workers (the sweep's ``now`` against another
#: worker's ``created_at``) cannot cut it short.
USED_PRESENTATION_RETENTION = dt.timedelta(days=2)
JWE_ENCRYPTIONS = ("A128GCM", "A256GCM")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def token_hash(value: str) -> str:
    """Stored form of response codes and watch tokens (random 256-bit values: SHA-256 suffices)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """What a new presentation request asks for (from a template, or ad hoc)."""

    dcql_query: dict[str, Any]
    purpose: dict[str, str]
    trusted_issuers: list[dict[str, Any]]
    anchors_pem: list[str]
    retention_seconds: int
    response_mode: str
    client_id_prefix: str
    expires_in: int
    webhook_url: str | None = None
    redirect_uri: str | None = None
    template_name: str | None = None


#: The ``response_mode`` of a transaction answered over DIDComm (verifier.aries_channel): the OpenID4VP
#: endpoints neither serve a request object for it nor take an answer to it.
DIDCOMM_RESPONSE_MODE = "didcomm"


@dataclass(frozen=True, slots=True)
class CreatedRequest:
    transaction: Transaction
    watch_token: str


def client_id_for(prefix: str, agency: Agency, public_url: str, response_uri: str) -> str:
    """The full Client Identifier (with its prefix) of ``agency`` for one request."""
    if prefix == "x509_san_dns":
        return f"x509_san_dns:{verifier_host(public_url)}"
    if prefix == "x509_hash":
        leaf = ssi_x509.load_certificate(_der(agency.x5c[0]))
        return f"x509_hash:{ssi_x509.x509_hash(leaf)}"
    if prefix == "redirect_uri":
        return f"redirect_uri:{response_uri}"
    raise APIError(400, "invalid_request", "unknown client_id_prefix")


def _der(x5c_entry: str) -> bytes:
    import base64

    return base64.b64decode(x5c_entry)


def response_uri(public_url: str, tx_id: str) -> str:
    return f"{public_url}/v1/wallet/responses/{tx_id}"


def request_uri(public_url: str, tx_id: str) -> str:
    return f"{public_url}/v1/wallet/requests/{tx_id}"


def wallet_uris(tx: Transaction, public_url: str) -> dict[str, str]:
    """``openid4vp://`` and ``haip-vp://`` links for the transaction."""
    ruri = request_uri(public_url, tx.id)
    return {
        "uri": build_authorization_request_uri("openid4vp://", tx.client_id, ruri),
        "haip_uri": build_authorization_request_uri("haip-vp://", tx.client_id, ruri),
        "request_uri": ruri,
    }


def new_transaction_id() -> str:
    """A random transaction id (256 bits, base64url, 43 characters) that never begins with ``-``: an
    operator types it as a command-line argument (``cartera verifier result <id>``), where one that
    did was read as an option — one id in 64."""
    while (tx_id := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return tx_id


_TRANSACTION_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def is_transaction_id(value: str) -> bool:
    """Whether ``value`` has the form of a transaction id (:func:`new_transaction_id`): anything else is
    answered as an unknown request without a query (a NUL or an odd character never reaches one)."""
    return _TRANSACTION_ID.fullmatch(value) is not None


async def create_transaction(session: AsyncSession | AsyncConnection, box: SecretBox, agency: Agency,
                             spec: RequestSpec, *, public_url: str) -> CreatedRequest:
    """Insert a pending transaction for ``spec``; the watch token (for the live status) is returned once.

    With a Core connection (the request-creation hot path) the row is inserted at once by one
    prebuilt ``INSERT``; with an ORM session it is added to the session's unit of work.
    """
    tx_id = new_transaction_id()
    now = utcnow()
    watch_token = secrets.token_urlsafe(32)
    enc_key: bytes | None = None
    if spec.response_mode == "direct_post.jwt":
        key = Key.generate("ES256")
        enc_key = box.seal(json_dumps(key.private_jwk()).encode(), f"tx:{tx_id}:enc".encode())
    values: dict[str, Any] = dict(
        id=tx_id, agency_id=agency.id, template_name=spec.template_name, dcql_query=spec.dcql_query,
        purpose=spec.purpose, trusted_issuers=spec.trusted_issuers, anchors_pem=spec.anchors_pem,
        retention_seconds=spec.retention_seconds,
        client_id=client_id_for(spec.client_id_prefix, agency, public_url, response_uri(public_url, tx_id)),
        response_mode=spec.response_mode, nonce=secrets.token_urlsafe(32), state=secrets.token_urlsafe(24),
        encryption_key=enc_key, status="pending", created_at=now,
        expires_at=now + dt.timedelta(seconds=spec.expires_in), webhook_url=spec.webhook_url,
        redirect_uri=spec.redirect_uri, watch_token_hash=token_hash(watch_token), errors=[], record={},
        completed_at=None, purge_at=None, response_code_hash=None, result=None, claims_deleted_at=None,
    )
    tx = Transaction(**values)
    if isinstance(session, AsyncSession):
        session.add(tx)
    else:  # a Core connection (SQLAlchemy's or service_kit's StatementConnection)
        await session.execute(INSERT_TRANSACTION, values)
    return CreatedRequest(tx, watch_token)


async def read_transaction(conn: AsyncConnection, tx_id: str) -> Transaction | None:
    """The transaction as a read-only row with the columns of :class:`Transaction` (no ORM instance:
    cheaper on the hot paths, which only read it); ``None`` for an id of another form, unread."""
    if not is_transaction_id(tx_id):
        return None
    return (await conn.execute(TRANSACTION_BY_ID, {"tx_id": tx_id})).first()  # type: ignore[return-value]


def _encryption_key(box: SecretBox, tx: Transaction) -> Key:
    assert tx.encryption_key is not None
    return Key.from_jwk(json_loads(box.open(tx.encryption_key, f"tx:{tx.id}:enc".encode())))


def encryption_jwk(box: SecretBox, tx: Transaction) -> dict[str, Any]:
    """The public ECDH-ES key wallets encrypt ``direct_post.jwt`` responses to."""
    public = _encryption_key(box, tx).public_jwk()
    jwk = {k: public[k] for k in ("kty", "crv", "x", "y")}
    jwk.update({"use": "enc", "alg": "ECDH-ES", "kid": f"enc-{tx.id[:16]}"})
    return jwk


def request_object_claims(tx: Transaction, box: SecretBox, *, public_url: str, algorithms: tuple[str, ...],
                          wallet_nonce: str | None) -> dict[str, Any]:
    """The Authorization Request parameters of the transaction (OpenID4VP 1.0 §5)."""
    metadata: dict[str, Any] = {
        "vp_formats_supported": {"dc+sd-jwt": {"sd-jwt_alg_values": list(algorithms),
                                               "kb-jwt_alg_values": list(algorithms)}},
    }
    if tx.response_mode == "direct_post.jwt":
        metadata["jwks"] = {"keys": [encryption_jwk(box, tx)]}
        metadata["encrypted_response_enc_values_supported"] = list(JWE_ENCRYPTIONS)
    claims: dict[str, Any] = {
        "aud": SELF_ISSUED_AUDIENCE,
        "client_id": tx.client_id,
        "response_type": "vp_token",
        "response_mode": tx.response_mode,
        "response_uri": response_uri(public_url, tx.id),
        "nonce": tx.nonce,
        "state": tx.state,
        "dcql_query": tx.dcql_query,
        "client_metadata": metadata,
        # Not an OpenID4VP parameter: the purpose shown by wallets that understand it (ca/es/en).
        "purpose": tx.purpose,
        "iat": int(utcnow().timestamp()),
        "exp": int(tx.expires_at.timestamp()),
    }
    if wallet_nonce is not None:
        claims["wallet_nonce"] = wallet_nonce
    return claims


def signed_request_object(tx: Transaction, agency: Agency, keys: SigningKeys, box: SecretBox, *, public_url: str,
                          algorithms: tuple[str, ...], wallet_nonce: str | None) -> str:
    """The request object: signed with the agency key and ``x5c`` (unsigned for ``redirect_uri:``)."""
    claims = request_object_claims(tx, box, public_url=public_url, algorithms=algorithms, wallet_nonce=wallet_nonce)
    if tx.client_id.startswith("redirect_uri:"):
        return unsigned_request_object(claims)
    return sign_request_object(claims, keys.key_for(agency), agency.x5c)


# -- answers -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AnswerOutcome:
    """What the response endpoint answers the wallet."""

    status: str
    errors: list[dict[str, Any]]
    redirect_uri: str | None
    #: Whether a webhook was queued (the background task is woken at once).
    webhook: bool = False


def parse_answer(tx: Transaction, box: SecretBox, form: Mapping[str, Any]) -> VPTokenResponse:
    """The Authorization Response from the form, decrypted for ``direct_post.jwt``."""
    if tx.response_mode == "direct_post.jwt":
        return parse_direct_post_jwt(form, _encryption_key(box, tx), encryptions=JWE_ENCRYPTIONS)
    if "response" in form:
        raise APIError(400, "invalid_request", "this request expects direct_post, not an encrypted response",
                       extra={"code": "verifier.unexpected_jwe"})
    return VPTokenResponse.from_form(form)


def _digests(vp_token: Mapping[str, Any]) -> list[str]:
    found: set[str] = set()
    for items in vp_token.values():
        for item in items:
            text = item if isinstance(item, str) else json_dumps(item)
            found.add(hashlib.sha256(text.encode("utf-8")).hexdigest())
    return sorted(found)


async def _claim(db: Database, tx_id: str, now: dt.datetime) -> bool:
    # A conditional UPDATE is atomic alone: autocommit saves the BEGIN/COMMIT round trips.
    async with db.statement_connection() as conn:
        return (await conn.execute(CLAIM_TRANSACTION, {"tx_id": tx_id, "now": now})).first() is not None


async def _record_digests(db: Database, tx_id: str, digests: list[str], now: dt.datetime) -> bool:
    """Insert the presentation digests; ``False`` when one was seen before (a replay).

    One ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: fewer rows back than digests means one was
    recorded already (by any worker, at any time), whichever of two concurrent inserts came first.
    """
    if not digests:
        return True
    try:
        async with db.statement_connection() as conn:
            if len(digests) == 1:
                stmt = RECORD_DIGEST[db.backend]
                inserted = (await conn.execute(stmt, {"digest": digests[0], "tx_id": tx_id, "now": now})).all()
            else:
                insert = pg_insert if db.backend == "postgresql" else sqlite_insert
                stmt = (insert(UsedPresentation)
                        .values([{"digest": d, "transaction_id": tx_id, "created_at": now} for d in digests])
                        .on_conflict_do_nothing(index_elements=["digest"]).returning(UsedPresentation.digest))
                inserted = (await conn.execute(stmt)).all()
    except IntegrityError:
        return False
    return len(inserted) == len(digests)


def result_body(tx: Transaction, box: SecretBox, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The result as agencies read it (polling, webhook, CLI). Claims are hidden once purged."""
    now = now or utcnow()
    status = tx.status
    if status in ("pending", "processing") and tx.expires_at <= now:
        status = "expired"
    if status == "processing":
        status = "pending"
    credentials: dict[str, Any] = {}
    purged = tx.claims_deleted_at is not None or (tx.purge_at is not None and tx.purge_at <= now)
    if tx.result is not None and not purged:
        credentials = json_loads(box.open(tx.result, f"tx:{tx.id}:result".encode()))
    claims = {qid: items[0]["claims"] for qid, items in credentials.items() if items}
    return {
        "id": tx.id,
        "status": status,
        "template": tx.template_name,
        "claims": claims,
        "credentials": credentials,
        "record": tx.record or {},
        "errors": tx.errors or [],
        "created_at": tx.created_at.isoformat(),
        "expires_at": tx.expires_at.isoformat(),
        "completed_at": tx.completed_at.isoformat() if tx.completed_at else None,
        "claims_deleted": purged and tx.result is not None or tx.claims_deleted_at is not None,
    }


async def webhook_body(db: Database, box: SecretBox, stored: bytes) -> bytes | None:
    """The body to POST for an outbox row: ``{"event", "transaction_id", "result"}``, the result read
    now, as polling would show it (its claims hidden once past their retention). ``None`` when the
    transaction is gone."""
    reference = json_loads(stored)
    tx_id = reference.get("transaction_id") if isinstance(reference, dict) else None
    if not isinstance(tx_id, str):
        return None
    async with db.read_session() as session:
        tx = await session.get(Transaction, tx_id)
    if tx is None:
        return None
    return json_dumps({"event": reference["event"], "transaction_id": tx.id,
                       "result": result_body(tx, box)}).encode()


@dataclass(frozen=True, slots=True)
class Finished:
    """What :func:`_finish` did: ``won`` is false when the row had left ``from_status`` already (another
    outcome was written first, e.g. the expiry sweep's): nothing was written and no webhook queued."""

    won: bool
    #: The same-device response code (a verified answer to a request with ``redirect_uri``).
    response_code: str | None = None


async def _finish(db: Database, box: SecretBox, tx: Transaction, *, status: str, errors: list[CheckError],
                  credentials: dict[str, Any] | None, now: dt.datetime, from_status: str) -> Finished:
    """Write the final state (and the webhook outbox row) in one transaction, only if the row is still
    in ``from_status``: of two writers (a check finishing, the expiry) exactly one wins and reports."""
    response_code: str | None = None
    values: dict[str, Any] = {
        "status": status,
        "errors": [e.as_dict() for e in errors],
        "completed_at": now,
        "purge_at": now + dt.timedelta(seconds=tx.retention_seconds),
    }
    if credentials:
        values["result"] = box.seal(json_dumps(credentials).encode(), f"tx:{tx.id}:result".encode())
        values["record"] = {qid: [{k: c[k] for k in ("issuer", "vct", "valid_from", "valid_until", "key_source")}
                                  for c in items] for qid, items in credentials.items()}
    if tx.redirect_uri and status == "verified":
        response_code = secrets.token_urlsafe(32)
        values["response_code_hash"] = token_hash(response_code)
    if not tx.webhook_url:
        # The conditional UPDATE alone is atomic: autocommit, prebuilt statement, no ORM.
        params = {"tx_id": tx.id, "from_status": from_status, "new_result": None, "new_record": {},
                  "new_response_code_hash": None, **{f"new_{k}": v for k, v in values.items()}}
        async with db.statement_connection() as conn:
            if (await conn.execute(FINISH_TRANSACTION, params)).first() is None:
                return Finished(False)
        return Finished(True, response_code)
    # With a webhook the outbox row must commit with the result: one transaction.
    async with db.session() as session:
        result = await session.execute(
            update(Transaction).where(Transaction.id == tx.id, checked_on_the_row(Transaction.status, from_status))
            .values(**values).returning(Transaction.id))
        if result.first() is None:
            return Finished(False)
        if tx.webhook_url:
            # The row names the event; the body, claims included, is rendered from the transaction when
            # it is sent (webhook_body). Written here it kept the claims in clear, and past their
            # retention: the transaction's own copy is sealed and deleted at purge_at.
            reference = {"event": f"presentation.{status}", "transaction_id": tx.id}
            session.add(WebhookOutbox(id=str(uuid.uuid4()), endpoint_id=tx.agency_id, url=tx.webhook_url,
                                      event_type=f"presentation.{status}", body=json_dumps(reference).encode(),
                                      attempts=0, created_at=now, next_attempt_at=now))
    return Finished(True, response_code)


async def _lost(db: Database, tx_id: str) -> APIError:
    """The refusal for an answer whose result lost to another outcome (the expiry sweep, in practice)."""
    async with db.statement_connection() as conn:
        tx = await read_transaction(conn, tx_id)
    if tx is not None and tx.status == "expired":
        return APIError(400, "invalid_request", "the request has expired", extra={"code": "verifier.expired_transaction"})
    return APIError(400, "invalid_request", "the request was answered already",
                    extra={"code": "verifier.already_answered"})


async def answer(db: Database, box: SecretBox, verifier: PresentationVerifier, tx_id: str,
                 form: Mapping[str, Any]) -> AnswerOutcome:
    """Handle a ``direct_post``/``direct_post.jwt`` Authorization Response for transaction ``tx_id``."""
    now = utcnow()
    async with db.statement_connection() as conn:
        tx = await read_transaction(conn, tx_id)
    if tx is None or tx.response_mode == DIDCOMM_RESPONSE_MODE:
        raise APIError(404, "invalid_request", "unknown transaction", extra={"code": "verifier.unknown_transaction"})
    if tx.status in ("pending", "processing") and tx.expires_at <= now:
        await expire_one(db, box, tx, now)
        raise APIError(400, "invalid_request", "the request has expired", extra={"code": "verifier.expired_transaction"})
    if tx.status == "expired":
        raise APIError(400, "invalid_request", "the request has expired", extra={"code": "verifier.expired_transaction"})
    if tx.status != "pending":
        raise APIError(400, "invalid_request", "the request was answered already",
                       extra={"code": "verifier.already_answered"})
    try:
        response = parse_answer(tx, box, form)
    except SSIError as exc:
        raise APIError(400, "invalid_request", "the authorization response is malformed",
                       extra={"code": exc.code}) from None
    if response.state != tx.state:
        raise APIError(400, "invalid_request", "state does not match the request", extra={"code": "verifier.state_mismatch"})
    if response.error is not None:
        code = f"wallet.{response.error}" if len(response.error) <= 64 else "wallet.error"
        errors = [CheckError(code, None, "the wallet did not present (the citizen declined or could not)")]
        if not await _claim(db, tx.id, now):
            raise APIError(400, "invalid_request", "the request was answered already",
                           extra={"code": "verifier.already_answered"})
        status, errors, finished = await _finish_answer(db, box, tx, status="declined", errors=errors,
                                                        credentials=None)
        if not finished.won:
            raise await _lost(db, tx.id)
        return AnswerOutcome(status, [e.as_dict() for e in errors], None, bool(tx.webhook_url))
    assert response.vp_token is not None
    digests = _digests(response.vp_token)
    fresh: bool | None = None
    if db.backend == "postgresql" and len(digests) == 1:
        async with db.statement_connection() as conn:
            claimed, inserted = (await conn.execute(CLAIM_AND_RECORD_DIGEST_PG, {
                "tx_id": tx.id, "now": now, "digest": digests[0], "created": now})).one()
        if not claimed:
            raise APIError(400, "invalid_request", "the request was answered already",
                           extra={"code": "verifier.already_answered"})
        fresh = bool(inserted)
    elif not await _claim(db, tx.id, now):
        raise APIError(400, "invalid_request", "the request was answered already",
                       extra={"code": "verifier.already_answered"})
    outcome: Outcome
    try:
        if fresh is None:
            fresh = await _record_digests(db, tx.id, digests, now)
        if not fresh:
            outcome = Outcome(errors=[CheckError("verifier.replayed_vp_token", None,
                                                 "this presentation was submitted before")])
        else:
            ctx = TransactionContext(client_id=tx.client_id, nonce=tx.nonce, dcql_query=tx.dcql_query,
                                     trusted_issuers=tx.trusted_issuers, anchors_pem=tx.anchors_pem or [])
            outcome = await verifier.check(ctx, response.vp_token)
    except Exception as exc:  # noqa: BLE001 - never leave a transaction stuck in "processing"
        _log_failure("presentation check failed unexpectedly", exc, tx.id)
        outcome = Outcome(errors=[_internal_error()])
    status = "verified" if outcome.verified else "rejected"
    if not outcome.errors and not outcome.credentials:
        outcome.errors.append(CheckError("verifier.empty_presentation", None, "nothing was presented"))
    status, errors, finished = await _finish_answer(db, box, tx, status=status, errors=outcome.errors,
                                                    credentials=outcome.credentials or None)
    if not finished.won:
        # The request expired while it was checked and the sweep wrote (and reported) that first.
        raise await _lost(db, tx.id)
    code = finished.response_code
    redirect = f"{tx.redirect_uri}#response_code={code}" if code and tx.redirect_uri else None
    return AnswerOutcome(status, [e.as_dict() for e in errors], redirect, bool(tx.webhook_url))


def _internal_error() -> CheckError:
    return CheckError("verifier.internal_error", None, "the presentation could not be checked")


def _log_failure(message: str, exc: BaseException, tx_id: str) -> None:
    """Log an unexpected failure of an answer. The service's log formatter writes an exception's type
    and traceback, never its text (which may quote claim values: service_kit.logging)."""
    log.error(message, exc_info=exc, extra={"transaction_id": tx_id})


async def _finish_answer(db: Database, box: SecretBox, tx: Transaction, *, status: str, errors: list[CheckError],
                         credentials: dict[str, Any] | None) -> tuple[str, list[CheckError], Finished]:
    """Write the outcome of an answer the caller claimed (``processing``): ``(status, errors, finished)``.

    If the write fails (anything: a value that cannot be stored, the database), the answer is recorded
    as ``rejected`` with ``verifier.internal_error`` and no claims instead, and the wallet is told so;
    if that fails too, the wallet gets 500 ``server_error`` and the row, still ``processing``, is
    ended as ``expired`` by the sweep at its ``expires_at`` (with its webhook). Every write is
    conditional on ``processing``, so of these and the sweep exactly one outcome is recorded."""
    try:
        return status, errors, await _finish(db, box, tx, status=status, errors=errors, credentials=credentials,
                                             now=utcnow(), from_status="processing")
    except Exception as exc:  # noqa: BLE001 - the fallback below carries no claims to write
        _log_failure("presentation result could not be written; recording an internal error", exc, tx.id)
    errors = [_internal_error()]
    try:
        return "rejected", errors, await _finish(db, box, tx, status="rejected", errors=errors, credentials=None,
                                                 now=utcnow(), from_status="processing")
    except Exception as exc:  # noqa: BLE001 - left "processing": the sweep expires it (with its webhook)
        _log_failure("presentation result left for the expiry sweep", exc, tx.id)
    raise APIError(500, "server_error", "the answer could not be recorded; the request will end as expired",
                   extra={"code": "verifier.internal_error"})


async def expire_one(db: Database, box: SecretBox, tx: Transaction, now: dt.datetime) -> bool:
    """Mark a transaction past its expiry as expired (once; with its webhook); whether this call did.

    ``pending`` (nobody answered) or ``processing`` (an answer whose check never finished: its
    process stopped, or its result could not be written). The write is conditional on the status
    read, so a check that does finish afterwards loses to the expiry and reports nothing."""
    if tx.status not in ("pending", "processing"):
        return False
    finished = await _finish(db, box, tx, status="expired", errors=[CheckError(
        "verifier.expired_transaction", None, "no answer before the request expired")],
        credentials=None, now=now, from_status=tx.status)
    return finished.won


async def sweep(db: Database, box: SecretBox, *, now: dt.datetime | None = None, limit: int = 200) -> dict[str, int]:
    """Periodic housekeeping: expire overdue pending (and stuck processing) requests, delete claims past
    their retention, and the replay guards past theirs (presentation digests, Aries webhook keys)."""
    now = now or utcnow()
    async with db.read_session() as session:
        overdue = list((await session.scalars(OVERDUE_TRANSACTIONS, {"now": now, "limit": limit})).all())
    expired = 0
    for tx in overdue:
        expired += await expire_one(db, box, tx, now)
    async with db.session() as session:
        purged_count = len((await session.execute(PURGE_CLAIMS, {"now": now, "deleted_at": now})).all())
        # Each a range of its created_at/received_at index: only the rows past retention are read.
        guards_purged = 0
        for model, column, retention in (
                (UsedPresentation, UsedPresentation.created_at, USED_PRESENTATION_RETENTION),
                (AriesWebhookEvent, AriesWebhookEvent.received_at, WEBHOOK_EVENT_RETENTION)):
            result = await session.execute(delete(model).where(column < now - retention))
            guards_purged += result.rowcount or 0  # type: ignore[attr-defined]
    return {"expired": expired, "purged": purged_count, "guards_purged": guards_purged}
