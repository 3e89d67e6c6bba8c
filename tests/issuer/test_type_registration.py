"""Registering tenant types through the admin API: what the issuer refuses beyond the definition itself."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

import httpx
import pytest

from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS

pytestmark = pytest.mark.anyio


def _definition(type_id: str, vct: str) -> dict:
    labels = [{"locale": loc, "label": "Name"} for loc in ("ca", "es", "en")]
    return {"id": type_id, "version": "1", "vct": vct, "name": "T",
            "display": [{"locale": loc, "name": "T"} for loc in ("ca", "es", "en")], "validity": "P1Y",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
            "claims": [{"path": ["name"], "display": labels, "source": "subject.name"}]}


async def test_a_vct_on_the_issuers_origin_must_be_under_the_tenants_own_path(issuer_env: IssuerEnv) -> None:
    # The issuer serves https in production; the test issuer's origin is http://127.0.0.1:<port>.
    origin = "https://" + urlsplit(issuer_env.url).netloc
    headers = issuer_env.headers("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        for i, path in enumerate(["/t/aoc-tax/types/foreign-vct-{i}", "/t/uni-barcelona/../aoc-tax/types/x",
                                  "/types/x", "/t/uni-barcelona", "/t/uni-barcelona/types/own-vct"]):
            path = path.replace("{i}", str(i))
            r = await http.post(f"{issuer_env.url}/v1/types", headers=headers,
                                json={"definition": _definition(f"foreign-vct-{i}", origin + path)})
            assert r.status_code == 400, (path, r.text)
            assert [p["path"] for p in r.json()["problems"]] == ["vct"]
        # The same origin spelt otherwise: a trailing dot on the host.
        host, port = urlsplit(issuer_env.url).hostname, urlsplit(issuer_env.url).port
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers, json={
            "definition": _definition("dotted-vct", f"https://{host}.:{port}/t/aoc-tax/types/x")})
        assert r.status_code == 400 and r.json()["problems"][0]["path"] == "vct", r.text
        # A port no URL can have is a problem of the definition, not a 500.
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers, json={
            "definition": _definition("bad-port-vct", f"https://{host}:99999/t/uni-barcelona/types/bad-port-vct")})
        assert r.status_code == 400 and r.json()["problems"][0]["path"] == "vct", r.text
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers, json={
            "definition": _definition("own-vct", origin + "/t/uni-barcelona/types/own-vct")})
        assert r.status_code == 201, r.text
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers, json={
            "definition": _definition("elsewhere-vct", "https://types.example.org/t/aoc-tax/types/x")})
        assert r.status_code == 201, r.text


async def test_a_new_version_cannot_change_the_metadata_published_at_its_vct(issuer_env: IssuerEnv) -> None:
    origin = "https://" + urlsplit(issuer_env.url).netloc
    vct = origin + "/t/uni-barcelona/types/versioned"
    headers = issuer_env.headers("uni-barcelona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers,
                            json={"definition": _definition("versioned", vct)})
        assert r.status_code == 201, r.text
        integrity = r.json()["vct_integrity"]
        renamed = {**_definition("versioned", vct), "version": "2", "name": "Renamed"}
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers, json={"definition": renamed})
        assert r.status_code == 409 and r.json()["error"] == "vct_in_use", r.text
        # nor can another type take over the vct
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers,
                            json={"definition": {**renamed, "id": "versioned-copy"}})
        assert r.status_code == 400 and r.json()["problems"][0]["path"] == "vct", r.text
        # a version that changes only what the metadata does not carry (the mapping, validity) is fine
        same = {**_definition("versioned", vct), "version": "2", "validity": "P2Y"}
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers, json={"definition": same})
        assert r.status_code == 201 and r.json()["vct_integrity"] == integrity, r.text
        # new metadata: a new type (its own vct); the old vct still serves what old credentials hashed
        moved = {**renamed, "id": "versioned-v3", "vct": origin + "/t/uni-barcelona/types/versioned-v3"}
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers, json={"definition": moved})
        assert r.status_code == 201, r.text
        served = await http.get(f"{issuer_env.url}/t/uni-barcelona/types/versioned")
        assert "sha256-" + base64.b64encode(hashlib.sha256(served.content).digest()).decode() == integrity
