"""Decentralized identifiers: did:key, did:jwk and did:web, resolved to ``pydid`` documents and keys.

* did:key (W3C CCG did-method-key): ``did:key:z<base58btc(multicodec varint ‖ public key)>`` with
  ``p256-pub`` 0x1200 / ``p384-pub`` 0x1201 (compressed SEC1 point) and ``ed25519-pub`` 0xed. Its
  document has one ``Multikey`` verification method ``did:key:z…#z…`` carrying ``publicKeyMultibase``
  (the spec's default ``publicKeyFormat``); no X25519 key-agreement key is derived.
* did:jwk: ``did:jwk:<base64url(UTF-8 JSON of a public JWK)>``; one ``JsonWebKey2020`` method ``#0``;
  ``use: sig`` drops ``keyAgreement``, ``use: enc`` keeps only it; private JWKs are refused.
* did:web: ``did:web:host[%3Aport][:path…]`` → ``https://host[:port]/.well-known/did.json`` or
  ``https://host[:port]/path…/did.json``. Fetching is sans-IO friendly: :func:`did_web_url` and
  :func:`parse_did_document` do no I/O, and the resolvers accept a client and a ``url_for`` mapping
  (so tests and sandboxes can serve documents from loopback without patching anything). The host
  is checked for syntax only (ASCII labels, so an internationalized name must be given punycoded):
  ``localhost`` and IPv4 literals (``did:web:127.0.0.1``, ``did:web:169.254.169.254``) pass, so a
  service resolving DIDs it was sent must apply its own outbound policy (no private or link-local
  addresses) to the URL, through its client or ``url_for``.

Error codes (:class:`~ssi.errors.DIDError`), stable:

``did.malformed``            not a syntactically valid DID / DID URL of the method at hand
``did.unsupported_method``   a method other than key, jwk, web
``did.unsupported_key``      a did:key multicodec or JWK key type we cannot use
``did.invalid_document``     a DID document that is not JSON / not a valid DID document
``did.id_mismatch``          the document's ``id`` is not the DID that was resolved
``did.not_found``            did:web answered 404
``did.resolution_failed``    did:web transport error, other HTTP status, redirect or oversize body
``did.key_not_found``        no verification method with that id, or one without usable key material
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pydid
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .encoding import b64url_decode, b64url_encode, json_dumps, json_loads
from .errors import DIDError, EncodingError, JOSEError
from .jose import Key

DID_CONTEXT = "https://www.w3.org/ns/did/v1"
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
JWS_2020_CONTEXT = "https://w3id.org/security/suites/jws-2020/v1"

#: Largest did:web document accepted; real documents are a few kilobytes.
MAX_DOCUMENT_BYTES = 256 * 1024

# multicodec code -> (JOSE alg, raw public key length)
_P256_PUB, _P384_PUB, _ED25519_PUB = 0x1200, 0x1201, 0xED
_MULTICODEC = {_P256_PUB: ("ES256", 33), _P384_PUB: ("ES384", 49), _ED25519_PUB: ("EdDSA", 32)}

# Every pattern is applied with fullmatch: '$' would also match before a final "\n".
# DID Core §3.1: method-specific-id = *( *idchar ":" ) 1*idchar, idchar = ALPHA / DIGIT / "." / "-" / "_" / pct-encoded
_IDCHAR = r"(?:[A-Za-z0-9._\-]|%[0-9A-Fa-f]{2})"
_DID_RE = re.compile(rf"did:([a-z0-9]+):((?:{_IDCHAR}*:)*{_IDCHAR}+)")
_HOST_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*"
                      r"(?::[0-9]{1,5})?")
_FRAGMENT_RE = re.compile(r"[A-Za-z0-9._~\-:@!$&'()*+,;=/?%]+")


# -- base58btc and multicodec --------------------------------------------------------------------

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: index for index, char in enumerate(_B58_ALPHABET)}


def b58encode(data: bytes) -> str:
    """Bitcoin base58 (the ``z`` multibase); leading zero bytes become leading ``1``s."""
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rest = divmod(number, 58)
        out.append(_B58_ALPHABET[rest])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; raises ``did.malformed`` for characters outside the alphabet."""
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise DIDError("malformed", "not base58btc")
        number = number * 58 + _B58_INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes) -> tuple[int, int]:
    value = 0
    for index, byte in enumerate(data[:9]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if index and byte == 0:  # the multiformats varint must be minimal
                raise DIDError("malformed", "non-minimal multicodec varint")
            return value, index + 1
    raise DIDError("malformed", "truncated multicodec varint")


def multikey_from_key(key: Key) -> str:
    """The ``publicKeyMultibase`` value (``z`` + base58btc of multicodec ‖ key) for a public key."""
    public = key.public_key
    if isinstance(public, ec.EllipticCurvePublicKey) and key.alg in ("ES256", "ES384"):
        code = _P256_PUB if key.alg == "ES256" else _P384_PUB
        raw = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    elif isinstance(public, ed25519.Ed25519PublicKey):
        code, raw = _ED25519_PUB, public.public_bytes_raw()
    else:
        raise DIDError("unsupported_key", f"no multicodec for {key.alg} keys here")
    return "z" + b58encode(_varint(code) + raw)


def key_from_multikey(value: Any) -> Key:
    """A public :class:`~ssi.jose.Key` from a ``publicKeyMultibase`` value."""
    if not isinstance(value, str) or not value.startswith("z") or len(value) > 200:
        raise DIDError("malformed", "a multikey is a base58btc ('z') multibase string")
    data = b58decode(value[1:])
    code, offset = _read_varint(data)
    if code not in _MULTICODEC:
        raise DIDError("unsupported_key", "unsupported multicodec key type")
    alg, length = _MULTICODEC[code]
    raw = data[offset:]
    if len(raw) != length:
        raise DIDError("malformed", "the multikey has the wrong length for its key type")
    try:
        if code == _ED25519_PUB:
            return Key.from_cryptography(ed25519.Ed25519PublicKey.from_public_bytes(raw), alg=alg)
        curve = ec.SECP256R1() if code == _P256_PUB else ec.SECP384R1()
        return Key.from_cryptography(ec.EllipticCurvePublicKey.from_encoded_point(curve, raw), alg=alg)
    except (ValueError, JOSEError) as exc:
        raise DIDError("malformed", "the multikey is not a valid point on its curve") from exc


# -- DID syntax ----------------------------------------------------------------------------------

def _split_did(did: Any) -> tuple[str, str]:
    if not isinstance(did, str) or len(did) > 8192:
        raise DIDError("malformed", "a DID is a string")
    match = _DID_RE.fullmatch(did)
    if not match:
        raise DIDError("malformed", "not a syntactically valid DID")
    return match.group(1), match.group(2)


def _expect_method(did: Any, method: str) -> str:
    found, specific = _split_did(did)
    if found != method:
        raise DIDError("malformed", f"not a did:{method} DID")
    return specific


def did_method(did: str) -> str:
    """The method name of a DID (``key``, ``jwk``, ``web``…), validating the DID's syntax."""
    return _split_did(did)[0]


def _did_of(did_url: str) -> str:
    return did_url.split("#", 1)[0].split("?", 1)[0]


# -- did:key -------------------------------------------------------------------------------------

def did_key_from_key(key: Key) -> str:
    """``did:key`` for a P-256, P-384 or Ed25519 public key."""
    return "did:key:" + multikey_from_key(key)


def key_from_did_key(did: Any) -> Key:
    """The public key a ``did:key`` (or a DID URL on it) encodes, ``kid`` set to its method id."""
    if isinstance(did, str):
        did = _did_of(did)
    specific = _expect_method(did, "key")
    key = key_from_multikey(specific)
    key.kid = f"{did}#{specific}"
    return key


def resolve_did_key(did: str) -> pydid.DIDDocument:
    """The did:key DID document: one ``Multikey`` method ``did:key:z…#z…`` in every relationship
    except ``keyAgreement`` (no X25519 derivation)."""
    did = _did_of(did) if isinstance(did, str) else did
    key = key_from_did_key(did)
    specific = did.split(":", 2)[2]
    vm_id = f"{did}#{specific}"
    document = {
        "@context": [DID_CONTEXT, MULTIKEY_CONTEXT],
        "id": did,
        "verificationMethod": [{"id": vm_id, "type": "Multikey", "controller": did,
                                "publicKeyMultibase": multikey_from_key(key)}],
        "authentication": [vm_id],
        "assertionMethod": [vm_id],
        "capabilityInvocation": [vm_id],
        "capabilityDelegation": [vm_id],
    }
    return _deserialize(document)


# -- did:jwk -------------------------------------------------------------------------------------

def did_jwk_from_key(key: Key) -> str:
    """``did:jwk`` for a public key: its minimal public JWK (members sorted, compact) base64url-encoded.

    Sorting makes the DID deterministic for a key, as in the method specification's examples.
    """
    jwk = key.public_jwk(include_kid=False)
    return "did:jwk:" + b64url_encode(json_dumps({name: jwk[name] for name in sorted(jwk)}).encode("utf-8"))


def _jwk_of_did_jwk(did: Any) -> dict[str, Any]:
    specific = _expect_method(did, "jwk")
    try:
        jwk = json_loads(b64url_decode(specific))
    except EncodingError as exc:
        raise DIDError("malformed", "did:jwk does not hold base64url JSON") from exc
    if not isinstance(jwk, dict):
        raise DIDError("malformed", "did:jwk does not hold a JSON object")
    if any(name in jwk for name in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise DIDError("malformed", "did:jwk must never hold private key material")
    return jwk


def key_from_did_jwk(did: Any) -> Key:
    """The public key of a ``did:jwk`` (or a DID URL on it), ``kid`` set to ``did:jwk:…#0``."""
    if isinstance(did, str):
        did = _did_of(did)
    jwk = _jwk_of_did_jwk(did)
    try:
        key = Key.from_jwk(jwk)
    except JOSEError as exc:
        raise DIDError("unsupported_key", "did:jwk holds no usable public key") from exc
    key.kid = f"{did}#0"
    return key


def resolve_did_jwk(did: str) -> pydid.DIDDocument:
    """The did:jwk DID document (``JsonWebKey2020`` method ``#0``; ``use`` selects relationships)."""
    did = _did_of(did) if isinstance(did, str) else did
    jwk = _jwk_of_did_jwk(did)
    use = jwk.get("use")
    if use != "enc":
        key_from_did_jwk(did)  # a signing key must be one we can verify with
    vm_id = f"{did}#0"
    document: dict[str, Any] = {
        "@context": [DID_CONTEXT, JWS_2020_CONTEXT],
        "id": did,
        "verificationMethod": [{"id": vm_id, "type": "JsonWebKey2020", "controller": did, "publicKeyJwk": jwk}],
    }
    if use != "enc":
        for relationship in ("assertionMethod", "authentication", "capabilityInvocation", "capabilityDelegation"):
            document[relationship] = [vm_id]
    if use != "sig":
        document["keyAgreement"] = [vm_id]
    return _deserialize(document)


# -- did:web -------------------------------------------------------------------------------------

def did_web_url(did: str) -> str:
    """The https URL of a did:web DID document (did:web method specification, "Read")."""
    did = _did_of(did) if isinstance(did, str) else did
    specific = _expect_method(did, "web")
    segments = specific.split(":")
    host = unquote(segments[0])
    if not _HOST_RE.fullmatch(host):
        raise DIDError("malformed", "did:web does not name a valid host")
    path = []
    for raw in segments[1:]:
        segment = unquote(raw)
        if segment in ("", ".", "..") or "/" in segment or "?" in segment or "#" in segment:
            raise DIDError("malformed", "did:web has an invalid path segment")
        path.append(quote(segment, safe="-._~!$&'()*+,;=:@"))
    if not path:
        return f"https://{host.lower()}/.well-known/did.json"
    return f"https://{host.lower()}/{'/'.join(path)}/did.json"


def did_web_from_url(url: str) -> str:
    """The did:web DID whose document lives at ``url`` (an origin, a path, or the document URL
    itself), e.g. to name our own services; the inverse of :func:`did_web_url`."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise DIDError("malformed", "not a URL") from exc
    if parsed.scheme != "https" or not parsed.host:
        raise DIDError("malformed", "did:web documents are served over https")
    host = parsed.host + (f"%3A{parsed.port}" if parsed.port else "")
    path = [part for part in parsed.path.split("/") if part]
    if path[-1:] == ["did.json"]:
        path.pop()
    if path == [".well-known"]:
        path = []
    did = ":".join(["did:web", host, *(quote(part, safe="") for part in path)])
    did_web_url(did)
    return did


def parse_did_document(data: bytes | dict[str, Any], expected_did: str) -> pydid.DIDDocument:
    """Validate a fetched DID document: strict JSON, a valid document, ``id`` equal to the DID."""
    if isinstance(data, bytes | bytearray):
        try:
            value = json_loads(bytes(data))
        except EncodingError as exc:
            raise DIDError("invalid_document", "the DID document is not valid JSON") from exc
    else:
        value = data
    if not isinstance(value, dict):
        raise DIDError("invalid_document", "the DID document is not a JSON object")
    if value.get("id") != expected_did:
        raise DIDError("id_mismatch", "the DID document's id is not the resolved DID")
    return _deserialize(value)


_RELATIONSHIPS = ("authentication", "assertionMethod", "keyAgreement", "capabilityInvocation", "capabilityDelegation")


def _check_shape(value: dict[str, Any]) -> None:
    # pydid's validators assume the DID Core shapes and fail with AttributeError & co. otherwise;
    # checking the shapes first gives a clear refusal for the common cases.
    methods = value.get("verificationMethod", [])
    if not isinstance(methods, list) or not all(isinstance(m, dict) for m in methods):
        raise DIDError("invalid_document", "verificationMethod must be a list of objects")
    for name in _RELATIONSHIPS:
        entries = value.get(name, [])
        if not isinstance(entries, list) or not all(isinstance(e, str | dict) for e in entries):
            raise DIDError("invalid_document", f"{name} must be a list of references or methods")
    services = value.get("service", [])
    if not isinstance(services, list) or not all(isinstance(e, dict) for e in services):
        raise DIDError("invalid_document", "service must be a list of objects")


def _deserialize(value: dict[str, Any]) -> pydid.DIDDocument:
    _check_shape(value)
    try:
        return pydid.DIDDocument.deserialize(value)
    except (ValueError, TypeError, AttributeError, KeyError, pydid.DIDError, pydid.DIDDocumentError) as exc:
        # AttributeError/KeyError: pydid's validators on shapes the check above does not foresee.
        raise DIDError("invalid_document", "not a valid DID document") from exc


def _check_response(status: int, headers: httpx.Headers) -> None:
    if status == 404 or status == 410:
        raise DIDError("not_found", f"the DID document does not exist (HTTP {status})")
    if status != 200:
        raise DIDError("resolution_failed", f"the DID document could not be fetched (HTTP {status})")
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_DOCUMENT_BYTES:
        raise DIDError("resolution_failed", "the DID document is too large")


def _append_capped(body: bytearray, chunk: bytes) -> None:
    body.extend(chunk)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise DIDError("resolution_failed", "the DID document is too large")


def resolve_did_web(did: str, *, client: httpx.Client | None = None, timeout: float = 5.0,
                    url_for: Callable[[str], str] | None = None) -> pydid.DIDDocument:
    """Fetch and validate a did:web document.

    ``url_for`` maps the DID to the URL to fetch (default :func:`did_web_url`); redirects are not
    followed, as the method binds the document to the DID's host.
    """
    did = _did_of(did) if isinstance(did, str) else did
    url = (url_for or did_web_url)(did)
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    body = bytearray()
    try:
        with http.stream("GET", url, headers={"Accept": "application/did+json, application/json"},
                         follow_redirects=False) as response:
            _check_response(response.status_code, response.headers)
            for chunk in response.iter_bytes():
                _append_capped(body, chunk)
    except httpx.InvalidURL as exc:  # not an HTTPError: a url_for gave a URL httpx refuses
        raise DIDError("malformed", "the DID document URL is not a valid URL") from exc
    except httpx.HTTPError as exc:
        raise DIDError("resolution_failed", "the DID document could not be fetched") from exc
    finally:
        if own:
            http.close()
    return parse_did_document(bytes(body), did)


async def aresolve_did_web(did: str, *, client: httpx.AsyncClient | None = None, timeout: float = 5.0,
                           url_for: Callable[[str], str] | None = None) -> pydid.DIDDocument:
    """Asynchronous :func:`resolve_did_web`."""
    did = _did_of(did) if isinstance(did, str) else did
    url = (url_for or did_web_url)(did)
    own = client is None
    http = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
    body = bytearray()
    try:
        async with http.stream("GET", url, headers={"Accept": "application/did+json, application/json"},
                               follow_redirects=False) as response:
            _check_response(response.status_code, response.headers)
            async for chunk in response.aiter_bytes():
                _append_capped(body, chunk)
    except httpx.InvalidURL as exc:  # not an HTTPError: a url_for gave a URL httpx refuses
        raise DIDError("malformed", "the DID document URL is not a valid URL") from exc
    except httpx.HTTPError as exc:
        raise DIDError("resolution_failed", "the DID document could not be fetched") from exc
    finally:
        if own:
            await http.aclose()
    return parse_did_document(bytes(body), did)


def did_web_document(did: str, keys: Sequence[Key]) -> dict[str, Any]:
    """A did:web document for our own issuers/verifiers: one ``JsonWebKey2020`` method per key
    (fragment = the key's ``kid`` when it is a plain fragment, else its RFC 7638 thumbprint), each
    listed under ``assertionMethod`` and ``authentication``."""
    did_web_url(did)  # validates that this is a usable did:web
    if not keys:
        raise DIDError("key_not_found", "a DID document needs at least one key")
    methods, ids = [], []
    for key in keys:
        fragment = key.kid or ""
        if fragment.startswith(did + "#"):
            fragment = fragment[len(did) + 1:]
        if not fragment or not _FRAGMENT_RE.fullmatch(fragment) or "#" in fragment:
            fragment = key.thumbprint()
        vm_id = f"{did}#{fragment}"
        if vm_id in ids:
            raise DIDError("malformed", "two keys would get the same verification method id")
        ids.append(vm_id)
        methods.append({"id": vm_id, "type": "JsonWebKey2020", "controller": did,
                        "publicKeyJwk": key.public_jwk(include_kid=False)})
    return {"@context": [DID_CONTEXT, JWS_2020_CONTEXT], "id": did, "verificationMethod": methods,
            "assertionMethod": list(ids), "authentication": list(ids)}


# -- dispatch and key lookup ---------------------------------------------------------------------

def resolve_did(did: str, **kw: Any) -> pydid.DIDDocument:
    """Resolve any supported DID (a fragment, if present, is ignored); ``kw`` go to did:web."""
    method = did_method(_did_of(did) if isinstance(did, str) else did)
    if method == "key":
        return resolve_did_key(did)
    if method == "jwk":
        return resolve_did_jwk(did)
    if method == "web":
        return resolve_did_web(did, **kw)
    raise DIDError("unsupported_method", f"DID method '{method}' is not supported")


async def aresolve_did(did: str, **kw: Any) -> pydid.DIDDocument:
    """Asynchronous :func:`resolve_did` (did:key and did:jwk need no I/O)."""
    method = did_method(_did_of(did) if isinstance(did, str) else did)
    if method == "web":
        return await aresolve_did_web(did, **kw)
    return resolve_did(did)


def _methods(doc: pydid.DIDDocument) -> list[Any]:
    found = list(doc.verification_method or [])
    for relationship in (doc.authentication, doc.assertion_method, doc.key_agreement,
                         doc.capability_invocation, doc.capability_delegation):
        found += [item for item in relationship or [] if isinstance(item, pydid.VerificationMethod)]
    return found


def resolve_verification_key(did_url: str, doc: pydid.DIDDocument) -> Key:
    """The public key of the verification method ``did_url`` (``did:…#frag`` or ``#frag``) in ``doc``.

    The method must carry ``publicKeyJwk`` (public only) or ``publicKeyMultibase``; the returned
    key's ``kid`` is the method's absolute id.
    """
    if not isinstance(did_url, str) or "#" not in did_url:
        raise DIDError("malformed", "a verification method reference is 'did:…#fragment' or '#fragment'")
    base, fragment = did_url.split("#", 1)
    doc_id = str(doc.id)
    if base and base != doc_id:
        raise DIDError("key_not_found", "the verification method belongs to another DID")
    wanted = f"{doc_id}#{fragment}"
    for method in _methods(doc):
        method_id = str(method.id)
        if (doc_id + method_id if method_id.startswith("#") else method_id) != wanted:
            continue
        jwk = getattr(method, "public_key_jwk", None)
        multibase = getattr(method, "public_key_multibase", None)
        try:
            if isinstance(jwk, dict):
                if "d" in jwk:
                    raise DIDError("key_not_found", "the verification method exposes private key material")
                key = Key.from_jwk(jwk)
            elif isinstance(multibase, str):
                key = key_from_multikey(multibase)
            else:
                raise DIDError("key_not_found", "the verification method has no publicKeyJwk/publicKeyMultibase")
        except JOSEError as exc:
            raise DIDError("key_not_found", "the verification method's key is not usable") from exc
        key.kid = wanted
        return key
    raise DIDError("key_not_found", "no verification method with that id")


def resolve_key(did_url: str, **kw: Any) -> Key:
    """Resolve the DID of ``did_url`` and return the key of its verification method.

    A bare did:key / did:jwk (no fragment) names its only key; ``kw`` go to did:web resolution.
    """
    if not isinstance(did_url, str):
        raise DIDError("malformed", "a DID URL is a string")
    did = _did_of(did_url)
    if "#" not in did_url:
        method = did_method(did)
        if method == "key":
            return key_from_did_key(did)
        if method == "jwk":
            return key_from_did_jwk(did)
        raise DIDError("malformed", "a did:web key reference needs a fragment")
    return resolve_verification_key(did_url, resolve_did(did, **kw))
