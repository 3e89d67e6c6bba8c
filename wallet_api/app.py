"""The wallet API application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from service_kit.app import create_service_app
from service_kit.crypto import SecretBoxError, load_master_key
from service_kit.db import Database
from service_kit.errors import error_response
from service_kit.migrations import run_migrations_async
from service_kit.ratelimit import build_limiter

from . import __version__
from .context import WalletContext, load_anchors, master_box
from .models import RateLimitBucket
from .settings import WalletSettings
from .vault import Vault, VaultError

MIGRATIONS = Path(__file__).parent / "migrations"
SETTINGS_CLASS = WalletSettings  # what create_app builds from; service_kit.server reads host/port from it
#: What a request whose wallet data does not open answers (500 ``server_error``): no code, no value.
UNREADABLE_DESCRIPTION = "stored data of this wallet could not be opened"

log = logging.getLogger(__name__)


async def stored_data_unreadable(request: Request, exc: Exception) -> JSONResponse:
    """A sealed row (or a wallet's data key) that does not open — tampered with, corrupted, or sealed
    under a key the service does not have — escaped a request: 500 ``server_error`` with a fixed
    description, and one error log line with the error's code and the wallet id (never a value)."""
    assert isinstance(exc, VaultError | SecretBoxError)
    wallet_id = getattr(exc, "wallet_id", None) or getattr(request.state, "wallet_id", None)
    log.error("stored data of a wallet could not be opened", extra={"code": exc.code, "wallet": wallet_id})
    return error_response(500, "server_error", UNREADABLE_DESCRIPTION)

DESCRIPTION = """The citizen's cloud wallet: login (VÀLid, OpenID Connect), an encrypted vault, receiving
credentials by OpenID4VCI, sharing them by OpenID4VP with explicit consent, history, alerts and backups.
Every `/v1/` route except the login steps needs `Authorization: Bearer <access token>`."""


def create_app(settings: WalletSettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None,
               run_background: bool = True) -> FastAPI:
    """Build the wallet API. ``transport`` replaces the outgoing HTTP transport (tests of odd peers);
    ``run_background=False`` leaves the periodic sweeps (status, expiry, deferred) and the alert webhook
    delivery to explicit calls."""
    from .background import background_loop, webhook_loop
    from .pin import record_pins_in_profiles, seal_legacy_pin_hashes
    from .routes import alerts, audit, auth, backup, credentials, history, offers, presentations, web
    from .store import copy_fallback, keep_binding_legacy_copies

    settings = settings or WalletSettings()
    db = Database.from_settings(settings)
    ctx = WalletContext(settings=settings, db=db, vault=Vault(master_box(settings)),
                        issuer_anchors=load_anchors(settings.issuer_anchor_files),
                        rp_anchors=load_anchors(settings.rp_anchor_files), transport=transport)

    @contextlib.asynccontextmanager
    async def migrate(_app: FastAPI) -> AsyncIterator[None]:
        await run_migrations_async(MIGRATIONS, settings.database_url)
        await ctx.vault.ensure_index_key(db)
        # Until each has recorded its marker (only once every wallet it must change had its data key
        # opened: a wrong key at this start-up leaves those rows for the next one, not unusable for
        # good; after its first run, only the rows it left are revisited, and only while they hold the
        # value it saw): the PIN hashes earlier versions stored unsealed get sealed (an unsealed one is refused);
        # the wallets with a PIN from earlier versions get it recorded in their sealed profile, so that a
        # NULL pin_hash written into the database reads as tampering, not as "no PIN". Awaited (an
        # unsealed hash is refused until sealed); once its marker is there, each is one read.
        await seal_legacy_pin_hashes(db, ctx.vault)
        await record_pins_in_profiles(db, ctx.vault)
        # Once: the credential copies earlier versions sealed without naming their credential, sealed
        # again in the background. Until that pass has completed they open as before (after its first run,
        # only those it left), so start-up need not wait for it (minutes with millions of copies).
        bound = await copy_fallback(db, ctx.vault)
        binding = None if bound else asyncio.create_task(keep_binding_legacy_copies(db, ctx.vault))
        _app.state.copy_binding = binding  # tests await it
        try:
            yield
        finally:
            if binding is not None:
                binding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await binding

    @contextlib.asynccontextmanager
    async def sweeps(_app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        tasks = []
        if run_background and settings.background_interval > 0:
            tasks.append(asyncio.create_task(background_loop(ctx)))
        if run_background and settings.webhook_url:
            tasks.append(asyncio.create_task(webhook_loop(ctx)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # A backup holds every credential (and its batch copies): more than an API call, so its own limit.
    app = create_service_app(name="wallet", version=__version__, settings=settings, db=db,
                             lifespan_hooks=(migrate, sweeps), description=DESCRIPTION,
                             body_limits={"/v1/backup/import": settings.max_backup_bytes},
                             # Every API answer is the citizen's: none may stay in a browser cache after logout.
                             no_store_api=True,
                             # The history's paging cursor, for a web app served from another origin.
                             exposed_headers=[history.NEXT_HEADER])
    app.state.wallet = ctx
    ctx.sweeps_counter = app.state.metrics.counter(
        "cartera_wallet_sweeps_total", "Background sweeps completed (status checks, expiry alerts, deferred "
        "polls, purges), by every worker.")
    ctx.sweep_failures = app.state.metrics.counter(
        "cartera_wallet_sweep_job_failures_total", "Background sweep jobs that failed (retried next sweep).", ["job"])
    app.add_exception_handler(VaultError, stored_data_unreadable)
    app.add_exception_handler(SecretBoxError, stored_data_unreadable)
    app.state.rate_limiter = build_limiter(settings, db, RateLimitBucket, load_master_key(settings))
    api = APIRouter()
    for module in (auth, offers, credentials, presentations, history, alerts, backup, audit):
        api.include_router(module.router)
    app.include_router(api, prefix=app.state.api_prefix)
    app.include_router(web.router)  # the web wallet under /app/, a client of the /v1 API above
    return app
