"""Token Status List: bit layout, the draft's examples, compression limits, the token and the reference."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssi.encoding import b64url_encode, json_dumps
from ssi.errors import SSIError, StatusListError
from ssi.jose import Key, sign_jws
from ssi.status_list import (
    INVALID,
    STATUS_LIST_JWT_MEDIA_TYPE,
    SUSPENDED,
    VALID,
    StatusList,
    StatusReference,
    parse_status_claim,
    sign_status_list_token,
    status_claim,
    verify_status_list_token,
)

URI = "https://issuer.example.org/statuslists/1"
NOW = 1_700_000_000


def test_draft_example_one_bit() -> None:
    # draft-ietf-oauth-status-list, "Status List" section: 1-bit example
    sl = StatusList.decode("eNrbuRgAAhcBXQ", 1)
    expected = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    assert len(sl) == 16
    assert [sl.get(i) for i in range(16)] == expected
    assert sl.to_bytes() == bytes([0xB9, 0xA3])


def test_draft_example_two_bits() -> None:
    sl = StatusList.decode("eNo76fITAAPfAgc", 2)
    expected = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]
    assert len(sl) == 12
    assert [sl.get(i) for i in range(12)] == expected
    assert sl.to_bytes() == bytes([0xC9, 0x44, 0xF9])


def test_building_the_draft_examples_gives_the_same_bytes() -> None:
    one = StatusList(16, 1)
    for i, v in enumerate([1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]):
        one.set(i, v)
    assert one.to_bytes() == bytes([0xB9, 0xA3])
    assert StatusList.decode(one.encode(), 1) == one
    two = StatusList(12, 2)
    for i, v in enumerate([1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]):
        two.set(i, v)
    assert two.to_bytes() == bytes([0xC9, 0x44, 0xF9])


def test_encoding_uses_the_zlib_format() -> None:
    sl = StatusList(100, 1)
    raw = base64.urlsafe_b64decode(sl.encode() + "==")
    assert raw[0] == 0x78  # ZLIB header (CMF: deflate, 32K window)
    assert zlib.decompress(raw) == bytes(13)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_round_trip_each_width(bits: int) -> None:
    rng = random.Random(bits)
    size = 1000
    sl = StatusList(size, bits)
    values = [rng.randrange(1 << bits) for _ in range(size)]
    for i, v in enumerate(values):
        sl.set(i, v)
    back = StatusList.decode(sl.encode(), bits)
    assert [back.get(i) for i in range(size)] == values
    assert back.to_json()["bits"] == bits
    # setting one entry never disturbs its neighbours
    back.set(500, 0)
    assert back.get(499) == values[499] and back.get(501) == values[501] and back.get(500) == 0


def test_one_million_entries_round_trip() -> None:
    size = 1_000_000
    sl = StatusList(size, 1)
    revoked = set(random.Random(7).sample(range(size), 5000))
    for i in revoked:
        sl.set(i, INVALID)
    lst = sl.encode()
    back = StatusList.decode(lst, 1)
    assert len(back) == size
    assert back == sl
    assert all(back.get(i) == INVALID for i in revoked)
    assert sum(back.get(i) for i in range(0, size, 997)) == sum(1 for i in range(0, size, 997) if i in revoked)


def test_status_constants() -> None:
    assert (VALID, INVALID, SUSPENDED) == (0, 1, 2)
    assert STATUS_LIST_JWT_MEDIA_TYPE == "application/statuslist+jwt"


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (lambda: StatusList(10, 3), "status_list.bad_bits"),
        (lambda: StatusList(10, True), "status_list.bad_bits"),
        (lambda: StatusList(-1, 1), "status_list.bad_size"),
        (lambda: StatusList(10, 1).get(10), "status_list.index_out_of_range"),
        (lambda: StatusList(10, 1).get(-1), "status_list.index_out_of_range"),
        (lambda: StatusList(10, 1).get("1"), "status_list.index_out_of_range"),
        (lambda: StatusList(10, 1).set(0, 2), "status_list.bad_status"),
        (lambda: StatusList(10, 2).set(0, -1), "status_list.bad_status"),
        (lambda: StatusList.decode("eNrbuRgAAhcBXQ", 16), "status_list.bad_bits"),
        (lambda: StatusList.decode("not base64!", 1), "status_list.bad_lst"),
        (lambda: StatusList.decode("", 1), "status_list.bad_lst"),
        (lambda: StatusList.decode(123, 1), "status_list.bad_lst"),
        (lambda: StatusList.decode(b64url_encode(b"plain bytes"), 1), "status_list.bad_compression"),
        (lambda: StatusList.decode(b64url_encode(zlib.compress(b"\x00" * 100)[:-3]), 1), "status_list.bad_compression"),
        (lambda: StatusList.decode(b64url_encode(zlib.compress(b"\x00") + b"extra"), 1), "status_list.bad_compression"),
        (lambda: StatusList.from_json([]), "status_list.bad_status_list"),
        (lambda: StatusList.from_json({"bits": 1}), "status_list.bad_status_list"),
    ],
)
def test_refusals(action, code: str) -> None:
    with pytest.raises(StatusListError) as err:
        action()
    assert err.value.code == code


def test_decompression_bomb_is_refused() -> None:
    bomb = b64url_encode(zlib.compress(bytes(50 * 1024 * 1024), 9))
    assert len(bomb) < 100_000
    with pytest.raises(StatusListError) as err:
        StatusList.decode(bomb, 1)
    assert err.value.code == "status_list.too_large"
    with pytest.raises(StatusListError):
        StatusList.decode(StatusList(10_000, 1).encode(), 1, max_size=1000)
    assert len(StatusList.decode(StatusList(8000, 1).encode(), 1, max_size=1000)) == 8000


# -- the token ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def key() -> Key:
    return Key.generate("ES256", kid="sl-1")


def _list() -> StatusList:
    sl = StatusList(64, 2)
    sl.set(3, INVALID)
    sl.set(5, SUSPENDED)
    return sl


def test_token_round_trip(key: Key) -> None:
    token = sign_status_list_token(_list(), uri=URI, key=key, iat=NOW, exp=NOW + 3600, ttl=300,
                                   x5c=["MIIB"])
    from ssi.jose import parse_jws
    jws = parse_jws(token)
    assert jws.header["typ"] == "statuslist+jwt" and jws.header["kid"] == "sl-1" and jws.header["x5c"] == ["MIIB"]
    payload = jws.json_payload()
    assert payload["sub"] == URI and payload["iat"] == NOW and payload["exp"] == NOW + 3600 and payload["ttl"] == 300
    assert payload["status_list"]["bits"] == 2
    out = verify_status_list_token(token, key=key.public(), expected_uri=URI, now=NOW + 10)
    assert out.uri == URI and out.ttl == 300 and out.exp == NOW + 3600 and out.iat == NOW
    assert out.status(3) == INVALID and out.status(5) == SUSPENDED and out.status(4) == VALID


def test_token_key_resolver(key: Key) -> None:
    token = sign_status_list_token(_list(), uri=URI, key=key, iat=NOW)
    seen = {}

    def resolve(header: dict, payload: dict) -> Key:
        seen["kid"] = header.get("kid")
        seen["sub"] = payload.get("sub")
        return key.public()

    assert verify_status_list_token(token, key=resolve, expected_uri=URI, now=NOW).status(3) == INVALID
    assert seen == {"kid": "sl-1", "sub": URI}


def _forge(key: Key, header: dict, payload: dict) -> str:
    return sign_jws(header, payload, key)


@pytest.mark.parametrize(
    ("header", "payload", "code"),
    [
        ({"typ": "JWT"}, {"sub": URI, "iat": NOW, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.bad_typ"),
        ({}, {"sub": URI, "iat": NOW, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.bad_typ"),
        ({"typ": "statuslist+jwt"}, {"sub": URI + "x", "iat": NOW, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.sub_mismatch"),
        ({"typ": "statuslist+jwt"}, {"iat": NOW, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.sub_mismatch"),
        ({"typ": "statuslist+jwt"}, {"sub": URI, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.missing_iat"),
        ({"typ": "statuslist+jwt"}, {"sub": URI, "iat": "yesterday", "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.bad_iat"),
        ({"typ": "statuslist+jwt"}, {"sub": URI, "iat": NOW - 7200, "exp": NOW - 3600, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.expired"),
        ({"typ": "statuslist+jwt"}, {"sub": URI, "iat": NOW + 3600, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.iat_in_future"),
        ({"typ": "statuslist+jwt"}, {"sub": URI, "iat": NOW, "ttl": -5, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.bad_ttl"),
        ({"typ": "statuslist+jwt"}, {"sub": URI, "iat": NOW}, "status_list.bad_status_list"),
        ({"typ": "statuslist+jwt"}, {"sub": URI, "iat": NOW, "status_list": {"bits": 3, "lst": "eNrbuRgAAhcBXQ"}}, "status_list.bad_bits"),
        ({"typ": "statuslist+jwt"}, {"sub": URI, "iat": NOW, "status_list": {"bits": 1, "lst": "AAAA"}}, "status_list.bad_compression"),
    ],
)
def test_token_refusals(key: Key, header: dict, payload: dict, code: str) -> None:
    token = _forge(key, header, payload)
    with pytest.raises(StatusListError) as err:
        verify_status_list_token(token, key=key, expected_uri=URI, now=NOW)
    assert err.value.code == code


@pytest.mark.parametrize("resolved", [None, "not a key", {"kty": "EC"}])
def test_a_resolver_that_finds_no_key_is_refused(key: Key, resolved: object) -> None:
    token = sign_status_list_token(_list(), uri=URI, key=key, iat=NOW)
    with pytest.raises(StatusListError) as err:
        verify_status_list_token(token, key=lambda header, payload: resolved, expected_uri=URI, now=NOW)
    assert err.value.code == "status_list.no_key"
    with pytest.raises(StatusListError) as err:
        verify_status_list_token(token, key=resolved, expected_uri=URI, now=NOW)  # type: ignore[arg-type]
    assert err.value.code == "status_list.no_key"


def test_token_signature_and_structure(key: Key) -> None:
    token = sign_status_list_token(_list(), uri=URI, key=key, iat=NOW)
    other = Key.generate("ES256")
    with pytest.raises(StatusListError) as err:
        verify_status_list_token(token, key=other, expected_uri=URI, now=NOW)
    assert err.value.code == "status_list.bad_signature"
    with pytest.raises(StatusListError) as err:
        verify_status_list_token(token, key=key, expected_uri=URI, now=NOW, algorithms=("EdDSA",))
    assert err.value.code == "status_list.bad_signature"
    h, p, s = token.split(".")
    tampered = h + "." + b64url_encode(json_dumps({"sub": URI, "iat": NOW, "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}).encode()) + "." + s
    with pytest.raises(StatusListError) as err:
        verify_status_list_token(tampered, key=key, expected_uri=URI, now=NOW)
    assert err.value.code == "status_list.bad_signature"
    for garbage in ["", "a.b", None, 42, "x.y.z"]:
        with pytest.raises(StatusListError) as err:
            verify_status_list_token(garbage, key=key, expected_uri=URI, now=NOW)
        assert err.value.code == "status_list.malformed_token"


def test_sign_refuses_bad_arguments(key: Key) -> None:
    with pytest.raises(StatusListError):
        sign_status_list_token(_list(), uri="", key=key)
    with pytest.raises(StatusListError):
        sign_status_list_token(_list(), uri=URI, key=key, ttl=0)
    with pytest.raises(StatusListError):
        sign_status_list_token(_list(), uri=URI, key=key, iat=NOW, exp=NOW)


# -- the reference ----------------------------------------------------------------------------

def test_status_claim_round_trip() -> None:
    claim = status_claim(42, URI)
    assert claim == {"status_list": {"idx": 42, "uri": URI}}
    assert parse_status_claim(claim) == StatusReference(42, URI)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "status_list.bad_reference"),
        ({}, "status_list.bad_reference"),
        ({"status_list": []}, "status_list.bad_reference"),
        ({"status_list": {"uri": URI}}, "status_list.bad_idx"),
        ({"status_list": {"idx": -1, "uri": URI}}, "status_list.bad_idx"),
        ({"status_list": {"idx": True, "uri": URI}}, "status_list.bad_idx"),
        ({"status_list": {"idx": 1.5, "uri": URI}}, "status_list.bad_idx"),
        ({"status_list": {"idx": "3", "uri": URI}}, "status_list.bad_idx"),
        ({"status_list": {"idx": 1}}, "status_list.bad_uri"),
        ({"status_list": {"idx": 1, "uri": "https://"}}, "status_list.bad_uri"),
        ({"status_list": {"idx": 1, "uri": "https://u:p@example.org/x"}}, "status_list.bad_uri"),
        ({"status_list": {"idx": 1, "uri": "http://example.org/x"}}, "status_list.insecure_uri"),
        ({"status_list": {"idx": 1, "uri": "http://127.0.0.1:8001/x"}}, "status_list.insecure_uri"),
        ({"status_list": {"idx": 1, "uri": "ftp://example.org/x"}}, "status_list.insecure_uri"),
        ({"status_list": {"idx": 1, "uri": "https://[::1"}}, "status_list.bad_uri"),
    ],
)
def test_reference_refusals(value, code: str) -> None:
    with pytest.raises(StatusListError) as err:
        parse_status_claim(value)
    assert err.value.code == code


def test_http_loopback_only_with_the_development_flag() -> None:
    for uri in ["http://127.0.0.1:8001/x", "http://localhost:8001/x", "http://[::1]:8001/x"]:
        assert parse_status_claim(status_claim(1, uri), allow_http_loopback=True).uri == uri
    with pytest.raises(StatusListError) as err:
        parse_status_claim(status_claim(1, "http://example.org/x"), allow_http_loopback=True)
    assert err.value.code == "status_list.insecure_uri"
    with pytest.raises(StatusListError):
        status_claim(-1, URI)


# -- property-based -------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(lst=st.one_of(st.text(max_size=60), st.binary(max_size=60).map(b64url_encode)),
       bits=st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(), st.none(), st.text(max_size=3)))
def test_random_lst_only_typed_errors(lst, bits) -> None:
    try:
        sl = StatusList.decode(lst, bits)
    except SSIError as exc:
        assert exc.code.startswith("status_list.")
    else:
        assert len(sl) * sl.bits == len(sl.to_bytes()) * 8


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), bits=st.sampled_from([1, 2, 4, 8]), cut=st.integers(0, 50))
def test_mutated_streams_only_typed_errors(data: bytes, bits: int, cut: int) -> None:
    compressed = bytearray(zlib.compress(data))
    if cut < len(compressed):
        compressed[cut] ^= 0x5A
    try:
        sl = StatusList.decode(b64url_encode(bytes(compressed)), bits)
    except StatusListError:
        return
    assert len(sl) == len(sl.to_bytes()) * 8 // bits


@settings(max_examples=200, deadline=None)
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["status_list", "idx", "uri", "x"]), c, max_size=3),
                          max_leaves=8))
def test_random_references_only_typed_errors(value) -> None:
    try:
        ref = parse_status_claim(value)
    except StatusListError:
        return
    assert ref.uri.startswith("https://") and ref.idx >= 0
