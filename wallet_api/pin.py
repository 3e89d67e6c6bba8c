"""The optional wallet PIN: when set, presenting needs it; wrong attempts are limited.

Stored as ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (scrypt, N=2^14, r=8, p=1). After
``pin_max_attempts`` wrong PINs, presenting is locked for ``pin_lock_seconds``; the counters are in the
database, so several workers share them. This lockout is the wallet's per-wallet PIN rate limit
(docs/security.md): it answers 423 ``pin_locked`` with ``Retry-After``, and is not duplicated in the
generic limiter.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import os

from sqlalchemy import update

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


async def check_pin(ctx: WalletContext, me: Principal, pin: str | None) -> None:
    """Pass when no PIN is set or ``pin`` is right; otherwise count the failure and refuse."""
    async with ctx.db.read_session() as session:
        wallet = await session.get(Wallet, me.wallet_id)
    assert wallet is not None
    if wallet.pin_hash is None:
        return
    now = utcnow()
    if wallet.pin_locked_until is not None and wallet.pin_locked_until > now:
        wait = max(1, math.ceil((wallet.pin_locked_until - now).total_seconds()))
        raise APIError(423, "pin_locked", "too many wrong PINs; try again later", {"Retry-After": str(wait)})
    if pin is not None and pin_matches(pin, wallet.pin_hash):
        if wallet.pin_failures:
            async with ctx.db.session() as session:
                await session.execute(update(Wallet).where(Wallet.id == me.wallet_id).values(
                    pin_failures=0, pin_locked_until=None).execution_options(synchronize_session=False))
        return
    async with ctx.db.session() as session:
        # Atomic increment: concurrent guesses each count.
        await session.execute(update(Wallet).where(Wallet.id == me.wallet_id).values(
            pin_failures=Wallet.pin_failures + 1).execution_options(synchronize_session=False))
        fresh = await session.get(Wallet, me.wallet_id, populate_existing=True)
        assert fresh is not None
        if fresh.pin_failures >= ctx.settings.pin_max_attempts:
            fresh.pin_failures = 0
            fresh.pin_locked_until = now + dt.timedelta(seconds=ctx.settings.pin_lock_seconds)
            locked = True
        else:
            locked = False
        remaining = ctx.settings.pin_max_attempts - fresh.pin_failures
    if locked:
        raise APIError(423, "pin_locked", "too many wrong PINs; presenting is locked for a while",
                       {"Retry-After": str(ctx.settings.pin_lock_seconds)})
    raise APIError(403, "invalid_pin", "the PIN is missing or wrong", extra={"attempts_left": remaining})


async def set_pin(ctx: WalletContext, me: Principal, new_pin: str | None, current_pin: str | None) -> None:
    """Set, change (current PIN needed) or remove (``new_pin=None``) the PIN."""
    await check_pin(ctx, me, current_pin)
    if new_pin is not None and (not new_pin.isdigit() or not 4 <= len(new_pin) <= 12):
        raise APIError(400, "invalid_request", "the PIN is 4 to 12 digits")
    async with ctx.db.session() as session:
        await session.execute(update(Wallet).where(Wallet.id == me.wallet_id).values(
            pin_hash=hash_pin(new_pin) if new_pin else None, pin_failures=0, pin_locked_until=None)
            .execution_options(synchronize_session=False))
