"""The pass that binds copies of earlier versions to their credential: complete only when it reached
every wallet, cheap, and once.

It records its marker (after which a copy sealed the earlier way never opens) only when every wallet
holding copies had its data key opened: a first start-up with a wrong master key, or in the middle of a
master-key rotation without the previous key, leaves the copies it could not open as they were, and they
still open (as before the upgrade) until a start-up with the right keys binds them. A copy damaged beyond
opening either way is counted, not waited for. Runs in the background, a round of wallets at a time
with one write per round; one worker scans while the others wait on its lease.

In-process wallets on SQLite and PostgreSQL, the rows written as an earlier version wrote them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, text

from service_kit.db import Database
from service_kit.migrations import run_migrations
from ssi.jose import Key
from tests.support.servers import free_port
from tests.wallet_api.conftest import wallet_settings
from tests.wallet_api.test_copy_binding import _insert_credential, _legacy_copy, _opened
from tests.wallet_api.test_pin_erased import _insert_wallets
from wallet_api import store
from wallet_api.app import MIGRATIONS, create_app
from wallet_api.context import master_box
from wallet_api.models import CredentialCopy, ServiceKey, Wallet
from wallet_api.settings import WalletSettings
from wallet_api.store import COPIES_BOUND_MARKER, COPY_KIND, copy_ref
from wallet_api.vault import DataKey, Vault, VaultError

pytestmark = pytest.mark.anyio


HOLDER_KEYS = [Key.generate("ES256").private_jwk() for _ in range(3)]


def _value(n: int) -> dict[str, Any]:
    """Copy ``n``'s sealed value: its SD-JWT VC and its holder key."""
    return {"token": f"eyJ.token-{n}~", "holder_jwk": HOLDER_KEYS[n % 3]}


def _b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


async def _wallet(database_url: str, vault: Vault, wallet_id: str) -> DataKey:
    """A wallet row as an earlier version stored it, its data key sealed by ``vault``'s master key."""
    sealed_key, key = vault.new_data_key(wallet_id)
    await _insert_wallets(database_url, [{"id": wallet_id, "key": sealed_key, "pin": None,
                                          "profile": key.seal("profile", wallet_id, {"identifier": "x"})}])
    return key


async def _legacy_credential(database_url: str, key: DataKey, credential_id: str, numbers: range) -> None:
    await _insert_credential(database_url, key, credential_id, [
        (f"copy-{n}", p, _legacy_copy(key, f"copy-{n}", _value(n))) for p, n in enumerate(numbers)])


async def _marker(database_url: str) -> bool:
    db = Database(database_url)
    try:
        async with db.read_session() as session:
            return await session.get(ServiceKey, COPIES_BOUND_MARKER) is not None
    finally:
        await db.dispose()


async def _stored(database_url: str) -> dict[str, tuple[str, bytes]]:
    """Every copy as stored: ``{id: (credential id, sealed)}``."""
    db = Database(database_url)
    try:
        async with db.read_session() as session:
            rows = (await session.execute(
                select(CredentialCopy.id, CredentialCopy.credential_id, CredentialCopy.sealed))).all()
        return {copy_id: (credential_id, sealed) for copy_id, credential_id, sealed in rows}
    finally:
        await db.dispose()


def _summaries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "wallet_api.store" and hasattr(r, "wallets_unopened")]


async def _first_run(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    """Until the start-up's pass has run once: its task ended (the marker recorded), or its one line
    said it could not complete. (A version that bound copies before start-up completed has no task.)"""
    task = getattr(app.state, "copy_binding", None)
    for _ in range(600):
        if task is None or task.done() or _summaries(caplog):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the copy binding pass did not run")


async def test_a_start_whose_keys_do_not_open_a_wallet_records_no_marker_and_its_copies_open_later(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A master-key rotation was under way: one wallet's data key is still under the previous key, which
    the first start-up of this version is not given. That wallet's copies stay as they were and open
    once the previous key is configured again; the marker waits for them."""
    previous, current = secrets.token_bytes(32), secrets.token_bytes(32)
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url,
                               master_key=_b64(current))
    with_previous = settings.model_copy(update={"previous_master_keys": [SecretStr(_b64(previous))]})
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    behind = await _wallet(database_url, Vault(master_box(settings.model_copy(update={
        "master_key": SecretStr(_b64(previous))}))), "w-behind")  # not rewrapped yet
    ahead = await _wallet(database_url, Vault(master_box(settings)), "w-ahead")
    await _legacy_credential(database_url, behind, "cred-behind", range(0, 3))
    await _legacy_credential(database_url, ahead, "cred-ahead", range(3, 5))

    app = create_app(settings, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.store"):
        async with app.router.lifespan_context(app):
            await _first_run(app, caplog)
            assert not await _marker(database_url), "marker recorded though a wallet's data key did not open"
            # The wallet it could open is bound; the other wallet is untouched. Once its first run is
            # over, a copy sealed the earlier way opens only if that run left it: one written into the
            # database afterwards (an old row put back, say) does not open, though the pass is incomplete.
            await _legacy_credential(database_url, ahead, "cred-late", range(5, 6))
            opened, broken = await _opened(app.state.wallet.db, app.state.wallet.vault.data_key(
                _row(ahead, await _sealed_key(database_url, "w-ahead"))))
            assert broken == ["cred-late"] and sorted(opened) == ["cred-ahead"]
    [summary] = _summaries(caplog)
    assert (summary.resealed, summary.damaged, summary.wallets_unopened) == (2, 0, 1)  # type: ignore[attr-defined]
    assert summary.levelno == logging.ERROR and "1 wallets whose data key did not open" in summary.getMessage()
    named = [r for r in caplog.records if r.getMessage().startswith("a wallet's data key does not open")]
    assert [r.wallet for r in named] == ["w-behind"]  # type: ignore[attr-defined]
    stored = await _stored(database_url)
    for n in range(3):  # left as the earlier version sealed them
        assert behind.open("copy", f"copy-{n}", stored[f"copy-{n}"][1]) == _value(n)

    # The next start-up has the previous key: it binds the copies the first run left (only those) and
    # records the marker.
    caplog.clear()
    app = create_app(with_previous, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.store"):
        async with app.router.lifespan_context(app):
            result = await app.state.copy_binding
            assert (result.outcome, result.resealed, result.damaged, result.wallets_unopened) == ("completed", 3, 0, 0)
            assert app.state.wallet.vault.legacy_copies is False and await _marker(database_url)
            vault = app.state.wallet.vault
            opened, broken = await _opened(app.state.wallet.db, vault.data_key(
                _row(behind, await _sealed_key(database_url, "w-behind"))))
            assert broken == [] and opened == {"cred-behind": [{"id": f"copy-{n}", **_value(n)} for n in range(3)]}
    [summary] = _summaries(caplog)
    assert summary.levelno == logging.INFO and "3 re-sealed, 0 damaged, 0 wallets" in summary.getMessage()
    stored = await _stored(database_url)
    assert len(stored) == 6
    for n, key in [(0, behind), (1, behind), (2, behind), (3, ahead), (4, ahead)]:
        credential_id, sealed = stored[f"copy-{n}"]
        assert key.open(COPY_KIND, copy_ref(credential_id, f"copy-{n}"), sealed) == _value(n)
        with pytest.raises(VaultError):
            key.open("copy", f"copy-{n}", sealed)
    assert ahead.open("copy", "copy-5", stored["copy-5"][1]) == _value(5)  # never bound: not the pass's to bind

    # Once the marker is there, a copy sealed the earlier way does not open, in a worker started after
    # it as in the one that recorded it.
    await _legacy_credential(database_url, ahead, "cred-after", range(6, 7))
    app = create_app(with_previous, run_background=False)
    async with app.router.lifespan_context(app):
        assert app.state.copy_binding is None and app.state.wallet.vault.legacy_copies is False
        opened, broken = await _opened(app.state.wallet.db, app.state.wallet.vault.data_key(
            _row(ahead, await _sealed_key(database_url, "w-ahead"))))
        assert sorted(opened) == ["cred-ahead"] and sorted(broken) == ["cred-after", "cred-late"]


async def test_a_first_start_with_a_wrong_master_key_binds_nothing_and_the_right_key_completes_the_pass(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    key = await _wallet(database_url, Vault(master_box(settings)), "w-mine")
    await _legacy_credential(database_url, key, "cred-m", range(0, 2))
    wrong = settings.model_copy(update={"master_key": SecretStr(_b64(secrets.token_bytes(32)))})
    app = create_app(wrong, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.store"):
        async with app.router.lifespan_context(app):
            await _first_run(app, caplog)
            assert not await _marker(database_url), "marker recorded though no wallet's data key opened"
    [summary] = _summaries(caplog)
    assert (summary.resealed, summary.damaged, summary.wallets_unopened) == (0, 0, 1)  # type: ignore[attr-defined]
    stored = await _stored(database_url)
    assert {n: key.open("copy", n, sealed) for n, (_, sealed) in stored.items()} == {
        f"copy-{n}": _value(n) for n in range(2)}  # untouched

    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.wallet
        # Before the pass ends or after, the copies open: the earlier way, then bound.
        opened, broken = await _opened(ctx.db, ctx.vault.data_key(_row(key, await _sealed_key(database_url, "w-mine"))))
        assert broken == [] and opened == {"cred-m": [{"id": f"copy-{n}", **_value(n)} for n in range(2)]}
        result = await app.state.copy_binding
        assert (result.outcome, result.resealed) == ("completed", 2) and await _marker(database_url)
        opened, broken = await _opened(ctx.db, ctx.vault.data_key(_row(key, await _sealed_key(database_url, "w-mine"))))
        assert broken == [] and opened == {"cred-m": [{"id": f"copy-{n}", **_value(n)} for n in range(2)]}


def _row(key: DataKey, sealed_key: bytes) -> Wallet:
    """The wallet row ``vault.data_key`` unwraps the key of."""
    return Wallet(id=key.wallet_id, data_key=sealed_key)


async def _sealed_key(database_url: str, wallet_id: str) -> bytes:
    db = Database(database_url)
    try:
        async with db.read_session() as session:
            return (await session.execute(text("SELECT data_key FROM wallets WHERE id = :id"), {"id": wallet_id})).scalar_one()
    finally:
        await db.dispose()


async def test_a_damaged_copy_is_counted_and_does_not_hold_back_the_marker(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    key = await _wallet(database_url, Vault(master_box(settings)), "w-damaged")
    await _insert_credential(database_url, key, "cred-d", [
        ("copy-0", 0, _legacy_copy(key, "copy-0", _value(0))),
        ("copy-1", 1, b"\x01" + secrets.token_bytes(60)),  # corrupted
        ("copy-2", 2, _legacy_copy(key, "copy-9", _value(2)))])  # sealed for another row: opens no way
    app = create_app(settings, run_background=False)
    with caplog.at_level(logging.INFO, logger="wallet_api.store"):
        async with app.router.lifespan_context(app):
            result = await app.state.copy_binding
            assert (result.outcome, result.resealed, result.damaged, result.wallets_unopened) == ("completed", 1, 2, 0)
            assert await _marker(database_url)
            opened, broken = await _opened(app.state.wallet.db, app.state.wallet.vault.data_key(
                _row(key, await _sealed_key(database_url, "w-damaged"))))
            assert opened == {} and broken == ["cred-d"]
    damaged = [r for r in caplog.records if r.getMessage().startswith("a stored credential copy does not open;")
               and hasattr(r, "copy")]
    assert sorted((r.copy, r.code, r.credential, r.wallet) for r in damaged) == [  # type: ignore[attr-defined]
        ("copy-1", "vault.decrypt_failed", "cred-d", "w-damaged"), ("copy-2", "vault.decrypt_failed", "cred-d", "w-damaged")]
    [summary] = _summaries(caplog)
    assert "1 re-sealed, 2 damaged, 0 wallets whose data key did not open" in summary.getMessage()


async def test_the_pass_binds_thousands_of_copies_in_rounds_and_picks_up_where_a_stopped_run_left(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 copies over 25 wallets, a few rounds of wallets and several write statements each; some
    copies already bound (by this version, or by a run that stopped midway): those are left alone."""
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    vault = Vault(master_box(settings))
    keys, expected = {}, {}
    db = Database(database_url)
    try:
        for w in range(25):
            key = keys[f"w-{w:02d}"] = await _wallet(database_url, vault, f"w-{w:02d}")
            copies = []
            for p in range(80):
                n = w * 80 + p
                copy_id, credential_id = f"copy-{n:04d}", f"cred-{w:02d}-{p % 2}"
                bound = n % 7 == 0
                sealed = (key.seal(COPY_KIND, copy_ref(credential_id, copy_id), _value(n)) if bound
                          else _legacy_copy(key, copy_id, _value(n)))
                copies.append((credential_id, (copy_id, p, sealed)))
                expected[copy_id] = (key, credential_id, bound)
            for credential_id in {c for c, _ in copies}:
                await _insert_credential(database_url, key, credential_id, [c for cid, c in copies if cid == credential_id])
        monkeypatch.setattr(store, "_WRITE_CHUNK", 150)
        result = await store.bind_legacy_copies(db, vault, batch=7)
        legacy = sum(1 for *_, bound in expected.values() if not bound)
        assert (result.outcome, result.resealed, result.damaged, result.wallets_unopened) == ("completed", legacy, 0, 0)
        assert legacy > 1700 and vault.legacy_copies is False
        stored = await _stored(database_url)
        assert len(stored) == 2000
        for copy_id, (key, credential_id, _) in expected.items():
            assert stored[copy_id][0] == credential_id
            assert key.open(COPY_KIND, copy_ref(credential_id, copy_id), stored[copy_id][1]) == _value(int(copy_id[5:]))
        assert (await store.bind_legacy_copies(db, vault)).outcome == "bound"
        # What the wallets read, strictly bound now: every copy, in order.
        strict = Vault(master_box(settings))
        opened, broken = await _opened(db, strict.data_key(_row(keys["w-24"], await _sealed_key(database_url, "w-24"))))
        assert broken == [] and [c["id"] for c in opened["cred-24-1"]] == [f"copy-{n:04d}" for n in range(1921, 2000, 2)]
    finally:
        await db.dispose()


async def test_workers_starting_together_scan_once_and_a_stopped_workers_lease_is_taken_over(
        tmp_path: Path, database_url: str) -> None:
    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    key = await _wallet(database_url, Vault(master_box(settings)), "w-lease")
    await _legacy_credential(database_url, key, "cred-l", range(0, 40))
    workers = [(Database(database_url), Vault(master_box(settings))) for _ in range(3)]
    try:
        # A worker holds the lease (renewed just now): another does nothing, and says so.
        await _lease(database_url, dt.datetime.now(dt.UTC))
        db, vault = workers[0]
        vault.legacy_copies = True
        busy = await store.bind_legacy_copies(db, vault)
        assert (busy.outcome, busy.resealed) == ("busy", 0) and vault.legacy_copies is True
        for copy_id, (_, sealed) in (await _stored(database_url)).items():
            key.open("copy", copy_id, sealed)  # untouched
        # That worker stopped three minutes ago without finishing; three workers start together: one
        # takes the lease over and binds every copy, the others wait and then see the marker.
        await _lease(database_url, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3))
        for _, vault in workers:
            vault.legacy_copies = True
        results = await asyncio.wait_for(asyncio.gather(
            *(store.keep_binding_legacy_copies(db, vault, poll=0.05) for db, vault in workers)), 30)
        assert sorted((r.outcome, r.resealed) for r in results) == [("bound", 0), ("bound", 0), ("completed", 40)]
        assert not any(vault.legacy_copies for _, vault in workers)
        assert await _marker(database_url) and not await _leases(database_url)
    finally:
        for db, _ in workers:
            await db.dispose()


async def _lease(database_url: str, at: dt.datetime) -> None:
    """Another worker's lease on the pass, last renewed ``at``."""
    db = Database(database_url)
    try:
        async with db.session() as session:
            row = await session.get(ServiceKey, store.COPIES_BINDING_LEASE)
            if row is None:
                session.add(ServiceKey(name=store.COPIES_BINDING_LEASE, sealed=b"someone else", created_at=at))
            else:
                row.created_at = at
    finally:
        await db.dispose()


async def _leases(database_url: str) -> list[str]:
    db = Database(database_url)
    try:
        async with db.read_session() as session:
            return list((await session.execute(
                select(ServiceKey.name).where(ServiceKey.name == store.COPIES_BINDING_LEASE))).scalars())
    finally:
        await db.dispose()


async def test_copies_stored_before_the_pass_completes_are_sealed_bound(tmp_path: Path, database_url: str) -> None:
    """While earlier copies still open the old way, a credential received meanwhile is sealed the new way
    only: nothing is ever written in the earlier form."""
    settings: WalletSettings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    vault = Vault(master_box(settings))
    vault.legacy_copies = True
    sealed_key, _ = vault.new_data_key("w-new")
    await _insert_wallets(database_url, [{"id": "w-new", "key": sealed_key, "pin": None, "profile": b"\x01"}])
    key = vault.data_key(Wallet(id="w-new", data_key=sealed_key))
    assert key.legacy_copies is True
    db = Database(database_url)
    try:
        async with db.session() as session:
            credential_id = await store.add_credential(
                session, key, vct="urn:vct:test", issuer="https://issuer.test", details={},
                copies=[("eyJ.new~", Key.generate("ES256").private_jwk())], iat=None, exp=None)
        [(copy_id, (cid, sealed))] = (await _stored(database_url)).items()
        assert cid == credential_id and key.open(COPY_KIND, copy_ref(credential_id, copy_id), sealed)["token"] == "eyJ.new~"
        with pytest.raises(VaultError):
            key.open("copy", copy_id, sealed)
    finally:
        await db.dispose()
