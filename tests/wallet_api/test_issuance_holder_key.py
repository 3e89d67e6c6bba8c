"""A credential the issuer binds to another key than the one the wallet proved is refused on receipt.

The wallet proves a fresh holder key in its credential request; a credential whose ``cnf`` names another
key (one the issuer or someone else holds) could be presented by them, not by the citizen. A stand-in
issuer over real HTTP (pre-authorized offer, metadata, token, credential endpoints; credentials signed
under the ``wallet`` fixture's trusted test CA, its certificate naming the issuer) answers once bound to
the proven key, as a working issuer does, and once bound to another key.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox.population import generate_population
from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.x509 import issue_certificate, x5c_from_chain
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import ISSUER_CA, WalletHandle, bearer, login

#: Citizens of the wallet fixture's population that no other test of that wallet logs in.
BOUND_CITIZEN, OTHER_KEY_CITIZEN = [generate_population(size=50).citizens[i].identifier for i in (28, 29)]
VCT = "urn:cartera:test:holder-binding"
CONFIGURATION = "binding-test"


@dataclass
class StandInIssuer:
    url: str = ""
    bind_to_other_key: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)

    def offer_uri(self) -> str:
        offer = {"credential_issuer": self.url, "credential_configuration_ids": [CONFIGURATION],
                 "grants": {"urn:ietf:params:oauth:grant-type:pre-authorized_code": {
                     "pre-authorized_code": secrets.token_urlsafe(16)}}}
        return "openid-credential-offer://?credential_offer=" + quote(json.dumps(offer))


def _proven_key(proof: str) -> Key:
    header = proof.split(".")[0]
    return Key.from_jwk(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["jwk"])


@pytest.fixture(scope="module")
def issuer() -> Iterator[StandInIssuer]:
    port = free_port()
    state = StandInIssuer(url=f"http://127.0.0.1:{port}")
    signing_key = Key.generate("ES256")
    x5c = x5c_from_chain([issue_certificate(ISSUER_CA[0], ISSUER_CA[1], signing_key, "Stand-in issuer",
                                            san_uris=[state.url])])
    app = FastAPI()

    @app.get("/.well-known/openid-credential-issuer")
    async def metadata() -> dict[str, Any]:
        return {"credential_issuer": state.url, "credential_endpoint": f"{state.url}/credential",
                "notification_endpoint": f"{state.url}/notification",
                "credential_configurations_supported": {CONFIGURATION: {
                    "format": "dc+sd-jwt", "vct": VCT, "cryptographic_binding_methods_supported": ["jwk"],
                    "proof_types_supported": {"jwt": {"proof_signing_alg_values_supported": ["ES256"]}}}}}

    @app.get("/.well-known/oauth-authorization-server")
    async def as_metadata() -> dict[str, Any]:
        return {"issuer": state.url, "token_endpoint": f"{state.url}/token",
                "pre-authorized_grant_anonymous_access_supported": True}

    @app.post("/token")
    async def token() -> dict[str, Any]:
        return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300}

    @app.post("/credential")
    async def credential(request: Request) -> JSONResponse:
        body = await request.json()
        state.requests.append(body)
        proven = _proven_key(body["proofs"]["jwt"][0])
        holder = Key.generate("ES256") if state.bind_to_other_key else proven
        token = issue_sd_jwt_vc({"given_name": "Laia"}, vct=VCT, issuer=state.url, key=signing_key,
                                holder_jwk=holder.public_jwk(), disclosable=[("given_name",)], x5c=x5c)
        return JSONResponse({"credentials": [{"credential": token}], "notification_id": "n-1"})

    @app.post("/notification")
    async def notification(request: Request) -> Response:
        state.notifications.append((await request.json())["event"])
        return Response(status_code=204)

    with serve(app, port=port):
        yield state


def _receive(wallet: WalletHandle, headers: dict[str, str], issuer: StandInIssuer) -> tuple[str, httpx.Response]:
    scanned = httpx.post(f"{wallet.url}/v1/offers", json={"offer_uri": issuer.offer_uri()}, headers=headers,
                         timeout=30)
    assert scanned.status_code == 201, scanned.text
    offer_id = scanned.json()["offer_id"]
    return offer_id, httpx.post(f"{wallet.url}/v1/offers/{offer_id}/accept", json={}, headers=headers, timeout=60)


def test_a_credential_bound_to_the_proven_key_is_stored(wallet: WalletHandle, issuer: StandInIssuer) -> None:
    headers = bearer(login(wallet.url, BOUND_CITIZEN))
    issuer.bind_to_other_key = False
    _offer_id, accepted = _receive(wallet, headers, issuer)
    assert accepted.status_code == 200 and accepted.json()["state"] == "issued", accepted.text
    assert len(httpx.get(f"{wallet.url}/v1/credentials", headers=headers).json()) == 1


def test_a_credential_bound_to_another_key_is_refused_and_nothing_stored(
        wallet: WalletHandle, issuer: StandInIssuer) -> None:
    headers = bearer(login(wallet.url, OTHER_KEY_CITIZEN))
    issuer.bind_to_other_key = True
    issuer.notifications.clear()
    try:
        offer_id, refused = _receive(wallet, headers, issuer)
    finally:
        issuer.bind_to_other_key = False
    assert refused.status_code == 502 and refused.json()["error"] == "invalid_credential", refused.text
    assert "not bound to the key the wallet proved" in refused.json()["error_description"], refused.text
    offer = httpx.get(f"{wallet.url}/v1/offers/{offer_id}", headers=headers).json()
    assert offer["state"] == "failed" and offer["credential_ids"] == [] and offer["error"]["error"] == "invalid_credential"
    assert httpx.get(f"{wallet.url}/v1/credentials", headers=headers).json() == []
    assert httpx.get(f"{wallet.url}/v1/history", headers=headers).json() == []
    assert issuer.notifications == ["credential_failure"]
