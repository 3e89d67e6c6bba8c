"""Vault: AAD binding of sealed rows, and master-key rotation that keeps every wallet readable."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from service_kit.crypto import SecretBox
from wallet_api.auth import Identity, ensure_wallet
from wallet_api.context import WalletContext, master_box
from wallet_api.provisioning import provision_demo, rotate_master_key
from wallet_api.settings import WalletSettings
from wallet_api.vault import DataKey, Vault, VaultError


def test_sealed_values_are_bound_to_wallet_kind_and_row() -> None:
    key = DataKey("wal_a", b"k" * 32)
    sealed = key.seal("copy", "row1", {"token": "x"})
    assert key.open("copy", "row1", sealed) == {"token": "x"}
    for other in (("copy", "row2"), ("history", "row1")):
        with pytest.raises(VaultError):
            key.open(*other, sealed)
    with pytest.raises(VaultError):
        DataKey("wal_b", b"k" * 32).open("copy", "row1", sealed)


def test_rotate_master_key_rewraps_and_keeps_data(tmp_path: Path) -> None:
    old = SecretBox.generate_key()
    new = SecretBox.generate_key()
    settings = WalletSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", data_dir=tmp_path,
                              master_key=base64.urlsafe_b64encode(old).decode())

    async def scenario() -> None:
        configured, _info = await provision_demo(settings, issuer_anchor_pems=[], rp_anchor_pems=[],
                                                 idp_url="http://127.0.0.1:1")
        from service_kit.db import Database

        db = Database(configured.database_url)
        ctx = WalletContext(settings=configured, db=db, vault=Vault(master_box(configured)))
        async with db.session() as session:
            wallet = await ensure_wallet(ctx, session, Identity("valid", "12345678Z", "A", "", "idcatmobil", "high"))
            wallet_id, sealed_profile = wallet.id, wallet.profile
        await db.dispose()
        assert await rotate_master_key(configured, new) == 2  # the data key and the index key
        assert await rotate_master_key(configured, new) == 0  # idempotent: nothing left under the old key
        # a service configured with only the new key opens everything
        from pydantic import SecretStr

        fresh = configured.model_copy(update={"master_key": SecretStr(base64.urlsafe_b64encode(new).decode())})
        db = Database(fresh.database_url)
        vault = Vault(master_box(fresh))
        from wallet_api.models import Wallet

        async with db.read_session() as session:
            row = await session.get(Wallet, wallet_id)
            assert row is not None
            assert vault.data_key(row).open("profile", wallet_id, sealed_profile)["identifier"] == "12345678Z"
            assert len(await vault.index_key(session)) == 32
        await db.dispose()

    asyncio.run(scenario())


def test_rotation_also_rewraps_values_left_under_an_older_key(tmp_path: Path) -> None:
    """A rotation interrupted earlier left some data keys under key A while the service runs on B (A as a
    previous key); rotating to C rewraps those too, so a service with only C reads every wallet."""
    from pydantic import SecretStr

    from service_kit.db import Database
    from wallet_api.models import Wallet

    key_a, key_b, key_c = (SecretBox.generate_key() for _ in range(3))
    b64 = lambda k: base64.urlsafe_b64encode(k).decode()  # noqa: E731
    settings_a = WalletSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", data_dir=tmp_path,
                                master_key=b64(key_a))

    async def scenario() -> None:
        configured, _ = await provision_demo(settings_a, issuer_anchor_pems=[], rp_anchor_pems=[],
                                             idp_url="http://127.0.0.1:1")
        db = Database(configured.database_url)
        ctx = WalletContext(settings=configured, db=db, vault=Vault(master_box(configured)))
        async with db.session() as session:
            wallet = await ensure_wallet(ctx, session, Identity("valid", "11111111H", "A", "", "idcatmobil", "high"))
            wallet_id, profile = wallet.id, wallet.profile
        await db.dispose()
        on_b = configured.model_copy(update={"master_key": SecretStr(b64(key_b)),
                                             "previous_master_keys": [SecretStr(b64(key_a))]})
        assert await rotate_master_key(on_b, key_c) == 2
        only_c = configured.model_copy(update={"master_key": SecretStr(b64(key_c)), "previous_master_keys": []})
        db = Database(only_c.database_url)
        try:
            async with db.read_session() as session:
                row = await session.get(Wallet, wallet_id)
                assert row is not None
                assert Vault(master_box(only_c)).data_key(row).open("profile", wallet_id, profile)["name"] == "A"
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_the_token_key_is_made_once_and_survives_a_master_key_rotation(tmp_path: Path) -> None:
    """Login secrets are stored as HMACs under the token key: a rotation rewraps it (sessions live on),
    and a vault holding only the new master key computes the same HMACs."""
    from pydantic import SecretStr

    from service_kit.db import Database
    from wallet_api.vault import token_mac

    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    settings = WalletSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", data_dir=tmp_path,
                              master_key=base64.urlsafe_b64encode(old).decode())

    async def scenario() -> None:
        configured, _ = await provision_demo(settings, issuer_anchor_pems=[], rp_anchor_pems=[],
                                             idp_url="http://127.0.0.1:1")
        db = Database(configured.database_url)
        try:
            key = await Vault(master_box(configured)).token_key(db)
            assert await Vault(master_box(configured)).token_key(db) == key  # another worker: the same key
        finally:
            await db.dispose()
        assert len(key) == 32 and token_mac(key, "access", "t") != token_mac(key, "refresh", "t")
        assert await rotate_master_key(configured, new) == 2  # the index key and the token key
        fresh = configured.model_copy(update={"master_key": SecretStr(base64.urlsafe_b64encode(new).decode())})
        db = Database(fresh.database_url)
        try:
            assert await Vault(master_box(fresh)).token_key(db) == key
        finally:
            await db.dispose()

    asyncio.run(scenario())
