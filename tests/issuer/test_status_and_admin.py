"""Revocation and suspension visible in the status list; admin API: types, sources, keys, isolation, webhooks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3

import httpx
import pytest
from fastapi import FastAPI, Request

from sandbox.population import DEMO_EVERYTHING
from service_kit.webhooks import verify_webhook
from ssi import status_list as sl
from ssi import x509 as ssi_x509
from ssi.jose import Key
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import IssuerMetadataKeyResolver, verify_sd_jwt_vc
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer, own_builtin, present_all, verify_with_ssi
from tests.support.peers import recording_receiver
from tests.support.servers import serve
from tests.support.wallet_client import WalletClient

pytestmark = pytest.mark.anyio


async def _status(http: httpx.AsyncClient, env: IssuerEnv, credential: str) -> int:
    ref = SDJWT.parse(credential).payload["status"]["status_list"]
    response = await http.get(ref["uri"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/statuslist+jwt")
    assert "max-age=" in response.headers["cache-control"]
    token = sl.verify_status_list_token(
        response.text, key=lambda header, payload: ssi_x509.certificate_key(
            ssi_x509.load_certificate(__import__("base64").b64decode(header["x5c"][0]))), expected_uri=ref["uri"])
    assert len(token.status_list) >= 100_000 and token.status_list.bits == 2 and token.ttl
    return token.status(ref["idx"])


async def test_revocation_and_suspension_are_visible_in_the_status_list(issuer_env: IssuerEnv) -> None:
    headers = issuer_env.headers("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        cid = offer["credential_ids"]["tax-compliance"]
        credential = result.credentials[0]
        assert await _status(http, issuer_env, credential) == sl.VALID
        r = await http.post(f"{issuer_env.url}/v1/credentials/{cid}/suspend", headers=headers)
        assert r.status_code == 200 and r.json()["status"] == "suspended"
        assert await _status(http, issuer_env, credential) == sl.SUSPENDED
        r = await http.post(f"{issuer_env.url}/v1/credentials/{cid}/reinstate", headers=headers)
        assert r.json()["status"] == "valid"
        assert await _status(http, issuer_env, credential) == sl.VALID
        r = await http.post(f"{issuer_env.url}/v1/credentials/{cid}/revoke", headers=headers)
        assert r.json()["status"] == "revoked"
        assert await _status(http, issuer_env, credential) == sl.INVALID
        r = await http.post(f"{issuer_env.url}/v1/credentials/{cid}/reinstate", headers=headers)
        assert r.status_code == 409


async def test_one_tenants_admin_key_cannot_touch_another_tenants_data(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        cid = offer["credential_ids"]["tax-compliance"]
        other = issuer_env.headers("uni-barcelona")
        assert (await http.get(f"{issuer_env.url}/v1/credentials/{cid}", headers=other)).status_code == 404
        assert (await http.post(f"{issuer_env.url}/v1/credentials/{cid}/revoke", headers=other)).status_code == 404
        listed = (await http.get(f"{issuer_env.url}/v1/credentials", headers=other)).json()["items"]
        assert all(item["credential_id"] != cid for item in listed)
        # a type of another tenant cannot be offered, and its source cannot be configured
        # (the subject is complete for tax-compliance, so only the tenant's own type list can refuse it)
        r = await http.post(f"{issuer_env.url}/v1/offers", headers=other, json={
            "credential_configuration_ids": ["tax-compliance"],
            "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"}})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_request"
        assert "unknown or repeated credential configuration id" in r.json()["error_description"]
        r = await http.put(f"{issuer_env.url}/v1/types/tax-compliance/source", headers=other, json={"kind": "rest"})
        assert r.status_code == 404
        # the access token of one tenant is worthless at another's credential endpoint
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        ready = await WalletClient(http).redeem_offer(offer["offer_uri"], offer["tx_code"])
        r = await http.post(f"{issuer_env.issuer('uni-barcelona')}/credential",
                            json={"credential_configuration_id": "university-diploma", "proofs": {"jwt": ["x.y.z"]}},
                            headers={"Authorization": f"Bearer {ready.access_token}"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        for bad in ({}, {"Authorization": "Bearer ck_wrong"}, {"Authorization": "Basic abc"}):
            assert (await http.get(f"{issuer_env.url}/v1/credentials", headers=bad)).status_code == 401


async def test_platform_admin_creates_tenants_and_tenant_registers_a_type_with_a_source(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{issuer_env.url}/v1/tenants", json={"slug": "uni-girona", "name": "Universitat de Girona"},
                            headers={"Authorization": "Bearer " + issuer_env.api_keys["aoc-tax"]})
        assert r.status_code == 401
        r = await http.post(f"{issuer_env.url}/v1/tenants", json={"slug": "uni-girona", "name": "Universitat de Girona"},
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["signing_kid"] and created["issuer_url"].endswith("/t/uni-girona")
        again = await http.post(f"{issuer_env.url}/v1/tenants", json={"slug": "uni-girona", "name": "x"},
                                headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert again.status_code == 409
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        broken = own_builtin(issuer_env.url, "uni-girona", "university-diploma")
        broken.pop("display")
        r = await http.post(f"{issuer_env.url}/v1/types", json={"definition": broken}, headers=headers)
        assert r.status_code == 400 and r.json()["problems"]
        # The built-in diploma's vct is uni-barcelona's: another university registers it under its own.
        r = await http.post(f"{issuer_env.url}/v1/types", json={"builtin": "university-diploma"}, headers=headers)
        assert r.status_code == 409 and r.json()["error"] == "vct_taken", r.text
        own = own_builtin(issuer_env.url, "uni-girona", "university-diploma")
        r = await http.post(f"{issuer_env.url}/v1/types", json={"definition": own}, headers=headers)
        assert r.status_code == 201 and not r.json()["source_configured"]
        bumped = dict(own, version="1.1")
        r = await http.post(f"{issuer_env.url}/v1/types", json={"definition": bumped}, headers=headers)
        assert r.json()["versions"] == ["1.0", "1.1"]
        r = await http.put(f"{issuer_env.url}/v1/types/university-diploma/source", headers=headers,
                           json={"kind": "viaoberta", "endpoint": issuer_env.sandbox.viaoberta_url})
        assert r.status_code == 400
        sandbox = issuer_env.sandbox
        r = await http.put(f"{issuer_env.url}/v1/types/university-diploma/source", headers=headers, json={
            "kind": "viaoberta", "endpoint": sandbox.viaoberta_url, "product": "TITOLS_UNIVERSITARIS",
            "signing_key_pem": sandbox.requester_key_pem.decode(), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
            "platform_certs_pem": [sandbox.platform_cert_pem.decode()],
            "context": {"purpose": "Títol digital", "procedure": "TD", "consent": "Si", "official_name": "Anna",
                        "official_nif": "11111111H"}})
        assert r.status_code == 200 and r.json()["source_configured"] and r.json()["source_kind"] == "viaoberta"
        metadata = (await http.get(f"{issuer_env.url}/.well-known/openid-credential-issuer/t/uni-girona")).json()
        config = metadata["credential_configurations_supported"]["university-diploma"]
        assert config["format"] == "dc+sd-jwt" and config["proof_types_supported"]["jwt"]
        type_doc = await http.get(f"{issuer_env.url}/t/uni-girona/types/university-diploma")
        offer = (await http.post(f"{issuer_env.url}/v1/offers", headers=headers, json={
            "credential_configuration_ids": ["university-diploma"],
            "subject": {"identifier": DEMO_EVERYTHING, "name": "Montserrat Puig Ferrer"}})).json()
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
    payload = SDJWT.parse(result.credentials[0]).payload
    import base64
    import hashlib
    assert payload["vct#integrity"] == "sha256-" + base64.b64encode(hashlib.sha256(type_doc.content).digest()).decode()
    assert json.loads(type_doc.content)["vct"] == payload["vct"]
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        old = await http.get(f"{issuer_env.url}/t/uni-girona/types/university-diploma", params={"version": "1.0"})
        missing = await http.get(f"{issuer_env.url}/t/uni-girona/types/university-diploma", params={"version": "9"})
    assert old.status_code == 200 and missing.status_code == 404


async def test_key_rotation_keeps_old_credentials_verifiable(issuer_env: IssuerEnv) -> None:
    headers = issuer_env.headers("ajuntament-girona")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "ajuntament-girona", "padro", DEMO_EVERYTHING)
        old = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        rotated = await http.post(f"{issuer_env.url}/v1/keys/rotate", json={}, headers=headers)
        assert rotated.status_code == 201 and rotated.json()["active"]
        keys = (await http.get(f"{issuer_env.url}/v1/keys", headers=headers)).json()
        assert sum(k["active"] for k in keys) == 1 and len(keys) >= 2
        offer = await create_offer(http, issuer_env, "ajuntament-girona", "padro", DEMO_EVERYTHING)
        new = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        metadata = (await http.get(f"{issuer_env.url}/.well-known/jwt-vc-issuer/t/ajuntament-girona")).json()
    assert SDJWT.parse(old.credentials[0]).header["kid"] != SDJWT.parse(new.credentials[0]).header["kid"]
    # The certificate names the tenant's identifier only: no DNS SAN for the host the tenants share.
    new_sd = SDJWT.parse(new.credentials[0])
    leaf = ssi_x509.load_certificate(base64.b64decode(new_sd.header["x5c"][0]))
    assert ssi_x509.san_uris(leaf) == [new_sd.payload["iss"]] and ssi_x509.san_dns_names(leaf) == []
    verify_with_ssi(issuer_env, old.credentials[0], old.holder_keys[0])
    verify_with_ssi(issuer_env, new.credentials[0], new.holder_keys[0])
    # by JWT VC Issuer Metadata too: both kids are published
    resolver = IssuerMetadataKeyResolver(lambda url: metadata, allow_http_loopback=True)
    for result in (old, new):
        token = SDJWT.parse(result.credentials[0])
        unsigned_x5c = present_all(result.credentials[0], result.holder_keys[0])
        claims = verify_sd_jwt_vc(unsigned_x5c, key_resolver=resolver, allow_http_loopback=True,
                                  require_kb=True, expected_aud="x509_san_dns:verifier.example.cat",
                                  expected_nonce="n-0S6_WzA2Mj").claims
        assert claims["iss"] == token.payload["iss"]


async def test_webhooks_are_signed_and_delivered(issuer_env: IssuerEnv) -> None:
    received: list[tuple[bytes, str]] = []
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        received.append((await request.body(), request.headers.get("cartera-signature", "")))
        return {"ok": "yes"}

    headers = issuer_env.headers("aoc-tax")
    with serve(receiver) as hook_url:
        async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
            r = await http.post(f"{issuer_env.url}/v1/webhooks", json={"url": f"{hook_url}/hook",
                                                                     "events": ["credential.issued"]}, headers=headers)
            secret = r.json()["secret"]
            offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
            await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
            for _ in range(50):
                if received:
                    break
                await asyncio.sleep(0.1)
            await http.delete(f"{issuer_env.url}/v1/webhooks/{r.json()['id']}", headers=headers)
    assert received
    body, signature = received[0]
    verify_webhook(secret, body, signature)
    event = json.loads(body)
    assert event["type"] == "credential.issued" and event["credential_id"] == offer["credential_ids"]["tax-compliance"]
    assert DEMO_EVERYTHING not in body.decode()


async def test_an_endpoint_whose_secret_cannot_be_opened_uses_up_its_attempts_not_the_others(
        issuer_env: IssuerEnv) -> None:
    receiver, received = recording_receiver()

    headers = issuer_env.headers("aoc-tax")
    database = issuer_env.settings.database_url.split("///", 1)[1]
    with serve(receiver) as hook_url:
        async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
            good, bad = [(await http.post(f"{issuer_env.url}/v1/webhooks", json={
                "url": f"{hook_url}/hook", "events": ["credential.issued"]}, headers=headers)).json()["id"]
                for _ in range(2)]
            # The secret sealed under another master key (a restore with the wrong key, say).
            with contextlib.closing(sqlite3.connect(database)) as conn:
                conn.execute("UPDATE webhook_endpoints SET sealed_secret = ? WHERE id = ?", (b"\x00" * 60, bad))
                conn.commit()
            offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
            await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])

            def outbox(endpoint_id: str) -> tuple[int, str | None, str | None]:
                with contextlib.closing(sqlite3.connect(database)) as conn:
                    return conn.execute("SELECT attempts, delivered_at, last_error FROM webhook_outbox "
                                        "WHERE endpoint_id = ? ORDER BY created_at DESC LIMIT 1", (endpoint_id,)).fetchone()

            for _ in range(50):
                # The attempt is counted when the row is claimed, its error written once it is over.
                if received and outbox(bad)[2] is not None:
                    break
                await asyncio.sleep(0.1)
            attempts, delivered_at, last_error = outbox(bad)
            for endpoint_id in (good, bad):
                await http.delete(f"{issuer_env.url}/v1/webhooks/{endpoint_id}", headers=headers)
    assert len(received) == 1 and json.loads(received[0])["credential_id"] == offer["credential_ids"]["tax-compliance"]
    # Counted, so the row gives up after MAX_ATTEMPTS instead of coming back every minute for ever.
    assert attempts == 1 and delivered_at is None and last_error == "the endpoint's secret cannot be opened"


async def test_one_tenant_cannot_delete_another_tenants_webhook(issuer_env: IssuerEnv) -> None:
    receiver, _ = recording_receiver()
    owner, other = issuer_env.headers("aoc-tax"), issuer_env.headers("uni-barcelona")
    with serve(receiver) as hook_url:
        async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
            r = await http.post(f"{issuer_env.url}/v1/webhooks", json={"url": f"{hook_url}/hook",
                                                                     "events": ["credential.issued"]}, headers=owner)
            assert r.status_code == 201, r.text
            hook_id = r.json()["id"]
            try:
                r = await http.delete(f"{issuer_env.url}/v1/webhooks/{hook_id}", headers=other)
                assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
                listed = (await http.get(f"{issuer_env.url}/v1/webhooks", headers=owner)).json()
                assert [hook["id"] for hook in listed] == [hook_id]
            finally:
                assert (await http.delete(f"{issuer_env.url}/v1/webhooks/{hook_id}", headers=owner)).status_code == 204


async def test_offer_without_a_name_the_type_needs_is_refused_at_once(issuer_env: IssuerEnv) -> None:
    # The name comes from the offer, not the source: without it the wallet would meet a 502 at the
    # credential endpoint long after the operator made the offer.
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        for subject in ({"identifier": DEMO_EVERYTHING}, {"identifier": DEMO_EVERYTHING, "name": ""}):
            r = await http.post(f"{issuer_env.url}/v1/offers", headers=issuer_env.headers("aoc-tax"), json={
                "credential_configuration_ids": ["tax-compliance"], "subject": subject})
            assert r.status_code == 400
            assert r.json() == {"error": "invalid_request", "error_description":
                                "credential type tax-compliance needs subject.name in the offer"}
        # padró takes the name from the register: an offer with only the NIF is fine
        r = await http.post(f"{issuer_env.url}/v1/offers", headers=issuer_env.headers("ajuntament-girona"), json={
            "credential_configuration_ids": ["padro"], "subject": {"identifier": DEMO_EVERYTHING}})
        assert r.status_code == 201, r.text


async def test_importing_a_registered_key_again_is_a_conflict(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{issuer_env.url}/v1/tenants", json={"slug": "uni-lleida", "name": "Universitat de Lleida"},
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 201, r.text
        headers = {"Authorization": f"Bearer {r.json()['api_key']}"}
        key = Key.generate("ES256")
        leaf = ssi_x509.issue_certificate(issuer_env.sandbox.ca_key, issuer_env.sandbox.ca_cert, key, "UdL",
                                          san_uris=[r.json()["issuer_url"]])
        body = {"private_key_pem": key.private_pem().decode(), "certificate_chain_pem": ssi_x509.cert_to_pem(leaf).decode()}
        first = await http.post(f"{issuer_env.url}/v1/keys/rotate", json=body, headers=headers)
        again = await http.post(f"{issuer_env.url}/v1/keys/rotate", json=body, headers=headers)
        keys = (await http.get(f"{issuer_env.url}/v1/keys", headers=headers)).json()
    assert first.status_code == 201, first.text
    assert again.status_code == 409 and again.json()["error"] == "conflict", again.text
    assert [k["kid"] for k in keys if k["active"]] == [first.json()["kid"]]
