"""DPoP proofs (RFC 9449): round trip, and every refusal with its code; interop with joserfc."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest
from joserfc import jwk as jrfc_jwk
from joserfc import jwt as jrfc_jwt

from ssi.dpop import access_token_hash, build_dpop_proof, normalize_htu, verify_dpop_proof
from ssi.errors import MessageError
from ssi.jose import Key, sign_jws

URI = "https://issuer.example/t/uni/credential"
KEY = Key.generate()


def test_round_trip_binds_key_method_uri_and_token() -> None:
    proof = build_dpop_proof(KEY, "post", URI + "?x=1", access_token="tok")
    verified = verify_dpop_proof(proof, method="POST", uri="HTTPS://Issuer.example/t/uni/credential",
                                 access_token="tok", expected_jkt=KEY.thumbprint())
    assert verified.jkt == KEY.thumbprint() and verified.jti


def test_a_joserfc_made_proof_verifies() -> None:
    private = jrfc_jwk.import_key(KEY.private_jwk())
    token = jrfc_jwt.encode({"alg": "ES256", "typ": "dpop+jwt", "jwk": KEY.public_jwk(include_kid=False)},
                            {"jti": "j1", "htm": "POST", "htu": URI, "iat": int(time.time())}, private)
    assert verify_dpop_proof(token, method="POST", uri=URI).jti == "j1"


@pytest.mark.parametrize(("proof", "kwargs", "code"), [
    (lambda: "garbage", {}, "message.dpop_malformed"),
    (lambda: sign_jws({"typ": "JWT", "jwk": KEY.public_jwk()}, {"jti": "a", "htm": "POST", "htu": URI,
                                                               "iat": int(time.time())}, KEY), {}, "message.dpop_bad_typ"),
    (lambda: sign_jws({"typ": "dpop+jwt"}, {"jti": "a", "htm": "POST", "htu": URI, "iat": int(time.time())}, KEY),
     {}, "message.dpop_bad_key"),
    (lambda: sign_jws({"typ": "dpop+jwt", "jwk": KEY.private_jwk()}, {"jti": "a", "htm": "POST", "htu": URI,
                                                                    "iat": int(time.time())}, KEY),
     {}, "message.dpop_private_key"),
    (lambda: sign_jws({"typ": "dpop+jwt", "jwk": Key.generate().public_jwk()}, {"jti": "a", "htm": "POST", "htu": URI,
                                                                               "iat": int(time.time())}, KEY),
     {}, "message.dpop_bad_signature"),
    (lambda: build_dpop_proof(KEY, "GET", URI), {}, "message.dpop_bad_htm"),
    (lambda: build_dpop_proof(KEY, "POST", "https://other.example/x"), {}, "message.dpop_bad_htu"),
    (lambda: build_dpop_proof(KEY, "POST", URI, iat=int(time.time()) - 3600), {}, "message.dpop_stale"),
    (lambda: build_dpop_proof(KEY, "POST", URI, iat=int(time.time()) + 3600), {}, "message.dpop_stale"),
    # an integer too large for a float: 'now - iat' raised OverflowError
    (lambda: build_dpop_proof(KEY, "POST", URI, iat=-10**400), {}, "message.dpop_stale"),
    # without a usable jti the proof cannot be remembered as used, so it could be replayed
    *[(lambda claims=claims: sign_jws({"typ": "dpop+jwt", "jwk": KEY.public_jwk()},
                                       {**claims, "htm": "POST", "htu": URI, "iat": int(time.time())}, KEY),
       {}, "message.dpop_missing_jti")
      for claims in ({}, {"jti": ""}, {"jti": 7}, {"jti": None}, {"jti": "j" * 201})],
    (lambda: build_dpop_proof(KEY, "POST", URI), {"access_token": "tok"}, "message.dpop_bad_ath"),
    (lambda: build_dpop_proof(KEY, "POST", URI, access_token="other"), {"access_token": "tok"}, "message.dpop_bad_ath"),
    (lambda: build_dpop_proof(KEY, "POST", URI), {"expected_jkt": Key.generate().thumbprint()},
     "message.dpop_key_mismatch"),
])
def test_refusals_have_stable_codes(proof, kwargs, code) -> None:
    with pytest.raises(MessageError) as refused:
        verify_dpop_proof(proof(), method="POST", uri=URI, **kwargs)
    assert refused.value.code == code


def test_helpers() -> None:
    assert normalize_htu("HTTPS://A.example/p?q#f") == "https://a.example/p"
    expected = base64.urlsafe_b64encode(hashlib.sha256(b"tok").digest()).rstrip(b"=").decode()
    assert access_token_hash("tok") == expected
