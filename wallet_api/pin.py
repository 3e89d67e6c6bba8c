"""The optional wallet PIN: when set, presenting and exporting a backup need it; wrong attempts are limited.

Stored as ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (scrypt, N=2^14, r=8, p=1). After
``pin_max_attempts`` wrong PINs, presenting (and exporting) is locked for ``pin_lock_seconds``; the
counters are in the database, so several workers share them. This lockout is the wallet's per-wallet
PIN rate limit (docs/security.md): it answers 423 ``pin_locked`` with ``Retry-After``, and is not
duplicated in the generic limiter.

Every attempt is reserved *before* the PIN is compared: one conditional ``UPDATE ... RETURNING``
counts it only while the wallet is under the limit and not locked (the last one sets the lock), so
concurrent guesses cannot test more than ``pin_max_attempts`` PINs between two locks (they used to be
counted only after scrypt had answered). A right PIN clears the counter and the lock; a request that
cannot reserve an attempt gets 423. scrypt runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import math
import os

from sqlalchemy import and_, case, literal, null, or_, update

from service_kit.db import UTCDateTime
from service_kit.errors import APIError

from .context import WalletContext
from .deps import Principal
from .models import Wallet, utcnow

_N, _R, _P = 2**14, 8, 1


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


def _locked(wait: int) -> APIError:
    return APIError(423, "pin_locked", "too many wrong PINs; try again later", {"Retry-After": str(max(1, wait))})


async def _reserve_attempt(ctx: WalletContext, wallet_id: str, now: dt.datetime) -> tuple[int, str] | None:
    """Count one attempt if the wallet may still try one; ``(attempts used, PIN hash)`` or ``None``.

    One statement, so of any number of concurrent callers at most ``pin_max_attempts`` get through
    between two locks. The attempt that uses the last one sets the lock in the same statement (a right
    PIN lifts it again), so no state waits on a request that might never finish. A lock that has
    ended starts a fresh count."""
    limit = ctx.settings.pin_max_attempts
    expired = and_(Wallet.pin_locked_until.is_not(None), Wallet.pin_locked_until <= now)
    count = case((expired, 1), else_=Wallet.pin_failures + 1)
    until = literal(now + dt.timedelta(seconds=ctx.settings.pin_lock_seconds), UTCDateTime())
    statement = (update(Wallet)
                 .where(Wallet.id == wallet_id, Wallet.pin_hash.is_not(None),
                        or_(Wallet.pin_locked_until.is_(None), Wallet.pin_locked_until <= now))
                 .values(pin_failures=count, pin_locked_until=case((count >= limit, until), else_=null()))
                 .returning(Wallet.pin_failures, Wallet.pin_hash)
                 .execution_options(synchronize_session=False))
    async with ctx.db.session() as session:
        row = (await session.execute(statement)).first()
    return None if row is None else (int(row[0]), str(row[1]))


async def _pin_state(ctx: WalletContext, wallet_id: str) -> Wallet | None:
    """The wallet row when it has a PIN, freshly read."""
    async with ctx.db.read_session() as session:
        wallet = await session.get(Wallet, wallet_id, populate_existing=True)
    return wallet if wallet is not None and wallet.pin_hash is not None else None


async def check_pin(ctx: WalletContext, me: Principal, pin: str | None) -> None:
    """Pass when no PIN is set or ``pin`` is right; otherwise refuse.

    403 ``pin_required`` for a missing (or empty) PIN, counting no attempt: a client that did not know
    a PIN had been set (from another device) learns it must ask for one, and does not burn the
    citizen's attempts by trying without. 403 ``invalid_pin`` (with ``attempts_left``) for a wrong PIN,
    counted; 423 ``pin_locked`` (with ``Retry-After``) when the attempts are used up — also for the
    right PIN, or none, while the lock lasts."""
    state = await _pin_state(ctx, me.wallet_id)
    if state is None:
        return  # no PIN: nothing to reserve (and no write for wallets without one)
    now = utcnow()
    if not pin:
        if state.pin_locked_until is not None and state.pin_locked_until > now:
            raise _locked(math.ceil((state.pin_locked_until - now).total_seconds()))
        raise APIError(403, "pin_required", "this wallet has a PIN: send it")
    reserved = await _reserve_attempt(ctx, me.wallet_id, now)
    if reserved is None:
        state = await _pin_state(ctx, me.wallet_id)
        if state is None:
            return  # the PIN was removed meanwhile
        until = state.pin_locked_until or now + dt.timedelta(seconds=ctx.settings.pin_lock_seconds)
        raise _locked(math.ceil((until - now).total_seconds()))
    used, pin_hash = reserved
    if await asyncio.to_thread(pin_matches, pin, pin_hash):
        async with ctx.db.session() as session:
            await session.execute(update(Wallet).where(Wallet.id == me.wallet_id).values(
                pin_failures=0, pin_locked_until=None).execution_options(synchronize_session=False))
        return
    # The failure was counted when the attempt was reserved; the last one also set the lock.
    if used >= ctx.settings.pin_max_attempts:
        raise _locked(ctx.settings.pin_lock_seconds)
    raise APIError(403, "invalid_pin", "the PIN is wrong",
                   extra={"attempts_left": ctx.settings.pin_max_attempts - used})


async def set_pin(ctx: WalletContext, me: Principal, new_pin: str | None, current_pin: str | None) -> None:
    """Set, change (current PIN needed) or remove (``new_pin=None``) the PIN."""
    await check_pin(ctx, me, current_pin)
    if new_pin is not None and (not new_pin.isdigit() or not 4 <= len(new_pin) <= 12):
        raise APIError(400, "invalid_request", "the PIN is 4 to 12 digits")
    pin_hash = await asyncio.to_thread(hash_pin, new_pin) if new_pin else None
    async with ctx.db.session() as session:
        await session.execute(update(Wallet).where(Wallet.id == me.wallet_id).values(
            pin_hash=pin_hash, pin_failures=0, pin_locked_until=None)
            .execution_options(synchronize_session=False))
