"""Shared plumbing for Cartera's FastAPI services (issuer, verifier, wallet API).

One small package so the services do not copy settings, database sessions, error handlers, logging,
metrics, health checks and security middleware into each other. Each module does one job:

- :mod:`service_kit.settings` — ``ServiceSettings``, configuration from environment variables.
- :mod:`service_kit.db` — ``Database`` (async engine and sessions), ``make_base``, ``consume_once``.
- :mod:`service_kit.migrations` — ``run_migrations`` and ``configure_env`` for Alembic.
- :mod:`service_kit.errors` — ``APIError`` and ``install_error_handlers`` (OAuth-style JSON errors).
- :mod:`service_kit.logging` — JSON log lines, request ids, access log.
- :mod:`service_kit.metrics` — per-app Prometheus registry and ``/metrics``.
- :mod:`service_kit.health` — ``/healthz`` and ``/readyz``.
- :mod:`service_kit.security` — body-size limit, security headers, CORS.
- :mod:`service_kit.crypto` — ``SecretBox`` (secrets at rest), master key loading, API key hashing.
- :mod:`service_kit.webhooks` — signed webhooks, delivery with retries, an outbox mixin.
- :mod:`service_kit.app` — ``create_service_app`` wiring all of the above.
- :mod:`service_kit.server` — ``serve`` running uvicorn with an app factory.

It never imports ``issuer``, ``verifier`` or ``wallet_api``: they import it.
"""

from __future__ import annotations
