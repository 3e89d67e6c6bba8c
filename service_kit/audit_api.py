"""Response models of the audit-chain endpoints, shared by the issuer's admin API and the wallet API.

Both services expose the same chain format (``ssi.audit_chain``), so one description of it serves
both OpenAPI documents; where the services differ (whose chain, which key signs), the text says so.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

#: Audit answers describe one tenant's or one citizen's activity: never kept by shared caches.
NO_STORE = {"Cache-Control": "no-store"}


class CheckpointView(BaseModel):
    seq: int = Field(description="The entry the checkpoint covers (1 = the first).")
    token: str = Field(description="Compact JWS, `typ: cartera-audit-checkpoint+jwt`, payload "
                                   "`{v, chain, seq, head, iat, iss}`; at the issuer signed with the tenant's "
                                   "signing key, at the wallet by a key of `GET /v1/audit/jwks`.")


class HeadView(BaseModel):
    chain: str = Field(description="The chain's name: the tenant id (issuer) or the wallet id (wallet).")
    seq: int = Field(description="How many entries the chain holds.")
    head: str = Field(description="Hex SHA-256 hash of the last entry (64 zeros for an empty chain).")
    checkpoint: CheckpointView | None = Field(description="The latest signed checkpoint (covers the head).")


class EntryView(BaseModel):
    chain: str
    seq: int
    id: str = Field(description="The issuance record (credential) id at the issuer; the history entry id, or "
                                "the session id of a login, at the wallet.")
    kind: str = Field(description="issuer: issued | status | withdrawn; wallet: receipt | share | decline | "
                                  "deletion | login | ...")
    at: str = Field(description="Event time, ISO 8601 UTC.")
    digest: str = Field(description="Salted SHA-256 commitment to the content.")


class ProofView(BaseModel):
    v: int
    prev_hash: str = Field(description="Hash of the entry before this one.")
    entry: EntryView
    following: list[EntryView] = Field(description="The later entries up to the checkpoint (digests only).")
    checkpoint: str = Field(description="The signed checkpoint the proof ends at.")
    content: dict[str, Any] | None = Field(description="What the entry commits to (the record as issued, or "
                                                       "the history details).")
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
