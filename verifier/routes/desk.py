"""The desk page for agency staff: choose a template, show the QR code, watch the result live.

Server-rendered (Jinja2) with a small plain script; no external resources, so the default CSP
(``default-src 'self'``) holds. The staff member's API key stays in the tab (``sessionStorage``) and is
sent as ``Authorization: Bearer`` to the agency API; the live status comes over Server-Sent Events
authorised by the request's watch token. Languages: ca, es, en (``?lang=`` or ``Accept-Language``).
When the Aries channel is enabled, a switch shows the same template as an out-of-band invitation QR
code instead (``POST /v1/aries/requests``), its result arriving on the same live view.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from service_kit.errors import APIError

router = APIRouter(tags=["desk"])

_HERE = Path(__file__).resolve().parent.parent
_env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(["html"]))
STATIC = {"desk.js": "text/javascript", "desk.css": "text/css"}
LANGS = ("ca", "es", "en")

TITLES = {"ca": "Taulell de verificació", "es": "Mostrador de verificación", "en": "Verification desk"}


def pick_language(request: Request, lang: str | None) -> str:
    """``lang`` when supported, else the first supported language of ``Accept-Language``, else ``ca``."""
    if lang in LANGS:
        return lang  # type: ignore[return-value]
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGS:
            return code
    return "ca"


@router.get("/desk", response_class=HTMLResponse, summary="Desk page for agency staff")
async def desk(request: Request, lang: str | None = None) -> HTMLResponse:
    language = pick_language(request, lang)
    # The channel switch appears only where the verifier runs the Aries (DIDComm) channel.
    aries = getattr(request.app.state, "aries", None)
    html = _env.get_template("desk.html").render(lang=language, title=TITLES[language], langs=LANGS,
                                                 aries=bool(aries is not None and aries.enabled))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/desk/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise APIError(404, "not_found", "no such file")
    return FileResponse(_HERE / "static" / name, media_type=STATIC[name])
