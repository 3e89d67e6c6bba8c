"""DPoP-bound access tokens (RFC 9449) end to end: binding, presentation rules, replayed and foreign proofs."""

from __future__ import annotations

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING, DEMO_PENDING
from ssi.dpop import build_dpop_proof
from ssi.jose import Key
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer, verify_with_ssi
from tests.support.wallet_client import WalletClient

pytestmark = pytest.mark.anyio


async def test_dpop_bound_flows_issue_and_record_the_binding(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        wallet = WalletClient(http, dpop_key=Key.generate())
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        result = await wallet.receive_offer(offer["offer_uri"], offer["tx_code"])
        assert result.token_response["token_type"] == "DPoP"
        assert (await wallet.notify(result)).status_code == 204
        auth = await wallet.authorize_and_receive(issuer_env.issuer("uni-barcelona"), "university-diploma",
                                                  login_hint=DEMO_EVERYTHING)
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_PENDING)
        pending = await wallet.receive_offer(offer["offer_uri"], offer["tx_code"])
        done = await wallet.poll_deferred(pending, attempts=50, wait=0.1)
        metadata = (await http.get(f"{issuer_env.url}/.well-known/oauth-authorization-server/t/aoc-tax")).json()
    verify_with_ssi(issuer_env, result.credentials[0], result.holder_keys[0])
    verify_with_ssi(issuer_env, auth.credentials[0], auth.holder_keys[0])
    assert done.credentials
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]


async def test_dpop_token_misuse_is_refused(issuer_env: IssuerEnv) -> None:
    dpop_key = Key.generate()
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        wallet = WalletClient(http, dpop_key=dpop_key)
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        ready = await wallet.redeem_offer(offer["offer_uri"], offer["tx_code"])
        url = ready.issuer_metadata["credential_endpoint"]
        nonce = await wallet.nonce(ready.issuer_metadata)
        body = {"credential_configuration_id": "tax-compliance",
                "proofs": {"jwt": wallet.proofs([Key.generate()], ready.issuer, nonce)}}
        token = ready.access_token
        cases = {
            "as bearer": {"Authorization": f"Bearer {token}"},
            "no proof": {"Authorization": f"DPoP {token}"},
            "other key": {"Authorization": f"DPoP {token}",
                          "DPoP": build_dpop_proof(Key.generate(), "POST", url, access_token=token)},
            "no ath": {"Authorization": f"DPoP {token}", "DPoP": build_dpop_proof(dpop_key, "POST", url)},
            "other url": {"Authorization": f"DPoP {token}",
                          "DPoP": build_dpop_proof(dpop_key, "POST", url + "x", access_token=token)},
        }
        for name, headers in cases.items():
            r = await http.post(url, json=body, headers=headers)
            assert r.status_code == 401, name
            assert r.headers["www-authenticate"].startswith("DPoP"), name
        proof = build_dpop_proof(dpop_key, "POST", url, access_token=token)
        first = await http.post(url, json=body, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
        replay = await http.post(url, json=body, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
        # a bearer token presented with the DPoP scheme is refused too
        offer2 = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING, tx_code=False)
        bearer_ready = await WalletClient(http).redeem_offer(offer2["offer_uri"])
        wrong_scheme = await http.post(url, json=body, headers={"Authorization": f"DPoP {bearer_ready.access_token}"})
        # a bad proof at the token endpoint does not spend the code
        offer3 = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING, tx_code=False)
        code = (await wallet.resolve_offer(offer3["offer_uri"])).grants.pre_authorized_code.pre_authorized_code
        token_url = f"{issuer_env.issuer('aoc-tax')}/token"
        form = {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code}
        bad = await http.post(token_url, data=form, headers={"DPoP": build_dpop_proof(dpop_key, "GET", token_url)})
        good = await http.post(token_url, data=form, headers={"DPoP": build_dpop_proof(dpop_key, "POST", token_url)})
    assert first.status_code == 200, first.text
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_dpop_proof"
    assert wrong_scheme.status_code == 401
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_dpop_proof"
    assert good.status_code == 200 and good.json()["token_type"] == "DPoP"
