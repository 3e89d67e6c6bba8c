"""The citizen's audit chain: head and checkpoint, inclusion proofs, a server-side check, the JWKS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, StreamingResponse

from service_kit.audit_api import NO_STORE, CheckView, HeadView, ProofView
from service_kit.errors import APIError

from .. import audit as chain
from ..deps import Citizen, Ctx

router = APIRouter(tags=["audit"])


@router.get("/audit/head", response_model=HeadView, summary="My audit chain's head and latest checkpoint")
async def audit_head(ctx: Ctx, me: Citizen) -> JSONResponse:
    """The number of entries, the head hash and a signed checkpoint covering it (signed now if needed)."""
    return JSONResponse(await chain.head(ctx, me.wallet_id), headers=NO_STORE)


@router.get("/audit/entries/{entry_id}/proof", response_model=ProofView,
            summary="Proof that one of my history entries (or logins) is in my chain")
async def audit_proof(ctx: Ctx, me: Citizen, entry_id: str = Path(max_length=64)) -> JSONResponse:
    """The entry, the hashes linking it to the next signed checkpoint and that checkpoint; check it with
    the keys of `GET /v1/audit/jwks` (``ssi.audit_chain.verify_inclusion``)."""
    found = await chain.proof(ctx, me.key, entry_id)
    if found is None:
        raise APIError(404, "not_found", "no such audit entry")
    return JSONResponse(found, headers=NO_STORE)


@router.get("/audit/check", response_model=CheckView, summary="Check my audit chain against my history")
async def audit_check(ctx: Ctx, me: Citizen) -> JSONResponse:
    """Recompute every digest and hash, check every checkpoint signature and that every history entry
    is chained; `ok: false` names the first broken entry. The chain (up to its latest checkpoint, signed
    first if needed) and the history are read 500 rows at a time."""
    report = await chain.check(ctx, me.key)
    return JSONResponse(report.as_dict(), headers=NO_STORE)


@router.get("/audit/export", summary="Export my audit chain (for `cartera audit verify`)",
            responses={200: {"content": {"application/json": {}}}})
async def audit_export(ctx: Ctx, me: Citizen) -> StreamingResponse:
    """Every entry with its content and salt, every checkpoint and the signing JWKS (also part of
    `GET /v1/history/export`): the chain up to its latest checkpoint (signed first if events came after
    it), read and sent 500 entries and checkpoints at a time. Should the database fail midway, the
    download ends early and is not valid JSON."""
    # Before any byte is sent, so that a failure there is a clean error.
    scope = await chain.export_scope(ctx, me.wallet_id)
    keys = await chain.jwks(ctx)
    return StreamingResponse(chain.export_text(ctx, me.key, scope, keys), media_type="application/json", headers={
        **NO_STORE, "Content-Disposition": 'attachment; filename="wallet-audit-chain.json"'})


@router.get("/audit/jwks", summary="Keys that sign audit checkpoints")
async def audit_jwks(ctx: Ctx) -> dict[str, Any]:
    """Public: the JWKS of the wallet service's checkpoint key (no login needed)."""
    return await chain.jwks(ctx)
