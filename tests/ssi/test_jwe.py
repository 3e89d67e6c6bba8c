"""Compact JWE (ECDH-ES + AES-GCM) for direct_post.jwt: round trips, the OpenID4VP vector, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe as joserfc_jwe
from joserfc.jwk import ECKey

from ssi.encoding import b64url_decode, b64url_encode, json_dumps
from ssi.errors import JOSEError, SSIError
from ssi.jose import Key
from ssi.jwe import decrypt_jwe, decrypt_jwe_json, encrypt_jwe, jwe_header

# The encrypted authorization response example of OpenID4VP 1.0 §8.3 and its decryption key.
SPEC_JWK = {"kty": "EC", "kid": "ac", "use": "enc", "crv": "P-256", "alg": "ECDH-ES",
            "x": "YO4epjifD-KWeq1sL2tNmm36BhXnkJ0He-WqMYrp9Fk",
            "y": "Hekpm0zfK7C-YccH5iBjcIXgf6YdUvNUac_0At55Okk",
            "d": "Et-3ce0omz8_TuZ96Df9lp0GAaaDoUnDe6X-CRO7Aww"}
SPEC_JWE = ("eyJhbGciOiJFQ0RILUVTIiwiZW5jIjoiQTEyOEdDTSIsImtpZCI6ImFjIiwiZXBrIjp7Imt0eSI6IkVDIiwieCI6Im5ubVZwbTNWM2piaGNhZlFhUkJrU1ZOSGx3Wkh3dC05ck9wSnVmeVlJdWsiLCJ5IjoicjRmakRxd0p5czlxVU9QLV9iM21SNVNaRy0tQ3dPMm1pYzVWU05UWU45ZyIsImNydiI6IlAtMjU2In19"
            "..uAYcHRUSSn2X0WPX.yVzlGSYG4qbg0bq18JcUiDRw56yVnbKR8E7S7YlEtzT00RqE3Pw5oTpUG3hdLN4taHZ9gC1kwak8JOnJgQ"
            ".1wR024_3-qtAlx1oFIUpQQ")


@pytest.fixture(scope="module")
def key() -> Key:
    return Key.generate("ES256", kid="enc-1")


def test_openid4vp_example_decrypts() -> None:
    spec_key = Key.from_jwk({k: v for k, v in SPEC_JWK.items() if k != "alg"})
    assert decrypt_jwe_json(SPEC_JWE, spec_key) == {"vp_token": {"example_credential_id": ["eyJhb...YMetA"]}}
    assert jwe_header(SPEC_JWE)["kid"] == "ac"


@pytest.mark.parametrize("enc", ["A128GCM", "A256GCM"])
def test_round_trip_dict_and_bytes(key: Key, enc: str) -> None:
    token = encrypt_jwe({"vp_token": {"pid": ["a~b~c"]}, "state": "s1"}, key.public_jwk(), enc=enc)
    header = jwe_header(token)
    assert header["alg"] == "ECDH-ES" and header["enc"] == enc and header["kid"] == "enc-1"
    assert header["epk"]["crv"] == "P-256" and "d" not in header["epk"]
    assert decrypt_jwe_json(token, key) == {"vp_token": {"pid": ["a~b~c"]}, "state": "s1"}
    assert decrypt_jwe(encrypt_jwe(b"\x00raw", key, enc=enc), key) == b"\x00raw"


def test_apu_apv_and_explicit_kid(key: Key) -> None:
    token = encrypt_jwe({"a": 1}, key, kid="other-kid", apu=b"wallet", apv=b"nonce-123")
    header = jwe_header(token)
    assert header["kid"] == "other-kid"
    assert b64url_decode(header["apu"]) == b"wallet" and b64url_decode(header["apv"]) == b"nonce-123"
    assert decrypt_jwe_json(token, key) == {"a": 1}


def test_interop_with_joserfc_both_ways(key: Key) -> None:
    theirs = ECKey.import_key(key.private_jwk() | {"alg": "ECDH-ES"})
    token = joserfc_jwe.encrypt_compact({"alg": "ECDH-ES", "enc": "A256GCM"}, b'{"x":1}', theirs,
                                        algorithms=["ECDH-ES", "A256GCM"])
    assert decrypt_jwe_json(token, key) == {"x": 1}
    ours = encrypt_jwe({"y": 2}, key.public_jwk())
    assert joserfc_jwe.decrypt_compact(ours, theirs, algorithms=["ECDH-ES", "A128GCM"]).plaintext == b'{"y":2}'


def test_p384_recipient() -> None:
    k = Key.generate("ES384")
    assert decrypt_jwe(encrypt_jwe(b"hi", k.public_jwk()), k) == b"hi"


def _with_header(token: str, **changes) -> str:
    header = jwe_header(token)
    header.update(changes)
    header = {k: v for k, v in header.items() if v is not None}
    return ".".join([b64url_encode(json_dumps(header).encode())] + token.split(".")[1:])


def test_refusals(key: Key) -> None:
    token = encrypt_jwe({"a": 1}, key.public_jwk())
    other = Key.generate("ES256")
    cases = [
        (lambda: decrypt_jwe(token, other), "jose.jwe_decrypt_failed"),
        (lambda: decrypt_jwe(token, key, encryptions=("A256GCM",)), "jose.jwe_alg_not_allowed"),
        (lambda: decrypt_jwe(token, key, algorithms=("ECDH-ES+A128KW",)), "jose.jwe_alg_not_allowed"),
        (lambda: decrypt_jwe(_with_header(token, alg="RSA-OAEP"), key), "jose.jwe_alg_not_allowed"),
        (lambda: decrypt_jwe(_with_header(token, alg="dir"), key, algorithms=("dir",)), "jose.jwe_alg_not_allowed"),
        (lambda: decrypt_jwe(_with_header(token, enc="A128CBC-HS256"), key), "jose.jwe_alg_not_allowed"),
        (lambda: decrypt_jwe(_with_header(token, zip="DEF"), key), "jose.jwe_alg_not_allowed"),
        (lambda: decrypt_jwe(_with_header(token, crit=["x"]), key), "jose.jwe_alg_not_allowed"),
        (lambda: decrypt_jwe(_with_header(token, epk=None), key), "jose.bad_jwe"),
        (lambda: decrypt_jwe(_with_header(token, kid="changed"), key), "jose.jwe_decrypt_failed"),
        (lambda: decrypt_jwe(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), key), "jose.jwe_decrypt_failed"),
        (lambda: decrypt_jwe("a.b.c", key), "jose.bad_jwe"),
        (lambda: decrypt_jwe(None, key), "jose.bad_jwe"),
        (lambda: decrypt_jwe("!!.a.b.c.d", key), "jose.bad_jwe"),
        (lambda: decrypt_jwe(b64url_encode(b"[1]") + ".a.b.c.d", key), "jose.bad_jwe"),
        (lambda: decrypt_jwe("x" * 1_000_001, key), "jose.bad_jwe"),
        (lambda: decrypt_jwe(token, key.public()), "jose.not_private"),
        (lambda: decrypt_jwe(token, Key.generate("EdDSA")), "jose.bad_key"),
        (lambda: decrypt_jwe_json(encrypt_jwe(b"not json", key), key), "jose.bad_jwe_payload"),
        (lambda: decrypt_jwe_json(encrypt_jwe(b"[1]", key), key), "jose.bad_jwe_payload"),
        (lambda: encrypt_jwe({}, key, alg="RSA-OAEP"), "jose.jwe_alg_not_allowed"),
        (lambda: encrypt_jwe({}, key, enc="A128CBC-HS256"), "jose.jwe_alg_not_allowed"),
        (lambda: encrypt_jwe({}, key.public_jwk() | {"alg": "ECDH-ES+A256KW"}), "jose.jwe_alg_not_allowed"),
        (lambda: encrypt_jwe({}, {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}), "jose.bad_jwk"),
        (lambda: encrypt_jwe({}, Key.generate("EdDSA").public_jwk()), "jose.bad_key"),
        (lambda: encrypt_jwe({}, "not a key"), "jose.bad_key"),
    ]
    for action, code in cases:
        with pytest.raises(JOSEError) as err:
            action()
        assert err.value.code == code, (code, err.value.code)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", max_size=40),
                      min_size=1, max_size=6))
def test_random_tokens_only_typed_errors(parts: list[str]) -> None:
    k = Key.generate("ES256")
    with pytest.raises(SSIError):
        decrypt_jwe(".".join(parts), k)


@settings(max_examples=100, deadline=None)
@given(position=st.integers(min_value=0), flip=st.sampled_from("AQgw_-"))
def test_mutated_jwes_only_typed_errors(position: int, flip: str) -> None:
    k = Key.generate("ES256")
    token = encrypt_jwe({"vp_token": {"q": ["x"]}}, k)
    i = position % len(token)
    mutated = token[:i] + flip + token[i + 1:]
    try:
        assert decrypt_jwe_json(mutated, k) == {"vp_token": {"q": ["x"]}}
    except SSIError as exc:
        assert exc.code.startswith(("jose.", "encoding."))
