"""A credential copy is sealed to its credential: moved onto another credential, it does not open.

Copies were sealed under their own id only, and ``credential_copies.credential_id`` is a clear column:
a database writer could point a copy of one credential at another credential of the same wallet and
the wallet showed and presented the first one's claims under the second one's type, issuer and status.
Now the copy's associated data names its credential; the credential it was moved to is listed
``unreadable`` (never a failed list), showing it is the documented 500, and presenting it is refused
with nothing sent. Copies written by earlier versions are sealed again, bound to their credential, at
the first start-up, in the background (and never after: one sealed the old way later does not open).

Real issuer, verifier and wallet over HTTP, on SQLite and on PostgreSQL (the move done by SQL on the
running wallet's database); the upgrade with in-process wallets on both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from sandbox.population import generate_population
from service_kit.db import Database
from service_kit.migrations import run_migrations
from ssi.jose import Key
from tests.support.postgres import PostgresCluster
from tests.support.servers import free_port
from tests.wallet_api.conftest import bearer, login, wallet_settings
from tests.wallet_api.system import System, agency_request, open_presentation, running_pg_system
from tests.wallet_api.test_e2e import make_offer, receive
from tests.wallet_api.test_pin_erased import _insert_wallets
from wallet_api.app import MIGRATIONS, create_app
from wallet_api.context import master_box
from wallet_api.models import CredentialCopy, ServiceKey
from wallet_api.store import load_credentials
from wallet_api.vault import DataKey, Vault, VaultError

#: A citizen with tax and padró records that no other test of these systems logs in.
CITIZEN = generate_population(size=50).citizens[18].identifier
UNREADABLE = {"error": "server_error", "error_description": "stored data of this wallet could not be opened"}
PASSPHRASE = "correct horse battery"


@pytest.fixture(scope="module")
def pg_system(postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_pg_system(postgres_cluster, tmp_path_factory.mktemp("pg-copy-binding")) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def any_system(request: pytest.FixtureRequest) -> System:
    return request.getfixturevalue("system" if request.param == "sqlite" else "pg_system")


def _sql(system: System, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """One SQL statement on the running wallet's own database (SQLite file or PostgreSQL), committed."""
    async def run() -> list[tuple[Any, ...]]:
        db = Database(system.wallet_app.state.wallet.settings.database_url)
        try:
            async with db.session() as session:
                result = await session.execute(text(statement), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            await db.dispose()

    return asyncio.run(run())


def _listed(system: System, tokens: dict[str, str]) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return {c["id"]: c for c in r.json()}


def _verifier_status(system: System, request: dict[str, Any], agency: str = "ajuntament-barcelona") -> str:
    return httpx.get(request["status_url"], headers=system.verifier_headers(agency), timeout=30).json()["status"]


def test_a_copy_moved_to_another_credential_does_not_open(
        any_system: System, caplog: pytest.LogCaptureFixture) -> None:
    system = any_system
    tokens = login(system.wallet, CITIZEN)
    # A fresh wallet per run: this citizen's earlier credentials (another backend's run) out of the way.
    for old in _listed(system, tokens):
        assert httpx.delete(f"{system.wallet}/v1/credentials/{old}", headers=bearer(tokens)).status_code == 204
    padro = receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", CITIZEN))["credential_ids"][0]
    tax = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", CITIZEN))["credential_ids"][0]
    before = _listed(system, tokens)
    assert not any(c.get("unreadable") for c in before.values()) and before[padro]["copies"] >= 2
    # A grant application (it asks for the tax certificate) previewed before the database is touched.
    early_request = agency_request(system)
    early = open_presentation(system, tokens, early_request)
    assert early["satisfiable"] and early["queries"][0]["options"][0]["credential_id"] == tax

    # The writer points the padró's first copy at the tax certificate.
    [(moved,)] = _sql(system, "SELECT id FROM credential_copies WHERE credential_id = :c AND position = 0", c=padro)
    _sql(system, "UPDATE credential_copies SET credential_id = :to WHERE id = :id", to=tax, id=moved)

    # The list answers; the tax certificate is flagged, the padró (its other copies) still reads.
    with caplog.at_level(logging.ERROR, logger="wallet_api.store"):
        after = _listed(system, tokens)
    assert after[tax]["unreadable"] is True, after[tax]
    assert {k: after[tax][k] for k in ("vct", "issuer", "status")} == {k: before[tax][k] for k in ("vct", "issuer", "status")}
    assert not after[padro].get("unreadable") and after[padro]["copies"] == before[padro]["copies"] - 1
    logged = [r for r in caplog.records if r.name == "wallet_api.store" and getattr(r, "credential", None) == tax]
    assert logged and logged[0].code == "vault.decrypt_failed"  # type: ignore[attr-defined]
    assert CITIZEN not in logged[0].getMessage()
    shown = httpx.get(f"{system.wallet}/v1/credentials/{tax}", headers=bearer(tokens), timeout=30)
    assert shown.status_code == 500 and shown.json() == UNREADABLE, shown.text

    # Presenting it: a new request finds nothing to answer with and cannot be approved ...
    request = agency_request(system)
    preview = open_presentation(system, tokens, request)
    assert preview["satisfiable"] is False
    approved = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                          headers=bearer(tokens), timeout=30)
    assert approved.status_code == 400 and approved.json()["error"] == "unsatisfiable", approved.text
    # ... and the one previewed before is refused (409 credential_unreadable: choose another or
    # decline), nothing sent; it can still be declined.
    approved = httpx.post(f"{system.wallet}/v1/presentations/{early['presentation_id']}/approve", json={},
                          headers=bearer(tokens), timeout=30)
    assert approved.status_code == 409 and approved.json()["error"] == "credential_unreadable", approved.text
    assert _verifier_status(system, early_request) == "pending"
    declined = httpx.post(f"{system.wallet}/v1/presentations/{early['presentation_id']}/decline",
                          headers=bearer(tokens), timeout=30)
    assert declined.status_code == 200 and declined.json()["state"] == "declined", declined.text

    # Put back where it belongs, the copy opens again: nothing but the move made it fail.
    _sql(system, "UPDATE credential_copies SET credential_id = :to WHERE id = :id", to=padro, id=moved)
    back = _listed(system, tokens)
    assert not any(c.get("unreadable") for c in back.values())
    assert {cid: c["copies"] for cid, c in back.items()} == {cid: c["copies"] for cid, c in before.items()}

    # A backup round trip stores the copies bound to their new credentials, and they present.
    backup = httpx.post(f"{system.wallet}/v1/backup/export", json={"passphrase": PASSPHRASE}, headers=bearer(tokens),
                        timeout=30)
    assert backup.status_code == 200, backup.text
    for cid in (padro, tax):
        assert httpx.delete(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).status_code == 204
    imported = httpx.post(f"{system.wallet}/v1/backup/import", json={"passphrase": PASSPHRASE, "backup": backup.json()},
                          headers=bearer(tokens), timeout=60)
    assert imported.status_code == 200 and imported.json()["credentials_added"] == 2, imported.text
    restored = _listed(system, tokens)
    assert len(restored) == 2 and not any(c.get("unreadable") for c in restored.values())
    assert sorted(c["copies"] for c in restored.values()) == sorted(c["copies"] for c in before.values())
    request = agency_request(system)
    preview = open_presentation(system, tokens, request)
    assert preview["satisfiable"]
    sent = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                      headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    deadline = time.monotonic() + 10
    while _verifier_status(system, request) == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _verifier_status(system, request) == "verified"


# --- the upgrade -----------------------------------------------------------------------------------------

def _legacy_copy(key: DataKey, copy_id: str, value: dict[str, Any]) -> bytes:
    """A copy sealed as earlier versions did: under its own id only."""
    return key.seal("copy", copy_id, value)


async def _insert_credential(database_url: str, key: DataKey, credential_id: str,
                             copies: list[tuple[str, int, bytes]]) -> None:
    """A credential row and its copies ``(id, position, sealed)`` as an earlier version stored them."""
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.execute(text(
                "INSERT INTO credentials (id, wallet_id, vct, issuer, sealed, status, expiry_alerted, created_at) "
                "VALUES (:id, :wallet, 'urn:vct:test', 'https://issuer.test', :sealed, 'revoked', false, "
                "CURRENT_TIMESTAMP)"),
                {"id": credential_id, "wallet": key.wallet_id, "sealed": key.seal("credential", credential_id, {})})
            for copy_id, position, sealed in copies:
                await session.execute(text(
                    "INSERT INTO credential_copies (id, credential_id, wallet_id, position, uses, sealed) "
                    "VALUES (:id, :cred, :wallet, :position, 0, :sealed)"),
                    {"id": copy_id, "cred": credential_id, "wallet": key.wallet_id, "position": position,
                     "sealed": sealed})
    finally:
        await db.dispose()


async def _opened(db: Database, key: DataKey) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The wallet's credentials as the routes read them: ``({id: [copy token and key]}, [unreadable ids])``."""
    broken: list[Any] = []
    async with db.read_session() as session:
        found = await load_credentials(session, key, unreadable=broken)
    return ({c.id: [{"id": cp.id, "token": cp.token, "holder_jwk": cp.holder_key.private_jwk()} for cp in c.copies]
             for c in found}, [row.id for row in broken])


@pytest.mark.anyio
async def test_copies_of_an_earlier_version_are_bound_to_their_credential_at_the_first_start_up(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from wallet_api.store import COPIES_BOUND_MARKER, bind_legacy_copies

    settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", database_url=database_url)
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    vault = Vault(master_box(settings))
    sealed_key, key = vault.new_data_key("w-earlier")
    await _insert_wallets(database_url, [{"id": "w-earlier", "key": sealed_key, "pin": None,
                                          "profile": key.seal("profile", "w-earlier", {"identifier": "x"})}])
    values = {f"copy-{n}": {"token": f"token-{n}", "holder_jwk": Key.generate("ES256").private_jwk()} for n in range(4)}
    await _insert_credential(database_url, key, "cred-a", [("copy-0", 0, _legacy_copy(key, "copy-0", values["copy-0"])),
                                                           ("copy-1", 1, _legacy_copy(key, "copy-1", values["copy-1"]))])
    # A copy that opens no way at all (corrupted): logged and left, the start-up goes on.
    await _insert_credential(database_url, key, "cred-b", [("copy-2", 0, _legacy_copy(key, "copy-2", values["copy-2"])),
                                                           ("copy-3", 1, b"not sealed")])

    app = create_app(settings, run_background=False)
    with caplog.at_level(logging.ERROR, logger="wallet_api.store"):
        async with app.router.lifespan_context(app):
            assert (await app.state.copy_binding).outcome == "completed"  # the pass runs in the background
            db = app.state.wallet.db
            opened, broken = await _opened(db, key)
            # The earlier version's copies open, the same tokens and keys, in order.
            assert opened == {"cred-a": [{"id": f"copy-{n}", **values[f"copy-{n}"]} for n in (0, 1)]}
            assert broken == ["cred-b"]
            async with db.read_session() as session:
                assert await session.get(ServiceKey, COPIES_BOUND_MARKER) is not None
                stored = dict((await session.execute(select(CredentialCopy.id, CredentialCopy.sealed))).all())
            # Sealed again, bound: the old way no longer opens them.
            for copy_id in ("copy-0", "copy-1", "copy-2"):
                with pytest.raises(VaultError):
                    key.open("copy", copy_id, stored[copy_id])
    left = [r for r in caplog.records if getattr(r, "copy", None) == "copy-3"]
    assert left and left[0].code == "vault.bad_format" and left[0].wallet == "w-earlier"  # type: ignore[attr-defined]

    # Moved after the upgrade, a bound copy does not open under its new credential.
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.execute(text("UPDATE credential_copies SET credential_id = 'cred-b' WHERE id = 'copy-1'"))
        opened, broken = await _opened(db, key)
        assert list(opened) == ["cred-a"] and [c["id"] for c in opened["cred-a"]] == ["copy-0"]
        assert broken == ["cred-b"]
        async with db.session() as session:
            await session.execute(text("UPDATE credential_copies SET credential_id = 'cred-a' WHERE id = 'copy-1'"))
    finally:
        await db.dispose()

    # The pass ran once: a copy sealed the old way that reaches the database later is not bound, and
    # does not open (a worker of an earlier version, or an old row put back under another credential).
    await _insert_credential(database_url, key, "cred-c", [("copy-4", 0, _legacy_copy(key, "copy-4", values["copy-0"]))])
    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        assert app.state.copy_binding is None and app.state.wallet.vault.legacy_copies is False
        assert (await bind_legacy_copies(app.state.wallet.db, app.state.wallet.vault)).outcome == "bound"
        opened, broken = await _opened(app.state.wallet.db, key)
        assert list(opened) == ["cred-a"] and sorted(broken) == ["cred-b", "cred-c"]
