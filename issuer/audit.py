"""A tenant's audit chain: every issuance record, status change and withdrawal, hash-chained per tenant.

Entries are appended in the transaction that writes the record or the change (:func:`record_issuance`,
:func:`record_status`, :func:`record_withdrawal`). An ``issued`` entry commits to the record as issued
(:func:`record_content`: type, subject identifier, evidence, login, validity — issuance records never
hold claim values, so neither does the chain). Every ``CHECKPOINT_EVERY`` entries the appending
transaction also signs a checkpoint with the tenant's credential signing key, and the admin API signs
one on demand, so every proof ends at a signature. Verifiers get the keys from the tenant's JWT VC
Issuer Metadata (``/.well-known/jwt-vc-issuer/t/<slug>``), which lists current and retired keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service_kit import audit as store
from ssi.audit_chain import (
    ChainReport,
    content_digest,
    entry_hash_parts,
    inclusion_proof,
    keys_from_jwks,
    new_salt,
    verify_chain,
)
from ssi.jose import Key

from .context import IssuerContext, utcnow
from .keys import active_key, published_keys
from .models import AuditCheckpoint, AuditEntry, AuditHead, IssuanceRecord

log = logging.getLogger(__name__)

EXPORT_FORMAT = "cartera-audit-chain"
#: How often the appending transaction signs a checkpoint (in entries).
CHECKPOINT_EVERY = 64
_RECORD_FIELDS = ("id", "type_id", "type_version", "vct", "subject_identifier", "copies", "signing_kid", "evidence",
                  "login", "notification_id", "offer_id")

Executor = AsyncSession | AsyncConnection


def record_content(record: Mapping[str, Any]) -> dict[str, Any]:
    """What an ``issued`` entry commits to: the record's fields fixed at issuance (not its status)."""
    content = {name: record[name] for name in _RECORD_FIELDS}
    content["issued_at"] = store.timestamp(record["issued_at"])
    content["valid_until"] = store.timestamp(record["valid_until"])
    return content


def _row_values(row: IssuanceRecord) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in IssuanceRecord.__table__.c}


async def _append(conn: Executor, tenant_id: str, *, entry_id: str, kind: str, content: dict[str, Any],
                  keep_content: bool, signer: Key | None, issuer: str | None) -> store.Appended:
    salt = new_salt()
    appended = await store.append(conn, AuditEntry, AuditHead, chain=tenant_id, entry_id=entry_id, kind=kind,
                                  at=store.timestamp(utcnow()), digest=content_digest(content, salt),
                                  extra={"salt": salt, "content": content if keep_content else None})
    if signer is not None and appended.seq % CHECKPOINT_EVERY == 0:
        await store.checkpoint(conn, AuditEntry, AuditCheckpoint, tenant_id, signer, now=utcnow(), issuer=issuer)
    return appended


async def record_issuance(conn: Executor, record: Mapping[str, Any], *, signer: Key | None = None,
                          issuer: str | None = None) -> store.Appended:
    """Chain a new issuance record (``record``: its column values) in the caller's transaction."""
    return await _append(conn, record["tenant_id"], entry_id=record["id"], kind="issued",
                         content=record_content(record), keep_content=False, signer=signer, issuer=issuer)


def issued_entry_parameters(record: Mapping[str, Any]) -> dict[str, Any]:
    """The chain entry of a new issuance record as parameters of ``statements.PG_ISSUE_ONE_COPY``,
    which appends it in the statement that writes the record (same content as :func:`record_issuance`)."""
    salt = new_salt()
    at = store.timestamp(utcnow())
    digest = content_digest(record_content(record), salt)
    label, before, after = entry_hash_parts(record["tenant_id"], record["id"], "issued", at, digest)
    return {"b_chain": record["tenant_id"], "e_kind": "issued", "e_at": at, "e_digest": digest, "e_salt": salt,
            "e_content": None, "b_label": label, "b_before": before, "b_after": after}


async def create_chain(conn: Executor, tenant_id: str) -> None:
    """Create the tenant's chain head (a no-op when it exists)."""
    await store.create_head(conn, AuditHead, tenant_id)


async def checkpoint_if_due(ctx: IssuerContext, tenant_id: str, seq: int, *, signer: Key, issuer: str) -> None:
    """After an append made outside :func:`record_issuance` (one statement, no transaction to join):
    sign the checkpoint that entry ``seq`` is due, in a transaction of its own. It may cover a few
    later entries too (it is signed over whatever the chain's last entry is by then).

    The entry is committed already, so a failure here must not fail the issuance: it is logged, and
    the next due checkpoint, or the one the admin API signs on demand, covers the entry instead."""
    if seq % CHECKPOINT_EVERY:
        return
    try:
        async with ctx.write_connection() as conn:
            await store.checkpoint(conn, AuditEntry, AuditCheckpoint, tenant_id, signer, now=utcnow(), issuer=issuer)
    except Exception as exc:  # noqa: BLE001 - the database, or the signer (an HSM's PKCS11Error is an SSIError)
        # Raised to the credential endpoint, it would release the claim of an issued credential.
        log.warning("audit checkpoint not signed", extra={"chain": tenant_id, "seq": seq, "error": type(exc).__name__})


async def record_row(conn: Executor, row: IssuanceRecord) -> store.Appended:
    """:func:`record_issuance` for an ORM row (flushed, so its defaults are set)."""
    return await record_issuance(conn, _row_values(row))


async def record_status(conn: Executor, row: IssuanceRecord, status: str) -> store.Appended:
    """Chain a status change (revocation, suspension, reinstatement) of a record."""
    return await _append(conn, row.tenant_id, entry_id=row.id, kind="status",
                         content={"credential_id": row.id, "status": status}, keep_content=True, signer=None,
                         issuer=None)


async def record_withdrawal(conn: Executor, row: IssuanceRecord) -> store.Appended:
    """Chain the removal of a record that was never delivered (the Aries offer failed), keeping the
    record's content so the ``issued`` entry stays checkable."""
    return await _append(conn, row.tenant_id, entry_id=row.id, kind="withdrawn",
                         content={"credential_id": row.id, "record": record_content(_row_values(row))},
                         keep_content=True, signer=None, issuer=None)


# -- reading back ----------------------------------------------------------------------------------

async def tenant_keys(ctx: IssuerContext, tenant_id: str) -> dict[str, Any]:
    """The JWKS that verifies the tenant's checkpoints (its published signing keys)."""
    async with ctx.db.read_session() as session:
        rows = await published_keys(session, tenant_id)
    return {"keys": [row.public_jwk for row in rows]}


async def ensure_checkpoint(ctx: IssuerContext, tenant_id: str, slug: str) -> tuple[int, str] | None:
    """The latest checkpoint, signing one first with the tenant's active key if entries came after it."""
    async with ctx.db.read_session() as session:
        signer = await active_key(ctx, session, tenant_id)
    async with ctx.session() as session:
        if signer is None:
            cps = await store.checkpoints(session, AuditCheckpoint, tenant_id)
            return cps[-1] if cps else None
        return await store.checkpoint(session, AuditEntry, AuditCheckpoint, tenant_id, signer.key, now=utcnow(),
                                      issuer=ctx.issuer_url(slug))


async def head(ctx: IssuerContext, tenant_id: str, slug: str) -> dict[str, Any]:
    """The chain head and the latest checkpoint."""
    latest = await ensure_checkpoint(ctx, tenant_id, slug)
    async with ctx.db.read_session() as session:
        seq, head_hash = await store.head(session, AuditHead, tenant_id)
    return {"chain": tenant_id, "seq": seq, "head": head_hash,
            "checkpoint": None if latest is None else {"seq": latest[0], "token": latest[1]}}


async def proof(ctx: IssuerContext, tenant_id: str, slug: str, credential_id: str) -> dict[str, Any] | None:
    """The inclusion proof of a record's ``issued`` entry, with its content and salt."""
    latest = await ensure_checkpoint(ctx, tenant_id, slug)
    async with ctx.db.read_session() as session:
        found = await store.find_entry(session, AuditEntry, tenant_id, credential_id)
        if found is None or latest is None:
            return None
        cps = await store.checkpoints(session, AuditCheckpoint, tenant_id)
        end, token = next(((s, t) for s, t in cps if s >= found["seq"]), latest)
        entries = await store.load_entries(session, AuditEntry, tenant_id, from_seq=found["seq"], to_seq=end)
        row = await session.get(IssuanceRecord, credential_id)
    content = record_content(_row_values(row)) if row is not None else found["content"]
    return {**inclusion_proof(entries, found["seq"], token), "content": content, "salt": found["salt"]}


async def export(ctx: IssuerContext, tenant_id: str, slug: str) -> dict[str, Any]:
    """The tenant's chain with every entry's content and salt, the checkpoints and the tenant's JWKS."""
    await ensure_checkpoint(ctx, tenant_id, slug)
    async with ctx.db.read_session() as session:
        stored = await store.load_entries(session, AuditEntry, tenant_id)
        ids = [e["id"] for e in stored if e["kind"] == "issued"]
        rows = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows.update({r.id: r for r in (await session.execute(
                select(IssuanceRecord).where(IssuanceRecord.tenant_id == tenant_id, IssuanceRecord.id.in_(chunk))
            )).scalars()})
        cps = await store.checkpoints(session, AuditCheckpoint, tenant_id)
    withdrawn = {e["id"]: e["content"].get("record") for e in stored
                 if e["kind"] == "withdrawn" and isinstance(e.get("content"), dict)}
    items = []
    for entry in stored:
        item = {**store.public_entry(entry), "salt": entry["salt"]}
        if entry["content"] is not None:
            item["content"] = entry["content"]
        elif entry["id"] in rows:
            item["content"] = record_content(_row_values(rows[entry["id"]]))
        elif withdrawn.get(entry["id"]) is not None:
            item["content"] = withdrawn[entry["id"]]
        items.append(item)
    return {"format": EXPORT_FORMAT, "version": 1, "chain": tenant_id, "issuer": ctx.issuer_url(slug),
            "entries": items, "checkpoints": [t for _, t in cps], "jwks": await tenant_keys(ctx, tenant_id),
            "jwks_uri": f"{ctx.public_url}/.well-known/jwt-vc-issuer/t/{slug}"}


async def check(ctx: IssuerContext, tenant_id: str, slug: str) -> ChainReport:
    """Check the stored chain against the stored records: every digest, hash and checkpoint signature;
    every record chained; every record's status the one its last status entry says."""
    doc = await export(ctx, tenant_id, slug)
    report = verify_chain(doc["chain"], doc["entries"], doc["checkpoints"], keys_from_jwks(doc["jwks"])
                          if doc["jwks"]["keys"] else [], require_content=True)
    if not report.ok:
        return report
    issued = {e["id"] for e in doc["entries"] if e["kind"] == "issued"}
    status: dict[str, str] = {}
    for entry in doc["entries"]:
        if entry["kind"] == "status":
            status[entry["content"]["credential_id"]] = entry["content"]["status"]
    async with ctx.db.read_session() as session:
        rows = (await session.execute(select(IssuanceRecord.id, IssuanceRecord.status)
                                      .where(IssuanceRecord.tenant_id == tenant_id))).all()
    for record_id, record_status_now in rows:
        if record_id not in issued:
            return report.fail("unchained_event", "an issuance record has no chain entry", entry_id=record_id)
        if status.get(record_id, "valid") != record_status_now:
            return report.fail("status_mismatch", "a record's status differs from its last chained status change",
                               entry_id=record_id)
    return report

