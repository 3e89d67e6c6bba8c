"""A request whose Credential Query names ``trusted_authorities`` (type ``aki``): the wallet offers
only credentials whose certificate chain names one of them, and the verifier accepts the answer
(real issuer, verifier and wallet over HTTP)."""

from __future__ import annotations

from typing import Any

import httpx
from cryptography import x509 as cx509

from sandbox.population import generate_population
from ssi.encoding import b64url_encode
from ssi.x509 import load_pem_certificates
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System
from tests.wallet_api.test_credential_sets import verifier_result
from tests.wallet_api.test_e2e import make_offer, receive

#: A citizen no other test of this system logs in.
CITIZEN = generate_population(size=50).citizens[48].identifier
AGENCY = "ajuntament-barcelona"


def residence_request(system: System, aki: str) -> dict[str, Any]:
    """The demo ``residence`` template asked ad hoc, restricted to credentials under ``aki``."""
    listed = httpx.get(f"{system.verifier}/v1/templates", headers=system.verifier_headers(AGENCY), timeout=30)
    residence = next(t for t in listed.json() if t["name"] == "residence")
    query = residence["dcql_query"]["credentials"][0] | {"trusted_authorities": [{"type": "aki", "values": [aki]}]}
    r = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers(AGENCY), timeout=30, json={
        "dcql_query": {"credentials": [query]}, "purpose": {"en": "Your residence"},
        "trusted_issuers": residence["trusted_issuers"], "anchors_pem": residence["anchors_pem"]})
    assert r.status_code == 201, r.text
    return r.json()


def preview(system: System, tokens: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                   headers=bearer(tokens), timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def test_only_credentials_under_a_trusted_authority_are_offered_and_accepted(system: System) -> None:
    tokens = login(system.wallet, CITIZEN)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", CITIZEN))
    # The issuer's certificate chain: the credential's x5c names its CA by Authority Key Identifier.
    listed = httpx.get(f"{system.verifier}/v1/templates", headers=system.verifier_headers(AGENCY), timeout=30)
    anchors = next(t for t in listed.json() if t["name"] == "residence")["anchors_pem"]
    ca = load_pem_certificates("".join(anchors).encode())[0]
    ca_aki = b64url_encode(ca.extensions.get_extension_for_class(cx509.SubjectKeyIdentifier).value.digest)

    elsewhere = preview(system, tokens, residence_request(system, b64url_encode(b"another authority")))
    [query] = elsewhere["queries"]
    assert (query["satisfied"], query["reason"], query["options"]) == (False, "untrusted_authority", [])
    assert elsewhere["satisfiable"] is False

    request = residence_request(system, ca_aki)
    body = preview(system, tokens, request)
    assert body["satisfiable"] is True and len(body["queries"][0]["options"]) == 1
    sent = httpx.post(f"{system.wallet}/v1/presentations/{body['presentation_id']}/approve", json={},
                      headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200, sent.text
    assert verifier_result(system, request, AGENCY)["status"] == "verified"
