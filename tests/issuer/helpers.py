"""Helpers for the issuer tests: admin calls, and verifying issued credentials two independent ways."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx
from jwcrypto.jwk import JWK
from sd_jwt.verifier import SDJWTVerifier

from issuer.registry import builtin_definition
from ssi import x509 as ssi_x509
from ssi.jose import Key
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import X5CKeyResolver, verify_sd_jwt_vc
from tests.issuer.conftest import IssuerEnv

AUD = "x509_san_dns:verifier.example.cat"
#: Client connection limits for the tests: idle connections are dropped before uvicorn's 5 s keep-alive
#: timeout, so a loaded machine never makes a client reuse a connection the server is closing.
LIMITS = httpx.Limits(keepalive_expiry=1.0)
NONCE = "n-0S6_WzA2Mj"


def own_builtin(issuer_url: str, slug: str, type_id: str, **changes: Any) -> dict[str, Any]:
    """A built-in type's definition under a vct of tenant ``slug``'s own (its type metadata URL): a vct
    belongs to one tenant, and the demo tenants registered the built-in types' vcts first."""
    vct = f"https://{urlsplit(issuer_url).netloc}/t/{slug}/types/{type_id}"
    return {**builtin_definition(type_id), "vct": vct, **changes}


async def create_offer(http: httpx.AsyncClient, env: IssuerEnv, slug: str, type_id: str, identifier: str, *,
                       name: str = "Titular de Prova", tx_code: bool = True, by_reference: bool = True,
                       selector: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"credential_configuration_ids": [type_id],
                            "subject": {"identifier": identifier, "name": name},
                            "tx_code": tx_code, "by_reference": by_reference}
    if selector:
        body["selector"] = selector
    response = await http.post(f"{env.url}/v1/offers", json=body, headers=env.headers(slug))
    assert response.status_code == 201, response.text
    return response.json()


def present_all(credential: str, holder: Key) -> str:
    sd = SDJWT.parse(credential)
    paths = [tuple(p) for p in sd.disclosure_paths]
    return sd.present(paths, holder_key=holder, aud=AUD, nonce=NONCE)


def verify_with_ssi(env: IssuerEnv, credential: str, holder: Key) -> dict[str, Any]:
    """Full presentation verified with ssi, the issuer key from x5c chained to the test CA."""
    verified = verify_sd_jwt_vc(present_all(credential, holder), key_resolver=X5CKeyResolver([env.sandbox.ca_cert]),
                                require_kb=True, expected_aud=AUD, expected_nonce=NONCE, allow_http_loopback=True)
    assert verified.key_source == "x5c"
    return verified.claims


def verify_with_reference_library(env: IssuerEnv, credential: str, holder: Key) -> dict[str, Any]:
    """The same presentation verified by the OpenWallet Foundation reference library (sd-jwt)."""
    sd = SDJWT.parse(credential)
    leaf = ssi_x509.load_certificate(__import__("base64").b64decode(sd.header["x5c"][0]))
    issuer_jwk = JWK.from_json(json.dumps(ssi_x509.certificate_key(leaf).public_jwk()))
    verifier = SDJWTVerifier(present_all(credential, holder), lambda iss, header: issuer_jwk,
                             expected_aud=AUD, expected_nonce=NONCE)
    return verifier.get_verified_payload()
