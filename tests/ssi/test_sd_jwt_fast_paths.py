"""The shortcuts the SD-JWT hot paths take (caches, batched work) change no outcome.

Each test pins one shortcut against the behaviour it must keep: the decoded-header cache hands out
copies, refuses nothing it should accept and accepts nothing it should refuse; the set-based digest
checks find the same faults as a digest-by-digest walk; issued disclosures and digests have the
shapes RFC 9901 requires.
"""

from __future__ import annotations

import hashlib

import pytest

from ssi import sd_jwt
from ssi.encoding import b64url_decode, b64url_encode, json_dumps, json_loads
from ssi.errors import JOSEError, SDJWTError
from ssi.jose import Key
from ssi.sd_jwt import SDJWT, issue_sd_jwt, make_disclosure, sd_hash, verify_sd_jwt

NOW = 1_800_000_000
ISSUER = Key.generate("ES256")
HOLDER = Key.generate("ES256")
BASE64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
X5C = ["MIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqGSM49BAMC", "MIIBdTCCARugAwIBAgIU"]


def enc(value: object) -> str:
    return b64url_encode(json_dumps(value).encode("utf-8"))


def token_with(header: dict, payload: dict, disclosures: list[str] = ()) -> str:  # type: ignore[assignment]
    signing_input = enc({"alg": "ES256", **header}) + "." + enc(payload)
    jwt = signing_input + "." + b64url_encode(ISSUER.sign(signing_input.encode()))
    return jwt + "~" + "".join(d + "~" for d in disclosures)


def digest(encoded: str) -> str:
    return b64url_encode(hashlib.sha256(encoded.encode("ascii")).digest())


# -- decoded-header cache ------------------------------------------------------------------------

def test_cached_header_is_a_copy_callers_may_change() -> None:
    token = token_with({"typ": "dc+sd-jwt", "x5c": X5C}, {"iss": "https://issuer.example", "iat": NOW})
    first = SDJWT.parse(token)
    first.header["x5c"].append("tampered")
    first.header["typ"] = "tampered"
    again = SDJWT.parse(token)
    assert again.header == {"alg": "ES256", "typ": "dc+sd-jwt", "x5c": X5C}
    assert again.header is not first.header and again.header["x5c"] is not first.header["x5c"]
    assert again.jws.header == again.header


def test_header_with_an_object_member_is_decoded_every_time() -> None:
    header = {"typ": "dc+sd-jwt", "jwk": HOLDER.public_jwk()}
    token = token_with(header, {"iss": "https://issuer.example", "iat": NOW})
    segment = token.split(".", 1)[0]
    first = SDJWT.parse(token)
    assert segment not in sd_jwt._HEADER_CACHE
    first.header["jwk"]["x"] = "changed"
    assert SDJWT.parse(token).header["jwk"] == HOLDER.public_jwk()


@pytest.mark.parametrize(("header", "code"), [
    ({"crit": ["x"], "x": 1}, "sd_jwt.malformed"),
    ({"alg": 5}, "sd_jwt.malformed"),
])
def test_refused_headers_are_refused_again_and_never_cached(header: dict, code: str) -> None:
    segment = enc({"alg": "ES256", **header})
    token = segment + "." + enc({"iss": "https://issuer.example"}) + ".AAAA~"
    for _ in range(2):
        with pytest.raises(SDJWTError) as info:
            SDJWT.parse(token)
        assert info.value.code == code
    assert segment not in sd_jwt._HEADER_CACHE


def test_header_cache_stays_bounded() -> None:
    for i in range(sd_jwt._HEADER_CACHE_MAX + 10):
        SDJWT.parse(token_with({"typ": "dc+sd-jwt", "kid": f"key-{i}"}, {"iat": NOW}))
    assert 0 < len(sd_jwt._HEADER_CACHE) <= sd_jwt._HEADER_CACHE_MAX


def test_a_cached_header_does_not_save_a_bad_signature() -> None:
    good = issue_sd_jwt({"iss": "https://issuer.example", "iat": NOW, "a": 1}, key=ISSUER, disclosable=[("a",)],
                        header={"typ": "dc+sd-jwt", "x5c": X5C})
    verify_sd_jwt(good, issuer_key=ISSUER.public(), now=NOW)  # the header is now cached
    jwt, rest = good.split("~", 1)
    head, body, _sig = jwt.split(".")
    forged = head + "." + body + "." + b64url_encode(bytes(64)) + "~" + rest
    with pytest.raises(JOSEError) as info:
        verify_sd_jwt(forged, issuer_key=ISSUER.public(), now=NOW)
    assert info.value.code == "jose.bad_signature"


# -- digest checks by sets -----------------------------------------------------------------------

def test_disclosed_members_follow_the_order_of_their_digests() -> None:
    disclosures = [make_disclosure(name, i) for i, name in enumerate(["a", "b", "c", "d"])]
    order = [disclosures[i] for i in (2, 0, 3, 1)]
    token = token_with({}, {"_sd": [d.digest for d in order]}, [d.encoded for d in disclosures])
    assert list(SDJWT.parse(token).claims) == ["c", "a", "d", "b"]


@pytest.mark.parametrize("bad", [[1], ["x", None], [["x"]], [{"x": 1}], ["x", True]])
def test_sd_entries_that_are_not_strings(bad: list) -> None:
    with pytest.raises(SDJWTError) as info:
        SDJWT.parse(token_with({}, {"_sd": bad}))
    assert info.value.code == "sd_jwt.bad_sd_field"


def test_a_digest_repeated_in_a_nested_level_is_refused() -> None:
    d = make_disclosure("a", 1)
    payload = {"_sd": [d.digest], "nested": {"_sd": ["other", d.digest]}}
    with pytest.raises(SDJWTError) as info:
        SDJWT.parse(token_with({}, payload, [d.encoded]))
    assert info.value.code == "sd_jwt.duplicate_digest"


def test_top_level_sd_alg_left_out_but_a_nested_one_kept() -> None:
    token = token_with({}, {"_sd_alg": "sha-256", "inner": {"_sd_alg": "kept"}})
    assert SDJWT.parse(token).claims == {"inner": {"_sd_alg": "kept"}}


# -- issued shapes -------------------------------------------------------------------------------

def test_issued_disclosures_digests_and_salts() -> None:
    claims = {f"c{i}": "é" * i for i in range(12)}
    token = issue_sd_jwt({"iss": "https://issuer.example", **claims}, key=ISSUER,
                         disclosable=[(name,) for name in claims], decoys=3)
    jwt, *parts, last = token.split("~")
    assert last == ""
    payload = json_loads(b64url_decode(jwt.split(".")[1]))
    assert len(payload["_sd"]) == len(claims) + 3 and payload["_sd"] == sorted(payload["_sd"])
    for entry in payload["_sd"]:
        assert len(entry) == 43 and len(b64url_decode(entry)) == 32
    salts = set()
    for encoded in parts:
        salt, name, value = json_loads(b64url_decode(encoded))
        assert digest(encoded) in payload["_sd"] and claims[name] == value
        # At least 128 random bits (RFC 9901 §9.3): 22 or more base64url characters.
        assert len(salt) >= 22 and set(salt) <= BASE64URL
        salts.add(salt)
    assert len(salts) == len(parts)
    assert verify_sd_jwt(token, issuer_key=ISSUER.public()).claims == {"iss": "https://issuer.example", **claims}


def test_sd_hash_is_base64url_sha256_of_the_prefix() -> None:
    prefix = "eyJhbGciOiJFUzI1NiJ9.e30.AAAA~WyJzIiwiYSIsMV0~"
    assert sd_hash(prefix) == b64url_encode(hashlib.sha256(prefix.encode("ascii")).digest())
    assert len(sd_hash(prefix)) == 43


def test_an_oversized_header_is_not_kept() -> None:
    token = token_with({"typ": "dc+sd-jwt", "x5c": ["A" * (sd_jwt._HEADER_CACHE_MAX_SEGMENT)]}, {"iat": NOW})
    assert SDJWT.parse(token).header["typ"] == "dc+sd-jwt"
    assert token.split(".", 1)[0] not in sd_jwt._HEADER_CACHE


def test_many_digests_and_disclosures_are_placed_in_linear_time() -> None:
    # Ordering the disclosed members must not cost digests x disclosures (a denial of service).
    disclosures = [make_disclosure(f"c{i}", i) for i in range(3000)]
    token = token_with({}, {"_sd": [d.digest for d in reversed(disclosures)]}, [d.encoded for d in disclosures])
    claims = SDJWT.parse(token).claims
    assert list(claims) == [f"c{i}" for i in reversed(range(3000))]


# -- cnf key cache -------------------------------------------------------------------------------

def test_cnf_key_object_is_reused_for_the_same_coordinates_only() -> None:
    jwk = HOLDER.public_jwk()
    first = sd_jwt.import_holder_jwk({**jwk, "kid": "one"})
    again = sd_jwt.import_holder_jwk({**jwk, "kid": "two"})
    # Same key material, same OpenSSL key object; each import gets its own Key with its own kid.
    assert again.public_key is first.public_key and again is not first
    assert (first.kid, again.kid) == ("one", "two")
    other = sd_jwt.import_holder_jwk(Key.generate("ES256").public_jwk())
    assert other.public_key is not first.public_key
    assert other.thumbprint() != first.thumbprint()


def test_an_off_curve_cnf_point_is_refused_every_time() -> None:
    jwk = HOLDER.public_jwk()
    y = b64url_decode(jwk["y"])
    off_curve = {**jwk, "y": b64url_encode(y[:-1] + bytes([y[-1] ^ 1]))}
    before = sd_jwt._p256_point.cache_info().currsize
    for _ in range(2):
        with pytest.raises(JOSEError) as caught:
            sd_jwt.import_holder_jwk(off_curve)
        assert caught.value.code == "jose.bad_jwk"
    assert sd_jwt._p256_point.cache_info().currsize == before


def test_cnf_key_cache_stays_bounded() -> None:
    maxsize = sd_jwt._p256_point.cache_info().maxsize
    assert maxsize is not None
    for _ in range(maxsize + 5):
        sd_jwt.import_holder_jwk(Key.generate("ES256").public_jwk())
    assert sd_jwt._p256_point.cache_info().currsize == maxsize
