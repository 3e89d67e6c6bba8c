"""The verifier's FastAPI app: ``create_app(settings=None)``.

Start-up applies the Alembic migrations, opens the HTTP client used for status lists and issuer
metadata, and starts the background task (webhooks, expiry, purge).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from service_kit.app import create_service_app
from service_kit.crypto import SecretBox, load_master_key
from service_kit.db import Database
from service_kit.migrations import run_migrations_async
from service_kit.outbound import guarded_transport
from service_kit.ratelimit import build_limiter
from service_kit.settings import ConfigurationError
from ssi import x509 as ssi_x509
from ssi.errors import SSIError
from ssi.jose import Key
from verifier import __version__
from verifier.agencies import SigningKeys, key_backend
from verifier.aries_channel import VerifierAriesChannel
from verifier.models import RateLimitBucket
from verifier.routes import admin, agency, aries, desk, wallet
from verifier.routes.deps import Services
from verifier.settings import VerifierSettings
from verifier.verification import PresentationVerifier
from verifier.worker import BackgroundWorker, running

MIGRATIONS = Path(__file__).parent / "migrations"
SETTINGS_CLASS = VerifierSettings  # what create_app builds from; service_kit.server reads host/port from it

DESCRIPTION = """OpenID4VP 1.0 verifier for agencies: templates (DCQL query, purpose, trusted issuers,
retention), presentation requests shown as QR codes, strict verification of SD-JWT VC presentations,
results by polling, Server-Sent Events and signed webhooks, and a desk page for staff."""


def _read_setting_file(setting: str, path: Path) -> bytes:
    """A configured file's bytes, or a start-up error naming the setting (not a bare traceback)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"CARTERA_VERIFIER_{setting.upper()}: cannot read {path} ({exc.strerror or exc}); "
                           "mount the file readable by the service's user, or leave the setting empty") from None


def _parsed(setting: str, path: Path, parse: Any) -> Any:
    """``parse`` of a configured file's bytes, or a start-up error naming the setting (never the key)."""
    data = _read_setting_file(setting, path)
    try:
        return parse(data)
    except (SSIError, ValueError, IndexError) as exc:
        raise ConfigurationError(f"CARTERA_VERIFIER_{setting.upper()}: {path} is not what it should hold "
                           f"({type(exc).__name__})") from None


def _load_anchors(path: Path | None) -> list:
    if path is None:
        return []
    return _parsed("issuer_anchors_file", path, ssi_x509.load_pem_certificates)  # type: ignore[no-any-return]


def _load_rp_ca(settings: VerifierSettings) -> tuple[Key, object] | None:
    if settings.rp_ca_key_file is None or settings.rp_ca_cert_file is None:
        return None
    key = _parsed("rp_ca_key_file", settings.rp_ca_key_file, Key.from_pem)
    cert = _parsed("rp_ca_cert_file", settings.rp_ca_cert_file, lambda data: ssi_x509.load_pem_certificates(data)[0])
    return key, cert


def create_app(settings: VerifierSettings | None = None) -> FastAPI:
    """Build the verifier app (configuration from ``CARTERA_VERIFIER_*`` unless ``settings`` is given)."""
    settings = settings or VerifierSettings()
    db = Database.from_settings(settings)
    master_key = load_master_key(settings)
    box = SecretBox(master_key)
    anchors = _load_anchors(settings.issuer_anchors_file)
    rp_ca = _load_rp_ca(settings)
    keys = SigningKeys(box)  # request-object signing keys; its PKCS#11 token is opened by key_backend at start-up

    @contextlib.asynccontextmanager
    async def migrate(_app: FastAPI) -> AsyncIterator[None]:
        await run_migrations_async(MIGRATIONS, settings.database_url)
        yield

    @contextlib.asynccontextmanager
    async def wire(app: FastAPI) -> AsyncIterator[None]:
        # Status lists and issuer metadata at URLs credentials name, agencies' webhooks: only the
        # destinations of the outbound policy (service_kit.outbound).
        client = httpx.AsyncClient(timeout=settings.http_timeout, follow_redirects=False, transport=guarded_transport(
            settings.outbound_policy(), limits=httpx.Limits(max_connections=50)))
        verifier = PresentationVerifier(
            client=client, anchors=anchors, kb_max_age=settings.kb_max_age, leeway=settings.clock_leeway,
            status_default_ttl=settings.status_default_ttl, metadata_ttl=settings.metadata_ttl,
            max_fetch_bytes=settings.max_fetch_bytes, allow_http_loopback=settings.dev_mode,
            open_trust_rules=settings.dev_mode)
        worker = BackgroundWorker(db, box, client, settings.worker_interval)
        app.state.worker = worker
        app.state.services = Services(settings=settings, db=db, box=box, keys=keys, verifier=verifier,
                                      worker=worker, rp_ca=rp_ca)  # type: ignore[arg-type]
        try:
            yield
        finally:
            await client.aclose()

    channel = VerifierAriesChannel(settings, db, box)  # Aries (DIDComm) channel; its agent only when enabled
    app = create_service_app(name="verifier", version=__version__, settings=settings, db=db,
                             lifespan_hooks=[migrate, key_backend(settings, db, keys), wire, running, channel.lifespan],
                             description=DESCRIPTION)
    app.state.aries = channel
    app.state.rate_limiter = build_limiter(settings, db, RateLimitBucket, master_key)
    prefix = app.state.api_prefix
    app.state.verifications = app.state.metrics.counter(
        "cartera_verifier_verifications_total", "Presentations answered, by outcome (verified, rejected, declined).",
        ["outcome"])
    app.include_router(agency.router, prefix=prefix)
    app.include_router(wallet.router, prefix=prefix)
    app.include_router(admin.router, prefix=prefix)
    app.include_router(aries.router, prefix=prefix)
    app.include_router(desk.router)
    return app
