"""The citizen's credentials: list, show, delete."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import delete

from ..deps import Citizen, Ctx
from ..models import Credential
from ..receiving import IssuerSession
from ..store import STORED, OpenCredential, add_history, get_credential, load_credentials

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


class CredentialDetail(CredentialSummary):
    claims: dict[str, Any] = Field(description="Every claim the credential holds (all disclosures).")
    claim_labels: list[dict[str, Any]] = Field(description="Display names of the claims: `{path, name}`.")
    type_metadata: dict[str, Any] | None = Field(description="SD-JWT VC Type Metadata fetched at `vct`.")


def _status(cred: OpenCredential) -> str:
    if cred.row.status == "valid" and cred.row.expires_at is not None and cred.row.expires_at <= dt.datetime.now(dt.UTC):
        return "expired"
    return cred.row.status


def summary(cred: OpenCredential) -> dict[str, Any]:
    display = cred.details.get("display", {})
    return {"id": cred.id, "vct": cred.row.vct, "name": display.get("name") or cred.row.vct,
            "issuer": cred.row.issuer, "issuer_name": cred.details.get("issuer_display", {}).get("name") or cred.row.issuer,
            "issued_at": cred.row.issued_at, "expires_at": cred.row.expires_at, "status": _status(cred),
            "status_checked_at": cred.row.status_checked_at, "copies": len(cred.copies),
            "display": {k: display.get(k) for k in ("description", "logo", "background_color", "text_color")}}


@router.get("/credentials", response_model=list[CredentialSummary], summary="My credentials")
async def list_credentials(ctx: Ctx, me: Citizen) -> list[dict[str, Any]]:
    """Every credential with its display data, validity and current status."""
    async with ctx.db.read_session() as session:
        return [summary(c) for c in await load_credentials(session, me.key)]


@router.get("/credentials/{credential_id}", response_model=CredentialDetail, summary="One credential")
async def show_credential(ctx: Ctx, me: Citizen, credential_id: str) -> dict[str, Any]:
    """A credential with all its claims (shown to its owner only)."""
    async with ctx.db.read_session() as session:
        cred = await get_credential(session, me.key, credential_id)
    claims = {k: v for k, v in cred.first().parsed().claims.items() if k not in _TECHNICAL}
    labels = [{"path": c["path"], "name": c["name"]} for c in cred.details.get("display", {}).get("claims", [])]
    return {**summary(cred), "claims": claims, "claim_labels": labels, "type_metadata": cred.details.get("type_metadata")}


@router.delete("/credentials/{credential_id}", status_code=204, summary="Delete a credential")
async def delete_credential(ctx: Ctx, me: Citizen, credential_id: str) -> None:
    """Delete the credential and all its copies; the issuer is told (`credential_deleted`) at its notification
    endpoint when it has one; the history's deletion entry says whether it took the news (`issuer_notified`)."""
    async with ctx.db.read_session() as session:
        cred = await get_credential(session, me.key, credential_id)
    async with ctx.db.session() as session:
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
            "credential_name": cred.details.get("display", {}).get("name"), "outcome": "deleted",
            "issuer_notified": notified})
