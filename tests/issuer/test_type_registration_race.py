"""The same type registration sent twice at once is answered as when sent twice in a row.

``register_type`` looked for the version, then inserted it: two identical registrations at once both
found nothing, and the second's INSERT failed on the unique (tenant, type, version) key: a 500 instead
of the idempotent success (or, for another definition of that version, the 409 ``version_exists``).
Registrations of one tenant now take turns on the tenant's row, and a unique violation still met (a row
stored by something that did not wait) is answered from the row stored.

The interleavings are forced with a second connection: holding the tenant's row lock until every
registration waits, or inserting the same version itself, uncommitted, until the registration waits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select

from credential_schemas import load_type
from issuer.models import CredentialTypeRow
from issuer.registry import builtin_definition
from tests.issuer.races import issuer_settings, pg_dsn, running_issuer, until_waiting
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.anyio

AT_ONCE = 5


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


async def _tenant(client: httpx.AsyncClient, settings: Any) -> tuple[str, dict[str, str]]:
    r = await client.post("/v1/tenants", json={"slug": "registering", "name": "Registering"},
                          headers={"Authorization": f"Bearer {settings.admin_api_key.get_secret_value()}"})
    assert r.status_code == 201, r.text
    return r.json()["tenant_id"], {"Authorization": f"Bearer {r.json()['api_key']}"}


async def _versions(ctx: Any) -> int:
    async with ctx.db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(CredentialTypeRow)))


async def test_identical_registrations_at_once_all_succeed_with_one_version(pg_url: str, tmp_path: Path) -> None:
    settings = issuer_settings(pg_url, tmp_path)
    async with running_issuer(settings) as (ctx, client):
        tenant_id, headers = await _tenant(client, settings)
        holder = await asyncpg.connect(pg_dsn(pg_url))
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
            sent = [asyncio.create_task(client.post("/v1/types", json={"builtin": "padro"}, headers=headers))
                    for _ in range(AT_ONCE)]
            await until_waiting(holder, AT_ONCE)
            await lock.commit()
            answers = await asyncio.gather(*sent)
        finally:
            await holder.close()
        assert [a.status_code for a in answers] == [201] * AT_ONCE, [a.text for a in answers]
        assert {(a.json()["id"], a.json()["version"]) for a in answers} == {("padro", "1.0")}
        assert await _versions(ctx) == 1


@pytest.mark.parametrize("same", [True, False], ids=["same-definition", "other-definition"])
async def test_a_version_stored_meanwhile_is_answered_from_the_stored_row(
        pg_url: str, tmp_path: Path, same: bool) -> None:
    settings = issuer_settings(pg_url, tmp_path)
    ctype = load_type(builtin_definition("padro"))
    stored = ctype.definition if same else {**ctype.definition, "name": "Another padró"}
    async with running_issuer(settings) as (ctx, client):
        tenant_id, headers = await _tenant(client, settings)
        other = await asyncpg.connect(pg_dsn(pg_url))
        try:
            inserting = other.transaction()
            await inserting.start()
            await other.execute(
                "INSERT INTO credential_types (tenant_id, type_id, version, vct, definition, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6)", tenant_id, ctype.id, ctype.version, ctype.vct, json.dumps(stored),
                dt.datetime.now(dt.UTC))
            sent = asyncio.create_task(client.post("/v1/types", json={"builtin": "padro"}, headers=headers))
            await until_waiting(other, 1)  # its INSERT waits for ours, on the unique key
            await inserting.commit()
            answer = await sent
        finally:
            await other.close()
        if same:
            assert answer.status_code == 201, answer.text
            assert (answer.json()["id"], answer.json()["version"]) == ("padro", "1.0")
        else:
            assert answer.status_code == 409 and answer.json()["error"] == "version_exists", answer.text
        assert await _versions(ctx) == 1
