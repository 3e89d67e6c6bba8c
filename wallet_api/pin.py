"""The optional wallet PIN: when set, presenting and exporting a backup need it; wrong attempts are limited.

**Storage.** The PIN's scrypt hash (``scrypt$<n>$<r>$<p>$<salt>$<hash>``, N=2^14, r=8, p=1) is sealed under
the wallet's data key (:mod:`wallet_api.vault`, associated data ``cartera-wallet|<wallet>|pin|<wallet>``)
and stored as ``sealed$<base64url>`` in ``wallets.pin_hash``. Without the master key, someone who reads the
database cannot test PINs against it offline, and someone who writes it cannot put in the hash of a PIN
they know: a value that does not open — an unsealed hash, another wallet's, garbage — never passes, and
the citizen is asked to reset the PIN (403 ``pin_reset_required``). Hashes stored unsealed by earlier
versions are sealed by a start-up pass (:func:`seal_legacy_pin_hashes`): its first run goes over every
wallet; the wallets whose data key did not open are recorded as left, each with the digest of its
unsealed hash, sealed under the master key (:class:`~wallet_api.vault.LeftOvers`), and every later
start-up goes over those alone, sealing one only while it holds that very hash, until none is left and
the pass records that it is complete. An unsealed value written into the database after the first run
(into any wallet, whatever row holds the pass back) is never sealed, and so refused — unless the pass's
own rows are deleted from ``service_keys`` too, which makes the next start-up a first run again
(``pass.rerun`` warns when it finds hashes sealed already; docs/security.md, "Not covered").

**Attempts.** After ``pin_max_attempts`` wrong PINs, presenting (and exporting, and changing the PIN) is
locked: ``pin_lock_seconds`` the first time, doubled on each further lockout in a row (at most
``2**MAX_DOUBLINGS`` times), and each lockout raises a ``pin_locked`` alert saying when and from which
session. The ``pin_max_lockouts``-th lockout in a row (and every one after it) also ends every session
of the wallet: a thief guessing with a stolen session is stopped after ``pin_max_attempts ×
pin_max_lockouts`` guesses, and the citizen logs in again at the identity provider. A right PIN clears
the counters. The counters are in the database, so several workers share them. This lockout is the
wallet's per-wallet PIN rate limit (docs/security.md): it answers 423 ``pin_locked`` with
``Retry-After``, and is not duplicated in the generic limiter.

Every attempt is reserved *before* the PIN is compared: one conditional ``UPDATE ... RETURNING``
counts it only while the wallet is under the limit and not locked (the last one sets the lock, and
counts the lockout), so concurrent guesses cannot test more than ``pin_max_attempts`` PINs between two
locks. A request that cannot reserve an attempt gets 423. scrypt runs in a worker thread, never on the
event loop.

**No PIN is a sealed fact too.** A NULL ``pin_hash`` would otherwise read as "no PIN", and a database
writer could remove a citizen's PIN by writing it. So the first PIN set on a wallet is recorded in its
sealed profile (``"pin_ever_set": true``, under the data key like the rest of the profile, which every
login opens and checks; :data:`PIN_RECORDED`), in the transaction that stores the PIN, and removing a
PIN stores a sealed "no PIN" value (``sealed$`` of JSON ``null``), never NULL. A NULL ``pin_hash`` on a
wallet whose profile records a PIN (or whose profile does not open) is a PIN removed outside the
wallet: presenting, exporting and changing the PIN are refused with 403 ``pin_reset_required`` (an
error log names the wallet, nothing else) until the citizen resets it after a fresh login. A wallet that
never had a PIN keeps a NULL ``pin_hash`` and works without one, as before. Wallets that had a PIN
before this version get the record at start-up (:func:`record_pins_in_profiles`, recorded as
:data:`PINS_RECORDED_MARKER` once every such wallet's data key opened; after its first run it revisits
only the wallets that run left, while their profile is the one it saw; it only ever adds records).
What a writer can still do is put back an older copy of the same wallet's profile and
``pin_hash`` (a rollback to a time the wallet had no PIN): that needs an earlier copy of the database,
and no stored state can tell it from the present without an outside anchor.

**Setting, resetting.** A first PIN can be set from any session (an alert tells the citizen); changing
or removing one needs the current PIN. A forgotten PIN — or one a thief set — is reset without it, from
a session whose identity-provider login is at most ``pin_reset_login_seconds`` old
(:func:`reset_pin`); the reset ends the wallet's other sessions and raises an alert.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Update, and_, case, literal, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.crypto import SecretBoxError
from service_kit.db import Database, UTCDateTime
from service_kit.errors import APIError

from .auth import PIN_RECORDED
from .context import WalletContext
from .deps import Principal
from .models import Session, Wallet, utcnow
from .store import add_alert
from .vault import CLOSED, COMPLETE, FIRST_RUN, REFUSED, DataKey, LeftOvers, Vault, VaultError, left_digest

log = logging.getLogger(__name__)

_N, _R, _P = 2**14, 8, 1
#: The lock doubles on each lockout in a row, this many times at most (64 × ``pin_lock_seconds``).
MAX_DOUBLINGS = 6
_SEALED = "sealed$"
_KIND = "pin"
#: The ``service_keys`` row recording that the hashes stored unsealed by earlier versions were sealed.
LEGACY_SEALED_MARKER = "pin-hashes-sealed"
#: The ``service_keys`` row recording that wallets with a PIN from earlier versions got :data:`PIN_RECORDED`.
PINS_RECORDED_MARKER = "pins-recorded-in-profiles"
#: What :func:`pin_status` says of a wallet: no PIN, a PIN, a stored PIN that does not open, a PIN
#: removed outside the wallet (NULL where the profile records one).
NO_PIN, PIN_SET, PIN_UNUSABLE, PIN_ERASED = "none", "set", "unusable", "erased"


def hash_pin(pin: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def pin_matches(pin: str, stored: str) -> bool:
    try:
        _scheme, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(pin.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                  dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


def seal_pin_hash(key: DataKey, pin_hash: str | None) -> str:
    """The PIN hash sealed under the wallet's data key, as stored in ``wallets.pin_hash``; ``None``:
    the sealed "no PIN" a removal stores."""
    sealed = key.seal(_KIND, key.wallet_id, pin_hash)
    return _SEALED + base64.urlsafe_b64encode(sealed).decode().rstrip("=")


_UNOPENED = object()


def _open_stored(key: DataKey, stored: str) -> Any:
    """The sealed value in ``stored`` (a PIN hash, or ``None`` for "no PIN"), or ``_UNOPENED``."""
    if not stored.startswith(_SEALED):
        return _UNOPENED
    body = stored[len(_SEALED):]
    try:
        value = key.open(_KIND, key.wallet_id, base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (VaultError, ValueError, binascii.Error):
        return _UNOPENED
    return value if value is None or isinstance(value, str) else _UNOPENED


def open_pin_hash(key: DataKey, stored: str) -> str | None:
    """The PIN hash in a stored value, or ``None`` when it holds none: it does not open (unsealed,
    another wallet's, or tampered with: such a value never passes), or it is the sealed "no PIN"."""
    value = _open_stored(key, stored)
    return value if isinstance(value, str) else None


def pin_recorded(key: DataKey, profile: bytes) -> bool:
    """Whether the wallet's sealed profile records that a PIN was set (True, failing closed, when the
    profile does not open)."""
    try:
        opened = key.open("profile", key.wallet_id, profile)
    except VaultError:
        return True
    return not isinstance(opened, dict) or bool(opened.get(PIN_RECORDED))


def pin_status(key: DataKey, wallet: Wallet) -> str:
    """:data:`NO_PIN`, :data:`PIN_SET`, :data:`PIN_UNUSABLE` or :data:`PIN_ERASED` for a wallet row."""
    if wallet.pin_hash is None:
        return PIN_ERASED if pin_recorded(key, wallet.profile) else NO_PIN
    value = _open_stored(key, wallet.pin_hash)
    if value is _UNOPENED:
        return PIN_UNUSABLE
    return NO_PIN if value is None else PIN_SET


async def record_pin(session: AsyncSession, key: DataKey) -> None:
    """Record in the wallet's sealed profile that it has a PIN (:data:`PIN_RECORDED`), in ``session``'s
    transaction: a conditional update on the profile read, so a login rewriting the profile at the same
    moment cannot drop it (nor this drop the login's)."""
    for _ in range(5):
        profile = (await session.execute(select(Wallet.profile).where(Wallet.id == key.wallet_id))).scalar_one_or_none()
        if profile is None:
            return
        opened = key.open("profile", key.wallet_id, profile)
        if not isinstance(opened, dict):
            raise VaultError("bad_profile", "the wallet's profile is not an object")
        if opened.get(PIN_RECORDED):
            return
        result = await session.execute(
            update(Wallet).where(Wallet.id == key.wallet_id, Wallet.profile == profile)
            .values(profile=key.seal("profile", key.wallet_id, {**opened, PIN_RECORDED: True}))
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return
    raise APIError(409, "conflict", "the wallet changed meanwhile; try again")


def _locked(wait: int, *, sessions_ended: bool = False) -> APIError:
    return APIError(423, "pin_locked", "too many wrong PINs; try again later" + (
        " (every session of this wallet was ended: log in again)" if sessions_ended else ""),
        {"Retry-After": str(max(1, wait))}, extra={"sessions_ended": True} if sessions_ended else None)


def _unusable(wallet_id: str) -> APIError:
    log.warning("wallet %s: its stored PIN does not open under its data key (unsealed or altered); refused",
                wallet_id)
    return APIError(403, "pin_reset_required",
                    "the wallet's PIN cannot be checked: log in again and reset it (POST /v1/pin/reset)")


def _erased(wallet_id: str) -> APIError:
    log.error("wallet PIN removed outside the wallet: pin_hash is NULL but the sealed profile records a PIN; "
              "refused until the citizen resets it", extra={"wallet": wallet_id, "code": "pin.erased"})
    return APIError(403, "pin_reset_required",
                    "the wallet's PIN is missing from its storage: log in again and reset it (POST /v1/pin/reset)")


def _lock_until(ctx: WalletContext, now: dt.datetime) -> ColumnElement[dt.datetime]:
    """When a lock set now ends: ``pin_lock_seconds`` doubled per earlier lockout in a row (a CASE on
    the column, so the statement that sets the lock picks its length)."""
    base = ctx.settings.pin_lock_seconds

    def at(doublings: int) -> ColumnElement[dt.datetime]:
        return literal(now + dt.timedelta(seconds=base * 2 ** doublings), UTCDateTime())

    return case(*((Wallet.pin_lockouts == k, at(k)) for k in range(MAX_DOUBLINGS)), else_=at(MAX_DOUBLINGS))


async def _reserve_attempt(ctx: WalletContext, wallet_id: str, now: dt.datetime
                           ) -> tuple[int, str, int, dt.datetime | None] | None:
    """Count one attempt if the wallet may still try one: ``(attempts used, stored PIN hash, lockouts
    in a row, lock end)``, or ``None``.

    One statement, so of any number of concurrent callers at most ``pin_max_attempts`` get through
    between two locks. The attempt that uses the last one sets the lock and counts the lockout in the
    same statement (a right PIN lifts both again), so no state waits on a request that might never
    finish. A lock that has ended starts a fresh count of attempts, not of lockouts."""
    limit = ctx.settings.pin_max_attempts
    expired = and_(Wallet.pin_locked_until.is_not(None), Wallet.pin_locked_until <= now)
    count = case((expired, 1), else_=Wallet.pin_failures + 1)
    locks = count >= limit
    statement = (update(Wallet)
                 .where(Wallet.id == wallet_id, Wallet.pin_hash.is_not(None),
                        or_(Wallet.pin_locked_until.is_(None), Wallet.pin_locked_until <= now))
                 .values(pin_failures=count, pin_locked_until=case((locks, _lock_until(ctx, now)), else_=null()),
                         pin_lockouts=case((locks, Wallet.pin_lockouts + 1), else_=Wallet.pin_lockouts))
                 .returning(Wallet.pin_failures, Wallet.pin_hash, Wallet.pin_lockouts, Wallet.pin_locked_until)
                 .execution_options(synchronize_session=False))
    async with ctx.db.session() as session:
        row = (await session.execute(statement)).first()
    return None if row is None else (int(row[0]), str(row[1]), int(row[2]), row[3])


async def _wallet_row(ctx: WalletContext, wallet_id: str) -> Wallet | None:
    """The wallet row, freshly read."""
    async with ctx.db.read_session() as session:
        return await session.get(Wallet, wallet_id, populate_existing=True)


def _origin(sess: Session | None) -> str:
    """Which session (and device, as its login recorded it) a PIN event came from, for an alert."""
    if sess is None:
        return ""
    device = " ".join((sess.user_agent or "").split())[:120]
    return f" from session {sess.id}" + (f" ({device})" if device else "")


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _end_sessions(wallet_id: str, *, keep: str | None = None) -> Update:
    """The statement ending the wallet's sessions (but ``keep``): every token of them stops working."""
    where = [Session.wallet_id == wallet_id, Session.revoked.is_(False)]
    if keep is not None:
        where.append(Session.id != keep)
    return (update(Session).where(*where).values(revoked=True, access_hash=None, refresh_hash=None)
            .execution_options(synchronize_session=False))


async def _locked_out(ctx: WalletContext, me: Principal, now: dt.datetime, lockouts: int,
                      until: dt.datetime | None) -> bool:
    """After a wrong PIN that used the last attempt: alert the citizen and, from the
    ``pin_max_lockouts``-th lockout in a row, end every session of the wallet. True when they were ended."""
    end_all = lockouts >= ctx.settings.pin_max_lockouts
    message = (f"Too many wrong PINs at {_when(now)}{_origin(me.session)} (lockout {lockouts} in a row): "
               f"sharing and backups are locked until {_when(until or now)}.")
    message += (" Every session of your wallet was ended: log in again, and reset the PIN if you forgot it."
                if end_all else " If it was not you, end that session and change your PIN.")
    async with ctx.db.session() as session:
        if end_all:
            await session.execute(_end_sessions(me.wallet_id))
        await add_alert(session, me.wallet_id, "pin_locked", message, webhook=ctx.webhook)
    return end_all


async def check_pin(ctx: WalletContext, me: Principal, pin: str | None) -> str | None:
    """Pass when no PIN is set or ``pin`` is right (returning the stored value checked, ``None`` when
    there is no PIN); otherwise refuse.

    403 ``pin_required`` for a missing (or empty) PIN, counting no attempt: a client that did not know
    a PIN had been set (from another device) learns it must ask for one, and does not burn the
    citizen's attempts by trying without. 403 ``invalid_pin`` (with ``attempts_left``) for a wrong PIN,
    counted; 423 ``pin_locked`` (with ``Retry-After``, and ``sessions_ended`` when the lockout ended the
    wallet's sessions) when the attempts are used up — also for the right PIN, or none, while the lock
    lasts. 403 ``pin_reset_required`` when the stored PIN does not open under the wallet's data key, or
    was removed outside the wallet (NULL where the sealed profile records a PIN), whatever ``pin``."""
    return (await _check_pin(ctx, me, pin))[0]


async def _check_pin(ctx: WalletContext, me: Principal, pin: str | None) -> tuple[str | None, str | None]:
    """:func:`check_pin`: ``(the stored value checked, None)``, or ``(None, the stored "no PIN" value:
    NULL or the sealed one)`` when the wallet has no PIN."""
    state = await _wallet_row(ctx, me.wallet_id)
    if state is None:
        return None, None
    status = pin_status(me.key, state)
    if status == NO_PIN:
        return None, state.pin_hash  # nothing to reserve (and no write for wallets without one)
    if status == PIN_ERASED:
        raise _erased(me.wallet_id)
    now = utcnow()
    if not pin:
        if state.pin_locked_until is not None and state.pin_locked_until > now:
            raise _locked(math.ceil((state.pin_locked_until - now).total_seconds()))
        raise APIError(403, "pin_required", "this wallet has a PIN: send it")
    if status == PIN_UNUSABLE:
        raise _unusable(me.wallet_id)  # before reserving: no attempt (nor lockout) for a PIN that can never pass
    reserved = await _reserve_attempt(ctx, me.wallet_id, now)
    if reserved is None:
        state = await _wallet_row(ctx, me.wallet_id)
        status = NO_PIN if state is None else pin_status(me.key, state)
        if state is None or status == NO_PIN:
            return None, None if state is None else state.pin_hash  # the PIN was removed meanwhile
        if status == PIN_ERASED:
            raise _erased(me.wallet_id)
        until = state.pin_locked_until or now + dt.timedelta(seconds=ctx.settings.pin_lock_seconds)
        raise _locked(math.ceil((until - now).total_seconds()))
    used, stored, lockouts, until = reserved
    opened = _open_stored(me.key, stored)
    if opened is None:
        return None, stored  # the PIN was removed meanwhile (its sealed "no PIN" took the attempt)
    if opened is _UNOPENED:
        raise _unusable(me.wallet_id)
    pin_hash = str(opened)
    if await asyncio.to_thread(pin_matches, pin, pin_hash):
        async with ctx.db.session() as session:
            await session.execute(update(Wallet).where(Wallet.id == me.wallet_id).values(
                pin_failures=0, pin_lockouts=0, pin_locked_until=None).execution_options(synchronize_session=False))
            if not pin_recorded(me.key, state.profile):
                # The record was lost (a login served by a previous version during a rolling upgrade
                # rewrote the profile without it): put it back, or a NULL pin_hash would read as no PIN.
                with contextlib.suppress(APIError):  # the wallet kept changing: the next check repairs it
                    await record_pin(session, me.key)
        return stored, None
    # The failure was counted when the attempt was reserved; the last one also set the lock.
    if used >= ctx.settings.pin_max_attempts:
        ended = await _locked_out(ctx, me, now, lockouts, until)
        raise _locked(math.ceil(((until or now) - now).total_seconds()), sessions_ended=ended)
    raise APIError(403, "invalid_pin", "the PIN is wrong",
                   extra={"attempts_left": ctx.settings.pin_max_attempts - used})


def _check_format(new_pin: str | None) -> None:
    if new_pin is not None and (not new_pin.isdigit() or not 4 <= len(new_pin) <= 12):
        raise APIError(400, "invalid_request", "the PIN is 4 to 12 digits")


async def _sealed_hash(me: Principal, new_pin: str | None) -> str:
    """What ``pin_hash`` stores for ``new_pin``: its sealed hash, or the sealed "no PIN" (never NULL)."""
    return seal_pin_hash(me.key, await asyncio.to_thread(hash_pin, new_pin) if new_pin else None)


async def set_pin(ctx: WalletContext, me: Principal, new_pin: str | None, current_pin: str | None) -> None:
    """Set, change (current PIN needed) or remove (``new_pin=None``) the PIN; the citizen is alerted.

    The write is conditional on the PIN checked: of two sessions setting a first PIN at once, or
    changing it, the second gets 409 ``conflict`` instead of overwriting the first's."""
    checked, no_pin = await _check_pin(ctx, me, current_pin)
    _check_format(new_pin)
    if checked is None and new_pin is None:
        return  # no PIN, none asked for
    pin_hash = await _sealed_hash(me, new_pin)
    if checked is None:
        kind, message = "pin_set", f"A PIN was set on your wallet at {_when(utcnow())}{_origin(me.session)}."
    elif new_pin is None:
        kind, message = "pin_removed", f"Your wallet's PIN was removed at {_when(utcnow())}{_origin(me.session)}."
    else:
        kind, message = "pin_changed", f"Your wallet's PIN was changed at {_when(utcnow())}{_origin(me.session)}."
    message += " If it was not you, log in again and reset the PIN."
    before = checked if checked is not None else no_pin
    same = Wallet.pin_hash.is_(None) if before is None else Wallet.pin_hash == before
    async with ctx.db.session() as session:
        result = await session.execute(update(Wallet).where(Wallet.id == me.wallet_id, same).values(
            pin_hash=pin_hash, pin_failures=0, pin_lockouts=0, pin_locked_until=None)
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise APIError(409, "conflict", "the PIN was set or changed meanwhile; try again")
        if new_pin is not None:
            await record_pin(session, me.key)
        await add_alert(session, me.wallet_id, kind, message, webhook=ctx.webhook)


async def reset_pin(ctx: WalletContext, me: Principal, new_pin: str | None) -> None:
    """Set (or, with ``None``, remove) the PIN without the current one, whatever the lock: only from a
    session whose login is at most ``pin_reset_login_seconds`` old (403 ``recent_login_required``). The
    counters are cleared, the wallet's other sessions are ended and the citizen is alerted."""
    now = utcnow()
    login_at = me.session.created_at
    if login_at is None or login_at < now - dt.timedelta(seconds=ctx.settings.pin_reset_login_seconds):
        raise APIError(403, "recent_login_required",
                       "resetting the PIN needs a fresh login: log in again, then reset it within "
                       f"{ctx.settings.pin_reset_login_seconds} seconds")
    _check_format(new_pin)
    pin_hash = await _sealed_hash(me, new_pin)
    message = (f"Your wallet's PIN was reset at {_when(now)}{_origin(me.session)}, after a new login; "
               "your other sessions were ended. If it was not you, log in again and reset it.")
    async with ctx.db.session() as session:
        await session.execute(update(Wallet).where(Wallet.id == me.wallet_id).values(
            pin_hash=pin_hash, pin_failures=0, pin_lockouts=0, pin_locked_until=None)
            .execution_options(synchronize_session=False))
        if new_pin is not None:
            await record_pin(session, me.key)
        await session.execute(_end_sessions(me.wallet_id, keep=me.session.id))
        await add_alert(session, me.wallet_id, "pin_reset", message, webhook=ctx.webhook)


#: How many wallets whose data key does not open a pass names in its log (the count covers them all).
_NAMED_WALLETS = 100
#: The tags naming the PIN passes' left-over rows in ``service_keys`` (:class:`~wallet_api.vault.LeftOvers`).
_SEALING_TAG, _RECORDING_TAG = "pin-hashes", "pin-records"


@dataclass
class PinPass:
    """What one run of a start-up PIN pass did: ``outcome`` is ``"done"`` (its marker was there already),
    ``"completed"`` (recorded now) or ``"incomplete"`` (a wallet's data key did not open: the next
    start-up revisits that wallet, and only the wallets so left). ``refused``: wallets the pass would have
    changed but did not, as their value changed since its first run left them, or the record of them
    does not open."""

    outcome: str
    changed: int = 0
    damaged: int = 0
    wallets_unopened: int = 0
    refused: int = 0
    wallets_opened: int = 0


def _key(vault: Vault, wallet_id: str, data_key: bytes, result: PinPass, what: str) -> DataKey | None:
    """The wallet's data key, or ``None`` (counted, and logged by wallet id: the first :data:`_NAMED_WALLETS`)."""
    try:
        key = vault.data_key(Wallet(id=wallet_id, data_key=data_key))
    except (VaultError, SecretBoxError) as exc:
        result.wallets_unopened += 1
        if result.wallets_unopened <= _NAMED_WALLETS:
            log.error(f"a wallet's data key does not open; {what}", extra={"wallet": wallet_id, "code": exc.code})
        return None
    result.wallets_opened += 1
    return key


def _changed(change: Callable[[DataKey, Any], dict[str, Any] | None], key: DataKey, wallet_id: str, value: Any,
             result: PinPass, what: str) -> dict[str, Any] | None | bool:
    """``change(key, value)``, or ``False`` when the value does not open (damaged: counted and logged)."""
    try:
        return change(key, value)
    except (VaultError, SecretBoxError) as exc:
        result.damaged += 1
        log.error(f"a wallet's stored data does not open though its data key does; {what}",
                  extra={"wallet": wallet_id, "code": exc.code})
        return False


async def _once_over_wallets(db: Database, vault: Vault, marker: str, tag: str, column: Any,
                             where: ColumnElement[bool], change: Callable[[DataKey, Any], dict[str, Any] | None],
                             what: str, done: str, batch: int = 200,
                             ran_before: ColumnElement[bool] | None = None) -> PinPass:
    """A start-up pass over the wallets matching ``where``, until it has recorded ``marker`` in
    ``service_keys``, never after. ``change(key, value)`` gives the new column values for a row whose
    ``column`` holds ``value`` (or ``None``: leave it), written by a conditional update on that value, so
    several workers starting at once, or a run cut midway, do not disturb each other.

    Its first run goes over every such wallet. One whose data key does not open (a wrong master key, a
    rotation's previous key not configured) is left as it is and recorded as left, with the digest of
    its value, sealed under the master key (:class:`~wallet_api.vault.LeftOvers`, under ``tag``); every
    later start-up goes over those wallets only, and changes one only while its value is still the one
    recorded. So a wallet row written into the database after the first run — one whose key never opens,
    to hold the pass back, or an unsealed PIN hash of a PIN its writer knows — is never changed by the
    pass: it stays in the form that is refused. The marker is recorded once no wallet is left. A value
    that does not open while its wallet's key did is damaged: logged by id, counted, left (it fails
    closed on its own), not waited for. A record of what the first run left that does not open (forged or
    altered) is refused: the pass goes on as if it had left nothing. A first run with keys that do not
    open the service's own subject index key records nothing and runs whole again at the next start-up
    (:meth:`~wallet_api.vault.LeftOvers.first_run_over`). ``ran_before``: what only the current form
    holds; found by a first run, a warning says why that may be (its record deleted, among others).
    Nothing stops the service starting. One summary log line per run (``done`` names what ``changed``
    counts)."""
    left = LeftOvers(vault, marker, tag)
    state = await left.state(db)
    if state == COMPLETE:
        return PinPass("done")
    result = PinPass("incomplete")
    if state == CLOSED:
        log.error(f"start-up pass {marker}: its record of the wallets its first run left does not open with the "
                  "master keys configured (nor does the subject index key): nothing done; configure the right "
                  "master key and restart", extra={"marker": marker, "outcome": result.outcome})
        return result
    if state == REFUSED:
        result.refused += 1  # the record itself
        log.error(f"start-up pass {marker}: its record of the wallets its first run left does not open (forged or "
                  f"altered): refused, as if it had left none; none of them is {done} by it now",
                  extra={"marker": marker, "code": "pass.left_refused"})
    elif state == FIRST_RUN:
        keys_right = await vault.keys_open(db)
        if ran_before is not None:
            async with db.read_session() as session:
                if (await session.execute(select(Wallet.id).where(ran_before).limit(1))).first() is not None:
                    log.warning(f"start-up pass {marker} runs over every wallet, though some already hold what it "
                                "writes: expected only while the upgrade's first run is under way (another worker's, "
                                "or one cut short) or after a version that left the pass incomplete; otherwise its "
                                "record in service_keys was deleted", extra={"marker": marker, "code": "pass.rerun"})
        await _first_run(db, vault, left if keys_right else None, column, where, change, what, batch, result)
    else:
        await _left_run(db, vault, left, column, where, change, what, batch, result)
    if not result.wallets_unopened:
        await left.complete(db)
        result.outcome = "completed"
    elif state == FIRST_RUN and keys_right:
        await left.first_run_over(db, opened_any=result.wallets_opened > 0)
    counts = {"marker": marker, "changed": result.changed, "damaged": result.damaged,
              "wallets_unopened": result.wallets_unopened, "refused": result.refused, "outcome": result.outcome}
    summary = (f"{result.changed} {done}, {result.damaged} damaged, {result.wallets_unopened} wallets whose data "
               f"key did not open, {result.refused} refused")
    if result.outcome == "completed":
        (log.error if result.refused else log.info)(f"start-up pass {marker} completed: {summary}", extra=counts)
    else:
        log.error(f"start-up pass {marker} NOT completed: {summary}; those wallets are left as they were (and only "
                  "they are revisited); configure the master key (and the previous ones) that open them and restart",
                  extra=counts)
    return result


async def _first_run(db: Database, vault: Vault, left: LeftOvers | None, column: Any, where: ColumnElement[bool],
                     change: Callable[[DataKey, Any], dict[str, Any] | None], what: str, batch: int,
                     result: PinPass) -> None:
    """Every wallet matching ``where``; those whose key does not open recorded as left (unless ``left``
    is ``None``: the keys are wrong)."""
    last = ""
    while True:
        async with db.session() as session:
            rows = (await session.execute(select(Wallet.id, Wallet.data_key, column)
                                          .where(Wallet.id > last, where).order_by(Wallet.id).limit(batch))).all()
            unopened = []
            for wallet_id, data_key, value in rows:
                key = _key(vault, wallet_id, data_key, result, what)
                if key is None:
                    if left is not None:
                        unopened.append(left.entry(wallet_id, left_digest(value)))
                    continue
                await _write(session, column, wallet_id, value,
                             _changed(change, key, wallet_id, value, result, what), result)
            if left is not None:
                await left.record(session, unopened)
        if len(rows) < batch:
            break
        last = rows[-1][0]


async def _write(session: Any, column: Any, wallet_id: str, value: Any, values: dict[str, Any] | None,
                 result: PinPass) -> None:
    """Write a wallet's new ``values`` only while ``column`` still holds the ``value`` read (a pass cut
    or racing a citizen's own change writes nothing over it)."""
    if values:
        written = await session.execute(
            update(Wallet).where(Wallet.id == wallet_id, column == value).values(**values)
            .execution_options(synchronize_session=False))
        result.changed += written.rowcount  # type: ignore[attr-defined]


async def _left_run(db: Database, vault: Vault, left: LeftOvers, column: Any, where: ColumnElement[bool],
                    change: Callable[[DataKey, Any], dict[str, Any] | None], what: str, batch: int,
                    result: PinPass) -> None:
    """The wallets the first run left, each changed only while its value is the one recorded; dropped from
    the set once done, gone (or no longer matching ``where``), damaged or refused."""
    after: str | None = None
    while True:
        entries = await left.page(db, after, batch)
        if not entries:
            break
        async with db.session() as session:
            rows = {wallet_id: (data_key, value) for wallet_id, data_key, value in (await session.execute(
                select(Wallet.id, Wallet.data_key, column).where(Wallet.id.in_([e[0] for e in entries]), where)
            ))}
            finished = []
            for wallet_id, recorded in entries:
                row = rows.get(wallet_id)
                if recorded is None or row is None:
                    finished.append(wallet_id)  # its record is forged or altered; or the wallet is gone or done
                    if recorded is None:
                        result.refused += 1
                        log.error(f"a record of a wallet the pass's first run left does not open (forged or altered); "
                                  f"refused: {what}", extra={"wallet": wallet_id, "code": "pass.left_refused"})
                    continue
                data_key, value = row
                if not hmac.compare_digest(left_digest(value), recorded):
                    finished.append(wallet_id)
                    try:
                        key = vault.data_key(Wallet(id=wallet_id, data_key=data_key))
                        current = change(key, value) is None  # what the pass would write is there already
                    except (VaultError, SecretBoxError):
                        current = False
                    if not current:
                        result.refused += 1
                        log.error(f"a wallet's stored data changed since the pass's first run left it, so it is not "
                                  f"taken for an earlier version's; {what}",
                                  extra={"wallet": wallet_id, "code": "pass.left_changed"})
                    continue
                key = _key(vault, wallet_id, data_key, result, what)
                if key is None:
                    continue  # still left
                finished.append(wallet_id)
                await _write(session, column, wallet_id, value,
                             _changed(change, key, wallet_id, value, result, what), result)
            await left.drop(session, finished)
        if len(entries) < batch:
            break
        after = entries[-1][0]


async def seal_legacy_pin_hashes(db: Database, vault: Vault, *, batch: int = 200) -> PinPass:
    """Seal the PIN hashes stored unsealed by earlier versions. Start-up, after the migrations: its first
    run goes over every wallet holding one, later runs over the wallets it left only (their hash
    unchanged), until none is left (:data:`LEGACY_SEALED_MARKER` recorded), never again after; so an
    unsealed hash written to the database after the first run is refused, never sealed. An unsealed
    hash is refused before and after alike: sealing is what makes an earlier version's PIN work."""
    return await _once_over_wallets(
        db, vault, LEGACY_SEALED_MARKER, _SEALING_TAG, Wallet.pin_hash, Wallet.pin_hash.like("scrypt$%"),
        lambda key, legacy: {"pin_hash": seal_pin_hash(key, legacy)}, "its PIN hash was not sealed", "sealed",
        batch, ran_before=Wallet.pin_hash.like(_SEALED + "%"))


async def record_pins_in_profiles(db: Database, vault: Vault, *, batch: int = 200) -> PinPass:
    """Record :data:`PIN_RECORDED` in the profile of every wallet that has a ``pin_hash`` but no record
    (PINs set by earlier versions). Start-up, after :func:`seal_legacy_pin_hashes`; until it has recorded
    :data:`PINS_RECORDED_MARKER` (once no wallet its first run left is left), later runs over the wallets
    the first run left only (their profile unchanged). It only adds records, never removes one. A
    profile that does not open (or is not an object) is damaged and left:
    :func:`pin_recorded` reads it as recording a PIN."""
    def record(key: DataKey, profile: bytes) -> dict[str, Any] | None:
        opened = key.open("profile", key.wallet_id, profile)
        if not isinstance(opened, dict):
            raise VaultError("bad_profile", "the wallet's profile is not an object")
        if opened.get(PIN_RECORDED):
            return None
        return {"profile": key.seal("profile", key.wallet_id, {**opened, PIN_RECORDED: True})}

    return await _once_over_wallets(db, vault, PINS_RECORDED_MARKER, _RECORDING_TAG, Wallet.profile,
                                    Wallet.pin_hash.is_not(None), record, "its PIN record was not added", "recorded",
                                    batch)
