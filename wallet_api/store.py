"""Reading and writing the vault's rows for one citizen (always scoped by wallet id)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.errors import APIError
from ssi.jose import Key
from ssi.sd_jwt import SDJWT

from . import audit
from .models import Alert, AlertWebhookOutbox, Credential, CredentialCopy, HistoryEntry, Wallet, utcnow
from .vault import DataKey, VaultError, new_id

log = logging.getLogger(__name__)


@dataclass
class OpenCopy:
    """A decrypted credential copy: the SD-JWT VC and its holder key."""

    id: str
    position: int
    uses: int
    token: str
    holder_key: Key

    def parsed(self) -> SDJWT:
        return SDJWT.parse(self.token)


@dataclass
class OpenCredential:
    """A decrypted credential: its row, its sealed details and its copies."""

    row: Credential
    details: dict[str, Any]
    copies: list[OpenCopy]

    @property
    def id(self) -> str:
        return self.row.id

    def first(self) -> OpenCopy:
        return self.copies[0]

    def least_used(self) -> OpenCopy:
        """The copy presented the fewest times (batch copies make presentations unlinkable)."""
        return min(self.copies, key=lambda c: (c.uses, c.position))


def open_copy(key: DataKey, row: CredentialCopy) -> OpenCopy:
    data = key.open("copy", row.id, row.sealed)
    return OpenCopy(id=row.id, position=row.position, uses=row.uses, token=data["token"],
                    holder_key=Key.from_jwk(data["holder_jwk"]))


async def load_credentials(session: AsyncSession, key: DataKey, *, credential_id: str | None = None,
                           unreadable: list[Credential] | None = None) -> list[OpenCredential]:
    """The wallet's credentials (or one), decrypted, oldest first.

    A credential whose sealed details or one of whose copies does not open (tampered with or corrupted)
    raises :class:`~wallet_api.vault.VaultError`, unless ``unreadable`` is given: its row is then put
    there (and logged, with its id and the error's code) and the others are returned."""
    query = select(Credential).where(Credential.wallet_id == key.wallet_id)
    if credential_id is not None:
        query = query.where(Credential.id == credential_id)
    rows = (await session.execute(query.order_by(Credential.created_at, Credential.id))).scalars().all()
    if not rows:
        return []
    copies = (await session.execute(
        select(CredentialCopy).where(CredentialCopy.wallet_id == key.wallet_id,
                                     CredentialCopy.credential_id.in_([r.id for r in rows]))
        .order_by(CredentialCopy.position))).scalars().all()
    by_credential: dict[str, list[CredentialCopy]] = {}
    for copy in copies:
        by_credential.setdefault(copy.credential_id, []).append(copy)
    found: list[OpenCredential] = []
    for row in rows:
        if not by_credential.get(row.id):
            continue
        try:
            found.append(OpenCredential(row=row, details=key.open("credential", row.id, row.sealed),
                                        copies=[open_copy(key, copy) for copy in by_credential[row.id]]))
        except VaultError as exc:
            if unreadable is None:
                raise
            log.error("a stored credential does not open; left out", extra={
                "code": exc.code, "wallet": key.wallet_id, "credential": row.id})
            unreadable.append(row)
    return found


async def get_credential(session: AsyncSession, key: DataKey, credential_id: str) -> OpenCredential:
    """One of the wallet's credentials, or 404 (another wallet's id gives 404 too)."""
    found = await load_credentials(session, key, credential_id=credential_id)
    if not found:
        raise APIError(404, "not_found", "no such credential")
    return found[0]


async def lock_wallet(session: AsyncSession, wallet_id: str) -> None:
    """Serialise ``session``'s transaction with the other writers of the wallet's credentials that take
    this lock (backup imports, credential deletions): the ``wallets`` row locked ``FOR UPDATE`` on
    PostgreSQL, until the transaction ends. On SQLite every write transaction is serial already
    (``BEGIN IMMEDIATE``, :mod:`service_kit.db`); what the transaction reads after this sees what the
    writer before it committed."""
    await session.execute(select(Wallet.id).where(Wallet.id == wallet_id).with_for_update())


def _ts(value: Any) -> dt.datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return None


async def add_credential(session: AsyncSession, key: DataKey, *, vct: str, issuer: str, details: dict[str, Any],
                         copies: list[tuple[str, dict[str, Any]]], iat: Any, exp: Any,
                         credential_id: str | None = None, status: str = "valid") -> str:
    """Store a credential and its copies ``(token, holder private JWK)``, all sealed; return its id."""
    credential_id = credential_id or new_id("cred")
    session.add(Credential(id=credential_id, wallet_id=key.wallet_id, vct=vct, issuer=issuer,
                           sealed=key.seal("credential", credential_id, details), issued_at=_ts(iat),
                           expires_at=_ts(exp), status=status,
                           next_status_check=None if status == "revoked" else utcnow()))
    await session.flush()
    for position, (token, holder_jwk) in enumerate(copies):
        copy_id = new_id("copy")
        session.add(CredentialCopy(id=copy_id, credential_id=credential_id, wallet_id=key.wallet_id,
                                   position=position, sealed=key.seal("copy", copy_id,
                                                                      {"token": token, "holder_jwk": holder_jwk})))
    return credential_id


async def add_history(session: AsyncSession, key: DataKey, kind: str, details: dict[str, Any]) -> str:
    """Record one history event (details sealed) and its audit chain entry, in ``session``'s transaction."""
    entry_id = new_id("hist")
    now = utcnow()
    session.add(HistoryEntry(id=entry_id, wallet_id=key.wallet_id, kind=kind, created_at=now,
                             sealed=key.seal("history", entry_id, details)))
    await audit.record(session, key, entry_id=entry_id, kind=kind, at=now, content=details)
    return entry_id


ALERT_EVENT = "wallet.alert"
WEBHOOK_ENDPOINT = "alerts"


async def add_alert(session: AsyncSession, wallet_id: str, kind: str, message: str,
                    credential_id: str | None = None, *, webhook: bool = False) -> None:
    """Raise an alert for the citizen. Messages name types and issuers, never claim values.

    With ``webhook`` (a ``webhook_url`` is configured) the alert is also queued in the outbox, in the
    same transaction, for the background loop to push (see :mod:`wallet_api.background`)."""
    alert = Alert(wallet_id=wallet_id, kind=kind, message=message, credential_id=credential_id)
    session.add(alert)
    if not webhook:
        return
    await session.flush()  # the alert id goes into the event
    event_id = new_id("evt")
    now = utcnow()
    body = json.dumps({"id": event_id, "type": ALERT_EVENT, "created_at": now.isoformat(),
                       "data": {"alert_id": alert.id, "wallet_id": wallet_id, "kind": kind, "message": message,
                                "credential_id": credential_id}},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    session.add(AlertWebhookOutbox(id=event_id, wallet_id=wallet_id, endpoint_id=WEBHOOK_ENDPOINT,
                                   event_type=ALERT_EVENT, body=body, attempts=0, created_at=now,
                                   next_attempt_at=now))


def pick_display(entries: Any, languages: list[str]) -> dict[str, Any]:
    """The display entry for the best of ``languages`` (``locale`` or ``lang``), else the first."""
    if not isinstance(entries, list):
        return {}
    usable = [e for e in entries if isinstance(e, dict)]
    for lang in languages:
        for entry in usable:
            locale = str(entry.get("locale") or entry.get("lang") or "").lower()
            if locale and (locale == lang or locale.split("-")[0] == lang.split("-")[0]):
                return entry
    return usable[0] if usable else {}


def accept_languages(header: str | None) -> list[str]:
    """Languages from ``Accept-Language``, best first (quality values honoured)."""
    if not header:
        return []
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        lang, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if lang and lang != "*":
            weighted.append((-quality, index, lang.lower()))
    return [lang for _, _, lang in sorted(weighted)]


#: Validation context for protocol objects read back from the vault: they were checked (https rules
#: included) when received, so re-reading them must not re-apply rules that depend on settings.
STORED: dict[str, Any] = {"allow_http_loopback": True}
