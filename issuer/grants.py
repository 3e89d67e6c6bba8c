"""Offers, pre-authorized codes, transaction codes, access tokens (in the database, hashed) and nonces.

* A pre-authorized code is single-use and short-lived; its transaction code allows
  ``tx_code_max_attempts`` wrong tries, each counted in the statement that compares it, after which
  the code is burnt.
* An access token names the subject and the configurations it may obtain; the credential endpoint
  allows one issuance per configuration (see :mod:`issuer.routes.protocol`).
* A ``c_nonce`` is checked without storage (``issuer.nonces``) and recorded, hashed, when a proof
  uses it, under a primary key, so of concurrent proofs carrying it exactly one is accepted.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import Delete, delete, select, text, update

from aries.storage import WEBHOOK_EVENT_RETENTION
from service_kit.errors import APIError
from service_kit.ratelimit import Charge, Decision, Limit, RateLimiter, refuse_if_blocked
from ssi.oid4vci import (
    INVALID_GRANT,
    INVALID_REQUEST,
    PRE_AUTHORIZED_CODE_GRANT,
    build_credential_offer_uri,
)

from . import statements
from .aries_models import AriesExchange, AriesWebhookEvent
from .authorization import INVALID_AUTHORIZATION_DETAILS
from .binding import USED_RECORD_MARGIN, token_refused
from .context import IssuerContext, new_id, new_secret, new_tx_code, secret_hash, utcnow
from .models import (
    AccessToken,
    AuthorizationRequest,
    DeferredTransaction,
    DPoPProofUse,
    IssuanceClaim,
    Nonce,
    Offer,
    StoredResponse,
)
from .nonces import mint_nonce
from .tenancy import TenantRef


@dataclass(frozen=True)
class CreatedOffer:
    """What the admin API returns for a new offer (the secrets appear here only, once)."""

    offer_id: str
    offer: dict[str, Any]
    offer_uri: str
    credential_offer_uri: str
    tx_code: str | None
    credential_ids: dict[str, str]
    expires_at: dt.datetime


async def create_offer(ctx: IssuerContext, tenant: TenantRef, configuration_ids: list[str], subject: dict[str, Any], *,
                       with_tx_code: bool = True, by_reference: bool = True, selector: str | None = None,
                       tx_code_description: str | None = None, authorization_code: bool = False) -> CreatedOffer:
    """Create a pre-authorized offer for ``subject`` (and reserve one credential id per configuration).

    With ``authorization_code`` the offer also carries the authorization code grant with
    ``issuer_state`` = the offer id: a wallet may then log the citizen in instead, and only the
    offer's subject is accepted.
    """
    code = new_secret()
    tx_code = new_tx_code(ctx.settings.tx_code_length) if with_tx_code else None
    offer_id = new_id("o_", 12)
    issuer = ctx.issuer_url(tenant.slug)
    grant: dict[str, Any] = {"pre-authorized_code": code}
    if tx_code is not None:
        grant["tx_code"] = {"input_mode": "numeric", "length": len(tx_code),
                            "description": tx_code_description or "Enter the code you received with this offer"}
    grants: dict[str, Any] = {PRE_AUTHORIZED_CODE_GRANT: grant}
    if authorization_code:
        grants["authorization_code"] = {"issuer_state": offer_id}
    offer = {"credential_issuer": issuer, "credential_configuration_ids": configuration_ids, "grants": grants}
    now = utcnow()
    expires = now + dt.timedelta(seconds=ctx.settings.offer_ttl)
    credential_ids = {cid: new_id("c_", 12) for cid in configuration_ids}
    async with ctx.single_statement() as conn:
        await conn.execute(statements.INSERT_OFFER, {
            "id": offer_id, "tenant_id": tenant.id, "code_hash": secret_hash(code),
            "tx_code_hash": secret_hash(tx_code) if tx_code else None, "tx_code_attempts": 0,
            "configuration_ids": configuration_ids, "credential_ids": credential_ids, "subject": subject,
            "selector": selector, "offer_json": offer, "used": False, "burnt": False, "created_at": now,
            "expires_at": expires})
    reference = f"{issuer}/offers/{offer_id}"
    # The offer object is ours, built above from checked parts: it is not parsed back to be linked.
    offer_uri = build_credential_offer_uri(reference if by_reference else offer)
    return CreatedOffer(offer_id, offer, offer_uri, reference, tx_code, credential_ids, expires)


async def offer_document(ctx: IssuerContext, tenant: TenantRef, offer_id: str) -> dict[str, Any] | None:
    """The offer object served at ``credential_offer_uri`` (while the offer is usable)."""
    async with ctx.db.read_session() as session:
        row = (await session.execute(select(Offer.offer_json).where(
            Offer.id == offer_id, Offer.tenant_id == tenant.id, Offer.used.is_(False), Offer.burnt.is_(False),
            Offer.expires_at > utcnow()))).scalar_one_or_none()
    return row


def _grant_error(description: str) -> APIError:
    return APIError(400, INVALID_GRANT, description)


class WrongTxCode(APIError):
    """``invalid_grant`` because the transaction code was wrong (the token endpoint counts
    these per client and per offer; a type, not the wording, tells them from other refusals)."""

    def __init__(self, burnt: bool) -> None:
        super().__init__(400, INVALID_GRANT, "the transaction code is wrong; the offer is now void" if burnt
                         else "the transaction code is wrong")


def _tried(row: Any, token: str, ttl: int) -> tuple[Any, str, int]:
    """The answer to a guess from the row :data:`statements.TRY_OFFER` returned (``None``: it touched
    nothing, and compared nothing; :func:`refusal` then says why)."""
    if row is None:
        # Unknown, used (a concurrent right guess got there first: it is no news that this guess was
        # wrong, nor that the offer is void), burnt, expired or out of attempts.
        raise _grant_error("the pre-authorized code is unknown, expired or already used")
    if not row.used:
        raise WrongTxCode(bool(row.burnt))
    return row, token, ttl


async def refusal(ctx: IssuerContext, tenant: TenantRef, code: str, tx_code: str | None,
                  requested: list[str] | None = None) -> None:
    """After :data:`statements.TRY_OFFER` touched nothing (a refusal, so this read is off the common
    path): raise ``invalid_authorization_details`` when the offer could have been tried but does not
    grant every configuration ``requested`` (the token request's ``authorization_details``: RFC 9396
    §6); ``invalid_request`` when the ``tx_code`` was missing though the offer has one, or given
    though it has none (OpenID4VCI 1.0 §6.1, §6.3: a malformed request, not a wrong guess, so no
    attempt was counted). Either way the code is unspent. Otherwise return, and the caller answers
    ``invalid_grant``."""
    async with ctx.db.read_session() as session:
        offer = (await session.execute(select(Offer.tx_code_hash.is_not(None), Offer.configuration_ids).where(
            Offer.code_hash == secret_hash(code), Offer.tenant_id == tenant.id, Offer.used.is_(False),
            Offer.burnt.is_(False), Offer.expires_at > utcnow(),
            Offer.tx_code_attempts < ctx.settings.tx_code_max_attempts))).first()
    if offer is None:
        return
    has_tx_code, granted = offer
    if requested is not None and not set(requested) <= set(granted):
        raise APIError(400, INVALID_AUTHORIZATION_DETAILS,
                       "authorization_details names a credential configuration this offer does not grant")
    if has_tx_code and not tx_code:
        raise APIError(400, INVALID_REQUEST, "this offer needs its transaction code (tx_code)")
    if not has_tx_code and tx_code:
        raise APIError(400, INVALID_REQUEST, "this offer has no transaction code: send no tx_code")


async def redeem_pre_authorized_code(ctx: IssuerContext, tenant: TenantRef, code: str, tx_code: str | None,
                                     dpop_jkt: str | None = None,
                                     requested: list[str] | None = None) -> tuple[Any, str, int]:
    """Check a pre-authorized code (and its tx_code), mark it used and create the access token in the
    same transaction; returns ``(offer, access_token, expires_in)`` (the offer row has at least ``id``,
    ``subject``, ``configuration_ids``, ``credential_ids`` and ``selector``), or raises ``invalid_grant``
    (:class:`WrongTxCode` when the transaction code was wrong: that attempt is counted), or
    ``invalid_request`` when a ``tx_code`` was missing or not expected (:func:`refusal`: not counted).

    With ``requested`` (the configurations the token request's ``authorization_details`` names) the
    token grants those only, and the offer is tried only when it grants every one of them: otherwise
    ``invalid_authorization_details``, nothing compared or counted, the code unspent.

    The guess is compared and counted in one conditional ``UPDATE`` (:data:`statements.TRY_OFFER`):
    concurrent guesses take the offer's row lock in turn, so no more than ``tx_code_max_attempts``
    wrong ones are ever compared, and a right one after them finds the offer burnt. On PostgreSQL the
    access token's ``INSERT`` is in the same statement (one round trip)."""
    now = utcnow()
    ttl = ctx.settings.access_token_ttl
    token = new_secret()
    params: dict[str, Any] = {"b_code_hash": secret_hash(code), "b_tenant_id": tenant.id, "now": now,
                              "b_tx_code_hash": secret_hash(tx_code) if tx_code else None,
                              "b_max_attempts": ctx.settings.tx_code_max_attempts}
    if requested is not None:
        params["b_requested"] = json.dumps(requested)
    if ctx.db.backend == "postgresql":
        statement = (statements.PG_REDEEM_OFFER_AND_INSERT_TOKEN if requested is None
                     else statements.PG_REDEEM_OFFER_FOR_REQUESTED)
        async with ctx.single_statement() as conn:
            row = (await conn.execute(statement, {
                **params, "b_token_hash": secret_hash(token), "b_expires_at": now + dt.timedelta(seconds=ttl),
                "b_dpop_jkt": dpop_jkt})).first()
        if row is None:
            await refusal(ctx, tenant, code, tx_code, requested)
        return _tried(row, token, ttl)
    async with ctx.write_connection() as conn:
        try_offer = statements.TRY_OFFER if requested is None else statements.TRY_OFFER_FOR_REQUESTED
        row = (await conn.execute(try_offer, params)).first()
        if row is not None and row.used:
            await conn.execute(statements.INSERT_ACCESS_TOKEN, {
                "token_hash": secret_hash(token), "tenant_id": tenant.id, "subject": row.subject,
                "configuration_ids": list(row.configuration_ids) if requested is None else list(requested),
                "credential_ids": dict(row.credential_ids or {}),
                "selector": row.selector, "login": {"method": "pre-authorized_code", "offer_id": row.id},
                "offer_id": row.id, "expires_at": now + dt.timedelta(seconds=ttl), "dpop_jkt": dpop_jkt})
    # Raised after the commit: a wrong guess's attempt must count.
    if row is None:
        await refusal(ctx, tenant, code, tx_code, requested)
    return _tried(row, token, ttl)


@dataclass(frozen=True)
class GuessBudget:
    """A client's budget of wrong transaction codes (``tx_code.client``), to charge a guess to before
    its offer is tried (:func:`statements.reserve_guess`): the bucket's key and its limit."""

    limit: Limit
    key: str
    tolerance: float
    #: The limiter's clock when the budget was read (epoch seconds), the time the charge is made at.
    now: float

    @classmethod
    def of(cls, limiter: RateLimiter | None, limit: Limit, client: str) -> GuessBudget | None:
        """The budget of ``client`` under ``limit``; ``None`` when there is none to charge (no limiter,
        limiter off, limit disabled)."""
        charge = limiter.charge([(limit, client)]) if limiter is not None else None
        if charge is None:
            return None
        return cls(limit, charge.parameters["key_0"], charge.parameters["tolerance_0"], charge.now)

    def parameters(self) -> dict[str, Any]:
        return {"g_key": self.key, "g_interval": self.limit.interval, "g_tolerance": self.tolerance}

    def decision(self, rows: list[Any], now: float) -> Decision:
        """Whether the reservation's rows ``(key, tat, allowed)`` admitted the guess (no row: the code
        names no offer that can be tried, nothing to charge)."""
        for row in rows:
            if row.key == self.key and row.allowed is False:
                wait = max(1, math.ceil(row.tat + self.limit.interval - self.tolerance - now))
                return Decision(False, wait, self.limit.name)
        return Decision(True)


def _guess_parameters(ctx: IssuerContext, tenant: TenantRef, code: str, tx_code: str | None,
                      now: dt.datetime) -> dict[str, Any]:
    return {"b_code_hash": secret_hash(code), "b_tenant_id": tenant.id, "now": now,
            "b_tx_code_hash": secret_hash(tx_code) if tx_code else None,
            "b_max_attempts": ctx.settings.tx_code_max_attempts}


async def reserve_guess(ctx: IssuerContext, tenant: TenantRef, budget: GuessBudget, code: str, tx_code: str) -> None:
    """Charge a transaction-code guess to the client's budget before it is compared (the token
    endpoint's general path; its one-statement path does this inside that statement): raises the 429
    ``slow_down`` when the budget has no room for one more wrong code. A right code is charged nothing,
    a wrong one is charged here and stays charged; nothing is charged when ``code`` names no offer
    that can still be tried (:func:`statements.reserve_guess`). Concurrent guesses from one client
    take the bucket's row lock in turn, so no more than its budget are admitted, and so compared."""
    async with ctx.single_statement() as conn:
        rows = (await conn.execute(statements.RESERVE_GUESS[ctx.db.backend], {
            **_guess_parameters(ctx, tenant, code, tx_code, utcnow()), **budget.parameters(), "now_ts": budget.now,
        })).all()
    refuse_if_blocked(budget.decision(rows, budget.now), "slow_down")


async def redeem_pre_authorized_code_within_limits(ctx: IssuerContext, tenant: TenantRef, code: str, tx_code: str,
                                                   limiter: RateLimiter, charge: Charge,
                                                   budget: GuessBudget | None = None) -> tuple[Any, str, int]:
    """:func:`redeem_pre_authorized_code` (with a transaction code, no DPoP) on PostgreSQL, with the
    token endpoint's rate limits counted in the same statement (``statements.pg_redeem_within_limits``):
    one round trip for the common case instead of two. The statement tries the code only when the
    limits admit it, so a refused request leaves the offer untouched (nothing compared, nothing counted),
    as when the limits were counted first. With ``budget`` the guess is charged to the client's budget
    of wrong codes in that statement too, before the offer is tried (:func:`reserve_guess`). Raises
    the 429 ``slow_down`` when a charged bucket refused, a peeked (wrong-code) bucket is full or the
    budget has no room, ``invalid_grant`` or :class:`WrongTxCode` as :func:`redeem_pre_authorized_code`
    does."""
    now = utcnow()
    token = new_secret()
    ttl = ctx.settings.access_token_ttl
    reserving = budget.parameters() if budget is not None else {}
    async with ctx.single_statement() as conn:
        rows = (await conn.execute(statements.pg_redeem_within_limits(limiter, charge.shape, budget is not None), {
            **charge.parameters, **reserving, **_guess_parameters(ctx, tenant, code, tx_code, now),
            "b_token_hash": secret_hash(token), "b_expires_at": now + dt.timedelta(seconds=ttl),
            "b_dpop_jkt": None})).all()
    await limiter.cleanup_if_due()
    offer = next((row for row in rows if row.id is not None), None)
    if offer is None:
        own = budget.key if budget is not None else None
        charged, peeked = limiter.decide(charge, [(row.key, row.tat, row.allowed, row.blocked) for row in rows
                                                  if row.key != own])
        refuse_if_blocked(charged, "slow_down")
        refuse_if_blocked(peeked, "slow_down")
        if budget is not None:
            refuse_if_blocked(budget.decision(rows, charge.now), "slow_down")
        await refusal(ctx, tenant, code, tx_code)
    return _tried(offer, token, ttl)


def _add_token(ctx: IssuerContext, session: Any, tenant: TenantRef, *, subject: dict[str, Any],
               configuration_ids: list[str], credential_ids: dict[str, str] | None, selector: str | None,
               login: dict[str, Any] | None, offer_id: str | None, dpop_jkt: str | None = None,
               client_id: str | None = None, authorization_request_id: str | None = None) -> tuple[str, int]:
    token = new_secret()
    ttl = ctx.settings.access_token_ttl
    session.add(AccessToken(token_hash=secret_hash(token), tenant_id=tenant.id, subject=subject,
                            configuration_ids=configuration_ids, credential_ids=credential_ids or {},
                            selector=selector, login=login or {}, offer_id=offer_id,
                            expires_at=utcnow() + dt.timedelta(seconds=ttl), dpop_jkt=dpop_jkt,
                            client_id=client_id, authorization_request_id=authorization_request_id))
    return token, ttl


async def new_access_token(ctx: IssuerContext, tenant: TenantRef, *, subject: dict[str, Any], configuration_ids: list[str],
                           credential_ids: dict[str, str] | None = None, selector: str | None = None,
                           login: dict[str, Any] | None = None, offer_id: str | None = None,
                           dpop_jkt: str | None = None, client_id: str | None = None,
                           authorization_request_id: str | None = None) -> tuple[str, int]:
    """Store a new access token (hashed; DPoP-bound when ``dpop_jkt``) and return it with its lifetime.

    A token from an authorization code names its ``client_id`` and ``authorization_request_id``, and
    moves that request from ``used`` to ``redeemed`` in the same transaction: if a second redemption
    of the code got there first (``replayed``, see ``authorization.revoke_replayed_code``) no token is
    issued, and otherwise that redemption finds this token to revoke.
    """
    async with ctx.session() as session:
        if authorization_request_id is not None:
            moved = await session.execute(update(AuthorizationRequest).where(
                AuthorizationRequest.id == authorization_request_id, AuthorizationRequest.tenant_id == tenant.id,
                AuthorizationRequest.stage == "used").values(stage="redeemed"))
            if not moved.rowcount:  # type: ignore[attr-defined]
                raise _grant_error("the authorization code is unknown, expired or already used")
        return _add_token(ctx, session, tenant, subject=subject, configuration_ids=configuration_ids,
                          credential_ids=credential_ids, selector=selector, login=login, offer_id=offer_id,
                          dpop_jkt=dpop_jkt, client_id=client_id, authorization_request_id=authorization_request_id)


async def access_token(ctx: IssuerContext, tenant: TenantRef, token: str | None, request: Request) -> AccessToken:
    """The unexpired access token row of this tenant, or 401 ``invalid_token`` challenging in the scheme
    ``request`` used (see :func:`issuer.binding.token_refused`)."""
    if token and len(token) <= 200:
        async with ctx.db.read_session() as session:
            row = (await session.execute(select(AccessToken).where(
                AccessToken.token_hash == secret_hash(token), AccessToken.tenant_id == tenant.id,
                AccessToken.expires_at > utcnow()))).scalar_one_or_none()
        if row is not None:
            return row
    raise token_refused(ctx, request)


def new_nonce(ctx: IssuerContext, tenant: TenantRef) -> str:
    """A fresh ``c_nonce``: nothing is stored until a proof uses it (``issuer.nonces``)."""
    return mint_nonce(ctx.nonce_key, tenant.id, ctx.settings.nonce_ttl, utcnow())


async def purge_expired(ctx: IssuerContext) -> int:
    """Delete expired protocol state (nonces, tokens, claims, stored responses, authorization requests,
    deferred transactions, offers, the keys of Aries webhooks past ``WEBHOOK_EVENT_RETENTION``, Aries
    invitations nobody answered);
    returns rows deleted. Authorization requests and deferred transactions hold the citizen's
    identifier and name: kept no longer than they serve."""
    now = utcnow()
    total = 0
    async with ctx.session() as session:
        # A used c_nonce's record holds the nonce's own expiry, which a worker whose clock is behind
        # has not reached yet: kept as long past it as DPoP's records are (their margin is in their
        # expires_at), so that worker still finds the nonce used.
        result = await session.execute(delete(Nonce).where(Nonce.expires_at < now - USED_RECORD_MARGIN))
        total += result.rowcount or 0  # type: ignore[attr-defined]
        for model, column in ((AccessToken, AccessToken.expires_at),
                              (DPoPProofUse, DPoPProofUse.expires_at),
                              (IssuanceClaim, IssuanceClaim.expires_at), (StoredResponse, StoredResponse.expires_at),
                              (AuthorizationRequest, AuthorizationRequest.expires_at),
                              (DeferredTransaction, DeferredTransaction.expires_at)):
            result = await session.execute(delete(model).where(column < now))
            total += result.rowcount or 0  # type: ignore[attr-defined]
        result = await session.execute(delete(Offer).where(Offer.expires_at < now - dt.timedelta(days=1)))
        total += result.rowcount or 0  # type: ignore[attr-defined]
        result = await session.execute(delete(AriesWebhookEvent).where(
            AriesWebhookEvent.received_at < now - WEBHOOK_EVENT_RETENTION))
        total += result.rowcount or 0  # type: ignore[attr-defined]
        result = await session.execute(unanswered_invitations(now - INVITATION_KEPT))
        total += result.rowcount or 0  # type: ignore[attr-defined]
    return total


#: How long an Aries invitation nobody answered is kept after its expiry (it can no longer be used).
INVITATION_KEPT = dt.timedelta(days=1)


def unanswered_invitations(before: dt.datetime) -> Delete:
    """Delete the Aries exchanges still ``invited`` whose invitation expired before ``before``: the row
    holds the subject's identifier and name, for an invitation no wallet will ever answer. The state
    is a literal, so that even a generic plan reads the few ``invited`` rows by ``ix_aries_exchanges_state``,
    not every exchange whose invitation expired long ago."""
    return delete(AriesExchange).where(text("aries_exchanges.state = 'invited'"), AriesExchange.expires_at < before)
