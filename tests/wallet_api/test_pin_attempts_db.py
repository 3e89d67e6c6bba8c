"""The PIN attempt reservation is one conditional UPDATE on both databases: concurrent checks compare at
most ``pin_max_attempts`` PINs per lock, the lock holds the right PIN off, each lockout in a row locks
twice as long and alerts the citizen, the ``pin_max_lockouts``-th ends every session, and a right PIN
clears it all.

An in-process wallet migrated by its start-up (SQLite, and PostgreSQL from the test cluster), the PIN
checked as the routes check it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

import wallet_api.pin as pin_module
from service_kit.errors import APIError
from tests.support.servers import free_port
from tests.wallet_api.conftest import wallet_settings
from wallet_api.app import create_app
from wallet_api.deps import Principal
from wallet_api.models import Alert, Session, Wallet
from wallet_api.pin import check_pin, hash_pin, seal_pin_hash

pytestmark = pytest.mark.anyio
PIN = "4821"
GUESSERS = 20


async def new_wallet(ctx: Any, wallet_id: str, pin: str | None, *, sessions: int = 1,
                     user_agent: str = "Thief/1.0 (stolen phone)") -> Principal:
    """A wallet with a real data key, its PIN sealed as set_pin seals it, and ``sessions`` live sessions;
    the principal of the first."""
    sealed_key, key = ctx.vault.new_data_key(wallet_id)
    wallet = Wallet(id=wallet_id, subject_index=wallet_id, data_key=sealed_key,
                    profile=key.seal("profile", wallet_id, {}),
                    pin_hash=seal_pin_hash(key, hash_pin(pin)) if pin else None)
    rows = [Session(id=f"ses-{wallet_id}-{i}", wallet_id=wallet_id, provider="valid", user_agent=user_agent,
                    access_hash=f"{wallet_id}-access-{i}", refresh_hash=f"{wallet_id}-refresh-{i}")
            for i in range(sessions)]
    async with ctx.db.session() as session:
        session.add(wallet)
        await session.flush()
        session.add_all(rows)
    return Principal(session=rows[0], wallet=wallet, key=key)


async def _outcome(ctx: Any, me: Principal, pin: str) -> APIError | None:
    try:
        await check_pin(ctx, me, pin)
    except APIError as exc:
        return exc
    return None


async def _row(ctx: Any, wallet_id: str) -> Wallet:
    async with ctx.db.read_session() as session:
        row = await session.get(Wallet, wallet_id, populate_existing=True)
    assert row is not None
    return row


async def _end_lock(ctx: Any, wallet_id: str) -> None:
    async with ctx.db.session() as session:
        await session.execute(update(Wallet).where(Wallet.id == wallet_id).values(
            pin_locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))


async def test_concurrent_wrong_pins_compare_at_most_the_allowed_attempts_and_lockouts_escalate(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[str] = []
    real_matches = pin_module.pin_matches

    def counting(pin: str, stored: str) -> bool:
        compared.append(pin)
        return real_matches(pin, stored)

    monkeypatch.setattr(pin_module, "pin_matches", counting)
    app = create_app(wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url),
                     run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        limit, base, max_lockouts = (ctx.settings.pin_max_attempts, ctx.settings.pin_lock_seconds,
                                     ctx.settings.pin_max_lockouts)
        assert max_lockouts == 3 and GUESSERS > limit
        me = await new_wallet(ctx, "w-pin", PIN, sessions=2)

        for lockout in range(1, max_lockouts + 1):
            compared.clear()
            started = dt.datetime.now(dt.UTC)
            outcomes = await asyncio.gather(*(_outcome(ctx, me, f"{5000 + i:04d}") for i in range(GUESSERS)))
            # At most the allowed attempts reached scrypt, however many guesses raced.
            assert len(compared) <= limit, compared
            assert all(o is not None for o in outcomes)
            assert sorted({o.status_code for o in outcomes if o is not None}) == [403, 423]
            assert len(compared) == limit  # (and no fewer: each guess was tried until the lock)
            # the last compared guess set the lock, and is answered 423 like those that found it set
            assert sum(o is not None and o.status_code == 403 for o in outcomes) == limit - 1
            row = await _row(ctx, "w-pin")
            assert row.pin_lockouts == lockout
            assert row.pin_locked_until is not None
            # Each lockout in a row doubles the lock.
            length = (row.pin_locked_until - started).total_seconds()
            assert base * 2 ** (lockout - 1) - 1 <= length <= base * 2 ** (lockout - 1) + 30, (lockout, length)
            assert await _outcome(ctx, me, PIN) is not None  # locked: the right PIN waits too
            async with ctx.db.read_session() as session:
                alerts = (await session.execute(select(Alert).where(Alert.wallet_id == "w-pin")
                                                .order_by(Alert.id))).scalars().all()
                live = (await session.execute(select(Session).where(
                    Session.wallet_id == "w-pin", Session.revoked.is_(False)))).scalars().all()
            # One alert per lockout (whichever of the racing requests set it), saying when and from where.
            assert [a.kind for a in alerts] == ["pin_locked"] * lockout
            assert me.session.id in alerts[-1].message and "Thief/1.0" in alerts[-1].message
            assert "UTC" in alerts[-1].message and PIN not in alerts[-1].message
            ended = [o for o in outcomes if o is not None and o.extra.get("sessions_ended")]
            if lockout < max_lockouts:
                assert len(live) == 2 and not ended
            else:  # the last lockout in a row ends every session of the wallet: log in again
                assert live == [] and len(ended) == 1
                assert "log in again" in alerts[-1].message
            await _end_lock(ctx, "w-pin")

        # An ended lock starts a fresh count of attempts, not of lockouts; a right PIN clears both.
        error = await _outcome(ctx, me, "0000")
        assert error is not None and error.status_code == 403 and error.extra["attempts_left"] == limit - 1
        assert await _outcome(ctx, me, PIN) is None
        row = await _row(ctx, "w-pin")
        assert row.pin_failures == 0 and row.pin_locked_until is None and row.pin_lockouts == 0
