"""Key proofs at the credential endpoint: a batch binds each credential to its own key, and a proof
without a c_nonce is invalid_proof (OpenID4VCI 1.0 §8.3.1.2: invalid_nonce is for a c_nonce present
but not valid, which a wallet answers by fetching a fresh one)."""

from __future__ import annotations

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from ssi.jose import Key
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT, build_proof_jwt
from ssi.sd_jwt import SDJWT
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer

pytestmark = pytest.mark.anyio
SLUG, TYPE = "aoc-tax", "tax-compliance"


async def _access(http: httpx.AsyncClient, env: IssuerEnv) -> str:
    offer = await create_offer(http, env, SLUG, TYPE, DEMO_EVERYTHING)
    code = offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"]
    answer = await http.post(f"{env.issuer(SLUG)}/token", data={
        "grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code, "tx_code": offer["tx_code"]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


async def _request(http: httpx.AsyncClient, env: IssuerEnv, access: str, proofs: list[str]) -> httpx.Response:
    return await http.post(f"{env.issuer(SLUG)}/credential", headers={"Authorization": f"Bearer {access}"},
                           json={"credential_identifier": TYPE, "proofs": {"jwt": proofs}})


async def _nonce(http: httpx.AsyncClient, env: IssuerEnv) -> str:
    return str((await http.post(f"{env.issuer(SLUG)}/nonce")).json()["c_nonce"])


async def test_a_batch_with_one_key_twice_is_refused(issuer_env: IssuerEnv) -> None:
    env, base = issuer_env, issuer_env.issuer(SLUG)
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        access = await _access(http, env)
        same, other = Key.generate(), Key.generate()
        twice = [build_proof_jwt(same, audience=base, nonce=await _nonce(http, env)) for _ in range(2)]
        refused = await _request(http, env, access, [*twice, build_proof_jwt(other, audience=base,
                                                                               nonce=await _nonce(http, env))])
        # The refusal spent nothing: the same token then gets a batch of distinct keys.
        keys = [Key.generate(), Key.generate()]
        issued = await _request(http, env, access, [build_proof_jwt(k, audience=base, nonce=await _nonce(http, env))
                                                    for k in keys])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_proof", refused.text
    assert issued.status_code == 200, issued.text
    bound = [SDJWT.parse(c["credential"]).payload["cnf"]["jwk"] for c in issued.json()["credentials"]]
    assert sorted(Key.from_jwk(jwk).thumbprint() for jwk in bound) == sorted(k.thumbprint() for k in keys)


async def test_a_proof_without_a_nonce_is_invalid_proof(issuer_env: IssuerEnv) -> None:
    env, base = issuer_env, issuer_env.issuer(SLUG)
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        access = await _access(http, env)
        missing = await _request(http, env, access, [build_proof_jwt(Key.generate(), audience=base, nonce=None)])
        wrong = await _request(http, env, access, [build_proof_jwt(Key.generate(), audience=base, nonce="not-ours")])
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_proof", missing.text
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_nonce", wrong.text
