"""Both OpenID4VCI flows end to end over real HTTP, for every built-in type, verified with the sd-jwt library."""

from __future__ import annotations

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import create_offer, verify_with_reference_library, verify_with_ssi
from tests.support.wallet_client import WalletClient

pytestmark = pytest.mark.anyio

CASES = [("uni-barcelona", "university-diploma"), ("aoc-tax", "tax-compliance"), ("aoc-tax", "working-life"),
         ("ajuntament-girona", "padro")]


@pytest.mark.parametrize(("slug", "type_id"), CASES)
async def test_pre_authorized_flow_issues_each_builtin_type(issuer_env: IssuerEnv, slug: str, type_id: str) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        offer = await create_offer(http, issuer_env, slug, type_id, DEMO_EVERYTHING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
    assert len(result.credentials) == 1
    claims = verify_with_ssi(issuer_env, result.credentials[0], result.holder_keys[0])
    assert claims["vct"].endswith(type_id + "/v1")
    assert claims["iss"] == issuer_env.issuer(slug)
    reference = verify_with_reference_library(issuer_env, result.credentials[0], result.holder_keys[0])
    assert reference["iss"] == issuer_env.issuer(slug)
    assert "status" in reference and reference["cnf"]["jwk"]["kty"] == "EC"
