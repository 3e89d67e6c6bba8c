"""``create_service_app``: a FastAPI app with Cartera's plumbing wired in, so a service's factory is short.

::

    def create_app(settings: IssuerSettings | None = None) -> FastAPI:
        settings = settings or IssuerSettings()
        db = Database(settings.database_url)
        app = create_service_app(name="issuer", version=__version__, settings=settings, db=db)
        app.include_router(api_router, prefix=app.state.api_prefix)
        return app

Middleware order, outermost first: security headers → request context (request id, access log,
metrics, catch-all 500) → CORS (only with configured origins) → body size limit → NUL and lone
surrogates refused (path, query, body) → routes. ``app.state`` holds ``settings``, ``db``,
``metrics``, ``service_name`` and ``api_prefix``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from service_kit.db import Database
from service_kit.errors import install_error_handlers, internal_error_asgi
from service_kit.health import ReadinessCheck, health_router
from service_kit.logging import RequestContextMiddleware, configure_logging, loop_exception_handler
from service_kit.metrics import Metrics, metrics_router
from service_kit.openapi import document_error_responses
from service_kit.security import (
    BodySizeLimitMiddleware,
    SecurityHeadersMiddleware,
    UnstorableInputMiddleware,
    install_cors,
)
from service_kit.settings import ServiceSettings

LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_service_app(
    *,
    name: str,
    version: str,
    settings: ServiceSettings,
    db: Database | None,
    lifespan_hooks: Sequence[LifespanHook] = (),
    api_prefix: str = "/v1",
    description: str = "",
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    configure_logs: bool = True,
    body_limits: Mapping[str, int] | None = None,
    no_store_api: bool = False,
    exposed_headers: Sequence[str] = (),
) -> FastAPI:
    """Build a FastAPI app with error handlers, middlewares, ``/healthz``, ``/readyz`` and ``/metrics``.

    ``lifespan_hooks`` are async context manager factories entered in order at start-up (after the app
    is built, e.g. to run migrations or start a background worker) and exited in reverse order at
    shutdown; the database is disposed last. ``configure_logs=False`` leaves logging as it is (tests
    that capture logs themselves, or an embedding process that configured it already). ``body_limits``
    maps exact paths with larger legitimate bodies to their own limit (``settings.max_body_bytes``
    elsewhere). ``no_store_api``: every answer under ``api_prefix`` says ``Cache-Control: no-store``.
    ``exposed_headers``: response headers of the API a browser app on an allowed origin may read,
    besides ``X-Request-Id``.
    """
    if configure_logs:
        configure_logging(name, settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Errors nobody received (a task's exception never retrieved) are logged by type, never by repr.
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(loop_exception_handler)
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(loop.set_exception_handler, previous_handler)
            if db is not None:
                stack.push_async_callback(db.dispose)
            for hook in lifespan_hooks:
                await stack.enter_async_context(hook(app))
            yield

    app = FastAPI(
        title=name,
        version=version,
        description=description,
        lifespan=lifespan,
        # The Swagger UI page loads scripts from a CDN, which the CSP and "no traffic off the machine"
        # forbid; the OpenAPI document itself stays available.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        # FastAPI's own OpenTelemetry spans, metrics and logs stay off: they carry raw URL paths (offer
        # ids, codes in authorization queries), which our logs and metrics never do (route templates
        # only, service_kit.logging), and the checks for a configured provider ran on every request.
        # Observability is the Prometheus metrics and the JSON logs (docs/operations.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    metrics = Metrics(name)
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = metrics
    app.state.service_name = name
    app.state.api_prefix = api_prefix.rstrip("/")

    install_error_handlers(app)
    document_error_responses(app)
    app.include_router(health_router(db, readiness_checks))
    app.include_router(metrics_router())

    # add_middleware puts each new middleware outside the previous ones: add innermost first. The
    # unstorable-input check reads the body through the size limit's receive, so 413 comes first.
    app.add_middleware(UnstorableInputMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, path_limits=body_limits)
    install_cors(app, settings.cors_origins, exposed_headers)
    app.add_middleware(
        RequestContextMiddleware, on_complete=metrics.observe_request, error_response=internal_error_asgi
    )
    # Outside the request context: the 500 that one answers for an unexpected error carries the same
    # headers (nosniff, no-referrer, HSTS) as every other answer.
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.public_url.startswith("https://"),
                       no_store_prefix=api_prefix + "/" if no_store_api else None)
    return app
