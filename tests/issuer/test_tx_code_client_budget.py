"""The per-client budget of wrong transaction codes (``rate_limit_tx_code_client``) holds for guesses
sent at once, across offers.

The budget is there to stop one client from enumerating codes over many offers (each offer also has
``tx_code_max_attempts``). Before, it was read before the guess and charged only after a wrong one, in
another statement: a burst of guesses all read the budget untouched, and every one of them was
compared. Now a guess is charged to the budget (reserved, under the bucket's row lock) before the offer
is tried, so no more wrong guesses than the budget are ever compared; a right guess is charged nothing.

The interleaving is forced: a second connection holds every offer's row lock while the guesses are
sent, and lets go once each of them waits for a lock or has been answered. Both paths of the token
endpoint are covered: the one-statement path of a plain request, and the general one (a DPoP proof).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select

from issuer.grants import create_offer
from issuer.models import Offer
from ssi.dpop import build_dpop_proof
from ssi.jose import Key
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from tests.issuer.races import HANG_GUARD, add_tenant, issuer_settings, lock_waiters, pg_dsn, running_issuer
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.anyio

SUBJECT = {"identifier": "12345678Z", "name": "Titular"}
BUDGET = 3
#: Only the per-client budget of wrong codes binds here: every request comes from 127.0.0.1, each offer
#: takes more wrong guesses than it is sent, and the per-code limit is high (the one-statement path
#: needs one charged bucket).
SETTINGS = {"rate_limit_tx_code_client": f"{BUDGET}/600", "rate_limit_tx_code_offer": "0",
            "rate_limit_token_client": "0", "rate_limit_token_code": "1000/60", "tx_code_max_attempts": 10}
OFFERS, GUESSES_PER_OFFER = 4, 3


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


def _wrong(right: str, i: int) -> str:
    return f"{(int(right) + i + 1) % 10 ** len(right):0{len(right)}d}"


async def _offers(ctx, tenant, count: int) -> list[tuple[str, str, str]]:  # noqa: ANN001
    made = []
    for _ in range(count):
        created = await create_offer(ctx, tenant, ["padro"], SUBJECT)
        assert created.tx_code is not None
        made.append((created.offer_id, created.offer["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"],
                     created.tx_code))
    return made


async def _guess(client: httpx.AsyncClient, ctx, slug: str, code: str, tx_code: str,  # noqa: ANN001
                 dpop: Key | None) -> httpx.Response:
    headers = {}
    if dpop is not None:
        headers["DPoP"] = build_dpop_proof(dpop, "POST", f"{ctx.issuer_url(slug)}/token")
    return await client.post(f"/t/{slug}/token", headers=headers, data={
        "grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code, "tx_code": tx_code})


async def _compared(ctx, offer_ids: list[str]) -> int:  # noqa: ANN001
    """Wrong guesses the offers counted: each one compared, whatever was answered."""
    async with ctx.db.read_session() as session:
        return int(await session.scalar(select(func.sum(Offer.tx_code_attempts)).where(Offer.id.in_(offer_ids))))


@pytest.mark.parametrize("path", ["one statement", "general (DPoP)"])
async def test_a_burst_of_wrong_guesses_across_offers_stays_within_the_client_budget(
        pg_url: str, tmp_path: Path, path: str) -> None:
    dpop = Key.generate() if path.startswith("general") else None
    async with running_issuer(issuer_settings(pg_url, tmp_path, **SETTINGS)) as (ctx, client):
        tenant = await add_tenant(ctx)
        offers = await _offers(ctx, tenant, OFFERS)
        holder = await asyncpg.connect(pg_dsn(pg_url))
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute("SELECT 1 FROM offers WHERE id = ANY($1::text[]) FOR UPDATE",
                                 [offer_id for offer_id, _, _ in offers])
            guesses = [asyncio.create_task(_guess(client, ctx, tenant.slug, code, _wrong(right, i), dpop))
                       for _, code, right in offers for i in range(GUESSES_PER_OFFER)]
            # Every guess is either queued on a lock (an offer's, or a bucket's) or already answered.
            async with asyncio.timeout(HANG_GUARD):
                while await lock_waiters(holder) + sum(task.done() for task in guesses) < len(guesses):
                    await asyncio.sleep(0.01)
            await lock.commit()
            answers = await asyncio.gather(*guesses)
        finally:
            await holder.close()
        compared = await _compared(ctx, [offer_id for offer_id, _, _ in offers])
    wrong = [r for r in answers if r.status_code == 400]
    limited = [r for r in answers if r.status_code == 429]
    assert all(r.json()["error"] == "invalid_grant" for r in wrong), [r.text for r in wrong]
    assert all(r.json()["error"] == "slow_down" and int(r.headers["retry-after"]) >= 1 for r in limited)
    # No more than the budget compared, and every other guess refused. (One fewer may get through: each
    # request reads the clock before it queues for the bucket, and a guess that read it a moment before
    # the first one charged finds the last slot not quite free yet. The limit errs on the safe side.)
    assert BUDGET - 1 <= len(wrong) <= BUDGET, [r.text for r in answers]
    assert len(limited) == len(answers) - len(wrong)
    assert compared == len(wrong)


@pytest.mark.parametrize("path", ["one statement", "general (DPoP)"])
async def test_right_guesses_do_not_use_up_the_budget_and_a_spent_one_refuses_them(
        database_url: str, tmp_path: Path, path: str) -> None:
    """Citizens behind one address (a carrier's NAT, an office) redeem their offers whatever their
    number; the budget counts wrong codes only, and once it is spent even a right code waits (so a
    guesser learns nothing from the answer)."""
    dpop = Key.generate() if path.startswith("general") else None
    async with running_issuer(issuer_settings(database_url, tmp_path, **SETTINGS)) as (ctx, client):
        tenant = await add_tenant(ctx)
        offers = await _offers(ctx, tenant, BUDGET + 3)
        for _, code, right in offers[:BUDGET + 1]:
            r = await _guess(client, ctx, tenant.slug, code, right, dpop)
            assert r.status_code == 200, r.text
        last_id, last_code, last_right = offers[-1]
        for i in range(BUDGET):
            r = await _guess(client, ctx, tenant.slug, last_code, _wrong(last_right, i), dpop)
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        for code, tx_code in ((last_code, _wrong(last_right, BUDGET)), (offers[-2][1], offers[-2][2])):
            r = await _guess(client, ctx, tenant.slug, code, tx_code, dpop)
            assert r.status_code == 429 and r.json()["error"] == "slow_down", r.text
        assert await _compared(ctx, [last_id, offers[-2][0]]) == BUDGET
