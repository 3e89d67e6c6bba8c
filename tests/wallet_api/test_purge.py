"""The wallet's background sweep deletes the logins never finished and the app codes never exchanged
once they have expired (nothing deleted them before: only finishing or exchanging did), and leaves the
unexpired ones usable.

An in-process wallet on its own SQLite database, migrated by its start-up; the sweep called as its
background loop calls it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.servers import free_port
from tests.wallet_api.conftest import wallet_settings
from wallet_api.app import create_app
from wallet_api.background import sweep
from wallet_api.models import AppCode, LoginTransaction, Session, Wallet

pytestmark = pytest.mark.anyio


async def test_the_sweep_purges_expired_logins_and_app_codes(tmp_path: Path) -> None:
    app = create_app(wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9"), run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        now = dt.datetime.now(dt.UTC)
        expiries = {"old": now - dt.timedelta(minutes=1), "live": now + dt.timedelta(minutes=5)}
        async with ctx.db.session() as session:
            session.add(Wallet(id="w-purge", subject_index="purge", data_key=b"\0", profile=b"\0"))
            await session.flush()
            session.add(Session(id="s-purge", wallet_id="w-purge", provider="valid"))
            await session.flush()
            for name, at in expiries.items():
                session.add(LoginTransaction(state_hash=f"login-{name}", provider="valid", sealed=b"\0",
                                             expires_at=at))
                session.add(AppCode(code_hash=f"code-{name}", session_id="s-purge", redirect_uri_hash="r",
                                    expires_at=at))
        done = await sweep(ctx)
        async with ctx.db.read_session() as session:
            logins = set((await session.execute(select(LoginTransaction.state_hash))).scalars())
            codes = set((await session.execute(select(AppCode.code_hash))).scalars())
    assert logins == {"login-live"}
    assert codes == {"code-live"}
    assert done["logins_purged"] == 2
