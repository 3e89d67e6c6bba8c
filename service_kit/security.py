"""HTTP hardening: request body size limit, security headers, CORS for configured origins only.

All are plain ASGI middlewares (no ``BaseHTTPMiddleware``): they do not buffer bodies and keep
streaming responses streaming.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from service_kit.errors import error_response
from service_kit.logging import ASGIApp, Message, Receive, Scope, Send

HTML_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when the streamed body passes the limit (FastAPI re-raises it as is)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodySizeLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413 in the common JSON error shape.

    Checked twice: on ``Content-Length`` before anything is read, and while the body streams (chunked
    requests have no length, and a client may lie about it). ``path_limits`` gives the few endpoints
    with larger legitimate bodies (a wallet backup import) their own limit, by exact path.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await self._refuse(scope, receive, send, 400, "invalid_request", "bad Content-Length")
                    return
                if declared > limit:
                    await self._refuse(scope, receive, send, 413, "request_too_large",
                                       f"request body larger than {limit} bytes")
                    return
        received = 0
        exceeded = False
        response_started = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started, replaced
            if replaced:
                return  # the rest of the app's own answer, already replaced by the 413
            if message["type"] == "http.response.start":
                response_started = True
                if exceeded and message["status"] != 413:
                    # The app turned our exception into something else (e.g. a generic 400): answer 413
                    # instead and drop the app's answer (raising here would make Starlette log an
                    # "exception in ASGI application" for a plain client error).
                    replaced = True
                    await self._send_413(scope, receive, send, limit)
                    return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not response_started:
                await self._send_413(scope, receive, send, limit)

    async def _send_413(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        await self._refuse(scope, receive, send, 413, "request_too_large",
                           f"request body larger than {limit} bytes")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, error: str, text: str) -> None:
        # Closing the connection tells the client to stop sending the rest of a large body.
        response = error_response(status, error, text, headers={"Connection": "close"})
        await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """Add security headers the app did not set itself.

    Every response: ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``. HTML
    responses also: a ``Content-Security-Policy`` (``default-src 'self'; frame-ancestors 'none'``...) and
    ``X-Frame-Options: DENY``. A page that needs another policy (e.g. with a nonce) sets its own.

    ``no_store_prefix``: every response under that path says ``Cache-Control: no-store`` and ``Pragma:
    no-cache``, whatever the route set (a service whose every API answer is personal: the wallet's
    credentials, history, the citizen's name and logins must not stay in a browser's or a proxy's
    cache after logout, where anyone at that browser could read them back).
    """

    def __init__(self, app: ASGIApp, *, hsts: bool = False, no_store_prefix: str | None = None) -> None:
        self.app = app
        self.hsts = hsts
        self.no_store_prefix = no_store_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        no_store = self.no_store_prefix is not None and scope.get("path", "").startswith(self.no_store_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if no_store:
                    headers = [(k, v) for k, v in headers if k.lower() not in (b"cache-control", b"pragma")]
                    headers += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
                present = {name.lower() for name, _ in headers}
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                extra: list[tuple[bytes, bytes]] = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if content_type.startswith(b"text/html"):
                    extra += [
                        (b"content-security-policy", HTML_CSP.encode()),
                        (b"x-frame-options", b"DENY"),
                    ]
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                headers += [(k, v) for k, v in extra if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def no_store(response: Response) -> None:
    """FastAPI dependency: mark the response ``Cache-Control: no-store`` (tokens, nonces, credentials).

    Use as ``@router.post("/nonce", dependencies=[Depends(no_store)])``. ``async`` although it awaits
    nothing: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
    """
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


def install_cors(app: FastAPI, origins: Sequence[str], exposed: Sequence[str] = ()) -> None:
    """Allow browser calls from exactly ``origins``; with none configured, add nothing at all.
    ``exposed``: the API's own response headers those calls may read, besides ``X-Request-Id``."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_credentials=False,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "DPoP", "X-Request-Id"],
        expose_headers=["X-Request-Id", *exposed],
        max_age=600,
    )
