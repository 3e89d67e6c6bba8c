"""Attacks and malformed input: codes, nonces, proofs, tokens; no 5xx from any endpoint; source outages."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from ssi.encoding import b64url_encode
from ssi.jose import Key, sign_jws
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT, build_proof_jwt
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer, own_builtin
from tests.support.servers import free_port
from tests.support.wallet_client import IssuerError, WalletClient

pytestmark = pytest.mark.anyio


async def _code(http: httpx.AsyncClient, offer: dict) -> str:
    parsed = await WalletClient(http).resolve_offer(offer["offer_uri"])
    return parsed.grants.pre_authorized_code.pre_authorized_code


async def test_wrong_tx_code_until_the_code_is_burnt(issuer_env: IssuerEnv) -> None:
    token_url = f"{issuer_env.issuer('aoc-tax')}/token"
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        code = await _code(http, offer)
        wrong = "0" * len(offer["tx_code"]) if offer["tx_code"] != "0" * len(offer["tx_code"]) else "1" * 6
        for _ in range(issuer_env.settings.tx_code_max_attempts):
            r = await http.post(token_url, data={"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code,
                                                 "tx_code": wrong})
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        r = await http.post(token_url, data={"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code,
                                             "tx_code": offer["tx_code"]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        # the burnt offer is no longer served by reference either
        assert (await http.get(offer["credential_offer_uri"])).status_code == 404


async def test_replayed_pre_authorized_code_is_refused(issuer_env: IssuerEnv) -> None:
    token_url = f"{issuer_env.issuer('aoc-tax')}/token"
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING, tx_code=False)
        code = await _code(http, offer)
        form = {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code}
        results = await asyncio.gather(*(http.post(token_url, data=form) for _ in range(10)))
    assert sorted(r.status_code for r in results) == [200] + [400] * 9
    assert {r.json()["error"] for r in results if r.status_code == 400} == {"invalid_grant"}


async def _replayed_nonce(env: IssuerEnv, attempts: int = 50) -> list[httpx.Response]:
    # Idle connections are dropped by the client before uvicorn's 5 s keep-alive timeout closes them,
    # so a loaded machine cannot make the client reuse a connection the server is closing.
    limits = httpx.Limits(max_connections=attempts, keepalive_expiry=1.0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        wallet = WalletClient(http)
        offers = await asyncio.gather(*(create_offer(http, env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
                                        for _ in range(attempts)))
        ready = await asyncio.gather(*(wallet.redeem_offer(o["offer_uri"], o["tx_code"]) for o in offers))
        nonce = await wallet.nonce(ready[0].issuer_metadata)
        key = Key.generate()
        proof = build_proof_jwt(key, audience=env.issuer("aoc-tax"), nonce=nonce)
        return await asyncio.gather(*(wallet.credential_request(r.issuer_metadata, r.access_token, {
            "credential_configuration_id": "tax-compliance", "proofs": {"jwt": [proof]}}) for r in ready))


async def test_replayed_nonce_fifty_concurrent_attempts_exactly_one_succeeds(issuer_env: IssuerEnv) -> None:
    responses = await _replayed_nonce(issuer_env)
    assert sorted(r.status_code for r in responses) == [200] + [400] * 49
    assert {r.json()["error"] for r in responses if r.status_code == 400} == {"invalid_nonce"}


async def test_replayed_nonce_fifty_concurrent_attempts_on_postgresql(pg_issuer_env: IssuerEnv) -> None:
    responses = await _replayed_nonce(pg_issuer_env)
    assert sorted(r.status_code for r in responses) == [200] + [400] * 49


def _hs256_proof(audience: str, nonce: str) -> str:
    header = {"typ": "openid4vci-proof+jwt", "alg": "HS256", "jwk": Key.generate().public_jwk(include_kid=False)}
    payload = {"aud": audience, "iat": int(time.time()), "nonce": nonce}
    signing_input = b64url_encode(json.dumps(header).encode()) + "." + b64url_encode(json.dumps(payload).encode())
    mac = hmac.new(b"secret", signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url_encode(mac)


def _none_proof(audience: str, nonce: str) -> str:
    header = {"typ": "openid4vci-proof+jwt", "alg": "none", "jwk": Key.generate().public_jwk(include_kid=False)}
    payload = {"aud": audience, "iat": int(time.time()), "nonce": nonce}
    return b64url_encode(json.dumps(header).encode()) + "." + b64url_encode(json.dumps(payload).encode()) + "."


def _other_key_proof(audience: str, nonce: str) -> str:
    shown, signer = Key.generate(), Key.generate()
    return sign_jws({"typ": "openid4vci-proof+jwt", "jwk": shown.public_jwk(include_kid=False)},
                    {"aud": audience, "iat": int(time.time()), "nonce": nonce}, signer)


PROOFS = {
    "wrong_aud": (lambda aud, nonce: build_proof_jwt(Key.generate(), audience="https://other.example", nonce=nonce),
                  "invalid_proof"),
    "stale_iat": (lambda aud, nonce: build_proof_jwt(Key.generate(), audience=aud, nonce=nonce,
                                                     iat=int(time.time()) - 3600), "invalid_proof"),
    "future_iat": (lambda aud, nonce: build_proof_jwt(Key.generate(), audience=aud, nonce=nonce,
                                                      iat=int(time.time()) + 3600), "invalid_proof"),
    "alg_none": (_none_proof, "invalid_proof"),
    "hmac": (_hs256_proof, "invalid_proof"),
    "other_key": (_other_key_proof, "invalid_proof"),
    # OpenID4VCI 1.0 §8.3.1.2: a proof without a c_nonce is invalid_proof; invalid_nonce is for a bad one.
    "no_nonce": (lambda aud, nonce: build_proof_jwt(Key.generate(), audience=aud, nonce=None), "invalid_proof"),
    "unknown_nonce": (lambda aud, nonce: build_proof_jwt(Key.generate(), audience=aud, nonce="made-up"), "invalid_nonce"),
    # One character of a real nonce changed: the one before the last, whose bits are all data (the
    # last one's two low bits are padding).
    "forged_nonce": (lambda aud, nonce: build_proof_jwt(Key.generate(), audience=aud,
                                                        nonce=nonce[:-2] + ("B" if nonce[-2] != "B" else "C") + nonce[-1]),
                     "invalid_nonce"),
    "garbage": (lambda aud, nonce: "not-a-jwt", "invalid_proof"),
}


async def test_a_nonce_of_another_tenant_is_refused(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        wallet = WalletClient(http)
        other = await wallet.redeem_offer(*(lambda o: (o["offer_uri"], o["tx_code"]))(
            await create_offer(http, issuer_env, "uni-barcelona", "university-diploma", DEMO_EVERYTHING)))
        foreign = await wallet.nonce(other.issuer_metadata)
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        ready = await wallet.redeem_offer(offer["offer_uri"], offer["tx_code"])
        with pytest.raises(IssuerError) as refused:
            await wallet.request_credential(ready, proofs=[build_proof_jwt(Key.generate(), audience=ready.issuer,
                                                                           nonce=foreign)])
    assert refused.value.status == 400 and refused.value.error == "invalid_nonce"


@pytest.mark.parametrize("case", sorted(PROOFS))
async def test_bad_proofs_are_refused_and_nothing_is_issued(issuer_env: IssuerEnv, case: str) -> None:
    make, expected = PROOFS[case]
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        wallet = WalletClient(http)
        ready = await wallet.redeem_offer(offer["offer_uri"], offer["tx_code"])
        nonce = await wallet.nonce(ready.issuer_metadata)
        with pytest.raises(IssuerError) as refused:
            await wallet.request_credential(ready, proofs=[make(ready.issuer, nonce)])
        # the access token is still good for a correct request afterwards
        good = await wallet.request_credential(ready)
    assert refused.value.status == 400 and refused.value.error == expected
    assert len(good.credentials) == 1


async def test_source_down_gives_503_with_retry_after_and_records_nothing(issuer_env: IssuerEnv) -> None:
    sandbox = issuer_env.sandbox
    async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:
        created = (await http.post(f"{issuer_env.url}/v1/tenants", json={"slug": "down-tenant", "name": "Down"},
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        await http.post(f"{issuer_env.url}/v1/types", headers=headers,
                        json={"definition": own_builtin(issuer_env.url, "down-tenant", "tax-compliance")})
        r = await http.put(f"{issuer_env.url}/v1/types/tax-compliance/source", headers=headers, json={
            "kind": "viaoberta", "endpoint": f"http://127.0.0.1:{free_port()}", "product": "ECOT103",
            "signing_key_pem": sandbox.requester_key_pem.decode(), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
            "platform_certs_pem": [sandbox.platform_cert_pem.decode()], "timeout": 1, "retries": 0,
            "context": {"purpose": "p", "procedure": "p", "consent": "Ley", "official_name": "o", "official_nif": "1H"}})
        assert r.status_code == 200, r.text
        offer = (await http.post(f"{issuer_env.url}/v1/offers", headers=headers, json={
            "credential_configuration_ids": ["tax-compliance"], "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"}})).json()
        wallet = WalletClient(http)
        ready = await wallet.redeem_offer(offer["offer_uri"], offer["tx_code"])
        response = await wallet.credential_request(ready.issuer_metadata, ready.access_token, {
            "credential_configuration_id": "tax-compliance",
            "proofs": {"jwt": wallet.proofs([Key.generate()], ready.issuer, await wallet.nonce(ready.issuer_metadata))}})
        records = (await http.get(f"{issuer_env.url}/v1/credentials", headers=headers)).json()
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    assert response.json()["error"] == "temporarily_unavailable"
    assert records["total"] == 0


ENDPOINTS = ["token", "nonce", "credential", "deferred_credential", "notification", "par"]
BODIES = [
    ("application/json", b"{not json"),
    ("application/json", b'{"a": 1, "a": 2}'),
    ("application/json", b"[]"),
    ("application/json", b'"x"'),
    ("application/x-www-form-urlencoded", b"%%%&&&=="),
    ("application/x-www-form-urlencoded", b"grant_type=urn:ietf:params:oauth:grant-type:pre-authorized_code"),
    ("application/x-www-form-urlencoded", b"grant_type=authorization_code&code=x&code_verifier=short"),
    ("application/x-www-form-urlencoded", b"grant_type=password&username=a"),
    ("application/x-www-form-urlencoded", b"grant_type=a&grant_type=b"),
    ("application/x-www-form-urlencoded", b"grant_type=%FF%FE&code=\xff"),
    ("application/x-www-form-urlencoded", b"&".join(b"p%d=1" % i for i in range(200))),
    ("multipart/form-data; boundary=zzz", b"--zzz\r\nbroken"),
    ("text/plain", "\u00ff\u0000".encode()),
    ("application/json", b'{"credential_configuration_id": "tax-compliance", "proofs": {"jwt": [1, 2]}}'),
    ("application/json", b'{"credential_configuration_id": "tax-compliance", "proof": {"proof_type": "jwt"}}'),
    ("application/json", b'{"transaction_id": 5}'),
    ("application/json", b'{"notification_id": "x", "event": "nope"}'),
]
AUTHS = [None, "Bearer garbage", "Bearer " + "a" * 5000, "DPoP x", "Basic Zm9vOmJhcg=="]


async def test_no_5xx_for_malformed_json_forms_and_tokens(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        ready = await WalletClient(http).redeem_offer(offer["offer_uri"], offer["tx_code"])
        statuses = []
        for endpoint in ENDPOINTS:
            for content_type, body in BODIES:
                for auth in [*AUTHS, f"Bearer {ready.access_token}"]:
                    headers = {"Content-Type": content_type}
                    if auth:
                        headers["Authorization"] = auth
                    r = await http.post(f"{base}/{endpoint}", content=body, headers=headers)
                    statuses.append((endpoint, r.status_code))
                    assert r.status_code < 500, (endpoint, body, auth, r.text)
                    if r.status_code >= 400:
                        assert set(r.json()) >= {"error", "error_description"}
        for path in ["/authorize", "/authorize?request_uri=urn:x&client_id=a", "/authorize?response_type=code",
                     "/login/callback", "/login/callback?state=zzz&code=c", "/offers/nope", "/status/nope",
                     "/types/nope", "/authorize?response_type=code&client_id=w&redirect_uri=javascript:x"
                     "&code_challenge=" + "a" * 43 + "&code_challenge_method=S256&scope=tax-compliance"]:
            r = await http.get(base + path)
            assert 400 <= r.status_code < 500, (path, r.status_code)
        headers = issuer_env.headers("aoc-tax")
        for method, path, body in [("POST", "/v1/offers", b"{bad"), ("POST", "/v1/offers", b'{"subject": 1}'),
                                   ("POST", "/v1/types", b'{"definition": []}'), ("PUT", "/v1/types/tax-compliance/source", b"[1]"),
                                   ("POST", "/v1/keys/rotate", b'{"private_key_pem": "x", "certificate_chain_pem": "y"}'),
                                   ("POST", "/v1/webhooks", b'{"url": "ftp://x"}'), ("GET", "/v1/credentials?limit=-1", b""),
                                   ("POST", "/v1/credentials/c_nope/explode", b""), ("POST", "/v1/tenants", b"{}")]:
            r = await http.request(method, issuer_env.url + path, content=body,
                                   headers={**headers, "Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    assert any(code == 400 for _, code in statuses) and any(code == 401 for _, code in statuses)


async def test_authorization_errors_go_back_to_a_validated_redirect_uri_only(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("uni-barcelona")
    good = {"response_type": "code", "client_id": "w", "redirect_uri": "http://127.0.0.1:9/cb", "state": "s1",
            "code_challenge": "a" * 43, "code_challenge_method": "S256", "scope": "university-diploma"}
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        no_pkce = await http.get(f"{base}/authorize", params={**good, "code_challenge_method": "plain"})
        bad_scope = await http.get(f"{base}/authorize", params={**good, "scope": "nothing"})
        bad_redirect = await http.get(f"{base}/authorize", params={**good, "redirect_uri": "http://evil.example/cb"})
        par_error = await http.post(f"{base}/par", data={**good, "scope": "nothing"})
    for response, error in ((no_pkce, "invalid_request"), (bad_scope, "invalid_scope")):
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith("http://127.0.0.1:9/cb?") and f"error={error}" in location and "state=s1" in location
    assert bad_redirect.status_code == 400 and "location" not in bad_redirect.headers
    assert par_error.status_code == 400 and par_error.json()["error"] == "invalid_scope"


async def test_authorization_details_for_a_configuration_the_tenant_lacks_are_refused(issuer_env: IssuerEnv) -> None:
    base = issuer_env.issuer("uni-barcelona")
    good = {"response_type": "code", "client_id": "w", "redirect_uri": "http://127.0.0.1:9/cb", "state": "s1",
            "code_challenge": "a" * 43, "code_challenge_method": "S256"}

    def details(cid: str) -> str:
        return json.dumps([{"type": "openid_credential", "credential_configuration_id": cid}])

    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        # another tenant's configuration, and one nobody has
        for cid in ("tax-compliance", "nope"):
            r = await http.get(f"{base}/authorize", params={**good, "authorization_details": details(cid)})
            assert r.status_code == 303, r.text
            location = r.headers["location"]
            assert location.startswith("http://127.0.0.1:9/cb?") and "state=s1" in location
            assert "error=invalid_authorization_details" in location, location
            r = await http.post(f"{base}/par", data={**good, "authorization_details": details(cid)})
            assert r.status_code == 400 and r.json()["error"] == "invalid_authorization_details", r.text
        # the tenant's own configuration is accepted
        r = await http.post(f"{base}/par", data={**good, "authorization_details": details("university-diploma")})
        assert r.status_code == 201 and r.json()["request_uri"], r.text


async def test_credential_requests_for_an_identifier_not_granted_or_with_response_encryption_are_refused(
        issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        wallet = WalletClient(http)
        ready = await wallet.redeem_offer(offer["offer_uri"], offer["tx_code"])

        async def request(**body: object) -> httpx.Response:
            proofs = wallet.proofs([Key.generate("ES256")], ready.issuer, await wallet.nonce(ready.issuer_metadata))
            return await wallet.credential_request(ready.issuer_metadata, ready.access_token,
                                                   {**body, "proofs": {"jwt": proofs}})

        for identifier in ("nope", "university-diploma"):
            r = await request(credential_identifier=identifier)
            assert r.status_code == 400 and r.json()["error"] == "unknown_credential_identifier", r.text
        r = await request(credential_configuration_id="tax-compliance", credential_response_encryption={
            "jwk": Key.generate("ES256").public_jwk(), "enc": "A256GCM"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_encryption_parameters", r.text
        # neither refusal used up the grant: the credential is still issued
        r = await request(credential_configuration_id="tax-compliance")
        assert r.status_code == 200, r.text


async def test_token_request_forms_that_cannot_be_read_are_invalid_requests(issuer_env: IssuerEnv) -> None:
    token = issuer_env.issuer("aoc-tax") + "/token"
    form = "application/x-www-form-urlencoded"
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        answers = {name: await http.post(token, content=body, headers={"Content-Type": form}) for name, body in [
            ("not utf-8", b"grant_type=%FF%FE"),
            ("repeated", b"grant_type=a&grant_type=a"),
            ("too many fields", b"&".join(b"p%d=1" % i for i in range(65)))]}
    for name, r in answers.items():
        assert (r.status_code, r.json()["error"]) == (400, "invalid_request"), name
    assert "repeated" in answers["repeated"].json()["error_description"]
