""""No PIN" is a sealed fact: a database writer who sets ``wallets.pin_hash`` to NULL does not remove a
citizen's PIN. The first PIN set is recorded in the wallet's sealed profile, a removal stores a sealed
"no PIN", and a NULL on a wallet that had a PIN is refused (403 ``pin_reset_required``, an error log
naming the wallet) until the citizen resets it after a fresh login. A wallet that never had a PIN works
without one, as before; wallets with a PIN from earlier versions get the record at the first start-up.

In-process wallets on SQLite and PostgreSQL, the PIN checked and set as the routes do.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from service_kit.db import Database
from service_kit.errors import APIError
from service_kit.migrations import run_migrations
from tests.support.servers import free_port
from tests.wallet_api.conftest import wallet_settings
from tests.wallet_api.test_pin_attempts_db import new_wallet
from tests.wallet_api.test_pin_sealing import _refusal, _stored, _write_pin_hash
from wallet_api.app import MIGRATIONS, create_app
from wallet_api.context import master_box
from wallet_api.deps import Principal
from wallet_api.models import Session, Wallet
from wallet_api.pin import check_pin, hash_pin, reset_pin, seal_pin_hash, set_pin
from wallet_api.vault import Vault

pytestmark = pytest.mark.anyio


async def _no_pin_asked(ctx: Any, me: Principal) -> bool:
    """Whether presenting passes with no PIN sent (what a wallet without a PIN does)."""
    try:
        await check_pin(ctx, me, None)
    except APIError:
        return False
    return True


async def _insert_wallets(database_url: str, rows: list[dict[str, Any]]) -> None:
    """Wallet rows written as an earlier version (or a damaged database) left them, before the service
    starts: ``id`` (also the subject index), sealed data ``key``, sealed ``profile``, ``pin`` hash."""
    db = Database(database_url)
    try:
        async with db.session() as session:
            for row in rows:
                await session.execute(text(
                    "INSERT INTO wallets (id, subject_index, data_key, profile, created_at, pin_hash, pin_failures, "
                    "pin_lockouts) VALUES (:id, :id, :key, :profile, CURRENT_TIMESTAMP, :pin, 0, 0)"), row)
    finally:
        await db.dispose()


async def test_a_pin_set_to_null_in_the_database_is_refused_not_read_as_no_pin(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        # A wallet that never had a PIN: nothing asked, as before (NULL stays "no PIN").
        never = await new_wallet(ctx, "w-never", None)
        assert await _no_pin_asked(ctx, never)
        assert (await _stored(ctx, "w-never")).pin_hash is None

        me = await new_wallet(ctx, "w-erased", None)
        await set_pin(ctx, me, "4821", None)
        # The writer removes the PIN: refused whatever is sent, no attempt counted, an error logged.
        await _write_pin_hash(ctx, "w-erased", None)
        with caplog.at_level(logging.ERROR, logger="wallet_api.pin"):
            for pin in (None, "4821", "0000"):
                assert await _refusal(ctx, me, pin) == "pin_reset_required", pin
        logged = [r for r in caplog.records if getattr(r, "wallet", None) == "w-erased"]
        assert logged and all(r.levelno == logging.ERROR and "4821" not in r.getMessage() for r in logged)
        assert (await _stored(ctx, "w-erased")).pin_failures == 0
        assert not await _no_pin_asked(ctx, me)
        # Nor can the (missing) PIN be changed or removed without a reset.
        with pytest.raises(APIError) as refused:
            await set_pin(ctx, me, None, None)
        assert refused.value.error == "pin_reset_required"

        # The owner, freshly logged in, resets it.
        await reset_pin(ctx, me, "1357")
        assert await _refusal(ctx, me, "1357") is None
        # Removing it stores a sealed "no PIN", not NULL: no PIN is asked ...
        await set_pin(ctx, me, None, "1357")
        stored = (await _stored(ctx, "w-erased")).pin_hash
        assert stored is not None and stored.startswith("sealed$")
        assert await _no_pin_asked(ctx, me)
        # ... and a NULL written after it is still refused.
        await _write_pin_hash(ctx, "w-erased", None)
        assert await _refusal(ctx, me, None) == "pin_reset_required"


async def test_a_pin_set_by_an_earlier_version_is_recorded_at_the_first_start_up(
        tmp_path: Path, database_url: str) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    sealed_key, key = Vault(master_box(settings)).new_data_key("w-earlier")
    await _insert_wallets(database_url, [{"id": "w-earlier", "key": sealed_key, "pin": seal_pin_hash(key, hash_pin("4821")),
                                          "profile": key.seal("profile", "w-earlier", {"identifier": "x"})}])

    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        async with ctx.db.read_session() as session:
            profile = (await session.execute(select(Wallet.profile).where(Wallet.id == "w-earlier"))).scalar_one()
        assert key.open("profile", "w-earlier", profile) == {"identifier": "x", "pin_ever_set": True}
        me = Principal(session=Session(id="ses-earlier", wallet_id="w-earlier", user_agent=""),
                       wallet=await _stored(ctx, "w-earlier"), key=key)
        assert await _refusal(ctx, me, "4821") is None
        await _write_pin_hash(ctx, "w-earlier", None)
        assert await _refusal(ctx, me, None) == "pin_reset_required"


async def test_a_lost_pin_record_is_put_back_by_the_next_pin_check_and_by_the_next_login(
        tmp_path: Path, database_url: str) -> None:
    """During a rolling upgrade a login served by the previous version rewrites the profile without the
    record; the wallet repairs it, or a NULL pin_hash would read as "no PIN" again."""
    from wallet_api.auth import Identity, ensure_wallet
    from wallet_api.pin import PIN_RECORDED

    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        # A PIN whose record is missing (the profile as an earlier version's login wrote it).
        me = await new_wallet(ctx, "w-lost", "4821")
        assert await _refusal(ctx, me, "4821") is None
        profile = (await _stored(ctx, "w-lost")).profile
        assert me.key.open("profile", "w-lost", profile).get(PIN_RECORDED) is True
        await _write_pin_hash(ctx, "w-lost", None)
        assert await _refusal(ctx, me, None) == "pin_reset_required"

        identity = Identity(provider="valid", identifier="12345678Z", name="Anna", email="", method="", assurance_level="")
        async with ctx.db.session() as session:
            wallet = await ensure_wallet(ctx, session, identity)
        key = ctx.vault.data_key(wallet)
        async with ctx.db.session() as session:
            await session.execute(text("UPDATE wallets SET pin_hash = :pin WHERE id = :id"),
                                  {"pin": seal_pin_hash(key, hash_pin("2468")), "id": wallet.id})
        # The earlier version's login: the provider's data only, no record.
        async with ctx.db.session() as session:
            await session.execute(text("UPDATE wallets SET profile = :profile WHERE id = :id"), {
                "profile": key.seal("profile", wallet.id, {"identifier": "12345678Z", "name": "Anna", "email": "",
                                                           "provider": "valid"}), "id": wallet.id})
        async with ctx.db.session() as session:
            await ensure_wallet(ctx, session, identity)
        stored = await _stored(ctx, wallet.id)
        assert key.open("profile", wallet.id, stored.profile).get(PIN_RECORDED) is True
        await _write_pin_hash(ctx, wallet.id, None)
        owner = Principal(session=Session(id="ses-owner", wallet_id=wallet.id, user_agent=""), wallet=stored, key=key)
        assert await _refusal(ctx, owner, None) == "pin_reset_required"


async def test_a_wallet_whose_data_key_does_not_open_does_not_stop_the_start_up(
        tmp_path: Path, database_url: str) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    vault = Vault(master_box(settings))
    rows = []
    for wallet_id, legacy in (("w-broken-sealed", False), ("w-broken-legacy", True), ("w-fine", False)):
        sealed_key, key = vault.new_data_key(wallet_id)
        pin = "scrypt$legacy" if legacy else seal_pin_hash(key, hash_pin("4821"))
        if wallet_id.startswith("w-broken"):
            sealed_key = sealed_key[:-1] + bytes([sealed_key[-1] ^ 1])  # one bit flipped: does not open
        rows.append({"id": wallet_id, "key": sealed_key, "profile": key.seal("profile", wallet_id, {}), "pin": pin})
    await _insert_wallets(database_url, rows)

    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):  # starts: the broken wallets are logged and left
        ctx = app.state.wallet
        fine = await _stored(ctx, "w-fine")
        key = ctx.vault.data_key(fine)
        assert key.open("profile", "w-fine", fine.profile) == {"pin_ever_set": True}
