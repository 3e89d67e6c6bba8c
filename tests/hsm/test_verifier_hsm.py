"""Verifier agencies whose request-object signing keys live in SoftHSM2: the wallet-side check
(``ssi.oid4vp.verify_request_object``) trusts the request, a presentation verifies, the admin API
creates or registers token keys, and token failures are typed errors."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from service_kit.pkcs11 import PKCS11Error, Token, TokenKeyRef
from ssi import x509 as ssi_x509
from ssi.jose import parse_jws
from ssi.oid4vp import parse_authorization_request_uri, verify_request_object
from tests.hsm.conftest import SoftHSM
from tests.verifier.conftest import (  # noqa: F401 - fixtures used by name
    PKI,
    Verifier,
    creds,
    http,
    new_request,
    pki,
    read_result,
    start_verifier,
    status_server,
)
from verifier.app import create_app
from verifier.settings import VerifierSettings

ADMIN = "verifier-admin-for-hsm-tests"


def hsm_extra(softhsm: SoftHSM, tmp: Path, pki: PKI) -> dict[str, object]:  # noqa: F811
    (tmp / "rp-ca.key").write_bytes(pki.rp_ca_key.private_pem())
    (tmp / "rp-ca.pem").write_bytes(ssi_x509.cert_to_pem(pki.rp_ca))
    return {"key_backend": "pkcs11", "pkcs11_module": softhsm.module, "pkcs11_token_label": softhsm.token,
            "pkcs11_pin": SecretStr(softhsm.pin), "admin_api_key": ADMIN, "rp_ca_key_file": tmp / "rp-ca.key",
            "rp_ca_cert_file": tmp / "rp-ca.pem"}


@pytest.fixture(scope="module")
def hsm_verifier(tmp_path_factory: pytest.TempPathFactory, pki: PKI, softhsm: SoftHSM,  # noqa: F811
                 token: Token) -> Iterator[Verifier]:
    tmp = tmp_path_factory.mktemp("verifier-hsm")
    with start_verifier(tmp, pki, **hsm_extra(softhsm, tmp, pki)) as running:
        yield running


def test_request_object_signed_in_the_token_is_trusted_by_the_wallet(http, hsm_verifier: Verifier, pki,  # noqa: F811
                                                                      creds, token: Token) -> None:  # noqa: F811
    from tests.support.presenter import Presenter

    created = new_request(http, hsm_verifier)
    auth = parse_authorization_request_uri(created["uri"], allow_http_loopback=True)
    response = http.get(auth.request_uri)
    assert response.status_code == 200
    request = verify_request_object(response.text, trust_anchors=[pki.rp_ca], client_id=auth.client_id,
                                    allow_http_loopback=True)
    assert request.trust == "trusted"
    leaf = ssi_x509.load_certificate(base64.b64decode(parse_jws(response.text).header["x5c"][0]))
    leaf_key = ssi_x509.certificate_key(leaf)
    labels = {info.label for info in token.list_keys()}
    assert any(label.startswith("cartera-agency-ajuntament-barcelona-") for label in labels)
    in_token = [token.find_key(label)[0] for label in labels if label.startswith("cartera-agency-ajuntament-barcelona-")]
    assert leaf_key.thumbprint() in {key.thumbprint() for key in in_token}
    # And the whole presentation goes through with that request.
    wallet = Presenter(http, [pki.rp_ca])
    request = wallet.fetch_request(created["uri"])
    answer = wallet.post_response(request, wallet.build_vp_token(request, [creds.tax()]))
    assert answer.status_code == 200, answer.text
    assert read_result(http, hsm_verifier, created["id"])["status"] == "verified"


def test_agency_rows_hold_references_only(hsm_verifier: Verifier) -> None:
    path = hsm_verifier.settings.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT slug, signing_key FROM agencies").fetchall()
    assert {slug for slug, _ in rows} >= {"ajuntament-barcelona", "uni-admissions"}
    for _slug, stored in rows:
        assert TokenKeyRef.is_ref(stored) and TokenKeyRef.decode(stored).alg == "ES256"


def test_admin_creates_and_registers_agency_keys(http, hsm_verifier: Verifier, token: Token) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {ADMIN}"}
    url = f"{hsm_verifier.url}/v1/admin/agencies"
    made, _ref = token.generate_key(label="agency-registered")
    response = http.post(url, json={"slug": "hsm-registered", "name": "Registered", "token_key_label": "agency-registered"},
                         headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["key_backend"] == "pkcs11" and body["token_key"]["label"] == "agency-registered"
    response = http.post(url, json={"slug": "hsm-software", "name": "Software", "key_backend": "software"},
                         headers=headers)
    assert response.status_code == 201 and response.json()["key_backend"] == "software"
    response = http.post(url, json={"slug": "hsm-generated", "name": "Generated"}, headers=headers)
    assert response.status_code == 201 and response.json()["key_backend"] == "pkcs11"
    response = http.post(url, json={"slug": "hsm-missing", "name": "Missing", "token_key_label": "not-in-token"},
                         headers=headers)
    assert response.status_code == 400 and response.json()["code"] == "pkcs11.key_not_found"
    # The registered agency signs its request objects with the pre-existing token key.
    agency_key = body["api_key"]
    template = {"name": "t", "dcql_query": {"credentials": [{"id": "tax", "format": "dc+sd-jwt",
                                                              "meta": {"vct_values": ["https://x.example/tax"]},
                                                              "claims": [{"path": ["nif"]}]}]},
                "purpose": {"ca": "Una prova", "es": "Una prueba", "en": "A test"}}
    created = http.post(f"{hsm_verifier.url}/v1/requests", json={
        "dcql_query": template["dcql_query"], "purpose": template["purpose"],
        "trusted_issuers": [{"vct": "https://x.example/tax"}]}, headers={"Authorization": f"Bearer {agency_key}"})
    assert created.status_code == 201, created.text
    auth = parse_authorization_request_uri(created.json()["uri"], allow_http_loopback=True)
    text = http.get(auth.request_uri).text
    leaf = ssi_x509.load_certificate(base64.b64decode(parse_jws(text).header["x5c"][0]))
    assert ssi_x509.certificate_key(leaf).thumbprint() == made.thumbprint()


def _start(settings: VerifierSettings) -> None:
    app = create_app(settings)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(run())


def test_start_up_fails_clearly(hsm_verifier: Verifier, softhsm: SoftHSM, token: Token, http) -> None:  # noqa: F811
    settings = hsm_verifier.settings
    with pytest.raises(PKCS11Error) as info:
        _start(settings.model_copy(update={"pkcs11_token_label": softhsm.pin_token, "pkcs11_pin": SecretStr("999")}))
    assert info.value.code == "pkcs11.pin_incorrect"
    with pytest.raises(PKCS11Error) as info:
        _start(settings.model_copy(update={"key_backend": "software", "pkcs11_module": None}))
    assert info.value.code == "pkcs11.not_configured"  # rows name a token, none is configured
    # An agency whose key left the token: start-up stops with the key named.
    headers = {"Authorization": f"Bearer {ADMIN}"}
    response = http.post(f"{hsm_verifier.url}/v1/admin/agencies", json={"slug": "hsm-doomed", "name": "Doomed"},
                         headers=headers)
    assert response.status_code == 201, response.text
    ref = response.json()["token_key"]
    token.delete_key(TokenKeyRef(token=ref["token"], label=ref["label"], key_id=ref["id"], alg=ref["alg"]))
    with pytest.raises(PKCS11Error) as info:
        _start(settings)
    assert info.value.code == "pkcs11.key_not_found"
    with httpx.Client(timeout=10) as client:  # the running service keeps answering its other agencies
        assert client.get(f"{hsm_verifier.url}/healthz").status_code == 200
