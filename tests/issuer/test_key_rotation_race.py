"""A tenant has one active signing key, however many rotations run at once.

Each rotation retired the keys active when it began and inserted its own: two at once could not see
each other's new key, and both stayed active; issuance, status lists and audit checkpoints then failed
with a 500 (``MultipleResultsFound``). Rotations now lock the tenant row first, and a partial unique
index (migration 0014) refuses a second active key; the migration first retires all but the newest
active key of tenants that have several.

The rotations' interleaving is forced: a second connection holds the active key's row lock until every
rotation waits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from issuer.keys import active_key
from issuer.models import SigningKey, Tenant
from service_kit.db import Database
from service_kit.migrations import run_migrations
from ssi import x509 as ssi_x509
from tests.issuer.races import issuer_settings, pg_dsn, running_issuer, until_waiting
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.anyio

MIGRATIONS = Path(__file__).resolve().parents[2] / "issuer" / "migrations"
ROTATIONS = 6


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


def _with_ca(tmp_path: Path) -> dict[str, Path]:
    ca_key, ca_cert = ssi_x509.create_ca("rotation test CA")
    (tmp_path / "ca.key").write_bytes(ca_key.private_pem())
    (tmp_path / "ca.pem").write_bytes(ssi_x509.cert_to_pem(ca_cert))
    return {"ca_key_file": tmp_path / "ca.key", "ca_cert_file": tmp_path / "ca.pem"}


async def test_concurrent_rotations_leave_one_active_key(pg_url: str, tmp_path: Path) -> None:
    settings = issuer_settings(pg_url, tmp_path, **_with_ca(tmp_path))
    async with running_issuer(settings) as (ctx, client):
        r = await client.post("/v1/tenants", json={"slug": "rotating", "name": "Rotating"},
                              headers={"Authorization": f"Bearer {settings.admin_api_key.get_secret_value()}"})
        assert r.status_code == 201, r.text
        tenant_id, first_kid = r.json()["tenant_id"], r.json()["signing_kid"]
        headers = {"Authorization": f"Bearer {r.json()['api_key']}"}
        holder = await asyncpg.connect(pg_dsn(pg_url))
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute("SELECT 1 FROM signing_keys WHERE kid = $1 FOR UPDATE", first_kid)
            rotations = [asyncio.create_task(client.post("/v1/keys/rotate", json={}, headers=headers))
                         for _ in range(ROTATIONS)]
            await until_waiting(holder, ROTATIONS)
            await lock.commit()
            answers = await asyncio.gather(*rotations)
        finally:
            await holder.close()
        assert [a.status_code for a in answers] == [201] * ROTATIONS, [a.text for a in answers]
        async with ctx.db.read_session() as session:
            keys = (await session.execute(select(SigningKey).where(SigningKey.tenant_id == tenant_id)
                                          .order_by(SigningKey.created_at))).scalars().all()
            ctx.keys.clear()
            signing = await active_key(ctx, session, tenant_id)
        assert [k.kid for k in keys if k.active] == [keys[-1].kid]
        assert len(keys) == ROTATIONS + 1 and all(k.retired_at is not None for k in keys[:-1])
        assert signing is not None and signing.key.kid == keys[-1].kid
        # The status list and metadata paths that failed with a 500 answer again.
        assert (await client.get("/.well-known/jwt-vc-issuer/t/rotating")).status_code == 200


def _key(kid: str, tenant_id: str, created_at: dt.datetime, active: bool) -> dict[str, object]:
    return {"kid": kid, "tenant_id": tenant_id, "sealed_private_key": b"sealed", "chain_pem": "", "public_jwk": {},
            "active": active, "created_at": created_at, "retired_at": None}


async def test_the_migration_keeps_the_newest_active_key_and_refuses_a_second(database_url: str) -> None:
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url, "0013")
    db = Database(database_url)
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    try:
        async with db.session() as session:
            for tenant in ("t_many", "t_one"):
                await session.execute(insert(Tenant).values(id=tenant, slug=tenant, name=tenant, display=[], body_id="",
                                                            created_at=t0))
            await session.execute(insert(SigningKey), [
                _key("old", "t_many", t0, False), _key("a", "t_many", t0 + dt.timedelta(hours=1), True),
                _key("b", "t_many", t0 + dt.timedelta(hours=3), True), _key("c", "t_many", t0 + dt.timedelta(hours=2), True),
                _key("only", "t_one", t0, True), _key("gone", "t_one", t0 - dt.timedelta(hours=1), False)])
        await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
        async with db.read_session() as session:
            rows = {k.kid: k for k in (await session.execute(select(SigningKey))).scalars()}
        assert {kid for kid, k in rows.items() if k.active} == {"b", "only"}
        assert rows["a"].retired_at is not None and rows["c"].retired_at is not None
        assert rows["old"].retired_at is None  # retired before, as it was
        with pytest.raises(IntegrityError):
            async with db.session() as session:
                await session.execute(insert(SigningKey).values(**_key("d", "t_many", t0 + dt.timedelta(hours=4), True)))
        async with db.session() as session:
            await session.execute(insert(SigningKey).values(**_key("e", "t_many", t0 + dt.timedelta(hours=4), False)))
            assert await session.scalar(select(func.count()).select_from(SigningKey)
                                        .where(SigningKey.active.is_(True))) == 2
    finally:
        await db.dispose()
