"""Stand-ins for the other side of an outgoing call, served with :func:`tests.support.servers.serve`:
a webhook receiver that records what it gets, and a peer answering a compressed bomb."""

from __future__ import annotations

import gzip

from fastapi import FastAPI, Request
from fastapi.responses import Response

#: 64 MiB of ASCII zeros (valid JSON digits), about 64 KiB once compressed.
GZIP_BOMB = gzip.compress(b"0" * (64 << 20), compresslevel=9)


def recording_receiver() -> tuple[FastAPI, list[bytes]]:
    """An app answering ``POST /hook`` with 200, and the list of the bodies it received, in order."""
    received: list[bytes] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        received.append(await request.body())
        return {"ok": "yes"}

    return app, received


def compressed_peer(media_type: str = "application/json") -> tuple[FastAPI, list[str | None]]:
    """An app answering ``GET /bomb`` with :data:`GZIP_BOMB` and ``GET /small`` with a small gzip of
    ``{"ok": true}``, whatever ``Accept-Encoding`` asked; and the list of the ``Accept-Encoding`` each
    ``/bomb`` request sent."""
    seen: list[str | None] = []
    app = FastAPI()

    @app.get("/bomb")
    async def bomb(request: Request) -> Response:
        seen.append(request.headers.get("accept-encoding"))
        return Response(GZIP_BOMB, media_type=media_type, headers={"Content-Encoding": "gzip"})

    @app.get("/small")
    async def small() -> Response:
        return Response(gzip.compress(b'{"ok": true}'), media_type=media_type, headers={"Content-Encoding": "gzip"})

    return app, seen
