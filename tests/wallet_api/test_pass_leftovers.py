"""Once their first run is over, the wallet's start-up passes revisit only the rows that run left.

The passes that bring rows of earlier versions into the current form (PIN hashes sealed, PINs recorded
in the sealed profile, credential copies bound to their credential) need each wallet's data key, and do
not complete while one does not open. Before, an incomplete pass ran over every row again at each
start-up, so someone who can write the database (without the master key) could keep it incomplete with
a wallet row whose key never opens, and then have an unsealed hash of a PIN they know, written into any
wallet, sealed at the next restart, or copies planted or moved meanwhile opened the earlier way. Now the
first run records the rows it left, with the digest of their value, sealed under the master key; later
runs go over those alone, and take one only while it holds that value; a record that does not open is
refused. The same for the copies' fallback: after the first run, only a copy it left opens the earlier way.

Wallets served by uvicorn on 127.0.0.1 and started in process, on SQLite and on PostgreSQL; the
database written as an earlier version, and a database writer, would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text

from service_kit.crypto import SecretBox
from service_kit.db import Database
from service_kit.migrations import run_migrations
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import wallet_settings
from tests.wallet_api.test_copy_binding import _insert_credential, _legacy_copy, _opened
from tests.wallet_api.test_copy_binding_pass import _first_run, _lease, _row, _sealed_key, _value
from tests.wallet_api.test_pin_erased import _insert_wallets
from wallet_api import store
from wallet_api.app import MIGRATIONS, create_app
from wallet_api.context import master_box
from wallet_api.models import Session
from wallet_api.pin import LEGACY_SEALED_MARKER, PIN_RECORDED, PINS_RECORDED_MARKER, hash_pin, open_pin_hash
from wallet_api.settings import WalletSettings
from wallet_api.store import COPIES_BOUND_MARKER, COPY_KIND, copy_ref
from wallet_api.vault import DataKey, Vault, token_mac

pytestmark = pytest.mark.anyio

PIN_MARKERS = frozenset({LEGACY_SEALED_MARKER, PINS_RECORDED_MARKER})


def _b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def _keys(tmp_path: Path, database_url: str) -> tuple[WalletSettings, WalletSettings, Vault]:
    """A master-key rotation under way: ``(settings without the previous key, with it, a vault under the
    previous key alone)``. A wallet whose data key is still under the previous key does not open
    without it: the first start-up of this version is given the current key only."""
    previous, current = secrets.token_bytes(32), secrets.token_bytes(32)
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url,
                               master_key=_b64(current))
    with_previous = settings.model_copy(update={"previous_master_keys": [SecretStr(_b64(previous))]})
    return settings, with_previous, Vault(master_box(settings.model_copy(update={"master_key": SecretStr(_b64(previous))})))


async def _sql(database_url: str, statement: str, **params: Any) -> list[Any]:
    """One SQL statement, as a database writer runs it; the rows it returns."""
    db = Database(database_url)
    try:
        async with db.session() as session:
            result = await session.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await db.dispose()


async def _earlier_wallet(database_url: str, vault: Vault, wallet_id: str, pin: str | None) -> DataKey:
    """A wallet as a version before PIN sealing left it: an unsealed hash, no PIN record in the profile."""
    sealed_key, key = vault.new_data_key(wallet_id)
    await _insert_wallets(database_url, [{"id": wallet_id, "key": sealed_key, "pin": hash_pin(pin) if pin else None,
                                          "profile": key.seal("profile", wallet_id, {"identifier": wallet_id})}])
    return key


async def _wallet(database_url: str, vault: Vault, wallet_id: str) -> DataKey:
    """A wallet without a PIN, as an earlier version stored it."""
    sealed_key, key = vault.new_data_key(wallet_id)
    await _insert_wallets(database_url, [{"id": wallet_id, "key": sealed_key, "pin": None,
                                          "profile": key.seal("profile", wallet_id, {"identifier": "x"})}])
    return key


async def _planted_wallet(database_url: str, wallet_id: str, pin: str) -> None:
    """What holds an incomplete pass back for good: a wallet row whose data key never opens (a database
    writer's), with an unsealed PIN hash."""
    await _insert_wallets(database_url, [{"id": wallet_id, "key": b"\x01\x10" + secrets.token_bytes(60),
                                          "pin": hash_pin(pin), "profile": b"\x01" + secrets.token_bytes(40)}])


async def _token(settings: WalletSettings, wallet_id: str) -> str:
    """An access token of a live session of the wallet, stored as a login stores it."""
    db = Database(settings.database_url)
    try:
        token = secrets.token_urlsafe(32)
        key = await Vault(master_box(settings)).token_key(db)
        now = dt.datetime.now(dt.UTC)
        async with db.session() as session:
            session.add(Session(id=f"ses-{secrets.token_hex(4)}", wallet_id=wallet_id, provider="valid",
                                access_hash=token_mac(key, "access", token), created_at=now, last_used_at=now,
                                access_expires_at=now + dt.timedelta(hours=1)))
        return token
    finally:
        await db.dispose()


def _put_pin(url: str, token: str, new: str, current: str) -> tuple[int, str | None]:
    """``PUT /v1/pin`` (changing the PIN needs the current one, checked as presenting checks it)."""
    r = httpx.put(f"{url}/v1/pin", json={"pin": new, "current_pin": current},
                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return r.status_code, (r.json().get("error") if r.content else None)


@contextlib.contextmanager
def _started(settings: WalletSettings) -> Iterator[str]:
    """The wallet API started (its start-up passes run) and served on 127.0.0.1."""
    with serve(create_app(settings, run_background=False), port=free_port()) as url:
        yield url


async def _pin_hash(database_url: str, wallet_id: str) -> str:
    [(value,)] = await _sql(database_url, "SELECT pin_hash FROM wallets WHERE id = :id", id=wallet_id)
    return str(value)


async def _names(database_url: str) -> set[str]:
    return {name for (name,) in await _sql(database_url, "SELECT name FROM service_keys")}


def _pass_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name in ("wallet_api.pin", "wallet_api.store")]


def _nothing_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert "scrypt$" not in record.getMessage() and "scrypt$" not in str(record.__dict__)


async def test_a_pin_hash_written_after_the_first_run_is_not_sealed_though_a_planted_wallet_holds_the_pass_back(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings, _, previous = _keys(tmp_path, database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    await _earlier_wallet(database_url, previous, "w-behind", "4821")  # left: its key needs the previous one
    await _earlier_wallet(database_url, Vault(master_box(settings)), "w-victim", "1357")
    token = await _token(settings, "w-victim")

    with caplog.at_level(logging.INFO, logger="wallet_api"), _started(settings) as url:
        assert _put_pin(url, token, "1357", "0000") == (403, "invalid_pin")  # sealed by the first run: it works
    after_first_run = await _names(database_url)
    assert not PIN_MARKERS & after_first_run

    # A database writer plants a wallet whose key never opens, and puts the hash of a PIN they know into
    # the victim's wallet. The next start-up (the keys unchanged) does not seal it: refused as before.
    await _planted_wallet(database_url, "w-planted", "0000")
    await _sql(database_url, "UPDATE wallets SET pin_hash = :h WHERE id = 'w-victim'", h=hash_pin("9999"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wallet_api"), _started(settings) as url:
        assert _put_pin(url, token, "2468", "9999") == (403, "pin_reset_required")
        assert _put_pin(url, token, "2468", "1357") == (403, "pin_reset_required")
    assert (await _pin_hash(database_url, "w-victim")).startswith("scrypt$"), "an unsealed hash written later was sealed"
    assert (await _pin_hash(database_url, "w-planted")).startswith("scrypt$")
    # Only what the first run left is revisited, and logged: the wallet whose key is still closed.
    unopened = [r for r in _pass_logs(caplog) if r.getMessage().startswith("a wallet's data key does not open")]
    assert sorted(r.wallet for r in unopened) == ["w-behind", "w-behind"]  # type: ignore[attr-defined]
    summaries = {r.marker: r for r in _pass_logs(caplog)  # type: ignore[attr-defined]
                 if r.name == "wallet_api.pin" and hasattr(r, "wallets_unopened")}
    assert {m: (r.changed, r.wallets_unopened, r.outcome) for m, r in summaries.items()} == {  # type: ignore[attr-defined]
        m: (0, 1, "incomplete") for m in PIN_MARKERS}
    assert not PIN_MARKERS & await _names(database_url)
    _nothing_secret_logged(caplog)
    # What the first run recorded: that it is over, and the wallet it left (sealed), for each pass.
    assert {"left/pin-hashes", "left/pin-hashes/w-behind", "left/pin-records", "left/pin-records/w-behind"} <= (
        after_first_run)


async def test_a_wallet_the_first_run_left_is_completed_once_its_key_opens_and_the_markers_are_recorded(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Whatever a database writer planted meanwhile: the planted wallet does not hold the passes back, and
    a wallet the first run left whose PIN hash was replaced since is refused, not sealed."""
    settings, with_previous, previous = _keys(tmp_path, database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    behind = await _earlier_wallet(database_url, previous, "w-behind", "4821")
    await _earlier_wallet(database_url, previous, "w-swapped", "1111")
    await _earlier_wallet(database_url, Vault(master_box(settings)), "w-ahead", "1357")
    token = await _token(settings, "w-behind")
    swapped_token = await _token(settings, "w-swapped")

    with _started(settings):
        pass
    await _planted_wallet(database_url, "w-planted", "0000")
    await _sql(database_url, "UPDATE wallets SET pin_hash = :h WHERE id = 'w-swapped'", h=hash_pin("9999"))

    # The keys are fixed (the previous key configured): the next start-up completes both passes.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wallet_api"), _started(with_previous) as url:
        assert PIN_MARKERS <= await _names(database_url)
        assert _put_pin(url, token, "4821", "0000") == (403, "invalid_pin")
        assert _put_pin(url, token, "2468", "4821") == (204, None)
        assert _put_pin(url, swapped_token, "2468", "9999") == (403, "pin_reset_required")
    [(profile,)] = await _sql(database_url, "SELECT profile FROM wallets WHERE id = 'w-behind'")
    assert behind.open("profile", "w-behind", bytes(profile)).get(PIN_RECORDED) is True
    assert open_pin_hash(behind, await _pin_hash(database_url, "w-behind")) is not None
    assert (await _pin_hash(database_url, "w-swapped")).startswith("scrypt$")
    assert not {n for n in await _names(database_url) if n.startswith("left/pin-")}, "the left-over set stays"
    summaries = {r.marker: r for r in _pass_logs(caplog)  # type: ignore[attr-defined]
                 if r.name == "wallet_api.pin" and hasattr(r, "wallets_unopened")}
    assert (summaries[LEGACY_SEALED_MARKER].changed, summaries[LEGACY_SEALED_MARKER].refused,  # type: ignore[attr-defined]
            summaries[LEGACY_SEALED_MARKER].outcome) == (1, 1, "completed")  # type: ignore[attr-defined]
    assert summaries[PINS_RECORDED_MARKER].outcome == "completed"  # type: ignore[attr-defined]
    changed = [r for r in _pass_logs(caplog) if getattr(r, "code", "") == "pass.left_changed"]
    assert [(r.wallet, r.levelno) for r in changed] == [("w-swapped", logging.ERROR)]  # type: ignore[attr-defined]
    _nothing_secret_logged(caplog)

    # Complete: the next start-up does nothing (the planted wallet is never looked at).
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wallet_api"), _started(with_previous):
        pass
    assert not [r for r in _pass_logs(caplog) if hasattr(r, "wallets_unopened")]


async def _legacy_copies(database_url: str, key: DataKey, credential_id: str, copies: list[int]) -> None:
    await _insert_credential(database_url, key, credential_id, [
        (f"copy-{n}", p, _legacy_copy(key, f"copy-{n}", _value(n))) for p, n in enumerate(copies)])


async def _first_copy_run(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    """Until the start-up's copy pass has run once (its summary logged, or its task ended)."""
    with caplog.at_level(logging.INFO, logger="wallet_api.store"):
        await _first_run(app, caplog)


def _left_over_mode(vault: Vault) -> bool:
    """Only the copies the pass's first run left open the earlier way."""
    return type(vault.legacy_copies).__name__ == "LeftOvers"


async def _read(app: FastAPI, key: DataKey) -> tuple[dict[str, list[str]], list[str]]:
    """The wallet's credentials as the routes read them: ``({credential: [copy ids]}, [unreadable])``."""
    ctx = app.state.wallet
    opened, broken = await _opened(ctx.db, ctx.vault.data_key(_row(key, await _sealed_key(
        ctx.settings.database_url, key.wallet_id))))
    return {c: [copy["id"] for copy in copies] for c, copies in opened.items()}, sorted(broken)


async def test_only_copies_the_first_run_left_open_the_earlier_way(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings, with_previous, previous = _keys(tmp_path, database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    behind = await _wallet(database_url, previous, "w-behind")
    ahead = await _wallet(database_url, Vault(master_box(settings)), "w-ahead")
    await _legacy_copies(database_url, behind, "cred-b1", [0, 1, 2])
    await _legacy_copies(database_url, behind, "cred-b2", [3])
    await _legacy_copies(database_url, ahead, "cred-a1", [4])

    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        await _first_copy_run(app, caplog)
        left_over_mode = _left_over_mode(app.state.wallet.vault)
    after_first_run = await _names(database_url)
    assert COPIES_BOUND_MARKER not in after_first_run

    # A database writer moves a copy the first run left to another credential of its wallet, and puts a
    # copy sealed the earlier way (an old row, say) into a wallet the first run bound.
    await _sql(database_url, "UPDATE credential_copies SET credential_id = 'cred-b2' WHERE id = 'copy-1'")
    await _legacy_copies(database_url, ahead, "cred-a2", [9])

    # The keys are fixed, but another worker holds the pass: this one reads the copies meanwhile.
    await _lease(database_url, dt.datetime.now(dt.UTC))
    app = create_app(with_previous, run_background=False)
    async with app.router.lifespan_context(app):
        assert await _read(app, behind) == ({"cred-b1": ["copy-0", "copy-2"]}, ["cred-b2"])  # copy-1 moved there
        assert await _read(app, ahead) == ({"cred-a1": ["copy-4"]}, ["cred-a2"])
        assert _left_over_mode(app.state.wallet.vault) and left_over_mode
        assert {n for n in after_first_run if n.startswith("left/copies/")} == {f"left/copies/copy-{n}" for n in range(4)}
        # A worker that started before the first run was over (every copy then opened the earlier way)
        # takes up the left-over set at its next look.
        db, late = Database(database_url), Vault(master_box(with_previous))
        try:
            late.legacy_copies = True
            assert (await store.bind_legacy_copies(db, late)).outcome == "busy"
            assert _left_over_mode(late)
        finally:
            await db.dispose()
        # The other worker let go: this one's next run binds the copies left as they were, only them.
        app.state.copy_binding.cancel()  # (its own background look, due in 15 to 45 s, is not awaited)
        with contextlib.suppress(asyncio.CancelledError):
            await app.state.copy_binding
        await _sql(database_url, "DELETE FROM service_keys WHERE name = :n", n=store.COPIES_BINDING_LEASE)
        with caplog.at_level(logging.INFO, logger="wallet_api.store"):
            result = await store.bind_legacy_copies(app.state.wallet.db, app.state.wallet.vault)
        assert (result.outcome, result.resealed, result.refused, result.wallets_unopened) == ("completed", 3, 1, 0)
        assert app.state.wallet.vault.legacy_copies is False
        assert await _read(app, behind) == ({"cred-b1": ["copy-0", "copy-2"]}, ["cred-b2"])
        assert await _read(app, ahead) == ({"cred-a1": ["copy-4"]}, ["cred-a2"])
    changed = [r for r in caplog.records if getattr(r, "code", "") == "pass.left_changed"]
    assert [(r.copy, r.credential, r.wallet) for r in changed] == [("copy-1", "cred-b2", "w-behind")]  # type: ignore[attr-defined]
    stored = {copy_id: (credential_id, bytes(sealed)) for copy_id, credential_id, sealed in await _sql(
        database_url, "SELECT id, credential_id, sealed FROM credential_copies")}
    for n, credential_id in [(0, "cred-b1"), (2, "cred-b1"), (3, "cred-b2")]:
        assert stored[f"copy-{n}"][0] == credential_id
        assert behind.open(COPY_KIND, copy_ref(credential_id, f"copy-{n}"), stored[f"copy-{n}"][1]) == _value(n)
    assert behind.open("copy", "copy-1", stored["copy-1"][1]) == _value(1)  # never bound to the credential moved to
    assert ahead.open("copy", "copy-9", stored["copy-9"][1]) == _value(9)
    assert not {n for n in await _names(database_url) if n.startswith("left/")}


async def test_a_forged_record_of_what_the_first_run_left_is_refused(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A database writer cannot add a wallet to the set: a record copied from another wallet's does not
    open for it (nor its PIN hash get sealed), and the others still do."""
    settings, with_previous, previous = _keys(tmp_path, database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    await _earlier_wallet(database_url, previous, "w-behind", "4821")
    await _earlier_wallet(database_url, Vault(master_box(settings)), "w-victim", "1357")
    token, victim = await _token(settings, "w-behind"), await _token(settings, "w-victim")
    with _started(settings):
        pass
    records = await _sql(database_url, "SELECT sealed FROM service_keys WHERE name = 'left/pin-hashes/w-behind'")
    if records:  # (checked below: the behaviour first)
        await _sql(database_url, "INSERT INTO service_keys (name, sealed, created_at) VALUES "
                   "('left/pin-hashes/w-victim', :s, CURRENT_TIMESTAMP)", s=bytes(records[0][0]))
    await _sql(database_url, "INSERT INTO service_keys (name, sealed, created_at) VALUES "
               "('left/pin-hashes/w-other', :s, CURRENT_TIMESTAMP)", s=b"\x01\x10" + secrets.token_bytes(60))
    await _sql(database_url, "UPDATE wallets SET pin_hash = :h WHERE id = 'w-victim'", h=hash_pin("9999"))

    with caplog.at_level(logging.INFO, logger="wallet_api"), _started(with_previous) as url:
        assert _put_pin(url, victim, "2468", "9999") == (403, "pin_reset_required")
        assert _put_pin(url, token, "2468", "4821") == (204, None)
    assert (await _pin_hash(database_url, "w-victim")).startswith("scrypt$")
    refused = [r for r in _pass_logs(caplog) if getattr(r, "code", "") == "pass.left_refused"]
    assert sorted(r.wallet for r in refused) == ["w-other", "w-victim"]  # type: ignore[attr-defined]
    assert all(r.levelno == logging.ERROR for r in refused)
    assert LEGACY_SEALED_MARKER in await _names(database_url) and records


async def test_an_altered_record_of_what_the_first_run_left_is_refused_as_an_empty_set(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Fail closed: the record that the first run is over does not open while the keys are right, so none
    of the rows it names is taken for an earlier version's (the PIN needs a reset, the copies do not
    open the earlier way), an error says so, and the passes complete."""
    settings, with_previous, previous = _keys(tmp_path, database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    behind = await _earlier_wallet(database_url, previous, "w-behind", "4821")
    await _legacy_copies(database_url, behind, "cred-b1", [0, 1])
    ahead = await _earlier_wallet(database_url, Vault(master_box(settings)), "w-ahead", "1357")
    await _legacy_copies(database_url, ahead, "cred-a1", [2])
    token = await _token(settings, "w-behind")
    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        await _first_copy_run(app, caplog)
    # Each pass's record: another row's sealed value, a value under a master key the service never had.
    records = await _sql(database_url, "SELECT sealed FROM service_keys WHERE name = 'left/pin-records'")
    await _sql(database_url, "UPDATE service_keys SET sealed = :s WHERE name = 'left/pin-hashes'",
               s=bytes(records[0][0]) if records else b"")
    await _sql(database_url, "UPDATE service_keys SET sealed = :s WHERE name = 'left/copies'",
               s=SecretBox(secrets.token_bytes(32)).seal(b"copies", b"cartera-wallet|service|left/copies"))

    with caplog.at_level(logging.INFO, logger="wallet_api"), _started(with_previous) as url:
        assert _put_pin(url, token, "2468", "4821") == (403, "pin_reset_required")
        for _ in range(600):
            if COPIES_BOUND_MARKER in await _names(database_url):
                break
            await asyncio.sleep(0.05)
    assert (await _pin_hash(database_url, "w-behind")).startswith("scrypt$")
    assert records  # (the behaviour checked first)
    names = await _names(database_url)
    assert {*PIN_MARKERS, COPIES_BOUND_MARKER} <= names and not {n for n in names if n.startswith("left/")}
    refused = [r for r in _pass_logs(caplog) if getattr(r, "code", "") == "pass.left_refused"]
    assert len(refused) == 2 and all(r.levelno == logging.ERROR for r in refused)  # the PIN hashes', the copies'
    stored = await _sql(database_url, "SELECT id, sealed FROM credential_copies WHERE wallet_id = 'w-behind'")
    assert {copy_id: behind.open("copy", copy_id, bytes(sealed)) for copy_id, sealed in stored} == {
        f"copy-{n}": _value(n) for n in range(2)}  # not bound
    app = create_app(with_previous, run_background=False)
    async with app.router.lifespan_context(app):
        assert app.state.wallet.vault.legacy_copies is False
        assert await _read(app, behind) == ({}, ["cred-b1"])
