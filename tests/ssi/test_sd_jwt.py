"""SD-JWT (RFC 9901): issuing, parsing, selecting, presenting and verifying."""

from __future__ import annotations

import hashlib

import pytest

from ssi.encoding import b64url_decode, b64url_encode, json_loads
from ssi.errors import SDJWTError
from ssi.jose import Key
from ssi.sd_jwt import SD_ALG, SDJWT, Disclosure, issue_sd_jwt, make_disclosure, sd_hash, verify_sd_jwt

NOW = 1_800_000_000
ISSUER = Key.generate("ES256")
HOLDER = Key.generate("ES256")

PAYLOAD = {
    "iss": "https://issuer.example.cat",
    "iat": NOW - 60,
    "cnf": {"jwk": HOLDER.public_jwk()},
    "given_name": "Anna",
    "family_name": "Puig",
    "address": {"street_address": "Carrer Major 1", "locality": "Girona", "country": "ES"},
    "nationalities": ["ES", "FR", "IT"],
    "degrees": [{"title": "Grau", "year": 2013}, {"title": "Màster", "year": 2015}],
}
DISCLOSABLE = [
    ("given_name",), ("family_name",), ("address",), ("address", "street_address"), ("address", "locality"),
    ("nationalities", None), ("degrees", None, "year"),
]


def payload_of(token: str) -> dict:
    return json_loads(b64url_decode(token.split("~")[0].split(".")[1]))


def issue(**kwargs) -> str:
    kwargs.setdefault("disclosable", DISCLOSABLE)
    kwargs.setdefault("decoys", 0)
    return issue_sd_jwt(PAYLOAD, key=ISSUER, header={"typ": "example+sd-jwt"}, **kwargs)


def verify(token: str, **kwargs):
    return verify_sd_jwt(token, issuer_key=ISSUER.public(), now=NOW, **kwargs)


# -- disclosures ---------------------------------------------------------------------------------

def test_rfc9901_example_disclosures_and_digests() -> None:
    # RFC 9901 §5.1 examples: an object property and an array element disclosure.
    d = Disclosure.decode("WyJfMjZiYzRMVC1hYzZxMktJNmNCVzVlcyIsICJmYW1pbHlfbmFtZSIsICJNw7ZiaXVzIl0")
    assert (d.salt, d.name, d.value) == ("_26bc4LT-ac6q2KI6cBW5es", "family_name", "Möbius")
    assert d.digest == "X9yH0Ajrdm1Oij4tWso9UzzKJvPoDxwmuEcO3XAdRC0"
    e = Disclosure.decode("WyJsa2x4RjVqTVlsR1RQVW92TU5JdkNBIiwgIkZSIl0")
    assert (e.name, e.value, e.is_array_element) == (None, "FR", True)
    assert e.digest == "w0I8EKcdCtUPkGCNUrfwVp2xEgNjtoIDlOxc9-PlOhs"


def test_make_disclosure_round_trips_with_random_salts() -> None:
    a = make_disclosure("locality", "Girona")
    b = make_disclosure("locality", "Girona")
    assert a.salt != b.salt and a.digest != b.digest
    assert len(b64url_decode(a.salt)) == 16
    again = Disclosure.decode(a.encoded)
    assert again == a
    assert a.digest == b64url_encode(hashlib.sha256(a.encoded.encode()).digest())
    element = make_disclosure(None, {"x": [1, 2]}, salt="fixed")
    assert json_loads(b64url_decode(element.encoded)) == ["fixed", {"x": [1, 2]}]


def test_make_disclosure_refuses_reserved_names() -> None:
    for name in ("_sd", "..."):
        with pytest.raises(SDJWTError) as info:
            make_disclosure(name, 1)
        assert info.value.code == "sd_jwt.reserved_claim_name"


# -- issuing -------------------------------------------------------------------------------------

def test_issued_structure() -> None:
    token = issue()
    assert token.endswith("~") and token.count("~") == 1 + 5 + 3 + 2  # after the JWT, one per disclosure
    payload = payload_of(token)
    assert payload["_sd_alg"] == SD_ALG
    assert payload["_sd"] == sorted(payload["_sd"]) and len(payload["_sd"]) == 3
    assert "given_name" not in payload and payload["iss"] == PAYLOAD["iss"]
    assert all(set(e) == {"..."} for e in payload["nationalities"])
    assert [set(d) for d in payload["degrees"]] == [{"title", "_sd"}, {"title", "_sd"}]
    sd = SDJWT.parse(token)
    assert sd.claims == PAYLOAD
    assert sd.header == {"alg": "ES256", "typ": "example+sd-jwt"}
    assert len(sd.disclosures) == 10 and sd.kb_jwt is None


def test_recursive_disclosure_nests_digests_inside_the_parent() -> None:
    sd = SDJWT.parse(issue())
    address = next(d for d in sd.disclosures if d.name == "address")
    assert set(address.value) == {"_sd", "country"} and len(address.value["_sd"]) == 2


def test_decoys_per_container() -> None:
    exact = payload_of(issue(decoys=3))
    assert len(exact["_sd"]) == 3 + 3
    assert len(exact["nationalities"]) == 3 + 3
    for _ in range(5):
        random_count = payload_of(issue(decoys=None))
        assert 3 + 1 <= len(random_count["_sd"]) <= 3 + 4
        assert 3 + 1 <= len(random_count["nationalities"]) <= 3 + 4
    sd = SDJWT.parse(issue(decoys=2))
    assert sd.claims == PAYLOAD  # decoys vanish when processed


def test_decoys_look_like_digests() -> None:
    payload = payload_of(issue(decoys=4))
    for digest in payload["_sd"]:
        assert len(digest) == 43 and len(b64url_decode(digest)) == 32


def test_absent_paths_are_ignored_and_nothing_disclosable_gives_a_plain_sd_jwt() -> None:
    token = issue_sd_jwt({"a": 1}, key=ISSUER, disclosable=[("missing",), ("a", "deeper")], decoys=0)
    assert token.count("~") == 1
    assert verify(token).claims == {"a": 1}


def test_issue_refuses_bad_input() -> None:
    for payload, paths, code in [
        ([1], [], "sd_jwt.bad_payload"),
        ({"_sd_alg": "x"}, [], "sd_jwt.reserved_claim_name"),
        ({"a": [{"...": "x"}]}, [], "sd_jwt.reserved_claim_name"),
        ({"a": float("nan")}, [("a",)], "sd_jwt.bad_claim_value"),
        ({"a": 1}, [()], "sd_jwt.bad_path"),
        ({"a": 1}, [("a", 1.5)], "sd_jwt.bad_path"),
        ({"a": 1}, [("a", -1)], "sd_jwt.bad_path"),
    ]:
        with pytest.raises(SDJWTError) as info:
            issue_sd_jwt(payload, key=ISSUER, disclosable=paths)
        assert info.value.code == code


# -- selecting and presenting --------------------------------------------------------------------

def test_disclosures_for_includes_enclosing_and_enclosed() -> None:
    sd = SDJWT.parse(issue())
    names = lambda ds: sorted(str(d.name if d.name is not None else d.value) for d in ds)  # noqa: E731
    assert names(sd.disclosures_for([("address", "locality")])) == ["address", "locality"]
    assert names(sd.disclosures_for([("address",)])) == ["address", "locality", "street_address"]
    assert names(sd.disclosures_for([("nationalities", 1)])) == ["FR"]
    assert names(sd.disclosures_for([("nationalities", None)])) == ["ES", "FR", "IT"]
    assert names(sd.disclosures_for([("degrees", 1, "year")])) == ["year"]
    assert sd.disclosures_for([("iss",)]) == []
    assert sd.disclosures_for([("nowhere", "at", "all")]) == []


def test_selective_presentation_verifies_and_shows_only_the_chosen_claims() -> None:
    sd = SDJWT.parse(issue(decoys=2))
    presentation = sd.present([("given_name",), ("address", "locality"), ("nationalities", 2)])
    assert presentation.endswith("~")
    result = verify(presentation)
    assert result.claims["given_name"] == "Anna"
    assert "family_name" not in result.claims
    assert result.claims["address"] == {"country": "ES", "locality": "Girona"}
    assert result.claims["nationalities"] == ["IT"]
    assert result.claims["degrees"] == [{"title": "Grau"}, {"title": "Màster"}]
    assert sorted(result.disclosed_paths) == sorted([("given_name",), ("address",), ("address", "locality"),
                                                     ("nationalities", 0)])
    assert "_sd" not in result.claims["address"] and "_sd_alg" not in result.claims
    assert result.holder_key is not None and result.holder_key.thumbprint() == HOLDER.thumbprint()


def test_presentation_with_key_binding() -> None:
    sd = SDJWT.parse(issue())
    presentation = sd.present([("family_name",)], holder_key=HOLDER, aud="https://verifier.example",
                              nonce="n-1", iat=NOW)
    prefix, kb_jwt = presentation.rsplit("~", 1)
    header, payload = (json_loads(b64url_decode(p)) for p in kb_jwt.split(".")[:2])
    assert header == {"alg": "ES256", "typ": "kb+jwt"}
    assert payload == {"iat": NOW, "aud": "https://verifier.example", "nonce": "n-1", "sd_hash": sd_hash(prefix + "~")}
    result = verify(presentation, require_kb=True, expected_aud="https://verifier.example", expected_nonce="n-1")
    assert result.claims["family_name"] == "Puig" and "given_name" not in result.claims
    assert result.kb_header["typ"] == "kb+jwt" and result.kb_payload["nonce"] == "n-1"
    reparsed = SDJWT.parse(presentation)
    assert reparsed.kb_jwt == kb_jwt and reparsed.presentation_prefix == prefix + "~"


def test_key_binding_window_and_leeway() -> None:
    sd = SDJWT.parse(issue())
    kwargs = {"require_kb": True, "expected_aud": "a", "expected_nonce": "n"}
    within = sd.present([], holder_key=HOLDER, aud="a", nonce="n", iat=NOW - 250)
    assert verify(within, **kwargs).claims["iss"] == PAYLOAD["iss"]
    skewed = sd.present([], holder_key=HOLDER, aud="a", nonce="n", iat=NOW + 30)
    assert verify(skewed, **kwargs)
    old = sd.present([], holder_key=HOLDER, aud="a", nonce="n", iat=NOW - 250)
    with pytest.raises(SDJWTError) as info:
        verify(old, kb_max_age=60, **kwargs)
    assert info.value.code == "sd_jwt.kb_stale"


def test_present_needs_consistent_key_binding_arguments() -> None:
    sd = SDJWT.parse(issue())
    with pytest.raises(SDJWTError) as info:
        sd.present([], aud="a", nonce="n")
    assert info.value.code == "sd_jwt.kb_key_missing"
    with pytest.raises(SDJWTError) as info:
        sd.present([], holder_key=HOLDER, aud="a")
    assert info.value.code == "sd_jwt.kb_params_missing"


def test_eddsa_issuer_and_holder() -> None:
    issuer, holder = Key.generate("EdDSA"), Key.generate("EdDSA")
    token = issue_sd_jwt({"cnf": {"jwk": holder.public_jwk()}, "a": 1, "b": 2}, key=issuer, disclosable=[("a",)])
    presentation = SDJWT.parse(token).present([("a",)], holder_key=holder, aud="v", nonce="n")
    result = verify_sd_jwt(presentation, issuer_key=issuer.public(), require_kb=True, expected_aud="v",
                           expected_nonce="n")
    assert result.claims == {"cnf": {"jwk": holder.public_jwk()}, "a": 1, "b": 2}


def test_issuer_key_callable_gets_header_and_unverified_payload() -> None:
    seen = []

    def resolve(header, payload):
        seen.append((header["typ"], payload["iss"]))
        return ISSUER.public()

    assert verify_sd_jwt(issue(), issuer_key=resolve, now=NOW).claims["given_name"] == "Anna"
    assert seen == [("example+sd-jwt", PAYLOAD["iss"])]


def test_format_vct_and_repr_do_not_leak_values() -> None:
    token = issue_sd_jwt({"vct": "urn:x", "secret": "s3cr3t"}, key=ISSUER, header={"typ": "dc+sd-jwt"},
                         disclosable=[("secret",)])
    sd = SDJWT.parse(token)
    assert sd.format == "dc+sd-jwt" and sd.vct == "urn:x"
    assert "s3cr3t" not in repr(sd)
    plain = SDJWT.parse(issue())
    assert plain.format == "example+sd-jwt" and plain.vct is None
