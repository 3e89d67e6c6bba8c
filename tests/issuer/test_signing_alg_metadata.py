"""``credential_signing_alg_values_supported`` names the algorithms of the tenant's keys (the active
key's first, then those still published), not a fixed ES256: a tenant may sign with an ES384 key
(or EdDSA)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from issuer.keys import issue_tenant_certificate
from ssi import x509 as ssi_x509
from ssi.jose import Key
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv
from tests.issuer.helpers import LIMITS, own_builtin

pytestmark = pytest.mark.anyio


async def _algorithms(http: httpx.AsyncClient, env: IssuerEnv, slug: str) -> list[str]:
    answer = await http.get(f"{env.url}/.well-known/openid-credential-issuer/t/{slug}")
    assert answer.status_code == 200, answer.text
    [configuration] = answer.json()["credential_configurations_supported"].values()
    suffix = await http.get(f"{env.issuer(slug)}/.well-known/openid-credential-issuer")
    assert suffix.json() == answer.json()
    return list(configuration["credential_signing_alg_values_supported"])


async def test_the_metadata_names_the_algorithms_of_the_tenants_keys(issuer_env: IssuerEnv) -> None:
    env, slug = issuer_env, "algs-" + secrets.token_hex(4)
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        created = await http.post(f"{env.url}/v1/tenants", json={"slug": slug, "name": "Algorismes"},
                                  headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert created.status_code == 201, created.text
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
        registered = await http.post(f"{env.url}/v1/types", headers=headers,
                                     json={"definition": own_builtin(env.url, slug, "tax-compliance")})
        assert registered.status_code == 201, registered.text
        seen = [await _algorithms(http, env, slug)]
        key = Key.generate("ES384")
        cert = issue_tenant_certificate(env.sandbox.ca_key, env.sandbox.ca_cert, key, env.issuer(slug), "Algorismes")
        rotated = await http.post(f"{env.url}/v1/keys/rotate", headers=headers, json={
            "private_key_pem": key.private_pem().decode(), "certificate_chain_pem": ssi_x509.cert_to_pem(cert).decode()})
        assert rotated.status_code == 201, rotated.text
        # One worker: the rotation cleared its cache, so the metadata changes at once.
        seen.append(await _algorithms(http, env, slug))
        rotated = await http.post(f"{env.url}/v1/keys/rotate", headers=headers, json={})  # a new ES256 key, by the CA
        assert rotated.status_code == 201, rotated.text
        seen.append(await _algorithms(http, env, slug))
    # The retired keys' certificates are still valid: their credentials still verify, so their
    # algorithms stay listed, after the active key's.
    assert seen == [["ES256"], ["ES384", "ES256"], ["ES256", "ES384"]]
