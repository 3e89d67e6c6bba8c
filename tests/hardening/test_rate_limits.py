"""Abuse limits over real HTTP: issuer token and tx_code, verifier request creation, wallet login.

Each refused request is a 429 with ``Retry-After`` (whole seconds) and the OAuth-style body; each
limited endpoint documents that answer in its OpenAPI document.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from tests.hardening.conftest import VERIFIER_LIMITS, WalletEnv, forwarded, new_client
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import create_offer
from tests.support.servers import free_port, serve
from tests.verifier.conftest import Verifier
from verifier.app import create_app as create_verifier
from wallet_api.auth import pkce_pair

SLUG = "aoc-tax"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def token_issuer(request: pytest.FixtureRequest) -> IssuerEnv:
    """The limited issuer on each database: on PostgreSQL a request with a transaction code takes the
    one-statement path (limits and redemption together), on SQLite the limits come first."""
    return request.getfixturevalue("limited_issuer" if request.param == "sqlite" else "pg_limited_issuer")


def assert_limited(response: httpx.Response, error: str, longest: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == {"error": error, "error_description": response.json()["error_description"]}
    assert 1 <= int(response.headers["retry-after"]) <= longest
    assert response.headers["cache-control"] == "no-store"


def _code(offer: dict[str, Any]) -> str:
    return str(offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"])


async def _token(http: httpx.AsyncClient, env: IssuerEnv, client: str, code: str,
                 tx_code: str | None = None) -> httpx.Response:
    form = {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code}
    if tx_code is not None:
        form["tx_code"] = tx_code
    return await http.post(f"{env.issuer(SLUG)}/token", data=form, headers=forwarded(client))


def _wrong(tx_code: str) -> str:
    return "1" * len(tx_code) if tx_code != "1" * len(tx_code) else "2" * len(tx_code)


@pytest.mark.anyio
async def test_token_endpoint_slows_down_one_client_address_and_not_another(token_issuer: IssuerEnv) -> None:
    noisy, quiet = new_client(), new_client()
    async with httpx.AsyncClient(timeout=20) as http:
        for _ in range(6):
            r = await _token(http, token_issuer, noisy, secrets.token_urlsafe(16))
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        assert_limited(await _token(http, token_issuer, noisy, secrets.token_urlsafe(16)), "slow_down", 10)
        # Another address behind the same (trusted) proxy has its own bucket.
        r = await _token(http, token_issuer, quiet, secrets.token_urlsafe(16))
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


@pytest.mark.anyio
async def test_token_endpoint_limits_one_code_whatever_the_address(token_issuer: IssuerEnv) -> None:
    code = secrets.token_urlsafe(24)
    async with httpx.AsyncClient(timeout=20) as http:
        for _ in range(5):
            assert (await _token(http, token_issuer, new_client(), code)).status_code == 400
        assert_limited(await _token(http, token_issuer, new_client(), code), "slow_down", 12)


@pytest.mark.anyio
async def test_wrong_tx_codes_are_limited_per_offer_even_from_many_addresses(token_issuer: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        offer = await create_offer(http, token_issuer, SLUG, "tax-compliance", DEMO_EVERYTHING)
        code, right = _code(offer), offer["tx_code"]
        for _ in range(2):
            r = await _token(http, token_issuer, new_client(), code, _wrong(right))
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        # The offer's bucket is full: even the right code waits (the offer itself is not void).
        assert_limited(await _token(http, token_issuer, new_client(), code, right), "slow_down", 300)


@pytest.mark.anyio
async def test_wrong_tx_codes_are_limited_per_client_across_offers(token_issuer: IssuerEnv) -> None:
    guesser, citizen = new_client(), new_client()
    async with httpx.AsyncClient(timeout=20) as http:
        for _ in range(4):
            offer = await create_offer(http, token_issuer, SLUG, "tax-compliance", DEMO_EVERYTHING)
            r = await _token(http, token_issuer, guesser, _code(offer), _wrong(offer["tx_code"]))
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        offer = await create_offer(http, token_issuer, SLUG, "tax-compliance", DEMO_EVERYTHING)
        assert_limited(await _token(http, token_issuer, guesser, _code(offer), offer["tx_code"]), "slow_down", 150)
        # Refused up front, so the offer is untouched: its citizen, elsewhere, redeems it.
        r = await _token(http, token_issuer, citizen, _code(offer), offer["tx_code"])
        assert r.status_code == 200 and r.json()["access_token"]


TEMPLATES = {"ajuntament-barcelona": "grant-application", "uni-admissions": "job-application"}


def _create(http: httpx.Client, verifier: Verifier, agency: str, client: str, *, key: str | None = None,
            url: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else verifier.headers(agency)
    return http.post(f"{url or verifier.url}/v1/requests", json={"template": TEMPLATES[agency]},
                     headers={**headers, **forwarded(client)})


def test_request_creation_is_limited_per_agency_key_and_bad_keys_too(limited_verifier: Verifier) -> None:
    with httpx.Client(timeout=20) as http:
        for _ in range(3):
            r = _create(http, limited_verifier, "ajuntament-barcelona", new_client())
            assert r.status_code == 201, r.text
        assert_limited(_create(http, limited_verifier, "ajuntament-barcelona", new_client()), "too_many_requests", 20)
        # Guessing keys is limited per presented key as well (checked before authentication).
        bad = secrets.token_urlsafe(24)
        for _ in range(3):
            assert _create(http, limited_verifier, "ajuntament-barcelona", new_client(), key=bad).status_code == 401
        assert_limited(_create(http, limited_verifier, "ajuntament-barcelona", new_client(), key=bad),
                       "too_many_requests", 20)


def test_limits_hold_across_two_workers_sharing_the_database(limited_verifier: Verifier) -> None:
    # A second verifier process on the same database and master key, as a second worker would be;
    # requests alternate between the two, and the agency still gets its 3 a minute in all.
    port = free_port()
    second = limited_verifier.settings.model_copy(update={"port": port, "public_url": f"http://127.0.0.1:{port}"})
    with serve(create_verifier(second), port=port) as second_url, httpx.Client(timeout=20) as http:
        statuses = [_create(http, limited_verifier, "uni-admissions", new_client(),
                            url=(limited_verifier.url, second_url)[i % 2]).status_code for i in range(8)]
    allowed = int(VERIFIER_LIMITS["rate_limit_requests_key"].split("/")[0])
    assert statuses == [201] * allowed + [429] * (8 - allowed)


def test_wallet_login_and_token_requests_are_limited_per_client_address(limited_wallet: WalletEnv) -> None:
    client = new_client()
    params = {"provider": "valid", "redirect_uri": "http://127.0.0.1:9/app/callback",
              "code_challenge": pkce_pair()[1], "code_challenge_method": "S256"}
    with httpx.Client(timeout=20, follow_redirects=False) as http:
        for _ in range(2):
            assert http.get(f"{limited_wallet.url}/v1/auth/login", params=params,
                            headers=forwarded(client)).status_code == 302
        r = http.post(f"{limited_wallet.url}/v1/auth/token", data={"grant_type": "refresh_token",
                                                                   "refresh_token": "nope"}, headers=forwarded(client))
        assert r.status_code in (400, 401)
        assert_limited(http.get(f"{limited_wallet.url}/v1/auth/login", params=params, headers=forwarded(client)),
                       "too_many_requests", 20)
        assert_limited(http.post(f"{limited_wallet.url}/v1/auth/token", data={"grant_type": "refresh_token",
                                                                             "refresh_token": "nope"},
                                 headers=forwarded(client)), "too_many_requests", 20)
        assert http.get(f"{limited_wallet.url}/v1/auth/login", params=params,
                        headers=forwarded(new_client())).status_code == 302


def test_the_wallet_pin_lockout_is_the_per_wallet_pin_limit_and_says_when_to_retry(
        limited_wallet: WalletEnv) -> None:
    with httpx.Client(timeout=20) as http:
        url, headers = f"{limited_wallet.url}/v1/pin", limited_wallet.headers
        assert http.put(url, json={"pin": "2468"}, headers=headers).status_code == 204
        statuses = [http.put(url, json={"pin": "1357", "current_pin": "0000"}, headers=headers) for _ in range(6)]
    assert [r.status_code for r in statuses[:4]] == [403] * 4
    locked = statuses[4]
    assert locked.status_code == 423 and locked.json()["error"] == "pin_locked"
    assert 1 <= int(locked.headers["retry-after"]) <= 900
    # Locked: even the right PIN now waits, and says how long.
    assert statuses[5].status_code == 423 and 1 <= int(statuses[5].headers["retry-after"]) <= 900


@pytest.mark.parametrize(("service", "path", "method", "error"), [
    ("issuer", "/t/{slug}/token", "post", "slow_down"),
    ("verifier", "/v1/requests", "post", "too_many_requests"),
    ("verifier", "/v1/aries/requests", "post", "too_many_requests"),
    ("wallet", "/v1/auth/login", "get", "too_many_requests"),
    ("wallet", "/v1/auth/token", "post", "too_many_requests"),
])
def test_openapi_documents_the_429(service: str, path: str, method: str, error: str, limited_issuer: IssuerEnv,
                                   limited_verifier: Verifier, limited_wallet: WalletEnv) -> None:
    base = {"issuer": limited_issuer.url, "verifier": limited_verifier.url, "wallet": limited_wallet.url}[service]
    document = httpx.get(f"{base}/openapi.json", timeout=20).json()
    answer = document["paths"][path][method]["responses"]["429"]
    assert "Retry-After" in answer["headers"]
    schema = answer["content"]["application/json"]["schema"]
    assert schema["properties"]["error"]["enum"] == [error]


@pytest.mark.parametrize("tx_code", [None, "1234"])
def test_concurrent_token_requests_never_pass_the_limit(token_issuer: IssuerEnv, tx_code: str | None) -> None:
    client = new_client()

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            responses = await asyncio.gather(*(_token(http, token_issuer, client, secrets.token_urlsafe(16), tx_code)
                                               for _ in range(20)))
        return [r.status_code for r in responses]

    statuses = asyncio.run(scenario())
    assert statuses.count(400) == 6 and statuses.count(429) == 14


@pytest.mark.anyio
async def test_requests_with_a_tx_code_count_against_the_code_and_the_client(token_issuer: IssuerEnv) -> None:
    code = secrets.token_urlsafe(24)
    async with httpx.AsyncClient(timeout=20) as http:
        for _ in range(5):
            r = await _token(http, token_issuer, new_client(), code, "1234")
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        assert_limited(await _token(http, token_issuer, new_client(), code, "1234"), "slow_down", 12)


@pytest.mark.anyio
async def test_a_refused_request_leaves_a_good_code_unspent(token_issuer: IssuerEnv) -> None:
    noisy, citizen = new_client(), new_client()
    async with httpx.AsyncClient(timeout=20) as http:
        offer = await create_offer(http, token_issuer, SLUG, "tax-compliance", DEMO_EVERYTHING)
        for _ in range(6):
            assert (await _token(http, token_issuer, noisy, secrets.token_urlsafe(16), "1234")).status_code == 400
        # The right code and transaction code, from the client that is over its limit: refused, and
        # the code is not spent by the refused request (the limits decide before the redemption).
        assert_limited(await _token(http, token_issuer, noisy, _code(offer), offer["tx_code"]), "slow_down", 10)
        r = await _token(http, token_issuer, citizen, _code(offer), offer["tx_code"])
        assert r.status_code == 200 and r.json()["access_token"]
        # Spent now, for everyone.
        r = await _token(http, token_issuer, new_client(), _code(offer), offer["tx_code"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
