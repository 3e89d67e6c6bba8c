"""Rules on what agencies may ask: holder binding is always required (a query saying
``require_cryptographic_holder_binding: false`` is refused). Real servers on loopback: the session's
verifier (SQLite).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from tests.verifier.conftest import VCT_TAX
from tests.verifier.test_expiry import _in_db
from verifier.models import Agency, Template

UNBOUND = {"id": "tax", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT_TAX]}, "claims": [{"path": ["nif"]}],
           "require_cryptographic_holder_binding": False}


def _template(name: str, *, binding: bool | None = None) -> dict[str, Any]:
    query = {k: v for k, v in UNBOUND.items() if k != "require_cryptographic_holder_binding"}
    if binding is not None:
        query["require_cryptographic_holder_binding"] = binding
    return {"name": name, "dcql_query": {"credentials": [query]}, "purpose": {"en": "Testing"},
            "trusted_issuers": [{"vct": VCT_TAX}], "response_mode": "direct_post"}


def _refused_for_binding(response: Any) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "require_cryptographic_holder_binding" in body["error_description"]
    assert "holder binding" in body["error_description"]


def test_a_template_without_holder_binding_is_refused(http, verifier):
    url, h = f"{verifier.url}/v1/templates", verifier.headers()
    name = f"unbound-{time.time_ns()}"
    _refused_for_binding(http.post(url, json=_template(name, binding=False), headers=h))
    assert http.get(f"{url}/{name}", headers=h).status_code == 404
    # true (the default, said explicitly) is accepted; replacing it by false is refused.
    assert http.post(url, json=_template(name, binding=True), headers=h).status_code == 201
    _refused_for_binding(http.put(f"{url}/{name}", json=_template(name, binding=False), headers=h))
    stored = http.get(f"{url}/{name}", headers=h).json()
    assert stored["dcql_query"]["credentials"][0]["require_cryptographic_holder_binding"] is True


def test_an_ad_hoc_request_without_holder_binding_is_refused(http, verifier):
    body = {"dcql_query": {"credentials": [UNBOUND]}, "purpose": {"en": "Testing"},
            "trusted_issuers": [{"vct": VCT_TAX}], "response_mode": "direct_post"}
    _refused_for_binding(http.post(f"{verifier.url}/v1/requests", json=body, headers=verifier.headers()))
    body["dcql_query"] = {"credentials": [{**UNBOUND, "require_cryptographic_holder_binding": True}]}
    assert http.post(f"{verifier.url}/v1/requests", json=body, headers=verifier.headers()).status_code == 201


def test_a_stored_template_without_holder_binding_makes_no_request(http, verifier):
    """A template stored before such queries were refused is not sent to wallets."""
    name = f"legacy-unbound-{time.time_ns()}"

    async def work(db: Any) -> None:
        from sqlalchemy import select

        async with db.session() as session:
            agency_id = await session.scalar(select(Agency.id).where(Agency.slug == "ajuntament-barcelona"))
            now = dt.datetime.now(dt.UTC)
            session.add(Template(id=str(uuid.uuid4()), agency_id=agency_id, name=name,
                                 dcql_query={"credentials": [UNBOUND]}, purpose={"en": "Testing"},
                                 trusted_issuers=[{"vct": VCT_TAX, "issuers": None, "metadata": False}],
                                 anchors_pem=[], retention_seconds=60, response_mode="direct_post",
                                 created_at=now, updated_at=now))

    _in_db(verifier, work)
    response = http.post(f"{verifier.url}/v1/requests", json={"template": name}, headers=verifier.headers())
    _refused_for_binding(response)
    assert name in response.json()["error_description"]
