"""A used ``c_nonce`` stays recorded a clock-skew margin past its expiry, as a used DPoP proof does.

A nonce's validity is checked against each worker's own clock; its record (what refuses a second use)
was purged exactly at the nonce's expiry by the purging worker's clock. A worker whose clock is behind
still takes the nonce for fresh, and with the record gone it accepted the nonce a second time.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from issuer import statements
from issuer.binding import USED_RECORD_MARGIN
from issuer.context import secret_hash
from issuer.grants import purge_expired
from issuer.models import Nonce
from issuer.nonces import mint_nonce, nonce_expiry
from tests.issuer.races import add_tenant, issuer_settings, running_issuer

pytestmark = pytest.mark.anyio

#: How far behind the other worker's clock is: within the skew the margin allows.
BEHIND = dt.timedelta(seconds=25)


async def test_a_used_nonce_is_still_refused_by_a_worker_whose_clock_is_behind(database_url: str, tmp_path: Path) -> None:
    async with running_issuer(issuer_settings(database_url, tmp_path)) as (ctx, _):
        tenant = await add_tenant(ctx)
        now = dt.datetime.now(dt.UTC)
        ttl = ctx.settings.nonce_ttl
        # Minted so that it expired 10 s ago by this worker's clock; another's, behind, has it fresh.
        nonce = mint_nonce(ctx.nonce_key, tenant.id, ttl, now - dt.timedelta(seconds=ttl + 10))
        assert nonce_expiry(ctx.nonce_key, tenant.id, nonce, now) is None
        expires_at = nonce_expiry(ctx.nonce_key, tenant.id, nonce, now - BEHIND)
        assert expires_at is not None
        # Used (through the worker behind), then long expired nonces besides it.
        async with ctx.single_statement() as conn:
            for value, expiry in ((nonce, expires_at), ("long-gone", now - USED_RECORD_MARGIN - dt.timedelta(seconds=1))):
                await conn.execute(statements.USE_NONCE[ctx.db.backend], {
                    "nonce_hash": secret_hash(value), "tenant_id": tenant.id, "expires_at": expiry})

        await purge_expired(ctx)

        async with ctx.db.read_session() as session:
            kept = set((await session.execute(select(Nonce.nonce_hash))).scalars())
        assert kept == {secret_hash(nonce)}
        # The worker behind sees the nonce again: its record refuses it (no row back: used before).
        async with ctx.single_statement() as conn:
            again = (await conn.execute(statements.USE_NONCE[ctx.db.backend], {
                "nonce_hash": secret_hash(nonce), "tenant_id": tenant.id, "expires_at": expires_at})).first()
        assert again is None
