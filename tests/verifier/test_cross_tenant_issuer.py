"""The cross-tenant attack, end to end with the real issuer: a town council issuing tax certificates.

Every tenant of the issuer service is certified by the one issuers CA. The town council tenant
registered the tax agency's ``vct``, connected a REST registry of its own answering "POSITIVO", and
issued tax certificates that a template trusting "any issuer chaining to the anchors" verified.
Both layers now refuse it: the issuer refuses the registration (``vct_taken``), and a verifier
accepts a credential only from the issuers its rule lists, so even a type registered so before the
upgrade issues nothing a verifier accepts (``verifier.issuer_not_trusted_for_vct``; and
``verifier.trust_rule_without_issuers`` for a request made, outside development mode, with a rule
listing none).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from issuer.models import CredentialTypeRow
from issuer.registry import builtin_definition
from sandbox.population import DEMO_EVERYTHING
from service_kit.db import Database
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv, issuer_env, sandbox  # noqa: F401 - fixtures
from tests.issuer.helpers import create_offer
from tests.support.presenter import HeldCredential
from tests.support.servers import serve
from tests.support.wallet_client import WalletClient
from tests.verifier.conftest import new_request, read_result, start_verifier
from tests.verifier.test_expiry import _set
from tests.verifier.test_trust_rule_issuers import production_verifier

TAX_VCT = "https://types.cartera.example/tax-compliance/v1"
ROGUE = "rogue-council"


def _forged_registry() -> FastAPI:
    app = FastAPI()

    @app.get("/tax/{identifier}")
    def record(identifier: str) -> dict[str, Any]:
        return {"Certificado": {"Resultado": "POSITIVO", "ReferenciaAEAT": "FORGED-1", "FechaEmision": "20261201"}}

    return app


async def _store_type_as_before_the_upgrade(env: IssuerEnv, tenant_id: str) -> None:
    """The tax type written for the tenant straight into the database, as a registration made before
    a vct belonged to one tenant left it (no claim in vct_owners)."""
    db = Database(env.settings.database_url)
    try:
        async with db.session() as session:
            session.add(CredentialTypeRow(tenant_id=tenant_id, type_id="tax-compliance", version="1.0",
                                          vct=TAX_VCT, definition=builtin_definition("tax-compliance"),
                                          created_at=dt.datetime.now(dt.UTC)))
    finally:
        await db.dispose()


async def _rogue_tax_certificate(env: IssuerEnv, registry_url: str) -> HeldCredential:
    async with httpx.AsyncClient(timeout=20) as http:
        # The attack as the reviewer found it: refused now.
        refused = await http.post(f"{env.url}/v1/types", json={"builtin": "tax-compliance"},
                                  headers=env.headers("ajuntament-girona"))
        assert refused.status_code == 409 and refused.json()["error"] == "vct_taken", refused.text
        created = await http.post(f"{env.url}/v1/tenants", json={"slug": ROGUE, "name": "Rogue council"},
                                  headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert created.status_code == 201, created.text
        env.api_keys[ROGUE] = created.json()["api_key"]
        await _store_type_as_before_the_upgrade(env, created.json()["tenant_id"])
        source = await http.put(f"{env.url}/v1/types/tax-compliance/source", headers=env.headers(ROGUE), json={
            "kind": "rest", "url": registry_url + "/tax/{identifier}",
            "context": {"purpose": "Subvencions", "procedure": "SUBV", "consent": "Si", "official_name": "Rogue",
                        "official_nif": "11111111H"}})
        assert source.status_code == 200, source.text
        offer = await create_offer(http, env, ROGUE, "tax-compliance", DEMO_EVERYTHING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        return HeldCredential(result.credentials[0], result.holder_keys[0])


async def _tax_certificate(env: IssuerEnv) -> HeldCredential:
    async with httpx.AsyncClient(timeout=20) as http:
        offer = await create_offer(http, env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        return HeldCredential(result.credentials[0], result.holder_keys[0])


@pytest.fixture(scope="module")
def rogue(issuer_env: IssuerEnv) -> HeldCredential:  # noqa: F811 - pytest fixture injection
    with serve(_forged_registry()) as registry_url:
        held = asyncio.run(_rogue_tax_certificate(issuer_env, registry_url))
    # What made the attack work: the certificate is the real issuer's, for the tax vct, "POSITIVE".
    claims = {d.name: d.value for d in held.parsed.disclosures}
    assert held.parsed.payload["vct"] == TAX_VCT and claims["complianceStatus"] == "POSITIVE"
    assert held.parsed.payload["iss"] == issuer_env.issuer(ROGUE)
    return held


def test_a_verifier_listing_the_tax_agency_rejects_the_councils_tax_certificate(
        issuer_env, rogue, pki, tmp_path, http, wallet):  # noqa: F811
    real = asyncio.run(_tax_certificate(issuer_env))
    with start_verifier(tmp_path, pki, anchors_cert=issuer_env.sandbox.ca_cert, vcts={"tax": TAX_VCT},
                        issuers={"tax": [issuer_env.issuer("aoc-tax")]}) as running:
        created = new_request(http, running)
        response = wallet.present(created["uri"], [rogue])
        assert response.status_code == 400, response.text
        assert [e["code"] for e in response.json()["errors"]] == ["verifier.issuer_not_trusted_for_vct"]
        assert read_result(http, running, created["id"])["status"] == "rejected"
        created = new_request(http, running)
        assert wallet.present(created["uri"], [real]).status_code == 200
        result = read_result(http, running, created["id"])
        assert result["status"] == "verified", result["errors"]
        assert result["credentials"]["tax"][0]["issuer"] == issuer_env.issuer("aoc-tax")


def test_outside_development_mode_a_request_listing_no_issuers_rejects_it_too(
        issuer_env, rogue, pki, tmp_path, http, wallet):  # noqa: F811
    listed = [issuer_env.issuer("aoc-tax")]
    with production_verifier(tmp_path, pki, anchors_cert=issuer_env.sandbox.ca_cert,
                             vcts={"tax": TAX_VCT, "diploma": "urn:x:diploma", "padro": "urn:x:padro"},
                             issuers={"tax": listed, "diploma": listed, "padro": listed}) as running:
        created = new_request(http, running)
        # The request as one made before the upgrade from a template whose rule named no issuers.
        _set(running, created["id"], trusted_issuers=[{"vct": TAX_VCT, "issuers": None, "metadata": False}])
        response = wallet.present(created["uri"], [rogue])
        assert response.status_code == 400, response.text
        assert [e["code"] for e in response.json()["errors"]] == ["verifier.trust_rule_without_issuers"]
