"""OpenID for Verifiable Credential Issuance 1.0: message models, offer URIs and proof JWTs.

Messages we receive come from wallets and issuers in the field: unknown or legacy members
(``user_pin``, ``resource``, ``client_id`` in a token request...) are kept aside (``extra="allow"``)
and ignored, while the members we use are strictly typed and checked against the specification's
rules. Every failure is a :class:`~ssi.errors.MessageError` (``message.bad_<message>``) whose detail
names the offending fields but never echoes their values (codes, nonces and claims are secrets).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Self
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .encoding import json_dumps, json_loads
from .errors import EncodingError, JOSEError, MessageError
from .jose import DEFAULT_ALGORITHMS, Key, check_time_claims, parse_jws, sign_jws, verify_parsed
from .urls import is_loopback_host, split_secure_url  # noqa: F401 - is_loopback_host re-exported

PRE_AUTHORIZED_CODE_GRANT = "urn:ietf:params:oauth:grant-type:pre-authorized_code"
AUTHORIZATION_CODE_GRANT = "authorization_code"
CREDENTIAL_OFFER_SCHEME = "openid-credential-offer"
PROOF_JWT_TYP = "openid4vci-proof+jwt"

# OAuth 2.0 (RFC 6749 §5.2) token endpoint errors
INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
UNAUTHORIZED_CLIENT = "unauthorized_client"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
INVALID_SCOPE = "invalid_scope"
ACCESS_DENIED = "access_denied"
INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code. RFC 6750, credential endpoint with a bad access token
INVALID_DPOP_PROOF = "invalid_dpop_proof"  # RFC 9449
USE_DPOP_NONCE = "use_dpop_nonce"  # RFC 9449
AUTHORIZATION_PENDING = "authorization_pending"
SLOW_DOWN = "slow_down"
# OpenID4VCI 1.0 credential endpoint errors (§8.3.1.2)
INVALID_CREDENTIAL_REQUEST = "invalid_credential_request"
UNKNOWN_CREDENTIAL_CONFIGURATION = "unknown_credential_configuration"
UNKNOWN_CREDENTIAL_IDENTIFIER = "unknown_credential_identifier"
INVALID_PROOF = "invalid_proof"
INVALID_NONCE = "invalid_nonce"
INVALID_ENCRYPTION_PARAMETERS = "invalid_encryption_parameters"
CREDENTIAL_REQUEST_DENIED = "credential_request_denied"
# deferred credential endpoint (§9.3)
ISSUANCE_PENDING = "issuance_pending"
INVALID_TRANSACTION_ID = "invalid_transaction_id"
# notification endpoint (§11.3)
INVALID_NOTIFICATION_ID = "invalid_notification_id"
INVALID_NOTIFICATION_REQUEST = "invalid_notification_request"



# -- base model and URL rules --------------------------------------------------------------------

class Message(BaseModel):
    """Base of every message model: lenient about unknown members, strict about known ones."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    #: the error code raised by :meth:`parse` is ``message.bad_<error_name>``
    error_name: ClassVar[str] = "message"

    @classmethod
    def parse(cls, data: Any, *, allow_http_loopback: bool = False) -> Self:
        """Validate ``data`` (a JSON object) or raise ``MessageError('message.bad_<name>')``.

        ``allow_http_loopback`` admits ``http://127.0.0.1``-style URLs, for local development only.
        """
        if not isinstance(data, dict):
            raise MessageError(f"bad_{cls.error_name}", f"{cls.__name__} must be a JSON object")
        try:
            return cls.model_validate(data, context={"allow_http_loopback": allow_http_loopback})
        except ValidationError as exc:
            raise MessageError(f"bad_{cls.error_name}", _describe(cls.__name__, exc)) from None

    def to_json(self) -> dict[str, Any]:
        """The wire form: aliases (``pre-authorized_code``...), no nulls, unknown members kept."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _describe(name: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "(root)"
        parts.append(f"{where}: {error.get('type', 'invalid')}")
    return f"{name} is not valid ({'; '.join(parts)})"


def check_url(value: Any, *, allow_http_loopback: bool = False, allow_query: bool = True) -> str:
    """An absolute https URL without fragment (http only to loopback when allowed; see
    :mod:`ssi.urls`). Raises ``ValueError`` (an :class:`ssi.urls.UnsafeURL`)."""
    split_secure_url(value, allow_http_loopback=allow_http_loopback, allow_query=allow_query, allow_fragment=False)
    return value


def _urls(value: Any, info: ValidationInfo, *, allow_query: bool = True) -> Any:
    if value is None:
        return None
    allow = bool((info.context or {}).get("allow_http_loopback"))
    if isinstance(value, list):
        return [check_url(v, allow_http_loopback=allow, allow_query=allow_query) for v in value]
    return check_url(value, allow_http_loopback=allow, allow_query=allow_query)


def _identifier_url(value: Any, info: ValidationInfo) -> Any:
    # Credential Issuer / AS identifiers: https URLs with no query and no fragment
    return _urls(value, info, allow_query=False)


# -- credential offer (§4.1) ---------------------------------------------------------------------

class TxCode(Message):
    input_mode: Literal["numeric", "text"] | None = None
    length: StrictInt | None = Field(default=None, ge=1)
    description: StrictStr | None = Field(default=None, max_length=300)


class AuthorizationCodeGrant(Message):
    issuer_state: StrictStr | None = None
    authorization_server: StrictStr | None = None

    _check_as = field_validator("authorization_server")(_identifier_url)


class PreAuthorizedCodeGrant(Message):
    pre_authorized_code: StrictStr = Field(alias="pre-authorized_code", min_length=1)
    tx_code: TxCode | None = None
    authorization_server: StrictStr | None = None

    _check_as = field_validator("authorization_server")(_identifier_url)


class Grants(Message):
    authorization_code: AuthorizationCodeGrant | None = None
    pre_authorized_code: PreAuthorizedCodeGrant | None = Field(default=None, alias=PRE_AUTHORIZED_CODE_GRANT)


class CredentialOffer(Message):
    """A Credential Offer object (by value, or fetched from ``credential_offer_uri``)."""

    error_name: ClassVar[str] = "credential_offer"

    credential_issuer: StrictStr
    credential_configuration_ids: list[StrictStr] = Field(min_length=1)
    grants: Grants | None = None

    _check_issuer = field_validator("credential_issuer")(_identifier_url)

    @field_validator("credential_configuration_ids")
    @classmethod
    def _unique_ids(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not all(value):
            raise ValueError("credential_configuration_ids must be unique non-empty strings")
        return value


def parse_credential_offer_uri(uri: Any, *, allow_http_loopback: bool = False) -> tuple[CredentialOffer | None, str | None]:
    """Parse ``openid-credential-offer://?credential_offer=...`` (or ``credential_offer_uri=``), also
    as an https link. Returns ``(offer, None)`` or ``(None, uri_to_fetch)``; exactly one of the two
    parameters must be present, once."""
    if not isinstance(uri, str) or not uri:
        raise MessageError("bad_offer_uri", "the credential offer must be a URI string")
    try:
        parts = urlsplit(uri.strip())
        params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise MessageError("bad_offer_uri", "the credential offer URI is not a URI") from exc
    if parts.scheme not in (CREDENTIAL_OFFER_SCHEME, "haip-vci", "https") and not (
            parts.scheme == "http" and allow_http_loopback and is_loopback_host(parts.hostname or "")):
        raise MessageError("bad_offer_uri", "unsupported scheme for a credential offer")
    by_value = params.get("credential_offer")
    by_reference = params.get("credential_offer_uri")
    if bool(by_value) == bool(by_reference):
        raise MessageError("bad_offer_uri", "exactly one of credential_offer and credential_offer_uri is required")
    if by_value:
        if len(by_value) != 1:
            raise MessageError("bad_offer_uri", "credential_offer is repeated")
        try:
            data = json_loads(by_value[0])
        except EncodingError as exc:
            raise MessageError("bad_offer_uri", "credential_offer is not JSON") from exc
        return CredentialOffer.parse(data, allow_http_loopback=allow_http_loopback), None
    if len(by_reference) != 1:
        raise MessageError("bad_offer_uri", "credential_offer_uri is repeated")
    try:
        return None, check_url(by_reference[0], allow_http_loopback=allow_http_loopback)
    except ValueError as exc:
        raise MessageError("bad_offer_uri", f"credential_offer_uri {exc}") from exc


def build_credential_offer_uri(offer: CredentialOffer | Mapping[str, Any] | str, *,
                               scheme: str = "openid-credential-offer://") -> str:
    """The offer link: by value for a :class:`CredentialOffer` (or the JSON object of one, which is
    not validated again: for an issuer that built it itself), by reference for a URL string."""
    sep = "" if scheme.endswith("?") else "?"
    if isinstance(offer, str):
        return f"{scheme}{sep}credential_offer_uri={quote(offer, safe='')}"
    document = offer.to_json() if isinstance(offer, CredentialOffer) else offer
    return f"{scheme}{sep}credential_offer={quote(json_dumps(document), safe='')}"


# -- metadata (§12.2, RFC 8414) -----------------------------------------------------------------

class ProofTypeMetadata(Message):
    proof_signing_alg_values_supported: list[StrictStr] = Field(min_length=1)
    key_attestations_required: dict[str, Any] | None = None


class ClaimDescription(Message):
    path: list[StrictStr | StrictInt | None] = Field(min_length=1)
    mandatory: StrictBool | None = None
    display: list[dict[str, Any]] | None = None


class CredentialMetadata(Message):
    display: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    claims: list[ClaimDescription] | None = Field(default=None, min_length=1)


class CredentialConfiguration(Message):
    format: StrictStr = Field(min_length=1)
    scope: StrictStr | None = None
    vct: StrictStr | None = None
    doctype: StrictStr | None = None
    cryptographic_binding_methods_supported: list[StrictStr] | None = Field(default=None, min_length=1)
    credential_signing_alg_values_supported: list[StrictStr | StrictInt] | None = Field(default=None, min_length=1)
    proof_types_supported: dict[str, ProofTypeMetadata] | None = None
    credential_metadata: CredentialMetadata | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.format == "dc+sd-jwt" and not self.vct:
            raise ValueError("a dc+sd-jwt configuration needs vct")
        if self.cryptographic_binding_methods_supported and not self.proof_types_supported:
            raise ValueError("proof_types_supported is required with cryptographic_binding_methods_supported")
        if self.proof_types_supported is not None and not self.proof_types_supported:
            raise ValueError("proof_types_supported must not be empty")
        return self


class BatchCredentialIssuance(Message):
    batch_size: StrictInt = Field(ge=2)


class CredentialIssuerMetadata(Message):
    """``/.well-known/openid-credential-issuer``."""

    error_name: ClassVar[str] = "issuer_metadata"

    credential_issuer: StrictStr
    authorization_servers: list[StrictStr] | None = Field(default=None, min_length=1)
    credential_endpoint: StrictStr
    nonce_endpoint: StrictStr | None = None
    deferred_credential_endpoint: StrictStr | None = None
    notification_endpoint: StrictStr | None = None
    credential_response_encryption: dict[str, Any] | None = None
    credential_request_encryption: dict[str, Any] | None = None
    batch_credential_issuance: BatchCredentialIssuance | None = None
    display: list[dict[str, Any]] | None = None
    credential_configurations_supported: dict[str, CredentialConfiguration] = Field(min_length=1)

    _check_ids = field_validator("credential_issuer", "authorization_servers")(_identifier_url)
    _check_endpoints = field_validator("credential_endpoint", "nonce_endpoint", "deferred_credential_endpoint",
                                       "notification_endpoint")(_urls)

    def configuration(self, configuration_id: str) -> CredentialConfiguration:
        try:
            return self.credential_configurations_supported[configuration_id]
        except KeyError:
            raise MessageError("unknown_credential_configuration",
                               "the issuer does not offer that credential configuration") from None


class AuthorizationServerMetadata(Message):
    """RFC 8414 authorization server metadata, with the OpenID4VCI, PAR, PKCE and DPoP members."""

    error_name: ClassVar[str] = "as_metadata"

    issuer: StrictStr
    authorization_endpoint: StrictStr | None = None
    token_endpoint: StrictStr
    pushed_authorization_request_endpoint: StrictStr | None = None
    require_pushed_authorization_requests: StrictBool | None = None
    jwks_uri: StrictStr | None = None
    response_types_supported: list[StrictStr] | None = None
    grant_types_supported: list[StrictStr] | None = None
    code_challenge_methods_supported: list[StrictStr] | None = None
    dpop_signing_alg_values_supported: list[StrictStr] | None = None
    token_endpoint_auth_methods_supported: list[StrictStr] | None = None
    authorization_details_types_supported: list[StrictStr] | None = None
    pre_authorized_grant_anonymous_access_supported: StrictBool | None = Field(
        default=None, alias="pre-authorized_grant_anonymous_access_supported")

    _check_issuer = field_validator("issuer")(_identifier_url)
    _check_endpoints = field_validator("authorization_endpoint", "token_endpoint",
                                       "pushed_authorization_request_endpoint", "jwks_uri")(_urls)


# -- token endpoint (§6) --------------------------------------------------------------------------

class AuthorizationDetail(Message):
    type: Literal["openid_credential"]
    credential_configuration_id: StrictStr | None = None
    credential_identifiers: list[StrictStr] | None = Field(default=None, min_length=1)
    claims: list[dict[str, Any]] | None = None


class TokenRequest(Message):
    """Token request form fields for both grants (unknown fields such as ``user_pin`` are ignored)."""

    error_name: ClassVar[str] = "token_request"

    grant_type: Literal["authorization_code", "urn:ietf:params:oauth:grant-type:pre-authorized_code"]
    pre_authorized_code: StrictStr | None = Field(default=None, alias="pre-authorized_code", min_length=1)
    tx_code: StrictStr | None = None
    code: StrictStr | None = Field(default=None, min_length=1)
    redirect_uri: StrictStr | None = None
    code_verifier: StrictStr | None = Field(default=None, min_length=43, max_length=128)
    client_id: StrictStr | None = None
    authorization_details: list[AuthorizationDetail] | None = None

    @model_validator(mode="after")
    def _grant_fields(self) -> Self:
        if self.grant_type == PRE_AUTHORIZED_CODE_GRANT and not self.pre_authorized_code:
            raise ValueError("the pre-authorized code grant needs pre-authorized_code")
        if self.grant_type == AUTHORIZATION_CODE_GRANT and not self.code:
            raise ValueError("the authorization code grant needs code")
        return self

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> Self:
        """Parse ``application/x-www-form-urlencoded`` fields (``authorization_details`` is JSON)."""
        data = dict(form)
        if isinstance(data.get("authorization_details"), str):
            try:
                data["authorization_details"] = json_loads(data["authorization_details"])
            except EncodingError as exc:
                raise MessageError("bad_token_request", "authorization_details is not JSON") from exc
        return cls.parse(data)


class TokenResponse(Message):
    error_name: ClassVar[str] = "token_response"

    access_token: StrictStr = Field(min_length=1)
    token_type: StrictStr = Field(min_length=1)
    expires_in: StrictInt | None = Field(default=None, ge=0)
    refresh_token: StrictStr | None = None
    scope: StrictStr | None = None
    authorization_details: list[AuthorizationDetail] | None = None


class NonceResponse(Message):
    error_name: ClassVar[str] = "nonce_response"

    c_nonce: StrictStr = Field(min_length=1)


# -- credential endpoint (§8) ---------------------------------------------------------------------

class Proofs(Message):
    jwt: list[StrictStr] | None = Field(default=None, min_length=1)
    attestation: list[StrictStr] | None = Field(default=None, min_length=1)
    di_vp: list[dict[str, Any]] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one_type(self) -> Self:
        present = [name for name in ("jwt", "attestation", "di_vp") if getattr(self, name) is not None]
        present += list((self.model_extra or {}).keys())
        if len(present) != 1:
            raise ValueError("proofs must hold exactly one proof type")
        return self


class CredentialResponseEncryption(Message):
    jwk: dict[str, Any]
    enc: StrictStr
    zip: StrictStr | None = None


class CredentialRequest(Message):
    """Credential request: ``credential_identifier`` XOR ``credential_configuration_id``; ``proofs``.

    The pre-1.0 singular ``proof`` is accepted alone (converted to ``proofs``) for older wallets,
    and refused together with ``proofs``.
    """

    error_name: ClassVar[str] = "credential_request"

    credential_identifier: StrictStr | None = Field(default=None, min_length=1)
    credential_configuration_id: StrictStr | None = Field(default=None, min_length=1)
    proofs: Proofs | None = None
    credential_response_encryption: CredentialResponseEncryption | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_proof(cls, data: Any) -> Any:
        if isinstance(data, dict) and "proof" in data:
            if "proofs" in data:
                raise ValueError("proof and proofs must not both be present")
            proof = data["proof"]
            if not isinstance(proof, dict) or proof.get("proof_type") != "jwt" or not isinstance(proof.get("jwt"), str):
                raise ValueError("the legacy proof must be {proof_type: jwt, jwt: ...}")
            data = {k: v for k, v in data.items() if k != "proof"}
            data["proofs"] = {"jwt": [proof["jwt"]]}
        return data

    @model_validator(mode="after")
    def _one_identifier(self) -> Self:
        if (self.credential_identifier is None) == (self.credential_configuration_id is None):
            raise ValueError("exactly one of credential_identifier and credential_configuration_id")
        return self


class IssuedCredential(Message):
    credential: StrictStr | dict[str, Any]


class CredentialResponse(Message):
    """Immediate (``credentials``) or deferred (``transaction_id`` + ``interval``) response."""

    error_name: ClassVar[str] = "credential_response"

    credentials: list[IssuedCredential] | None = Field(default=None, min_length=1)
    transaction_id: StrictStr | None = Field(default=None, min_length=1)
    interval: StrictInt | None = Field(default=None, ge=1)
    notification_id: StrictStr | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.credentials is None) == (self.transaction_id is None):
            raise ValueError("exactly one of credentials and transaction_id")
        if self.transaction_id is not None and self.interval is None:
            raise ValueError("interval is required with transaction_id")
        if self.notification_id is not None and self.credentials is None:
            raise ValueError("notification_id only accompanies issued credentials")
        return self


class DeferredCredentialRequest(Message):
    error_name: ClassVar[str] = "deferred_credential_request"

    transaction_id: StrictStr = Field(min_length=1)
    credential_response_encryption: CredentialResponseEncryption | None = None


class NotificationRequest(Message):
    error_name: ClassVar[str] = "notification_request"

    notification_id: StrictStr = Field(min_length=1)
    event: Literal["credential_accepted", "credential_failure", "credential_deleted"]
    event_description: StrictStr | None = None

    @field_validator("event_description")
    @classmethod
    def _ascii(cls, value: str | None) -> str | None:
        # the specification limits it to printable ASCII without '"' and '\'
        if value is not None and any(not (0x20 <= ord(c) <= 0x7E) or c in '"\\' for c in value):
            raise ValueError("event_description must be printable ASCII without quote or backslash")
        return value


class OAuthError(Message):
    """An OAuth 2.0 error response body (token, credential, deferred, notification endpoints)."""

    error_name: ClassVar[str] = "oauth_error"

    error: StrictStr = Field(min_length=1)
    error_description: StrictStr | None = None
    error_uri: StrictStr | None = None


# -- proof of possession (§F.1 "jwt" proof type) --------------------------------------------------

#: Proof failures whose OAuth error is ``invalid_nonce`` (so the wallet fetches a fresh nonce);
#: every other ``message.proof_*`` code maps to ``invalid_proof``, a missing nonce included
#: (OpenID4VCI 1.0 §8.3.1.2: invalid_nonce is for a c_nonce present but not valid).
NONCE_PROOF_CODES = frozenset({"message.proof_bad_nonce"})


def proof_oauth_error(code: str) -> str:
    """The OpenID4VCI error code to answer for a ``verify_proof_jwt`` failure code."""
    return INVALID_NONCE if code in NONCE_PROOF_CODES else INVALID_PROOF


def build_proof_jwt(key: Key, *, audience: str, nonce: str | None, iat: int | None = None,
                    client_id: str | None = None) -> str:
    """A key proof (``typ: openid4vci-proof+jwt``) carrying the public key as ``jwk``."""
    header = {"typ": PROOF_JWT_TYP, "jwk": key.public_jwk(include_kid=False)}
    payload: dict[str, Any] = {"aud": audience, "iat": int(time.time()) if iat is None else iat}
    if nonce is not None:
        payload["nonce"] = nonce
    if client_id is not None:
        payload["iss"] = client_id
    return sign_jws(header, payload, key)


def _proof_time_error(code: str, detail: str) -> MessageError:
    """``check_time_claims`` codes for a key proof: ``proof_expired``, ``proof_not_yet_valid``,
    ``proof_bad_exp``, ``proof_bad_nbf``."""
    return MessageError(f"proof_{code}", f"the proof: {detail}")


def verify_proof_jwt(token: Any, *, audience: str, now: float | None = None, max_age: int = 300,
                     leeway: int = 30, algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
                     check_nonce: Callable[[str], bool] | None = None,
                     client_id: str | None = None) -> Key:
    """Verify a ``jwt`` key proof and return the holder's public key.

    ``check_nonce`` (when the issuer has a nonce endpoint) must return True for a valid, unused
    ``c_nonce`` — consuming it. Codes: ``message.proof_malformed``, ``proof_bad_typ``,
    ``proof_key_missing``, ``proof_key_ambiguous``, ``proof_private_key``, ``proof_bad_key``,
    ``proof_alg_not_allowed``, ``proof_bad_signature``, ``proof_bad_aud``, ``proof_bad_iss``,
    ``proof_missing_iat``, ``proof_stale``, ``proof_iat_in_future``, ``proof_expired``,
    ``proof_not_yet_valid``, ``proof_bad_exp``, ``proof_bad_nbf`` (an ``exp``/``nbf`` the proof carries,
    with ``leeway``), ``proof_missing_nonce``, ``proof_bad_nonce``. Map them to OAuth errors with
    :func:`proof_oauth_error`.
    """
    now = time.time() if now is None else now
    try:
        jws = parse_jws(token)
        payload = jws.json_payload()
    except JOSEError as exc:
        raise MessageError("proof_malformed", "the proof is not a compact JWS with a JSON payload") from exc
    header = jws.header
    if header.get("typ") != PROOF_JWT_TYP:
        raise MessageError("proof_bad_typ", "the proof's typ is not openid4vci-proof+jwt")
    key_members = [m for m in ("jwk", "kid", "x5c") if m in header]
    if not key_members:
        raise MessageError("proof_key_missing", "the proof names no key (jwk)")
    if len(key_members) > 1:
        raise MessageError("proof_key_ambiguous", "the proof carries more than one of jwk, kid, x5c")
    if key_members[0] != "jwk":
        raise MessageError("proof_key_missing", "only jwk-bound proofs are supported")
    jwk = header["jwk"]
    if not isinstance(jwk, dict):
        raise MessageError("proof_bad_key", "the jwk header is not an object")
    if any(m in jwk for m in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise MessageError("proof_private_key", "the jwk header contains private key material")
    if header["alg"] not in algorithms:
        raise MessageError("proof_alg_not_allowed", "the proof's algorithm is not allowed")
    try:
        key = Key.from_jwk(jwk, alg=header["alg"])
    except JOSEError as exc:
        raise MessageError("proof_bad_key", "the jwk header is not a usable public key") from exc
    try:
        verify_parsed(jws, key, algorithms)
    except JOSEError as exc:
        raise MessageError("proof_bad_signature", "the proof's signature does not verify") from exc
    aud = payload.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise MessageError("proof_bad_aud", "the proof is not addressed to this credential issuer")
    if client_id is not None and "iss" in payload and payload["iss"] != client_id:
        raise MessageError("proof_bad_iss", "the proof's iss is not the client")
    iat = payload.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise MessageError("proof_missing_iat", "the proof has no numeric iat")
    if iat > now + leeway:
        raise MessageError("proof_iat_in_future", "the proof was issued in the future")
    if iat < now - max_age:  # compared, not subtracted: 'iat' may be an integer too large for a float
        raise MessageError("proof_stale", "the proof is too old")
    # The proof is a JWT: an 'exp' or 'nbf' it carries binds too ('iat' has its own codes above).
    if "exp" in payload or "nbf" in payload:
        check_time_claims({name: payload[name] for name in ("exp", "nbf") if name in payload},
                          now=now, leeway=leeway, error=_proof_time_error)
    if check_nonce is not None:
        nonce = payload.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise MessageError("proof_missing_nonce", "the proof carries no nonce")
        if not check_nonce(nonce):
            raise MessageError("proof_bad_nonce", "the proof's nonce is unknown, used or expired")
    return key.public()
