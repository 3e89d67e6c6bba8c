"""Reading and writing the vault's rows for one citizen (always scoped by wallet id).

**Copies are sealed to their credential.** A credential copy is sealed as kind ``credential-copy`` with
row id ``<credential id>|<copy id>`` (:func:`copy_ref`): the associated data names the credential it
belongs to, as well as the copy. ``credential_copies.credential_id`` is a clear column, and when the
seal named the copy alone (kind ``copy``, row id ``<copy id>``, earlier versions) a database writer could
point a copy of one credential at another credential of the same wallet and it opened: the wallet then
showed and presented credential A's claims under credential B's type, issuer and status. Now such a copy
does not open, and its credential reads as unreadable (:func:`load_credentials`). A copy's
``position`` and ``uses`` are not bound: they only order interchangeable copies of one credential.

Copies sealed the earlier way are sealed again, bound to the credential their row names, once, at the
first start-up of this version (:func:`bind_legacy_copies`, recorded in ``service_keys`` as
:data:`COPIES_BOUND_MARKER`): a migration cannot, as it does not have the master key. After that a copy
sealed the earlier way never opens, whenever it was written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.crypto import SecretBoxError
from service_kit.db import Database
from service_kit.errors import APIError
from ssi.jose import Key
from ssi.sd_jwt import SDJWT

from . import audit
from .models import (
    Alert,
    AlertWebhookOutbox,
    Credential,
    CredentialCopy,
    HistoryEntry,
    ServiceKey,
    Wallet,
    utcnow,
)
from .vault import DataKey, Vault, VaultError, new_id, service_key_aad

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


#: The vault kind of a credential copy (row id: :func:`copy_ref`), and the one earlier versions sealed
#: copies under (row id: the copy's id), which only :func:`bind_legacy_copies` still opens.
COPY_KIND = "credential-copy"
LEGACY_COPY_KIND = "copy"
#: The ``service_keys`` row recording that :func:`bind_legacy_copies` ran.
COPIES_BOUND_MARKER = "copies-bound-to-credentials"


def copy_ref(credential_id: str, copy_id: str) -> str:
    """The row id a copy is sealed under: its credential's id and its own (ids never hold ``|``)."""
    return f"{credential_id}|{copy_id}"


def open_copy(key: DataKey, row: CredentialCopy) -> OpenCopy:
    """Decrypt a copy; one whose row names another credential than it was sealed for does not open."""
    data = key.open(COPY_KIND, copy_ref(row.credential_id, row.id), row.sealed)
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
                                   position=position, sealed=key.seal(COPY_KIND, copy_ref(credential_id, copy_id),
                                                                      {"token": token, "holder_jwk": holder_jwk})))
    return credential_id


async def bind_legacy_copies(db: Database, vault: Vault, *, batch: int = 200) -> int:
    """Seal again, bound to their credential, the copies earlier versions sealed under the copy's id
    alone; return how many. Start-up, after the migrations: runs until it has recorded
    :data:`COPIES_BOUND_MARKER`, never again after, so a copy sealed the earlier way that reaches the
    database later (a worker of an earlier version, an old row put back) does not open.

    Each copy is bound to the credential its row names at that moment: a copy moved before the upgrade
    cannot be told from one that was not. Rows are rewritten by a conditional update on the value read,
    so several workers starting at once do not disturb each other. A copy (or its wallet's data key)
    that opens neither way is logged and left: its credential reads as unreadable on its own, and one
    such row must not keep the service from starting for everyone else."""
    async with db.read_session() as session:
        if await session.get(ServiceKey, COPIES_BOUND_MARKER) is not None:
            return 0
    count, last = 0, ""
    while True:
        async with db.session() as session:
            rows = (await session.execute(
                select(CredentialCopy.id, CredentialCopy.credential_id, CredentialCopy.sealed, Wallet.id,
                       Wallet.data_key)
                .join(Wallet, Wallet.id == CredentialCopy.wallet_id)
                .where(CredentialCopy.id > last).order_by(CredentialCopy.id).limit(batch))).all()
            keys: dict[str, DataKey] = {}
            for copy_id, credential_id, sealed, wallet_id, data_key in rows:
                ref = copy_ref(credential_id, copy_id)
                try:
                    key = keys.get(wallet_id) or vault.data_key(Wallet(id=wallet_id, data_key=data_key))
                    keys[wallet_id] = key
                    try:
                        value = key.open(LEGACY_COPY_KIND, copy_id, sealed)
                    except VaultError:
                        key.open(COPY_KIND, ref, sealed)
                        continue  # bound already (written by this version)
                except (VaultError, SecretBoxError) as exc:
                    log.error("a stored credential copy does not open; not bound to its credential", extra={
                        "code": getattr(exc, "code", ""), "wallet": wallet_id, "credential": credential_id,
                        "copy": copy_id})
                    continue
                result = await session.execute(
                    update(CredentialCopy).where(CredentialCopy.id == copy_id,
                                                 CredentialCopy.credential_id == credential_id,
                                                 CredentialCopy.sealed == sealed)
                    .values(sealed=key.seal(COPY_KIND, ref, value)).execution_options(synchronize_session=False))
                count += result.rowcount  # type: ignore[attr-defined]
        if len(rows) < batch:
            break
        last = rows[-1][0]
    try:
        async with db.session() as session:
            session.add(ServiceKey(name=COPIES_BOUND_MARKER, sealed=vault.box.seal(
                COPIES_BOUND_MARKER.encode(), service_key_aad(COPIES_BOUND_MARKER))))
    except IntegrityError:
        pass  # another worker recorded it at the same moment
    return count


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
