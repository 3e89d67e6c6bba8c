"""OpenID4VCI issuance end to end with tenant keys in SoftHSM2: created by configuration, registered by
label, rotated; credentials verify; the database holds no private key; token failures are typed."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from issuer.app import create_app
from issuer.provisioning import provision_demo
from issuer.settings import IssuerSettings
from sandbox.population import DEMO_EVERYTHING
from service_kit.pkcs11 import PKCS11Error, Token, TokenKeyRef
from ssi import x509 as ssi_x509
from ssi.sd_jwt import SDJWT
from tests.hsm.conftest import SoftHSM, hsm_settings
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer, verify_with_reference_library, verify_with_ssi
from tests.support.wallet_client import IssuerError, WalletClient

pytestmark = pytest.mark.anyio


async def issue(env: IssuerEnv, slug: str = "uni-barcelona", type_id: str = "university-diploma") -> tuple[str, object]:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, env, slug, type_id, DEMO_EVERYTHING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
    return result.credentials[0], result.holder_keys[0]


def leaf_thumbprint(credential: str) -> str:
    leaf = ssi_x509.load_certificate(base64.b64decode(SDJWT.parse(credential).header["x5c"][0]))
    return ssi_x509.certificate_key(leaf).thumbprint()


async def keys_of(env: IssuerEnv, slug: str) -> list[dict]:
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.get(f"{env.url}/v1/keys", headers=env.headers(slug))
    assert response.status_code == 200, response.text
    return response.json()


async def rotate(env: IssuerEnv, slug: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as http:
        return await http.post(f"{env.url}/v1/keys/rotate", json=body, headers=env.headers(slug))


async def test_issuance_with_a_tenant_key_in_the_token(hsm_issuer: IssuerEnv, token: Token) -> None:
    active = [k for k in await keys_of(hsm_issuer, "uni-barcelona") if k["active"]][0]
    assert active["backend"] == "pkcs11" and active["token_key"]["token"] == token.label
    assert active["token_key"]["alg"] == "ES256"
    assert any(info.label == active["token_key"]["label"] and not info.extractable for info in token.list_keys())
    credential, holder = await issue(hsm_issuer)
    assert SDJWT.parse(credential).header["alg"] == "ES256"
    assert leaf_thumbprint(credential) == active["kid"]
    assert verify_with_ssi(hsm_issuer, credential, holder)["iss"] == hsm_issuer.issuer("uni-barcelona")
    assert verify_with_reference_library(hsm_issuer, credential, holder)["iss"] == hsm_issuer.issuer("uni-barcelona")


def test_database_holds_references_not_keys(hsm_issuer: IssuerEnv) -> None:
    path = hsm_issuer.settings.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT kid, sealed_private_key FROM signing_keys").fetchall()
    assert rows
    for kid, stored in rows:
        if TokenKeyRef.is_ref(stored):
            ref = TokenKeyRef.decode(stored)
            assert ref.alg == "ES256" and ref.token == "cartera-test" and ref.label
            assert b"PRIVATE" not in stored and b'"d"' not in stored
    assert any(TokenKeyRef.is_ref(stored) for _kid, stored in rows)


async def test_rotation_register_by_label_and_back_to_software(hsm_issuer: IssuerEnv, token: Token) -> None:
    slug = "aoc-tax"
    before, holder_before = await issue(hsm_issuer, slug, "tax-compliance")
    # A new key generated in the token (the configured backend).
    response = await rotate(hsm_issuer, slug, {})
    assert response.status_code == 201, response.text
    generated = response.json()
    assert generated["backend"] == "pkcs11" and generated["kid"] != leaf_thumbprint(before)
    after, holder_after = await issue(hsm_issuer, slug, "tax-compliance")
    assert leaf_thumbprint(after) == generated["kid"]
    verify_with_ssi(hsm_issuer, after, holder_after)
    verify_with_ssi(hsm_issuer, before, holder_before)  # issued before the rotation: still verifies
    # A key made in the token beforehand (as with the token's own tools), registered by its label.
    existing, _ref = token.generate_key(label="aoc-tax-registered")
    response = await rotate(hsm_issuer, slug, {"token_key_label": "aoc-tax-registered"})
    assert response.status_code == 201, response.text
    registered = response.json()
    assert registered["kid"] == existing.thumbprint() and registered["token_key"]["label"] == "aoc-tax-registered"
    credential, holder = await issue(hsm_issuer, slug, "tax-compliance")
    assert leaf_thumbprint(credential) == existing.thumbprint()
    verify_with_ssi(hsm_issuer, credential, holder)
    # The software backend still works beside it, chosen per rotation.
    response = await rotate(hsm_issuer, slug, {"backend": "software"})
    assert response.status_code == 201 and response.json()["backend"] == "software"
    assert response.json()["token_key"] is None
    credential, holder = await issue(hsm_issuer, slug, "working-life")
    verify_with_ssi(hsm_issuer, credential, holder)
    published = {k["kid"] for k in await keys_of(hsm_issuer, slug)}
    assert {generated["kid"], registered["kid"]} <= published


async def test_token_errors_are_clear_answers_not_500(hsm_issuer: IssuerEnv, token: Token) -> None:
    slug = "ajuntament-girona"
    response = await rotate(hsm_issuer, slug, {"token_key_label": "never-made-in-the-token"})
    assert response.status_code == 400
    assert response.json()["code"] == "pkcs11.key_not_found"
    token.generate_key(label="girona-taken")
    response = await rotate(hsm_issuer, slug, {"token_key_label": "girona-taken", "private_key_pem": "x"})
    assert response.status_code == 400
    # The active key disappears from the token while the service runs: issuance answers 503, nothing half-issued.
    response = await rotate(hsm_issuer, slug, {})
    assert response.status_code == 201
    lost = response.json()
    token.delete_key(TokenKeyRef(**{"token": lost["token_key"]["token"], "label": lost["token_key"]["label"],
                                    "key_id": lost["token_key"]["id"], "alg": lost["token_key"]["alg"]}))
    with pytest.raises(IssuerError) as info:
        await issue(hsm_issuer, slug, "padro")
    assert info.value.status == 503 and info.value.error == "temporarily_unavailable"
    assert info.value.body.get("code") in ("pkcs11.key_not_found", "pkcs11.sign_failed")
    response = await rotate(hsm_issuer, slug, {})  # a new key in the token: issuing works again
    assert response.status_code == 201
    credential, holder = await issue(hsm_issuer, slug, "padro")
    verify_with_ssi(hsm_issuer, credential, holder)


def _start(settings: IssuerSettings) -> None:
    app = create_app(settings, run_background=False, configure_logs=False)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(run())


def test_start_up_fails_clearly_on_wrong_pin_missing_token_or_missing_key(
        hsm_issuer: IssuerEnv, softhsm: SoftHSM, token: Token, tmp_path: Path) -> None:
    base = hsm_issuer.settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'i.db'}"})
    with pytest.raises(PKCS11Error) as info:
        _start(hsm_settings(base, softhsm, pkcs11_token_label=softhsm.pin_token, pkcs11_pin=SecretStr("0000")))
    assert info.value.code == "pkcs11.pin_incorrect" and "0000" not in str(info.value)
    with pytest.raises(PKCS11Error) as info:
        _start(hsm_settings(base, softhsm, pkcs11_token_label="no-such-token"))
    assert info.value.code == "pkcs11.token_not_found"
    with pytest.raises(PKCS11Error) as info:
        _start(hsm_settings(base, softhsm, pkcs11_pin=None, pkcs11_pin_file=tmp_path / "absent"))
    assert info.value.code == "pkcs11.pin_file_unreadable"
    # A tenant whose active key is no longer in the token: the start-up names it, no later 500.
    settings = hsm_settings(base, softhsm)
    sb = hsm_issuer.sandbox
    asyncio.run(provision_demo(settings, ca_key=sb.ca_key, ca_cert=sb.ca_cert, viaoberta_url=sb.viaoberta_url,
                               viaoberta_platform_cert_pem=sb.platform_cert_pem, requester_key_pem=sb.requester_key_pem,
                               requester_cert_pem=sb.requester_cert_pem))
    _start(settings)  # every key present: starts
    with sqlite3.connect(tmp_path / "i.db") as db:
        stored = db.execute("SELECT sealed_private_key FROM signing_keys WHERE active").fetchone()[0]
    token.delete_key(TokenKeyRef.decode(stored))
    with pytest.raises(PKCS11Error) as info:
        _start(settings)
    assert info.value.code == "pkcs11.key_not_found"
    # The token configured away while rows still name it: refused too.
    with pytest.raises(PKCS11Error) as info:
        _start(base.model_copy(update={"key_backend": "software", "pkcs11_module": None}))
    assert info.value.code == "pkcs11.not_configured"
