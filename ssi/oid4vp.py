"""OpenID for Verifiable Presentations 1.0: requests, request objects, client identifiers, responses.

Trust outcome of :func:`verify_request_object` (the wallet side), stated once here:

* ``trusted``   — signed, the ``x5c`` chain leads to a configured relying-party anchor, and the
  certificate matches the Client Identifier (``x509_san_dns`` DNS SAN or ``x509_hash``). The wallet
  may show the verifier's certificate name.
* ``untrusted`` — only when the caller passes ``allow_untrusted=True``: the signature is valid with
  the leaf certificate and the certificate matches the Client Identifier, but the chain does not
  lead to an anchor. The wallet must warn ("unknown verifier") and show no name as verified. Any
  other certificate problem (expired, malformed, wrong key usage) is still a hard failure.
* ``unsigned``  — ``redirect_uri:`` requests, which the specification forbids signing; accepted
  only with ``allow_unsigned=True`` (development), and only when the response URI equals the
  Client Identifier's value.
"""

from __future__ import annotations

import binascii
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import Field, PrivateAttr, StrictStr, field_validator, model_validator

from . import x509 as ssi_x509
from .dcql import DCQLQuery, parse_dcql_query
from .encoding import b64url_json, json_loads
from .errors import EncodingError, JOSEError, MessageError, SSIError, X509Error
from .jose import DEFAULT_ALGORITHMS, Key, check_time_claims, parse_jws, sign_jws, verify_parsed
from .jwe import decrypt_jwe_json
from .oid4vci import Message, _urls, check_url, is_loopback_host

REQUEST_OBJECT_TYP = "oauth-authz-req+jwt"
REQUEST_OBJECT_MEDIA_TYPE = "application/oauth-authz-req+jwt"
SELF_ISSUED_AUDIENCE = "https://self-issued.me/v2"
WALLET_SCHEMES = ("openid4vp", "haip-vp")

#: Client Identifier Prefixes defined by OpenID4VP 1.0 §5.9.3 (``origin`` is reserved for the DC API).
CLIENT_ID_PREFIXES = frozenset({"redirect_uri", "openid_federation", "decentralized_identifier",
                                "verifier_attestation", "x509_san_dns", "x509_hash", "origin"})
PRE_REGISTERED = "pre-registered"

# OpenID4VP 1.0 §8.5 error codes (besides the OAuth ones in ssi.oid4vci)
VP_FORMATS_NOT_SUPPORTED = "vp_formats_not_supported"
INVALID_REQUEST_URI_METHOD = "invalid_request_uri_method"
INVALID_TRANSACTION_DATA = "invalid_transaction_data"
WALLET_UNAVAILABLE = "wallet_unavailable"

_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")  # fullmatch: '$' would admit a final "\n"

TrustOutcome = Literal["trusted", "untrusted", "unsigned"]


# -- client identifiers -------------------------------------------------------------------------

def parse_client_id(client_id: Any) -> tuple[str, str]:
    """Split a Client Identifier into ``(prefix, value)``.

    No ``:`` (or an unrecognised text before the first one, such as a legacy ``did:`` client id)
    means a pre-registered client: ``("pre-registered", client_id)``. ``origin:`` is refused, as the
    specification requires outside the Digital Credentials API.
    """
    if not isinstance(client_id, str) or not client_id:
        raise MessageError("bad_client_id", "client_id must be a non-empty string")
    prefix, sep, value = client_id.partition(":")
    if not sep or prefix not in CLIENT_ID_PREFIXES:
        return PRE_REGISTERED, client_id
    if prefix == "origin":
        raise MessageError("unsupported_client_id_prefix", "the origin prefix is reserved for the DC API")
    if not value:
        raise MessageError("bad_client_id", "the client_id has a prefix but no value")
    return prefix, value


# -- models -------------------------------------------------------------------------------------

def _url_safe(value: Any) -> Any:
    if value is not None and not _URL_SAFE.fullmatch(value):
        raise ValueError("only ASCII URL-safe characters are allowed")
    return value


class ClientMetadata(Message):
    error_name: ClassVar[str] = "client_metadata"

    jwks: dict[str, Any] | None = None
    vp_formats_supported: dict[str, Any] | None = None
    encrypted_response_enc_values_supported: list[StrictStr] | None = Field(default=None, min_length=1)

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        keys = value.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
            raise ValueError("jwks needs a non-empty keys array of objects")
        for k in keys:
            if any(m in k for m in ("d", "p", "q", "k")):
                raise ValueError("jwks must hold public keys only")
        return value

    def encryption_key(self) -> dict[str, Any] | None:
        """The first ECDH-ES P-256/P-384 key offered for response encryption (HAIP), if any.

        Only a key the response can be encrypted to: one :meth:`ssi.jose.Key.from_jwk` imports (a point
        on its curve, coordinates of the curve's length), as :func:`ssi.jwe.encrypt_jwe` will. A key that
        only looks right is passed over, so a request offering no other is refused when it is read
        (``missing_encryption_key``), not once the citizen approved it."""
        for k in (self.jwks or {}).get("keys", []):
            if k.get("kty") == "EC" and k.get("crv") in ("P-256", "P-384") and k.get("alg") == "ECDH-ES" \
                    and k.get("use", "enc") == "enc" and _usable_public_key(k):
                return k
        return None


def _usable_public_key(jwk: dict[str, Any]) -> bool:
    """Whether the members of ``jwk`` that ECDH-ES uses describe a valid public key."""
    try:
        Key.from_jwk({m: jwk[m] for m in ("kty", "crv", "x", "y") if m in jwk})
    except SSIError:
        return False
    return True


class RequestObject(Message):
    """The Authorization Request parameters carried in a (signed) Request Object."""

    error_name: ClassVar[str] = "request_object"

    client_id: StrictStr = Field(min_length=1)
    response_type: Literal["vp_token"]
    response_mode: Literal["direct_post", "direct_post.jwt"]
    response_uri: StrictStr
    nonce: StrictStr = Field(min_length=1)
    state: StrictStr | None = None
    dcql_query: dict[str, Any]
    client_metadata: ClientMetadata | None = None
    wallet_nonce: StrictStr | None = None
    iss: Any = None  # allowed by JAR, ignored as OpenID4VP requires
    aud: StrictStr | list[StrictStr] | None = None

    _query: DCQLQuery | None = PrivateAttr(default=None)
    _trust: TrustOutcome | None = PrivateAttr(default=None)
    _certificate: Any = PrivateAttr(default=None)

    _check_response_uri = field_validator("response_uri")(_urls)
    _check_chars = field_validator("nonce", "state")(_url_safe)

    @model_validator(mode="before")
    @classmethod
    def _forbidden(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "redirect_uri" in data:
                raise ValueError("redirect_uri must not be present with direct_post")
            if "scope" in data and "dcql_query" in data:
                raise ValueError("dcql_query and scope must not both be present")
            if "transaction_data" in data:
                # Wallets that do not support transaction data MUST reject such requests.
                raise ValueError("transaction_data is not supported")
        return data

    @model_validator(mode="after")
    def _query_is_valid(self) -> Self:
        try:
            self._query = parse_dcql_query(self.dcql_query, strict=False)
        except SSIError as exc:
            raise ValueError(f"dcql_query is not valid ({exc.code})") from None
        return self

    @property
    def query(self) -> DCQLQuery:
        """The parsed DCQL query."""
        if self._query is None:
            self._query = parse_dcql_query(self.dcql_query, strict=False)
        return self._query

    @property
    def trust(self) -> TrustOutcome | None:
        """``trusted``/``untrusted``/``unsigned`` after :func:`verify_request_object`, else None."""
        return self._trust

    @property
    def verifier_certificate(self) -> Any:
        """The leaf certificate that signed the request (``x509_*`` prefixes), or None."""
        return self._certificate


class AuthorizationRequest(Message):
    """The parameters of an ``openid4vp://`` (or ``haip-vp://``, or https) link."""

    error_name: ClassVar[str] = "authorization_request"

    client_id: StrictStr = Field(min_length=1)
    request_uri: StrictStr | None = None
    request_uri_method: Literal["get", "post"] | None = None
    request: StrictStr | None = None

    _check_request_uri = field_validator("request_uri")(_urls)

    @model_validator(mode="after")
    def _by_reference_rules(self) -> Self:
        if self.request_uri_method is not None and self.request_uri is None:
            raise ValueError("request_uri_method needs request_uri")
        if self.request_uri is not None and self.request is not None:
            raise ValueError("request and request_uri must not both be present")
        return self


def parse_authorization_request_uri(uri: Any, *, allow_http_loopback: bool = False) -> AuthorizationRequest:
    """Parse a wallet invocation link: ``openid4vp://``, ``haip-vp://`` or an https same-device URL."""
    if not isinstance(uri, str) or not uri:
        raise MessageError("bad_authorization_request", "the request must be a URI string")
    try:
        parts = urlsplit(uri.strip())
        params = parse_qs(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise MessageError("bad_authorization_request", "not a URI") from exc
    if parts.scheme not in (*WALLET_SCHEMES, "https") and not (
            parts.scheme == "http" and allow_http_loopback and is_loopback_host(parts.hostname or "")):
        raise MessageError("bad_authorization_request", "unsupported scheme for an authorization request")
    data: dict[str, Any] = {}
    for name, values in params.items():
        if len(values) != 1:
            raise MessageError("bad_authorization_request", "a request parameter is repeated")
        data[name] = values[0]
    if "request_uri_method" in data and data["request_uri_method"] not in ("get", "post"):
        raise MessageError(INVALID_REQUEST_URI_METHOD, "request_uri_method must be get or post")
    return AuthorizationRequest.parse(data, allow_http_loopback=allow_http_loopback)


def build_authorization_request_uri(scheme: str, client_id: str, request_uri: str,
                                    request_uri_method: Literal["get", "post"] | None = None) -> str:
    """``<scheme>?client_id=...&request_uri=...[&request_uri_method=post]`` (scheme such as
    ``openid4vp://``, ``haip-vp://`` or a wallet's https URL)."""
    if request_uri_method not in (None, "get", "post"):
        raise MessageError(INVALID_REQUEST_URI_METHOD, "request_uri_method must be get or post")
    sep = "" if scheme.endswith("?") else "?"
    uri = f"{scheme}{sep}client_id={quote(client_id, safe='')}&request_uri={quote(request_uri, safe='')}"
    if request_uri_method:
        uri += f"&request_uri_method={request_uri_method}"
    return uri


# -- request objects ----------------------------------------------------------------------------

def sign_request_object(claims: Mapping[str, Any], key: Key, x5c: list[str] | None) -> str:
    """Sign a Request Object (``typ: oauth-authz-req+jwt``) with the verifier's key and chain."""
    header: dict[str, Any] = {"typ": REQUEST_OBJECT_TYP}
    if x5c:
        header["x5c"] = list(x5c)
    elif key.kid:
        header["kid"] = key.kid
    return sign_jws(header, dict(claims), key)


def unsigned_request_object(claims: Mapping[str, Any]) -> str:
    """An unsigned Request Object (``alg: none``) for the ``redirect_uri:`` prefix in development."""
    return b64url_json({"alg": "none", "typ": REQUEST_OBJECT_TYP}) + "." + b64url_json(dict(claims)) + "."


def _leaf_certificate(x5c: Any) -> Any:
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        raise MessageError("missing_x5c", "the request object has no x5c chain")
    try:
        # ssi.x509's loader parses the whole certificate, so that every defect (a bad version byte,
        # malformed names or extensions) is a typed refusal here, not a cryptography exception later.
        return ssi_x509.load_der_certificate(binascii.a2b_base64(x5c[0].encode("ascii"), strict_mode=True))
    except (UnicodeEncodeError, binascii.Error, ValueError, X509Error) as exc:
        raise MessageError("bad_verifier_certificate", "the x5c leaf is not a DER certificate") from exc


def verify_request_object(token: Any, *, trust_anchors: list[Any], client_id: str, now: float | None = None,
                          algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS, allow_untrusted: bool = False,
                          allow_unsigned: bool = False, wallet_nonce: str | None = None,
                          allow_http_loopback: bool = False,
                          resolve_key: Callable[[str, str, dict[str, Any]], Key] | None = None) -> RequestObject:
    """Verify a Request Object fetched for the Authorization Request whose ``client_id`` was given.

    Implements the Client Identifier Prefix rules for ``x509_san_dns``, ``x509_hash`` and
    ``redirect_uri``; other prefixes need ``resolve_key(prefix, value, header) -> Key``. See the
    module docstring for the trust outcomes. Codes are ``message.*``.
    """
    now_ts = time.time() if now is None else now
    prefix, value = parse_client_id(client_id)
    try:
        jws = parse_jws(token)
        payload = jws.json_payload()
    except JOSEError as exc:
        raise MessageError("bad_request_object", "the request object is not a JWT") from exc
    header = jws.header
    if header.get("typ") != REQUEST_OBJECT_TYP:
        raise MessageError("bad_request_typ", "the request object's typ is not oauth-authz-req+jwt")
    if payload.get("client_id") != client_id:
        raise MessageError("client_id_mismatch", "the request object's client_id differs from the request's")

    trust: TrustOutcome
    certificate = None
    if header["alg"] == "none":
        if prefix != "redirect_uri" or not allow_unsigned:
            raise MessageError("unsigned_request_object", "unsigned request objects are only for redirect_uri in development")
        if jws.signature:
            raise MessageError("bad_request_object", "an unsigned request object has an empty signature")
        trust = "unsigned"
    elif prefix == "redirect_uri":
        raise MessageError("signed_redirect_uri", "redirect_uri requests cannot be signed")
    elif prefix in ("x509_san_dns", "x509_hash"):
        certificate = _leaf_certificate(header.get("x5c"))
        try:
            leaf_key = ssi_x509.certificate_key(certificate)
            verify_parsed(jws, leaf_key, algorithms)
        except (JOSEError, X509Error) as exc:
            raise MessageError("bad_request_signature", "the request object's signature does not verify") from exc
        if prefix == "x509_san_dns":
            if value.lower() not in (n.lower() for n in ssi_x509.san_dns_names(certificate)):
                raise MessageError("client_id_san_mismatch", "the certificate does not name the client_id host")
        elif ssi_x509.x509_hash(certificate) != value:
            raise MessageError("client_id_hash_mismatch", "the certificate hash is not the client_id")
        try:
            certificate = ssi_x509.verify_x5c(header["x5c"], trust_anchors,
                                              now=datetime.fromtimestamp(now_ts, UTC))
            trust = "trusted"
        except X509Error as exc:
            if exc.code != "x509.untrusted_chain" or not allow_untrusted:
                code = "untrusted_verifier" if exc.code == "x509.untrusted_chain" else "bad_verifier_certificate"
                raise MessageError(code, f"the verifier certificate is not accepted ({exc.code})") from exc
            trust = "untrusted"
    elif resolve_key is not None:
        try:
            verify_parsed(jws, resolve_key(prefix, value, header), algorithms)
        except JOSEError as exc:
            raise MessageError("bad_request_signature", "the request object's signature does not verify") from exc
        trust = "trusted"
    else:
        raise MessageError("unsupported_client_id_prefix", f"client id prefix '{prefix}' is not supported")

    try:
        check_time_claims(payload, now=now_ts, error=MessageError)
    except MessageError as exc:
        raise MessageError("request_expired" if exc.code == "message.expired" else exc.code, exc.detail) from None
    request = RequestObject.parse(payload, allow_http_loopback=allow_http_loopback)
    if wallet_nonce is not None and request.wallet_nonce != wallet_nonce:
        raise MessageError("wallet_nonce_mismatch", "the request object does not echo our wallet_nonce")
    if request.response_mode in ("direct_post", "direct_post.jwt"):
        response_host = (urlsplit(request.response_uri).hostname or "").lower()
        if prefix == "redirect_uri" and request.response_uri != value:
            raise MessageError("response_uri_mismatch", "the response_uri is not the client_id's URI")
        if prefix == "x509_san_dns" and response_host != value.lower().rstrip("."):
            raise MessageError("response_uri_mismatch", "the response_uri host is not the client_id host")
    if request.response_mode == "direct_post.jwt" and (request.client_metadata is None
                                                       or request.client_metadata.encryption_key() is None):
        raise MessageError("missing_encryption_key", "direct_post.jwt needs an ECDH-ES key in client_metadata.jwks")
    request._trust = trust
    request._certificate = certificate
    return request


# -- the response -------------------------------------------------------------------------------

class VPTokenResponse(Message):
    """A ``direct_post`` Authorization Response (or the decrypted ``direct_post.jwt`` payload)."""

    error_name: ClassVar[str] = "vp_token_response"

    vp_token: dict[str, list[StrictStr | dict[str, Any]]] | None = None
    state: StrictStr | None = None
    error: StrictStr | None = None
    error_description: StrictStr | None = None

    @field_validator("vp_token")
    @classmethod
    def _entries(cls, value: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("vp_token must not be empty")
        for presentations in value.values():
            if not presentations:
                raise ValueError("each vp_token entry needs at least one presentation")
        return value

    @model_validator(mode="after")
    def _success_xor_error(self) -> Self:
        if (self.vp_token is None) == (self.error is None):
            raise ValueError("exactly one of vp_token and error")
        return self

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> Self:
        """Parse the ``application/x-www-form-urlencoded`` fields (``vp_token`` is a JSON string)."""
        data = dict(form)
        if isinstance(data.get("vp_token"), str):
            try:
                data["vp_token"] = json_loads(data["vp_token"])
            except EncodingError as exc:
                raise MessageError("bad_vp_token_response", "vp_token is not JSON") from exc
        return cls.parse(data)


def parse_direct_post_jwt(form: Mapping[str, Any], key: Key, *,
                          encryptions: tuple[str, ...] = ("A128GCM", "A256GCM")) -> VPTokenResponse:
    """Decrypt the ``response`` field of a ``direct_post.jwt`` POST and parse its payload.

    An unencrypted error response (allowed when the wallet cannot encrypt) is parsed as such;
    an unencrypted ``vp_token`` is refused.
    """
    response = form.get("response")
    if response is None:
        if "vp_token" in form:
            raise MessageError("unencrypted_response", "direct_post.jwt responses must be encrypted")
        return VPTokenResponse.from_form(form)
    payload = decrypt_jwe_json(response, key, encryptions=encryptions)
    return VPTokenResponse.parse(payload)


__all__ = [
    "AuthorizationRequest", "ClientMetadata", "RequestObject", "VPTokenResponse", "build_authorization_request_uri",
    "check_url", "parse_authorization_request_uri", "parse_client_id", "parse_direct_post_jwt",
    "sign_request_object", "unsigned_request_object", "verify_request_object",
]
