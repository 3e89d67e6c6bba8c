"""Property tests for the ``ssi`` parsers that had none: base64url/JSON decoding, URL checks, DPoP
proofs, SD-JWT VC verification and the audit chain's checkpoints, JWKS and inclusion proofs.

Random and mutated input gives only the module's typed error (an ``SSIError`` with a stable code, or
``UnsafeURL`` with its reason), never another exception; builders round-trip through their parsers.
"""

from __future__ import annotations

import functools
import string
import time
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ssi.audit_chain import (
    AuditError,
    content_digest,
    entry_body,
    entry_hash,
    inclusion_proof,
    keys_from_jwks,
    read_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
    verify_inclusion,
)
from ssi.dpop import build_dpop_proof, verify_dpop_proof
from ssi.encoding import b64url_decode, b64url_encode, json_dumps, json_from_b64url, json_loads
from ssi.errors import EncodingError, MessageError, SSIError
from ssi.jose import Key
from ssi.sd_jwt_vc import PinnedKeyResolver, issue_sd_jwt_vc, verify_sd_jwt_vc
from ssi.urls import UnsafeURL, split_secure_url

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The costlier properties (a signature or a whole XML message per example) run fewer examples.
FEWER = settings(SETTINGS, max_examples=40)
ISSUER = "https://issuer.example/t/uni"
VCT = "https://issuer.example/t/uni/types/diploma"
NOW = 1_790_000_000

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=15)
B64_ALPHABET = string.ascii_letters + string.digits + "-_"


def _coded(error: SSIError) -> None:
    assert "." in error.code and error.detail, error


@functools.cache
def _key() -> Key:
    return Key.generate("ES256")


def _mutations(token: str) -> st.SearchStrategy[str]:
    """A token with one character replaced, removed or duplicated, or a part cut or swapped."""
    positions = st.integers(0, len(token) - 1)
    return st.one_of(
        st.tuples(positions, st.sampled_from(B64_ALPHABET + ".~=+/ ")).map(lambda t: token[:t[0]] + t[1] + token[t[0] + 1:]),
        positions.map(lambda p: token[:p] + token[p + 1:]),
        positions.map(lambda p: token[:p] + token[p] + token[p:]),
        st.integers(1, 5).map(lambda n: ".".join(token.split(".")[:-1] + ["" * n])),
        st.just(".".join(reversed(token.split(".")))),
    )


# -- encoding ---------------------------------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=64))
def test_b64url_round_trips(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert "=" not in encoded and set(encoded) <= set(B64_ALPHABET)
    assert b64url_decode(encoded) == data


@SETTINGS
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_b64url_decode_only_typed_errors(text: str | bytes) -> None:
    try:
        decoded = b64url_decode(text)
    except EncodingError as error:
        assert error.code == "encoding.bad_base64url"
    else:
        # What decodes re-encodes to the same text: no second spelling of the same bytes is accepted.
        assert b64url_encode(decoded) == (text if isinstance(text, str) else text.decode("ascii"))


@SETTINGS
@given(JSON_VALUES)
def test_json_round_trips(value: Any) -> None:
    assert json_loads(json_dumps(value)) == value
    assert json_from_b64url(b64url_encode(json_dumps(value).encode())) == value


@SETTINGS
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60),
                 JSON_VALUES.map(json_dumps).map(lambda s: s[: len(s) // 2] + s[len(s) // 2 + 1:])))
def test_json_loads_only_typed_errors(data: str | bytes) -> None:
    try:
        json_loads(data)
    except EncodingError as error:
        assert error.code in ("encoding.bad_json", "encoding.duplicate_json_member")


def test_json_refuses_duplicate_members_and_constants() -> None:
    for text, code in (('{"a":1,"a":2}', "encoding.duplicate_json_member"), ("NaN", "encoding.bad_json"),
                       ('{"a":Infinity}', "encoding.bad_json"), ("", "encoding.bad_json")):
        try:
            json_loads(text)
        except EncodingError as error:
            assert error.code == code
        else:
            raise AssertionError(f"{text!r} was accepted")


# -- URLs -------------------------------------------------------------------------------------------

@SETTINGS
@given(st.one_of(st.text(max_size=60), st.none(), st.integers(),
                 st.text(string.printable, max_size=30).map(lambda t: "https://" + t),
                 st.text(string.printable, max_size=30).map(lambda t: "http://127.0.0.1" + t)),
       st.booleans())
def test_split_secure_url_only_unsafe_url(url: Any, loopback: bool) -> None:
    try:
        parts = split_secure_url(url, allow_http_loopback=loopback)
    except UnsafeURL as error:
        assert error.reason and str(error)
    else:
        assert parts.hostname and parts.scheme in ("https", "http")
        assert parts.username is None and parts.password is None
        assert parts.scheme == "https" or loopback


@SETTINGS
@given(st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=20).filter(lambda h: h.strip("-")),
       st.text(string.ascii_letters + string.digits + "/_-", max_size=20))
def test_https_urls_split_into_their_parts(host: str, path: str) -> None:
    parts = split_secure_url(f"https://{host}.example/{path}")
    assert parts.hostname == f"{host}.example" and parts.path == f"/{path}"


# -- DPoP -------------------------------------------------------------------------------------------

@functools.cache
def _dpop() -> str:
    return build_dpop_proof(_key(), "POST", "https://issuer.example/t/uni/token", iat=NOW, jti="j1")


def _verify_dpop(proof: Any) -> None:
    verify_dpop_proof(proof, method="POST", uri="https://issuer.example/t/uni/token", now=NOW)


def test_dpop_round_trips() -> None:
    verified = verify_dpop_proof(_dpop(), method="POST", uri="https://issuer.example/t/uni/token", now=NOW)
    assert verified.jkt == _key().thumbprint() and verified.jti == "j1" and verified.iat == NOW


@SETTINGS
@given(st.data())
def test_mutated_dpop_proofs_only_typed_errors(data: st.DataObject) -> None:
    proof = data.draw(_mutations(_dpop()))
    assume(proof != _dpop())
    try:
        _verify_dpop(proof)
    except MessageError as error:
        assert error.code.startswith("message.dpop_")


@SETTINGS
@given(st.one_of(st.text(max_size=80), JSON_VALUES,
                 st.tuples(JSON_VALUES, JSON_VALUES).map(lambda hp: f"{b64url_encode(json_dumps(hp[0]).encode())}."
                                                                   f"{b64url_encode(json_dumps(hp[1]).encode())}.c2ln")))
def test_random_dpop_proofs_only_typed_errors(proof: Any) -> None:
    try:
        _verify_dpop(proof)
    except MessageError as error:
        assert error.code.startswith("message.dpop_")


# -- SD-JWT VC --------------------------------------------------------------------------------------

@functools.cache
def _vc() -> str:
    return issue_sd_jwt_vc({"given_name": "Anna", "degree": {"title": "Física"}}, vct=VCT, issuer=ISSUER, key=_key(),
                           holder_jwk=None, disclosable=[("given_name",), ("degree", "title")], iat=NOW,
                           exp=NOW + 3600)


def _verify_vc(token: Any) -> Any:
    return verify_sd_jwt_vc(token, key_resolver=PinnedKeyResolver({ISSUER: [_key()]}), expected_vcts=[VCT], now=NOW)


def test_sd_jwt_vc_round_trips() -> None:
    verified = _verify_vc(_vc())
    assert verified.claims["given_name"] == "Anna" and verified.claims["degree"]["title"] == "Física"


@SETTINGS
@given(st.data())
def test_mutated_sd_jwt_vcs_only_typed_errors(data: st.DataObject) -> None:
    token = data.draw(_mutations(_vc()))
    try:
        _verify_vc(token)
    except SSIError as error:
        _coded(error)


@SETTINGS
@given(st.one_of(st.text(max_size=80), JSON_VALUES, st.lists(st.text(B64_ALPHABET, max_size=20), max_size=5).map("~".join)))
def test_random_sd_jwt_vcs_only_typed_errors(token: Any) -> None:
    try:
        _verify_vc(token)
    except SSIError as error:
        _coded(error)


# -- audit chain ------------------------------------------------------------------------------------

HASH = st.text("0123456789abcdef", min_size=64, max_size=64)


@functools.cache
def _proof() -> dict[str, Any]:
    prev = "0" * 64
    entries = []
    for seq in (1, 2, 3):
        body = entry_body("tenant-1", seq, f"e{seq}", "issuance", "2026-11-24T08:00:00Z",
                          content_digest({"n": seq}, "c2FsdHNhbHRzYWx0c2FsdA"))
        entries.append({**body, "prev_hash": prev})
        prev = entry_hash(prev, body)
    checkpoint = sign_checkpoint(_key(), chain="tenant-1", seq=3, head=prev, iat=NOW)
    return inclusion_proof(entries, 1, checkpoint)


def test_inclusion_proof_round_trips() -> None:
    checkpoint = verify_inclusion(_proof(), [_key()], content={"n": 1}, salt="c2FsdHNhbHRzYWx0c2FsdA")
    assert (checkpoint.chain, checkpoint.seq) == ("tenant-1", 3)
    assert read_checkpoint(checkpoint.token)["seq"] == 3


@SETTINGS
@given(st.data())
def test_mutated_checkpoints_only_typed_errors(data: st.DataObject) -> None:
    token = data.draw(_mutations(_proof()["checkpoint"]))
    for parse in (read_checkpoint, lambda t: verify_checkpoint(t, [_key()])):
        try:
            parse(token)
        except AuditError as error:
            _coded(error)


@FEWER
@given(st.sampled_from(["prev_hash", "entry", "following", "checkpoint", "v"]),
       st.one_of(JSON_VALUES, HASH, st.lists(st.dictionaries(st.sampled_from(["seq", "chain", "digest", "id"]),
                                                             JSON_VALUES, max_size=4), max_size=3)))
def test_mutated_inclusion_proofs_only_typed_errors(member: str, value: Any) -> None:
    proof = {**_proof(), member: value}
    try:
        verify_inclusion(proof, [_key()])
    except AuditError as error:
        _coded(error)


@FEWER
@given(st.one_of(JSON_VALUES, st.fixed_dictionaries({"keys": st.lists(JSON_VALUES, max_size=3)}),
                 st.fixed_dictionaries({"jwks": st.fixed_dictionaries({"keys": st.lists(
                     st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "alg", "kid"]), st.text(max_size=8)),
                     max_size=3)})})))
def test_random_jwks_only_typed_errors(document: Any) -> None:
    try:
        keys = keys_from_jwks(document)
    except AuditError as error:
        assert error.code == "audit.bad_jwks" or error.code.endswith("bad_jwks"), error.code
    else:
        assert keys


def test_jwks_round_trips() -> None:
    keys = keys_from_jwks({"jwks": {"keys": [_key().public_jwk()]}})
    assert [k.thumbprint() for k in keys] == [_key().thumbprint()]


def test_dpop_proof_age_is_checked() -> None:
    # A sanity anchor for the random tests above: the fixed clock is what makes the base proof valid.
    try:
        verify_dpop_proof(_dpop(), method="POST", uri="https://issuer.example/t/uni/token", now=time.time())
    except MessageError as error:
        assert error.code in ("message.dpop_stale", "message.dpop_bad_iat")
    else:
        raise AssertionError("a proof from another time was accepted")


def test_non_canonical_base64url_is_refused() -> None:
    # Found by test_b64url_decode_only_typed_errors: "AB" decoded to the byte "AA" spells, so a
    # signature could be re-spelt and still verify.
    for text in ("AB", "AAB", "00", "_x"):
        try:
            b64url_decode(text)
        except EncodingError as error:
            assert error.code == "encoding.bad_base64url"
        else:
            raise AssertionError(f"{text!r} was accepted")
    assert b64url_decode("AA") == b"\x00" and b64url_decode("AAE") == b"\x00\x01"
