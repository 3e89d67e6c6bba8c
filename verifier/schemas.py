"""Request and response models of the agency API (Pydantic v2, shown in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ssi.dcql import (
    SD_JWT_VC_FORMAT,
    SUPPORTED_AUTHORITY_TYPES,
    SUPPORTED_FORMATS,
    DCQLQuery,
    parse_dcql_query,
)
from ssi.encoding import b64url_decode
from ssi.errors import DisplayNameError, SSIError
from ssi.names import DisplayName, display_text
from ssi.oid4vci import check_url

EXAMPLE_QUERY: dict[str, Any] = {
    "credentials": [{
        "id": "tax",
        "format": "dc+sd-jwt",
        "meta": {"vct_values": ["https://issuer.example.cat/credentials/tax-compliance"]},
        "claims": [{"path": ["nif"]}, {"path": ["complianceStatus"], "values": ["POSITIVE"]}],
    }]
}


class TrustedIssuer(BaseModel):
    """Issuers accepted for one credential type."""

    model_config = ConfigDict(extra="forbid")

    vct: str = Field(min_length=1, max_length=500, description="The credential type (`vct`) this rule is for.")
    issuers: list[str] | None = Field(
        default=None, max_length=50,
        description="Accepted `iss` values (credential issuer identifiers, such as "
                    "`https://issuer.example.cat/t/aoc-tax`). Required outside development mode: null (or left "
                    "out) accepts any issuer whose `x5c` chain leads to a trust anchor, and a template or request "
                    "with such a rule is refused with 400 `invalid_request` unless the verifier runs in `dev_mode`.")
    metadata: bool = Field(
        default=False,
        description="Also find the listed issuers' keys through JWT VC Issuer Metadata "
                    "(`/.well-known/jwt-vc-issuer`) when a credential carries no `x5c`.")

    @model_validator(mode="after")
    def _metadata_needs_issuers(self) -> TrustedIssuer:
        if self.metadata and not self.issuers:
            raise ValueError("metadata resolution needs an explicit issuers list")
        return self


UNSUPPORTED_FORMAT = (f"a credential query's format must be {SD_JWT_VC_FORMAT!r}: this verifier checks SD-JWT VCs "
                      "only (not mso_mdoc, jwt_vc_json or others)")
AUTHORITY_TYPE_UNSUPPORTED = "a trusted_authorities type other than 'aki' cannot be enforced by this verifier"
#: The reason a stored template fails :func:`unenforceable_authority` (verifier.routes.agency), whichever
#: of the two rules above it breaks.
UNENFORCEABLE_AUTHORITY = (f"this verifier checks only credential queries of format {SD_JWT_VC_FORMAT!r} whose "
                           "trusted_authorities, if any, are of type 'aki'")


def unsupported_format(query: DCQLQuery) -> str | None:
    """The id of a Credential Query of a format the verifier cannot check (it verifies SD-JWT VCs
    only: an answer would be an SD-JWT VC passed off as, say, an mdoc), or ``None``."""
    for cq in query.credentials:
        if cq.format not in SUPPORTED_FORMATS:
            return cq.id
    return None


def unenforceable_authority(query: DCQLQuery) -> str | None:
    """The id of a Credential Query the verifier cannot enforce, or ``None``: one of a format it does
    not check (:func:`unsupported_format`) or naming a ``trusted_authorities`` type it cannot check
    (a restriction announced to wallets and never enforced). Stored templates are checked with this
    when a request is made from them, with :data:`UNENFORCEABLE_AUTHORITY` as the reason."""
    qid = unsupported_format(query)
    if qid is not None:
        return qid
    for cq in query.credentials:
        if any(authority.type not in SUPPORTED_AUTHORITY_TYPES for authority in cq.trusted_authorities or ()):
            return cq.id
    return None


def _check_query(value: dict[str, Any]) -> dict[str, Any]:
    # PydanticCustomError, unlike ValueError, reaches the agency's error description: these texts
    # carry a stable code and never the input.
    try:
        query = parse_dcql_query(value, strict=True)
        if unsupported_format(query) is not None:
            raise PydanticCustomError("dcql_query", UNSUPPORTED_FORMAT)
        if unenforceable_authority(query) is not None:
            raise PydanticCustomError("dcql_query", AUTHORITY_TYPE_UNSUPPORTED)
        for cq in query.credentials:
            for authority in cq.trusted_authorities or ():
                for aki in authority.values:
                    b64url_decode(aki)
    except SSIError as exc:
        raise PydanticCustomError("dcql_query", "dcql_query is not valid ({code})", {"code": exc.code}) from None
    return value


PURPOSE_LANGUAGES = ("ca", "es", "en")


def purpose_problem(purpose: Any) -> str | None:
    """Why a purpose (texts by language) cannot be shown to citizens, or ``None``: a text holding a
    control character (a line break, tab, ESC, C1, U+2028/U+2029 or a bidirectional control such as
    U+202E, which makes a consent screen read otherwise than what the agency stored), or with nothing
    to read (:func:`ssi.names.display_text`). Never quotes the text. Checked when a template or an ad
    hoc request is made, and when a request is made from a template stored before this rule."""
    if not isinstance(purpose, dict) or not purpose:
        return "purpose is not texts by language"
    for lang, text in purpose.items():
        where = f"the {lang} text" if lang in PURPOSE_LANGUAGES else "a text"
        if not isinstance(text, str):
            return f"{where} is not a string"
        try:
            display_text(text, where)
        except DisplayNameError as exc:
            return exc.detail
    return None


def _check_purpose(value: dict[str, str]) -> dict[str, str]:
    # Custom error types: their fixed texts (a language at most, never the text) reach the agency,
    # where a ValueError's would be replaced by "invalid value" (service_kit.errors).
    if not value or not set(value) <= set(PURPOSE_LANGUAGES):
        raise PydanticCustomError("purpose", "purpose needs texts keyed by ca, es and/or en")
    if any(not isinstance(t, str) or len(t) > 500 for t in value.values()):
        raise PydanticCustomError("purpose", "each purpose text is 1-500 characters")
    problem = purpose_problem(value)  # a blank text too: it has nothing to read
    if problem is not None:
        raise PydanticCustomError("purpose", problem)
    return value


class TemplateIn(BaseModel):
    """A request template: what to ask, why, from whom, and how long to keep the answer."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "grant-application",
        "dcql_query": EXAMPLE_QUERY,
        "purpose": {"ca": "Sol·licitud d'ajut", "es": "Solicitud de ayuda", "en": "Grant application"},
        "trusted_issuers": [{"vct": "https://issuer.example.cat/credentials/tax-compliance",
                             "issuers": ["https://issuer.example.cat/t/aoc-tax"]}],
        "retention_seconds": 86400,
    }]})

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$", description="Unique per agency.")
    dcql_query: dict[str, Any] = Field(description="The DCQL query (OpenID4VP 1.0 §6).")
    purpose: dict[str, str] = Field(description="Why the agency asks, in ca/es/en (shown by wallets and the desk): "
                                                "1-500 characters each, one line, no control characters (line "
                                                "breaks, tabs, C1 or bidirectional controls).")
    trusted_issuers: list[TrustedIssuer] = Field(min_length=1, max_length=50,
                                                 description="Issuers accepted per credential type.")
    anchors_pem: list[str] = Field(default_factory=list, max_length=20,
                                   description="Extra PEM trust anchors for this template's issuers.")
    retention_seconds: int = Field(default=86_400, ge=0, le=31_536_000,
                                   description="How long disclosed claims are kept after the answer.")
    response_mode: Literal["direct_post", "direct_post.jwt"] = Field(
        default="direct_post.jwt", description="How wallets answer: encrypted (`direct_post.jwt`, HAIP) or plain.")

    _q = field_validator("dcql_query")(_check_query)
    _p = field_validator("purpose")(_check_purpose)


class TemplateOut(TemplateIn):
    """A stored template."""

    model_config = ConfigDict(extra="forbid")

    # Shown as stored: a template kept from before a rule tightened (a purpose with a control
    # character, a query of a format now refused) is listed, read and replaced, never a 500. Making a
    # request from it is refused instead (verifier.routes.agency); JSON escapes whatever it holds.
    _q = field_validator("dcql_query")(lambda v: v)
    _p = field_validator("purpose")(lambda v: v)

    id: str
    created_at: str
    updated_at: str


class RequestIn(BaseModel):
    """Create a presentation request from a template (``template``) or ad hoc (``dcql_query`` & co)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"template": "grant-application", "expires_in": 300, "webhook_url": "https://agency.example/hooks/vp"}]})

    template: str | None = Field(default=None, max_length=100, description="Name of one of the agency's templates.")
    dcql_query: dict[str, Any] | None = Field(default=None, description="Ad hoc: the DCQL query.")
    purpose: dict[str, str] | None = Field(default=None, description="Ad hoc: the purpose in ca/es/en, as a "
                                                                     "template's.")
    trusted_issuers: list[TrustedIssuer] | None = Field(default=None, max_length=50,
                                                        description="Ad hoc: accepted issuers per type.")
    anchors_pem: list[str] | None = Field(default=None, max_length=20, description="Ad hoc: extra trust anchors.")
    retention_seconds: int | None = Field(default=None, ge=0, le=31_536_000, description="Ad hoc: retention.")
    response_mode: Literal["direct_post", "direct_post.jwt"] | None = Field(
        default=None, description="Overrides the template's response mode.")
    client_id_prefix: Literal["x509_san_dns", "x509_hash", "redirect_uri"] | None = Field(
        default=None, description="Client Identifier Prefix (default from configuration; `redirect_uri` only in "
                                  "development mode).")
    expires_in: int | None = Field(default=None, ge=30, le=86_400, description="Lifetime of the request, seconds.")
    webhook_url: str | None = Field(default=None, max_length=2000,
                                    description="Where the signed result webhook is POSTed.")
    redirect_uri: str | None = Field(default=None, max_length=2000,
                                     description="Same-device flow: where the wallet sends the citizen back, "
                                                 "with `#response_code=...` to exchange for the result.")

    _q = field_validator("dcql_query")(lambda v: v if v is None else _check_query(v))
    _p = field_validator("purpose")(lambda v: v if v is None else _check_purpose(v))

    @model_validator(mode="after")
    def _template_or_query(self) -> RequestIn:
        if (self.template is None) == (self.dcql_query is None):
            raise PydanticCustomError("request_shape", "give exactly one of template and dcql_query")
        if self.dcql_query is not None and (not self.purpose or not self.trusted_issuers):
            raise PydanticCustomError("request_shape", "an ad hoc request needs purpose and trusted_issuers")
        if self.template is not None:
            # The template's own values apply: silently dropping these would let an agency believe a
            # request carries the purpose, issuers, anchors or retention it sent.
            given = [name for name in ("purpose", "trusted_issuers", "anchors_pem", "retention_seconds")
                     if getattr(self, name) is not None]
            if given:
                # A custom error type: its message (member names, never values) reaches the agency, where
                # a ValueError's would be replaced by "invalid value" (service_kit.errors).
                raise PydanticCustomError("request_shape", f"{', '.join(given)}: only for an ad hoc request; a "
                                          "template's own values apply (change the template, or send dcql_query)")
        for url in (self.webhook_url, self.redirect_uri):
            if url is not None:
                check_url(url, allow_http_loopback=True)
        return self


class RequestOut(BaseModel):
    """A new presentation request."""

    id: str = Field(description="Transaction id.")
    uri: str = Field(description="`openid4vp://` link (put it in a QR code).")
    haip_uri: str = Field(description="The same request with the `haip-vp://` scheme.")
    request_uri: str = Field(description="Where wallets fetch the signed request object.")
    client_id: str
    status_url: str = Field(description="Result of the request (agency API key needed).")
    events_url: str = Field(description="Server-Sent Events with the live status (carries a watch token).")
    qr_png_url: str
    qr_svg_url: str
    expires_at: str


class CheckErrorOut(BaseModel):
    code: str = Field(description="Stable code of the failed check (`sd_jwt.kb_wrong_nonce`, `verifier.revoked`...).")
    query_id: str | None = Field(description="The Credential Query the failure concerns, if any.")
    detail: str


class ResultOut(BaseModel):
    """The result of a presentation request."""

    id: str
    status: Literal["pending", "verified", "rejected", "declined", "expired"]
    template: str | None
    claims: dict[str, Any] = Field(description="Disclosed, requested claims per Credential Query id.")
    credentials: dict[str, Any] = Field(description="Per query id: issuer, vct, claims, validity of each credential.")
    record: dict[str, Any] = Field(description="What was checked (issuer, vct, validity); kept after claims are purged.")
    errors: list[CheckErrorOut]
    created_at: str
    expires_at: str
    completed_at: str | None
    claims_deleted: bool


class AgencyOut(BaseModel):
    id: str
    slug: str
    name: str
    client_ids: dict[str, str] = Field(description="The agency's Client Identifiers per prefix.")
    certificate_chain: list[str] = Field(description="x5c of the agency's relying-party certificate.")


class AgencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: DisplayName = Field(min_length=1, max_length=200,
                              description="The agency's name, kept whole (without spaces around it; no control "
                                          "characters: line breaks, tabs, C1 or bidirectional controls); its "
                                          "relying-party certificate (commonName, organizationName) carries it cut "
                                          "to 64 bytes of UTF-8, with '…', when longer.")
    key_backend: Literal["software", "pkcs11"] | None = Field(
        default=None, description="Where the request-signing key is made (default: the `key_backend` setting); "
                                  "`pkcs11` generates it in the configured token, non-extractable.")
    token_key_label: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Use this existing key of the PKCS#11 token (made with the token's own tools) instead.")


class AgencyCreated(BaseModel):
    id: str
    slug: str
    name: str
    api_key: str = Field(description="Shown once; stored hashed.")
    webhook_secret: str = Field(description="HMAC secret of the agency's webhooks; shown once.")
    key_backend: Literal["software", "pkcs11"] = Field(default="software",
                                                       description="Where the request-signing key is.")
    token_key: dict[str, str] | None = Field(default=None, description="For a PKCS#11 key: `token`, `label`, `id` "
                                                                       "(CKA_ID, hex) and `alg` of the key.")


class ExchangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_code: str = Field(min_length=10, max_length=200)
