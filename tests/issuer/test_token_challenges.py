"""The 401 of a protected issuer endpoint challenges in the scheme the request used: an unknown token
sent as ``DPoP`` gets ``DPoP error="invalid_token", algs="..."`` (RFC 9449 §7.1), as ``Bearer`` the
``Bearer`` challenge it always had, and a request without credentials challenges without an error
code (RFC 6750 §3.1), offering both schemes."""

from __future__ import annotations

import httpx
import pytest

from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS

pytestmark = pytest.mark.anyio
SLUG = "aoc-tax"
UNKNOWN = "not-a-token-of-this-issuer"


async def _challenges(env: IssuerEnv, endpoint: str, body: dict[str, str]) -> dict[str, str]:
    url = f"{env.issuer(SLUG)}/{endpoint}"
    out: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        for name, headers in {"none": {}, "bearer": {"Authorization": f"Bearer {UNKNOWN}"},
                              "dpop": {"Authorization": f"DPoP {UNKNOWN}"}}.items():
            r = await http.post(url, json=body, headers=headers)
            assert r.status_code == 401, (endpoint, name, r.text)
            assert r.json()["error"] == "invalid_token"
            out[name] = r.headers["www-authenticate"]
    return out


@pytest.mark.parametrize("endpoint", ["credential", "notification"])
async def test_unknown_tokens_are_challenged_in_their_scheme(issuer_env: IssuerEnv, endpoint: str) -> None:
    body = {"credential_configuration_id": "tax-compliance"} if endpoint == "credential" else \
        {"notification_id": "x", "event": "credential_accepted"}
    seen = await _challenges(issuer_env, endpoint, body)
    assert seen["bearer"] == 'Bearer error="invalid_token"'
    assert seen["dpop"].startswith('DPoP error="invalid_token", algs="'), seen["dpop"]
    assert "ES256" in seen["dpop"].split("algs=")[1]
    assert "error=" not in seen["none"], seen["none"]
    assert seen["none"].startswith("Bearer, DPoP algs=\""), seen["none"]


async def test_the_deferred_endpoint_challenges_a_request_without_credentials_without_an_error(
        issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{issuer_env.issuer(SLUG)}/deferred_credential", json={"transaction_id": "x"})
    assert r.status_code == 401
    assert "error=" not in r.headers["www-authenticate"]
    assert r.headers["www-authenticate"].startswith('Bearer, DPoP algs="')
