"""Malformed and tampered SD-JWTs and SD-JWT VCs: each input is refused with its own stable code."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from ssi.encoding import b64url_encode, json_dumps
from ssi.errors import SSIError
from ssi.jose import Key, sign_jws
from ssi.sd_jwt import SDJWT, import_holder_jwk, issue_sd_jwt, verify_sd_jwt
from ssi.sd_jwt_vc import (
    ChainedKeyResolver,
    IssuerMetadataKeyResolver,
    PinnedKeyResolver,
    X5CKeyResolver,
    issue_sd_jwt_vc,
    verify_sd_jwt_vc,
)
from ssi.x509 import create_ca, issue_certificate, x5c_from_chain

NOW = 1_800_000_000
ISS = "https://issuer.example.cat"
VCT = "https://issuer.example.cat/vct/diploma"
AUD = "x509_san_dns:verifier.example.cat"
NONCE = "nonce-1234"

ISSUER = Key.generate("ES256", kid="issuer-1")
OTHER = Key.generate("ES256")
HOLDER = Key.generate("ES256")
CA_KEY, CA_CERT = create_ca("SD-JWT test CA")
LEAF = issue_certificate(CA_KEY, CA_CERT, ISSUER, "issuer.example.cat", san_uris=[ISS])
OTHER_CA_KEY, OTHER_CA_CERT = create_ca("Unrelated CA")
WRONG_SAN_LEAF = issue_certificate(CA_KEY, CA_CERT, ISSUER, "elsewhere", san_uris=["https://elsewhere.example"])


def enc(array: Any) -> str:
    return b64url_encode(json_dumps(array).encode("utf-8"))


def enc_text(text: str) -> str:
    return b64url_encode(text.encode("utf-8"))


def dig(encoded: str) -> str:
    return b64url_encode(hashlib.sha256(encoded.encode("ascii")).digest())


def jwt(payload: Any, header: dict[str, Any] | None = None, key: Key = ISSUER) -> str:
    return sign_jws(header if header is not None else {"typ": "dc+sd-jwt"}, payload, key)


def base_payload(**extra: Any) -> dict[str, Any]:
    payload = {"iss": ISS, "vct": VCT, "iat": NOW - 10, "cnf": {"jwk": HOLDER.public_jwk()}}
    payload.update(extra)
    return payload


D_NAME = enc(["salt-name", "given_name", "Anna"])
D_AGE = enc(["salt-age", "age", 40])
D_ELEMENT = enc(["salt-elem", "ES"])


def sd_token(payload: dict[str, Any], disclosures: list[str], header: dict[str, Any] | None = None,
             key: Key = ISSUER) -> str:
    return jwt(payload, header, key) + "~" + "".join(d + "~" for d in disclosures)


def valid_token() -> str:
    return sd_token(base_payload(_sd=[dig(D_NAME), dig(D_AGE)], _sd_alg="sha-256"), [D_NAME, D_AGE])


def kb(prefix: str, *, key: Key = HOLDER, header: dict[str, Any] | None = None, drop: str | None = None,
       **overrides: Any) -> str:
    payload: dict[str, Any] = {"iat": NOW, "aud": AUD, "nonce": NONCE,
                               "sd_hash": b64url_encode(hashlib.sha256(prefix.encode()).digest())}
    payload.update(overrides)
    if drop:
        payload.pop(drop)
    return prefix + sign_jws(header if header is not None else {"typ": "kb+jwt"}, payload, key)


def hs256_with_public_key() -> str:
    import hmac

    header = b64url_encode(json_dumps({"alg": "HS256", "typ": "dc+sd-jwt"}).encode())
    body = b64url_encode(json_dumps(base_payload()).encode())
    secret = ISSUER.public_pem()
    sig = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url_encode(sig)}~"


def alg_none() -> str:
    header = b64url_encode(json_dumps({"alg": "none", "typ": "dc+sd-jwt"}).encode())
    body = b64url_encode(json_dumps(base_payload()).encode())
    return f"{header}.{body}.~"


def tampered_payload() -> str:
    token = valid_token()
    head, body, sig = token.split("~")[0].split(".")
    forged_payload = base_payload(iss="https://evil.example", _sd=[dig(D_NAME), dig(D_AGE)], _sd_alg="sha-256")
    forged = b64url_encode(json_dumps(forged_payload).encode())
    return f"{head}.{forged}.{sig}~" + token.split("~", 1)[1]


def tampered_disclosure() -> str:
    token = valid_token()
    forged = enc(["salt-age", "age", 17])
    return token.replace(D_AGE, forged)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


def sd_verify(token: str, **kwargs: Any) -> Any:
    kwargs.setdefault("issuer_key", ISSUER.public())
    kwargs.setdefault("now", NOW)
    return verify_sd_jwt(token, **kwargs)


def kb_verify(token: str, **kwargs: Any) -> Any:
    return sd_verify(token, require_kb=True, expected_aud=AUD, expected_nonce=NONCE, **kwargs)


PINNED = PinnedKeyResolver({ISS: [ISSUER]})


def vc_verify(token: str, resolver: Any = PINNED, **kwargs: Any) -> Any:
    kwargs.setdefault("now", NOW)
    return verify_sd_jwt_vc(token, key_resolver=resolver, **kwargs)


def vc(**kwargs: Any) -> str:
    args: dict[str, Any] = {"vct": VCT, "issuer": ISS, "key": ISSUER, "holder_jwk": HOLDER.public_jwk(),
                            "disclosable": [("given_name",)], "iat": NOW - 10}
    args.update(kwargs)
    return issue_sd_jwt_vc({"given_name": "Anna"}, **args)


def metadata_resolver(documents: dict[str, Any], **kwargs: Any) -> IssuerMetadataKeyResolver:
    def fetch(url: str) -> Any:
        return documents[url]  # KeyError -> "metadata_unavailable", as a failing HTTP GET would

    return IssuerMetadataKeyResolver(fetch, **kwargs)


DUPLICATE_MEMBER = '{"a":1,"a":2}'
META_URL = "https://issuer.example.cat/.well-known/jwt-vc-issuer"
JWKS = {"keys": [ISSUER.public_jwk()]}

CASES: list[tuple[str, Callable[[], Any], str]] = [
    # -- structure ---------------------------------------------------------------------------------
    ("not_a_string", lambda: SDJWT.parse(valid_token().encode()), "sd_jwt.malformed"),
    ("no_tilde", lambda: SDJWT.parse(valid_token().split("~")[0]), "sd_jwt.malformed"),
    ("jwt_two_parts", lambda: SDJWT.parse("abc.def~"), "sd_jwt.malformed"),
    ("header_not_base64url", lambda: SDJWT.parse("ab+c.def.ghi~"), "sd_jwt.malformed"),
    ("payload_not_json", lambda: SDJWT.parse(f"{enc({'alg': 'ES256'})}.{enc_text('nope')}.AA~"),
     "sd_jwt.malformed"),
    ("payload_is_array", lambda: SDJWT.parse(jwt([1, 2]) + "~"), "sd_jwt.malformed"),
    ("payload_duplicate_member",
     lambda: SDJWT.parse(enc({"alg": "ES256"}) + "." + enc_text(DUPLICATE_MEMBER) + ".AA~"), "sd_jwt.malformed"),
    ("header_crit", lambda: SDJWT.parse(jwt(base_payload(), {"crit": ["x"], "x": 1}) + "~"), "sd_jwt.malformed"),
    ("empty_disclosure", lambda: SDJWT.parse(jwt(base_payload()) + "~~"), "sd_jwt.malformed"),
    ("too_deep", lambda: SDJWT.parse(jwt(base_payload(deep=nested(60))) + "~"), "sd_jwt.too_deep"),
    # -- disclosures -------------------------------------------------------------------------------
    ("disclosure_not_base64url", lambda: SDJWT.parse(jwt(base_payload()) + "~!!!~"), "sd_jwt.bad_disclosure"),
    ("disclosure_padded", lambda: SDJWT.parse(jwt(base_payload()) + "~" + enc(["s", "a", 1]) + "=~"),
     "sd_jwt.bad_disclosure"),
    ("disclosure_not_json", lambda: SDJWT.parse(jwt(base_payload()) + "~" + enc_text("[salt") + "~"),
     "sd_jwt.bad_disclosure"),
    ("disclosure_object", lambda: SDJWT.parse(jwt(base_payload()) + "~" + enc({"salt": "s"}) + "~"),
     "sd_jwt.bad_disclosure"),
    ("disclosure_four_elements", lambda: SDJWT.parse(jwt(base_payload()) + "~" + enc(["s", "a", 1, 2]) + "~"),
     "sd_jwt.bad_disclosure"),
    ("disclosure_one_element", lambda: SDJWT.parse(jwt(base_payload()) + "~" + enc(["s"]) + "~"),
     "sd_jwt.bad_disclosure"),
    ("disclosure_salt_not_string", lambda: SDJWT.parse(jwt(base_payload()) + "~" + enc([1, "a", 1]) + "~"),
     "sd_jwt.bad_disclosure"),
    ("disclosure_name_not_string", lambda: SDJWT.parse(jwt(base_payload()) + "~" + enc(["s", 7, 1]) + "~"),
     "sd_jwt.bad_disclosure"),
    ("disclosure_name_sd",
     lambda: SDJWT.parse(sd_token(base_payload(_sd=[dig(enc(["s", "_sd", 1]))]), [enc(["s", "_sd", 1])])),
     "sd_jwt.reserved_claim_name"),
    ("disclosure_name_ellipsis",
     lambda: SDJWT.parse(sd_token(base_payload(_sd=[dig(enc(["s", "...", 1]))]), [enc(["s", "...", 1])])),
     "sd_jwt.reserved_claim_name"),
    ("unreferenced_disclosure", lambda: SDJWT.parse(sd_token(base_payload(_sd=[dig(D_NAME)]), [D_NAME, D_AGE])),
     "sd_jwt.unreferenced_disclosure"),
    ("tampered_disclosure", lambda: sd_verify(tampered_disclosure()), "sd_jwt.unreferenced_disclosure"),
    ("duplicate_disclosure", lambda: SDJWT.parse(sd_token(base_payload(_sd=[dig(D_NAME)]), [D_NAME, D_NAME])),
     "sd_jwt.duplicate_disclosure"),
    ("duplicate_digest_in_sd",
     lambda: SDJWT.parse(sd_token(base_payload(_sd=[dig(D_NAME), dig(D_NAME)]), [D_NAME])),
     "sd_jwt.duplicate_digest"),
    ("duplicate_undisclosed_digest",
     lambda: SDJWT.parse(sd_token(base_payload(_sd=["decoy"], sub={"_sd": ["decoy"]}), [])),
     "sd_jwt.duplicate_digest"),
    ("duplicate_digest_object_and_array",
     lambda: SDJWT.parse(sd_token(base_payload(_sd=[dig(D_ELEMENT)], n=[{"...": dig(D_ELEMENT)}]), [D_ELEMENT])),
     "sd_jwt.duplicate_digest"),
    ("claim_name_collision",
     lambda: SDJWT.parse(sd_token(base_payload(given_name="Bob", _sd=[dig(D_NAME)]), [D_NAME])),
     "sd_jwt.claim_name_collision"),
    ("array_disclosure_in_sd", lambda: SDJWT.parse(sd_token(base_payload(_sd=[dig(D_ELEMENT)]), [D_ELEMENT])),
     "sd_jwt.misplaced_array_disclosure"),
    ("object_disclosure_in_array",
     lambda: SDJWT.parse(sd_token(base_payload(n=[{"...": dig(D_NAME)}]), [D_NAME])),
     "sd_jwt.misplaced_array_disclosure"),
    ("sd_not_array", lambda: SDJWT.parse(sd_token(base_payload(_sd=dig(D_NAME)), [D_NAME])), "sd_jwt.bad_sd_field"),
    ("sd_null", lambda: SDJWT.parse(sd_token(base_payload(_sd=None), [])), "sd_jwt.bad_sd_field"),
    ("sd_contains_number", lambda: SDJWT.parse(sd_token(base_payload(_sd=[1]), [])), "sd_jwt.bad_sd_field"),
    ("array_digest_with_extra_member",
     lambda: SDJWT.parse(sd_token(base_payload(n=[{"...": dig(D_ELEMENT), "x": 1}]), [D_ELEMENT])),
     "sd_jwt.bad_array_digest"),
    ("array_digest_not_string", lambda: SDJWT.parse(sd_token(base_payload(n=[{"...": 5}]), [])),
     "sd_jwt.bad_array_digest"),
    ("ellipsis_member_in_object", lambda: SDJWT.parse(sd_token(base_payload(o={"...": "x"}), [])),
     "sd_jwt.bad_array_digest"),
    ("unsupported_sd_alg", lambda: SDJWT.parse(sd_token(base_payload(_sd_alg="sha-512"), [])),
     "sd_jwt.unsupported_sd_alg"),
    # -- algorithms and signatures -----------------------------------------------------------------
    ("alg_none", lambda: sd_verify(alg_none()), "jose.alg_not_allowed"),
    ("hs256_public_key_as_secret", lambda: sd_verify(hs256_with_public_key()), "jose.alg_not_allowed"),
    ("alg_outside_allow_list",
     lambda: sd_verify(valid_token(), algorithms=("ES384",)), "jose.alg_not_allowed"),
    ("alg_does_not_fit_key",
     lambda: sd_verify(sd_token(base_payload(), [], key=Key.generate("ES384"))), "jose.alg_key_mismatch"),
    ("wrong_issuer_key", lambda: sd_verify(valid_token(), issuer_key=OTHER.public()), "jose.bad_signature"),
    ("tampered_payload", lambda: sd_verify(tampered_payload()), "jose.bad_signature"),
    ("unexpected_typ", lambda: sd_verify(valid_token(), expected_typ="example+sd-jwt"), "sd_jwt.bad_typ"),
    # -- time --------------------------------------------------------------------------------------
    ("expired", lambda: sd_verify(sd_token(base_payload(exp=NOW - 3600), [])), "sd_jwt.expired"),
    ("not_yet_valid", lambda: sd_verify(sd_token(base_payload(nbf=NOW + 3600), [])), "sd_jwt.not_yet_valid"),
    ("exp_not_number", lambda: sd_verify(sd_token(base_payload(exp="tomorrow"), [])), "sd_jwt.bad_exp"),
    ("iat_in_future", lambda: sd_verify(sd_token(base_payload(iat=NOW + 3600), [])), "sd_jwt.iat_in_future"),
    ("exp_beyond_year_9999", lambda: sd_verify(sd_token(base_payload(exp=10**30), [])), "sd_jwt.bad_exp"),
    ("nbf_before_year_1", lambda: sd_verify(sd_token(base_payload(nbf=-10**30), [])), "sd_jwt.bad_nbf"),
    ("exp_overflows_a_double",
     lambda: sd_verify(jwt(b'{"iss":"https://issuer.example.cat","exp":1e400}') + "~"), "sd_jwt.malformed"),
    # -- key binding -------------------------------------------------------------------------------
    ("kb_missing", lambda: kb_verify(valid_token()), "sd_jwt.kb_missing"),
    ("kb_unexpected", lambda: sd_verify(kb(valid_token())), "sd_jwt.kb_unexpected"),
    ("kb_expectations_missing", lambda: sd_verify(kb(valid_token()), require_kb=True, expected_aud=AUD),
     "sd_jwt.kb_expectation_missing"),
    ("kb_not_a_jws", lambda: kb_verify(valid_token() + "abc"), "sd_jwt.kb_malformed"),
    ("kb_payload_not_object", lambda: kb_verify(valid_token() + sign_jws({"typ": "kb+jwt"}, b"[1]", HOLDER)),
     "sd_jwt.kb_malformed"),
    ("kb_wrong_typ", lambda: kb_verify(kb(valid_token(), header={"typ": "JWT"})), "sd_jwt.kb_bad_typ"),
    ("kb_no_typ", lambda: kb_verify(kb(valid_token(), header={})), "sd_jwt.kb_bad_typ"),
    ("kb_wrong_key", lambda: kb_verify(kb(valid_token(), key=OTHER)), "sd_jwt.kb_bad_signature"),
    ("kb_no_cnf", lambda: kb_verify(kb(sd_token({"iss": ISS, "iat": NOW}, []))), "sd_jwt.kb_no_cnf"),
    ("kb_bad_cnf", lambda: kb_verify(kb(sd_token(base_payload(cnf={"jwk": {"kty": "EC", "crv": "P-256"}}), []))),
     "sd_jwt.bad_cnf"),
    ("cnf_private_jwk", lambda: sd_verify(sd_token(base_payload(cnf={"jwk": HOLDER.private_jwk()}), [])),
     "sd_jwt.bad_cnf"),
    ("kb_cnf_private_jwk", lambda: kb_verify(kb(sd_token(base_payload(cnf={"jwk": HOLDER.private_jwk()}), []))),
     "sd_jwt.bad_cnf"),
    ("kb_wrong_aud", lambda: kb_verify(kb(valid_token(), aud="https://other.example")), "sd_jwt.kb_wrong_aud"),
    ("kb_aud_list", lambda: kb_verify(kb(valid_token(), aud=[AUD])), "sd_jwt.kb_wrong_aud"),
    ("kb_wrong_nonce", lambda: kb_verify(kb(valid_token(), nonce="replayed")), "sd_jwt.kb_wrong_nonce"),
    ("kb_stale", lambda: kb_verify(kb(valid_token(), iat=NOW - 3600)), "sd_jwt.kb_stale"),
    ("kb_from_future", lambda: kb_verify(kb(valid_token(), iat=NOW + 3600)), "sd_jwt.kb_stale"),
    ("kb_no_iat", lambda: kb_verify(kb(valid_token(), drop="iat")), "sd_jwt.kb_bad_iat"),
    ("kb_expired", lambda: kb_verify(kb(valid_token(), exp=NOW - 3600)), "sd_jwt.kb_expired"),
    ("kb_not_yet_valid", lambda: kb_verify(kb(valid_token(), nbf=NOW + 3600)), "sd_jwt.kb_not_yet_valid"),
    ("kb_exp_not_number", lambda: kb_verify(kb(valid_token(), exp="soon")), "sd_jwt.kb_bad_exp"),
    ("kb_nbf_null", lambda: kb_verify(kb(valid_token(), nbf=None)), "sd_jwt.kb_bad_nbf"),
    ("kb_sd_hash_other_disclosures",
     lambda: kb_verify(valid_token().rsplit(D_AGE + "~", 1)[0] + kb(valid_token()).rsplit("~", 1)[1]),
     "sd_jwt.kb_bad_sd_hash"),
    ("kb_no_sd_hash", lambda: kb_verify(kb(valid_token(), drop="sd_hash")), "sd_jwt.kb_bad_sd_hash"),
    ("kb_alg_none",
     lambda: kb_verify(valid_token() + enc({"alg": "none", "typ": "kb+jwt"}) + "." + enc({"iat": NOW}) + "."),
     "jose.alg_not_allowed"),
    # -- SD-JWT VC ---------------------------------------------------------------------------------
    ("vc_typ_generic", lambda: vc_verify(sd_token(base_payload(), [], header={"typ": "example+sd-jwt"})),
     "sd_jwt_vc.bad_typ"),
    ("vc_legacy_typ_not_enabled", lambda: vc_verify(sd_token(base_payload(), [], header={"typ": "vc+sd-jwt"})),
     "sd_jwt_vc.bad_typ"),
    ("vc_missing_vct", lambda: vc_verify(sd_token({"iss": ISS, "iat": NOW}, [])), "sd_jwt_vc.missing_vct"),
    ("vc_vct_not_string", lambda: vc_verify(sd_token(base_payload(vct=["a"]), [])), "sd_jwt_vc.missing_vct"),
    ("vc_unexpected_vct", lambda: vc_verify(vc(), expected_vcts={"https://other/vct"}), "sd_jwt_vc.unexpected_vct"),
    ("vc_missing_iss", lambda: vc_verify(sd_token({"vct": VCT, "iat": NOW}, [])), "sd_jwt_vc.missing_iss"),
    ("vc_disclosed_status",
     lambda: vc_verify(sd_token({"iss": ISS, "vct": VCT, "_sd": [dig(enc(["s", "status", {}]))]},
                                [enc(["s", "status", {}])])), "sd_jwt_vc.forbidden_disclosure"),
    ("vc_disclosed_exp",
     lambda: vc_verify(sd_token({"iss": ISS, "vct": VCT, "_sd": [dig(enc(["s", "exp", NOW + 99]))]},
                                [enc(["s", "exp", NOW + 99])])), "sd_jwt_vc.forbidden_disclosure"),
    ("vc_disclosed_iat_not_a_date",
     lambda: vc_verify(sd_token({"iss": ISS, "vct": VCT, "_sd": [dig(enc(["s", "iat", "not-a-date"]))]},
                                [enc(["s", "iat", "not-a-date"])])), "sd_jwt_vc.bad_iat"),
    ("vc_disclosed_iat_in_future",
     lambda: vc_verify(sd_token({"iss": ISS, "vct": VCT, "_sd": [dig(enc(["s", "iat", NOW + 3600]))]},
                                [enc(["s", "iat", NOW + 3600])])), "sd_jwt_vc.iat_in_future"),
    ("vc_bad_status", lambda: vc_verify(vc(status={"status_list": {"idx": -1, "uri": "https://s.example/1"}})),
     "sd_jwt_vc.bad_status"),
    ("vc_issue_exp_disclosable", lambda: vc(disclosable=[("exp",)], exp=NOW + 99), "sd_jwt_vc.not_disclosable"),
    ("vc_issue_cnf_path_disclosable", lambda: vc(disclosable=[("cnf", "jwk")]), "sd_jwt_vc.not_disclosable"),
    ("vc_issue_iss_in_claims", lambda: issue_sd_jwt_vc({"iss": "x"}, vct=VCT, issuer=ISS, key=ISSUER,
                                                        holder_jwk=None, disclosable=[]), "sd_jwt_vc.reserved_claim"),
    ("vc_issue_private_holder_key", lambda: vc(holder_jwk=HOLDER.private_jwk()), "sd_jwt_vc.bad_holder_jwk"),
    ("vc_vct_integrity_not_a_string",
     lambda: vc_verify(sd_token(base_payload(**{"vct#integrity": 5}), [])), "sd_jwt_vc.bad_vct_integrity"),
    ("vc_vct_integrity_an_object",
     lambda: vc_verify(sd_token(base_payload(**{"vct#integrity": {"sha256": "x"}}), [])),
     "sd_jwt_vc.bad_vct_integrity"),
    # -- issuer key resolution ---------------------------------------------------------------------
    ("sd_resolver_gives_no_key", lambda: sd_verify(valid_token(), issuer_key=lambda header, payload: None),
     "sd_jwt.no_issuer_key"),
    ("sd_resolver_gives_a_jwk_dict",
     lambda: sd_verify(valid_token(), issuer_key=lambda header, payload: ISSUER.public_jwk()), "sd_jwt.no_issuer_key"),
    ("pinned_untrusted_issuer", lambda: vc_verify(vc(issuer="https://unknown.example")),
     "sd_jwt_vc.untrusted_issuer"),
    ("pinned_unknown_kid", lambda: vc_verify(vc(kid="rotated-away")), "sd_jwt_vc.unknown_kid"),
    ("x5c_missing", lambda: vc_verify(vc(), X5CKeyResolver([CA_CERT])), "sd_jwt_vc.no_x5c"),
    ("x5c_san_mismatch", lambda: vc_verify(vc(x5c=x5c_from_chain([WRONG_SAN_LEAF])), X5CKeyResolver([CA_CERT])),
     "sd_jwt_vc.iss_san_mismatch"),
    ("x5c_untrusted_chain", lambda: vc_verify(vc(x5c=x5c_from_chain([LEAF])), X5CKeyResolver([OTHER_CA_CERT])),
     "x509.untrusted_chain"),
    ("x5c_malformed", lambda: vc_verify(vc(x5c=["bm90IGEgY2VydA=="]), X5CKeyResolver([CA_CERT])),
     "x509.malformed_x5c"),
    ("x5c_key_not_the_signer", lambda: vc_verify(vc(key=OTHER, x5c=x5c_from_chain([LEAF])), X5CKeyResolver([CA_CERT])),
     "jose.bad_signature"),
    ("chained_no_metadata_resolver", lambda: vc_verify(vc(), ChainedKeyResolver(X5CKeyResolver([CA_CERT]), None)),
     "sd_jwt_vc.no_key_resolution"),
    ("metadata_issuer_mismatch",
     lambda: vc_verify(vc(), metadata_resolver({META_URL: {"issuer": "https://evil.example", "jwks": JWKS}})),
     "sd_jwt_vc.metadata_issuer_mismatch"),
    ("metadata_jwks_and_jwks_uri",
     lambda: vc_verify(vc(), metadata_resolver({META_URL: {"issuer": ISS, "jwks": JWKS, "jwks_uri": "https://x/j"}})),
     "sd_jwt_vc.bad_metadata"),
    ("metadata_not_object", lambda: vc_verify(vc(), metadata_resolver({META_URL: ["issuer"]})),
     "sd_jwt_vc.bad_metadata"),
    ("metadata_unavailable", lambda: vc_verify(vc(), metadata_resolver({})), "sd_jwt_vc.metadata_unavailable"),
    ("metadata_insecure_jwks_uri",
     lambda: vc_verify(vc(), metadata_resolver({META_URL: {"issuer": ISS, "jwks_uri": "http://issuer.example.cat/j"}})),
     "sd_jwt_vc.insecure_jwks_uri"),
    ("metadata_no_usable_key",
     lambda: vc_verify(vc(), metadata_resolver({META_URL: {"issuer": ISS, "jwks": {"keys": [{"kty": "oct"}]}}})),
     "sd_jwt_vc.no_usable_key"),
    ("metadata_issuer_not_allowed",
     lambda: vc_verify(vc(), metadata_resolver({META_URL: {"issuer": ISS, "jwks": JWKS}},
                                               allowed_issuers={"https://only.example"})),
     "sd_jwt_vc.untrusted_issuer"),
    ("metadata_insecure_iss",
     lambda: vc_verify(vc(issuer="http://issuer.example.cat"), metadata_resolver({})), "sd_jwt_vc.insecure_iss"),
    ("metadata_wrong_key",
     lambda: vc_verify(vc(), metadata_resolver({META_URL: {"issuer": ISS, "jwks": {"keys": [OTHER.public_jwk()]}}})),
     "jose.bad_signature"),
]


def test_at_least_forty_distinct_cases() -> None:
    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 40
    assert len({code for _, _, code in CASES}) >= 40


@pytest.mark.parametrize(("build", "code"), [pytest.param(b, c, id=n) for n, b, c in CASES])
def test_refused_with_its_code(build: Callable[[], Any], code: str) -> None:
    with pytest.raises(SSIError) as info:
        build()
    assert info.value.code == code, info.value


def test_the_valid_baselines_pass() -> None:
    # The cases above are mutations of these: the unmutated inputs verify.
    assert sd_verify(valid_token()).claims["age"] == 40
    assert kb_verify(kb(valid_token())).kb_payload["nonce"] == NONCE
    assert vc_verify(vc()).claims["given_name"] == "Anna"
    assert vc_verify(vc(x5c=x5c_from_chain([LEAF])), X5CKeyResolver([CA_CERT])).issuer_certificate == LEAF
    meta = metadata_resolver({META_URL: {"issuer": ISS, "jwks": JWKS}})
    assert vc_verify(vc(), meta).key_source == "metadata"


def test_issuing_refuses_reserved_members() -> None:
    with pytest.raises(SSIError) as info:
        issue_sd_jwt({"a": {"_sd": []}}, key=ISSUER, disclosable=[])
    assert info.value.code == "sd_jwt.reserved_claim_name"
    with pytest.raises(SSIError) as info:
        issue_sd_jwt({"a": 1}, key=ISSUER, disclosable=[("a", True)])
    assert info.value.code == "sd_jwt.bad_path"


# -- a KB-JWT is a JWT (RFC 9901 §7.3): its exp and nbf bind ------------------------------------

def test_kb_exp_and_nbf_inside_their_window_pass() -> None:
    assert kb_verify(kb(valid_token(), exp=NOW + 300, nbf=NOW - 300)).kb_payload["exp"] == NOW + 300
    # the credential's leeway (60 s by default) applies to the KB-JWT's exp and nbf as well
    assert kb_verify(kb(valid_token(), exp=NOW - 30, nbf=NOW + 30)).kb_payload["nonce"] == NONCE
    for payload, code in [({"exp": NOW - 61}, "sd_jwt.kb_expired"), ({"nbf": NOW + 61}, "sd_jwt.kb_not_yet_valid")]:
        with pytest.raises(SSIError) as info:
            kb_verify(kb(valid_token(), **payload))
        assert info.value.code == code


# -- a cnf.jwk never carries private key members ------------------------------------------------

@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_holder_jwk_with_a_private_member_is_refused(member: str) -> None:
    jwk = {**HOLDER.public_jwk(), member: "AAAA"}
    with pytest.raises(SSIError) as info:
        import_holder_jwk(jwk)
    assert info.value.code == "jose.bad_jwk"
    with pytest.raises(SSIError) as info:
        vc_verify(sd_token(base_payload(cnf={"jwk": jwk}), []))
    assert info.value.code == "sd_jwt.bad_cnf"


# -- iat may be selectively disclosed in an SD-JWT VC (unlike iss, nbf, exp, cnf, vct, status) -----

def test_a_disclosed_iat_is_checked_and_reported() -> None:
    d_iat = enc(["s", "iat", NOW - 100])
    verified = vc_verify(sd_token({"iss": ISS, "vct": VCT, "_sd": [dig(d_iat)]}, [d_iat]))
    assert verified.iat == NOW - 100
    assert verify_sd_jwt_vc(sd_token({"iss": ISS, "vct": VCT, "_sd": [dig(d_iat)]}, []), key_resolver=PINNED,
                            now=NOW).iat is None
    assert vc_verify(vc()).iat == NOW - 10
