"""A transaction code allows ``tx_code_max_attempts`` wrong guesses, however many arrive at once.

Each guess is compared and counted by one conditional UPDATE of the offer (``statements.TRY_OFFER``),
so on PostgreSQL concurrent guesses take the offer's row lock in turn. Before, the guess was compared
first and the wrong attempt counted afterwards, in another transaction: a burst of wrong guesses was
compared in full before the first was counted, and a right code late in a burst was accepted.

The interleaving is forced: a second connection holds the offer's row lock while the guesses are sent,
and lets go once every one of them waits for it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import select

from issuer.grants import WrongTxCode, create_offer, redeem_pre_authorized_code
from issuer.models import Offer
from service_kit.errors import APIError
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from tests.issuer.races import add_tenant, issuer_settings, pg_dsn, running_issuer, until_waiting
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.anyio

SUBJECT = {"identifier": "12345678Z", "name": "Titular"}
WRONG = "the transaction code is wrong"
VOID = "the transaction code is wrong; the offer is now void"
GONE = "the pre-authorized code is unknown, expired or already used"
#: Every request comes from one address here: the per-client limits would refuse the bursts themselves.
LIMITS = {"rate_limit_tx_code_client": "0", "rate_limit_token_client": "0", "rate_limit_token_code": "1000/60"}
#: No limits at all: the token endpoint's general path (as with DPoP), where nothing but the offer's row
#: lock orders the guesses.
NO_LIMITS = {**LIMITS, "rate_limit_token_code": "0", "rate_limit_tx_code_offer": "0"}


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


def _wrong_codes(right: str, count: int) -> list[str]:
    return [f"{(int(right) + i + 1) % 10 ** len(right):0{len(right)}d}" for i in range(count)]


async def _guess(client: httpx.AsyncClient, slug: str, code: str, tx_code: str) -> tuple[int, str]:
    r = await client.post(f"/t/{slug}/token", data={"grant_type": PRE_AUTHORIZED_CODE_GRANT,
                                                    "pre-authorized_code": code, "tx_code": tx_code})
    return r.status_code, "" if r.status_code == 200 else r.json().get("error_description", "")


async def _offer(ctx, tenant) -> tuple[str, str, str]:  # noqa: ANN001
    created = await create_offer(ctx, tenant, ["padro"], SUBJECT)
    assert created.tx_code is not None
    return created.offer_id, created.offer["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"], created.tx_code


async def _offer_row(ctx, offer_id: str) -> Offer:  # noqa: ANN001
    async with ctx.db.read_session() as session:
        return (await session.execute(select(Offer).where(Offer.id == offer_id))).scalar_one()


async def test_wrong_codes_sent_at_once_are_compared_no_more_than_the_limit(pg_url: str, tmp_path: Path) -> None:
    async with running_issuer(issuer_settings(pg_url, tmp_path, **LIMITS)) as (ctx, client):
        tenant = await add_tenant(ctx)
        limit = ctx.settings.tx_code_max_attempts
        offer_id, code, right = await _offer(ctx, tenant)
        wrong = _wrong_codes(right, 10)
        holder = await asyncpg.connect(pg_dsn(pg_url))
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute("SELECT 1 FROM offers WHERE id = $1 FOR UPDATE", offer_id)
            guesses = [asyncio.create_task(_guess(client, tenant.slug, code, g)) for g in wrong]
            await until_waiting(holder, len(wrong))
            await lock.commit()
            answers = await asyncio.gather(*guesses)
        finally:
            await holder.close()
        right_answer = await _guess(client, tenant.slug, code, right)
        row = await _offer_row(ctx, offer_id)
    compared = [d for s, d in answers if d in (WRONG, VOID)]
    assert len(compared) == limit, answers
    assert sorted(compared) == sorted([WRONG] * (limit - 1) + [VOID])
    assert [d for s, d in answers if d not in (WRONG, VOID)] == [GONE] * (len(wrong) - limit)
    assert right_answer == (400, GONE)
    assert (row.used, row.burnt, row.tx_code_attempts) == (False, True, limit)


async def test_a_wrong_code_that_arrives_with_the_right_one_is_not_told_the_offer_is_void(
        pg_url: str, tmp_path: Path) -> None:
    async with running_issuer(issuer_settings(pg_url, tmp_path, **NO_LIMITS)) as (ctx, client):
        tenant = await add_tenant(ctx)
        offer_id, code, right = await _offer(ctx, tenant)
        holder = await asyncpg.connect(pg_dsn(pg_url))
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute("SELECT 1 FROM offers WHERE id = $1 FOR UPDATE", offer_id)
            # The right code first in the row lock's queue, the wrong ones behind it.
            first = asyncio.create_task(_guess(client, tenant.slug, code, right))
            await until_waiting(holder, 1)
            later = [asyncio.create_task(_guess(client, tenant.slug, code, g)) for g in _wrong_codes(right, 2)]
            await until_waiting(holder, 3)
            await lock.commit()
            assert (await first) == (200, "")
            answers = await asyncio.gather(*later)
        finally:
            await holder.close()
        row = await _offer_row(ctx, offer_id)
    # The offer was redeemed, not voided: those guesses were never compared, nor counted.
    assert answers == [(400, GONE)] * 2
    assert (row.used, row.burnt, row.tx_code_attempts) == (True, False, 0)


async def test_a_burst_of_guesses_has_no_more_than_the_limit_compared(pg_url: str, tmp_path: Path) -> None:
    """The reviewer's case, unforced: 8 wrong guesses and the right one, sent together, many times. The
    right one may come first (then it wins) or after some wrong ones, but no more than the limit of
    guesses is ever compared: the right one wins only while fewer wrong ones were."""
    async with running_issuer(issuer_settings(pg_url, tmp_path, **LIMITS)) as (ctx, client):
        tenant = await add_tenant(ctx)
        limit = ctx.settings.tx_code_max_attempts
        for _ in range(15):
            offer_id, code, right = await _offer(ctx, tenant)
            answers = await asyncio.gather(*(_guess(client, tenant.slug, code, g)
                                             for g in [*_wrong_codes(right, 8), right]))
            wrong = [d for _, d in answers[:-1] if d in (WRONG, VOID)]
            accepted = answers[-1] == (200, "")
            assert accepted or answers[-1] == (400, GONE), answers
            assert len(wrong) + accepted <= limit, answers
            if not accepted:
                assert len(wrong) == limit and VOID in wrong, answers
            assert (await _offer_row(ctx, offer_id)).tx_code_attempts == len(wrong)


async def test_wrong_codes_are_counted_until_the_offer_is_void(database_url: str, tmp_path: Path) -> None:
    """The same answers on SQLite and PostgreSQL, through the function the token endpoint calls. A
    missing code is no guess (``invalid_request``, OpenID4VCI 1.0 §6.3): it is not counted."""
    async with running_issuer(issuer_settings(database_url, tmp_path, tx_code_max_attempts=3)) as (ctx, _):
        tenant = await add_tenant(ctx)
        offer_id, code, right = await _offer(ctx, tenant)
        outcomes = []
        wrong = _wrong_codes(right, 3)
        for guess in [wrong[0], None, wrong[1], None, wrong[2], right]:
            with pytest.raises(APIError) as refused:
                await redeem_pre_authorized_code(ctx, tenant, code, guess)
            outcomes.append((isinstance(refused.value, WrongTxCode), refused.value.error))
        assert outcomes == [(True, "invalid_grant"), (False, "invalid_request"), (True, "invalid_grant"),
                            (False, "invalid_request"), (True, "invalid_grant"), (False, "invalid_grant")]
        assert (await _offer_row(ctx, offer_id)).tx_code_attempts == 3

        # A right code within the limit redeems the offer once; what comes after is told it is gone.
        _, code, right = await _offer(ctx, tenant)
        with pytest.raises(WrongTxCode):
            await redeem_pre_authorized_code(ctx, tenant, code, _wrong_codes(right, 1)[0])
        offer, token, _ = await redeem_pre_authorized_code(ctx, tenant, code, right)
        assert token and list(offer.configuration_ids) == ["padro"]
        for guess in (right, _wrong_codes(right, 1)[0]):
            with pytest.raises(APIError) as refused:
                await redeem_pre_authorized_code(ctx, tenant, code, guess)
            assert not isinstance(refused.value, WrongTxCode) and refused.value.error_description == GONE

        # An offer made without a transaction code takes none, and refuses one without spending itself.
        created = await create_offer(ctx, tenant, ["padro"], SUBJECT, with_tx_code=False)
        plain = created.offer["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"]
        with pytest.raises(APIError) as refused:
            await redeem_pre_authorized_code(ctx, tenant, plain, "123456")
        assert refused.value.error == "invalid_request" and not isinstance(refused.value, WrongTxCode)
        offer, _, _ = await redeem_pre_authorized_code(ctx, tenant, plain, None)
        assert offer.id == created.offer_id
