"""Prebuilt Core statements of the verification hot path (with bound parameters).

Every verification runs these: authenticate the agency, read its template, insert the request, read
the request with the agency's signing material, claim it, record the replay digests, write the
result, read the result. Built once at import, they skip SQLAlchemy's per-call statement construction
and cache-key generation, and executed on a Core connection (``Database.autocommit_connection``) they
skip the ORM's unit of work and instance loading; rows come back as read-only named tuples with the
columns of the mapped classes. The ORM stays in use everywhere else.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, and_, bindparam, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service_kit.db import UTCDateTime
from verifier.models import Agency, ApiKey, Template, Transaction, UsedPresentation

_tx = Transaction.__table__
_agency = Agency.__table__


def checked_on_the_row(column: Any, value: Any) -> ColumnElement[bool]:
    """``column = value`` as a check of the row found by its key, never a way to find rows.

    ``IS NOT DISTINCT FROM`` answers as ``=`` on a NOT NULL column, but PostgreSQL cannot use it as
    an index condition. Written as ``=``, ``status = 'pending' AND expires_at > $now`` matches
    ``ix_transactions_status_expires`` (the sweep's index): before the table's first ANALYZE the
    planner prices that like the primary key, and its plans read every pending transaction to
    claim one (tests/verifier/test_schema.py). The index must stay for the sweep."""
    return column.is_not_distinct_from(value)


#: The agency owning an API key hash (``key_hash``).
AGENCY_BY_KEY_HASH = (select(_agency).join(ApiKey.__table__, ApiKey.agency_id == Agency.id)
                      .where(ApiKey.key_hash == bindparam("key_hash")))

#: Authentication and the named template in one query (``key_hash``, ``name``): no row, a bad key;
#: ``template_id`` null, no such template for this agency. Template columns are prefixed ``template_``.
_template = Template.__table__
AGENCY_AND_TEMPLATE_BY_KEY_HASH = (
    select(_agency, *[c.label(f"template_{c.name}") for c in _template.c])
    .select_from(ApiKey.__table__).join(_agency, ApiKey.agency_id == Agency.id)
    .outerjoin(_template, and_(Template.agency_id == Agency.id, Template.name == bindparam("name")))
    .where(ApiKey.key_hash == bindparam("key_hash")))

#: Authentication and one of the agency's transactions in one query (``key_hash``, ``tx_id``): no
#: row, a bad key; ``id`` null, no such transaction *for this agency* (another's looks missing).
TRANSACTION_FOR_KEY_HASH = (
    select(Agency.id.label("auth_agency_id"), _tx)
    .select_from(ApiKey.__table__).join(_agency, ApiKey.agency_id == Agency.id)
    .outerjoin(_tx, and_(Transaction.id == bindparam("tx_id"), Transaction.agency_id == Agency.id))
    .where(ApiKey.key_hash == bindparam("key_hash")))

#: One of an agency's templates by name (``agency_id``, ``name``).
TEMPLATE_BY_NAME = select(Template.__table__).where(Template.agency_id == bindparam("agency_id"),
                                                    Template.name == bindparam("name"))

#: A transaction by id (``tx_id``).
TRANSACTION_BY_ID = select(_tx).where(Transaction.id == bindparam("tx_id"))

#: A transaction with the agency columns its request object needs (``tx_id``).
TRANSACTION_WITH_AGENCY_KEY = (
    select(_tx, Agency.signing_key.label("agency_signing_key"), Agency.x5c.label("agency_x5c"))
    .join(_agency, Agency.id == Transaction.agency_id).where(Transaction.id == bindparam("tx_id")))

#: The sweep's overdue transactions (``now``, ``limit``): ``pending`` ones nobody answered and
#: ``processing`` ones whose check never finished (its process stopped, its result was not written).
#: Found through ``ix_transactions_status_expires`` (``status = ANY(...) AND expires_at <= $now``).
#: (The statuses as plain bound values, not an "expanding" IN list: compiled once, like the others.)
OVERDUE_TRANSACTIONS = (select(Transaction).where(Transaction.status.in_([literal("pending"), literal("processing")]),
                                                  Transaction.expires_at <= bindparam("now"))
                        .limit(bindparam("limit")))

#: Delete the claims of finished transactions past their retention (``now``): a range of
#: ``ix_transactions_claims_to_purge``, which holds only the transactions whose claims are still kept.
PURGE_CLAIMS = (update(Transaction).where(Transaction.purge_at <= bindparam("now"),
                                          Transaction.claims_deleted_at.is_(None), Transaction.result.is_not(None))
                .values(result=None, claims_deleted_at=bindparam("deleted_at")).returning(Transaction.id))

#: Insert a transaction (parameters: every column).
INSERT_TRANSACTION = insert(_tx)

#: ``pending`` → ``processing`` while not expired (``tx_id``, ``now``); a row back means this caller won.
CLAIM_TRANSACTION = (update(_tx).where(Transaction.id == bindparam("tx_id"),
                                       checked_on_the_row(Transaction.status, "pending"),
                                       Transaction.expires_at > bindparam("now"))
                     .values(status="processing").returning(Transaction.id))

#: The final state, from ``from_status`` only (``tx_id``, ``from_status`` and the written columns).
FINISH_TRANSACTION = (
    update(_tx).where(Transaction.id == bindparam("tx_id"),
                      checked_on_the_row(Transaction.status, bindparam("from_status")))
    .values(status=bindparam("new_status"), errors=bindparam("new_errors"),
            completed_at=bindparam("new_completed_at"), purge_at=bindparam("new_purge_at"),
            result=bindparam("new_result"), record=bindparam("new_record"),
            response_code_hash=bindparam("new_response_code_hash"))
    .returning(Transaction.id))

#: Record one presentation digest unless seen before, per backend (``digest``, ``tx_id``, ``now``); no
#: row back means a replay. (A ``vp_token`` with several presentations builds its statement per call.)
RECORD_DIGEST = {
    name: (dialect_insert(UsedPresentation.__table__)
           .values(digest=bindparam("digest"), transaction_id=bindparam("tx_id"), created_at=bindparam("now"))
           .on_conflict_do_nothing(index_elements=["digest"]).returning(UsedPresentation.digest))
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}

#: PostgreSQL: the claim and the replay record in one round trip (``tx_id``, ``now``, ``digest``,
#: ``created``): the UPDATE's row lock decides the claim, and the digest is inserted only by the
#: caller that claimed. Answers ``(claimed, inserted)`` counts: ``(0, 0)`` answered already,
#: ``(1, 0)`` a replayed presentation, ``(1, 1)`` go on checking.
_claimed = CLAIM_TRANSACTION.cte("claimed")
_recorded = (pg_insert(UsedPresentation.__table__)
             .from_select(["digest", "transaction_id", "created_at"],
                          select(bindparam("digest", type_=String()), _claimed.c.id,
                                 bindparam("created", type_=UTCDateTime())))
             .on_conflict_do_nothing(index_elements=["digest"]).returning(UsedPresentation.digest).cte("recorded"))
CLAIM_AND_RECORD_DIGEST_PG = select(
    select(func.count()).select_from(_claimed).scalar_subquery().label("claimed"),
    select(func.count()).select_from(_recorded).scalar_subquery().label("inserted"))
