"""Interoperability with the OpenWallet Foundation reference implementation (PyPI ``sd-jwt``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from jwcrypto.jwk import JWK
from sd_jwt.common import SDObj
from sd_jwt.holder import SDJWTHolder
from sd_jwt.issuer import SDJWTIssuer
from sd_jwt.verifier import SDJWTVerifier

from ssi.jose import Key
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import PinnedKeyResolver, issue_sd_jwt_vc, verify_sd_jwt_vc

ISS = "https://issuer.example.cat"
VCT = "https://issuer.example.cat/vct/diploma"
AUD = "x509_san_dns:verifier.example.cat"
NONCE = "XZOUco1u_gEPknxS78sWWg"
ISSUER = Key.generate("ES256")
HOLDER = Key.generate("ES256")
CLAIMS = {
    "given_name": "Anna",
    "family_name": "Puig i Soler",
    "title": "Grau en Enginyeria Informàtica",
    "address": {"street_address": "Carrer Major 1", "locality": "Girona", "country": "ES"},
    "nationalities": ["ES", "FR"],
}
DISCLOSABLE = [("given_name",), ("family_name",), ("title",), ("address",), ("address", "locality"),
               ("nationalities", None)]


def jwk(key: Key, private: bool = False) -> JWK:
    return JWK.from_json(json.dumps(key.private_jwk() if private else key.public_jwk()))


def reference_verify(presentation: str) -> dict[str, Any]:
    verifier = SDJWTVerifier(presentation, lambda iss, header: jwk(ISSUER), expected_aud=AUD, expected_nonce=NONCE)
    return verifier.get_verified_payload()


@pytest.fixture(scope="module")
def ours() -> str:
    return issue_sd_jwt_vc(CLAIMS, vct=VCT, issuer=ISS, key=ISSUER, holder_jwk=HOLDER.public_jwk(),
                           disclosable=DISCLOSABLE, exp=int(time.time()) + 3600)


def test_our_full_presentation_verifies_with_the_reference(ours: str) -> None:
    presentation = SDJWT.parse(ours).present([(name,) for name in CLAIMS], holder_key=HOLDER, aud=AUD, nonce=NONCE)
    claims = reference_verify(presentation)
    for name, value in CLAIMS.items():
        assert claims[name] == value
    assert claims["iss"] == ISS and claims["vct"] == VCT


def test_our_selective_presentation_verifies_with_the_reference(ours: str) -> None:
    presentation = SDJWT.parse(ours).present([("title",), ("address", "locality"), ("nationalities", 1)],
                                             holder_key=HOLDER, aud=AUD, nonce=NONCE)
    claims = reference_verify(presentation)
    assert claims["title"] == CLAIMS["title"]
    assert claims["address"] == CLAIMS["address"]  # street_address and country are plain inside address
    assert claims["nationalities"] == ["FR"]
    assert "given_name" not in claims and "family_name" not in claims


def test_the_reference_detects_our_presentation_tampered(ours: str) -> None:
    presentation = SDJWT.parse(ours).present([("title",)], holder_key=HOLDER, aud=AUD, nonce=NONCE)
    with pytest.raises(Exception):  # noqa: B017 - the reference raises plain ValueError/jwcrypto errors
        SDJWTVerifier(presentation, lambda iss, header: jwk(ISSUER), expected_aud=AUD, expected_nonce="other")


@pytest.fixture(scope="module")
def theirs() -> str:
    user_claims = {
        "iss": ISS, "vct": VCT, "iat": int(time.time()) - 5,
        SDObj("given_name"): "Anna",
        SDObj("family_name"): "Puig i Soler",
        SDObj("address"): {SDObj("locality"): "Girona", "country": "ES"},
        "nationalities": [SDObj("ES"), SDObj("FR")],
    }
    issuer = SDJWTIssuer(user_claims, jwk(ISSUER, private=True), holder_key=jwk(HOLDER), add_decoy_claims=True,
                         extra_header_parameters={"typ": "dc+sd-jwt"})
    return issuer.sd_jwt_issuance


def reference_present(issuance: str, selection: dict[str, Any]) -> str:
    holder = SDJWTHolder(issuance)
    holder.create_presentation(selection, nonce=NONCE, aud=AUD, holder_key=jwk(HOLDER, private=True),
                               sign_alg="ES256")
    return holder.sd_jwt_presentation


def our_verify(presentation: str) -> Any:
    return verify_sd_jwt_vc(presentation, key_resolver=PinnedKeyResolver({ISS: [ISSUER]}), expected_vcts=[VCT],
                            require_kb=True, expected_aud=AUD, expected_nonce=NONCE)


def test_reference_issuance_parses_with_all_claims(theirs: str) -> None:
    sd = SDJWT.parse(theirs)
    assert sd.format == "dc+sd-jwt" and sd.vct == VCT
    assert sd.claims["address"] == {"locality": "Girona", "country": "ES"}
    assert sd.claims["nationalities"] == ["ES", "FR"]


def test_reference_full_presentation_verifies_with_us(theirs: str) -> None:
    presentation = reference_present(theirs, {"given_name": True, "family_name": True,
                                              "address": {"locality": True}, "nationalities": [True, True]})
    result = our_verify(presentation)
    assert result.claims["given_name"] == "Anna" and result.claims["family_name"] == "Puig i Soler"
    assert result.claims["address"] == {"locality": "Girona", "country": "ES"}
    assert result.claims["nationalities"] == ["ES", "FR"]
    assert result.holder_key.thumbprint() == HOLDER.thumbprint()


def test_reference_selective_presentation_verifies_with_us(theirs: str) -> None:
    presentation = reference_present(theirs, {"family_name": True, "nationalities": [False, True]})
    result = our_verify(presentation)
    assert result.claims["family_name"] == "Puig i Soler"
    assert result.claims["nationalities"] == ["FR"]
    assert "given_name" not in result.claims and "address" not in result.claims
    assert sorted(result.disclosed_paths) == [("family_name",), ("nationalities", 0)]


def test_we_select_from_a_reference_issuance_and_the_reference_verifies(theirs: str) -> None:
    presentation = SDJWT.parse(theirs).present([("address", "locality")], holder_key=HOLDER, aud=AUD, nonce=NONCE)
    claims = reference_verify(presentation)
    assert claims["address"] == {"locality": "Girona", "country": "ES"} and "given_name" not in claims
    assert our_verify(presentation).claims["address"]["locality"] == "Girona"
