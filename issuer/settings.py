"""Issuer configuration from ``CARTERA_ISSUER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from service_kit.ratelimit import RateSpec
from service_kit.settings import (
    SigningServiceSettings,
    check_admin_key,
    check_idp_url,
    check_login_hint_forwarding,
)
from ssi.urls import is_loopback_host

#: Smallest status list outside ``dev_mode``: herd privacy (docs/issuer.md, "Status lists").
MIN_STATUS_LIST_SIZE = 100_000


class SqlConnection(BaseModel):
    """A database that tenants' SQL data sources may query (their configurations name it, never a URL)."""

    url: SecretStr = Field(description="SQLAlchemy URL, with a read-only account. Never printed.")
    tenants: list[str] = Field(min_length=1, description="Slugs of the tenants whose sources may query it.")


class OAuthClient(BaseModel):
    """A wallet registered for the authorization code flow (RFC 6749 §3.1.2.2: a public client's
    redirect URIs are registered, and compared as exact strings)."""

    model_config = ConfigDict(extra="forbid")

    redirect_uris: list[str] = Field(min_length=1, description="The client's redirect URIs, exact strings.")
    name: str | None = Field(default=None, description="Who the client is, for operators.")


class IssuerSettings(SigningServiceSettings):
    """Settings of the issuer service (every field documented: ``settings_reference`` lists them)."""

    model_config = SettingsConfigDict(env_prefix="CARTERA_ISSUER_", extra="ignore", case_sensitive=False,
                                      validate_default=True)
    service_name: ClassVar[str] = "issuer"

    port: int = Field(default=8001, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    admin_api_key: SecretStr | None = Field(
        default=None,
        description="Platform admin key (creates tenants). Compared as a hash; never logged. Empty: no "
                    "platform admin API.",
    )
    ca_key_file: Path | None = Field(
        default=None,
        description="PEM private key of the CA that certifies tenants' signing keys when the issuer creates "
                    "them itself (development CA in the embedded default). Without it, keys are imported "
                    "with their certificate chain through the admin API.",
    )
    ca_cert_file: Path | None = Field(default=None, description="PEM certificate of that CA (the trust anchor).")
    status_list_size: int = Field(default=100_000, ge=16,
                                  description="Entries per status list (herd privacy: at least 100,000; smaller "
                                              "lists only in `dev_mode`, for tests).")
    status_list_ttl: int = Field(default=300, ge=1, description="`ttl` of status list tokens and their max-age.")
    status_list_validity: int = Field(default=86_400, ge=60,
                                      description="Lifetime (`exp` - `iat`) of a status list token, seconds.")
    offer_ttl: int = Field(default=600, ge=30, description="Lifetime of a pre-authorized code, seconds.")
    tx_code_length: int = Field(default=6, ge=4, le=12, description="Digits of a transaction code.")
    tx_code_max_attempts: int = Field(default=3, ge=1, le=10,
                                      description="Wrong transaction codes before the pre-authorized code is burnt.")
    access_token_ttl: int = Field(default=300, ge=30, description="Lifetime of an access token, seconds.")
    nonce_ttl: int = Field(default=300, ge=10, description="Lifetime of a `c_nonce`, seconds.")
    proof_max_age: int = Field(default=300, ge=10, description="Oldest accepted key proof `iat`, seconds.")
    authorization_code_ttl: int = Field(default=60, ge=10, description="Lifetime of an authorization code.")
    par_ttl: int = Field(default=90, ge=10, description="Lifetime of a pushed authorization request.")
    login_ttl: int = Field(default=600, ge=60, description="Time a citizen has to log in at the identity provider.")
    replay_window: int = Field(default=300, ge=10,
                               description="How long a credential response is kept (sealed) so that a retried "
                                           "request after a timeout gets the same credentials, seconds.")
    batch_size: int = Field(default=5, ge=2, le=50, description="Largest number of key proofs in one request.")
    deferred_interval: int = Field(default=5, ge=1, description="`interval` a wallet waits between deferred polls.")
    deferred_kept_after_delivery: int = Field(
        default=86400, ge=60,
        description="How long a deferred credential, once delivered, is kept (sealed) for a wallet that did not "
                    "manage to store it and polls again, seconds. It holds every claim: long enough for a "
                    "wallet's retries (Cartera's own retry after an hour), no longer.")
    idp_authorize_url: str = Field(
        default="", description="VÀLid (or the sandbox identity provider) authorization endpoint. Empty (with "
                                "the token and user-info URLs): no citizen login, so no authorization code flow. "
                                "Outside `dev_mode` the three must be https and not loopback (`cartera run` "
                                "points them at the sandbox).")
    idp_token_url: str = Field(default="", description="VÀLid token endpoint.")
    idp_userinfo_url: str = Field(default="", description="VÀLid `getUserInfo` endpoint.")
    idp_client_id: str = Field(default="cartera-issuer", description="The issuer's client id at VÀLid.")
    idp_client_secret: SecretStr | None = Field(default=None, description="The issuer's client secret at VÀLid.")
    idp_forward_login_hint: bool = Field(
        default=False,
        description="Forward a wallet's `login_hint` to the identity provider (the sandbox's non-interactive "
                    "login). Development only: refused outside `dev_mode`.",
    )
    require_dpop: bool = Field(default=False,
                               description="Refuse bearer access tokens: wallets must use DPoP (RFC 9449), as HAIP "
                                           "requires. DPoP is always accepted when a wallet sends a proof.")
    require_par: bool = Field(default=False,
                              description="Refuse authorization requests not pushed to /par first (RFC 9126), as "
                                          "HAIP requires; advertised as require_pushed_authorization_requests.")
    webhook_timeout: float = Field(default=5.0, gt=0, description="Timeout of one webhook delivery, seconds.")
    sql_connections: dict[str, SqlConnection] = Field(
        default_factory=dict,
        description="Databases tenants' SQL data sources may query, by name, as a JSON object "
                    "`{name: {\"url\": ..., \"tenants\": [slug, ...]}}`: a source configuration names one "
                    "(`connection`), so that no tenant points a query at the issuer's own database or at "
                    "another tenant's registry.")
    oauth_clients: dict[str, OAuthClient] = Field(
        default_factory=dict,
        description="Wallets allowed to use the authorization code flow, as a JSON object `{client_id: "
                    "{\"redirect_uris\": [...], \"name\": ...}}`: `/par` and `/authorize` accept only a listed "
                    "`client_id` with one of its `redirect_uris` (exact match), and answer anything else with a "
                    "JSON 400, never a redirect. Empty: any client in `dev_mode`, and no authorization code "
                    "flow at all otherwise (pre-authorized offers still work).")
    source_timeout: float = Field(
        default=10.0, gt=0,
        description="Deadline of one data-source query, seconds, retries included (503 "
                    "`temporarily_unavailable` beyond). Also the per-request timeout of a source without its "
                    "own `timeout` (at most 120 s, the longest a source's own may be); a source's own `timeout` "
                    "applies per request and only matters when shorter.")
    idp_timeout: float = Field(default=10.0, gt=0, description="Timeout of each call to the identity provider "
                                                               "(token, user info), seconds (connect and read).")
    # Abuse limits (docs/security.md, "Rate limits"): BURST/SECONDS, 0 disables one.
    rate_limit_token_client: RateSpec = Field(
        default="600/60", description="Token requests per client address (`slow_down` beyond).")
    rate_limit_token_code: RateSpec = Field(
        default="10/60", description="Token requests per pre-authorized or authorization code.")
    rate_limit_tx_code_client: RateSpec = Field(
        default="20/600", description="Wrong transaction codes per client address, over all offers.")
    rate_limit_tx_code_offer: RateSpec = Field(
        default="10/600", description="Wrong transaction codes per offer (beside `tx_code_max_attempts`, which "
                                      "voids the offer).")
    # Aries channel (docs/aries.md): off by default, since it adds an ACA-Py agent to start.
    aries_enabled: bool = Field(default=False, description="Offer the Aries (DIDComm) channel through an ACA-Py agent.")
    aries_admin_url: str = Field(default="", description="Admin API of an agent run elsewhere (compose). Empty: the "
                                                         "issuer starts its own agent with `aries.runner`.")
    aries_admin_api_key: SecretStr | None = Field(default=None, description="Admin API key of that agent.")
    aries_admin_timeout: float = Field(default=15.0, gt=0, le=300, description="Timeout of each call to the agent's "
                                       "admin API, seconds (a BBS+ proof takes about 0.5 s).")
    aries_webhook_key: SecretStr | None = Field(default=None, description="Key that agent sends as `x-api-key` with "
                                                                          "its webhooks (stored hashed).")
    aries_inbound_port: int = Field(default=8020, ge=1, le=65535, description="DIDComm port of the issuer's own agent.")
    aries_admin_port: int = Field(default=8021, ge=1, le=65535, description="Admin API port of the issuer's own agent.")
    aries_endpoint: str = Field(default="", description="Public DIDComm endpoint of the agent (default: its loopback "
                                                        "inbound URL).")
    aries_proof_types: dict[str, Literal["Ed25519Signature2020", "BbsBlsSignature2020"]] = Field(
        default_factory=dict, description="Signature suite per credential type id (JSON object); types not listed "
                                          "use Ed25519Signature2020.")
    aries_invitation_ttl: int = Field(default=3600, ge=60, description="Lifetime of an Aries invitation, seconds.")
    aries_offer_ttl: int = Field(
        default=86400, ge=60, description="How long an Aries credential offer waits for the holder's answer, seconds: "
                                          "then it is withdrawn (the holder told, the agent's record and the issuance "
                                          "record removed) and the exchange ends `abandoned`.")
    aries_deferred_max_interval: int = Field(
        default=3600, ge=1, description="Longest wait, seconds, between two polls of a data source that answered "
                                        "pending to an Aries issuance (its own estimate is used when shorter).")
    aries_poll_lease: float = Field(
        default=60.0, ge=0.5, le=3600, description="How long a worker's poll of a pending Aries issuance holds its "
                                                   "exchange, seconds; renewed while the poll runs, so only a worker "
                                                   "gone or stuck that long loses it to another.")

    @field_validator("oauth_clients")
    @classmethod
    def _check_oauth_clients(cls, value: dict[str, OAuthClient], info: ValidationInfo) -> dict[str, OAuthClient]:
        # A field validator (not a model one): an error then shows this setting only, no other (secret) input.
        dev_mode = bool(info.data.get("dev_mode"))
        for client_id, client in value.items():
            if not client_id.strip() or len(client_id) > 300:
                raise ValueError("a client id is 1 to 300 characters")
            for uri in client.redirect_uris:
                problem = redirect_uri_problem(uri, allow_http_loopback=dev_mode)
                if problem:
                    raise ValueError(f"client {client_id!r}: {problem}: {uri!r}")
        return value

    @field_validator("admin_api_key")
    @classmethod
    def _check_admin_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        check_admin_key(value, bool(info.data.get("dev_mode")))
        return value

    @field_validator("status_list_size")
    @classmethod
    def _check_status_list_size(cls, value: int, info: ValidationInfo) -> int:
        # A field validator like the others here: the error then shows this setting only.
        if value < MIN_STATUS_LIST_SIZE and not info.data.get("dev_mode"):
            raise ValueError(f"must be at least {MIN_STATUS_LIST_SIZE:,} outside dev_mode (herd privacy: a "
                             "credential's index must not single out its holder among few)")
        return value

    @field_validator("idp_authorize_url", "idp_token_url", "idp_userinfo_url")
    @classmethod
    def _check_idp_url(cls, value: str, info: ValidationInfo) -> str:
        # Where citizens log in and where the issuer sends the authorization code and its client secret:
        # the wallet's rule (service_kit.settings.check_idp_url), never the sandbox outside dev_mode.
        value = value.strip()
        check_idp_url(value, bool(info.data.get("dev_mode")))
        return value

    @field_validator("idp_forward_login_hint")
    @classmethod
    def _login_hint_in_dev_mode_only(cls, value: bool, info: ValidationInfo) -> bool:
        check_login_hint_forwarding(value, bool(info.data.get("dev_mode")))
        return value

    @model_validator(mode="after")
    def _idp_complete(self) -> IssuerSettings:
        # Two of the three URLs set would turn the login flow off without a word.
        given = [bool(self.idp_authorize_url), bool(self.idp_token_url), bool(self.idp_userinfo_url)]
        if any(given) and not all(given):
            raise ValueError("idp_authorize_url, idp_token_url and idp_userinfo_url are set together or not at all")
        return self

    @property
    def idp_configured(self) -> bool:
        """Whether an identity provider is configured (its authorization, token and user-info URLs)."""
        return bool(self.idp_authorize_url and self.idp_token_url and self.idp_userinfo_url)

    @property
    def authorization_code_flow(self) -> bool:
        """Whether the authorization code flow is on: an identity provider to log citizens in, and
        registered clients (or any client in ``dev_mode``)."""
        return self.idp_configured and (bool(self.oauth_clients) or self.dev_mode)

    @property
    def allow_http_loopback(self) -> bool:
        """Whether http URLs to loopback hosts are accepted where the protocol wants https."""
        return self.dev_mode


def redirect_uri_problem(uri: str, *, allow_http_loopback: bool) -> str | None:
    """Why ``uri`` cannot be an OAuth redirect URI (None when it can): absolute, no fragment, https or a
    private-use scheme (http to a loopback host only with ``allow_http_loopback``)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "redirect_uri is not a URI"
    if parts.fragment or not parts.scheme or len(uri) > 2000:
        return "redirect_uri must be absolute, at most 2000 characters and carry no fragment"
    if parts.scheme in ("javascript", "data", "file"):
        return "redirect_uri scheme not allowed"
    if parts.scheme == "http" and not (allow_http_loopback and is_loopback_host(parts.hostname or "")):
        return "redirect_uri must use https (or a private-use scheme)"
    return None
