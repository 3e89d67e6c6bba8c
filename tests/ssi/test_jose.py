"""Keys, JWK and compact JWS: interoperability with joserfc and jwcrypto, and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
import warnings

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws as joserfc_jws
from joserfc.jwk import ECKey, OKPKey, RSAKey
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from ssi import jose
from ssi.encoding import b64url_decode, b64url_encode, b64url_json, json_dumps, json_loads
from ssi.errors import EncodingError, JOSEError, SSIError
from ssi.jose import Key, check_time_claims, parse_jws, sign_jws, verify_jws

ALGS = ["ES256", "ES384", "EdDSA"]


def _joserfc_key(jwk: dict):
    return OKPKey.import_key(jwk) if jwk["kty"] == "OKP" else ECKey.import_key(jwk)


@pytest.mark.parametrize("alg", ALGS)
def test_our_jws_verifies_with_joserfc_and_jwcrypto(alg: str) -> None:
    key = Key.generate(alg, kid="k1")
    token = sign_jws({"typ": "example+jwt"}, {"sub": "x", "n": 1}, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags EdDSA as superseded by RFC 9864
        decoded = joserfc_jws.deserialize_compact(token, _joserfc_key(key.public_jwk()), algorithms=[alg])
    assert json.loads(decoded.payload) == {"sub": "x", "n": 1}
    other = jwcrypto_jws.JWS()
    other.deserialize(token)
    other.verify(jwcrypto_jwk.JWK(**key.public_jwk()), alg=alg)
    assert json.loads(other.payload) == {"sub": "x", "n": 1}


@pytest.mark.parametrize("alg", ALGS)
def test_their_jws_verifies_with_us(alg: str) -> None:
    key = Key.generate(alg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = joserfc_jws.serialize_compact({"alg": alg}, b'{"a":1}', _joserfc_key(key.private_jwk()),
                                              algorithms=[alg])
    assert verify_jws(token, Key.from_jwk(key.public_jwk())).json_payload() == {"a": 1}


@pytest.mark.parametrize("alg", ALGS)
def test_jwk_round_trip_and_thumbprint_matches_libraries(alg: str) -> None:
    key = Key.generate(alg)
    again = Key.from_jwk(key.private_jwk())
    assert again.is_private and again.thumbprint() == key.thumbprint()
    assert Key.from_jwk(key.public_jwk()).public_jwk() == key.public_jwk()
    assert key.thumbprint() == jwcrypto_jwk.JWK(**key.public_jwk()).thumbprint()
    assert "d" not in key.public_jwk()
    assert key.private_jwk()["d"] not in repr(key) and key.public_jwk()["x"] not in repr(key)


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 §3.1 example key and its thumbprint.
    jwk = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29", "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCi"
        "FV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZg"
        "nYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniI"
        "qbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")}
    assert Key.from_jwk(jwk).thumbprint() == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_extra_jwk_members_are_ignored() -> None:
    jwk = {**Key.generate().public_jwk(), "key_ops": ["verify"], "use": "sig", "ext": True}
    assert Key.from_jwk(jwk).alg == "ES256"


def _point_off_curve(jwk: dict) -> dict:
    y = bytearray(b64url_decode(jwk["y"]))
    y[-1] ^= 1
    return {**jwk, "y": b64url_encode(bytes(y))}


BAD_JWKS = {
    "not an object": ["kty", "EC"],
    "no kty": {"crv": "P-256"},
    "unknown kty": {"kty": "oct", "k": "c2VjcmV0"},
    "unknown curve": {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
    "short x": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": b64url_encode(b"\0" * 32)},
    "x not a string": {"kty": "EC", "crv": "P-256", "x": 5, "y": "AA"},
    "x not base64url": {"kty": "EC", "crv": "P-256", "x": "a+b/", "y": "AA"},
    "point off the curve": _point_off_curve(Key.generate().public_jwk()),
    "okp wrong curve": {"kty": "OKP", "crv": "X25519", "x": b64url_encode(b"\0" * 32)},
    "rsa too short": {"kty": "RSA", "n": b64url_encode((2**1023 + 1).to_bytes(128, "big")), "e": "AQAB"},
}


@pytest.mark.parametrize("case", sorted(BAD_JWKS))
def test_bad_jwks_are_refused_with_a_code(case: str) -> None:
    with pytest.raises(JOSEError) as err:
        Key.from_jwk(BAD_JWKS[case])
    assert err.value.code == "jose.bad_jwk"


def test_jwk_with_mismatched_okp_private_part() -> None:
    a, b = Key.generate("EdDSA").private_jwk(), Key.generate("EdDSA").private_jwk()
    with pytest.raises(JOSEError) as err:
        Key.from_jwk({**a, "d": b["d"]})
    assert err.value.code == "jose.bad_jwk"


def _forge(header: dict, payload: bytes, signature: bytes) -> str:
    return b64url_json(header) + "." + b64url_encode(payload) + "." + b64url_encode(signature)


def test_alg_none_and_hmac_with_the_public_key_are_refused() -> None:
    key = Key.generate()
    public_pem = key.public_pem()
    payload = b'{"admin":true}'
    with pytest.raises(JOSEError) as err:
        verify_jws(_forge({"alg": "none"}, payload, b""), key.public())
    assert err.value.code == "jose.alg_not_allowed"
    signing_input = (b64url_json({"alg": "HS256"}) + "." + b64url_encode(payload)).encode()
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    with pytest.raises(JOSEError) as err:
        verify_jws(signing_input.decode() + "." + b64url_encode(mac), key.public(), algorithms=["ES256", "HS256"])
    assert err.value.code == "jose.alg_not_allowed"


@pytest.mark.parametrize(("token", "code"), [
    (5, "jose.malformed"),
    ("a.b", "jose.malformed"),
    ("a.b.c.d", "jose.malformed"),
    ("!!!.e30.AA", "jose.malformed"),
    (b64url_encode(b"[1]") + ".e30.AA", "jose.malformed"),
    (b64url_json({"typ": "JWT"}) + ".e30.AA", "jose.malformed"),
    (b64url_json({"alg": "ES256", "crit": ["exp"], "exp": 1}) + ".e30.AA", "jose.unsupported_crit"),
    (b64url_encode(b'{"alg":"ES256","alg":"none"}') + ".e30.AA", "jose.malformed"),
])
def test_malformed_compact_jws(token, code: str) -> None:
    with pytest.raises(JOSEError) as err:
        parse_jws(token)
    assert err.value.code == code


def test_wrong_key_tampered_payload_and_algorithm_confusion() -> None:
    key, other = Key.generate(), Key.generate()
    token = sign_jws({}, {"a": 1}, key)
    with pytest.raises(JOSEError, match="bad_signature"):
        verify_jws(token, other.public())
    head, _, sig = token.split(".")
    with pytest.raises(JOSEError, match="bad_signature"):
        verify_jws(head + "." + b64url_json({"a": 2}) + "." + sig, key.public())
    with pytest.raises(JOSEError) as err:
        verify_jws(token, Key.generate("EdDSA").public(), algorithms=["ES256", "EdDSA"])
    assert err.value.code == "jose.alg_key_mismatch"
    with pytest.raises(JOSEError) as err:
        verify_jws(token, key.public(), algorithms=["EdDSA"])
    assert err.value.code == "jose.alg_not_allowed"
    with pytest.raises(JOSEError) as err:
        sign_jws({"alg": "ES384"}, {}, key)
    assert err.value.code == "jose.alg_key_mismatch"


def test_time_claims() -> None:
    now = 1_000_000
    check_time_claims({"exp": now + 10, "nbf": now - 10, "iat": now}, now=now)
    check_time_claims({"exp": now - 30}, now=now, leeway=60)  # within clock skew
    for payload, code in [({"exp": now - 61}, "jose.expired"), ({"exp": now, "nbf": now + 61}, "jose.not_yet_valid"),
                          ({"exp": now, "iat": now + 61}, "jose.iat_in_future"), ({"exp": "soon"}, "jose.bad_exp"),
                          ({"exp": True}, "jose.bad_exp"), ({"iat": now}, "jose.missing_exp")]:
        with pytest.raises(JOSEError) as err:
            check_time_claims(payload, now=now, require=("exp",))
        assert err.value.code == code


def test_time_claims_outside_datetime_are_malformed() -> None:
    # NumericDates that datetime cannot represent would make a caller's fromtimestamp raise later.
    now = 1_000_000
    for payload, code in [({"exp": 10**30}, "jose.bad_exp"), ({"exp": 1e300}, "jose.bad_exp"),
                          ({"nbf": -10**30}, "jose.bad_nbf"), ({"iat": -1e300}, "jose.bad_iat"),
                          ({"exp": float("inf")}, "jose.bad_exp"), ({"exp": float("nan")}, "jose.bad_exp")]:
        with pytest.raises(JOSEError) as err:
            check_time_claims(payload, now=now)
        assert err.value.code == code
    check_time_claims({"exp": 253402300799, "nbf": -62135596800}, now=now)  # 9999-12-31T23:59:59Z, 0001-01-01
    assert (jose.MIN_NUMERIC_DATE, jose.MAX_NUMERIC_DATE) == (-62135596800, 253402300799)


def test_numbers_beyond_a_double_are_not_json() -> None:
    # float('1e400') is inf: it would get round the no-Infinity rule (an exp that never comes)
    for text in ["1e400", '{"exp":-1e400}', b"[1E999]"]:
        with pytest.raises(EncodingError) as err:
            json_loads(text)
        assert err.value.code == "encoding.bad_json"
    assert json_loads('{"a":1.5e308,"b":1e-400}') == {"a": 1.5e308, "b": 0.0}
    for value in [float("inf"), {"a": float("nan")}]:
        with pytest.raises(EncodingError):
            json_dumps(value)


def test_strict_encodings() -> None:
    assert b64url_decode(b64url_encode(b"\xff\xfe")) == b"\xff\xfe"
    for bad in ["ab=", "a+b/", "a", "ab cd", "é", "AB\n"]:
        with pytest.raises(EncodingError):
            b64url_decode(bad)
    for bad in ['{"a":1,"a":2}', "NaN", '{"a":Infinity}', "{", b"\xff"]:
        with pytest.raises(EncodingError):
            json_loads(bad)
    assert json_dumps({"a": "à"}) == '{"a":"à"}'


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.lists(st.text(alphabet="ABCDEFGHIJabcdefghij0123456789-_", max_size=60), min_size=3,
                          max_size=3).map(".".join)))
def test_random_tokens_only_raise_typed_errors(token: str) -> None:
    key = Key.generate()
    try:
        verify_jws(token, key.public())
    except SSIError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "d", "n", "e", "alg"]),
                       st.one_of(st.text(max_size=50), st.integers(), st.none(), st.sampled_from(
                           ["EC", "OKP", "RSA", "P-256", "Ed25519", "AQAB", "ES256"]))))
def test_random_jwks_only_raise_typed_errors(jwk: dict) -> None:
    try:
        Key.from_jwk(jwk)
    except SSIError:
        pass


# -- RSA: outside OpenID providers' ID tokens only ------------------------------------------------

def _rsa_signed(alg: str) -> tuple[str, RSAKey]:
    """A compact JWS signed by joserfc with a fresh 2048-bit RSA key (``ssi.jose`` never signs RSA)."""
    key = RSAKey.generate_key(2048, parameters={"alg": alg})
    return joserfc_jws.serialize_compact({"alg": alg}, b'{"sub":"x"}', key, algorithms=[alg]), key


def _short_rsa_signed(alg: str) -> tuple[str, rsa.RSAPrivateKey]:
    """The same with a 1024-bit key, signed by hand: joserfc will not make one."""
    private = rsa.generate_private_key(65537, 1024)
    signing_input = (b64url_json({"alg": alg}) + "." + b64url_encode(b'{"sub":"x"}')).encode()
    pad = padding.PKCS1v15() if alg == "RS256" else padding.PSS(padding.MGF1(hashes.SHA256()), 32)
    return signing_input.decode() + "." + b64url_encode(private.sign(signing_input, pad, hashes.SHA256())), private


def test_rsa_is_an_id_token_algorithm_only() -> None:
    assert set(jose.ID_TOKEN_ALGORITHMS) == {"ES256", "ES384", "EdDSA", "RS256", "PS256"}
    assert not set(jose.DEFAULT_ALGORITHMS) & {"RS256", "PS256"}


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_id_tokens_of_other_libraries_verify_with_the_id_token_list_only(alg: str) -> None:
    token, theirs = _rsa_signed(alg)
    key = Key.from_jwk(theirs.as_dict(private=False))
    assert verify_jws(token, key, jose.ID_TOKEN_ALGORITHMS).json_payload() == {"sub": "x"}
    with pytest.raises(JOSEError) as err:
        verify_jws(token, key)  # credentials, proofs, KB-JWTs and DPoP keep the default list
    assert err.value.code == "jose.alg_not_allowed"
    # jwcrypto signs too
    other = jwcrypto_jwk.JWK.generate(kty="RSA", size=2048)
    signed = jwcrypto_jws.JWS(b'{"sub":"y"}')
    signed.add_signature(other, alg=alg, protected=json.dumps({"alg": alg}))
    verify_jws(signed.serialize(compact=True), Key.from_jwk(other.export_public(as_dict=True)),
               jose.ID_TOKEN_ALGORITHMS)


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_keys_under_2048_bits_are_refused_however_they_were_built(alg: str) -> None:
    token, private = _short_rsa_signed(alg)
    public = private.public_key()
    for key in (Key.from_cryptography(public), Key.from_pem(Key.from_cryptography(public).public_pem())):
        assert key.verify(parse_jws(token).signature, parse_jws(token).signing_input, alg)  # a true signature
        with pytest.raises(JOSEError) as err:
            verify_jws(token, key, jose.ID_TOKEN_ALGORITHMS)
        assert err.value.code == "jose.weak_key"
    with pytest.raises(JOSEError) as err:
        Key.from_jwk(Key.from_cryptography(public).public_jwk())
    assert err.value.code == "jose.bad_jwk"


def test_rsa_algorithm_never_makes_an_ec_key_verify() -> None:
    token, _ = _rsa_signed("RS256")
    for key in (Key.generate("ES256"), Key.generate("EdDSA")):
        with pytest.raises(JOSEError) as err:
            verify_jws(token, key.public(), jose.ID_TOKEN_ALGORITHMS)
        assert err.value.code == "jose.alg_key_mismatch"
    ec_token = sign_jws({}, {"sub": "x"}, Key.generate("ES256"))
    _, rsa_key = _rsa_signed("RS256")
    with pytest.raises(JOSEError) as err:
        verify_jws(ec_token, Key.from_jwk(rsa_key.as_dict(private=False)), jose.ID_TOKEN_ALGORITHMS)
    assert err.value.code == "jose.alg_key_mismatch"


def test_hmac_keyed_with_an_rsa_public_key_is_refused() -> None:
    # The classic confusion: HS256 with the provider's public key (PEM, JWK JSON or modulus) as secret.
    _, theirs = _rsa_signed("RS256")
    key = Key.from_jwk(theirs.as_dict(private=False))
    jwk = key.public_jwk()
    for secret in (key.public_pem(), json_dumps(jwk).encode(), b64url_decode(jwk["n"])):
        signing_input = (b64url_json({"alg": "HS256"}) + "." + b64url_encode(b'{"sub":"x"}')).encode()
        token = signing_input.decode() + "." + b64url_encode(hmac.new(secret, signing_input, hashlib.sha256).digest())
        for algorithms in (jose.ID_TOKEN_ALGORITHMS, (*jose.ID_TOKEN_ALGORITHMS, "HS256")):
            with pytest.raises(JOSEError) as err:
                verify_jws(token, key, algorithms)
            assert err.value.code == "jose.alg_not_allowed"


def test_an_rsa_jwk_naming_its_algorithm_serves_that_one_only() -> None:
    rs_token, theirs = _rsa_signed("RS256")
    declared = theirs.as_dict(private=False)
    assert declared["alg"] == "RS256"
    key = Key.from_jwk(declared)
    assert verify_jws(rs_token, key.public(), jose.ID_TOKEN_ALGORITHMS)
    # the same key under PS256 (a valid PSS signature): refused, the JWK said RS256
    private = theirs.private_key
    signing_input = (b64url_json({"alg": "PS256"}) + "." + b64url_encode(b'{"sub":"x"}')).encode()
    ps_token = signing_input.decode() + "." + b64url_encode(private.sign(
        signing_input, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()))
    for candidate in (key, key.public()):
        with pytest.raises(JOSEError) as err:
            verify_jws(ps_token, candidate, jose.ID_TOKEN_ALGORITHMS)
        assert err.value.code == "jose.alg_key_mismatch"
    # a JWK that names no algorithm serves both
    undeclared = {k: v for k, v in declared.items() if k != "alg"}
    assert verify_jws(ps_token, Key.from_jwk(undeclared).public(), jose.ID_TOKEN_ALGORITHMS)
