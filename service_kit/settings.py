"""Service configuration from environment variables (pydantic-settings).

Each service subclasses :class:`ServiceSettings` with its own prefix and name::

    class IssuerSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="CARTERA_ISSUER_")
        service_name: ClassVar[str] = "issuer"

so ``CARTERA_ISSUER_DATABASE_URL`` configures the issuer's database. Every field carries a description
so that :func:`settings_reference` can list the whole configuration in the docs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ssi.urls import UnsafeURL, is_loopback_host, split_secure_url

from .outbound import OutboundPolicy

LogLevel = Literal["debug", "info", "warning", "error", "critical"]

class ConfigurationError(RuntimeError):
    """A setting names something the service cannot use (a file it cannot read or parse...), found while
    the app is built: its message names the setting, never a secret, and it is shown without a
    traceback (``service_kit.server``)."""


#: Shortest platform admin key accepted outside dev_mode (``secrets.token_urlsafe(32)`` makes 43).
MIN_ADMIN_KEY_LENGTH = 32


def check_admin_key(key: SecretStr | None, dev_mode: bool) -> None:
    """Refuse (``ValueError``) a platform admin key shorter than :data:`MIN_ADMIN_KEY_LENGTH` outside
    dev_mode: a guessable key creates tenants or agencies, and their signing certificates, at will."""
    value = key.get_secret_value() if key is not None else ""
    if value and len(value) < MIN_ADMIN_KEY_LENGTH and not dev_mode:
        raise ValueError(f"admin_api_key must be at least {MIN_ADMIN_KEY_LENGTH} characters outside dev_mode "
                         "(python3 -c \"import secrets; print(secrets.token_urlsafe(32))\")")


def check_idp_url(url: str, dev_mode: bool) -> None:
    """Refuse (``ValueError``) an identity provider URL that is not https, or that points at this machine
    (loopback), outside dev_mode. Citizens log in there and the service sends it authorization codes and
    its client secret, and believes whom it says logged in: outside development it is never the sandbox
    identity provider, which logs anybody in without authentication (``http://sandbox:8005`` in compose,
    ``http://127.0.0.1:8005`` from ``cartera run``). Empty (not configured) passes; in dev_mode anything
    does. The messages never quote the URL (start-up errors name the setting only)."""
    if not url or dev_mode:
        return
    try:
        parts = split_secure_url(url)
    except UnsafeURL as exc:
        raise ValueError(f"must be an https URL outside dev_mode (it {exc})") from None
    if is_loopback_host(parts.hostname or ""):
        raise ValueError("must not point at this machine (loopback) outside dev_mode")


def check_login_hint_forwarding(enabled: bool, dev_mode: bool) -> None:
    """Refuse (``ValueError``) passing a ``login_hint`` on to the identity provider outside dev_mode: it
    is the sandbox identity provider's login of the hinted citizen without any authentication."""
    if enabled and not dev_mode:
        raise ValueError("is a development setting (the sandbox identity provider's login without "
                         "authentication): refused outside dev_mode")


class ServiceSettings(BaseSettings):
    """Settings every Cartera service has; subclass it with an ``env_prefix`` and ``service_name``."""

    model_config = SettingsConfigDict(
        env_prefix="CARTERA_",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        # A validation error at start-up names the setting and the problem, never the value: inputs are
        # passwords in database URLs, webhook secrets, keys (subclasses inherit this; it covers errors inside nested models too).
        hide_input_in_errors=True,
    )

    # Used for default file names (``var/<service_name>.db``) and in log lines.
    service_name: ClassVar[str] = "service"

    database_url: str = Field(
        default="",
        description=(
            "SQLAlchemy async database URL. Default: a SQLite file `<data_dir>/<service>.db` "
            "(`sqlite+aiosqlite:///...`); PostgreSQL as `postgresql+asyncpg://user:password@host/db`."
        ),
    )
    public_url: str = Field(
        default="",
        description=(
            "External base URL of the service as clients see it (http or https, no trailing slash), "
            "used in metadata, offers and request objects. Default: `http://<host>:<port>`."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    log_level: LogLevel = Field(default="info", description="Lowest level written to the JSON log.")
    data_dir: Path = Field(
        default=Path("var"),
        description="Folder for local state: the default SQLite file and development key files.",
    )
    master_key: SecretStr | None = Field(
        default=None,
        description=(
            "Master key protecting secrets at rest: 32 random bytes as base64url, base64 or hex. Secret: "
            "prefer `master_key_file`. Never printed."
        ),
    )
    master_key_file: Path | None = Field(
        default=None,
        description=(
            "File holding the master key (base64url, base64 or hex text, or 32 raw bytes), mode 0600. In "
            "`dev_mode` a missing file is generated."
        ),
    )
    database_pre_ping: bool = Field(
        default=False,
        description="Probe each pooled PostgreSQL connection before use (three round trips with asyncpg). Off: "
                    "a connection dropped by the server fails the one request that meets it, then the pool "
                    "reconnects.")
    database_pool_size: int = Field(
        default=20, ge=1, le=100,
        description="Database connections per worker process. No overflow: a request finding them all busy "
                    "waits for one, because overflow connections are closed when returned and would cost a new "
                    "PostgreSQL connection (a server process and a SCRAM exchange) per request at peaks.")
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body accepted, in bytes; larger requests get HTTP 413.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Origins allowed to call the API from a browser, comma-separated or a JSON list "
            "(for example `https://wallet.example.org`). Empty: no CORS headers at all."
        ),
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Reverse proxies (addresses or CIDR networks, comma-separated) whose `X-Forwarded-For` is "
            "believed when telling clients apart for rate limits. Empty: the socket peer is the client."
        ),
    )
    rate_limits_enabled: bool = Field(
        default=True,
        description="Apply the per-client and per-subject rate limits (off: benchmarks, load tests).",
    )
    internal_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Destinations on internal networks that calls made for others may reach: host names, IP "
            "addresses or CIDR networks, comma-separated (e.g. a registry on the administration's "
            "network). Those calls (tenants' data sources and webhooks, agencies' webhooks, URLs in "
            "credentials, offers and QR codes) reach public addresses only, plus loopback in "
            "`dev_mode`, plus these."
        ),
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token `GET /metrics` requires (`Authorization: Bearer <token>`; a Prometheus scraping "
            "from another host or container). Unset: `/metrics` answers only connections from a loopback "
            "address that came through no proxy, and is a 404 for everyone else. Never printed."
        ),
    )
    dev_mode: bool = Field(
        default=False,
        description=(
            "Development conveniences (generated keys and master key file, relaxed checks). "
            "Never enable in production."
        ),
    )

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty token (``METRICS_TOKEN=`` in a compose file) means none, not one anybody can send."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @model_validator(mode="before")
    @classmethod
    def _empty_path_is_unset(cls, data: Any) -> Any:
        """An empty optional file setting (``CARTERA_ISSUER_CA_KEY_FILE=`` from a compose default) means
        none, not ``Path("")``, which is the current directory and fails only when first read."""
        if not isinstance(data, dict):
            return data
        optional_paths = {name for name, field in cls.model_fields.items()
                          if field.annotation == Path | None}
        return {key: (None if key in optional_paths and isinstance(value, str) and not value.strip() else value)
                for key, value in data.items()}

    @field_validator("trusted_proxies", "cors_origins", "internal_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """A list from the environment: comma-separated, or a JSON array."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies entries are IP addresses or networks, got {entry!r}") from None
        return value

    @field_validator("internal_hosts")
    @classmethod
    def _check_internal_hosts(cls, value: list[str]) -> list[str]:
        import ipaddress
        import re

        label = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                if not re.fullmatch(rf"{label}(?:\.{label})*\.?", entry):
                    raise ValueError("internal_hosts entries are host names, IP addresses or CIDR networks, "
                                     f"got {entry!r}") from None
        return value

    def outbound_policy(self) -> OutboundPolicy:
        """What calls made for others (``service_kit.outbound``) may reach."""
        return OutboundPolicy.from_settings(self.internal_hosts, dev_mode=self.dev_mode)

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(f"CORS origin must be scheme://host[:port], got {origin!r}")
        return [origin.rstrip("/") for origin in value]

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("public_url must be an absolute http or https URL")
        if parts.query or parts.fragment:
            raise ValueError("public_url must have no query or fragment")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and "://" not in value:
            raise ValueError("database_url must be a URL such as sqlite+aiosqlite:///var/x.db")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / (self.service_name + '.db')}"
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        return self


class SigningServiceSettings(ServiceSettings):
    """Settings of a service that signs with keys of its own (the issuer's tenants, the verifier's
    agencies): where new keys are made, and the PKCS#11 token when they live in hardware
    (docs/security.md, "Keys in hardware (PKCS#11)")."""

    key_backend: Literal["software", "pkcs11"] = Field(
        default="software", description="Where new signing keys are made: `software` (sealed under the master key in "
                                        "the database) or `pkcs11` (generated in the token, sensitive and "
                                        "non-extractable; the database keeps only a reference).")
    pkcs11_module: Path | None = Field(
        default=None, description="PKCS#11 module (shared library) of the token, e.g. "
                                  "`/usr/lib/softhsm/libsofthsm2.so`. When set, the token is opened and every active "
                                  "token key checked at start-up.")
    pkcs11_token_label: str = Field(default="", description="Label of the PKCS#11 token holding the keys.")
    pkcs11_pin: SecretStr | None = Field(default=None, description="User PIN of the token. Secret: prefer "
                                                                   "`pkcs11_pin_file`. Never logged.")
    pkcs11_pin_file: Path | None = Field(default=None, description="File holding the token's user PIN (one line), "
                                                                   "mode 0600.")


def settings_reference(settings_cls: type[ServiceSettings]) -> list[dict[str, str]]:
    """List every setting of ``settings_cls`` as ``{"env", "type", "default", "description"}`` rows.

    For the operations guide: the table of environment variables is generated, so it matches the code.
    Secret defaults are shown as empty.
    """
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    rows: list[dict[str, str]] = []
    for name, field in settings_cls.model_fields.items():
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        if field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        elif isinstance(field.default, SecretStr):
            default = ""
        else:
            default = "" if field.default in (None, "") else str(field.default)
        rows.append(
            {
                "env": f"{prefix}{name}".upper(),
                "type": type_name,
                "default": default,
                "description": field.description or "",
            }
        )
    return rows


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict) or hasattr(value, "model_dump"):
        def plain(item: Any) -> Any:
            if isinstance(item, SecretStr):
                return item.get_secret_value()
            if hasattr(item, "model_dump"):
                return {k: plain(v) for k, v in item.model_dump().items()}
            if isinstance(item, list | tuple):
                return [plain(v) for v in item]
            if isinstance(item, dict):
                return {k: plain(v) for k, v in item.items()}
            return str(item) if isinstance(item, Path) else item
        return json.dumps(plain(value))
    return str(value)


def settings_env(settings: ServiceSettings) -> dict[str, str]:
    """Environment variables that rebuild ``settings`` in another process (``cartera run`` starts
    each service as its own process configured this way). Holds secrets: pass it to a child process
    only, never print or log it. ``None`` values are left out so the child falls back to defaults."""
    prefix = str(type(settings).model_config.get("env_prefix", ""))
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is not None:
            env[f"{prefix}{name}".upper()] = _env_value(value)
    return env
