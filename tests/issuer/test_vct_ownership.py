"""A ``vct`` belongs to one tenant of the issuer: the first that registered it.

Every tenant's signing key is certified by the same issuers CA, and verifiers trust issuers per
``vct``: a town council registering the tax agency's ``vct`` (the built-in tax-compliance type, on
the shared ``types.cartera.example`` host) issued "POSITIVE" tax certificates that a rule trusting
the CA took for the tax agency's. Registration now refuses a ``vct`` another tenant registered (409
``vct_taken``), two tenants registering one at once included (the primary key of ``vct_owners``
decides), and the migration gives each ``vct`` already stored to its first tenant.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import column, func, insert, select, table
from sqlalchemy.exc import IntegrityError

from issuer.models import CredentialTypeRow, Tenant
from issuer.registry import RegistryError, builtin_definition, register_type
from issuer.tenancy import TenantRef
from service_kit.db import Database
from service_kit.migrations import run_migrations
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS
from tests.issuer.races import issuer_settings, pg_dsn, running_issuer, until_waiting
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.anyio

MIGRATIONS = Path(__file__).resolve().parents[2] / "issuer" / "migrations"
TAX_VCT = "https://types.cartera.example/tax-compliance/v1"
#: The table as the migration makes it (not the model: the tests run against earlier code too).
VCT_OWNERS = table("vct_owners", column("vct"), column("tenant_id"), column("created_at"))


def _definition(type_id: str, vct: str, version: str = "1") -> dict[str, Any]:
    labels = [{"locale": loc, "label": "Name"} for loc in ("ca", "es", "en")]
    return {"id": type_id, "version": version, "vct": vct, "name": "T",
            "display": [{"locale": loc, "name": "T"} for loc in ("ca", "es", "en")], "validity": "P1Y",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
            "claims": [{"path": ["name"], "display": labels, "source": "subject.name"}]}


def _assert_taken(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "vct_taken" and "another tenant" in body["error_description"], body
    assert [p["path"] for p in body["problems"]] == ["vct"]


async def test_a_tenant_cannot_register_a_vct_another_tenant_registered(issuer_env: IssuerEnv) -> None:
    girona, uni = issuer_env.headers("ajuntament-girona"), issuer_env.headers("uni-barcelona")
    types = f"{issuer_env.url}/v1/types"
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        # The reviewer's attack: the town council takes the tax agency's built-in type, as is or renamed.
        _assert_taken(await http.post(types, json={"builtin": "tax-compliance"}, headers=girona))
        renamed = {**builtin_definition("tax-compliance"), "id": "girona-tax"}
        refused = await http.post(types, json={"definition": renamed}, headers=girona)
        _assert_taken(refused)
        assert f"{issuer_env.issuer('ajuntament-girona')}/types/girona-tax" in refused.json()["error_description"]
        listed = await http.get(types, headers=girona)
        assert TAX_VCT not in {t["vct"] for t in listed.json()}
        # The owner registers it again (the same answer as before) and new versions of its own types.
        assert (await http.post(types, json={"builtin": "tax-compliance"},
                                headers=issuer_env.headers("aoc-tax"))).status_code == 201
        vct = f"https://types.example.org/owned-{secrets.token_hex(4)}/v1"
        assert (await http.post(types, json={"definition": _definition("owned", vct)}, headers=uni)).status_code == 201
        _assert_taken(await http.post(types, json={"definition": _definition("owned", vct)}, headers=girona))
        _assert_taken(await http.post(types, json={"definition": _definition("owned", vct, "2")}, headers=girona))
        assert (await http.post(types, json={"definition": _definition("owned", vct, "2")},
                                headers=uni)).status_code == 201
        # Another type of the owner under the same vct and Type Metadata: still one tenant's vct.
        assert (await http.post(types, json={"definition": _definition("owned-copy", vct)},
                                headers=uni)).status_code == 201


async def test_the_refusal_is_in_the_openapi_document(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        doc = (await http.get(f"{issuer_env.url}/openapi.json")).json()
    responses = doc["paths"]["/v1/types"]["post"]["responses"]
    conflict = responses["409"]["content"]["application/json"]["schema"]
    assert "vct_taken" in conflict["properties"]["error"]["enum"]
    assert set(conflict["required"]) == {"error", "error_description"}
    assert "vct_taken" in responses["409"]["description"]


# -- two tenants at once, on PostgreSQL -----------------------------------------------------------

@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


async def _tenant(client: httpx.AsyncClient, settings: Any, slug: str) -> tuple[str, dict[str, str]]:
    r = await client.post("/v1/tenants", json={"slug": slug, "name": slug},
                          headers={"Authorization": f"Bearer {settings.admin_api_key.get_secret_value()}"})
    assert r.status_code == 201, r.text
    return r.json()["tenant_id"], {"Authorization": f"Bearer {r.json()['api_key']}"}


async def _stored(ctx: Any, vct: str) -> tuple[list[str], set[str]]:
    """(owners of ``vct``, tenants with a type under it)."""
    async with ctx.db.read_session() as session:
        owners = (await session.execute(select(VCT_OWNERS.c.tenant_id).where(VCT_OWNERS.c.vct == vct))).scalars().all()
        registered = (await session.execute(select(CredentialTypeRow.tenant_id)
                                            .where(CredentialTypeRow.vct == vct))).scalars().all()
    return list(owners), set(registered)


async def test_two_tenants_registering_one_vct_at_once_leave_it_to_one(pg_url: str, tmp_path: Path) -> None:
    settings = issuer_settings(pg_url, tmp_path)
    async with running_issuer(settings) as (ctx, client):
        (a_id, a), (b_id, b) = await _tenant(client, settings, "tenant-a"), await _tenant(client, settings, "tenant-b")
        holder = await asyncpg.connect(pg_dsn(pg_url))
        try:
            # Both registrations wait on their own tenant's row, then go on together: each finds the
            # vct free before either has stored it.
            lock = holder.transaction()
            await lock.start()
            await holder.execute("SELECT 1 FROM tenants WHERE id = ANY($1::text[]) FOR UPDATE", [a_id, b_id])
            sent = [asyncio.create_task(client.post("/v1/types", json={"builtin": "padro"}, headers=h))
                    for h in (a, b)]
            await until_waiting(holder, 2)
            await lock.commit()
            answers = await asyncio.gather(*sent)
        finally:
            await holder.close()
        assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
        _assert_taken(next(r for r in answers if r.status_code == 409))
        winner = a_id if answers[0].status_code == 201 else b_id
        vct = builtin_definition("padro")["vct"]
        assert await _stored(ctx, vct) == ([winner], {winner})


async def test_a_claim_another_tenant_is_committing_is_refused_once_it_commits(pg_url: str, tmp_path: Path) -> None:
    settings = issuer_settings(pg_url, tmp_path)
    vct = builtin_definition("padro")["vct"]
    async with running_issuer(settings) as (ctx, client):
        (a_id, _), (_, b) = await _tenant(client, settings, "tenant-a"), await _tenant(client, settings, "tenant-b")
        other = await asyncpg.connect(pg_dsn(pg_url))
        try:
            claiming = other.transaction()
            await claiming.start()
            await other.execute("INSERT INTO vct_owners (vct, tenant_id, created_at) VALUES ($1, $2, $3)",
                                vct, a_id, dt.datetime.now(dt.UTC))
            # Not committed yet: tenant-b's registration finds the vct free, and its INSERT waits on the key.
            sent = asyncio.create_task(client.post("/v1/types", json={"builtin": "padro"}, headers=b))
            await until_waiting(other, 1)
            await claiming.commit()
            answer = await sent
        finally:
            await other.close()
        _assert_taken(answer)
        assert await _stored(ctx, vct) == ([a_id], set())


# -- the migration --------------------------------------------------------------------------------

def _type_row(tenant_id: str, type_id: str, version: str, vct: str) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "type_id": type_id, "version": version, "vct": vct,
            "definition": _definition(type_id, vct, version), "created_at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC)}


async def test_the_migration_gives_each_stored_vct_to_its_first_tenant(database_url: str, tmp_path: Path) -> None:
    """Tenants that shared a vct before (the attack, or two tenants of the built-in types) keep their
    stored versions; the vct goes to the one that registered it first, and only it adds versions."""
    shared, own = "https://types.example.org/shared/v1", "https://types.example.org/own/v1"
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url, "0014")
    db = Database(database_url)
    try:
        async with db.session() as session:
            for tenant in ("t_z_first", "t_a_later"):
                await session.execute(insert(Tenant).values(id=tenant, slug=tenant.replace("_", "-"), name=tenant,
                                                            display=[], body_id="", created_at=dt.datetime.now(dt.UTC)))
            # One at a time: the ids (the order of registration) are the order here.
            for row in [_type_row("t_z_first", "shared", "1", shared), _type_row("t_a_later", "copy", "1", shared),
                        _type_row("t_a_later", "own", "1", own), _type_row("t_a_later", "own", "2", own),
                        _type_row("t_z_first", "shared", "2", shared)]:
                await session.execute(insert(CredentialTypeRow).values(**row))
    finally:
        await db.dispose()
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    settings = issuer_settings(database_url, tmp_path)
    async with running_issuer(settings) as (ctx, _client):
        async with ctx.db.read_session() as session:
            owners = dict((await session.execute(select(VCT_OWNERS.c.vct, VCT_OWNERS.c.tenant_id))).all())
            kept = await session.scalar(select(func.count()).select_from(CredentialTypeRow))
        assert owners == {shared: "t_z_first", own: "t_a_later"} and kept == 5
        # Named against the order of registration: the first tenant is not the first by name.
        first = TenantRef("t_z_first", "t-z-first", "t_z_first", "", [])
        later = TenantRef("t_a_later", "t-a-later", "t_a_later", "", [])
        with pytest.raises(RegistryError) as refused:
            async with ctx.session() as session:
                await register_type(ctx, session, later, _definition("copy", shared, "2"))
        assert refused.value.code == "vct_taken"
        async with ctx.session() as session:
            await register_type(ctx, session, first, _definition("shared", shared, "3"))
            await register_type(ctx, session, later, _definition("own", own, "3"))
        with pytest.raises(IntegrityError):
            async with ctx.session() as session:
                await session.execute(insert(VCT_OWNERS).values(vct=own, tenant_id="t_z_first",
                                                                created_at=dt.datetime.now(dt.UTC)))
