"""Tenant admin API keys: listed (never the key), revoked (tenant-scoped), never all of them."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.issuer.conftest import ADMIN_KEY, IssuerEnv
from tests.issuer.helpers import LIMITS

pytestmark = pytest.mark.anyio


async def new_tenant(http: httpx.AsyncClient, env: IssuerEnv) -> dict[str, str]:
    """A tenant of its own (revoking keys of the shared demo tenants would break other tests)."""
    slug = "keys-" + secrets.token_hex(4)
    r = await http.post(f"{env.url}/v1/tenants", json={"slug": slug, "name": slug},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


async def add_key(http: httpx.AsyncClient, env: IssuerEnv, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    r = await http.post(f"{env.url}/v1/tenant/api-keys", headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["key_id"], {"Authorization": f"Bearer {r.json()['api_key']}"}


async def test_keys_are_listed_without_the_key_or_its_hash(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        first = await new_tenant(http, issuer_env)
        second_id, second = await add_key(http, issuer_env, first)
        r = await http.get(f"{issuer_env.url}/v1/tenant/api-keys", headers=second)
        assert r.status_code == 200, r.text
        keys = r.json()
        assert [k["label"] for k in keys] == ["initial", "api"]
        assert {k["key_id"]: k["current"] for k in keys}[second_id] is True
        assert not any(k["revoked"] for k in keys)
        assert all(set(k) == {"key_id", "label", "created_at", "revoked", "current"} for k in keys)
        secret = second["Authorization"].removeprefix("Bearer ")
        assert secret not in r.text and "sha256" not in r.text


async def test_a_revoked_key_is_refused_and_the_last_key_cannot_be_revoked(issuer_env: IssuerEnv) -> None:
    url = issuer_env.url
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        first = await new_tenant(http, issuer_env)
        keys = (await http.get(f"{url}/v1/tenant/api-keys", headers=first)).json()
        first_id = keys[0]["key_id"]
        leaked_id, leaked = await add_key(http, issuer_env, first)
        assert (await http.get(f"{url}/v1/tenant", headers=leaked)).status_code == 200  # cached on this worker
        r = await http.delete(f"{url}/v1/tenant/api-keys/{leaked_id}", headers=first)
        assert r.status_code == 200, r.text
        assert r.json()["key_id"] == leaked_id and r.json()["revoked"] is True
        # refused at once by the worker that revoked it: it can neither read nor mint more keys
        assert (await http.get(f"{url}/v1/tenant", headers=leaked)).status_code == 401
        assert (await http.post(f"{url}/v1/tenant/api-keys", headers=leaked)).status_code == 401
        listed = {k["key_id"]: k["revoked"] for k in (await http.get(f"{url}/v1/tenant/api-keys", headers=first)).json()}
        assert listed == {first_id: False, leaked_id: True}
        # revoking it again changes nothing
        assert (await http.delete(f"{url}/v1/tenant/api-keys/{leaked_id}", headers=first)).status_code == 200
        # the tenant's last valid key (here: the one making the request) is not revoked: no lock-out
        r = await http.delete(f"{url}/v1/tenant/api-keys/{first_id}", headers=first)
        assert r.status_code == 409 and "last" in r.json()["error_description"]
        assert (await http.get(f"{url}/v1/tenant", headers=first)).status_code == 200
        # with another key made first, a key may revoke itself
        _, replacement = await add_key(http, issuer_env, first)
        assert (await http.delete(f"{url}/v1/tenant/api-keys/{first_id}", headers=first)).status_code == 200
        assert (await http.get(f"{url}/v1/tenant", headers=first)).status_code == 401
        assert (await http.get(f"{url}/v1/tenant", headers=replacement)).status_code == 200


async def test_another_tenants_key_id_is_not_found(issuer_env: IssuerEnv) -> None:
    url = issuer_env.url
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        mine = await new_tenant(http, issuer_env)
        theirs = await new_tenant(http, issuer_env)
        their_id, their_key = await add_key(http, issuer_env, theirs)
        for key_id in (their_id, "k_nosuchkey"):
            r = await http.delete(f"{url}/v1/tenant/api-keys/{key_id}", headers=mine)
            assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert (await http.get(f"{url}/v1/tenant", headers=their_key)).status_code == 200
        listed = (await http.get(f"{url}/v1/tenant/api-keys", headers=mine)).json()
        assert their_id not in {k["key_id"] for k in listed}
        assert (await http.get(f"{url}/v1/tenant/api-keys")).status_code == 401


async def test_the_key_endpoints_are_typed_in_the_openapi_schema(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        schema = (await http.get(f"{issuer_env.url}/openapi.json")).json()
    paths = schema["paths"]
    listed = paths["/v1/tenant/api-keys"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["items"]["$ref"].endswith("/ApiKeyInfo")
    revoked = paths["/v1/tenant/api-keys/{key_id}"]["delete"]["responses"]
    assert revoked["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ApiKeyInfo")
    assert {"404", "409"} <= set(revoked)
    assert set(schema["components"]["schemas"]["ApiKeyInfo"]["properties"]) == {
        "key_id", "label", "created_at", "revoked", "current"}
