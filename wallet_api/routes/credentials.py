"""The citizen's credentials: list, show, delete.

A credential whose stored row does not open (tampered with or corrupted in the database) is listed with
``unreadable: true`` and what the row holds in clear (type, issuer, times, status), not dropped from the
list nor failing it: the citizen sees that it is there and broken, and can delete it (and restore it
from a backup, or ask the issuer again). Showing it answers 500 ``server_error`` "stored data of this
wallet could not be opened" (:mod:`wallet_api.app`)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import delete

from service_kit.errors import APIError

from ..deps import Citizen, Ctx
from ..models import Credential
from ..receiving import QUERY_EVIDENCE, IssuerSession, checked_evidence, shown_details, shown_display
from ..store import STORED, OpenCredential, add_history, get_credential, load_credentials, lock_wallet

router = APIRouter(tags=["credentials"])

_TECHNICAL = {"iss", "iat", "nbf", "exp", "cnf", "vct", "vct#integrity", "status", "_sd", "_sd_alg"}


class CredentialSummary(BaseModel):
    id: str = Field(description="Credential id in this wallet.")
    vct: str = Field(description="Credential type.")
    name: str = Field(description="Display name.")
    issuer: str = Field(description="Issuer identifier (`iss`).")
    issuer_name: str = Field(description="Issuer display name.")
    issued_at: dt.datetime | None
    expires_at: dt.datetime | None
    status: str = Field(description="valid | suspended | revoked | expired (last status-list check).")
    status_checked_at: dt.datetime | None
    copies: int = Field(description="Batch copies held (each bound to its own key).")
    display: dict[str, Any] = Field(description="Logo, colours and description from the issuer.")
    unreadable: bool = Field(default=False, description=(
        "The stored credential does not open (tampered with or corrupted): only its type, issuer, times and "
        "status are known, it cannot be shown nor presented; delete it and restore it from a backup or ask "
        "the issuer again."))


class QueryOfficial(BaseModel):
    name: str = Field(max_length=200, description="Name of the official (or office) responsible for the query.")


class QuerySource(BaseModel):
    name: str | None = Field(default=None, max_length=100, description="The data source the issuer queried "
                             "(`viaoberta`, or the name of a registry).")
    product: str | None = Field(default=None, max_length=200, description="What was asked of it (for Via Oberta "
                                "the SCSP product and modality, e.g. `AEAT_DADES/ECOT103`).")


class QueryEvidence(BaseModel):
    """Why the issuer queried the registry the credential's data came from, as the issuer said when it
    issued it. Never a claim value; the official's identifier is not given."""

    purpose: str = Field(max_length=500, description="The purpose of the query (SCSP `Finalidad`).")
    procedure: str | None = Field(default=None, max_length=200, description="The administrative procedure.")
    legal_basis: Literal["consent", "law", "no_objection"] | None = Field(default=None, description=(
        "Why the registry may answer: `consent` (the citizen consented), `law` (a law allows it), "
        "`no_objection` (the citizen did not object). Absent when the issuer gave a basis this wallet "
        "does not know."))
    official: QueryOfficial | None = None
    source: QuerySource | None = None
    queried_at: str | None = Field(default=None, max_length=64, description="When the registry was queried "
                                   "(ISO 8601, as the source reported it).")
    request_id: str | None = Field(default=None, max_length=128, description="The query's request id, the "
                                   "reference the issuer's record keeps too.")


class CredentialDetail(CredentialSummary):
    claims: dict[str, Any] = Field(description="Every claim the credential holds (all disclosures).")
    claim_labels: list[dict[str, Any]] = Field(description="Display names of the claims: `{path, name}`.")
    type_metadata: dict[str, Any] | None = Field(description="SD-JWT VC Type Metadata fetched at `vct`.")
    query_evidence: QueryEvidence | None = Field(default=None, description=(
        "Why the issuer queried the registry behind this credential (purpose, legal basis, official, "
        "registry, when), as the issuer's credential response said (its `query_evidence` member). `null` "
        "when the issuer said nothing, or something malformed (then dropped at receipt)."))


def _status_of(row: Credential) -> str:
    if row.status == "valid" and row.expires_at is not None and row.expires_at <= dt.datetime.now(dt.UTC):
        return "expired"
    return row.status


def unreadable_summary(row: Credential) -> dict[str, Any]:
    """What the list shows of a credential whose sealed data does not open: the row's clear columns."""
    return {"id": row.id, "vct": row.vct, "name": row.vct, "issuer": row.issuer, "issuer_name": row.issuer,
            "issued_at": row.issued_at, "expires_at": row.expires_at, "status": _status_of(row),
            "status_checked_at": row.status_checked_at, "copies": 0,
            "display": dict.fromkeys(("description", "logo", "background_color", "text_color")),
            "unreadable": True}


def summary(cred: OpenCredential) -> dict[str, Any]:
    # As receipt keeps display data now, also for a credential stored before (a name that is no text is
    # as if absent): one issuer's metadata must not break the list.
    details = shown_details(cred.details)
    display = details.get("display") or {}
    return {"id": cred.id, "vct": cred.row.vct, "name": display.get("name") or cred.row.vct,
            "issuer": cred.row.issuer, "issuer_name": (details.get("issuer_display") or {}).get("name") or cred.row.issuer,
            "issued_at": cred.row.issued_at, "expires_at": cred.row.expires_at, "status": _status_of(cred.row),
            "status_checked_at": cred.row.status_checked_at, "copies": len(cred.copies),
            "display": {k: display.get(k) for k in ("description", "logo", "background_color", "text_color")}}


@router.get("/credentials", response_model=list[CredentialSummary], summary="My credentials")
async def list_credentials(ctx: Ctx, me: Citizen) -> list[dict[str, Any]]:
    """Every credential with its display data, validity and current status, oldest first. One whose
    stored data does not open is listed with `unreadable: true` (and its type, issuer, times and status)."""
    broken: list[Credential] = []
    async with ctx.db.read_session() as session:
        found = await load_credentials(session, me.key, unreadable=broken)
    listed = [(c.row, summary(c)) for c in found] + [(row, unreadable_summary(row)) for row in broken]
    return [entry for _, entry in sorted(listed, key=lambda pair: (pair[0].created_at, pair[0].id))]


@router.get("/credentials/{credential_id}", response_model=CredentialDetail, summary="One credential")
async def show_credential(ctx: Ctx, me: Citizen, credential_id: str) -> dict[str, Any]:
    """A credential with all its claims (shown to its owner only), and why the issuer queried the registry
    its data came from (`query_evidence`), when the issuer said so."""
    async with ctx.db.read_session() as session:
        cred = await get_credential(session, me.key, credential_id)
    claims = {k: v for k, v in cred.first().parsed().claims.items() if k not in _TECHNICAL}
    details = shown_details(cred.details)
    labels = [{"path": c["path"], "name": c["name"]} for c in (details.get("display") or {}).get("claims", [])]
    # Checked again: stored details may come from a backup file, whose import does not look inside it.
    evidence = checked_evidence(cred.details.get(QUERY_EVIDENCE))
    return {**summary(cred), "claims": claims, "claim_labels": labels, "type_metadata": details.get("type_metadata"),
            "query_evidence": evidence}


@router.delete("/credentials/{credential_id}", status_code=204, summary="Delete a credential")
async def delete_credential(ctx: Ctx, me: Citizen, credential_id: str) -> None:
    """Delete the credential and all its copies; the issuer is told (`credential_deleted`) at its notification
    endpoint when it has one; the history's deletion entry says whether it took the news (`issuer_notified`).
    A credential whose stored data does not open is deleted too (its issuer is not told: its notification
    data is what does not open)."""
    broken: list[Credential] = []
    async with ctx.db.read_session() as session:
        found = await load_credentials(session, me.key, credential_id=credential_id, unreadable=broken)
    if not found and not broken:
        raise APIError(404, "not_found", "no such credential")
    cred = found[0] if found else OpenCredential(row=broken[0], details={}, copies=[])
    async with ctx.db.session() as session:
        await lock_wallet(session, me.wallet_id)  # one at a time with a backup import (wallet_api.backup)
        await session.execute(delete(Credential).where(Credential.id == credential_id,
                                                       Credential.wallet_id == me.wallet_id))
    notified = False
    note = cred.details.get("notification") or {}
    if note.get("notification_id") and note.get("metadata"):
        from ssi.oid4vci import AuthorizationServerMetadata, CredentialIssuerMetadata

        async with ctx.client() as client:
            session_ = IssuerSession(ctx, client, CredentialIssuerMetadata.model_validate(note["metadata"], context=STORED),
                                     AuthorizationServerMetadata.model_validate(note["as_metadata"], context=STORED),
                                     note.get("token"))
            notified = await session_.notify(note["notification_id"], "credential_deleted")
    async with ctx.db.session() as session:
        await add_history(session, me.key, "deletion", {
            "credential_id": credential_id, "vct": cred.row.vct, "issuer": cred.row.issuer,
            "credential_name": shown_display(cred.details.get("display")).get("name"), "outcome": "deleted",
            "issuer_notified": notified})
