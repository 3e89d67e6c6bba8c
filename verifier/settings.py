"""Verifier configuration from ``CARTERA_VERIFIER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from service_kit.ratelimit import RateSpec
from service_kit.settings import SigningServiceSettings, check_admin_key

ClientIdPrefix = Literal["x509_san_dns", "x509_hash", "redirect_uri"]


class VerifierSettings(SigningServiceSettings):
    """Settings of the verifier service (every field documented: ``settings_reference`` lists them)."""

    model_config = SettingsConfigDict(env_prefix="CARTERA_VERIFIER_", extra="ignore", case_sensitive=False,
                                      validate_default=True)
    service_name: ClassVar[str] = "verifier"

    port: int = Field(default=8002, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    admin_api_key: SecretStr | None = Field(
        default=None,
        description="Platform admin key (creates agencies through `/v1/admin/agencies`). Compared as a hash; "
                    "never logged. Empty: no platform admin API.",
    )
    issuer_anchors_file: Path | None = Field(
        default=None,
        description="PEM file of the certificates that issuer `x5c` chains must lead to (the trust anchors "
                    "every template uses, besides its own `anchors_pem`).",
    )
    rp_ca_key_file: Path | None = Field(
        default=None,
        description="PEM private key of the relying-party CA that certifies agencies' request-signing keys "
                    "when the verifier creates agencies itself (the development CA in the embedded default).",
    )
    rp_ca_cert_file: Path | None = Field(default=None, description="PEM certificate of that relying-party CA.")
    default_client_id_prefix: ClientIdPrefix = Field(
        default="x509_san_dns",
        description="Client Identifier Prefix of new requests: `x509_san_dns` (default), `x509_hash`, or "
                    "`redirect_uri` (unsigned; only with `dev_mode`).",
    )
    request_ttl: int = Field(default=300, ge=30, le=86_400,
                             description="Default lifetime of a presentation request, seconds.")
    kb_max_age: int = Field(default=300, ge=10, description="Oldest accepted KB-JWT `iat`, seconds.")
    clock_leeway: int = Field(default=60, ge=0, le=300, description="Clock skew tolerated on `iat`/`nbf`/`exp`.")
    status_default_ttl: int = Field(
        default=300, ge=1,
        description="How long a status list token without `ttl` is cached, seconds (also the upper bound "
                    "of any `ttl`).",
    )
    metadata_ttl: int = Field(default=300, ge=1, description="How long JWT VC issuer metadata is cached, seconds.")
    http_timeout: float = Field(default=5.0, gt=0, description="Timeout of outbound fetches (status lists, "
                                                               "issuer metadata), seconds.")
    max_fetch_bytes: int = Field(default=2_000_000, ge=1024, description="Largest status list or metadata "
                                                                           "document fetched, bytes.")
    # Abuse limits (docs/security.md, "Rate limits"): BURST/SECONDS, 0 disables one.
    rate_limit_requests_key: RateSpec = Field(
        default="3000/60", description="Presentation requests created per agency API key.")
    rate_limit_requests_client: RateSpec = Field(
        default="3000/60", description="Presentation requests created per client address.")
    worker_interval: float = Field(default=1.0, gt=0, description="Period of the background task delivering "
                                                                  "webhooks, expiring requests and purging claims.")
    default_retention: int = Field(default=86_400, ge=0, description="Retention of disclosed claims when a "
                                                                     "request names none, seconds.")
    # Aries channel (docs/aries.md): off by default, since it adds an ACA-Py agent to start.
    aries_enabled: bool = Field(default=False, description="Offer Aries (DIDComm present-proof 2.0) requests "
                                                           "through an ACA-Py agent.")
    aries_admin_url: str = Field(default="", description="Admin API of an agent run elsewhere (compose). Empty: the "
                                                         "verifier starts its own agent with `aries.runner`.")
    aries_admin_api_key: SecretStr | None = Field(default=None, description="Admin API key of that agent.")
    aries_admin_timeout: float = Field(default=15.0, gt=0, le=300, description="Timeout of each call to the agent's "
                                       "admin API, seconds (a BBS+ proof takes about 0.5 s).")
    aries_webhook_key: SecretStr | None = Field(default=None, description="Key that agent sends as `x-api-key` with "
                                                                          "its webhooks (stored hashed).")
    aries_inbound_port: int = Field(default=8030, ge=1, le=65535, description="DIDComm port of the verifier's own agent.")
    aries_admin_port: int = Field(default=8031, ge=1, le=65535, description="Admin API port of the verifier's own agent.")
    aries_endpoint: str = Field(default="", description="Public DIDComm endpoint of the agent (default: its loopback "
                                                        "inbound URL).")
    aries_proof_types: dict[str, Literal["Ed25519Signature2020", "BbsBlsSignature2020"]] = Field(
        default_factory=dict, description="Signature suite asked per credential type id (JSON object); for types "
                                          "not listed, the suite the trusted issuers publish for the type at "
                                          "`<iss>/v1/aries/issuer`, else BbsBlsSignature2020.")

    @field_validator("admin_api_key")
    @classmethod
    def _admin_key_strength(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # A field validator, as the issuer's: the error then names this setting alone.
        check_admin_key(value, bool(info.data.get("dev_mode")))
        return value
