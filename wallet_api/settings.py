"""Configuration of the wallet API (environment variables prefixed ``CARTERA_WALLET_``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from service_kit.ratelimit import RateSpec
from service_kit.settings import ServiceSettings, check_idp_url, check_login_hint_forwarding
from ssi.oid4vci import is_loopback_host


class OIDCProvider(BaseModel):
    """A generic OpenID Connect provider citizens may log in with."""

    name: str = Field(description="Short name used as `provider=<name>` at `/v1/auth/login`.", pattern=r"^[a-z0-9_-]{1,32}$")
    issuer: str = Field(description=("The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`): "
                                     "outside `dev_mode`, https and not loopback."))
    client_id: str = Field(description="Client id registered at the provider.")
    client_secret: SecretStr | None = Field(default=None, description="Client secret (client_secret_post).")
    scope: str = Field(default="openid profile", description="Scopes asked for.")
    identifier_claim: str = Field(default="sub", description="ID token claim the wallet belongs to.")
    label: str = Field(default="", description="Name shown to citizens.")


class CatalogueEntry(BaseModel):
    """An issuer citizens can ask for a credential from the wallet (wallet-initiated issuance)."""

    credential_issuer: str = Field(description="The Credential Issuer identifier (https URL).")
    name: str = Field(default="", description="Name shown when the issuer metadata has no display name.")
    credential_configuration_ids: list[str] = Field(
        default_factory=list, description="Configurations to offer; empty means all the issuer supports.")


def _json_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class WalletSettings(ServiceSettings):
    """Settings of the wallet API service."""

    model_config = SettingsConfigDict(env_prefix="CARTERA_WALLET_", extra="ignore", case_sensitive=False,
                                      validate_default=True)
    service_name: ClassVar[str] = "wallet"

    port: int = Field(default=8003, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    previous_master_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=("Older master keys (base64url or hex, comma-separated) still accepted while "
                     "`cartera wallet rotate-master-key` rewraps data keys under the current one."))
    previous_master_key_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Files holding older master keys (comma-separated paths).")
    issuer_anchor_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="PEM files with the CA certificates issuers' x5c chains must lead to (comma-separated).")
    rp_anchor_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description=("PEM files with the CA certificates of trusted relying parties (verifiers): only "
                     "verifiers chaining to them are shown by name."))
    allow_untrusted_verifiers: bool = Field(
        default=False,
        description=("Preview, with a warning and without a name, presentation requests signed by a certificate "
                     "that does not chain to `rp_anchor_files`. Off (the default): such requests are refused and "
                     "nothing is sent to the verifier."))
    trust_issuer_metadata: bool = Field(
        default=True,
        description=("Accept issuer keys published as JWT VC Issuer Metadata (`/.well-known/jwt-vc-issuer`) "
                     "of the credential issuer the wallet talked to, when the credential has no x5c; likewise "
                     "for the status lists of its credentials. Off: only an x5c chain to `issuer_anchor_files` "
                     "whose certificate names the issuer is accepted."))
    idp_url: str = Field(
        default="",
        description=("Base URL of the VÀLid (or VÀLid-compatible) identity provider. Outside `dev_mode` https and not "
                     "loopback (never the sandbox identity provider), or the wallet does not start."))
    idp_client_id: str = Field(default="cartera-wallet", description="The wallet's client id at VÀLid.")
    idp_client_secret: SecretStr | None = Field(default=None, description="The wallet's client secret at VÀLid.")
    idp_scope: str = Field(default="autenticacio_usuari", description="Scope asked for at VÀLid.")
    idp_allow_login_hint: bool = Field(
        default=False,
        description=("Forward `login_hint` to the identity provider (the sandbox's non-interactive login, for "
                     "development and tests): only with `dev_mode`, or the wallet does not start."))
    oidc_providers: Annotated[list[OIDCProvider], NoDecode] = Field(
        default_factory=list,
        description=("Generic OpenID Connect providers, as a JSON list of objects. Outside `dev_mode` each `issuer` "
                     "must be https and not loopback."))
    app_redirect_uris: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=("Redirect URIs of the wallet apps (exact match). In `dev_mode` any loopback http URI "
                     "is accepted too."))
    issuer_catalogue: Annotated[list[CatalogueEntry], NoDecode] = Field(
        default_factory=list, description="Issuers for wallet-initiated issuance, as a JSON list of objects.")
    issuance_client_id: str = Field(
        default="cartera-wallet", description="Client id the wallet uses at credential issuers (authorization code flow).")
    access_token_ttl: int = Field(default=900, ge=30, description="Lifetime of app access tokens, in seconds.")
    refresh_token_ttl: int = Field(default=30 * 86400, ge=60, description="Lifetime of refresh tokens, in seconds.")
    session_max_age: int = Field(
        default=90 * 86400, ge=60,
        description=("Absolute lifetime of a login session, in seconds: refreshing never takes a session past "
                     "this age from its login, after which the citizen logs in again."))
    login_ttl: int = Field(default=600, ge=30, description="Time a citizen has to finish a login or an issuer authorization, in seconds.")
    offer_ttl: int = Field(default=900, ge=30, description="Time a received offer or presentation request stays answerable, in seconds.")
    expiry_alert_days: int = Field(default=30, ge=0, description="Alert when a credential expires within this many days.")
    status_check_interval: int = Field(
        default=3600, ge=1, description="Default seconds between status-list checks of a credential (a list's `ttl` wins when given).")
    background_interval: float = Field(
        default=60.0, ge=0.0, description="Seconds between background sweeps (status checks, expiry alerts, deferred "
                                          "polls, exchanges left half-way, purges); 0 disables them.")
    pin_max_attempts: int = Field(default=5, ge=1, description="Wrong PIN attempts before presenting is locked.")
    pin_lock_seconds: int = Field(
        default=900, ge=1, description=("How long presenting stays locked after too many wrong PINs, the first time; "
                                         "each further lockout in a row doubles it, up to 64 times the first."))
    pin_max_lockouts: int = Field(
        default=3, ge=1, description=("PIN lockouts in a row (no right PIN between) after which every session of the "
                                      "wallet is ended and the citizen logs in again; every further one does too."))
    pin_reset_login_seconds: int = Field(
        default=300, ge=30, description=("How recent a session's login must be (seconds) to reset a forgotten PIN "
                                         "without the current one (`POST /v1/pin/reset`)."))
    max_backup_bytes: int = Field(
        default=16 * 1_048_576, ge=1024,
        description="Largest backup accepted by `POST /v1/backup/import`, bytes (other requests: `max_body_bytes`).")
    rate_limit_login_client: RateSpec = Field(
        default="120/60", description="Login starts and token requests per client address (BURST/SECONDS, 0: off; "
                                      "docs/security.md).")
    http_timeout: float = Field(default=10.0, gt=0, description="Timeout of outgoing HTTP calls (issuers, verifiers, IdPs), seconds.")
    webhook_url: str = Field(
        default="",
        description=("Optional URL (the app's push backend) that receives every new alert as a signed POST "
                     "(`Cartera-Signature`, see service_kit.webhooks), queued in the database and retried. "
                     "https, or http to a loopback host in `dev_mode`."))
    webhook_secret: SecretStr | None = Field(default=None, description="HMAC secret of the alert webhook (required with `webhook_url`).")
    webhook_interval: float = Field(default=2.0, gt=0, description="Seconds between deliveries of queued alert webhooks.")
    webhook_max_attempts: int = Field(default=12, ge=1, le=50,
                                      description="Delivery rounds (each with a few quick retries) before an alert webhook is given up.")

    _split_lists = field_validator(
        "previous_master_keys", "previous_master_key_files", "issuer_anchor_files", "rp_anchor_files",
        "app_redirect_uris", "oidc_providers", "issuer_catalogue", mode="before")(_json_list)

    @model_validator(mode="after")
    def _check_webhook(self) -> WalletSettings:
        if not self.webhook_url:
            return self
        parts = urlsplit(self.webhook_url)
        loopback = bool(parts.hostname) and is_loopback_host(parts.hostname or "")
        if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and self.dev_mode and loopback)):
            raise ValueError("webhook_url must be https (http only to a loopback host in dev_mode)")
        if self.webhook_secret is None or len(self.webhook_secret.get_secret_value()) < 16:
            raise ValueError("webhook_url needs a webhook_secret of at least 16 characters")
        return self

    # Field validators (not model ones): an error then shows this setting only, no other (secret) input.
    # Identity provider URLs: the rule the issuer applies to its idp_*_url (service_kit.settings.check_idp_url).
    @field_validator("idp_url")
    @classmethod
    def _check_idp_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip().rstrip("/")
        check_idp_url(value, bool(info.data.get("dev_mode")))
        return value

    @field_validator("oidc_providers")
    @classmethod
    def _check_oidc_issuers(cls, value: list[OIDCProvider], info: ValidationInfo) -> list[OIDCProvider]:
        for provider in value:
            try:
                check_idp_url(provider.issuer, bool(info.data.get("dev_mode")))
            except ValueError as exc:
                raise ValueError(f"provider {provider.name!r}: issuer {exc}") from None
        return value

    @field_validator("idp_allow_login_hint")
    @classmethod
    def _login_hint_in_dev_mode_only(cls, value: bool, info: ValidationInfo) -> bool:
        check_login_hint_forwarding(value, bool(info.data.get("dev_mode")))
        return value
