"""The citizen's web wallet (a progressive web app) served under ``/app/``.

The app is a static shell (``wallet_api/web/``: one HTML page, one plain script, one style sheet, a
vendored QR decoder, a manifest and a service worker) that talks only to the public ``/v1`` API with a
Bearer token, like any other wallet app. Nothing is rendered per citizen on the server, so these routes
need no authentication and hold no state. Every file is listed here: an unknown name is a 404, never a
path on disk.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from service_kit.errors import APIError

router = APIRouter(tags=["web wallet"], include_in_schema=False)

WEB = Path(__file__).resolve().parent.parent / "web"

#: The only files served, with their media types. The shell page answers every app route (``/app/``,
#: ``/app/callback``) so that a reload or the login redirect lands in the app.
FILES: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "sw.js": "text/javascript; charset=utf-8",
    "manifest.json": "application/manifest+json",
    "icon.svg": "image/svg+xml",
    "icon-192.png": "image/png",
    "icon-512.png": "image/png",
    "vendor/jsQR.js": "text/javascript; charset=utf-8",
    "vendor/jsQR.LICENSE.txt": "text/plain; charset=utf-8",
}

#: Same-origin only. The camera is reached through ``getUserMedia``, which CSP does not govern; the
#: Permissions-Policy lets this origin (and nothing framed) ask for it.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "media-src 'self'; worker-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'; object-src 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cache-Control": "no-cache",
    "X-Frame-Options": "DENY",
}


def _shell() -> Response:
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/app")
async def app_root() -> RedirectResponse:
    """The app's canonical URL ends with a slash (the service worker's scope)."""
    return RedirectResponse("/app/", status_code=308)


@router.get("/app/")
async def app_shell() -> Response:
    """The app shell."""
    return _shell()


@router.get("/app/callback")
async def app_callback() -> Response:
    """Where the login returns (``?code=&state=``): the shell, whose script redeems the one-time code."""
    return _shell()


@router.get("/app/{name:path}")
async def app_file(name: str) -> Response:
    """A static file of the app (only the listed ones)."""
    media_type = FILES.get(name)
    if media_type is None:
        raise APIError(404, "not_found", "no such file")
    headers = {"Cache-Control": "no-cache"}
    if name == "sw.js":
        # The worker controls /app/ only; it must be revalidated so that a new version replaces it.
        headers["Service-Worker-Allowed"] = "/app/"
    return FileResponse(WEB / name, media_type=media_type, headers=headers)
