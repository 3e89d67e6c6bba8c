"""Prebuilt Core statements of the pre-authorized issuance hot path (with bound parameters).

Every credential issued through an offer runs these: insert the offer, redeem its code and insert the
access token, read the request state (token, stored response, claim) in one query, record the
``c_nonce`` as used (``issuer.nonces``: nothing is stored when it is handed out) and claim the
configuration, then insert the issuance record, its status
entries, its webhook events and the stored response. Built once at import, they skip SQLAlchemy's
per-call statement construction and cache keys; executed on a Core connection they skip the ORM's
unit of work and instance loading (a py-spy profile showed that plumbing costing more CPU than the
signing). Rows come back as read-only named tuples with the mapped classes' column names. The ORM
stays in use everywhere else (admin API, authorization code flow, deferred issuance).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Double,
    Integer,
    LargeBinary,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    insert,
    literal_column,
    not_,
    null,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .models import (
    AccessToken,
    AuditEntry,
    AuditHead,
    IssuanceClaim,
    IssuanceRecord,
    Nonce,
    Offer,
    RateLimitBucket,
    StatusEntry,
    StatusList,
    StoredResponse,
    WebhookEndpoint,
    WebhookOutbox,
)

if TYPE_CHECKING:
    from service_kit.ratelimit import RateLimiter

#: Insert an offer (parameters: every column).
INSERT_OFFER = insert(Offer.__table__)

def _tx_code_matches() -> Any:
    """Whether the guess ``b_tx_code_hash`` opens the offer: any guess (or none) when the offer has no
    transaction code; otherwise its own code only, a missing one (NULL) being a wrong one."""
    guess = bindparam("b_tx_code_hash", type_=String)
    return or_(Offer.tx_code_hash.is_(None), func.coalesce(Offer.tx_code_hash == guess, false()))


def _tx_code_expected() -> Any:
    """Whether a guess was given exactly when the offer has a transaction code (OpenID4VCI 1.0 §6.1:
    otherwise the request is ``invalid_request``, and it is no guess: nothing is compared or counted)."""
    guess = bindparam("b_tx_code_hash", type_=String)
    return or_(and_(Offer.tx_code_hash.is_(None), guess.is_(None)),
               and_(Offer.tx_code_hash.is_not(None), guess.is_not(None)))


def _try_offer(*gate: Any) -> Any:
    matches = _tx_code_matches()
    limit = bindparam("b_max_attempts", type_=Integer)
    return (
        update(Offer.__table__)
        .where(Offer.code_hash == bindparam("b_code_hash"), Offer.tenant_id == bindparam("b_tenant_id"),
               Offer.used.is_(False), Offer.burnt.is_(False), Offer.expires_at > bindparam("now"),
               Offer.tx_code_attempts < limit, _tx_code_expected(), *gate)
        .values(used=matches,
                tx_code_attempts=case((matches, Offer.tx_code_attempts), else_=Offer.tx_code_attempts + 1),
                burnt=and_(not_(matches), Offer.tx_code_attempts + 1 >= limit))
        .returning(Offer.id, Offer.subject, Offer.configuration_ids, Offer.credential_ids, Offer.selector,
                   Offer.used, Offer.burnt))


#: Try a transaction code on an offer, in one conditional ``UPDATE ... RETURNING`` (``b_code_hash``,
#: ``b_tenant_id``, ``b_tx_code_hash`` (NULL: none given), ``b_max_attempts``, ``now``; ``b_`` because
#: an UPDATE reserves the column names for its SET clause). Only an unused, unburnt, unexpired offer
#: with attempts left is touched, and the guess is compared and counted in the same statement, under
#: the row's lock: a right code marks it ``used``; a wrong one counts an attempt and burns the offer
#: at the limit. So concurrent guesses are compared one after the other, at most ``b_max_attempts``
#: wrong ones ever, and none after the offer was redeemed or burnt. A row back: ``used`` (this caller
#: redeemed it) or not (a wrong code; ``burnt``: it was the last). No row: unknown, used, burnt,
#: expired, out of attempts, or a ``tx_code`` missing for an offer with one or given to an offer
#: without one (not compared, not counted: ``grants.refusal`` tells the wallet which).
TRY_OFFER = _try_offer()


def _covers_requested(dialect: str) -> Any:
    """Whether the offer grants every configuration of ``b_requested`` (a JSON array of configuration
    ids: those the token request's ``authorization_details`` names)."""
    requested = bindparam("b_requested", type_=String)
    if dialect == "postgresql":
        return cast(Offer.configuration_ids, JSONB).contains(cast(requested, JSONB))
    return text("NOT EXISTS (SELECT 1 FROM json_each(:b_requested) AS wanted WHERE wanted.value NOT IN "
                "(SELECT value FROM json_each(offers.configuration_ids)))").bindparams(requested)


#: :data:`TRY_OFFER` for a token request with ``authorization_details`` (SQLite; PostgreSQL runs
#: :data:`PG_REDEEM_OFFER_FOR_REQUESTED`): also ``b_requested``, and the offer is touched only when it
#: grants every configuration asked for. Otherwise no row, nothing compared or counted, the code unspent
#: (``grants.refusal`` then says ``invalid_authorization_details``).
TRY_OFFER_FOR_REQUESTED = _try_offer(_covers_requested("sqlite"))

#: Insert an access token (parameters: every column).
INSERT_ACCESS_TOKEN = insert(AccessToken.__table__)

#: Record a checked ``c_nonce`` as used (``nonce_hash``, ``tenant_id``, ``expires_at``), per backend:
#: ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` under the primary key, so of concurrent callers
#: exactly one gets a row back; none means it was used before.
USE_NONCE = {
    name: (dialect_insert(Nonce.__table__)
           .values(nonce_hash=bindparam("nonce_hash"), tenant_id=bindparam("tenant_id"),
                   expires_at=bindparam("expires_at"))
           .on_conflict_do_nothing().returning(Nonce.nonce_hash))
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}

#: What a credential request needs, in one query (``token_hash``, ``tenant_id``, ``now``,
#: ``request_hash``, ``configuration_id``): the unexpired access token, the stored response of an
#: identical earlier request (``stored_*``), the claim on this configuration (``claim_request_hash``)
#: with its ``claim_created_at``, and how many webhook endpoints the tenant has (``webhooks``: with
#: none, issuance skips the outbox).
_stored = StoredResponse.__table__.alias("stored")
_claim = IssuanceClaim.__table__.alias("claim")
CREDENTIAL_REQUEST_STATE = (
    select(AccessToken.__table__, _stored.c.status_code.label("stored_status_code"),
           _stored.c.sealed_body.label("stored_sealed_body"), _claim.c.request_hash.label("claim_request_hash"),
           _claim.c.created_at.label("claim_created_at"),
           select(func.count()).select_from(WebhookEndpoint.__table__)
           .where(WebhookEndpoint.tenant_id == bindparam("tenant_id")).scalar_subquery().label("webhooks"))
    .select_from(AccessToken.__table__)
    .outerjoin(_stored, and_(_stored.c.request_hash == bindparam("request_hash"),
                             _stored.c.expires_at > bindparam("now")))
    .outerjoin(_claim, and_(_claim.c.token_hash == AccessToken.token_hash,
                            _claim.c.configuration_id == bindparam("configuration_id")))
    .where(AccessToken.token_hash == bindparam("token_hash"), AccessToken.tenant_id == bindparam("tenant_id"),
           AccessToken.expires_at > bindparam("now")))

#: Insert a claim on a configuration (parameters: every column); the primary key (token, configuration)
#: refuses a second one.
INSERT_CLAIM = insert(IssuanceClaim.__table__)

#: Insert an issuance record (parameters: every column).
INSERT_RECORD = insert(IssuanceRecord.__table__)

#: Insert a stored (sealed) credential response (parameters: every column).
INSERT_STORED_RESPONSE = insert(StoredResponse.__table__)

#: The tenant's newest status list that is not full (``tenant_id``).
CURRENT_STATUS_LIST = (select(StatusList.id, StatusList.size)
                       .where(StatusList.tenant_id == bindparam("tenant_id"), StatusList.full.is_(False))
                       .order_by(StatusList.created_at.desc()).limit(1))

#: Insert a status list (parameters: every column).
INSERT_STATUS_LIST = insert(StatusList.__table__)

#: Mark a status list full (``list_id``).
MARK_STATUS_LIST_FULL = update(StatusList.__table__).where(StatusList.id == bindparam("list_id")).values(full=True)

#: Take one index of a list unless taken (``list_id``, ``idx``, ``record_id``), per backend; no row back
#: means the index is in use and another must be drawn.
TAKE_STATUS_INDEX = {
    name: (dialect_insert(StatusEntry.__table__)
           .values(list_id=bindparam("list_id"), idx=bindparam("idx"), record_id=bindparam("record_id"))
           .on_conflict_do_nothing().returning(StatusEntry.idx))
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}

#: A tenant's webhook endpoints with their event filters (``tenant_id``).
TENANT_WEBHOOKS = select(WebhookEndpoint.id, WebhookEndpoint.events).where(
    WebhookEndpoint.tenant_id == bindparam("tenant_id"))

#: Insert webhook outbox rows (parameters: every column).
INSERT_OUTBOX = insert(WebhookOutbox.__table__)


# -- PostgreSQL only: two steps in one statement (data-modifying CTEs), one round trip instead of four
# (BEGIN, two statements, COMMIT). A single statement is atomic by itself, so these run in AUTOCOMMIT.
# Parameters in the SELECT list are cast: PostgreSQL would otherwise type them as text.

def _param(name: str, column: Any) -> Any:
    return cast(bindparam(name, type_=column.type), column.type)


_offer = Offer.__table__
_token = AccessToken.__table__
def _redeem_and_insert_token(*gate: Any, requested: bool = False) -> Any:
    tried = (_try_offer(*gate, _covers_requested("postgresql")) if requested else _try_offer(*gate)).cte("tried")
    # The token grants what the request asked for (``b_requested``, checked above), or the whole offer.
    configurations = cast(bindparam("b_requested", type_=String), _token.c.configuration_ids.type) if requested \
        else tried.c.configuration_ids
    token = (
        insert(_token)
        .from_select(
            ["token_hash", "tenant_id", "subject", "configuration_ids", "credential_ids", "selector", "login",
             "offer_id", "expires_at", "dpop_jkt"],
            select(_param("b_token_hash", _token.c.token_hash), _param("b_tenant_id", _token.c.tenant_id),
                   tried.c.subject, configurations, tried.c.credential_ids, tried.c.selector,
                   func.json_build_object("method", "pre-authorized_code", "offer_id", tried.c.id),
                   tried.c.id, _param("b_expires_at", _token.c.expires_at), _param("b_dpop_jkt", _token.c.dpop_jkt))
            .select_from(tried).where(tried.c.used))
        .returning(AccessToken.offer_id)
        .cte("token"))
    # The token's INSERT runs whether or not the SELECT reads it (a data-modifying CTE always does).
    return (select(tried.c.id, tried.c.subject, tried.c.configuration_ids, tried.c.credential_ids, tried.c.selector,
                   tried.c.used, tried.c.burnt)
            .add_cte(token))


#: :data:`TRY_OFFER` and, when the code was right, the access token's INSERT in one statement (its
#: parameters plus ``b_token_hash``, ``b_expires_at``, ``b_dpop_jkt``); the row of :data:`TRY_OFFER`
#: back (``id`` = the offer id, ``subject``, ``configuration_ids``, ``credential_ids``, ``selector``,
#: ``used``, ``burnt``): ``used`` means this caller redeemed it and the token is stored.
PG_REDEEM_OFFER_AND_INSERT_TOKEN = _redeem_and_insert_token()

#: :data:`PG_REDEEM_OFFER_AND_INSERT_TOKEN` for a token request with ``authorization_details``: also
#: ``b_requested`` (a JSON array of configuration ids); the offer is tried only when it grants every one
#: of them (as :data:`TRY_OFFER_FOR_REQUESTED`), and the token grants those only. A statement of its
#: own, so that the common request's statement stays as it was.
PG_REDEEM_OFFER_FOR_REQUESTED = _redeem_and_insert_token(requested=True)

# Per limiter (weakly: test suites build many apps) and shape.
_within_limits: weakref.WeakKeyDictionary[RateLimiter, dict[tuple[int, int, bool], Any]] = weakref.WeakKeyDictionary()

_buckets = RateLimitBucket.__table__


def reserve_guess(dialect: str, *gate: Any) -> Any:
    """Charge a transaction-code guess to the client's budget of wrong codes *before* the offer is
    tried (``g_key``: the bucket's key, ``g_interval``/``g_tolerance``: the limit's interval and
    ``burst * interval``, ``now_ts``: epoch seconds, and :data:`TRY_OFFER`'s ``b_code_hash``,
    ``b_tenant_id``, ``b_tx_code_hash``, ``b_max_attempts``, ``now``).

    The bucket is touched only when the code names an offer that can still be tried (otherwise no
    guess is compared, and none is charged), and only when ``gate`` holds. Its upsert takes the
    bucket's row lock, and tests the room left on the row as the last guess left it, so concurrent
    guesses from one client are admitted one after the other and no more than its budget ever gets
    through. The guess is admitted when one more wrong code fits; it is charged one interval when it
    is wrong and nothing when it is right (the stored hash says which, in this statement: the answer
    the client gets is decided later, by :data:`TRY_OFFER`, and only for an admitted guess). So a
    spent budget refuses right and wrong codes alike, and right codes (citizens behind one address)
    never spend it. A wrong guess admitted here that then finds the offer redeemed or voided by a
    concurrent one stays charged (not compared: the safe side). One row back, ``(key, tat, allowed)``,
    when the bucket was touched."""
    interval = bindparam("g_interval", type_=Double)
    now_ts = bindparam("now_ts", type_=Double)
    cost = case((_tx_code_matches(), cast(0.0, Double)), else_=interval)
    triable = (select(cast(bindparam("g_key", type_=String), String), cast(now_ts + cost, Double),
                      cast(bindparam("g_tolerance", type_=Double), Double), true())
               .where(Offer.code_hash == bindparam("b_code_hash"), Offer.tenant_id == bindparam("b_tenant_id"),
                      Offer.used.is_(False), Offer.burnt.is_(False), Offer.expires_at > bindparam("now"),
                      Offer.tx_code_attempts < bindparam("b_max_attempts", type_=Integer), *gate))
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(_buckets).from_select(
        ["key", "tat", "tolerance", "allowed"], triable)
    base = case((_buckets.c.tat > now_ts, _buckets.c.tat), else_=now_ts)
    # One more wrong code fits (the test of a charge of one interval), whatever this guess costs.
    fits = base + interval - now_ts <= stmt.excluded.tolerance
    return stmt.on_conflict_do_update(
        index_elements=[_buckets.c.key],
        set_={"allowed": fits, "tat": case((fits, base + (stmt.excluded.tat - now_ts)), else_=_buckets.c.tat),
              "tolerance": stmt.excluded.tolerance},
    ).returning(_buckets.c.key, _buckets.c.tat, _buckets.c.allowed)


#: :func:`reserve_guess` as a statement of its own, per backend (the token endpoint's general path).
RESERVE_GUESS = {name: reserve_guess(name) for name in ("postgresql", "sqlite")}


def pg_redeem_within_limits(limiter: RateLimiter, shape: tuple[int, int], reserve: bool = False) -> Any:
    """:data:`PG_REDEEM_OFFER_AND_INSERT_TOKEN` behind the token endpoint's rate limits, in one
    statement: the limiter's charge of shape ``shape`` (``service_kit.ratelimit.Charge``, its
    parameters too) is counted, and the offer redeemed only when the limits admit it. With
    ``reserve``, the guess is also charged to the client's budget of wrong codes first
    (:func:`reserve_guess`, its ``g_`` parameters too; only when the limiter's charge admits the
    request), and the offer is tried only when that admitted it as well. Rows back: the limiter's
    outcome rows and the reservation's (``key``, ``tat``, ``allowed``, ``blocked``, the rest NULL) and,
    when this caller redeemed the offer, one row whose ``id`` (the offer id) is set. Built once per
    limiter, shape and ``reserve``."""
    built = _within_limits.setdefault(limiter, {})
    cached = built.get((*shape, reserve))
    if cached is not None:
        return cached
    gate = limiter.pg_gate(*shape)
    admits = gate.admits
    outcome = list(gate.outcome)
    if reserve:
        reserved = reserve_guess("postgresql", gate.admits).cte("reserved")
        admits = and_(admits, ~exists().where(reserved.c.allowed.is_(False)))
        outcome.append(select(reserved.c.key, reserved.c.tat, reserved.c.allowed,
                              cast(null(), Boolean).label("blocked")))
    tried = _redeem_and_insert_token(admits).cte("tried_offer")
    redeemed = select(*tried.c, cast(null(), Text).label("key"), cast(null(), Double).label("tat"),
                      cast(null(), Boolean).label("allowed"), cast(null(), Boolean).label("blocked"))
    limits = [select(*[literal_column("NULL") for _ in tried.c], *part.selected_columns) for part in outcome]
    statement = union_all(redeemed, *limits)
    built[(*shape, reserve)] = statement
    return statement


_claims = IssuanceClaim.__table__
_consumed = (pg_insert(Nonce.__table__)
             .values(nonce_hash=bindparam("b_nonce_hash"), tenant_id=bindparam("b_tenant_id"),
                     expires_at=bindparam("b_nonce_expires_at"))
             .on_conflict_do_nothing()
             .returning(Nonce.nonce_hash).cte("consumed"))

#: :data:`USE_NONCE` and the claim's INSERT in one statement (``b_nonce_hash``, ``b_tenant_id``,
#: ``b_nonce_expires_at``, ``b_token_hash``, ``b_configuration_id``, ``b_request_hash``,
#: ``b_created_at``, ``b_expires_at``): a row back means the nonce was used by this caller and the
#: claim made; no row, that the nonce was used before (and nothing changed); a second claim on the
#: same token and configuration raises IntegrityError (and the nonce stays unused: one statement).
PG_CONSUME_NONCE_AND_CLAIM = (
    insert(_claims)
    .from_select(
        ["token_hash", "configuration_id", "request_hash", "created_at", "expires_at"],
        select(_param("b_token_hash", _claims.c.token_hash), _param("b_configuration_id", _claims.c.configuration_id),
               _param("b_request_hash", _claims.c.request_hash), _param("b_created_at", _claims.c.created_at),
               _param("b_expires_at", _claims.c.expires_at))
        .select_from(_consumed))
    .returning(IssuanceClaim.token_hash))



# -- PostgreSQL only: a single-copy issuance in one statement -------------------------------------

_records = IssuanceRecord.__table__
_status_entries = StatusEntry.__table__
_responses = StoredResponse.__table__
_heads = AuditHead.__table__
_chain = AuditEntry.__table__
#: Columns of the issuance record and of the stored response, each bound as ``r_<column>`` and
#: ``s_<column>`` in :data:`PG_ISSUE_ONE_COPY`.
RECORD_COLUMNS = tuple(c.name for c in _records.c)
RESPONSE_COLUMNS = tuple(c.name for c in _responses.c)


def _concat(left: Any, right: Any) -> Any:
    return left.op("||", return_type=LargeBinary())(right)


def _chain_hash(prev_hex: Any, seq: Any) -> Any:
    """``ssi.audit_chain.entry_hash`` computed by PostgreSQL from the parts of
    ``ssi.audit_chain.entry_hash_parts`` (``b_label``, ``b_before``, ``b_after``)."""
    covered = _concat(_concat(_concat(_concat(
        bindparam("b_label", type_=LargeBinary), func.decode(prev_hex, literal_column("'hex'"))),
        bindparam("b_before", type_=LargeBinary)), func.convert_to(cast(seq, Text), literal_column("'UTF8'"))),
        bindparam("b_after", type_=LargeBinary))
    return func.encode(func.sha256(covered), literal_column("'hex'"))


_locked_head = (select(_heads.c.chain_id, _heads.c.seq, _heads.c.head).where(_heads.c.chain_id == bindparam("b_chain"))
                .with_for_update().cte("locked_head"))
_took_index = (pg_insert(_status_entries)
               .from_select(["list_id", "idx", "record_id"],
                            select(_param("b_list_id", _status_entries.c.list_id), _param("b_idx", _status_entries.c.idx),
                                   _param("b_record_id", _status_entries.c.record_id))
                            .where(exists(select(_locked_head.c.seq))))
               .on_conflict_do_nothing()
               .returning(_status_entries.c.idx).cte("took_index"))
_moved_head = (update(_heads)
               .where(_heads.c.chain_id == _locked_head.c.chain_id, exists(select(_took_index.c.idx)))
               .values(seq=_locked_head.c.seq + 1, head=_chain_hash(_locked_head.c.head, _locked_head.c.seq + 1))
               .returning(_heads.c.chain_id, _heads.c.seq, _heads.c.head, _locked_head.c.head.label("prev"))
               .cte("moved_head"))
_new_record = (insert(_records)
               .from_select(list(RECORD_COLUMNS),
                            select(*[_param(f"r_{c}", _records.c[c]) for c in RECORD_COLUMNS]).select_from(_moved_head))
               .returning(_records.c.id).cte("new_record"))
_new_response = (insert(_responses)
                 .from_select(list(RESPONSE_COLUMNS),
                              select(*[_param(f"s_{c}", _responses.c[c]) for c in RESPONSE_COLUMNS])
                              .select_from(_new_record))
                 .returning(_responses.c.request_hash).cte("new_response"))
_new_entry = (insert(_chain)
              .from_select(["chain_id", "seq", "entry_id", "kind", "at", "digest", "prev_hash", "entry_hash", "salt",
                            "content"],
                           select(_moved_head.c.chain_id, _moved_head.c.seq, _param("b_record_id", _chain.c.entry_id),
                                  _param("e_kind", _chain.c.kind), _param("e_at", _chain.c.at),
                                  _param("e_digest", _chain.c.digest), _moved_head.c.prev, _moved_head.c.head,
                                  _param("e_salt", _chain.c.salt), _param("e_content", _chain.c.content))
                           .select_from(_moved_head))
              .returning(_chain.c.seq, _chain.c.entry_hash, _chain.c.prev_hash).cte("new_entry"))

#: A single-copy issuance as one atomic statement: the status index (``b_list_id``, ``b_idx``), the
#: issuance record (``r_<column>``, its id also as ``b_record_id``), the stored response
#: (``s_<column>``) and the record's entry in the tenant's audit chain (``b_chain``, ``e_kind``,
#: ``e_at``, ``e_digest``, ``e_salt``, ``e_content`` and the hash parts ``b_label``, ``b_before``,
#: ``b_after``), the entry's ``seq`` and hash computed under the chain head's row lock. One row back:
#: ``took`` (0: the index was taken, nothing was written: draw another), ``chained`` (0: the chain has
#: no head row yet: create it and run again; nothing was written) and the new entry's ``seq``,
#: ``entry_hash`` and ``prev_hash``. A duplicate record or stored response raises IntegrityError and
#: writes nothing.
PG_ISSUE_ONE_COPY = (
    select(select(func.count()).select_from(_took_index).scalar_subquery().label("took"),
           select(func.count()).select_from(_locked_head).scalar_subquery().label("chained"),
           select(_new_entry.c.seq).scalar_subquery().label("seq"),
           select(_new_entry.c.entry_hash).scalar_subquery().label("entry_hash"),
           select(_new_entry.c.prev_hash).scalar_subquery().label("prev_hash"))
    .add_cte(_new_response))
