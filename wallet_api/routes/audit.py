"""The citizen's audit chain: head and checkpoint, inclusion proofs, a server-side check, the JWKS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service_kit.errors import APIError

from .. import audit as chain
from ..deps import Citizen, Ctx

router = APIRouter(tags=["audit"])
_NO_STORE = {"Cache-Control": "no-store"}


class CheckpointView(BaseModel):
    seq: int = Field(description="The entry the checkpoint covers (1 = the first).")
    token: str = Field(description="Compact JWS, `typ: cartera-audit-checkpoint+jwt`, payload "
                                   "`{v, chain, seq, head, iat, iss}`, signed by a key of `GET /v1/audit/jwks`.")


class HeadView(BaseModel):
    chain: str = Field(description="The chain's name (the wallet id).")
    seq: int = Field(description="How many entries the chain holds.")
    head: str = Field(description="Hex SHA-256 hash of the last entry (64 zeros for an empty chain).")
    checkpoint: CheckpointView | None = Field(description="The latest signed checkpoint (covers the head).")


class EntryView(BaseModel):
    chain: str
    seq: int
    id: str = Field(description="The history entry id, or the session id of a login.")
    kind: str = Field(description="receipt | share | decline | deletion | login | ...")
    at: str = Field(description="Event time, ISO 8601 UTC.")
    digest: str = Field(description="Salted SHA-256 commitment to the content.")


class ProofView(BaseModel):
    v: int
    prev_hash: str = Field(description="Hash of the entry before this one.")
    entry: EntryView
    following: list[EntryView] = Field(description="The later entries up to the checkpoint (digests only).")
    checkpoint: str = Field(description="The signed checkpoint the proof ends at.")
    content: dict[str, Any] | None = Field(description="What the entry commits to (the history details).")
    salt: str | None = Field(description="The content salt (base64url), to recompute the digest.")


class CheckView(BaseModel):
    ok: bool
    chain: str
    entries: int
    head: str
    checkpoints: int
    last_checkpoint_seq: int
    kinds: dict[str, int]
    error: dict[str, Any] | None = Field(description="The first problem: `code` (audit.*), `seq`, `entry_id`, "
                                                     "`detail`.")


@router.get("/audit/head", response_model=HeadView, summary="My audit chain's head and latest checkpoint")
async def audit_head(ctx: Ctx, me: Citizen) -> JSONResponse:
    """The number of entries, the head hash and a signed checkpoint covering it (signed now if needed)."""
    return JSONResponse(await chain.head(ctx, me.wallet_id), headers=_NO_STORE)


@router.get("/audit/entries/{entry_id}/proof", response_model=ProofView,
            summary="Proof that one of my history entries (or logins) is in my chain")
async def audit_proof(ctx: Ctx, me: Citizen, entry_id: str = Path(max_length=64)) -> JSONResponse:
    """The entry, the hashes linking it to the next signed checkpoint and that checkpoint; check it with
    the keys of `GET /v1/audit/jwks` (``ssi.audit_chain.verify_inclusion``)."""
    found = await chain.proof(ctx, me.key, entry_id)
    if found is None:
        raise APIError(404, "not_found", "no such audit entry")
    return JSONResponse(found, headers=_NO_STORE)


@router.get("/audit/check", response_model=CheckView, summary="Check my audit chain against my history")
async def audit_check(ctx: Ctx, me: Citizen) -> JSONResponse:
    """Recompute every digest and hash, check every checkpoint signature and that every history entry
    is chained; `ok: false` names the first broken entry."""
    report = await chain.check(ctx, me.key)
    return JSONResponse(report.as_dict(), headers=_NO_STORE)


@router.get("/audit/export", summary="Export my audit chain (for `cartera audit verify`)")
async def audit_export(ctx: Ctx, me: Citizen) -> JSONResponse:
    """Every entry with its content and salt, every checkpoint and the signing JWKS (also part of
    `GET /v1/history/export`)."""
    return JSONResponse(await chain.export(ctx, me.key), headers={
        **_NO_STORE, "Content-Disposition": 'attachment; filename="wallet-audit-chain.json"'})


@router.get("/audit/jwks", summary="Keys that sign audit checkpoints")
async def audit_jwks(ctx: Ctx) -> dict[str, Any]:
    """Public: the JWKS of the wallet service's checkpoint key (no login needed)."""
    return await chain.jwks(ctx)
