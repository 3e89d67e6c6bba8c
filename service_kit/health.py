"""Liveness and readiness probes.

``GET /healthz`` answers 200 while the process serves requests (a load balancer or orchestrator restarts
the process when it stops answering). ``GET /readyz`` answers 200 only when the database (and any extra
check the service adds) is reachable, else 503, so traffic is routed away without restarting anything.
Neither body names hosts, URLs or error messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service_kit.db import Database

ReadinessCheck = Callable[[], Awaitable[bool]]

NO_STORE = {"Cache-Control": "no-store"}


def health_router(db: Database | None, extra_checks: Mapping[str, ReadinessCheck] | None = None) -> APIRouter:
    """Routes ``/healthz`` and ``/readyz``; ``extra_checks`` add named readiness checks."""
    router = APIRouter()
    checks: dict[str, ReadinessCheck] = {}
    if db is not None:
        checks["database"] = db.ping
    checks.update(extra_checks or {})

    @router.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "service": request.app.title}, headers=NO_STORE)

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(_safe(checks[name]) for name in names))
        outcome = {name: ("ok" if ok else "unavailable") for name, ok in zip(names, results, strict=True)}
        ready = all(results)
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": outcome},
            status_code=200 if ready else 503,
            headers=NO_STORE,
        )

    return router


async def _safe(check: ReadinessCheck, timeout: float = 5.0) -> bool:
    try:
        return bool(await asyncio.wait_for(check(), timeout))
    except Exception:  # noqa: BLE001 - a failing check means "not ready", never a 500
        return False
