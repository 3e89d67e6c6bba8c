"""End to end with the real issuer service: credentials issued over OpenID4VCI, presented over OpenID4VP.

The issuer (with the simulated Via Oberta and identity provider) comes from the issuer tests' fixtures;
the verifier trusts the issuer's CA and fetches the issuer's real status lists. Both response modes,
and the PostgreSQL backend for one full flow.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from tests.issuer.conftest import IssuerEnv, issuer_env, pg_issuer_env, sandbox  # noqa: F401 - fixtures
from tests.issuer.helpers import create_offer
from tests.support.presenter import HeldCredential
from tests.support.wallet_client import WalletClient
from tests.verifier.conftest import new_request, read_result, start_verifier


def _receive(env: IssuerEnv, slug: str, type_id: str) -> HeldCredential:
    async def run() -> HeldCredential:
        async with httpx.AsyncClient(timeout=20) as http:
            offer = await create_offer(http, env, slug, type_id, DEMO_EVERYTHING)
            result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        return HeldCredential(result.credentials[0], result.holder_keys[0])

    return asyncio.run(run())


@pytest.fixture(scope="module")
def verifier_for_issuer(issuer_env, pki, tmp_path_factory):  # noqa: F811 - pytest fixture injection
    with start_verifier(tmp_path_factory.mktemp("verifier-e2e"), pki, anchors_cert=issuer_env.sandbox.ca_cert,
                        issuers={}, vcts={}) as running:
        yield running


@pytest.mark.parametrize("mode", ["direct_post", "direct_post.jwt"])
def test_issued_tax_credential_is_verified(issuer_env, verifier_for_issuer, http, wallet, mode):  # noqa: F811
    held = _receive(issuer_env, "aoc-tax", "tax-compliance")
    created = new_request(http, verifier_for_issuer, response_mode=mode)
    response = wallet.present(created["uri"], [held])
    assert response.status_code == 200, response.text
    result = read_result(http, verifier_for_issuer, created["id"])
    assert result["status"] == "verified", result["errors"]
    assert result["claims"]["tax"]["nif"] == DEMO_EVERYTHING
    assert result["claims"]["tax"]["complianceStatus"] == "POSITIVE"
    assert result["credentials"]["tax"][0]["issuer"] == issuer_env.issuer("aoc-tax")


def test_issued_diploma_for_job_application(issuer_env, verifier_for_issuer, http, wallet):  # noqa: F811
    held = _receive(issuer_env, "uni-barcelona", "university-diploma")
    created = new_request(http, verifier_for_issuer, "uni-admissions", template="job-application")
    assert wallet.present(created["uri"], [held]).status_code == 200
    result = read_result(http, verifier_for_issuer, created["id"], "uni-admissions")
    assert result["status"] == "verified", result["errors"]
    assert set(result["claims"]["diploma"]) == {"title", "awardingBody"}


def test_revoked_by_the_issuer_is_rejected(issuer_env, pki, tmp_path, http, wallet):  # noqa: F811
    async def issue() -> tuple[HeldCredential, str]:
        async with httpx.AsyncClient(timeout=20) as client:
            offer = await create_offer(client, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
            result = await WalletClient(client).receive_offer(offer["offer_uri"], offer["tx_code"])
            records = await client.get(f"{issuer_env.url}/v1/credentials",
                                       params={"type": "tax-compliance", "limit": 500},
                                       headers=issuer_env.headers("aoc-tax"))
        newest = max(records.json()["items"], key=lambda r: r["issued_at"])
        return HeldCredential(result.credentials[0], result.holder_keys[0]), newest["credential_id"]

    held, credential_id = asyncio.run(issue())
    revoked = http.post(f"{issuer_env.url}/v1/credentials/{credential_id}/revoke", headers=issuer_env.headers("aoc-tax"))
    assert revoked.status_code == 200, revoked.text
    # A verifier that has not cached the list yet: it fetches the issuer's list and sees the revocation.
    with start_verifier(tmp_path, pki, anchors_cert=issuer_env.sandbox.ca_cert, issuers={}, vcts={}) as running:
        created = new_request(http, running)
        response = wallet.present(created["uri"], [held])
        assert response.status_code == 400
        assert [e["code"] for e in response.json()["errors"]] == ["verifier.revoked"]
        assert read_result(http, running, created["id"])["status"] == "rejected"


def test_full_flow_on_postgresql(pg_issuer_env, pki, postgres_cluster, tmp_path, http, wallet):  # noqa: F811
    url = postgres_cluster.create_database()
    held = _receive(pg_issuer_env, "aoc-tax", "tax-compliance")
    with start_verifier(tmp_path, pki, url, anchors_cert=pg_issuer_env.sandbox.ca_cert, issuers={},
                        vcts={}) as running:
        for mode in ("direct_post", "direct_post.jwt"):
            created = new_request(http, running, response_mode=mode)
            request = wallet.fetch_request(created["uri"])
            vp_token = wallet.build_vp_token(request, [held])
            assert wallet.post_response(request, vp_token).status_code == 200
            assert read_result(http, running, created["id"])["status"] == "verified"
            # The same answer again: refused, the result unchanged.
            again = wallet.post_response(request, vp_token)
            assert again.status_code == 400
            assert again.json()["code"] == "verifier.already_answered"
