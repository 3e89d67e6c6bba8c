"""The PIN attempt reservation is one conditional UPDATE on both databases: concurrent checks test at
most ``pin_max_attempts`` PINs, the lock holds the right PIN off, and an ended lock starts afresh.

An in-process wallet migrated by its start-up (SQLite, and PostgreSQL from the test cluster), the PIN
checked as the routes check it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from service_kit.errors import APIError
from tests.support.servers import free_port
from tests.wallet_api.conftest import wallet_settings
from wallet_api.app import create_app
from wallet_api.deps import Principal
from wallet_api.models import Wallet
from wallet_api.pin import check_pin, hash_pin

pytestmark = pytest.mark.anyio
PIN = "4821"


async def _outcome(ctx: Any, me: Principal, pin: str) -> int:
    try:
        await check_pin(ctx, me, pin)
    except APIError as exc:
        return exc.status_code
    return 200


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_concurrent_pin_checks_reserve_their_attempts_in_the_database(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    cluster = request.getfixturevalue("postgres_cluster") if backend == "postgresql" else None
    extra = {"database_url": cluster.create_database()} if cluster else {}
    try:
        app = create_app(wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", **extra), run_background=False)
        async with app.router.lifespan_context(app):
            ctx = app.state.wallet
            limit = ctx.settings.pin_max_attempts
            wallet = Wallet(id="w-pin", subject_index="pin", data_key=b"\0", profile=b"\0", pin_hash=hash_pin(PIN))
            async with ctx.db.session() as session:
                session.add(wallet)
            me = Principal(session=None, wallet=wallet, key=None)  # type: ignore[arg-type]

            outcomes = await asyncio.gather(*(_outcome(ctx, me, f"{i:04d}") for i in range(5000, 5040)))
            assert sum(status != 423 for status in outcomes) <= limit, outcomes
            assert set(outcomes) <= {403, 423}
            assert await _outcome(ctx, me, PIN) == 423  # locked: the right PIN waits too

            async with ctx.db.session() as session:  # the lock ends
                await session.execute(update(Wallet).where(Wallet.id == "w-pin").values(
                    pin_locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
            assert await _outcome(ctx, me, "0000") == 403  # a fresh count
            assert await _outcome(ctx, me, PIN) == 200
            async with ctx.db.read_session() as session:
                row = await session.get(Wallet, "w-pin", populate_existing=True)
                assert row is not None and row.pin_failures == 0 and row.pin_locked_until is None
    finally:
        if cluster:
            cluster.drop_database(extra["database_url"])
