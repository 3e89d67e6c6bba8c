"""A tenant key generated in the PKCS#11 token whose row is then not stored is deleted from the token
again, not left orphaned in the HSM: when storing the row fails (a rotation whose insert the database
refuses) and when the transaction that stored it fails to commit (a tenant creation). A key the database
did store stays, and keys registered by label are never touched.

Real servers on loopback: the SoftHSM2-backed issuer on SQLite, and one on PostgreSQL with its tenant keys
in the same token; the failures are the databases' own (a trigger refusing the row, a deferred constraint
trigger refusing the commit), nothing in the issuer is replaced.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from service_kit.pkcs11 import Token
from tests.hsm.conftest import SoftHSM, hsm_issuer, hsm_settings, softhsm, token  # noqa: F401 - fixtures used by name
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv, Sandbox, make_settings, start_issuer
from tests.support.postgres import PostgresCluster
from tests.support.servers import free_port

PLATFORM = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _token_labels(hsm: Token, slug: str) -> list[str]:
    return sorted(info.label for info in hsm.list_keys() if info.label.startswith(f"cartera-{slug}-"))


def _create(env: IssuerEnv, slug: str) -> httpx.Response:
    return httpx.post(f"{env.url}/v1/tenants", json={"slug": slug, "name": "Orphan check"}, headers=PLATFORM, timeout=30)


def _keys(env: IssuerEnv, api_key: str) -> list[dict]:
    response = httpx.get(f"{env.url}/v1/keys", headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_rotation_whose_key_row_is_refused_leaves_no_key_in_the_token(hsm_issuer: IssuerEnv,  # noqa: F811
                                                                         token: Token) -> None:  # noqa: F811
    slug = "orphan-" + secrets.token_hex(4)
    created = _create(hsm_issuer, slug)
    assert created.status_code == 201, created.text
    tenant_id, api_key = created.json()["tenant_id"], created.json()["api_key"]
    [first] = _keys(hsm_issuer, api_key)
    assert _token_labels(token, slug) == [first["token_key"]["label"]]
    database = hsm_issuer.settings.database_url.split("///", 1)[1]
    trigger = f"refuse_key_{secrets.token_hex(4)}"
    with sqlite3.connect(database) as db:
        db.execute(f"CREATE TRIGGER {trigger} BEFORE INSERT ON signing_keys WHEN NEW.tenant_id = '{tenant_id}' "
                   "BEGIN SELECT RAISE(ABORT, 'the disk is full (test)'); END")
    try:
        refused = httpx.post(f"{hsm_issuer.url}/v1/keys/rotate", json={"backend": "pkcs11"},
                             headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    finally:
        with sqlite3.connect(database) as db:
            db.execute(f"DROP TRIGGER {trigger}")
    assert refused.status_code >= 400, refused.text
    # The key generated for the refused row is gone; the tenant's stored key is still there, and active.
    assert _token_labels(token, slug) == [first["token_key"]["label"]]
    assert [(k["kid"], k["active"]) for k in _keys(hsm_issuer, api_key)] == [(first["kid"], True)]
    # And a rotation that can be stored keeps its key.
    rotated = httpx.post(f"{hsm_issuer.url}/v1/keys/rotate", json={"backend": "pkcs11"},
                         headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    assert rotated.status_code == 201, rotated.text
    assert _token_labels(token, slug) == sorted([first["token_key"]["label"], rotated.json()["token_key"]["label"]])


@pytest.fixture(scope="module")
def pg_hsm_issuer(sandbox: Sandbox, softhsm: SoftHSM, token: Token,  # noqa: F811
                  postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    """An issuer on PostgreSQL, its CA configured and its tenant keys generated in the test token."""
    folder: Path = tmp_path_factory.mktemp("issuer-pg-hsm")
    url = postgres_cluster.create_database()
    base = make_settings(sandbox, url, free_port(), folder, folder)
    yield from start_issuer(sandbox, hsm_settings(base, softhsm))


async def _sql(env: IssuerEnv, statement: str) -> None:
    conn = await asyncpg.connect(str(env.settings.database_url).replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def test_a_tenant_whose_transaction_fails_to_commit_leaves_no_key_in_the_token(pg_hsm_issuer: IssuerEnv,
                                                                                token: Token) -> None:  # noqa: F811
    slug = "orphan-pg-" + secrets.token_hex(4)
    name = f"refuse_{secrets.token_hex(4)}"
    # Checked at COMMIT, after the key's row was inserted and create_key had returned it.
    asyncio.run(_sql(pg_hsm_issuer, f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.slug = '{slug}' THEN RAISE EXCEPTION 'the commit is refused (test)'; END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON tenants DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION {name}();"""))
    try:
        refused = _create(pg_hsm_issuer, slug)
    finally:
        asyncio.run(_sql(pg_hsm_issuer, f"DROP TRIGGER {name} ON tenants; DROP FUNCTION {name}();"))
    assert refused.status_code >= 500, refused.text
    assert _token_labels(token, slug) == []
    # Created again, now stored: its key stays.
    created = _create(pg_hsm_issuer, slug)
    assert created.status_code == 201, created.text
    [key] = _keys(pg_hsm_issuer, created.json()["api_key"])
    assert _token_labels(token, slug) == [key["token_key"]["label"]]
