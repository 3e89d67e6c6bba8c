"""The start-up PIN passes (sealing unsealed PIN hashes, recording PINs in profiles) complete only when
every wallet they must change had its data key opened.

Before, each recorded its marker even when a wallet's data key did not open (a wrong master key at the
first start-up, a master-key rotation under way without the previous key configured), so once the key
was right the pass never ran again: that wallet's unsealed PIN hash stayed unsealed and, as an unsealed
hash never passes, the citizen's right PIN was refused (403 ``pin_reset_required``) until they reset it;
and its profile stayed without the PIN record, so a NULL written into ``pin_hash`` read as "no PIN" until
the citizen's next right PIN. Now no marker is recorded, and the next start-up with the right keys does
the rest. A value that does not open while its wallet's key does is damaged: logged, not waited for.

In-process wallets on SQLite and PostgreSQL, the rows written as an earlier version wrote them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from service_kit.db import Database
from service_kit.migrations import run_migrations
from tests.support.servers import free_port
from tests.wallet_api.conftest import wallet_settings
from tests.wallet_api.test_pin_erased import _insert_wallets
from tests.wallet_api.test_pin_sealing import _refusal, _stored, _write_pin_hash
from wallet_api.app import MIGRATIONS, create_app
from wallet_api.context import master_box
from wallet_api.deps import Principal
from wallet_api.models import ServiceKey, Session
from wallet_api.pin import (
    LEGACY_SEALED_MARKER,
    PIN_RECORDED,
    PINS_RECORDED_MARKER,
    hash_pin,
    open_pin_hash,
    seal_pin_hash,
)
from wallet_api.vault import DataKey, Vault

pytestmark = pytest.mark.anyio

MARKERS = (LEGACY_SEALED_MARKER, PINS_RECORDED_MARKER)


def _b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


async def _markers(database_url: str) -> set[str]:
    db = Database(database_url)
    try:
        async with db.read_session() as session:
            return {name for name in MARKERS if await session.get(ServiceKey, name) is not None}
    finally:
        await db.dispose()


async def _earlier_wallet(database_url: str, vault: Vault, wallet_id: str, pin: str) -> DataKey:
    """A wallet as a version before PIN sealing left it: an unsealed hash, no record in the profile."""
    sealed_key, key = vault.new_data_key(wallet_id)
    await _insert_wallets(database_url, [{"id": wallet_id, "key": sealed_key, "pin": hash_pin(pin),
                                          "profile": key.seal("profile", wallet_id, {"identifier": wallet_id})}])
    return key


def _summaries(caplog: pytest.LogCaptureFixture) -> dict[str, logging.LogRecord]:
    return {r.marker: r for r in caplog.records  # type: ignore[attr-defined]
            if r.name == "wallet_api.pin" and hasattr(r, "wallets_unopened")}


async def _pin_works_as_before(ctx: object, wallet_id: str, pin: str) -> None:
    """The citizen's PIN passes, a wrong one is refused, and a NULL written for it is not "no PIN"."""
    row = await _stored(ctx, wallet_id)
    key = ctx.vault.data_key(row)  # type: ignore[attr-defined]
    assert open_pin_hash(key, row.pin_hash or "") is not None, "the PIN hash was not sealed"
    assert key.open("profile", wallet_id, row.profile).get(PIN_RECORDED) is True, "the PIN was not recorded"
    me = Principal(session=Session(id=f"ses-{wallet_id}", wallet_id=wallet_id, user_agent=""), wallet=row, key=key)
    assert await _refusal(ctx, me, pin) is None
    assert await _refusal(ctx, me, "0000") == "invalid_pin"
    assert await _refusal(ctx, me, pin) is None
    await _write_pin_hash(ctx, wallet_id, None)
    assert await _refusal(ctx, me, None) == "pin_reset_required"


async def test_a_rotation_without_the_previous_key_records_no_marker_and_the_next_start_completes_the_passes(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """One wallet's data key is still under the previous master key (a rotation under way), which the
    first start-up of this version is not given."""
    previous, current = secrets.token_bytes(32), secrets.token_bytes(32)
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url,
                               master_key=_b64(current))
    with_previous = settings.model_copy(update={"previous_master_keys": [SecretStr(_b64(previous))]})
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    behind = await _earlier_wallet(database_url, Vault(master_box(settings.model_copy(update={
        "master_key": SecretStr(_b64(previous))}))), "w-behind", "4821")
    await _earlier_wallet(database_url, Vault(master_box(settings)), "w-ahead", "1357")

    app = create_app(settings, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.pin"):
        async with app.router.lifespan_context(app):
            assert await _markers(database_url) == set(), "marker recorded though a wallet's data key did not open"
            await _pin_works_as_before(app.state.wallet, "w-ahead", "1357")
    summaries = _summaries(caplog)
    for marker in MARKERS:
        assert summaries[marker].levelno == logging.ERROR
        assert (summaries[marker].changed, summaries[marker].damaged,  # type: ignore[attr-defined]
                summaries[marker].wallets_unopened) == (1, 0, 1)  # type: ignore[attr-defined]
        assert "1 wallets whose data key did not open" in summaries[marker].getMessage()
    named = [r for r in caplog.records if r.getMessage().startswith("a wallet's data key does not open")]
    assert sorted(r.wallet for r in named) == ["w-behind", "w-behind"]  # type: ignore[attr-defined]
    row = await _stored(app.state.wallet, "w-behind")  # left as the earlier version wrote it
    assert row.pin_hash is not None and row.pin_hash.startswith("scrypt$")
    assert behind.open("profile", "w-behind", row.profile) == {"identifier": "w-behind"}

    caplog.clear()
    app = create_app(with_previous, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.pin"):
        async with app.router.lifespan_context(app):
            assert await _markers(database_url) == set(MARKERS)
            await _pin_works_as_before(app.state.wallet, "w-behind", "4821")
    summaries = _summaries(caplog)
    assert "1 sealed, 0 damaged, 0 wallets" in summaries[LEGACY_SEALED_MARKER].getMessage()
    for marker in MARKERS:
        assert summaries[marker].levelno == logging.INFO
        assert (summaries[marker].changed, summaries[marker].wallets_unopened) == (1, 0)  # type: ignore[attr-defined]

    # Once recorded, the passes never run again: an unsealed hash written now is refused, not sealed.
    caplog.clear()
    await _write_pin_hash(app.state.wallet, "w-ahead", hash_pin("9999"))
    app = create_app(with_previous, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.pin"):
        async with app.router.lifespan_context(app):
            assert _summaries(caplog) == {}
            row = await _stored(app.state.wallet, "w-ahead")
            assert row.pin_hash is not None and row.pin_hash.startswith("scrypt$")
            me = Principal(session=Session(id="ses-late", wallet_id="w-ahead", user_agent=""), wallet=row,
                           key=app.state.wallet.vault.data_key(row))
            assert await _refusal(app.state.wallet, me, "9999") == "pin_reset_required"


async def test_a_first_start_with_a_wrong_master_key_changes_nothing_and_the_right_key_completes_the_passes(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    await _earlier_wallet(database_url, Vault(master_box(settings)), "w-mine", "4821")
    wrong = settings.model_copy(update={"master_key": SecretStr(_b64(secrets.token_bytes(32)))})
    app = create_app(wrong, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.pin"):
        async with app.router.lifespan_context(app):
            assert await _markers(database_url) == set(), "marker recorded though no wallet's data key opened"
    assert {m: (r.changed, r.wallets_unopened) for m, r in _summaries(caplog).items()} == {  # type: ignore[attr-defined]
        m: (0, 1) for m in MARKERS}

    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        assert await _markers(database_url) == set(MARKERS)
        await _pin_works_as_before(app.state.wallet, "w-mine", "4821")


async def test_a_damaged_profile_is_logged_and_does_not_hold_back_the_marker(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    vault = Vault(master_box(settings))
    sealed_key, key = vault.new_data_key("w-damaged")
    await _insert_wallets(database_url, [{"id": "w-damaged", "key": sealed_key,
                                          "pin": seal_pin_hash(key, hash_pin("4821")),
                                          "profile": key.seal("profile", "w-other", {"identifier": "x"})}])
    await _earlier_wallet(database_url, vault, "w-fine", "1357")
    app = create_app(settings, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.pin"):
        async with app.router.lifespan_context(app):
            assert await _markers(database_url) == set(MARKERS)
            await _pin_works_as_before(app.state.wallet, "w-fine", "1357")
    summary = _summaries(caplog)[PINS_RECORDED_MARKER]
    assert (summary.changed, summary.damaged, summary.wallets_unopened) == (1, 1, 0)  # type: ignore[attr-defined]
    assert summary.levelno == logging.INFO
    damaged = [r for r in caplog.records if "does not open though its data key does" in r.getMessage()]
    assert [(r.wallet, r.code) for r in damaged] == [("w-damaged", "vault.decrypt_failed")]  # type: ignore[attr-defined]
