"""SD-JWT VC: issuing, verifying, and finding the issuer key by x5c, issuer metadata (over real
HTTP on loopback) and pinned keys."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ssi.encoding import b64url_decode, json_loads
from ssi.errors import SDJWTVCError
from ssi.jose import Key
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import (
    NON_DISCLOSABLE_CLAIMS,
    ChainedKeyResolver,
    IssuerMetadataKeyResolver,
    PinnedKeyResolver,
    X5CKeyResolver,
    issue_sd_jwt_vc,
    jwt_vc_issuer_metadata_url,
    verify_sd_jwt_vc,
)
from ssi.status_list import StatusReference
from ssi.x509 import create_ca, issue_certificate, x5c_from_chain
from tests.support.servers import serve

NOW = 1_800_000_000
ISS = "https://issuer.example.cat"
VCT = "https://issuer.example.cat/vct/padro"
AUD = "x509_san_dns:verifier.example.cat"
ISSUER = Key.generate("ES256", kid="k1")
HOLDER = Key.generate("ES256")
CA_KEY, CA_CERT = create_ca("SD-JWT VC test CA")
INTERMEDIATE_KEY = Key.generate("ES256")
INTERMEDIATE = issue_certificate(CA_KEY, CA_CERT, INTERMEDIATE_KEY, "Intermediate", is_ca=True)
LEAF = issue_certificate(INTERMEDIATE_KEY, INTERMEDIATE, ISSUER, "issuer.example.cat", san_uris=[ISS])
CLAIMS = {"given_name": "Anna", "municipality": {"ine": "17079", "name": "Girona"},
          "household": [{"name": "Pere"}, {"name": "Marta"}], "age_equal_or_over": {"18": True, "65": False}}
DISCLOSABLE = [("given_name",), ("municipality",), ("household", None), ("age_equal_or_over", "18"),
               ("age_equal_or_over", "65")]
STATUS = {"status_list": {"idx": 42, "uri": "https://issuer.example.cat/status/1"}}


def issue(**kwargs: Any) -> str:
    args: dict[str, Any] = {"vct": VCT, "issuer": ISS, "key": ISSUER, "holder_jwk": HOLDER.public_jwk(),
                            "disclosable": DISCLOSABLE, "iat": NOW - 60, "exp": NOW + 86400, "status": STATUS}
    args.update(kwargs)
    return issue_sd_jwt_vc(CLAIMS, **args)


def test_issued_header_and_plain_claims() -> None:
    token = issue(x5c=x5c_from_chain([LEAF, INTERMEDIATE]), kid="k1", nbf=NOW - 60, vct_integrity="sha256-abc")
    header = json_loads(b64url_decode(token.split(".")[0]))
    assert header["typ"] == "dc+sd-jwt" and header["alg"] == "ES256" and header["kid"] == "k1"
    assert len(header["x5c"]) == 2
    payload = json_loads(b64url_decode(token.split("~")[0].split(".")[1]))
    for name in ("iss", "vct", "iat", "nbf", "exp", "cnf", "status", "vct#integrity"):
        assert name in payload
    assert "given_name" not in payload and payload["cnf"] == {"jwk": HOLDER.public_jwk()}
    assert NON_DISCLOSABLE_CLAIMS == {"iss", "nbf", "exp", "cnf", "vct", "vct#integrity", "status"}


def test_iat_and_sub_may_be_disclosable() -> None:
    token = issue_sd_jwt_vc({"sub": "urn:x"}, vct=VCT, issuer=ISS, key=ISSUER, holder_jwk=None,
                            disclosable=[("sub",), ("iat",)], iat=NOW)
    sd = SDJWT.parse(token)
    assert {d.name for d in sd.disclosures} == {"sub", "iat"}
    result = verify_sd_jwt_vc(token, key_resolver=PinnedKeyResolver({ISS: [ISSUER]}), now=NOW)
    assert result.iat == NOW and result.holder_key is None


def test_verify_with_x5c_chain_and_key_binding() -> None:
    token = issue(x5c=x5c_from_chain([LEAF, INTERMEDIATE]))
    presentation = SDJWT.parse(token).present([("given_name",), ("age_equal_or_over", "18")], holder_key=HOLDER,
                                              aud=AUD, nonce="n-9", iat=NOW)
    result = verify_sd_jwt_vc(presentation, key_resolver=X5CKeyResolver([CA_CERT]), expected_vcts=[VCT],
                              require_kb=True, expected_aud=AUD, expected_nonce="n-9", now=NOW)
    assert result.issuer == ISS and result.vct == VCT
    assert result.claims["given_name"] == "Anna" and result.claims["age_equal_or_over"] == {"18": True}
    assert "municipality" not in result.claims and result.claims["household"] == []  # elements hidden
    assert result.key_source == "x5c" and result.issuer_certificate == LEAF
    assert result.status == StatusReference(idx=42, uri="https://issuer.example.cat/status/1")
    assert result.exp == NOW + 86400 and result.kb_payload["aud"] == AUD
    assert result.holder_key.thumbprint() == HOLDER.thumbprint()
    assert sorted(result.disclosed_paths) == [("age_equal_or_over", "18"), ("given_name",)]


def test_legacy_typ_only_behind_the_flag() -> None:
    from ssi.sd_jwt import issue_sd_jwt

    token = issue_sd_jwt({"iss": ISS, "vct": VCT, "iat": NOW}, key=ISSUER, header={"typ": "vc+sd-jwt"},
                         disclosable=[])
    pinned = PinnedKeyResolver({ISS: [ISSUER]})
    with pytest.raises(SDJWTVCError):
        verify_sd_jwt_vc(token, key_resolver=pinned, now=NOW)
    assert verify_sd_jwt_vc(token, key_resolver=pinned, now=NOW, accept_legacy_typ=True).vct == VCT


def test_expiry_is_enforced() -> None:
    token = issue(exp=NOW - 10_000)
    with pytest.raises(Exception) as info:
        verify_sd_jwt_vc(token, key_resolver=PinnedKeyResolver({ISS: [ISSUER]}), now=NOW)
    assert info.value.code == "sd_jwt.expired"


def test_pinned_resolver_picks_by_kid() -> None:
    old = Key.generate("ES256", kid="k0")
    pinned = PinnedKeyResolver({ISS: [old, ISSUER]})
    result = verify_sd_jwt_vc(issue(kid="k1"), key_resolver=pinned, now=NOW)
    assert result.key_source == "pinned" and result.issuer_key.kid == "k1"
    with pytest.raises(SDJWTVCError) as info:
        verify_sd_jwt_vc(issue(), key_resolver=pinned, now=NOW)
    assert info.value.code == "sd_jwt_vc.ambiguous_key"


@pytest.mark.parametrize(("iss", "url"), [
    ("https://issuer.example.cat", "https://issuer.example.cat/.well-known/jwt-vc-issuer"),
    ("https://issuer.example.cat/", "https://issuer.example.cat/.well-known/jwt-vc-issuer"),
    ("https://example.com/tenant/1234", "https://example.com/.well-known/jwt-vc-issuer/tenant/1234"),
    ("https://example.com:8443/t/", "https://example.com:8443/.well-known/jwt-vc-issuer/t"),
])
def test_metadata_url(iss: str, url: str) -> None:
    assert jwt_vc_issuer_metadata_url(iss) == url


@pytest.mark.parametrize("iss", ["issuer.example", "https://x.example/?a=1", "https://x.example/#f", "ftp://x", 7])
def test_metadata_url_refuses(iss: Any) -> None:
    with pytest.raises(SDJWTVCError) as info:
        jwt_vc_issuer_metadata_url(iss)
    assert info.value.code == "sd_jwt_vc.bad_iss"


class MetadataApp:
    """A minimal issuer serving JWT VC Issuer Metadata and a JWKS over HTTP."""

    def __init__(self) -> None:
        self.base = ""
        self.tenant_keys: list[dict[str, Any]] = [ISSUER.public_jwk()]
        self.hits: list[str] = []
        self.use_jwks_uri = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        self.hits.append(path)
        if path == "/.well-known/jwt-vc-issuer/tenant/1":
            body: Any = {"issuer": self.base + "/tenant/1"}
            if self.use_jwks_uri:
                body["jwks_uri"] = self.base + "/tenant/1/jwks"
            else:
                body["jwks"] = {"keys": self.tenant_keys}
            status = 200
        elif path == "/tenant/1/jwks":
            body, status = {"keys": self.tenant_keys}, 200
        else:
            body, status = {"error": "not_found"}, 404
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": raw})


def http_fetch_json(url: str) -> Any:
    response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    return response.json()


def test_issuer_metadata_over_http_with_jwks_uri_cache_and_rotation() -> None:
    app = MetadataApp()
    with serve(app) as base:
        app.base = base
        iss = base + "/tenant/1"
        clock = [0.0]
        resolver = IssuerMetadataKeyResolver(http_fetch_json, allowed_issuers={iss}, allow_http_loopback=True,
                                             ttl=300, min_refresh=30, clock=lambda: clock[0])
        token = issue(issuer=iss, kid="k1")
        presentation = SDJWT.parse(token).present([("municipality",)], holder_key=HOLDER, aud=AUD, nonce="n",
                                                  iat=NOW)
        result = verify_sd_jwt_vc(presentation, key_resolver=resolver, require_kb=True, expected_aud=AUD,
                                  expected_nonce="n", now=NOW)
        assert result.key_source == "metadata" and result.claims["municipality"]["name"] == "Girona"
        assert app.hits == ["/.well-known/jwt-vc-issuer/tenant/1", "/tenant/1/jwks"]

        # Cached: a second verification makes no request.
        verify_sd_jwt_vc(token, key_resolver=resolver, now=NOW)
        assert len(app.hits) == 2

        # Rotation: a new kid triggers a refetch once min_refresh has passed.
        new_key = Key.generate("ES256", kid="k2")
        app.tenant_keys = [ISSUER.public_jwk(), new_key.public_jwk()]
        rotated = issue(issuer=iss, key=new_key, kid="k2")
        with pytest.raises(SDJWTVCError) as info:
            verify_sd_jwt_vc(rotated, key_resolver=resolver, now=NOW)
        assert info.value.code == "sd_jwt_vc.unknown_kid" and len(app.hits) == 2
        clock[0] = 31.0
        assert verify_sd_jwt_vc(rotated, key_resolver=resolver, now=NOW).issuer_key.kid == "k2"
        assert len(app.hits) == 4

        # Inline jwks works too, and a failing fetch is a typed error.
        app.use_jwks_uri = False
        inline = IssuerMetadataKeyResolver(http_fetch_json, allow_http_loopback=True)
        assert verify_sd_jwt_vc(token, key_resolver=inline, now=NOW).issuer == iss
        missing = IssuerMetadataKeyResolver(http_fetch_json, allow_http_loopback=True)
        with pytest.raises(SDJWTVCError) as info:
            verify_sd_jwt_vc(issue(issuer=base + "/tenant/2"), key_resolver=missing, now=NOW)
        assert info.value.code == "sd_jwt_vc.metadata_unavailable"


def test_chained_resolver_prefers_x5c_and_falls_back_to_metadata() -> None:
    documents = {jwt_vc_issuer_metadata_url(ISS): {"issuer": ISS, "jwks": {"keys": [ISSUER.public_jwk()]}}}
    chained = ChainedKeyResolver(X5CKeyResolver([CA_CERT]), IssuerMetadataKeyResolver(documents.__getitem__))
    with_x5c = verify_sd_jwt_vc(issue(x5c=x5c_from_chain([LEAF, INTERMEDIATE])), key_resolver=chained, now=NOW)
    without = verify_sd_jwt_vc(issue(), key_resolver=chained, now=NOW)
    assert (with_x5c.key_source, without.key_source) == ("x5c", "metadata")
