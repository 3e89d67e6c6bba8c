"""Encrypted backups of the whole wallet."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from ..backup import export_wallet, import_wallet
from ..deps import Citizen, Ctx

router = APIRouter(tags=["backup"])


class ExportIn(BaseModel):
    passphrase: str = Field(min_length=1, max_length=1000, description="Protects the file (at least 10 characters).")
    pin: str | None = Field(default=None, max_length=12,
                            description="The wallet PIN, when one is set (the file holds the holder keys).")


class ImportIn(BaseModel):
    passphrase: str = Field(min_length=1, max_length=1000, description="The backup's passphrase.")
    backup: dict[str, Any] = Field(description="The backup file's JSON content.")


@router.post("/backup/export", summary="Export an encrypted backup")
async def post_export(ctx: Ctx, me: Citizen, body: ExportIn) -> dict[str, Any]:
    """The whole wallet (credentials, keys, history) encrypted with the passphrase (scrypt + AES-256-GCM),
    bound to this citizen's wallet: it restores into this wallet only.

    Needs `pin` when the wallet has one, counted as presenting's attempts are: 403 `invalid_pin`,
    423 `pin_locked`; a missing `pin` is 403 `pin_required` and costs no attempt.

    A stored credential or history entry that does not open (damaged, or sealed under a key the wallet
    no longer has) is left out, and the answer says so: `skipped_count` counts them (0 when nothing
    was left out), beside the ciphertext (not encrypted, not authenticated) so the app can tell the
    citizen. Which rows (each one's `id`, `kind` — `credential` or the history entry's kind — and
    `created_at`) is listed only inside the encrypted content, as `skipped`, where an import reads it."""
    return await export_wallet(ctx, me, body.passphrase, body.pin)


@router.post("/backup/import", summary="Import an encrypted backup")
async def post_import(ctx: Ctx, me: Citizen, body: ImportIn,
                      accept_language: Annotated[str | None, Header()] = None) -> dict[str, int]:
    """Add the backup's credentials and history to this wallet. The file must have been exported from
    this wallet and not changed since (else 403 `foreign_backup`); every copy is verified as a received
    credential is, and one entry that does not verify refuses the whole file (400 `invalid_backup`
    naming it and why). History entries come back as kind `imported`; the import is a `restore` event.
    Answers `credentials_added`, `credentials_expired` (of those, restored already expired),
    `history_imported` and `skipped_at_export` (how many rows the export had to leave out because they
    did not open: what this file lacks; 0 for files exported before it was recorded)."""
    return await import_wallet(ctx, me, body.backup, body.passphrase, accept_language)
