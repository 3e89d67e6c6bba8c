"""A code presented twice revokes its token (RFC 9700 §4.5.3.1): the token's deferred transaction goes
with it, although the deferred endpoint otherwise accepts an expired token on purpose."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sandbox.population import DEMO_PENDING
from ssi.jose import Key
from ssi.oid4vci import build_proof_jwt
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS
from tests.issuer.test_authorization_code import CLIENT, _login, _token

pytestmark = pytest.mark.anyio


async def _deferred(http: httpx.AsyncClient, base: str) -> tuple[str, str, dict, str]:
    """Log the pending citizen in, redeem the code and request the credential: (access, transaction id,
    the code's token form, verifier)."""
    verifier, back = await _login(http, base, "tax-compliance", DEMO_PENDING)
    first = await _token(http, base, back["code"], verifier, client_id=CLIENT)
    assert first.status_code == 200, first.text
    access = first.json()["access_token"]
    nonce = (await http.post(f"{base}/nonce")).json()["c_nonce"]
    answer = await http.post(f"{base}/credential", headers={"Authorization": f"Bearer {access}"}, json={
        "credential_identifier": "tax-compliance",
        "proofs": {"jwt": [build_proof_jwt(Key.generate(), audience=base, nonce=nonce)]}})
    assert answer.status_code == 202, answer.text
    return access, answer.json()["transaction_id"], back, verifier


async def _poll(http: httpx.AsyncClient, base: str, access: str, transaction_id: str) -> httpx.Response:
    for _ in range(10):
        answer = await http.post(f"{base}/deferred_credential", json={"transaction_id": transaction_id},
                                 headers={"Authorization": f"Bearer {access}"})
        if answer.status_code != 202:
            return answer
        await asyncio.sleep(answer.json().get("interval", 1))
    return answer


async def test_a_replayed_code_voids_the_deferred_transaction_of_its_token(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        access, transaction_id, back, verifier = await _deferred(http, base)
        replay = await _token(http, base, back["code"], verifier, client_id=CLIENT)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        revoked = await _poll(http, base, access, transaction_id)
        # A transaction whose code was not replayed still completes.
        access, transaction_id, _, _ = await _deferred(http, base)
        kept = await _poll(http, base, access, transaction_id)
    assert revoked.status_code == 400, revoked.text
    assert revoked.json()["error"] == "invalid_transaction_id"
    assert kept.status_code == 200, kept.text
    assert kept.json()["credentials"]
