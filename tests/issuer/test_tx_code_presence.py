"""A token request whose ``tx_code`` is missing though the offer has one, or given though it has none,
is ``invalid_request`` (OpenID4VCI 1.0 §6.1, §6.3), not a wrong guess: no attempt is counted, so an
offer is never voided by requests that guessed nothing. On SQLite and on PostgreSQL (where a request
with a transaction code takes the one-statement path)."""

from __future__ import annotations

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer

pytestmark = pytest.mark.anyio
SLUG, TYPE = "aoc-tax", "tax-compliance"


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest) -> IssuerEnv:
    return request.getfixturevalue("issuer_env" if request.param == "sqlite" else "pg_issuer_env")


async def _token(http: httpx.AsyncClient, env: IssuerEnv, code: str, tx_code: str | None) -> httpx.Response:
    form = {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code}
    if tx_code is not None:
        form["tx_code"] = tx_code
    return await http.post(f"{env.issuer(SLUG)}/token", data=form)


def _code(offer: dict) -> str:
    return str(offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"])


async def test_a_missing_tx_code_is_invalid_request_and_counts_no_attempt(env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, env, SLUG, TYPE, DEMO_EVERYTHING)
        # More than tx_code_max_attempts (3): were they counted, the offer would be void.
        missing = [await _token(http, env, _code(offer), None) for _ in range(env.settings.tx_code_max_attempts + 1)]
        right = await _token(http, env, _code(offer), offer["tx_code"])
    for answer in missing:
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", answer.text
    assert right.status_code == 200, right.text


async def test_a_tx_code_for_an_offer_without_one_is_invalid_request(env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, env, SLUG, TYPE, DEMO_EVERYTHING, tx_code=False)
        unexpected = await _token(http, env, _code(offer), "123456")
        plain = await _token(http, env, _code(offer), None)
        after = await _token(http, env, _code(offer), None)
    assert unexpected.status_code == 400 and unexpected.json()["error"] == "invalid_request", unexpected.text
    assert plain.status_code == 200, plain.text  # the refused request did not spend the offer
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant", after.text
