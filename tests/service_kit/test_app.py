"""create_service_app: lifespan hooks (migrations at start-up), state, and the PostgreSQL fixture's hint."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from service_kit.app import create_service_app
from service_kit.db import Database, consume_once
from service_kit.migrations import run_migrations_async
from service_kit.settings import ServiceSettings
from tests.service_kit.sample_models import Nonce
from tests.support.postgres import PostgresCluster, PostgresUnavailable
from tests.support.servers import serve

SAMPLE_MIGRATIONS = Path(__file__).parent / "sample_migrations"


def test_lifespan_hooks_run_in_order_and_migrate_before_serving(tmp_path: Path) -> None:
    events: list[str] = []
    url = f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}"
    db = Database(url)

    @contextlib.asynccontextmanager
    async def migrate(app: FastAPI) -> AsyncIterator[None]:
        await run_migrations_async(SAMPLE_MIGRATIONS, url)
        events.append("migrated")
        yield
        events.append("migrate-exit")

    @contextlib.asynccontextmanager
    async def seed(app: FastAPI) -> AsyncIterator[None]:
        async with app.state.db.session() as s:
            s.add(Nonce(value="n", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)))
        events.append("seeded")
        yield
        events.append("seed-exit")

    settings = ServiceSettings(data_dir=tmp_path)
    app = create_service_app(
        name="svc", version="9", settings=settings, db=db, lifespan_hooks=[migrate, seed], configure_logs=False
    )

    @app.post("/v1/redeem/{value}")
    async def redeem(value: str) -> dict[str, bool]:
        async with app.state.db.session() as s:
            return {"redeemed": await consume_once(s, Nonce, value=value) is not None}

    assert app.state.api_prefix == "/v1" and app.state.settings is settings and app.state.service_name == "svc"
    with serve(app) as base:
        assert events == ["migrated", "seeded"]
        assert httpx.post(f"{base}/v1/redeem/n").json() == {"redeemed": True}
        assert httpx.post(f"{base}/v1/redeem/n").json() == {"redeemed": False}
    assert events == ["migrated", "seeded", "seed-exit", "migrate-exit"]


def test_missing_postgres_binaries_fail_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTERA_TEST_POSTGRES_URL", raising=False)
    monkeypatch.setenv("CARTERA_PG_BIN", "/nonexistent/pg/bin")
    with pytest.raises(PostgresUnavailable, match="scripts/ensure-test-deps.sh"):
        PostgresCluster().start()


def test_no_opentelemetry_spans_even_with_a_tracer_provider_configured(tmp_path: Path) -> None:
    """FastAPI's native telemetry would open a span per request, with the raw path (an offer id, a
    code) in it, as soon as a tracer provider is configured: the service apps switch it off."""
    from opentelemetry import trace

    asked: list[str] = []

    class RecordingProvider(trace.TracerProvider):  # a configured provider, as an SDK's would be
        def get_tracer(self, name: str, *args: object, **kwargs: object) -> trace.Tracer:
            asked.append(name)
            return trace.NoOpTracer()

    app = create_service_app(name="svc", version="9", settings=ServiceSettings(data_dir=tmp_path), db=None,
                             configure_logs=False)

    @app.get("/v1/offers/{offer_id}")
    async def offer(offer_id: str) -> dict[str, str]:
        return {"ok": offer_id[:0]}

    # The provider goes where FastAPI looks first (its own config), not into OpenTelemetry's global,
    # which can be set once per process.
    app._telemetry["tracer_provider"] = RecordingProvider()  # type: ignore[attr-defined]
    with serve(app) as base:
        assert httpx.get(f"{base}/v1/offers/o_secret-offer-id").status_code == 200
    assert asked == []
