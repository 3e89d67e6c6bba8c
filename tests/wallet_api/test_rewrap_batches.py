"""A master-key rotation reads and writes the keys it rewraps in bounded batches, each committed.

``rewrap_all`` read every ``service_keys`` row in one query (a pass's left-over records make that table
grow with the wallets), then paged the wallets but in the same single transaction: a rotation held
all the service keys at once, held SQLite's only write lock (or a long PostgreSQL transaction) from
its first rewrapped row to its last, and when it stopped on the way (a row that does not open, the
process killed, the database gone) it kept nothing of what it had done. Now both tables are read
``REWRAP_BATCH`` (200) rows at a time, each batch written in a transaction of its own, and a run again
goes on where the last one stopped.

The real command path (``wallet_api.provisioning.rotate_master_key``, what ``cartera wallet
rotate-master-key`` runs) on a real SQLite database. What it sends is seen through SQLAlchemy's
engine events (the statements and commits on its database), so the bound is counted on the SQL itself:
every read of either table asks for at most 200 rows.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine

from service_kit.crypto import SecretBox, SecretBoxError
from service_kit.db import Database
from wallet_api.context import master_box
from wallet_api.models import ServiceKey, Wallet
from wallet_api.provisioning import provision_demo, rotate_master_key
from wallet_api.settings import WalletSettings
from wallet_api.vault import REWRAP_BATCH, Vault, service_key_aad

SERVICE_ROWS = 1_050  # the seeded service keys (and the index key the provisioning made)
WALLETS = 430


def _b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


class Statements:
    """Every statement run on the test's database, with its parameters, and every commit."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.commits = 0

    def reads_of(self, table: str) -> list[tuple[str, Any]]:
        return [(sql, params) for sql, params in self.sent
                if sql.lstrip().upper().startswith("SELECT") and re.search(rf"\bFROM {table}\b", sql)]

    def writes_of(self, table: str) -> int:
        return sum(1 for sql, _ in self.sent if sql.lstrip().upper().startswith(f"UPDATE {table.upper()}"))


@pytest.fixture
def statements(tmp_path: Path) -> Iterator[Statements]:
    """The statements and commits on this test's database only: other tests' servers may run in the same
    process (an xdist worker) and commit meanwhile."""
    seen = Statements()
    ours = str(tmp_path / "w.db")

    def sent(conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if conn.engine.url.database == ours:
            seen.sent.append((statement, parameters))

    def committed(conn: Any) -> None:
        if conn.engine.url.database == ours:
            seen.commits += 1

    event.listen(Engine, "before_cursor_execute", sent)
    event.listen(Engine, "commit", committed)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", sent)
        event.remove(Engine, "commit", committed)


async def _provisioned(tmp_path: Path, old: bytes) -> WalletSettings:
    """A wallet database with SERVICE_ROWS service keys (named as a pass's left-over records are) and
    WALLETS wallets, every one sealed under ``old``."""
    settings = WalletSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", data_dir=tmp_path,
                              master_key=_b64(old))
    configured, _ = await provision_demo(settings, issuer_anchor_pems=[], rp_anchor_pems=[],
                                         idp_url="http://127.0.0.1:1")
    vault = Vault(master_box(configured))
    db = Database(configured.database_url)
    try:
        async with db.session() as session:
            for n in range(SERVICE_ROWS - 1):
                name = f"left/test/row{n:05d}"
                session.add(ServiceKey(name=name, sealed=vault.box.seal(b"%05d" % n, service_key_aad(name))))
            for n in range(WALLETS):
                wallet_id = f"wal_test{n:05d}"
                sealed, _key = vault.new_data_key(wallet_id)
                session.add(Wallet(id=wallet_id, subject_index=f"{n:064d}", data_key=sealed, profile=b"x"))
    finally:
        await db.dispose()
    return configured


async def _under(settings: WalletSettings) -> dict[str, set[str]]:
    """Which rows open under which key: ``{"service:<key id>": names, "wallet:<key id>": ids}``."""
    db = Database(settings.database_url)
    box = master_box(settings)
    found: dict[str, set[str]] = {}
    try:
        async with db.read_session() as session:
            for name, sealed in (await session.execute(select(ServiceKey.name, ServiceKey.sealed))).all():
                box.open(sealed, service_key_aad(name))  # nothing lost: every row opens
                found.setdefault(f"service:{box.key_id_of(sealed)}", set()).add(name)
            for wallet_id, sealed in (await session.execute(select(Wallet.id, Wallet.data_key))).all():
                box.open(sealed, f"cartera-wallet|{wallet_id}|data-key".encode())
                found.setdefault(f"wallet:{box.key_id_of(sealed)}", set()).add(wallet_id)
    finally:
        await db.dispose()
    return found


def test_a_rotation_reads_and_writes_at_most_a_batch_at_a_time(tmp_path: Path, statements: Statements) -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()

    async def scenario() -> None:
        configured = await _provisioned(tmp_path, old)
        statements.sent.clear()
        statements.commits = 0
        assert await rotate_master_key(configured, new) == SERVICE_ROWS + WALLETS

        for table, rows in (("service_keys", SERVICE_ROWS), ("wallets", WALLETS)):
            reads = statements.reads_of(table)
            # Every read asks for a batch: LIMIT 200, never the whole table.
            assert reads and all(re.search(r"\bLIMIT\b", sql) for sql, _ in reads), reads
            assert all(REWRAP_BATCH in (params if isinstance(params, tuple | list) else tuple(params.values()))
                       for _, params in reads), reads
            assert len(reads) == rows // REWRAP_BATCH + 1
            assert statements.writes_of(table) == rows
        # One transaction per batch: six of service keys, three of wallets (and none more).
        assert statements.commits == SERVICE_ROWS // REWRAP_BATCH + 1 + WALLETS // REWRAP_BATCH + 1

        only_new = configured.model_copy(update={"master_key": SecretStr(_b64(new)), "previous_master_keys": []})
        under = await _under(only_new)
        new_id = SecretBox(new).key_id
        assert {k: len(v) for k, v in under.items()} == {f"service:{new_id}": SERVICE_ROWS, f"wallet:{new_id}": WALLETS}
        assert await rotate_master_key(configured, new) == 0

    asyncio.run(scenario())


def test_a_rotation_stopped_midway_keeps_what_it_did_and_goes_on_from_there(tmp_path: Path) -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    damaged = "left/test/row00700"  # in the fourth batch of service keys

    async def scenario() -> None:
        configured = await _provisioned(tmp_path, old)
        db = Database(configured.database_url)
        try:
            async with db.session() as session:
                original = (await session.execute(select(ServiceKey.sealed).where(ServiceKey.name == damaged))
                            ).scalar_one()
                await session.execute(update(ServiceKey).where(ServiceKey.name == damaged)
                                      .values(sealed=original[:-1] + bytes([original[-1] ^ 1])))
        finally:
            await db.dispose()

        with pytest.raises(SecretBoxError) as stopped:
            await rotate_master_key(configured, new)

        # Repaired, every row opens under the old key or the new one: the rows before the damaged one
        # were rewrapped and kept, the others left as they were.
        db = Database(configured.database_url)
        try:
            async with db.session() as session:
                await session.execute(update(ServiceKey).where(ServiceKey.name == damaged).values(sealed=original))
        finally:
            await db.dispose()
        both = configured.model_copy(update={"master_key": SecretStr(_b64(new)),
                                             "previous_master_keys": [SecretStr(_b64(old))]})
        under = await _under(both)
        old_id, new_id = SecretBox(old).key_id, SecretBox(new).key_id
        done = under[f"service:{new_id}"]
        assert len(done) == 700 and max(done) < damaged == min(under[f"service:{old_id}"])
        assert f"wallet:{new_id}" not in under and len(under[f"wallet:{old_id}"]) == WALLETS
        # The operator is told which row stopped it (its name only) and that what was done is kept.
        assert damaged in stopped.value.detail and "700 key(s) rewrapped" in stopped.value.detail
        assert "secretbox.decrypt_failed" in stopped.value.detail

        # Run again: it takes the rows already under the new key for done, and rewraps only the others.
        assert await rotate_master_key(configured, new) == SERVICE_ROWS - 700 + WALLETS
        assert await rotate_master_key(configured, new) == 0
        under = await _under(both)
        assert set(under) == {f"service:{new_id}", f"wallet:{new_id}"}

    asyncio.run(scenario())
