"""The platform admin shares a ``vct`` with other tenants: one issuer service hosting many councils.

Since a ``vct`` belongs to the tenant that registered it first (tests/issuer/test_vct_ownership.py),
an issuer service hosting every council's padró (the AOC) could let only one council issue the shared
built-in padró type, the very type an agency asks for while listing the councils it trusts. The
platform admin key, and never a tenant's key, now shares the ``vct`` with other councils, which then
register it and issue it under their own issuer identifiers; a withdrawal stops new registrations
and leaves what was issued alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy import column, delete, insert, inspect, select, table

from issuer.app import create_app
from issuer.models import CredentialTypeRow, Tenant
from issuer.provisioning import DEMO_OFFICIAL
from issuer.registry import builtin_definition
from sandbox.population import DEMO_EVERYTHING
from service_kit.db import Database
from service_kit.migrations import make_config, run_migrations
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv, Sandbox, make_settings
from tests.issuer.helpers import LIMITS, create_offer, verify_with_reference_library, verify_with_ssi
from tests.issuer.races import issuer_settings, pg_dsn, running_issuer, until_waiting
from tests.issuer.test_status_and_admin import _status
from tests.issuer.test_vct_ownership import MIGRATIONS, VCT_OWNERS, _assert_taken, _tenant
from tests.support.postgres import PostgresCluster
from tests.support.servers import free_port, serve
from tests.support.wallet_client import WalletClient

pytestmark = pytest.mark.anyio

PADRO_VCT = "https://types.cartera.example/padro/v1"
PLATFORM = {"Authorization": f"Bearer {ADMIN_KEY}"}
COUNCILS = ("ajuntament-salt", "ajuntament-olot")
VERSION = builtin_definition("padro")["version"]
#: The table as the migration makes it (not the model: the module runs against earlier code too).
VCT_SHARES = table("vct_shares", column("vct"), column("tenant_id"), column("created_at"))


@pytest.fixture
def councils(sandbox: Sandbox, tmp_path: Path) -> Iterator[IssuerEnv]:
    """An issuer of its own (real HTTP, SQLite, the sandbox's Via Oberta and CA) with two town councils
    made through the platform admin API and no type registered: nobody owns the padró vct yet."""
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", free_port(), tmp_path, tmp_path)
    with serve(create_app(settings, configure_logs=False), port=settings.port) as url:
        keys = {}
        for slug in COUNCILS:
            created = httpx.post(f"{url}/v1/tenants", json={"slug": slug, "name": slug}, headers=PLATFORM, timeout=20)
            assert created.status_code == 201, created.text
            keys[slug] = created.json()["api_key"]
        yield IssuerEnv(url, settings, keys, sandbox, {})


def _padro_source(sandbox: Sandbox) -> dict[str, Any]:
    return {"kind": "viaoberta", "endpoint": sandbox.viaoberta_url, "product": "RESIDENT",
            "signing_key_pem": sandbox.requester_key_pem.decode(), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
            "platform_certs_pem": [sandbox.platform_cert_pem.decode()], "timeout": 10, "retries": 1,
            "context": {"purpose": "Volant d'empadronament", "procedure": "PADRO-VOLANT", "consent": "Si",
                        **DEMO_OFFICIAL}}


async def _register_padro(http: httpx.AsyncClient, env: IssuerEnv, slug: str) -> dict[str, Any]:
    registered = await http.post(f"{env.url}/v1/types", json={"builtin": "padro"}, headers=env.headers(slug))
    assert registered.status_code == 201, registered.text
    source = await http.put(f"{env.url}/v1/types/padro/source", json=_padro_source(env.sandbox),
                            headers=env.headers(slug))
    assert source.status_code == 200, source.text
    return registered.json()


async def _issue_padro(http: httpx.AsyncClient, env: IssuerEnv, slug: str) -> tuple[str, str, Any]:
    """(credential id, the SD-JWT VC, the holder key) of a padró the council issued over OpenID4VCI."""
    offer = await create_offer(http, env, slug, "padro", DEMO_EVERYTHING)
    result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
    return offer["credential_ids"]["padro"], result.credentials[0], result.holder_keys[0]


def _shares(env: IssuerEnv, slug: str) -> str:
    return f"{env.url}/v1/tenants/{slug}/shared-vcts"


async def test_a_council_issues_the_padro_another_council_owns_once_the_platform_admin_shares_it(
        councils: IssuerEnv) -> None:
    salt, olot = COUNCILS
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        owned = await _register_padro(http, councils, salt)
        assert owned["vct"] == PADRO_VCT
        _assert_taken(await http.post(f"{councils.url}/v1/types", json={"builtin": "padro"},
                                      headers=councils.headers(olot)))

        shared = await http.post(_shares(councils, olot), json={"vct": PADRO_VCT}, headers=PLATFORM)
        assert shared.status_code == 201, shared.text
        assert shared.json()["vct"] == PADRO_VCT
        assert (shared.json()["tenant"], shared.json()["owner"]) == (olot, salt)
        again = await http.post(_shares(councils, olot), json={"vct": PADRO_VCT}, headers=PLATFORM)
        assert again.status_code == 200 and again.json() == shared.json()
        listed = await http.get(_shares(councils, olot), headers=PLATFORM)
        assert listed.status_code == 200 and listed.json() == [shared.json()]

        registered = await _register_padro(http, councils, olot)
        # The one type: the owner's vct and Type Metadata, so a wallet checks either council's copy.
        assert registered["vct"] == PADRO_VCT and registered["vct_integrity"] == owned["vct_integrity"]
        credential_id, credential, holder = await _issue_padro(http, councils, olot)
        record = await http.get(f"{councils.url}/v1/credentials/{credential_id}", headers=councils.headers(olot))
        # The owner keeps issuing it too.
        _, salt_credential, salt_holder = await _issue_padro(http, councils, salt)
    claims = verify_with_ssi(councils, credential, holder)
    assert claims["iss"] == councils.issuer(olot) and claims["vct"] == PADRO_VCT
    assert verify_with_reference_library(councils, credential, holder)["iss"] == councils.issuer(olot)
    assert record.status_code == 200 and record.json()["vct"] == PADRO_VCT
    assert verify_with_ssi(councils, salt_credential, salt_holder)["iss"] == councils.issuer(salt)


async def test_only_the_platform_admin_key_shares_a_vct(councils: IssuerEnv) -> None:
    """Neither the owner nor the council that wants the type can grant it, to itself or to another."""
    salt, olot = COUNCILS
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        await _register_padro(http, councils, salt)
        for key_of in (olot, salt):
            for target in (olot, salt):
                refused = await http.post(_shares(councils, target), json={"vct": PADRO_VCT},
                                          headers=councils.headers(key_of))
                assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", refused.text
            listing = await http.get(_shares(councils, olot), headers=councils.headers(key_of))
            assert listing.status_code == 401
        assert (await http.post(_shares(councils, olot), json={"vct": PADRO_VCT})).status_code == 401
        assert (await http.get(_shares(councils, olot), headers=PLATFORM)).json() == []
        _assert_taken(await http.post(f"{councils.url}/v1/types", json={"builtin": "padro"},
                                      headers=councils.headers(olot)))
        # Nor can a tenant's key withdraw a share the platform admin made.
        assert (await http.post(_shares(councils, olot), json={"vct": PADRO_VCT}, headers=PLATFORM)).status_code == 201
        withdraw = await http.delete(_shares(councils, olot), params={"vct": PADRO_VCT}, headers=councils.headers(olot))
        assert withdraw.status_code == 401
        assert len((await http.get(_shares(councils, olot), headers=PLATFORM)).json()) == 1


async def test_a_withdrawal_stops_new_registrations_and_leaves_issued_credentials_alone(councils: IssuerEnv) -> None:
    salt, olot = COUNCILS
    types = f"{councils.url}/v1/types"
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        await _register_padro(http, councils, salt)
        assert (await http.post(_shares(councils, olot), json={"vct": PADRO_VCT}, headers=PLATFORM)).status_code == 201
        await _register_padro(http, councils, olot)
        credential_id, credential, holder = await _issue_padro(http, councils, olot)

        withdrawn = await http.delete(_shares(councils, olot), params={"vct": PADRO_VCT}, headers=PLATFORM)
        assert withdrawn.status_code == 204, withdrawn.text
        assert (await http.get(_shares(councils, olot), headers=PLATFORM)).json() == []
        gone = await http.delete(_shares(councils, olot), params={"vct": PADRO_VCT}, headers=PLATFORM)
        assert gone.status_code == 404 and gone.json()["error"] == "not_found"

        # No new version, and no other type under the vct.
        _assert_taken(await http.post(types, json={"definition": {**builtin_definition("padro"), "version": "2"}},
                                      headers=councils.headers(olot)))
        _assert_taken(await http.post(types, json={"definition": {**builtin_definition("padro"), "id": "padro-olot"}},
                                      headers=councils.headers(olot)))
        # What it issued is untouched: its record, its status, its signature.
        record = await http.get(f"{councils.url}/v1/credentials/{credential_id}", headers=councils.headers(olot))
        status = await _status(http, councils, credential)
        listed = await http.get(types, headers=councils.headers(olot))
        # The owner is not affected.
        assert (await http.post(types, json={"definition": {**builtin_definition("padro"), "version": "2"}},
                                headers=councils.headers(salt))).status_code == 201
    assert record.status_code == 200 and record.json()["status"] == "valid"
    assert status == 0
    assert verify_with_ssi(councils, credential, holder)["iss"] == councils.issuer(olot)
    assert [(t["id"], t["versions"]) for t in listed.json()] == [("padro", [VERSION])]


async def test_a_council_the_vct_is_shared_with_publishes_the_owners_type_metadata(councils: IssuerEnv) -> None:
    """One vct, one type: credentials carry ``vct#integrity``, and a verifier asking for the padró
    expects the same claims from every council it lists."""
    salt, olot = COUNCILS
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        await _register_padro(http, councils, salt)
        assert (await http.post(_shares(councils, olot), json={"vct": PADRO_VCT}, headers=PLATFORM)).status_code == 201
        renamed = {**builtin_definition("padro"), "name": "Volant d'Olot"}
        refused = await http.post(f"{councils.url}/v1/types", json={"definition": renamed},
                                  headers=councils.headers(olot))
    assert refused.status_code == 409 and refused.json()["error"] == "vct_in_use", refused.text


async def test_what_cannot_be_shared_is_refused_in_oauth_style(councils: IssuerEnv) -> None:
    salt, olot = COUNCILS
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        async def share(slug: str, body: Any) -> httpx.Response:
            return await http.post(_shares(councils, slug), json=body, headers=PLATFORM)

        # Nobody registered it yet: a typo must not wait for whoever registers it first.
        unregistered = await share(olot, {"vct": PADRO_VCT})
        assert unregistered.status_code == 404 and unregistered.json()["error"] == "not_found"
        assert "registered" in unregistered.json()["error_description"]
        await _register_padro(http, councils, salt)
        owner = await share(salt, {"vct": PADRO_VCT})
        assert owner.status_code == 409 and owner.json()["error"] == "conflict"
        nobody = await share("ajuntament-nobody", {"vct": PADRO_VCT})
        assert nobody.status_code == 404 and nobody.json()["error"] == "not_found"
        own_origin = await share(olot, {"vct": f"{councils.issuer(salt)}/types/padro"})
        assert own_origin.status_code == 400 and own_origin.json()["error"] == "invalid_request"
        for body in ({}, {"vct": ""}, {"vct": "x" * 501}, {"vct": PADRO_VCT, "tenant": salt}, {"vct": 5}):
            bad = await share(olot, body)
            assert bad.status_code == 400 and bad.json()["error"] == "invalid_request", (body, bad.text)
        listing = await http.get(_shares(councils, "ajuntament-nobody"), headers=PLATFORM)
        assert listing.status_code == 404 and listing.json()["error"] == "not_found"
        not_shared = await http.delete(_shares(councils, olot), params={"vct": PADRO_VCT}, headers=PLATFORM)
        assert not_shared.status_code == 404
        assert (await http.delete(_shares(councils, olot), headers=PLATFORM)).status_code == 400


async def test_the_share_endpoints_are_in_the_openapi_document(councils: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        doc = (await http.get(f"{councils.url}/openapi.json")).json()
    path = doc["paths"]["/v1/tenants/{slug}/shared-vcts"]
    assert set(path) == {"get", "post", "delete"}
    post = path["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "404", "409"} <= set(post)
    assert post["401"]["content"]["application/json"]["schema"]["properties"]["error"]["enum"] == ["unauthorized"]
    assert post["409"]["content"]["application/json"]["schema"]["properties"]["error"]["enum"] == ["conflict"]
    assert "vct" in doc["components"]["schemas"]["VctShareCreate"]["properties"]
    assert {"vct", "tenant", "owner", "shared_at"} <= set(doc["components"]["schemas"]["VctShareInfo"]["properties"])
    assert {p["name"] for p in path["delete"]["parameters"]} == {"slug", "vct"}
    registration = doc["paths"]["/v1/types"]["post"]["responses"]["409"]["description"]
    assert "platform admin" in registration


# -- a withdrawal and a registration at once, on PostgreSQL ----------------------------------------

@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


async def test_a_withdrawal_waits_for_a_registration_that_found_the_share(pg_url: str, tmp_path: Path) -> None:
    """Once the withdrawal has answered, no registration it overtook is still to be stored."""
    settings = issuer_settings(pg_url, tmp_path)
    async with running_issuer(settings) as (ctx, client):
        (_, a), (b_id, b) = await _tenant(client, settings, "tenant-a"), await _tenant(client, settings, "tenant-b")
        assert (await client.post("/v1/types", json={"builtin": "padro"}, headers=a)).status_code == 201
        platform = {"Authorization": f"Bearer {settings.admin_api_key.get_secret_value()}"}
        shares = "/v1/tenants/tenant-b/shared-vcts"
        assert (await client.post(shares, json={"vct": PADRO_VCT}, headers=platform)).status_code == 201
        holder = await asyncpg.connect(pg_dsn(pg_url))
        try:
            # tenant-b's type row, uncommitted: the registration goes past the share check, then its
            # INSERT waits on this row's unique key; the withdrawal comes meanwhile.
            blocking = holder.transaction()
            await blocking.start()
            await holder.execute(
                "INSERT INTO credential_types (tenant_id, type_id, version, vct, definition, created_at) "
                "VALUES ($1, 'padro', $2, $3, '{}', $4)", b_id, VERSION, PADRO_VCT, dt.datetime.now(dt.UTC))
            registering = asyncio.create_task(client.post("/v1/types", json={"builtin": "padro"}, headers=b))
            await until_waiting(holder, 1)
            withdrawing = asyncio.create_task(client.delete(shares, params={"vct": PADRO_VCT}, headers=platform))
            # The withdrawal waits for the registration (without the registration's lock on the share it
            # answered at once, and the registration was stored after it).
            waiting = asyncio.create_task(until_waiting(holder, 2))
            await asyncio.wait([waiting, withdrawing], return_when=asyncio.FIRST_COMPLETED)
            assert not withdrawing.done(), withdrawing.result().status_code
            await waiting
            await blocking.rollback()
            registered, withdrawn = await registering, await withdrawing
        finally:
            await holder.close()
        assert registered.status_code == 201, registered.text
        assert withdrawn.status_code == 204, withdrawn.text
        _assert_taken(await client.post("/v1/types", json={"definition": {**builtin_definition("padro"), "version": "2"}},
                                        headers=b))
        async with ctx.db.read_session() as session:
            rows = (await session.execute(select(CredentialTypeRow.version)
                                          .where(CredentialTypeRow.tenant_id == b_id))).scalars().all()
        assert rows == [VERSION]


# -- the migration ---------------------------------------------------------------------------------

async def test_the_migration_adds_the_table_on_top_of_0015_and_goes_back(database_url: str) -> None:
    """0016 on SQLite and PostgreSQL: up from 0015, with shares going when their vct's owner row goes
    (the foreign key, SQLite included), down again (the table gone) and up to the head."""
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url, "0015")
    now = dt.datetime.now(dt.UTC)
    db = Database(database_url)
    try:
        async with db.session() as session:
            for tenant in ("t_owner", "t_other"):
                await session.execute(insert(Tenant).values(id=tenant, slug=tenant.replace("_", "-"), name=tenant,
                                                            display=[], body_id="", created_at=now))
            await session.execute(insert(VCT_OWNERS).values(vct=PADRO_VCT, tenant_id="t_owner", created_at=now))
        await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
        async with db.session() as session:
            await session.execute(insert(VCT_SHARES).values(vct=PADRO_VCT, tenant_id="t_other", created_at=now))
        async with db.session() as session:
            assert (await session.execute(select(VCT_SHARES.c.tenant_id))).scalars().all() == ["t_other"]
            await session.execute(delete(VCT_OWNERS).where(VCT_OWNERS.c.vct == PADRO_VCT))
        async with db.session() as session:
            assert (await session.execute(select(VCT_SHARES.c.tenant_id))).scalars().all() == []
        await asyncio.to_thread(command.downgrade, make_config(MIGRATIONS, database_url), "0015")
        async with db.session() as session:
            tables = await session.run_sync(lambda s: inspect(s.connection()).get_table_names())
        assert "vct_shares" not in tables and "vct_owners" in tables
        await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    finally:
        await db.dispose()
