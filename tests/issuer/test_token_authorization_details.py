"""``authorization_details`` in the token request (RFC 9396 §6, OpenID4VCI 1.0 §6.1): a wallet asks for
part of what its grant covers, in the pre-authorized code flow and in the authorization code flow, and
the access token grants exactly that; details the grant does not cover, of another type or that do not
parse are ``invalid_authorization_details``, and leave the code unspent.

Real servers on loopback: the session's issuers on SQLite and on PostgreSQL (where the pre-authorized
redemption is one statement), the sandbox registry and identity provider.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from ssi.jose import Key
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT, build_proof_jwt
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS
from tests.issuer.test_authorization_code import CLIENT, _login, _token

pytestmark = pytest.mark.anyio

SLUG = "aoc-tax"
BOTH = ["tax-compliance", "working-life"]


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest) -> IssuerEnv:
    return request.getfixturevalue("issuer_env" if request.param == "sqlite" else "pg_issuer_env")  # type: ignore[no-any-return]


def _details(*configuration_ids: str) -> str:
    return json.dumps([{"type": "openid_credential", "credential_configuration_id": cid} for cid in configuration_ids])


async def _offer(http: httpx.AsyncClient, env: IssuerEnv) -> tuple[str, str]:
    """An offer of both aoc-tax types with a transaction code: (pre-authorized code, tx_code)."""
    r = await http.post(f"{env.url}/v1/offers", headers=env.headers(SLUG), json={
        "credential_configuration_ids": BOTH, "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"}})
    assert r.status_code == 201, r.text
    offer = r.json()
    return offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"], offer["tx_code"]


async def _pre_authorized_token(http: httpx.AsyncClient, env: IssuerEnv, code: str, tx_code: str,
                                details: str | None = None) -> httpx.Response:
    form = {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code, "tx_code": tx_code}
    if details is not None:
        form["authorization_details"] = details
    return await http.post(f"{env.issuer(SLUG)}/token", data=form)


async def _credential(http: httpx.AsyncClient, env: IssuerEnv, access: str, configuration_id: str) -> httpx.Response:
    base = env.issuer(SLUG)
    nonce = (await http.post(f"{base}/nonce")).json()["c_nonce"]
    return await http.post(f"{base}/credential", headers={"Authorization": f"Bearer {access}"}, json={
        "credential_configuration_id": configuration_id,
        "proofs": {"jwt": [build_proof_jwt(Key.generate(), audience=base, nonce=nonce)]}})


def _granted(token: dict[str, Any]) -> list[str]:
    details = token["authorization_details"]
    assert all(d["type"] == "openid_credential" and d["credential_identifiers"] == [d["credential_configuration_id"]]
               for d in details)
    return [d["credential_configuration_id"] for d in details]


async def test_a_pre_authorized_token_for_part_of_the_offer_grants_that_part_only(env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        code, tx_code = await _offer(http, env)
        token = await _pre_authorized_token(http, env, code, tx_code, _details("working-life"))
        assert token.status_code == 200, token.text
        access = token.json()["access_token"]
        other = await _credential(http, env, access, "tax-compliance")
        asked = await _credential(http, env, access, "working-life")
        # The offer is used up by that token request: the other configuration is not to be had later.
        again = await _pre_authorized_token(http, env, code, tx_code)
    assert _granted(token.json()) == ["working-life"]
    assert other.status_code == 400 and other.json()["error"] == "credential_request_denied", other.text
    assert asked.status_code == 200, asked.text
    assert asked.json()["credentials"][0]["credential"]
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_details_naming_every_configuration_once_or_twice_grant_the_offer(env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        code, tx_code = await _offer(http, env)
        token = await _pre_authorized_token(http, env, code, tx_code,
                                            _details("working-life", "tax-compliance", "working-life"))
    assert token.status_code == 200, token.text
    assert _granted(token.json()) == ["working-life", "tax-compliance"]


REFUSED = [
    pytest.param(_details("university-diploma"), id="a-type-of-another-tenant"),
    pytest.param(_details("working-life", "no-such-type"), id="one-unknown-among-good"),
    pytest.param(json.dumps([{"type": "payment_initiation", "credential_configuration_id": "working-life"}]),
                 id="another-details-type"),
    pytest.param(json.dumps([{"type": "openid_credential", "format": "dc+sd-jwt"}]), id="no-configuration-id"),
    pytest.param('[{"type": "openid_credential", "credential_configuration_id": "working-life"', id="not-json"),
    pytest.param("[]", id="empty-array"),
    pytest.param(json.dumps({"type": "openid_credential", "credential_configuration_id": "working-life"}),
                 id="an-object-not-an-array"),
    pytest.param('["working-life"]', id="not-objects"),
]


@pytest.mark.parametrize("details", REFUSED)
async def test_refused_details_leave_the_pre_authorized_code_unspent(env: IssuerEnv, details: str) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        code, tx_code = await _offer(http, env)
        refused = [await _pre_authorized_token(http, env, code, tx_code, details) for _ in range(2)]
        # Without details the same code and transaction code still work, for the whole offer.
        token = await _pre_authorized_token(http, env, code, tx_code)
    for answer in refused:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_authorization_details", answer.text
        assert answer.headers["cache-control"] == "no-store"
    assert token.status_code == 200, token.text
    assert _granted(token.json()) == BOTH


async def test_without_details_the_token_grants_the_whole_offer(env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        code, tx_code = await _offer(http, env)
        # A parameter sent without a value is as if omitted (RFC 6749 §3.1).
        token = await _pre_authorized_token(http, env, code, tx_code, "")
    assert token.status_code == 200, token.text
    assert _granted(token.json()) == BOTH


async def test_an_authorization_code_token_can_be_narrowed_and_a_refusal_keeps_the_code(env: IssuerEnv) -> None:
    base = env.issuer(SLUG)
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        verifier, back = await _login(http, base, " ".join(BOTH), DEMO_EVERYTHING)
        code = back["code"]
        outside = await _token(http, base, code, verifier, client_id=CLIENT,
                               authorization_details=_details("tax-compliance", "university-diploma"))
        malformed = await _token(http, base, code, verifier, client_id=CLIENT, authorization_details="[{")
        narrowed = await _token(http, base, code, verifier, client_id=CLIENT,
                                authorization_details=_details("tax-compliance"))
        assert narrowed.status_code == 200, narrowed.text
        access = narrowed.json()["access_token"]
        other = await _credential(http, env, access, "working-life")
        asked = await _credential(http, env, access, "tax-compliance")
    for refused in (outside, malformed):
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_authorization_details", refused.text
    assert _granted(narrowed.json()) == ["tax-compliance"]
    assert other.status_code == 400 and other.json()["error"] == "credential_request_denied", other.text
    assert asked.status_code == 200, asked.text


async def test_an_authorization_code_token_without_details_grants_what_was_authorized(env: IssuerEnv) -> None:
    base = env.issuer(SLUG)
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        verifier, back = await _login(http, base, " ".join(BOTH), DEMO_EVERYTHING)
        token = await _token(http, base, back["code"], verifier, client_id=CLIENT)
    assert token.status_code == 200, token.text
    assert _granted(token.json()) == BOTH
