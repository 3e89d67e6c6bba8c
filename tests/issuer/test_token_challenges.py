"""The 401 of a protected issuer endpoint challenges in the scheme the request used: an unknown token
sent as ``DPoP`` gets ``DPoP error="invalid_token", algs="..."`` (RFC 9449 §7.1), as ``Bearer`` the
``Bearer`` challenge it always had, and a request without credentials (no header, another scheme)
challenges without an error code (RFC 6750 §3.1), offering both schemes. An ``Authorization`` header that
is not one credential is a malformed request, 400 ``invalid_request`` (RFC 6750 §3.1), challenged in the
request's scheme."""

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


ENDPOINTS = {"credential": {"credential_configuration_id": "tax-compliance"},
             "deferred_credential": {"transaction_id": "x"},
             "notification": {"notification_id": "x", "event": "credential_accepted"}}
MALFORMED = [
    pytest.param([("Authorization", "Bearer")], "Bearer", id="bearer-without-a-token"),
    pytest.param([("Authorization", "Bearer ,")], "Bearer", id="an-empty-list-of-tokens"),
    pytest.param([("Authorization", "Bearer two words")], "Bearer", id="a-token-with-a-space"),
    pytest.param([("Authorization", f"Bearer {UNKNOWN}, DPoP {UNKNOWN}")], "Bearer", id="two-schemes-in-one-header"),
    pytest.param([("Authorization", f"Bearer DPoP {UNKNOWN}")], "Bearer", id="a-scheme-as-the-token"),
    pytest.param([("Authorization", "DPoP")], "DPoP", id="dpop-without-a-token"),
    pytest.param([("Authorization", f"DPoP {UNKNOWN} {UNKNOWN}")], "DPoP", id="dpop-two-tokens"),
    pytest.param([("Authorization", f"Bearer {UNKNOWN}"), ("Authorization", f"Bearer {UNKNOWN}")], "Bearer",
                 id="two-authorization-headers"),
    pytest.param([("Authorization", f"DPoP {UNKNOWN}"), ("Authorization", f"Bearer {UNKNOWN}")], "DPoP",
                 id="two-headers-two-schemes"),
]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize(("headers", "scheme"), MALFORMED)
async def test_an_unusable_authorization_header_is_a_malformed_request(issuer_env: IssuerEnv, endpoint: str,
                                                                       headers: list[tuple[str, str]],
                                                                       scheme: str) -> None:
    """RFC 6750 §3.1: a request that is malformed (no token after the scheme, more than one token or
    header) is 400 invalid_request, not the invalid_token of a token that is merely unknown; the
    challenge is in the scheme the request used (RFC 9449 §7.1 for DPoP, with its algs)."""
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{issuer_env.issuer(SLUG)}/{endpoint}", json=ENDPOINTS[endpoint], headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert r.headers["cache-control"] == "no-store"
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith(f'{scheme} error="invalid_request"'), challenge
    assert ("algs=" in challenge) is (scheme == "DPoP")


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_another_scheme_is_no_credentials_and_is_challenged_without_an_error(issuer_env: IssuerEnv,
                                                                                    endpoint: str) -> None:
    """A Basic header carries no credentials this issuer takes: RFC 6750 §3.1, no error code."""
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{issuer_env.issuer(SLUG)}/{endpoint}", json=ENDPOINTS[endpoint],
                            headers={"Authorization": "Basic d2FsbGV0OnNlY3JldA=="})
    assert r.status_code == 401, r.text
    assert "error=" not in r.headers["www-authenticate"]
    assert r.headers["www-authenticate"].startswith('Bearer, DPoP algs="')
