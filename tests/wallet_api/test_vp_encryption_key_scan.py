"""A ``direct_post.jwt`` request whose only encryption key is no key (its point off its curve) is refused
when the citizen scans it, before any consent screen or PIN: the wallet could never encrypt the answer to
it (formerly found out at approval, 400 ``jose.bad_jwk`` after the PIN; the wallet review's ``t2_vp``)."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx

from sandbox.population import generate_population
from ssi.oid4vp import unsigned_request_object
from tests.wallet_api.conftest import Recorder, WalletHandle, bearer, login

#: A citizen of the wallet fixture's population; the test reads no state of its wallet.
CITIZEN = generate_population(size=50).citizens[3].identifier
OFF_CURVE = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES", "use": "enc", "kid": "e1",
             "x": "A" * 43, "y": "A" * 42 + "E"}


def test_a_request_with_no_usable_encryption_key_is_refused_at_scan(wallet: WalletHandle, recorder: Recorder) -> None:
    client_id = f"redirect_uri:{recorder.url}/response"
    token = unsigned_request_object({
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post.jwt",
        "response_uri": f"{recorder.url}/response", "nonce": "n-enc", "state": "s-enc", "iat": int(time.time()),
        "dcql_query": {"credentials": [{"id": "pid", "format": "dc+sd-jwt", "meta": {"vct_values": ["urn:x:pid"]},
                                        "claims": [{"path": ["given_name"]}]}]},
        "client_metadata": {"jwks": {"keys": [OFF_CURVE]}, "encrypted_response_enc_values_supported": ["A128GCM"]}})
    before = len(recorder.posts)
    r = httpx.post(f"{wallet.url}/v1/presentations",
                   json={"request_uri": f"openid4vp://?client_id={quote(client_id)}&request={token}"},
                   headers=bearer(login(wallet.url, CITIZEN)), timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request_object", r.text
    assert "message.missing_encryption_key" in r.json()["error_description"], r.text
    assert len(recorder.posts) == before  # nothing was sent to the verifier
