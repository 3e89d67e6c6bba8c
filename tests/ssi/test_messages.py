"""OpenID4VCI / OpenID4VP message models, links, proof JWTs and request-object verification."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ssi.encoding import b64url_encode, json_dumps
from ssi.errors import MessageError, SSIError
from ssi.jose import Key, sign_jws
from ssi.jwe import encrypt_jwe
from ssi.oid4vci import (
    INVALID_NONCE,
    INVALID_PROOF,
    PRE_AUTHORIZED_CODE_GRANT,
    AuthorizationServerMetadata,
    CredentialIssuerMetadata,
    CredentialOffer,
    CredentialRequest,
    CredentialResponse,
    DeferredCredentialRequest,
    NonceResponse,
    NotificationRequest,
    OAuthError,
    TokenRequest,
    TokenResponse,
    build_credential_offer_uri,
    build_proof_jwt,
    parse_credential_offer_uri,
    proof_oauth_error,
    verify_proof_jwt,
)
from ssi.oid4vp import (
    AuthorizationRequest,
    RequestObject,
    VPTokenResponse,
    build_authorization_request_uri,
    parse_authorization_request_uri,
    parse_client_id,
    parse_direct_post_jwt,
    sign_request_object,
    unsigned_request_object,
    verify_request_object,
)
from ssi.x509 import create_ca, issue_certificate, x5c_from_chain, x509_hash

ISSUER = "https://issuer.example.org"
NOW = int(time.time())  # certificates from ssi.x509 are valid from the present
PID = "https://credentials.example.org/pid"


def code_of(action) -> str:
    with pytest.raises(MessageError) as err:
        action()
    return err.value.code


# -- OpenID4VCI: credential offer ---------------------------------------------------------------

OFFER = {
    "credential_issuer": ISSUER,
    "credential_configuration_ids": ["diploma_sd_jwt"],
    "grants": {
        "authorization_code": {"issuer_state": "eyJhbGciOiJSU0Et"},
        PRE_AUTHORIZED_CODE_GRANT: {"pre-authorized_code": "adhjhdjajkdkhjhdj",
                                    "tx_code": {"length": 4, "input_mode": "numeric", "description": "PIN sent by SMS"}},
    },
}


def test_offer_by_value_round_trip_and_legacy_members_ignored() -> None:
    legacy = {**OFFER, "grants": {PRE_AUTHORIZED_CODE_GRANT: {"pre-authorized_code": "abc", "user_pin_required": True}}}
    offer = CredentialOffer.parse(legacy)
    assert offer.grants.pre_authorized_code.pre_authorized_code == "abc"
    offer = CredentialOffer.parse(OFFER)
    pre = offer.grants.pre_authorized_code
    assert pre.tx_code.length == 4 and pre.tx_code.input_mode == "numeric"
    assert offer.grants.authorization_code.issuer_state == "eyJhbGciOiJSU0Et"
    uri = build_credential_offer_uri(offer)
    assert uri.startswith("openid-credential-offer://?credential_offer=%7B")
    parsed, ref = parse_credential_offer_uri(uri)
    assert ref is None and parsed == offer and parsed.to_json() == OFFER
    # An issuer that built the object itself links it as it is (members in its order): the same offer.
    assert parse_credential_offer_uri(build_credential_offer_uri(OFFER)) == (offer, None)


def test_offer_by_reference() -> None:
    uri = build_credential_offer_uri("https://issuer.example.org/offers/123")
    assert uri == "openid-credential-offer://?credential_offer_uri=https%3A%2F%2Fissuer.example.org%2Foffers%2F123"
    assert parse_credential_offer_uri(uri) == (None, "https://issuer.example.org/offers/123")
    https_link = "https://wallet.example.org/offer?credential_offer_uri=" + quote("https://issuer.example.org/o/1", safe="")
    assert parse_credential_offer_uri(https_link)[1] == "https://issuer.example.org/o/1"
    dev = "openid-credential-offer://?credential_offer_uri=" + quote("http://127.0.0.1:8001/o/1", safe="")
    assert parse_credential_offer_uri(dev, allow_http_loopback=True)[1] == "http://127.0.0.1:8001/o/1"
    assert code_of(lambda: parse_credential_offer_uri(dev)) == "message.bad_offer_uri"


@pytest.mark.parametrize(
    "uri",
    [
        None, "", "openid-credential-offer://", "mailto:x?credential_offer_uri=https%3A%2F%2Fa",
        "openid-credential-offer://?credential_offer=%7B%7D&credential_offer_uri=https%3A%2F%2Fa",
        "openid-credential-offer://?credential_offer_uri=https%3A%2F%2Fa&credential_offer_uri=https%3A%2F%2Fb",
        "openid-credential-offer://?credential_offer=not-json",
        "openid-credential-offer://?credential_offer=" + quote('{"a":1,"a":2}'),
        "openid-credential-offer://?credential_offer_uri=http%3A%2F%2Fissuer.example.org%2Fo",
        "openid-credential-offer://?credential_offer_uri=" + quote("https://issuer.example.org/o#frag"),
    ],
)
def test_bad_offer_uris(uri: Any) -> None:
    assert code_of(lambda: parse_credential_offer_uri(uri)) == "message.bad_offer_uri"


@pytest.mark.parametrize(
    "mutation",
    [
        {"credential_issuer": "http://issuer.example.org"},
        {"credential_issuer": "https://issuer.example.org?x=1"},
        {"credential_issuer": 5},
        {"credential_configuration_ids": []},
        {"credential_configuration_ids": ["a", "a"]},
        {"credential_configuration_ids": "a"},
        {"grants": {PRE_AUTHORIZED_CODE_GRANT: {}}},
        {"grants": {PRE_AUTHORIZED_CODE_GRANT: {"pre-authorized_code": ""}}},
        {"grants": {PRE_AUTHORIZED_CODE_GRANT: {"pre-authorized_code": "x", "tx_code": {"input_mode": "alpha"}}}},
        {"grants": {PRE_AUTHORIZED_CODE_GRANT: {"pre-authorized_code": "x", "tx_code": {"length": 0}}}},
        {"grants": {PRE_AUTHORIZED_CODE_GRANT: {"pre-authorized_code": "x", "tx_code": {"description": "x" * 301}}}},
        {"grants": {"authorization_code": {"authorization_server": "http://as.example"}}},
        {"grants": []},
    ],
)
def test_bad_offers(mutation: dict) -> None:
    data = {**OFFER, **mutation}
    with pytest.raises(MessageError) as err:
        CredentialOffer.parse(data)
    assert err.value.code == "message.bad_credential_offer"
    assert "adhjhdjajkdkhjhdj" not in err.value.detail  # never echo codes


# -- OpenID4VCI: metadata -----------------------------------------------------------------------

ISSUER_METADATA = {
    "credential_issuer": ISSUER,
    "authorization_servers": [ISSUER],
    "credential_endpoint": ISSUER + "/credential",
    "nonce_endpoint": ISSUER + "/nonce",
    "deferred_credential_endpoint": ISSUER + "/deferred",
    "notification_endpoint": ISSUER + "/notification",
    "batch_credential_issuance": {"batch_size": 5},
    "display": [{"name": "Universitat", "locale": "ca"}],
    "credential_configurations_supported": {
        "diploma_sd_jwt": {
            "format": "dc+sd-jwt",
            "vct": "https://issuer.example.org/vct/diploma",
            "scope": "diploma",
            "cryptographic_binding_methods_supported": ["jwk"],
            "credential_signing_alg_values_supported": ["ES256"],
            "proof_types_supported": {"jwt": {"proof_signing_alg_values_supported": ["ES256"]}},
            "credential_metadata": {"display": [{"name": "Títol", "locale": "ca"}],
                                    "claims": [{"path": ["title"], "mandatory": True,
                                                "display": [{"name": "Títol", "locale": "ca"}]}]},
        }
    },
}


def test_issuer_metadata() -> None:
    meta = CredentialIssuerMetadata.parse(ISSUER_METADATA)
    config = meta.configuration("diploma_sd_jwt")
    assert config.vct.endswith("/diploma") and config.proof_types_supported["jwt"].proof_signing_alg_values_supported == ["ES256"]
    assert config.credential_metadata.claims[0].path == ["title"]
    assert meta.batch_credential_issuance.batch_size == 5
    assert code_of(lambda: meta.configuration("nope")) == "message.unknown_credential_configuration"
    assert CredentialIssuerMetadata.parse(meta.to_json()) == meta


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("credential_endpoint"),
        lambda m: m.update(credential_endpoint="http://issuer.example.org/credential"),
        lambda m: m.update(credential_configurations_supported={}),
        lambda m: m.update(batch_credential_issuance={"batch_size": 1}),
        lambda m: m["credential_configurations_supported"]["diploma_sd_jwt"].pop("vct"),
        lambda m: m["credential_configurations_supported"]["diploma_sd_jwt"].pop("proof_types_supported"),
        lambda m: m["credential_configurations_supported"]["diploma_sd_jwt"]["proof_types_supported"]["jwt"].update(
            proof_signing_alg_values_supported=[]),
        lambda m: m["credential_configurations_supported"]["diploma_sd_jwt"]["credential_metadata"]["claims"][0].update(path=[]),
        lambda m: m["credential_configurations_supported"]["diploma_sd_jwt"]["credential_metadata"]["claims"][0].update(mandatory="yes"),
    ],
)
def test_bad_issuer_metadata(mutate) -> None:
    data = json.loads(json.dumps(ISSUER_METADATA))
    mutate(data)
    assert code_of(lambda: CredentialIssuerMetadata.parse(data)) == "message.bad_issuer_metadata"


def test_authorization_server_metadata() -> None:
    meta = AuthorizationServerMetadata.parse({
        "issuer": ISSUER, "token_endpoint": ISSUER + "/token", "authorization_endpoint": ISSUER + "/authorize",
        "pushed_authorization_request_endpoint": ISSUER + "/par", "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": ["ES256"], "pre-authorized_grant_anonymous_access_supported": True,
        "require_pushed_authorization_requests": True, "something_new": 1,
    })
    assert meta.pre_authorized_grant_anonymous_access_supported is True
    assert meta.to_json()["pre-authorized_grant_anonymous_access_supported"] is True
    assert code_of(lambda: AuthorizationServerMetadata.parse({"issuer": ISSUER})) == "message.bad_as_metadata"
    assert code_of(lambda: AuthorizationServerMetadata.parse(
        {"issuer": ISSUER, "token_endpoint": ISSUER + "/t", "pre-authorized_grant_anonymous_access_supported": "yes"})) == \
        "message.bad_as_metadata"
    dev = {"issuer": "http://127.0.0.1:8001", "token_endpoint": "http://127.0.0.1:8001/token"}
    assert AuthorizationServerMetadata.parse(dev, allow_http_loopback=True).issuer == "http://127.0.0.1:8001"
    assert code_of(lambda: AuthorizationServerMetadata.parse(dev)) == "message.bad_as_metadata"


# -- OpenID4VCI: token, nonce, credential, deferred, notification -------------------------------

def test_token_request_both_grants_and_legacy_fields() -> None:
    pre = TokenRequest.from_form({"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": "SplxlOBeZQQYbYS6WxSbIA",
                                  "tx_code": "493536", "user_pin": "493536", "client_id": "wallet", "resource": "x"})
    assert pre.pre_authorized_code == "SplxlOBeZQQYbYS6WxSbIA" and pre.tx_code == "493536"
    code = TokenRequest.from_form({
        "grant_type": "authorization_code", "code": "abc", "code_verifier": "v" * 43,
        "redirect_uri": "https://wallet.example.org/cb",
        "authorization_details": json_dumps([{"type": "openid_credential", "credential_configuration_id": "diploma_sd_jwt"}]),
    })
    assert code.authorization_details[0].credential_configuration_id == "diploma_sd_jwt"
    for bad in [
        {"grant_type": PRE_AUTHORIZED_CODE_GRANT},
        {"grant_type": "authorization_code"},
        {"grant_type": "password", "code": "x"},
        {"grant_type": "authorization_code", "code": "x", "code_verifier": "short"},
        {"grant_type": "authorization_code", "code": "x", "authorization_details": "[{"},
        {"grant_type": "authorization_code", "code": "x", "authorization_details": '[{"type": "other"}]'},
    ]:
        assert code_of(lambda bad=bad: TokenRequest.from_form(bad)) == "message.bad_token_request"


def test_token_and_nonce_responses() -> None:
    tr = TokenResponse.parse({"access_token": "at", "token_type": "DPoP", "expires_in": 300, "c_nonce": "legacy",
                              "authorization_details": [{"type": "openid_credential", "credential_configuration_id": "d",
                                                         "credential_identifiers": ["d-1", "d-2"]}]})
    assert tr.authorization_details[0].credential_identifiers == ["d-1", "d-2"]
    assert code_of(lambda: TokenResponse.parse({"token_type": "Bearer"})) == "message.bad_token_response"
    assert code_of(lambda: TokenResponse.parse({"access_token": "a", "token_type": "Bearer", "expires_in": "300"})) == \
        "message.bad_token_response"
    assert NonceResponse.parse({"c_nonce": "wKI4LT17ac15ES9bw8ac4"}).c_nonce == "wKI4LT17ac15ES9bw8ac4"
    assert code_of(lambda: NonceResponse.parse({"c_nonce": ""})) == "message.bad_nonce_response"
    assert code_of(lambda: NonceResponse.parse([])) == "message.bad_nonce_response"


def test_credential_request_rules() -> None:
    req = CredentialRequest.parse({"credential_configuration_id": "diploma_sd_jwt", "proofs": {"jwt": ["a.b.c", "d.e.f"]}})
    assert req.proofs.jwt == ["a.b.c", "d.e.f"] and req.credential_identifier is None
    assert CredentialRequest.parse({"credential_identifier": "d-1"}).proofs is None
    legacy = CredentialRequest.parse({"credential_configuration_id": "x", "proof": {"proof_type": "jwt", "jwt": "a.b.c"}})
    assert legacy.proofs.jwt == ["a.b.c"]
    for bad in [
        {},
        {"credential_configuration_id": "a", "credential_identifier": "b"},
        {"credential_configuration_id": "a", "proofs": {"jwt": ["x"]}, "proof": {"proof_type": "jwt", "jwt": "x"}},
        {"credential_configuration_id": "a", "proof": {"proof_type": "cwt", "cwt": "x"}},
        {"credential_configuration_id": "a", "proofs": {"jwt": []}},
        {"credential_configuration_id": "a", "proofs": {"jwt": ["x"], "attestation": ["y"]}},
        {"credential_configuration_id": "a", "proofs": {}},
        {"credential_configuration_id": "a", "proofs": {"jwt": "x"}},
        {"format": "dc+sd-jwt", "vct": "x"},
    ]:
        assert code_of(lambda bad=bad: CredentialRequest.parse(bad)) == "message.bad_credential_request", bad


def test_credential_responses() -> None:
    ok = CredentialResponse.parse({"credentials": [{"credential": "eyJ...~"}], "notification_id": "n-1"})
    assert ok.credentials[0].credential == "eyJ...~"
    deferred = CredentialResponse.parse({"transaction_id": "8xLOxBtZp8", "interval": 3600})
    assert deferred.interval == 3600
    for bad in [{}, {"credentials": []}, {"transaction_id": "t"}, {"credentials": [{"credential": "x"}], "transaction_id": "t", "interval": 5},
                {"transaction_id": "t", "interval": 5, "notification_id": "n"}, {"credentials": [{}]}]:
        assert code_of(lambda bad=bad: CredentialResponse.parse(bad)) == "message.bad_credential_response", bad
    assert DeferredCredentialRequest.parse({"transaction_id": "t"}).transaction_id == "t"
    assert code_of(lambda: DeferredCredentialRequest.parse({})) == "message.bad_deferred_credential_request"


def test_notification_and_oauth_error() -> None:
    n = NotificationRequest.parse({"notification_id": "n-1", "event": "credential_accepted"})
    assert n.event == "credential_accepted"
    for bad in [{"notification_id": "n", "event": "credential_lost"}, {"event": "credential_deleted"},
                {"notification_id": "n", "event": "credential_failure", "event_description": "naïve"},
                {"notification_id": "n", "event": "credential_failure", "event_description": 'say "hi"'}]:
        assert code_of(lambda bad=bad: NotificationRequest.parse(bad)) == "message.bad_notification_request"
    e = OAuthError.parse({"error": "invalid_proof", "error_description": "bad"})
    assert e.error == INVALID_PROOF
    assert code_of(lambda: OAuthError.parse({"error_description": "x"})) == "message.bad_oauth_error"


# -- OpenID4VCI: proof JWTs ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def holder() -> Key:
    return Key.generate("ES256")


def test_proof_round_trip(holder: Key) -> None:
    used: set[str] = set()

    def check_nonce(nonce: str) -> bool:
        if nonce != "c-nonce-1" or nonce in used:
            return False
        used.add(nonce)
        return True

    token = build_proof_jwt(holder, audience=ISSUER, nonce="c-nonce-1", iat=NOW, client_id="wallet-1")
    key = verify_proof_jwt(token, audience=ISSUER, now=NOW + 5, check_nonce=check_nonce, client_id="wallet-1")
    assert key.thumbprint() == holder.thumbprint() and not key.is_private
    # the nonce is single-use
    with pytest.raises(MessageError) as err:
        verify_proof_jwt(token, audience=ISSUER, now=NOW + 5, check_nonce=check_nonce)
    assert err.value.code == "message.proof_bad_nonce" and proof_oauth_error(err.value.code) == INVALID_NONCE
    ed = Key.generate("EdDSA")
    assert verify_proof_jwt(build_proof_jwt(ed, audience=ISSUER, nonce=None, iat=NOW), audience=ISSUER, now=NOW).alg == "EdDSA"


def _proof(key: Key, header: dict, payload: dict) -> str:
    return sign_jws(header, payload, key)


def test_proof_refusals(holder: Key) -> None:
    jwk = holder.public_jwk()
    good_header = {"typ": "openid4vci-proof+jwt", "jwk": jwk}
    good = {"aud": ISSUER, "iat": NOW, "nonce": "n"}
    other = Key.generate("ES256")
    cases = [
        ("not a jwt", "message.proof_malformed"),
        (_proof(holder, {**good_header, "typ": "JWT"}, good), "message.proof_bad_typ"),
        (_proof(holder, {"typ": "openid4vci-proof+jwt"}, good), "message.proof_key_missing"),
        (_proof(holder, {**good_header, "kid": "k1"}, good), "message.proof_key_ambiguous"),
        (_proof(holder, {"typ": "openid4vci-proof+jwt", "kid": "did:example:1#k"}, good), "message.proof_key_missing"),
        (_proof(holder, {**good_header, "jwk": holder.private_jwk()}, good), "message.proof_private_key"),
        (_proof(holder, {**good_header, "jwk": "x"}, good), "message.proof_bad_key"),
        (_proof(holder, {**good_header, "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}, good), "message.proof_bad_key"),
        (_proof(other, {**good_header}, good), "message.proof_bad_signature"),
        (_proof(holder, good_header, {**good, "aud": "https://evil.example"}), "message.proof_bad_aud"),
        (_proof(holder, good_header, {**good, "iss": "someone-else"}), "message.proof_bad_iss"),
        (_proof(holder, good_header, {"aud": ISSUER, "nonce": "n"}), "message.proof_missing_iat"),
        (_proof(holder, good_header, {**good, "iat": NOW - 1000}), "message.proof_stale"),
        (_proof(holder, good_header, {**good, "iat": NOW + 1000}), "message.proof_iat_in_future"),
        (_proof(holder, good_header, {**good, "iat": -10**400}), "message.proof_stale"),
        (_proof(holder, good_header, {**good, "exp": NOW - 3600}), "message.proof_expired"),
        (_proof(holder, good_header, {**good, "nbf": NOW + 3600}), "message.proof_not_yet_valid"),
        (_proof(holder, good_header, {**good, "exp": "later"}), "message.proof_bad_exp"),
        (_proof(holder, good_header, {**good, "nbf": 10**30}), "message.proof_bad_nbf"),
        (_proof(holder, good_header, {"aud": ISSUER, "iat": NOW}), "message.proof_missing_nonce"),
        (_proof(holder, good_header, {**good, "nonce": "wrong"}), "message.proof_bad_nonce"),
    ]
    for token, code in cases:
        with pytest.raises(MessageError) as err:
            verify_proof_jwt(token, audience=ISSUER, now=NOW, check_nonce=lambda n: n == "n", client_id="wallet-1")
        assert err.value.code == code, (code, err.value.code)
    assert proof_oauth_error("message.proof_stale") == INVALID_PROOF
    assert proof_oauth_error("message.proof_expired") == INVALID_PROOF
    assert proof_oauth_error("message.proof_missing_nonce") == INVALID_PROOF  # OpenID4VCI 1.0 §8.3.1.2
    within = _proof(holder, good_header, {**good, "exp": NOW - 10, "nbf": NOW + 10})  # inside the 30 s leeway
    assert verify_proof_jwt(within, audience=ISSUER, now=NOW, check_nonce=lambda n: n == "n").thumbprint() == \
        holder.thumbprint()
    ed = Key.generate("EdDSA")
    with pytest.raises(MessageError) as err:
        verify_proof_jwt(build_proof_jwt(ed, audience=ISSUER, nonce=None, iat=NOW), audience=ISSUER, now=NOW,
                         algorithms=("ES256",))
    assert err.value.code == "message.proof_alg_not_allowed"


# -- OpenID4VP: client ids and links --------------------------------------------------------------

def test_parse_client_id() -> None:
    assert parse_client_id("x509_san_dns:verifier.example.org") == ("x509_san_dns", "verifier.example.org")
    assert parse_client_id("x509_hash:Uvo3HtuIxuhC92rShpgqcT3YXwrqRxWEviRiA0OZszk")[0] == "x509_hash"
    assert parse_client_id("redirect_uri:https://client.example.org/cb") == ("redirect_uri", "https://client.example.org/cb")
    assert parse_client_id("decentralized_identifier:did:example:123") == ("decentralized_identifier", "did:example:123")
    assert parse_client_id("verifier_attestation:verifier.example")[0] == "verifier_attestation"
    assert parse_client_id("openid_federation:https://fed.example")[0] == "openid_federation"
    assert parse_client_id("example-client") == ("pre-registered", "example-client")
    assert parse_client_id("did:example:123") == ("pre-registered", "did:example:123")
    assert code_of(lambda: parse_client_id("origin:https://v.example")) == "message.unsupported_client_id_prefix"
    assert code_of(lambda: parse_client_id("x509_san_dns:")) == "message.bad_client_id"
    assert code_of(lambda: parse_client_id("")) == "message.bad_client_id"
    assert code_of(lambda: parse_client_id(None)) == "message.bad_client_id"


def test_authorization_request_links() -> None:
    for scheme in ("openid4vp://", "haip-vp://", "https://wallet.example.org/authorize"):
        uri = build_authorization_request_uri(scheme, "x509_san_dns:verifier.example.org",
                                              "https://verifier.example.org/request/abc", "post")
        req = parse_authorization_request_uri(uri)
        assert isinstance(req, AuthorizationRequest)
        assert req.client_id == "x509_san_dns:verifier.example.org" and req.request_uri_method == "post"
        assert req.request_uri == "https://verifier.example.org/request/abc"
    plain = build_authorization_request_uri("openid4vp://", "c", "https://v.example/r")
    assert "request_uri_method" not in plain and parse_authorization_request_uri(plain).request_uri_method is None
    for bad, code in [
        ("openid4vp://?request_uri=https%3A%2F%2Fv.example%2Fr", "message.bad_authorization_request"),
        ("openid4vp://?client_id=c&request_uri=http%3A%2F%2Fv.example%2Fr", "message.bad_authorization_request"),
        ("openid4vp://?client_id=c&request_uri_method=post", "message.bad_authorization_request"),
        ("openid4vp://?client_id=c&client_id=d&request_uri=https%3A%2F%2Fv.example%2Fr", "message.bad_authorization_request"),
        ("openid4vp://?client_id=c&request_uri=https%3A%2F%2Fv.example%2Fr&request_uri_method=PUT", "message.invalid_request_uri_method"),
        ("ftp://x?client_id=c", "message.bad_authorization_request"),
        ("openid4vp://?client_id=c&request=a.b.c&request_uri=https%3A%2F%2Fv.example%2Fr", "message.bad_authorization_request"),
        (None, "message.bad_authorization_request"),
    ]:
        assert code_of(lambda bad=bad: parse_authorization_request_uri(bad)) == code, bad
    with pytest.raises(MessageError):
        build_authorization_request_uri("openid4vp://", "c", "https://v.example/r", "put")  # type: ignore[arg-type]


# -- OpenID4VP: request objects ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    # NOW is fixed at import; under load the fixture may run minutes later, so every certificate
    # starts relative to NOW rather than to the fixture's own clock.
    not_before = datetime.fromtimestamp(NOW, UTC) - timedelta(days=1)
    ca_key, ca_cert = create_ca("Test RP CA", not_before=not_before)
    rp_key = Key.generate("ES256")
    leaf = issue_certificate(ca_key, ca_cert, rp_key, "Ajuntament Verifier", san_dns=["verifier.example.org"],
                             not_before=not_before, days=30)
    other_ca_key, other_ca_cert = create_ca("Unknown CA", not_before=not_before)
    stranger = issue_certificate(other_ca_key, other_ca_cert, rp_key, "Stranger", san_dns=["verifier.example.org"],
                                 not_before=not_before, days=30)
    enc_key = Key.generate("ES256", kid="enc-1")
    return {"anchors": [ca_cert], "key": rp_key, "x5c": x5c_from_chain([leaf]), "leaf": leaf,
            "stranger_x5c": x5c_from_chain([stranger]), "enc_key": enc_key}


def claims_for(client_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post",
        "response_uri": "https://verifier.example.org/response/abc", "nonce": "n-0S6_WzA2Mj", "state": "st-1",
        "aud": "https://self-issued.me/v2", "iat": NOW,
        "dcql_query": {"credentials": [{"id": "pid", "format": "dc+sd-jwt", "meta": {"vct_values": [PID]},
                                        "claims": [{"path": ["family_name"]}]}]},
        **extra,
    }


def test_x509_san_dns_trusted(pki: dict) -> None:
    cid = "x509_san_dns:verifier.example.org"
    token = sign_request_object(claims_for(cid), pki["key"], pki["x5c"])
    req = verify_request_object(token, trust_anchors=pki["anchors"], client_id=cid, now=NOW)
    assert isinstance(req, RequestObject) and req.trust == "trusted"
    assert req.query.credentials[0].id == "pid" and req.nonce == "n-0S6_WzA2Mj"
    assert req.verifier_certificate is not None


def test_x509_hash(pki: dict) -> None:
    cid = "x509_hash:" + x509_hash(pki["leaf"])
    claims = claims_for(cid)
    req = verify_request_object(sign_request_object(claims, pki["key"], pki["x5c"]), trust_anchors=pki["anchors"],
                                client_id=cid, now=NOW)
    assert req.trust == "trusted"
    wrong = "x509_hash:" + b64url_encode(b"\x00" * 32)
    token = sign_request_object(claims_for(wrong), pki["key"], pki["x5c"])
    assert code_of(lambda: verify_request_object(token, trust_anchors=pki["anchors"], client_id=wrong, now=NOW)) == \
        "message.client_id_hash_mismatch"


def test_untrusted_chain_is_an_explicit_outcome(pki: dict) -> None:
    cid = "x509_san_dns:verifier.example.org"
    token = sign_request_object(claims_for(cid), pki["key"], pki["stranger_x5c"])
    assert code_of(lambda: verify_request_object(token, trust_anchors=pki["anchors"], client_id=cid, now=NOW)) == \
        "message.untrusted_verifier"
    req = verify_request_object(token, trust_anchors=pki["anchors"], client_id=cid, now=NOW, allow_untrusted=True)
    assert req.trust == "untrusted"
    # a bad signature is never merely "untrusted"
    forged = sign_request_object(claims_for(cid), Key.generate("ES256"), pki["stranger_x5c"])
    assert code_of(lambda: verify_request_object(forged, trust_anchors=pki["anchors"], client_id=cid, now=NOW,
                                                 allow_untrusted=True)) == "message.bad_request_signature"
    # an expired certificate is a hard failure even when untrusted chains are allowed
    later = NOW + 90 * 86400
    assert code_of(lambda: verify_request_object(token, trust_anchors=pki["anchors"], client_id=cid, now=later,
                                                 allow_untrusted=True)) == "message.bad_verifier_certificate"


def _with_version_byte(cert: Any, version: int) -> str:
    """The x5c entry of ``cert`` with its DER version field (``[0] INTEGER 2`` for v3) changed."""
    der = cert.public_bytes(serialization.Encoding.DER)
    at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))
    assert at > 0
    return base64.b64encode(der[:at + 4] + bytes([version]) + der[at + 5:]).decode("ascii")


def test_a_leaf_with_a_bad_version_byte_is_a_typed_refusal(pki: dict) -> None:
    # cryptography raises its own InvalidVersion for it; every x5c defect must be a MessageError
    cid = "x509_san_dns:verifier.example.org"
    for version in (5, 0x7F):
        token = sign_jws({"typ": "oauth-authz-req+jwt", "x5c": [_with_version_byte(pki["leaf"], version)]},
                         claims_for(cid), pki["key"])
        assert code_of(lambda token=token: verify_request_object(token, trust_anchors=pki["anchors"], client_id=cid,
                                                                 now=NOW, allow_untrusted=True)) == \
            "message.bad_verifier_certificate"


def _self_signed(key: Key, *, ca: bool, usage: cx509.KeyUsage) -> Any:
    name = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "rogue")])
    start = datetime.fromtimestamp(NOW, UTC) - timedelta(hours=1)
    return (cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key)
            .serial_number(7).not_valid_before(start).not_valid_after(start + timedelta(days=2))
            .add_extension(cx509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(cx509.SubjectAlternativeName([cx509.DNSName("verifier.example.org")]), critical=False)
            .sign(key.private_key, hashes.SHA256()))


def _usage(*, digital_signature: bool, key_cert_sign: bool) -> cx509.KeyUsage:
    return cx509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                          crl_sign=key_cert_sign, encipher_only=False, decipher_only=False)


def test_allow_untrusted_keeps_the_leaf_rules(pki: dict) -> None:
    # The module docstring: with allow_untrusted, wrong key usage is still a hard failure. The leaf's
    # CA flag and keyUsage are checked before the chain is found to lead nowhere.
    cid = "x509_san_dns:verifier.example.org"
    key = Key.generate("ES256")
    for cert in (_self_signed(key, ca=True, usage=_usage(digital_signature=False, key_cert_sign=True)),
                 _self_signed(key, ca=False, usage=_usage(digital_signature=False, key_cert_sign=False))):
        token = sign_request_object(claims_for(cid), key, x5c_from_chain([cert]))
        assert code_of(lambda token=token: verify_request_object(token, trust_anchors=pki["anchors"], client_id=cid,
                                                                 now=NOW, allow_untrusted=True)) == \
            "message.bad_verifier_certificate"
    fine = _self_signed(key, ca=False, usage=_usage(digital_signature=True, key_cert_sign=False))
    token = sign_request_object(claims_for(cid), key, x5c_from_chain([fine]))
    assert verify_request_object(token, trust_anchors=pki["anchors"], client_id=cid, now=NOW,
                                 allow_untrusted=True).trust == "untrusted"


def test_redirect_uri_unsigned_only_in_development(pki: dict) -> None:
    cid = "redirect_uri:https://verifier.example.org/response/abc"
    token = unsigned_request_object(claims_for(cid))
    assert code_of(lambda: verify_request_object(token, trust_anchors=[], client_id=cid, now=NOW)) == \
        "message.unsigned_request_object"
    req = verify_request_object(token, trust_anchors=[], client_id=cid, now=NOW, allow_unsigned=True)
    assert req.trust == "unsigned" and req.verifier_certificate is None
    moved = unsigned_request_object(claims_for(cid, response_uri="https://evil.example/steal"))
    assert code_of(lambda: verify_request_object(moved, trust_anchors=[], client_id=cid, now=NOW, allow_unsigned=True)) == \
        "message.response_uri_mismatch"
    signed = sign_request_object(claims_for(cid), pki["key"], pki["x5c"])
    assert code_of(lambda: verify_request_object(signed, trust_anchors=pki["anchors"], client_id=cid, now=NOW)) == \
        "message.signed_redirect_uri"
    # alg none is never accepted for a certificate-based client id
    x509_cid = "x509_san_dns:verifier.example.org"
    assert code_of(lambda: verify_request_object(unsigned_request_object(claims_for(x509_cid)), trust_anchors=pki["anchors"],
                                                 client_id=x509_cid, now=NOW, allow_unsigned=True)) == \
        "message.unsigned_request_object"


def test_request_object_refusals(pki: dict) -> None:
    cid = "x509_san_dns:verifier.example.org"

    def run(claims: dict, header_typ: str = "oauth-authz-req+jwt", x5c: Any = "default", client_id: str = cid, **kw) -> str:
        header: dict[str, Any] = {"typ": header_typ}
        if x5c is not None:
            header["x5c"] = pki["x5c"] if x5c == "default" else x5c
        token = sign_jws(header, claims, pki["key"])
        return code_of(lambda: verify_request_object(token, trust_anchors=pki["anchors"], client_id=client_id, now=NOW, **kw))

    assert run(claims_for(cid), header_typ="JWT") == "message.bad_request_typ"
    assert run(claims_for("x509_san_dns:other.example.org")) == "message.client_id_mismatch"
    other = "x509_san_dns:other.example.org"
    assert run(claims_for(other), client_id=other) == "message.client_id_san_mismatch"
    assert run(claims_for(cid), x5c=None) == "message.missing_x5c"
    assert run(claims_for(cid), x5c=["!!!"]) == "message.bad_verifier_certificate"
    assert run(claims_for(cid, response_uri="https://elsewhere.example.org/r")) == "message.response_uri_mismatch"
    assert run(claims_for(cid, exp=NOW - 3600)) == "message.request_expired"
    assert run(claims_for(cid), wallet_nonce="wn-1") == "message.wallet_nonce_mismatch"
    assert run(claims_for(cid, response_mode="direct_post.jwt")) == "message.missing_encryption_key"
    for bad in [
        {"response_type": "code"}, {"response_mode": "fragment"}, {"response_uri": "http://verifier.example.org/r"},
        {"nonce": "has space"}, {"state": "a/b"}, {"nonce": "n-1\n"}, {"state": "st-1\n"},
        {"dcql_query": {"credentials": [{"id": "pid\n", "format": "dc+sd-jwt", "meta": {"vct_values": [PID]}}]}},
        {"dcql_query": {"credentials": []}}, {"redirect_uri": "https://x"},
        {"scope": "pid"}, {"transaction_data": ["e30"]}, {"client_metadata": {"jwks": {"keys": [pki["enc_key"].private_jwk()]}}},
    ]:
        assert run(claims_for(cid, **bad)) == "message.bad_request_object", bad
    assert code_of(lambda: verify_request_object("garbage", trust_anchors=[], client_id=cid)) == "message.bad_request_object"
    did = "decentralized_identifier:did:example:123"
    token = sign_jws({"typ": "oauth-authz-req+jwt", "kid": "did:example:123#k"}, claims_for(did), pki["key"])
    assert code_of(lambda: verify_request_object(token, trust_anchors=[], client_id=did, now=NOW)) == \
        "message.unsupported_client_id_prefix"
    req = verify_request_object(token, trust_anchors=[], client_id=did, now=NOW,
                                resolve_key=lambda prefix, value, header: pki["key"].public())
    assert req.trust == "trusted"


def test_direct_post_jwt_request_and_response(pki: dict) -> None:
    cid = "x509_san_dns:verifier.example.org"
    enc_jwk = {**pki["enc_key"].public_jwk(), "alg": "ECDH-ES", "use": "enc"}
    claims = claims_for(cid, response_mode="direct_post.jwt",
                        client_metadata={"jwks": {"keys": [enc_jwk]}, "vp_formats_supported": {"dc+sd-jwt": {}},
                                         "encrypted_response_enc_values_supported": ["A128GCM", "A256GCM"]})
    req = verify_request_object(sign_request_object(claims, pki["key"], pki["x5c"]), trust_anchors=pki["anchors"],
                                client_id=cid, now=NOW)
    recipient = req.client_metadata.encryption_key()
    assert recipient["kid"] == "enc-1"
    body = {"vp_token": {"pid": ["eyJ~d1~kb"]}, "state": req.state}
    response = parse_direct_post_jwt({"response": encrypt_jwe(body, recipient)}, pki["enc_key"])
    assert response.vp_token == {"pid": ["eyJ~d1~kb"]} and response.state == "st-1"
    assert code_of(lambda: parse_direct_post_jwt({"vp_token": '{"pid":["x"]}'}, pki["enc_key"])) == "message.unencrypted_response"
    err = parse_direct_post_jwt({"error": "access_denied", "state": "st-1"}, pki["enc_key"])
    assert err.error == "access_denied" and err.vp_token is None


def test_vp_token_response_form() -> None:
    ok = VPTokenResponse.from_form({"vp_token": json_dumps({"pid": ["a~b~c"], "dip": ["x~", "y~"]}), "state": "s", "extra": "1"})
    assert ok.vp_token["dip"] == ["x~", "y~"]
    assert VPTokenResponse.from_form({"error": "access_denied", "error_description": "user said no"}).error == "access_denied"
    for bad in [{}, {"vp_token": "{"}, {"vp_token": "[]"}, {"vp_token": "{}"}, {"vp_token": '{"pid": []}'},
                {"vp_token": '{"pid": "x"}'}, {"vp_token": '{"pid": ["x"]}', "error": "access_denied"}, {"vp_token": '{"pid": [1]}'}]:
        assert code_of(lambda bad=bad: VPTokenResponse.from_form(bad)) == "message.bad_vp_token_response", bad


# -- property-based -------------------------------------------------------------------------------

uri_text = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=80)


@settings(max_examples=200, deadline=None)
@given(tail=uri_text, scheme=st.sampled_from(["openid4vp://?", "haip-vp://?", "openid-credential-offer://?", "https://w.example/?", "x:"]))
def test_random_uris_only_typed_errors(tail: str, scheme: str) -> None:
    for parser in (parse_authorization_request_uri, parse_credential_offer_uri):
        try:
            parser(scheme + tail)
        except SSIError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.sampled_from([ISSUER, "jwt", "vp_token"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
        ["credential_issuer", "credential_configuration_ids", "grants", "proofs", "jwt", "proof", "credential_identifier",
         "credential_configuration_id", "vp_token", "error", "client_id", "dcql_query", "credentials", "transaction_id"]), c, max_size=4),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None)
@given(data=json_values)
def test_random_messages_only_typed_errors(data: Any) -> None:
    for model in (CredentialOffer, CredentialRequest, CredentialResponse, CredentialIssuerMetadata, TokenRequest,
                  VPTokenResponse, RequestObject, NotificationRequest):
        try:
            model.parse(data)
        except SSIError:
            pass


@settings(max_examples=100, deadline=None)
@given(header=json_values, payload=json_values)
def test_random_request_objects_only_typed_errors(header: Any, payload: Any) -> None:
    token = b64url_encode(json_dumps(header).encode()) + "." + b64url_encode(json_dumps(payload).encode()) + "."
    with pytest.raises(SSIError):
        verify_request_object(token, trust_anchors=[], client_id="x509_san_dns:v.example", allow_unsigned=True)
    with pytest.raises(SSIError):
        verify_proof_jwt(token + "AAAA", audience=ISSUER, now=NOW)
