"""Registering a credential type whose texts wallets would show with a control character (a bidi
override that makes the card read otherwise, a line break) is refused like any other problem of the
definition: 400 ``invalid_type`` with ``problems`` (path and message), the text never quoted. A type
stored before this rule is still listed, served and described in the issuer's metadata.

A real issuer on loopback (SQLite), with its own tenant; the stored type written to its database."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from issuer.models import CredentialTypeRow, Tenant
from service_kit.db import Database
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv
from tests.issuer.helpers import LIMITS

pytestmark = pytest.mark.anyio

REVERSED = "Certificat \u202e(caducat)"


def _definition(type_id: str, vct: str) -> dict:
    labels = [{"locale": loc, "label": "Name"} for loc in ("ca", "es", "en")]
    return {"id": type_id, "version": "1", "vct": vct, "name": "T",
            "display": [{"locale": loc, "name": "T", "description": "Per a tràmits"} for loc in ("ca", "es", "en")],
            "validity": "P1Y", "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
            "claims": [{"path": ["name"], "display": labels, "source": "subject.name"}]}


async def _tenant(http: httpx.AsyncClient, env: IssuerEnv, slug: str) -> dict[str, str]:
    r = await http.post(f"{env.url}/v1/tenants", json={"slug": slug, "name": "Ajuntament de proves"},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


async def test_a_type_with_a_control_character_in_a_shown_text_is_not_registered(issuer_env: IssuerEnv) -> None:
    origin = "https://" + urlsplit(issuer_env.url).netloc
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        headers = await _tenant(http, issuer_env, "texts-refused")
        vct = origin + "/t/texts-refused/types/shown"
        for where, text in (("display[2].name", REVERSED), ("display[0].description", "Per a\ntràmits"),
                            ("claims[0].display[1].label", "Nom \x1b[2J")):
            definition = _definition("shown", vct)
            if where.startswith("claims"):
                definition["claims"][0]["display"][1]["label"] = text
            else:
                definition["display"][int(where[8])][where.split(".")[-1]] = text
            r = await http.post(f"{issuer_env.url}/v1/types", headers=headers, json={"definition": definition})
            assert r.status_code == 400, r.text
            body = r.json()
            assert body["error"] == "invalid_type"
            assert [p["path"] for p in body["problems"]] == [where]
            assert "control character" in body["problems"][0]["message"]
            assert text not in r.text and json.dumps(text)[1:-1] not in r.text
        assert (await http.get(f"{issuer_env.url}/v1/types", headers=headers)).json() == []
        r = await http.post(f"{issuer_env.url}/v1/types", headers=headers,
                            json={"definition": _definition("shown", vct)})
        assert r.status_code == 201, r.text


async def test_a_type_stored_before_the_rule_is_still_listed_and_served(issuer_env: IssuerEnv) -> None:
    origin = "https://" + urlsplit(issuer_env.url).netloc
    slug = "texts-stored"
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        headers = await _tenant(http, issuer_env, slug)
        definition = _definition("legacy", origin + f"/t/{slug}/types/legacy")
        definition["display"][0]["name"] = REVERSED
        db = Database(issuer_env.settings.database_url)
        try:
            async with db.session() as session:
                tenant_id = (await session.execute(select(Tenant.id).where(Tenant.slug == slug))).scalar_one()
                session.add(CredentialTypeRow(tenant_id=tenant_id, type_id="legacy", version="1",
                                              vct=definition["vct"], definition=definition,
                                              created_at=dt.datetime.now(dt.UTC)))
        finally:
            await db.dispose()
        listed = await http.get(f"{issuer_env.url}/v1/types", headers=headers)
        assert listed.status_code == 200, listed.text
        assert [t["id"] for t in listed.json()] == ["legacy"]
        served = await http.get(f"{issuer_env.url}/t/{slug}/types/legacy")
        assert served.status_code == 200, served.text
        assert served.json()["display"][0]["name"] == REVERSED  # as stored: its hash is in issued credentials
        metadata = await http.get(f"{issuer_env.url}/.well-known/openid-credential-issuer/t/{slug}")
        assert metadata.status_code == 200, metadata.text
