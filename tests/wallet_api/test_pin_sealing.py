"""The PIN hash is sealed under the wallet's data key: a database writer cannot put in the hash of a
PIN they know (nor another wallet's sealed PIN), and the hashes earlier versions stored unsealed are
sealed once, at the first start-up after the upgrade — never a value written unsealed later.

In-process wallets on SQLite and PostgreSQL, the PIN checked and set as the routes do.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from service_kit.db import Database
from service_kit.errors import APIError
from service_kit.migrations import run_migrations
from tests.support.servers import free_port
from tests.wallet_api.conftest import wallet_settings
from tests.wallet_api.test_pin_attempts_db import new_wallet
from wallet_api.app import MIGRATIONS, create_app
from wallet_api.context import master_box
from wallet_api.deps import Principal
from wallet_api.models import Session, Wallet
from wallet_api.pin import check_pin, hash_pin, open_pin_hash, reset_pin, set_pin
from wallet_api.vault import Vault

pytestmark = pytest.mark.anyio


async def _stored(ctx: Any, wallet_id: str) -> Wallet:
    async with ctx.db.read_session() as session:
        row = await session.get(Wallet, wallet_id, populate_existing=True)
    assert row is not None
    return row


async def _write_pin_hash(ctx: Any, wallet_id: str, value: str | None) -> None:
    """What someone who can write the database (but has no master key) can do."""
    async with ctx.db.session() as session:
        await session.execute(update(Wallet).where(Wallet.id == wallet_id).values(pin_hash=value))


async def _refusal(ctx: Any, me: Any, pin: str) -> str | None:
    try:
        await check_pin(ctx, me, pin)
    except APIError as exc:
        return exc.error
    return None


async def test_the_pin_hash_is_sealed_and_a_value_written_unsealed_never_passes(
        tmp_path: Path, database_url: str) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        me = await new_wallet(ctx, "w-seal", None)
        other = await new_wallet(ctx, "w-other", None)
        await set_pin(ctx, me, "2468", None)
        await set_pin(ctx, other, "1111", None)
        stored = (await _stored(ctx, "w-seal")).pin_hash
        assert stored is not None and stored.startswith("sealed$")
        # Nothing a reader without the master key can test PINs against.
        assert "scrypt" not in stored and "scrypt" not in base64.urlsafe_b64decode(stored[7:] + "==").decode("latin-1")
        assert open_pin_hash(me.key, stored) is not None and open_pin_hash(other.key, stored) is None
        assert await _refusal(ctx, me, "2468") is None

        # A writer puts in the scrypt hash of a PIN they know: refused, asking for a reset, no attempt counted.
        await _write_pin_hash(ctx, "w-seal", hash_pin("1111"))
        assert await _refusal(ctx, me, "1111") == "pin_reset_required"
        assert (await _stored(ctx, "w-seal")).pin_failures == 0
        # ... or copies another wallet's sealed PIN, whose PIN they know: refused too.
        await _write_pin_hash(ctx, "w-seal", (await _stored(ctx, "w-other")).pin_hash)
        assert await _refusal(ctx, me, "1111") == "pin_reset_required"
        # Changing it needs the (uncheckable) current PIN: refused the same way.
        with pytest.raises(APIError) as refused:
            await set_pin(ctx, me, "9999", "1111")
        assert refused.value.error == "pin_reset_required"
        await _write_pin_hash(ctx, "w-seal", hash_pin("1111"))

    # A restart does not seal what was written unsealed after the upgrade.
    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        assert (await _stored(ctx, "w-seal")).pin_hash.startswith("scrypt$")  # type: ignore[union-attr]
        assert await _refusal(ctx, me, "1111") == "pin_reset_required"
        # The owner, freshly logged in, resets it (new_wallet's session was created just now).
        await reset_pin(ctx, me, "1357")
        assert (await _stored(ctx, "w-seal")).pin_hash.startswith("sealed$")  # type: ignore[union-attr]
        assert await _refusal(ctx, me, "1357") is None


async def test_hashes_stored_unsealed_before_the_upgrade_are_sealed_at_the_first_start_up(
        tmp_path: Path, database_url: str) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url, "0017")  # the schema before sealing
    sealed_key, key = Vault(master_box(settings)).new_data_key("w-legacy")
    legacy = hash_pin("4821")
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.execute(text(
                "INSERT INTO wallets (id, subject_index, data_key, profile, created_at, pin_hash, pin_failures) "
                "VALUES ('w-legacy', 'legacy', :key, :profile, CURRENT_TIMESTAMP, :pin, 2)"),
                {"key": sealed_key, "profile": key.seal("profile", "w-legacy", {}), "pin": legacy})
    finally:
        await db.dispose()

    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        row = await _stored(ctx, "w-legacy")
        assert row.pin_hash is not None and row.pin_hash.startswith("sealed$")
        assert open_pin_hash(key, row.pin_hash) == legacy and row.pin_failures == 2 and row.pin_lockouts == 0
        me = Principal(session=Session(id="ses-legacy", wallet_id="w-legacy", user_agent=""), wallet=row, key=key)
        assert await _refusal(ctx, me, "0000") == "invalid_pin"
        assert await _refusal(ctx, me, "4821") is None  # the citizen's PIN still works
