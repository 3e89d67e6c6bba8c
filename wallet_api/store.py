"""Reading and writing the vault's rows for one citizen (always scoped by wallet id).

**Copies are sealed to their credential.** A credential copy is sealed as kind ``credential-copy`` with
row id ``<credential id>|<copy id>`` (:func:`copy_ref`): the associated data names the credential it
belongs to, as well as the copy. ``credential_copies.credential_id`` is a clear column, and when the
seal named the copy alone (kind ``copy``, row id ``<copy id>``, earlier versions) a database writer could
point a copy of one credential at another credential of the same wallet and it opened: the wallet then
showed and presented credential A's claims under credential B's type, issuer and status. Now such a copy
does not open, and its credential reads as unreadable (:func:`load_credentials`). A copy's
``position`` and ``uses`` are not bound: they only order interchangeable copies of one credential.

Copies sealed the earlier way are sealed again, bound to the credential their row names, by a pass that
starts with the first start-up of this version and runs in the background (:func:`bind_legacy_copies`,
driven by :func:`keep_binding_legacy_copies`; a migration cannot, as it does not have the master key).
It is complete, and recorded in ``service_keys`` as :data:`COPIES_BOUND_MARKER`, only once every wallet
holding copies had its data key opened: a wrong master key at that start-up must not make the copies it
could not reach unreadable for ever. Its first run goes over every copy and records the copies of the
wallets whose data key did not open as left, each with the digest of its row (credential, wallet,
sealed value), sealed under the master key (:class:`~wallet_api.vault.LeftOvers`); later runs go over
those copies only. Until the first run is over a copy sealed the earlier way still opens
(:func:`open_copy`), as it did before the upgrade; then only a copy that run left, in the row it left
it in; once complete, none, whenever it was written. So a copy planted or moved after the first run
never opens the earlier way, whatever holds the pass back. New copies are always sealed bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import json
import logging
import random
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import LargeBinary, String, bindparam, delete, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
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
from .vault import (
    CLOSED,
    COMPLETE,
    FIRST_RUN,
    LEFT,
    REFUSED,
    DataKey,
    LeftOvers,
    Vault,
    VaultError,
    left_digest,
    new_id,
    service_key_aad,
)

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
#: copies under (row id: the copy's id), which opens only until :func:`bind_legacy_copies` has completed.
COPY_KIND = "credential-copy"
LEGACY_COPY_KIND = "copy"
#: The ``service_keys`` row recording that :func:`bind_legacy_copies` completed: every copy of every
#: wallet whose data key opened is bound (or damaged beyond opening either way).
COPIES_BOUND_MARKER = "copies-bound-to-credentials"
#: The ``service_keys`` row of the worker running :func:`bind_legacy_copies` (its ``created_at``: when
#: it last renewed it), so that workers starting together do not each scan every copy.
COPIES_BINDING_LEASE = "copies-binding-lease"
#: A lease not renewed for this long belongs to a worker that stopped: another one takes it over.
BINDING_LEASE = dt.timedelta(seconds=120)
#: Wallets read per round of the pass (their copies read together, sealed again, written in chunks).
BINDING_BATCH = 200
#: Copies written per transaction (one statement): on SQLite it holds the only write lock meanwhile.
_WRITE_CHUNK = 500
#: Wallets whose data key did not open named one by one in the log, per run (then only counted).
_NAMED_WALLETS = 100


def copy_ref(credential_id: str, copy_id: str) -> str:
    """The row id a copy is sealed under: its credential's id and its own (ids never hold ``|``)."""
    return f"{credential_id}|{copy_id}"


def open_copy(key: DataKey, row: CredentialCopy, *, left_over: bool = False) -> OpenCopy:
    """Decrypt a copy; one whose row names another credential than it was sealed for does not open.

    Until :func:`bind_legacy_copies` has completed, a copy sealed the earlier way (under its own id
    only) opens too, as it did in earlier versions: any copy until the pass's first run is over
    (``key.legacy_copies`` is ``True``), after it only a copy that run left as it was, still in that row
    with that value (``left_over``: :func:`load_credentials` looks it up in the pass's
    :class:`~wallet_api.vault.LeftOvers`). A wallet the pass could not reach yet (or whose data key it
    could not open) keeps working; a copy planted or moved after the first run never opens that way."""
    try:
        data = key.open(COPY_KIND, copy_ref(row.credential_id, row.id), row.sealed)
    except VaultError:
        if not (key.legacy_copies is True or (left_over and isinstance(key.legacy_copies, LeftOvers))):
            raise
        data = key.open(LEGACY_COPY_KIND, row.id, row.sealed)
    return OpenCopy(id=row.id, position=row.position, uses=row.uses, token=data["token"],
                    holder_key=Key.from_jwk(data["holder_jwk"]))


def copy_digest(credential_id: str, wallet_id: str, sealed: bytes) -> bytes:
    """What the copy pass records of a copy it left (with the copy's id): the credential and wallet its
    row names, and its sealed value."""
    return left_digest(credential_id, wallet_id, sealed)


async def load_credentials(session: AsyncSession, key: DataKey, *, credential_id: str | None = None,
                           vcts: Collection[str] | None = None,
                           unreadable: list[Credential] | None = None) -> list[OpenCredential]:
    """The wallet's credentials (or one), decrypted, oldest first.

    ``vcts``: only the credentials of these types, chosen by the row's clear ``vct`` column before
    anything is decrypted (an empty collection: none). The clear column is the ``vct`` of the
    credential as received; a row whose column was changed in the database is left out, or read and
    then judged by the ``vct`` its sealed copy carries, never by the column.

    A credential whose sealed details or one of whose copies does not open (tampered with or corrupted)
    raises :class:`~wallet_api.vault.VaultError`, unless ``unreadable`` is given: its row is then put
    there (and logged, with its id and the error's code) and the others are returned."""
    query = select(Credential).where(Credential.wallet_id == key.wallet_id)
    if credential_id is not None:
        query = query.where(Credential.id == credential_id)
    if vcts is not None:
        if not vcts:
            return []
        query = query.where(Credential.vct.in_(sorted(set(vcts))))
    rows = (await session.execute(query.order_by(Credential.created_at, Credential.id))).scalars().all()
    if not rows:
        return []
    copies = (await session.execute(
        select(CredentialCopy).where(CredentialCopy.wallet_id == key.wallet_id,
                                     CredentialCopy.credential_id.in_([r.id for r in rows]))
        .order_by(CredentialCopy.position))).scalars().all()
    by_credential: dict[str, list[CredentialCopy]] = {}
    opened: dict[str, OpenCopy] = {}
    failed: dict[str, VaultError] = {}
    for copy in copies:
        by_credential.setdefault(copy.credential_id, []).append(copy)
        try:
            opened[copy.id] = open_copy(key, copy)
        except VaultError as exc:
            failed[copy.id] = exc
    if failed and isinstance(key.legacy_copies, LeftOvers):
        # Only copies that do not open bound get here: the look-up costs nothing to a wallet without them.
        suspects = {copy.id: copy for copy in copies if copy.id in failed}
        for copy_id in await key.legacy_copies.matching(session, {
                c.id: copy_digest(c.credential_id, c.wallet_id, c.sealed) for c in suspects.values()}):
            with contextlib.suppress(VaultError):
                opened[copy_id] = open_copy(key, suspects[copy_id], left_over=True)
                del failed[copy_id]
    found: list[OpenCredential] = []
    for row in rows:
        if not by_credential.get(row.id):
            continue
        try:
            details = key.open("credential", row.id, row.sealed)
            broken = next((failed[c.id] for c in by_credential[row.id] if c.id in failed), None)
            if broken is not None:
                raise broken
            found.append(OpenCredential(row=row, details=details, copies=[opened[c.id] for c in by_credential[row.id]]))
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


@dataclass
class CopyBinding:
    """What one run of :func:`bind_legacy_copies` found and did."""

    #: ``bound``: the marker was there already; ``completed``: this run recorded it; ``incomplete``: a
    #: wallet's data key did not open, so no marker (copies that run left as they were still open the
    #: earlier way); ``busy``: another worker holds the lease, nothing done; ``lease-lost``: another
    #: worker took it over midway.
    outcome: str
    resealed: int = 0
    damaged: int = 0
    wallets_unopened: int = 0
    #: Copies the first run left that are not bound: moved or changed since, or their record does not open.
    refused: int = 0
    #: Wallets holding copies whose data key opened.
    wallets_opened: int = 0

    @property
    def bound(self) -> bool:
        """The marker is recorded: from now on a copy opens bound to its credential only."""
        return self.outcome in ("bound", "completed")


#: The tag naming the copy pass's left-over rows in ``service_keys`` (:class:`~wallet_api.vault.LeftOvers`).
_COPIES_TAG = "copies"
#: Left copies read per round of a later run.
_LEFT_BATCH = 500


def _left_copies(vault: Vault) -> LeftOvers:
    return LeftOvers(vault, COPIES_BOUND_MARKER, _COPIES_TAG)


async def copies_bound(db: Database) -> bool:
    """Whether :func:`bind_legacy_copies` has completed (:data:`COPIES_BOUND_MARKER` is recorded)."""
    async with db.read_session() as session:
        return await session.get(ServiceKey, COPIES_BOUND_MARKER) is not None


async def _fallback(db: Database, vault: Vault) -> tuple[str, LeftOvers]:
    """Set ``vault.legacy_copies`` from the pass's state (:meth:`~wallet_api.vault.LeftOvers.state`):
    any copy may open the earlier way before its first run is over, then only those it left, none once
    it has completed, or when its record of what it left does not open."""
    left = _left_copies(vault)
    state = await left.state(db)
    vault.legacy_copies = True if state == FIRST_RUN else left if state == LEFT else False
    return state, left


async def copy_fallback(db: Database, vault: Vault) -> bool:
    """Start-up, and each worker now and then: set which copies sealed the earlier way ``vault`` still
    opens (``vault.legacy_copies``); ``True`` when the pass has completed (none)."""
    return (await _fallback(db, vault))[0] == COMPLETE


class _Lease:
    """:data:`COPIES_BINDING_LEASE` while a run holds it: ``mine`` is ``None`` once let go, or lost."""

    def __init__(self, db: Database, mine: bytes) -> None:
        self.db, self.mine, self.renewed = db, mine, time.monotonic()

    async def kept(self) -> bool:
        """Renew the lease when due; ``False`` when another worker took it over."""
        if self.mine is not None and time.monotonic() - self.renewed > BINDING_LEASE.total_seconds() / 4:
            if not await _renew_lease(self.db, self.mine):
                self.mine = None
                return False
            self.renewed = time.monotonic()
        return self.mine is not None


async def bind_legacy_copies(db: Database, vault: Vault, *, batch: int = BINDING_BATCH) -> CopyBinding:
    """Seal again, bound to their credential, the copies earlier versions sealed under the copy's id
    alone; record :data:`COPIES_BOUND_MARKER` once no wallet holding such copies is left whose data key
    did not open, and then clear ``vault.legacy_copies``. One log line says what it did.

    Its first run goes over every wallet, ``batch`` a round, and binds each copy to the credential its
    row names at that moment: a copy moved before the upgrade cannot be told from one that was not. A
    wallet whose data key does not open (a wrong master key, a rotation's previous key not configured)
    holds back the marker: its copies stay as they are, each recorded as left with the digest of its
    row (credential, wallet, sealed value), sealed under the master key
    (:class:`~wallet_api.vault.LeftOvers`). Every later run goes over those copies only and binds one only
    while its row is still the one recorded; only they open the earlier way meanwhile. A copy planted
    or moved after the first run is never bound, nor opened the earlier way. A copy that opens neither
    way while its wallet's key opened is damaged: logged (ids only), counted, left as it is; it does not
    hold back the marker (its credential reads as unreadable either way). A record of what the first run
    left that does not open (forged or altered) is refused, as if it had left nothing. A first run with
    keys that do not open the subject index key records nothing
    (:meth:`~wallet_api.vault.LeftOvers.first_run_over`), and all copies keep opening the earlier way
    until a run with the right keys.

    Only the worker holding :data:`COPIES_BINDING_LEASE` scans (the others answer ``busy``); one that
    stopped midway is taken over once its lease is :data:`BINDING_LEASE` old. Rows are read outside any
    transaction, sealed again in a thread and written by conditional updates on the value read, so a
    run cut anywhere, or overlapping with a worker that took its lease over, leaves every copy either
    as it was or bound, and the next run skips those already bound."""
    state, left = await _fallback(db, vault)
    if state == COMPLETE:
        return CopyBinding("bound")
    mine = await _take_lease(db, vault)
    if mine is None:
        return CopyBinding("busy")
    lease = _Lease(db, mine)
    result = CopyBinding("incomplete")
    try:
        # The worker that held the lease may have moved the pass on (and let go) since the look above.
        state, left = await _fallback(db, vault)
        if state == COMPLETE:
            return CopyBinding("bound")
        if state == CLOSED:
            log.error("binding credential copies: the record of the copies its first run left does not open with "
                      "the master keys configured (nor does the subject index key): nothing done, no copy opens "
                      "the earlier way; configure the right master key and restart", extra={"outcome": "closed"})
            return result
        keys_right = state != FIRST_RUN or await vault.keys_open(db)
        if state == REFUSED:
            result.refused += 1
            log.error("binding credential copies: the record of the copies its first run left does not open (forged "
                      "or altered): refused, as if it had left none; none of them opens the earlier way or is bound",
                      extra={"code": "pass.left_refused"})
        elif state == FIRST_RUN:
            await _bind_all(db, vault, left if keys_right else None, batch, result, lease)
        else:
            await _bind_left(db, vault, left, result, lease)
        if result.outcome == "incomplete" and not result.wallets_unopened:
            await left.complete(db)
            result.outcome = "completed"
            vault.legacy_copies = False
        elif result.outcome == "incomplete" and state == FIRST_RUN and keys_right:
            if await left.first_run_over(db, opened_any=result.wallets_opened > 0):
                vault.legacy_copies = left
    finally:
        if lease.mine is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):  # else it runs out on its own
                async with db.session() as session:
                    await session.execute(delete(ServiceKey).where(ServiceKey.name == COPIES_BINDING_LEASE,
                                                                   ServiceKey.sealed == lease.mine))
    _report(result)
    return result


async def keep_binding_legacy_copies(db: Database, vault: Vault, *, poll: float = 30.0) -> CopyBinding:
    """Start-up, in the background (until the marker is recorded): run :func:`bind_legacy_copies` until
    the marker is recorded, by this worker or another; return the last run's result.

    While another worker holds the lease, or after its database went away, tries again every ``poll``
    seconds (jittered, so workers started together do not stay in step); each look also takes up what
    another worker's run changed (``vault.legacy_copies``: after its first run, only the copies it left
    open the earlier way). After a run of its own found a wallet's data key closed it only watches for
    that: its master keys will not change before a restart, and another worker, configured otherwise,
    may complete the pass."""
    ran = False
    while True:
        try:
            if not ran:
                result = await bind_legacy_copies(db, vault)
                if result.bound:
                    return result
                ran = result.outcome == "incomplete"
            elif await copy_fallback(db, vault):
                return CopyBinding("bound")
        except Exception:  # noqa: BLE001 - the database away or restarting: the pass is safe to run again
            log.exception("binding credential copies to their credentials failed; trying again")
        await asyncio.sleep(poll * random.uniform(0.5, 1.5))


async def _bind_all(db: Database, vault: Vault, left: LeftOvers | None, batch: int, result: CopyBinding,
                    lease: _Lease) -> None:
    """The first run: every wallet's copies; those of a wallet whose data key does not open recorded as
    left (unless ``left`` is ``None``: the keys are wrong)."""
    last = ""
    while True:
        async with db.read_session() as session:
            wallets = dict((await session.execute(
                select(Wallet.id, Wallet.data_key).where(Wallet.id > last).order_by(Wallet.id).limit(batch))).all())
            if not wallets:
                break
            # The copies that load_credentials reads: those of the wallet of their credential.
            copies = (await session.execute(
                select(CredentialCopy.id, CredentialCopy.credential_id, CredentialCopy.sealed, Credential.wallet_id)
                .join(Credential, Credential.id == CredentialCopy.credential_id)
                .where(Credential.wallet_id.in_(list(wallets)),
                       CredentialCopy.wallet_id == Credential.wallet_id))).all()
        # The AES work of a round off the event loop: the pass runs beside live traffic.
        changes, unopened = await asyncio.to_thread(_reseal, vault, wallets, copies, result, left)
        await _write(db, changes, result)
        if left is not None:
            for start in range(0, len(unopened), _WRITE_CHUNK):
                async with db.session() as session:
                    await left.record(session, unopened[start:start + _WRITE_CHUNK])
        if len(wallets) < batch:
            break
        last = max(wallets)
        if not await lease.kept():
            result.outcome = "lease-lost"
            break


async def _write(db: Database, changes: list[tuple[str, str, bytes, bytes]], result: CopyBinding) -> None:
    for start in range(0, len(changes), _WRITE_CHUNK):  # short transactions: SQLite has one writer
        async with db.session() as session:
            result.resealed += await _write_resealed(session, changes[start:start + _WRITE_CHUNK])


async def _bind_left(db: Database, vault: Vault, left: LeftOvers, result: CopyBinding, lease: _Lease) -> None:
    """A later run: the copies the first run left, each bound only while its row is the one recorded;
    dropped from the set once bound, gone, damaged or refused."""
    after: str | None = None
    unopened: set[str] = set()
    while True:
        entries = await left.page(db, after, _LEFT_BATCH)
        if not entries:
            break
        async with db.read_session() as session:
            copies = (await session.execute(
                select(CredentialCopy.id, CredentialCopy.credential_id, CredentialCopy.sealed, Credential.wallet_id,
                       Wallet.data_key)
                .join(Credential, Credential.id == CredentialCopy.credential_id)
                .join(Wallet, Wallet.id == Credential.wallet_id)
                .where(CredentialCopy.id.in_([copy_id for copy_id, _ in entries]),
                       CredentialCopy.wallet_id == Credential.wallet_id))).all()
        changes, finished = await asyncio.to_thread(_reseal_left, vault, entries, copies, result, unopened)
        await _write(db, changes, result)
        async with db.session() as session:  # after the copies are written: a cut run finds them bound
            await left.drop(session, finished)
        if len(entries) < _LEFT_BATCH:
            break
        after = entries[-1][0]
        if not await lease.kept():
            result.outcome = "lease-lost"
            break


def _data_key(vault: Vault, wallet_id: str, data_key: bytes) -> tuple[DataKey | None, str]:
    try:
        return vault.data_key(Wallet(id=wallet_id, data_key=data_key)), ""
    except (VaultError, SecretBoxError) as exc:
        return None, exc.code


def _unopened(result: CopyBinding, wallet_id: str, code: str) -> None:
    result.wallets_unopened += 1
    if result.wallets_unopened <= _NAMED_WALLETS:
        log.error("a wallet's data key does not open; its credential copies are left as they are",
                  extra={"code": code, "wallet": wallet_id})


def _rebound(key: DataKey, copy_id: str, credential_id: str, sealed: bytes, result: CopyBinding
             ) -> tuple[str, str, bytes, bytes] | None:
    """A copy sealed the earlier way, sealed again bound: ``(id, credential id, value read, new value)``;
    ``None`` when it is bound already, or damaged (logged, counted)."""
    ref = copy_ref(credential_id, copy_id)
    try:
        value = key.open(LEGACY_COPY_KIND, copy_id, sealed)
    except VaultError:
        try:
            key.open(COPY_KIND, ref, sealed)  # bound already: written by this version, or an earlier run
        except VaultError as exc:
            result.damaged += 1
            log.error("a stored credential copy does not open; left as it is", extra={
                "code": exc.code, "wallet": key.wallet_id, "credential": credential_id, "copy": copy_id})
        return None
    return copy_id, credential_id, sealed, key.seal(COPY_KIND, ref, value)


def _reseal(vault: Vault, wallets: dict[str, bytes], copies: Sequence[Any], result: CopyBinding,
            left: LeftOvers | None) -> tuple[list[tuple[str, str, bytes, bytes]], list[dict[str, Any]]]:
    """The copies of one round sealed the earlier way, sealed again (:func:`_rebound`), and the records of
    the copies left (of wallets whose data key does not open: logged and counted)."""
    keys: dict[str, DataKey | None] = {}
    changes: list[tuple[str, str, bytes, bytes]] = []
    unopened: list[dict[str, Any]] = []
    for copy_id, credential_id, sealed, wallet_id in copies:
        if wallet_id not in keys:
            keys[wallet_id], code = _data_key(vault, wallet_id, wallets[wallet_id])
            if keys[wallet_id] is None:
                _unopened(result, wallet_id, code)
            else:
                result.wallets_opened += 1
        key = keys[wallet_id]
        if key is None:
            if left is not None:
                unopened.append(left.entry(copy_id, copy_digest(credential_id, wallet_id, sealed)))
            continue
        change = _rebound(key, copy_id, credential_id, sealed, result)
        if change is not None:
            changes.append(change)
    return changes, unopened


def _reseal_left(vault: Vault, entries: list[tuple[str, bytes | None]], copies: Sequence[Any], result: CopyBinding,
                 unopened: set[str]) -> tuple[list[tuple[str, str, bytes, bytes]], list[str]]:
    """Of a round of the copies the first run left: those sealed again, and those done with (bound now,
    gone, damaged, or refused: changed since, or their record does not open)."""
    rows = {row[0]: row for row in copies}
    keys: dict[str, tuple[DataKey | None, str]] = {}
    changes: list[tuple[str, str, bytes, bytes]] = []
    finished: list[str] = []
    for copy_id, recorded in entries:
        row = rows.get(copy_id)
        if recorded is None or row is None:
            finished.append(copy_id)  # its record is forged or altered; or the copy (or its credential) is gone
            if recorded is None:
                result.refused += 1
                log.error("a record of a credential copy the pass's first run left does not open (forged or altered); "
                          "refused", extra={"copy": copy_id, "code": "pass.left_refused"})
            continue
        _, credential_id, sealed, wallet_id, data_key = row
        if wallet_id not in keys:
            keys[wallet_id] = _data_key(vault, wallet_id, data_key)
        key, code = keys[wallet_id]
        if not hmac.compare_digest(copy_digest(credential_id, wallet_id, sealed), recorded):
            finished.append(copy_id)
            try:
                bound = key is not None and bool(key.open(COPY_KIND, copy_ref(credential_id, copy_id), sealed))
            except VaultError:
                bound = False
            if not bound:  # moved to another credential, or another value put in: never the earlier way
                result.refused += 1
                log.error("a credential copy changed since the pass's first run left it; not bound, and it does not "
                          "open the earlier way", extra={"code": "pass.left_changed", "wallet": wallet_id,
                                                        "credential": credential_id, "copy": copy_id})
            continue
        if key is None:
            if wallet_id not in unopened:
                unopened.add(wallet_id)
                _unopened(result, wallet_id, code)
            continue
        finished.append(copy_id)
        change = _rebound(key, copy_id, credential_id, sealed, result)
        if change is not None:
            changes.append(change)
    return changes, finished


#: PostgreSQL: one statement a chunk, with four array parameters (prepared once, whatever the chunk's
#: size: a VALUES list of as many rows costs more to compile than to run); RETURNING counts the rows
#: written, which asyncpg's executemany does not.
_RESEAL_POSTGRESQL = text(
    "UPDATE credential_copies AS c SET sealed = v.new FROM unnest(:ids, :credentials, :old, :new) "
    "AS v (id, credential_id, old, new) "
    "WHERE c.id = v.id AND c.credential_id = v.credential_id AND c.sealed = v.old RETURNING c.id").bindparams(
    bindparam("ids", type_=ARRAY(String)), bindparam("credentials", type_=ARRAY(String)),
    bindparam("old", type_=ARRAY(LargeBinary)), bindparam("new", type_=ARRAY(LargeBinary)))


async def _write_resealed(session: AsyncSession, changes: list[tuple[str, str, bytes, bytes]]) -> int:
    """Write copies sealed again, each only where the row still names that credential and holds the value
    read (deleted meanwhile, or written by another worker: left as it is); return how many were written."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        ids, credentials, old, new = (list(column) for column in zip(*changes, strict=True))
        return len((await session.execute(_RESEAL_POSTGRESQL, {
            "ids": ids, "credentials": credentials, "old": old, "new": new})).all())
    # SQLite's executemany runs in the driver, one prepared statement, and counts the rows.
    table = CredentialCopy.__table__
    done = await session.execute(
        update(table).where(table.c.id == bindparam("c_id"), table.c.credential_id == bindparam("c_cred"),
                            table.c.sealed == bindparam("c_old")).values(sealed=bindparam("c_new")),
        [{"c_id": i, "c_cred": c, "c_old": o, "c_new": n} for i, c, o, n in changes])
    return int(done.rowcount)  # type: ignore[attr-defined]


async def _take_lease(db: Database, vault: Vault) -> bytes | None:
    """Take :data:`COPIES_BINDING_LEASE`, free or left by a stopped worker; the value that shows it is
    ours (a random id, sealed as a master-key rotation expects of every ``service_keys`` row), or
    ``None``: another worker holds it."""
    now = utcnow()
    mine = vault.box.seal(new_id("lease").encode(), service_key_aad(COPIES_BINDING_LEASE))
    try:
        async with db.session() as session:
            session.add(ServiceKey(name=COPIES_BINDING_LEASE, sealed=mine, created_at=now))
        return mine
    except IntegrityError:
        pass
    async with db.session() as session:
        taken = await session.execute(
            update(ServiceKey).where(ServiceKey.name == COPIES_BINDING_LEASE, ServiceKey.created_at < now - BINDING_LEASE)
            .values(sealed=mine, created_at=now).execution_options(synchronize_session=False))
    return mine if taken.rowcount == 1 else None  # type: ignore[attr-defined]


async def _renew_lease(db: Database, mine: bytes) -> bool:
    async with db.session() as session:
        renewed = await session.execute(
            update(ServiceKey).where(ServiceKey.name == COPIES_BINDING_LEASE, ServiceKey.sealed == mine)
            .values(created_at=utcnow()).execution_options(synchronize_session=False))
    return renewed.rowcount == 1  # type: ignore[attr-defined]


def _report(result: CopyBinding) -> None:
    if result.outcome == "busy":
        return
    counts = {"resealed": result.resealed, "damaged": result.damaged, "wallets_unopened": result.wallets_unopened,
              "refused": result.refused, "outcome": result.outcome}
    summary = (f"{result.resealed} re-sealed, {result.damaged} damaged, {result.wallets_unopened} wallets whose "
               f"data key did not open, {result.refused} refused")
    if result.bound:
        (log.error if result.refused else log.info)(
            f"credential copies bound to their credentials: {summary}; copies sealed the earlier way no longer open",
            extra=counts)
    elif result.outcome == "lease-lost":
        log.warning(f"binding credential copies: another worker took the pass over after {summary}", extra=counts)
    else:
        log.error(f"credential copies NOT all bound to their credentials: {summary}; the copies of those wallets "
                  "are left as they were and still open the earlier way (only they, once the pass's first run is "
                  "over); configure the master key (and the previous ones) that open those wallets and restart",
                  extra=counts)


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
