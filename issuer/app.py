"""The issuer service app: ``create_app(settings=None) -> FastAPI``.

Start-up applies the Alembic migrations (``issuer/migrations``), opens one shared HTTP client (data
sources, VÀLid, webhooks) and starts the background worker (webhooks, purge).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from service_kit.app import create_service_app
from service_kit.crypto import SecretBox, load_master_key
from service_kit.db import Database
from service_kit.migrations import run_migrations_async
from service_kit.outbound import guarded_transport
from service_kit.ratelimit import build_limiter
from service_kit.settings import ConfigurationError

from .aries_channel import IssuerAriesChannel
from .context import IssuerContext
from .events import background
from .keys import SigningKeyError, key_backend, load_ca
from .models import RateLimitBucket
from .nonces import nonce_key
from .routes import API_PREFIX, admin, aries, aries_admin, audit_admin, authorization, protocol
from .settings import IssuerSettings

__version__ = "0.1.0"
MIGRATIONS = Path(__file__).parent / "migrations"
SETTINGS_CLASS = IssuerSettings  # what create_app builds from; service_kit.server reads host/port from it

DESCRIPTION = """Cartera issuer: OpenID4VCI 1.0 credential issuer and OAuth 2.0 authorization server per tenant
(`/t/<slug>/...`, metadata under `/.well-known/.../t/<slug>`), and the admin API under `/v1`
(tenant API keys as `Authorization: Bearer`)."""


def issuance_outcome(status: int) -> str:
    """The outcome of a credential request, from its HTTP status (for the issuances counter)."""
    return {200: "issued", 202: "deferred", 401: "unauthorized", 502: "source_error",
            503: "unavailable"}.get(status, "refused" if status < 500 else "error")


def create_app(settings: IssuerSettings | None = None, *, run_background: bool = True,
               configure_logs: bool = True) -> FastAPI:
    """Build the issuer app (migrations run at start-up)."""
    settings = settings or IssuerSettings()
    try:
        load_ca(settings)  # a wrong mount stops the start, not the first tenant creation
    except SigningKeyError as exc:
        raise ConfigurationError(f"{exc.detail}; mount the file readable by the service's user, "
                           "or leave the setting empty") from None
    db = Database.from_settings(settings)
    master_key = load_master_key(settings)
    box = SecretBox(master_key)
    ctx = IssuerContext(settings=settings, db=db, box=box, nonce_key=nonce_key(master_key))

    @contextlib.asynccontextmanager
    async def startup(app: FastAPI) -> AsyncIterator[None]:
        await run_migrations_async(MIGRATIONS, settings.database_url)
        # Tenants choose their sources' and webhooks' URLs: only the destinations of the outbound
        # policy (service_kit.outbound).
        async with key_backend(ctx), httpx.AsyncClient(timeout=settings.source_timeout, follow_redirects=False,
                                                       transport=guarded_transport(settings.outbound_policy())) as client, \
                httpx.AsyncClient(timeout=settings.idp_timeout, follow_redirects=False) as idp_client:
            ctx.http, ctx.idp_http = client, idp_client
            if run_background:
                async with background(ctx):
                    yield
            else:
                yield
            ctx.http = ctx.idp_http = None

    channel = IssuerAriesChannel(ctx)  # Aries (DIDComm) channel; starts its agent only when enabled
    app = create_service_app(name="issuer", version=__version__, settings=settings, db=db, api_prefix=API_PREFIX,
                             lifespan_hooks=[startup, channel.lifespan],
                             description=DESCRIPTION, configure_logs=configure_logs)
    app.state.ctx = ctx
    # On SQLite the limiter's statements join the issuer's queue of writers (ctx.single_statement).
    app.state.rate_limiter = build_limiter(settings, db, RateLimitBucket, master_key, connect=ctx.single_statement)
    app.state.aries = channel
    ctx.issued_counter = app.state.metrics.counter(
        "cartera_issuer_credentials_issued_total", "Credentials issued (batch copies counted).", ["tenant", "type"])
    ctx.source_failures = app.state.metrics.counter(
        "cartera_issuer_source_failures_total", "Data-source queries that failed, by outcome.", ["tenant", "type", "outcome"])
    ctx.source_calls = app.state.metrics.counter(
        "cartera_issuer_source_calls_total", "Data-source queries by outcome (ok, pending, unavailable, not_found, "
        "refused, misconfigured, bad_answer).", ["tenant", "type", "outcome"])
    app.state.metrics.count_outcomes(
        "cartera_issuer_issuances_total", "Credential and deferred credential requests by outcome.",
        [("POST", "/t/{slug}/credential"), ("POST", "/t/{slug}/deferred_credential")], issuance_outcome)
    # The wallet-facing protocol routes go first and flat, then the admin API's (which carry their
    # /v1 prefix themselves), not through include_router: FastAPI scans an included router's routes
    # once to decide that it matches and again to dispatch, a few µs per route checked. In-process, the
    # nonce endpoint: 207-209 µs as an included router, 162-170 µs flat and first (/healthz, now behind
    # them: 118 -> 135 µs); an offer (POST /v1/offers, 39 route checks before): 704-742 -> 591-619 µs.
    # POSTs first (the issuance path: offer, token, nonce, credential), GETs after; a route matches
    # only its own method, so the order among methods changes no answer.
    flat = [*protocol.direct_router.routes, *protocol.router.routes, *admin.router.routes, *aries_admin.router.routes,
            *audit_admin.router.routes]
    app.router.routes[0:0] = sorted(flat, key=lambda route: "POST" not in getattr(route, "methods", ()))
    app.include_router(aries.router)
    app.include_router(authorization.router)
    return app
