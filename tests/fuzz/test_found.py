"""Regression tests for what the fuzzer found, each reproduced without the fuzzer."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from sandbox.idp_service import IdPSandboxConfig
from sandbox.idp_service import create_app as create_idp
from sandbox.viaoberta_service import ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from service_kit.errors import install_error_handlers
from service_kit.openapi import ERROR_SCHEMA_NAME, document_error_responses
from tests.fuzz import services
from viaoberta.credentials import generate_identity

ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}


class Thing(BaseModel):
    name: str


def sample_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    document_error_responses(app)

    @app.post("/things", status_code=201, responses={404: {"description": "no such parent"}})
    async def create(thing: Thing) -> Thing:
        return thing

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def test_validation_errors_are_documented_as_400_in_the_common_shape() -> None:
    doc = sample_app().openapi()
    responses = doc["paths"]["/things"]["post"]["responses"]
    assert "422" not in responses
    assert responses["400"]["content"]["application/json"]["schema"] == ERROR_REF
    assert responses["4XX"]["content"]["application/json"]["schema"] == ERROR_REF
    # A route's own error response without a body schema gets the common one.
    assert responses["404"]["content"]["application/json"]["schema"] == ERROR_REF
    assert {"502", "503"} <= set(responses) and "500" not in responses
    assert doc["components"]["schemas"][ERROR_SCHEMA_NAME]["required"] == ["error"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "4XX" in doc["paths"]["/ping"]["get"]["responses"]


def test_the_documented_400_is_what_a_validation_error_answers() -> None:
    from fastapi.testclient import TestClient

    with TestClient(sample_app()) as client:
        answer = client.post("/things", json={"name": 7})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


def test_the_document_is_rewritten_once() -> None:
    app = sample_app()
    assert app.openapi() is app.openapi()


def test_idp_documents_its_html_pages() -> None:
    doc = create_idp(IdPSandboxConfig(clients=[], population_size=5)).openapi()
    auth = doc["paths"]["/o/oauth2/auth"]["get"]["responses"]
    assert "text/html" in auth["200"]["content"] and "text/html" in auth["4XX"]["content"]
    token = doc["paths"]["/o/oauth2/token"]["post"]["responses"]
    assert token["4XX"]["content"]["application/json"]["schema"] == ERROR_REF


def test_viaoberta_documents_soap_in_and_out() -> None:
    platform = generate_identity("platform")
    doc = create_viaoberta(ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                                  registered_certs_pem=[], population_size=5)).openapi()
    for operation in (op["post"] for path, op in doc["paths"].items() if path.startswith("/siri-proxy/")):
        assert "text/xml" in operation["requestBody"]["content"]
        assert "text/xml" in operation["responses"]["500"]["content"]


def test_alert_ids_must_be_integers_not_booleans(tmp_path: Path) -> None:
    # Lax parsing read [false] as alert id 0 and answered 204.
    with services.wallet_target(tmp_path) as wallet:
        answer = httpx.post(f"{wallet.url}/v1/alerts/read", json={"ids": [False]}, headers=wallet.headers)
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_request"
        fine = httpx.post(f"{wallet.url}/v1/alerts/read", json={"ids": [1, 2]}, headers=wallet.headers)
        assert fine.status_code == 204
        doc = httpx.get(f"{wallet.url}/openapi.json").json()
    assert "422" not in doc["paths"]["/v1/alerts/read"]["post"]["responses"]


def test_the_loopback_guard_refuses_other_hosts() -> None:
    with services.loopback_only():
        try:
            httpx.get("https://issuer.example/offers/1", timeout=2)
        except httpx.ConnectError as exc:
            assert "not loopback" in str(exc)
        else:
            raise AssertionError("a connection off the machine was not refused")
