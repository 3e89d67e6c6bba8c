"""``direct_post.jwt``: the verifier's encryption key is taken only when the response can be encrypted to it.

``ClientMetadata.encryption_key`` looked at ``kty``, ``crv``, ``alg`` and ``use`` only, so a JWK whose point
is not on its curve (or whose coordinates have the wrong length) passed the scan, and the wallet found out
only at approval, after the PIN, with 400 ``jose.bad_jwk`` (the wallet review's ``t2_vp``). Such a key is
now passed over: a request offering no other is refused when it is read (``missing_encryption_key``)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ssi.errors import MessageError
from ssi.jose import Key
from ssi.jwe import encrypt_jwe
from ssi.oid4vp import ClientMetadata, unsigned_request_object, verify_request_object

RESPONSE_URI = "https://verifier.example.org/response"
CLIENT_ID = f"redirect_uri:{RESPONSE_URI}"

_ZERO = "A" * 43  # 32 zero bytes, base64url
_ONE = "A" * 42 + "E"  # the integer 1 in 32 bytes

#: ECDH-ES keys that look like P-256/P-384 keys and are none.
BAD_KEYS: dict[str, dict[str, Any]] = {
    "point off the curve": {"kty": "EC", "crv": "P-256", "x": _ZERO, "y": _ONE},
    "coordinates too short": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAE"},
    "no y": {"kty": "EC", "crv": "P-256", "x": _ZERO},
    "coordinates not base64url": {"kty": "EC", "crv": "P-256", "x": "!" * 43, "y": "!" * 43},
    "coordinates not strings": {"kty": "EC", "crv": "P-256", "x": 5, "y": 6},
    "a P-256 point named P-384": {**Key.generate("ES256").public_jwk(include_kid=False), "crv": "P-384"},
}


def _enc(jwk: dict[str, Any], kid: str) -> dict[str, Any]:
    return {**jwk, "alg": "ECDH-ES", "use": "enc", "kid": kid}


def _good() -> dict[str, Any]:
    return _enc(Key.generate("ES256").public_jwk(include_kid=False), "good")


def _request(keys: list[dict[str, Any]]) -> str:
    return unsigned_request_object({
        "client_id": CLIENT_ID, "response_type": "vp_token", "response_mode": "direct_post.jwt",
        "response_uri": RESPONSE_URI, "nonce": "n-1", "state": "st-1", "iat": int(time.time()),
        "dcql_query": {"credentials": [{"id": "pid", "format": "dc+sd-jwt",
                                        "meta": {"vct_values": ["urn:example:pid"]},
                                        "claims": [{"path": ["family_name"]}]}]},
        "client_metadata": {"jwks": {"keys": keys}, "encrypted_response_enc_values_supported": ["A128GCM"]}})


def _read(token: str) -> Any:
    return verify_request_object(token, trust_anchors=[], client_id=CLIENT_ID, allow_unsigned=True)


@pytest.mark.parametrize("bad", list(BAD_KEYS))
def test_a_key_the_response_cannot_be_encrypted_to_is_not_offered(bad: str) -> None:
    key = _enc(BAD_KEYS[bad], "bad")
    assert ClientMetadata.model_validate({"jwks": {"keys": [key]}}).encryption_key() is None
    with pytest.raises(MessageError) as refused:
        _read(_request([key]))
    assert refused.value.code == "message.missing_encryption_key"


@pytest.mark.parametrize("bad", list(BAD_KEYS))
def test_a_usable_key_after_a_broken_one_is_the_one_taken(bad: str) -> None:
    good = _good()
    request = _read(_request([_enc(BAD_KEYS[bad], "bad"), good]))
    chosen = request.client_metadata.encryption_key()
    assert chosen == good
    assert encrypt_jwe({"vp_token": {}}, chosen).count(".") == 4  # what approval then does


def test_a_usable_p384_key_is_taken() -> None:
    key = _enc(Key.generate("ES384").public_jwk(include_kid=False), "p384")
    assert ClientMetadata.model_validate({"jwks": {"keys": [key]}}).encryption_key() == key
