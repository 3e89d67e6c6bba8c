"""DIDs: did:key and did:jwk against the method specifications' vectors, did:web over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pydid
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ssi.did import (
    aresolve_did,
    aresolve_did_web,
    b58decode,
    b58encode,
    did_jwk_from_key,
    did_key_from_key,
    did_method,
    did_web_document,
    did_web_from_url,
    did_web_url,
    key_from_did_jwk,
    key_from_did_key,
    key_from_multikey,
    multikey_from_key,
    parse_did_document,
    resolve_did,
    resolve_did_jwk,
    resolve_did_key,
    resolve_did_web,
    resolve_key,
    resolve_verification_key,
)
from ssi.encoding import b64url_encode
from ssi.errors import DIDError, SSIError
from ssi.jose import Key, sign_jws, verify_jws
from tests.support.servers import free_port, serve

# did-method-key test vectors (w3c-ccg/did-method-key, test-vectors/nist-curves.json, ed25519-x25519.json)
P256_DID = "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169"
P256_JWK = {"kty": "EC", "crv": "P-256", "x": "fyNYMN0976ci7xqiSdag3buk-ZCwgXU4kz9XNkBlNUI",
            "y": "hW2ojTNfH7Jbi8--CJUo3OCbH3y5n91g-IMA9MLMbTU"}
P256_D = "YjRs6vNvw4sYrzVVY8ipkEpDAD9PFqw1sUnvPRMA-WI"
P384_DID = "did:key:z82Lm1MpAkeJcix9K8TMiLd5NMAhnwkjjCBeWHXyu3U4oT2MVJJKXkcVBgjGhnLBn2Kaau9"
P384_JWK = {"kty": "EC", "crv": "P-384", "x": "lInTxl8fjLKp_UCrxI0WDklahi-7-_6JbtiHjiRvMvhedhKVdHBfi2HCY8t_QJyc",
            "y": "y6N1IC-2mXxHreETBW7K3mBcw0qGr3CWHCs-yl09yCQRLcyfGv7XhqAngHOu51Zv"}
ED25519_SEED0_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
ED25519_SEED0_BASE58 = "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS"
ED25519_SEED1_DID = "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG"
# did:jwk specification, P-256 example
JWK_DID = ("did:jwk:eyJjcnYiOiJQLTI1NiIsImt0eSI6IkVDIiwieCI6ImFjYklRaXVNczNpOF91c3pFakoydHBUdFJNNEVVM3l6OTFQSDZD"
           "ZEgyVjAiLCJ5IjoiX0tjeUxqOXZXTXB0bm1LdG00NkdxRHo4d2Y3NEk1TEtncmwyR3pIM25TRSJ9")
JWK_DID_JWK = {"crv": "P-256", "kty": "EC", "x": "acbIQiuMs3i8_uszEjJ2tpTtRM4EU3yz91PH6CdH2V0",
               "y": "_KcyLj9vWMptnmKtm46GqDz8wf74I5LKgrl2GzH3nSE"}
X25519_JWK_DID = ("did:jwk:eyJrdHkiOiJPS1AiLCJjcnYiOiJYMjU1MTkiLCJ1c2UiOiJlbmMiLCJ4IjoiM3A3YmZYdDl3YlRUVzJIQzdPUTFO"
                  "ei1EUThoYmVHZE5yZngtRkctSUswOCJ9")


def code_of(excinfo: pytest.ExceptionInfo[DIDError]) -> str:
    return excinfo.value.code


def _ed25519_from_seed(byte: int) -> Key:
    return Key.from_cryptography(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(31) + bytes([byte])))


# -- base58btc -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "encoded"), [
    (b"", ""), (b"\0", "1"), (b"\0\0\x01", "112"), (b"hello world", "StV1DL6CwTryKyV"),
])
def test_base58_known_values(raw, encoded):
    assert b58encode(raw) == encoded
    assert b58decode(encoded) == raw


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_base58_round_trip(raw):
    assert b58decode(b58encode(raw)) == raw


def test_base58_refuses_outside_alphabet():
    for bad in ("0", "O", "I", "l", "abc!"):
        with pytest.raises(DIDError) as exc:
            b58decode(bad)
        assert code_of(exc) == "did.malformed"


# -- did:key -------------------------------------------------------------------------------------

def test_did_key_p256_vector():
    key = key_from_did_key(P256_DID)
    assert key.public_jwk(include_kid=False) == P256_JWK
    assert key.alg == "ES256" and not key.is_private
    assert key.kid == P256_DID + "#" + P256_DID.split(":")[2]
    private = Key.from_jwk({**P256_JWK, "d": P256_D})
    assert did_key_from_key(private) == P256_DID
    assert did_key_from_key(private.public()) == P256_DID


def test_did_key_p384_vector():
    key = key_from_did_key(P384_DID)
    assert key.public_jwk(include_kid=False) == P384_JWK and key.alg == "ES384"
    assert did_key_from_key(key) == P384_DID


def test_did_key_ed25519_vectors():
    assert did_key_from_key(_ed25519_from_seed(0)) == ED25519_SEED0_DID
    assert did_key_from_key(_ed25519_from_seed(1)) == ED25519_SEED1_DID
    key = key_from_did_key(ED25519_SEED0_DID)
    assert key.alg == "EdDSA"
    assert b58encode(key.public_key.public_bytes_raw()) == ED25519_SEED0_BASE58


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA"])
def test_did_key_round_trip_and_signature(alg):
    private = Key.generate(alg)
    did = did_key_from_key(private)
    assert did.startswith({"ES256": "did:key:zDn", "ES384": "did:key:z82", "EdDSA": "did:key:z6Mk"}[alg])
    public = key_from_did_key(did)
    assert public.thumbprint() == private.thumbprint()
    token = sign_jws({"kid": public.kid}, {"nonce": "n-1"}, private)
    assert verify_jws(token, resolve_key(public.kid)).json_payload() == {"nonce": "n-1"}
    assert key_from_did_key(public.kid).thumbprint() == private.thumbprint()  # DID URL accepted too


def test_resolve_did_key_document():
    doc = resolve_did_key(P256_DID)
    assert isinstance(doc, pydid.DIDDocument)
    data = doc.serialize()
    vm_id = P256_DID + "#" + P256_DID.split(":")[2]
    assert data["id"] == P256_DID
    assert data["@context"][0] == "https://www.w3.org/ns/did/v1"
    assert data["verificationMethod"] == [{"id": vm_id, "type": "Multikey", "controller": P256_DID,
                                           "publicKeyMultibase": P256_DID.split(":")[2]}]
    for relationship in ("authentication", "assertionMethod", "capabilityInvocation", "capabilityDelegation"):
        assert data[relationship] == [vm_id]
    key = resolve_verification_key(vm_id, doc)
    assert key.public_jwk(include_kid=False) == P256_JWK
    relative = resolve_verification_key("#" + P256_DID.split(":")[2], doc)
    assert relative.kid == vm_id


@pytest.mark.parametrize("did", [
    "did:key:", "did:key:abc", "did:key:z", "did:key:z0OIl", "did:jwk:zDnaer",
    "did:key:" + "z" + b58encode(b"\x80\x24" + b"\x02" * 10),       # p256 but too short
    "did:key:" + "z" + b58encode(b"\x80\x24" + b"\x05" + b"\x01" * 32),  # not a point encoding
    "did:key:" + "z" + b58encode(b"\xed\x01" + b"\x01" * 31),        # ed25519 too short
    "did:key:" + "z" + b58encode(b"\x80"),                            # truncated varint
    "did:key:" + "z" + b58encode(b"\xed\x81\x80\x00" + bytes(32)),   # non-minimal varint
    "DID:key:z6Mk", "key:z6Mk", "", None, 42,
])
def test_key_from_did_key_malformed(did):
    with pytest.raises(DIDError) as exc:
        key_from_did_key(did)
    assert code_of(exc) == "did.malformed"


def test_a_trailing_newline_is_no_part_of_a_did():
    key = Key.generate()
    for did, parse in [(did_key_from_key(key), key_from_did_key), (did_jwk_from_key(key), key_from_did_jwk),
                       (did_key_from_key(key), resolve_key)]:
        assert parse(did).thumbprint() == key.thumbprint()
        with pytest.raises(DIDError) as exc:
            parse(did + "\n")
        assert code_of(exc) == "did.malformed"


def test_resolve_did_web_types_a_url_httpx_refuses():
    # httpx.InvalidURL is no httpx.HTTPError: it escaped untyped
    for resolve in (resolve_did_web, lambda did, url_for: asyncio.run(aresolve_did_web(did, url_for=url_for))):
        with pytest.raises(DIDError) as exc:
            resolve("did:web:example.com", url_for=lambda did: "https://example.com\n/.well-known/did.json")
        assert code_of(exc) == "did.malformed"
        with pytest.raises(DIDError) as exc:
            resolve("did:web:example.com%0A", url_for=None)
        assert code_of(exc) == "did.malformed"


def test_did_key_unsupported_multicodec():
    secp256k1 = "did:key:z" + b58encode(b"\xe7\x01" + b"\x02" + bytes(32))
    with pytest.raises(DIDError) as exc:
        key_from_did_key(secp256k1)
    assert code_of(exc) == "did.unsupported_key"


def test_multikey_round_trip():
    key = Key.generate("ES256")
    assert key_from_multikey(multikey_from_key(key)).thumbprint() == key.thumbprint()


# -- did:jwk -------------------------------------------------------------------------------------

def test_did_jwk_spec_vector():
    key = key_from_did_jwk(JWK_DID)
    assert key.public_jwk(include_kid=False) == {k: JWK_DID_JWK[k] for k in ("kty", "crv", "x", "y")}
    assert key.kid == JWK_DID + "#0"
    # Our encoding (sorted, compact members) reproduces the specification's identifier.
    assert did_jwk_from_key(key) == JWK_DID


def test_resolve_did_jwk_document_matches_spec():
    data = resolve_did_jwk(JWK_DID).serialize()
    vm_id = JWK_DID + "#0"
    assert data["@context"] == ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/jws-2020/v1"]
    assert data["verificationMethod"] == [{"id": vm_id, "type": "JsonWebKey2020", "controller": JWK_DID,
                                           "publicKeyJwk": JWK_DID_JWK}]
    for relationship in ("assertionMethod", "authentication", "capabilityInvocation", "capabilityDelegation",
                         "keyAgreement"):
        assert data[relationship] == [vm_id]


def test_did_jwk_use_enc_has_only_key_agreement():
    data = resolve_did_jwk(X25519_JWK_DID).serialize()
    assert data["keyAgreement"] == [X25519_JWK_DID + "#0"]
    assert "assertionMethod" not in data and "authentication" not in data


def test_did_jwk_use_sig_has_no_key_agreement():
    jwk = {**Key.generate("EdDSA").public_jwk(), "use": "sig"}
    did = "did:jwk:" + b64url_encode(json.dumps(jwk).encode())
    data = resolve_did_jwk(did).serialize()
    assert "keyAgreement" not in data and data["assertionMethod"] == [did + "#0"]


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA"])
def test_did_jwk_round_trip(alg):
    private = Key.generate(alg)
    did = did_jwk_from_key(private)
    assert "d" not in json.loads(base64.urlsafe_b64decode(did[8:] + "=" * (-len(did[8:]) % 4)))
    assert key_from_did_jwk(did).thumbprint() == private.thumbprint()
    token = sign_jws({"kid": did + "#0"}, {"a": 1}, private)
    assert verify_jws(token, resolve_key(did + "#0")).json_payload() == {"a": 1}
    assert resolve_key(did).thumbprint() == private.thumbprint()


def test_did_jwk_refuses_private_key():
    did = "did:jwk:" + b64url_encode(json.dumps(Key.generate().private_jwk()).encode())
    with pytest.raises(DIDError) as exc:
        key_from_did_jwk(did)
    assert code_of(exc) == "did.malformed"
    with pytest.raises(DIDError):
        resolve_did_jwk(did)


@pytest.mark.parametrize("did", ["did:jwk:", "did:jwk:!!", "did:jwk:e30=", "did:jwk:" + b64url_encode(b"[1]"),
                                 "did:jwk:" + b64url_encode(b"not json"), "did:key:" + b64url_encode(b"{}")])
def test_did_jwk_malformed(did):
    with pytest.raises(DIDError) as exc:
        key_from_did_jwk(did)
    assert code_of(exc) == "did.malformed"


def test_did_jwk_unusable_key():
    did = "did:jwk:" + b64url_encode(json.dumps({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}).encode())
    with pytest.raises(DIDError) as exc:
        key_from_did_jwk(did)
    assert code_of(exc) == "did.unsupported_key"


# -- did:web URL mapping -------------------------------------------------------------------------

@pytest.mark.parametrize(("did", "url"), [
    ("did:web:w3c-ccg.github.io", "https://w3c-ccg.github.io/.well-known/did.json"),
    ("did:web:w3c-ccg.github.io:user:alice", "https://w3c-ccg.github.io/user/alice/did.json"),
    ("did:web:example.com%3A3000:user:alice", "https://example.com:3000/user/alice/did.json"),
    ("did:web:example.com%3A3000", "https://example.com:3000/.well-known/did.json"),
    ("did:web:Example.COM", "https://example.com/.well-known/did.json"),
    ("did:web:example.com#key-1", "https://example.com/.well-known/did.json"),
])
def test_did_web_url(did, url):
    assert did_web_url(did) == url


@pytest.mark.parametrize("did", [
    "did:web:", "did:web:exa mple.com", "did:web:example.com%2Fevil", "did:web:example.com:..",
    "did:web:example.com:a%2Fb", "did:web:-bad.example", "did:web:user%40example.com", "did:key:example.com",
    "did:web:example.com:", "did:web:example.com%3A99999999",
    # '$' matched before a final newline: the URL became "https://example.com\n/..."
    "did:web:example.com%0A", "did:web:example.com%3A443%0A", "did:web:example.com\n",
])
def test_did_web_url_malformed(did):
    with pytest.raises(DIDError) as exc:
        did_web_url(did)
    assert code_of(exc) == "did.malformed"


@pytest.mark.parametrize(("url", "did"), [
    ("https://issuer.example", "did:web:issuer.example"),
    ("https://issuer.example/.well-known/did.json", "did:web:issuer.example"),
    ("https://localhost:8443/user/alice", "did:web:localhost%3A8443:user:alice"),
    ("https://localhost:8443/user/alice/did.json", "did:web:localhost%3A8443:user:alice"),
])
def test_did_web_from_url(url, did):
    assert did_web_from_url(url) == did
    assert did_web_from_url(did_web_url(did)) == did


def test_did_web_from_url_refuses_http():
    with pytest.raises(DIDError) as exc:
        did_web_from_url("http://issuer.example")
    assert code_of(exc) == "did.malformed"


# -- documents -----------------------------------------------------------------------------------

def test_did_web_document_and_key_lookup():
    did = "did:web:issuer.example:tenants:girona"
    k1, k2 = Key.generate("ES256", kid="signing-2025"), Key.generate("EdDSA")
    document = did_web_document(did, [k1, k2])
    assert document["id"] == did
    ids = [vm["id"] for vm in document["verificationMethod"]]
    assert ids == [f"{did}#signing-2025", f"{did}#{k2.thumbprint()}"]
    assert document["assertionMethod"] == ids and document["authentication"] == ids
    assert all(vm["type"] == "JsonWebKey2020" and "d" not in vm["publicKeyJwk"] for vm in document["verificationMethod"])
    doc = parse_did_document(json.dumps(document).encode(), did)
    assert resolve_verification_key(f"{did}#signing-2025", doc).thumbprint() == k1.thumbprint()
    assert resolve_verification_key(f"#{k2.thumbprint()}", doc).thumbprint() == k2.thumbprint()
    with pytest.raises(DIDError) as exc:
        resolve_verification_key(f"{did}#other", doc)
    assert code_of(exc) == "did.key_not_found"
    with pytest.raises(DIDError) as exc:
        resolve_verification_key("did:web:elsewhere.example#signing-2025", doc)
    assert code_of(exc) == "did.key_not_found"
    with pytest.raises(DIDError) as exc:
        resolve_verification_key("signing-2025", doc)
    assert code_of(exc) == "did.malformed"


def test_did_web_document_refuses_bad_input():
    with pytest.raises(DIDError) as exc:
        did_web_document("did:web:issuer.example", [])
    assert code_of(exc) == "did.key_not_found"
    with pytest.raises(DIDError) as exc:
        did_web_document("did:key:z6Mk", [Key.generate()])
    assert code_of(exc) == "did.malformed"
    key = Key.generate(kid="same")
    with pytest.raises(DIDError) as exc:
        did_web_document("did:web:issuer.example", [key, Key.generate(kid="same")])
    assert code_of(exc) == "did.malformed"


def test_did_web_document_uses_thumbprint_for_unusable_kid():
    key = Key.generate(kid="has space#and hash")
    document = did_web_document("did:web:issuer.example", [key])
    assert document["verificationMethod"][0]["id"] == f"did:web:issuer.example#{key.thumbprint()}"


def test_parse_did_document_multikey_and_embedded_methods():
    did = "did:web:issuer.example"
    signer = Key.generate("ES256")
    embedded = Key.generate("EdDSA")
    document = {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did,
        "verificationMethod": [{"id": "#mk", "type": "Multikey", "controller": did,
                                "publicKeyMultibase": multikey_from_key(signer)},
                               {"id": "#nokey", "type": "Multikey", "controller": did, "publicKeyBase58": "abc"},
                               {"id": "#priv", "type": "JsonWebKey2020", "controller": did,
                                "publicKeyJwk": Key.generate().private_jwk()}],
        "assertionMethod": [{"id": f"{did}#emb", "type": "JsonWebKey2020", "controller": did,
                             "publicKeyJwk": embedded.public_jwk()}],
    }
    doc = parse_did_document(document, did)
    assert resolve_verification_key(f"{did}#mk", doc).thumbprint() == signer.thumbprint()
    assert resolve_verification_key("#emb", doc).thumbprint() == embedded.thumbprint()
    for fragment in ("#nokey", "#priv"):
        with pytest.raises(DIDError) as exc:
            resolve_verification_key(fragment, doc)
        assert code_of(exc) == "did.key_not_found"


def test_parse_did_document_errors():
    did = "did:web:issuer.example"
    with pytest.raises(DIDError) as exc:
        parse_did_document(b"{not json", did)
    assert code_of(exc) == "did.invalid_document"
    with pytest.raises(DIDError) as exc:
        parse_did_document(b'{"id": "did:web:issuer.example", "id": "did:web:evil.example"}', did)
    assert code_of(exc) == "did.invalid_document"
    with pytest.raises(DIDError) as exc:
        parse_did_document(b"[]", did)
    assert code_of(exc) == "did.invalid_document"
    with pytest.raises(DIDError) as exc:
        parse_did_document({"id": "did:web:evil.example"}, did)
    assert code_of(exc) == "did.id_mismatch"
    with pytest.raises(DIDError) as exc:
        parse_did_document({"id": did, "verificationMethod": "nope"}, did)
    assert code_of(exc) == "did.invalid_document"


def test_resolve_did_dispatch_and_unsupported_method():
    assert str(resolve_did(P256_DID).id) == P256_DID
    assert str(resolve_did(JWK_DID + "#0").id) == JWK_DID
    assert did_method("did:web:example.com") == "web"
    with pytest.raises(DIDError) as exc:
        resolve_did("did:ebsi:zo9FR1YfAKFP3Q6dvqhxcXxnfeDiJDP97kmnqhyAUSACj")
    assert code_of(exc) == "did.unsupported_method"
    with pytest.raises(DIDError) as exc:
        resolve_did("not-a-did")
    assert code_of(exc) == "did.malformed"
    with pytest.raises(DIDError) as exc:
        resolve_key("did:web:example.com")
    assert code_of(exc) == "did.malformed"


# -- did:web over real HTTP ----------------------------------------------------------------------

ALICE_KEY = Key.generate("ES256", kid="key-1")


def _did_for(base_url: str, *path: str) -> str:
    host = base_url.removeprefix("http://").replace(":", "%3A")
    return ":".join(["did:web", host, *path])


def _make_app() -> Starlette:
    def root_doc(request):
        did = _did_for(f"http://{request.url.netloc}")
        return JSONResponse(did_web_document(did, [ALICE_KEY]), media_type="application/did+json")

    def alice_doc(request):
        did = _did_for(f"http://{request.url.netloc}", "users", "alice")
        return JSONResponse(did_web_document(did, [ALICE_KEY]))

    def mismatch_doc(request):
        return JSONResponse(did_web_document("did:web:someone-else.example", [ALICE_KEY]))

    def bad_json(request):
        return PlainTextResponse("<html>not json</html>")

    def huge(request):
        return Response(b"{" + b" " * (300 * 1024) + b"}", media_type="application/json")

    def streamed(request):
        async def chunks():
            for _ in range(5):
                yield b" " * (64 * 1024)
        return StreamingResponse(chunks(), media_type="application/json")

    def redirect(request):
        return RedirectResponse("/.well-known/did.json", status_code=302)

    def broken(request):
        return PlainTextResponse("boom", status_code=500)

    return Starlette(routes=[
        Route("/", lambda request: PlainTextResponse("ok")),
        Route("/.well-known/did.json", root_doc),
        Route("/users/alice/did.json", alice_doc),
        Route("/mismatch/did.json", mismatch_doc),
        Route("/badjson/did.json", bad_json),
        Route("/huge/did.json", huge),
        Route("/streamed/did.json", streamed),
        Route("/redirect/did.json", redirect),
        Route("/broken/did.json", broken),
    ])


def _loopback(did: str) -> str:
    # The method mandates https; the test server speaks plain http on loopback.
    return did_web_url(did).replace("https://", "http://", 1)


@pytest.fixture(scope="module")
def did_server():
    with serve(_make_app()) as base_url:
        yield base_url


def test_resolve_did_web_well_known(did_server):
    did = _did_for(did_server)
    doc = resolve_did_web(did, url_for=_loopback)
    assert str(doc.id) == did
    key = resolve_verification_key(f"{did}#key-1", doc)
    assert key.thumbprint() == ALICE_KEY.thumbprint()
    token = sign_jws({"kid": f"{did}#key-1"}, {"iss": did}, ALICE_KEY)
    assert verify_jws(token, resolve_key(f"{did}#key-1", url_for=_loopback)).json_payload()["iss"] == did


def test_resolve_did_web_with_path_and_shared_client(did_server):
    did = _did_for(did_server, "users", "alice")
    with httpx.Client() as client:
        doc = resolve_did(did, client=client, url_for=_loopback)
        assert not client.is_closed  # a caller's client is left open
    assert str(doc.id) == did


@pytest.mark.parametrize(("path", "code"), [
    ("missing", "did.not_found"),
    ("mismatch", "did.id_mismatch"),
    ("badjson", "did.invalid_document"),
    ("huge", "did.resolution_failed"),
    ("streamed", "did.resolution_failed"),
    ("redirect", "did.resolution_failed"),
    ("broken", "did.resolution_failed"),
])
def test_resolve_did_web_failures(did_server, path, code):
    with pytest.raises(DIDError) as exc:
        resolve_did_web(_did_for(did_server, path), url_for=_loopback)
    assert code_of(exc) == code


def test_resolve_did_web_connection_refused():
    did = f"did:web:127.0.0.1%3A{free_port()}"
    with pytest.raises(DIDError) as exc:
        resolve_did_web(did, url_for=_loopback, timeout=2.0)
    assert code_of(exc) == "did.resolution_failed"


def test_aresolve_did_web(did_server):
    did = _did_for(did_server, "users", "alice")

    async def scenario():
        doc = await aresolve_did_web(did, url_for=_loopback)
        async with httpx.AsyncClient() as client:
            again = await aresolve_did(did, client=client, url_for=_loopback)
        with pytest.raises(DIDError) as missing:
            await aresolve_did_web(_did_for(did_server, "missing"), url_for=_loopback)
        with pytest.raises(DIDError) as mismatch:
            await aresolve_did_web(_did_for(did_server, "mismatch"), url_for=_loopback)
        with pytest.raises(DIDError) as huge:
            await aresolve_did_web(_did_for(did_server, "streamed"), url_for=_loopback)
        local = await aresolve_did(P256_DID)
        return doc, again, missing.value.code, mismatch.value.code, huge.value.code, local

    doc, again, missing, mismatch, huge, local = asyncio.run(scenario())
    assert str(doc.id) == did and str(again.id) == did
    assert (missing, mismatch, huge) == ("did.not_found", "did.id_mismatch", "did.resolution_failed")
    assert str(local.id) == P256_DID


# -- robustness ----------------------------------------------------------------------------------

_did_like = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", max_size=70).map(
        lambda s: "did:key:z" + s),
    st.binary(max_size=60).map(lambda b: "did:key:z" + b58encode(b)),
    st.binary(max_size=40).map(lambda b: "did:key:z" + b58encode(b"\x80\x24" + b)),
    st.binary(max_size=40).map(lambda b: "did:key:z" + b58encode(b"\xed\x01" + b)),
)


@settings(max_examples=300, deadline=None)
@given(_did_like)
def test_key_from_did_key_random_input_only_raises_ssi_errors(value):
    try:
        key = key_from_did_key(value)
    except SSIError:
        return
    assert did_key_from_key(key) == value.split("#")[0]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120).map(lambda s: "did:jwk:" + s) | st.binary(max_size=120).map(
    lambda b: "did:jwk:" + b64url_encode(b)))
def test_key_from_did_jwk_random_input_only_raises_ssi_errors(value):
    try:
        key_from_did_jwk(value)
    except SSIError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.sampled_from(["did:web:issuer.example", "#k", "JsonWebKey2020", "Multikey", "z6Mk", "did:web:issuer.example#k"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "type", "controller", "publicKeyJwk", "publicKeyMultibase", "verificationMethod",
                         "authentication", "assertionMethod", "service", "@context", "kty", "crv", "x"]),
        children, max_size=5),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None)
@given(_json, st.booleans())
def test_parse_did_document_random_input_only_raises_ssi_errors(value, force_id):
    did = "did:web:issuer.example"
    if force_id and isinstance(value, dict):
        value = {**value, "id": did}
    try:
        doc = parse_did_document(value, did)
    except SSIError:
        return
    try:
        resolve_verification_key("#k", doc)
    except SSIError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_did_document_random_bytes_only_raise_ssi_errors(data):
    with pytest.raises(SSIError):
        parse_did_document(data, "did:web:issuer.example")
