"""HTTP hardening: request body size limit, unstorable characters refused, security headers, CORS
for configured origins only.

All are plain ASGI middlewares (no ``BaseHTTPMiddleware``): they keep streaming responses streaming.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote_to_bytes

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


UNSTORABLE_DESCRIPTION = ("the request contains a NUL character or an unpaired UTF-16 surrogate "
                         "(\\u0000, \\ud800...), which no field accepts")

#: A JSON escape that may stand for what no database column holds as text: ``\u0000``, or half of a
#: UTF-16 surrogate pair (fine when the other half follows, see :func:`_bad_json_escape`).
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_LOW_HALF = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _bad_json_escape(data: bytes) -> bool:
    """Whether ``data`` holds a JSON escape of a NUL or of a lone surrogate. An escape counts only after
    an even run of backslashes before its own: ``\\\\u0000`` is the six characters \\u0000, which are fine."""
    if b"\\" not in data:  # one memchr: most bodies hold no backslash at all
        return False
    paired = -1
    for match in _SUSPECT_ESCAPE.finditer(data):
        start = match.start()
        if start == paired:
            continue  # the low half of the pair just checked
        run = start
        while run and data[run - 1] == 0x5C:
            run -= 1
        if (start - run) % 2:
            continue  # an escaped backslash, then the text "u..."
        if data[start + 2:start + 6] == b"0000":
            return True
        if data[start + 3] | 0x20 not in b"89ab" or not _LOW_HALF.match(data, match.end()):
            return True  # a low half alone, or a high half without its low half
        paired = match.end()
    return False


def _is_json(text: bytes) -> bool:
    """Whether a form value, percent-decoded, is JSON text at all: then an endpoint may decode it
    (``vp_token``, ``authorization_details``), and its escapes count. As lenient as any parser an
    endpoint might use (raw control characters, long numbers, NaN and repeated names all pass), so
    that no JSON an endpoint would read is taken for plain text here."""
    try:
        json.loads(text.decode("utf-8", "replace").removeprefix("\ufeff"), strict=False,
                   parse_int=len, parse_float=len, parse_constant=len)
    except RecursionError:
        return True  # nested too deep to tell here: taken as JSON (refused), never let through
    except ValueError:
        return False
    return True


def unstorable_form(raw: bytes) -> bool:
    """Whether urlencoded ``raw`` (a query string or a form body) carries a NUL, raw or as ``%00``, or
    a value holding JSON (``vp_token``, ``authorization_details``) with one of the escapes above.

    Each value is looked at as the endpoints read it: split at ``&`` (both parsers the services use,
    ``urllib.parse.parse_qsl`` and python-multipart's, split there only), ``+`` a space, then
    percent-decoded. A value that is no JSON is plain text, where the six characters ``\\u0000`` are
    just that: a form's escapes are ``%XX`` only. (A percent-encoded surrogate is not a concern
    either: the parsers decode invalid UTF-8 to U+FFFD or refuse it.)"""
    if b"%00" in raw or b"\x00" in raw:
        return True
    if b"%5C" not in raw and b"%5c" not in raw and b"\\" not in raw:
        return False  # no backslash anywhere: no escape either
    for field in raw.split(b"&"):
        value = unquote_to_bytes(field.partition(b"=")[2].replace(b"+", b" "))
        if _bad_json_escape(value) and _is_json(value):
            return True
    return False


def unstorable_body(body: bytes, form: bool) -> bool:
    """Whether ``body`` carries a NUL byte, or an escape above: in JSON (any body not sent as a form is
    scanned as JSON would be read), or in a form's JSON-valued fields."""
    if form:
        return unstorable_form(body)
    return b"\x00" in body or _bad_json_escape(body)


class UnstorableInput(StarletteHTTPException):
    """Raised from ``receive`` when the body carries what no field accepts (FastAPI re-raises it as is)."""

    def __init__(self) -> None:
        super().__init__(400, UNSTORABLE_DESCRIPTION)


class UnstorableInputMiddleware:
    """Refuse a NUL character or a lone UTF-16 surrogate anywhere in the input with 400 ``invalid_request``.

    PostgreSQL stores no NUL in text (nor ``\\u0000`` in ``jsonb``) and asyncpg cannot encode a lone
    surrogate as UTF-8: such a value, once it reached a query, failed it with a 500. No legitimate
    value of any Cartera API holds one, so they are refused where the request comes in, before any
    work: in the path, in the query string (``%00``, or an escape in a JSON-valued parameter), and in
    the body — a NUL byte, a ``\\u0000`` or lone surrogate escape (``\\ud800``-``\\udfff``) in JSON,
    ``%00`` in a form, or such an escape in a form value that is itself JSON (a form's own escapes are
    ``%XX``: the text ``\\u0000`` in any other form value is six characters, and passes). A request
    with several Content-Type headers is checked as each kind they name. The body is checked as it is
    received (the endpoint's own read of it raises), at the cost of a substring search; only a body
    with ``\\u`` escapes is scanned further. Text with accents (raw UTF-8 or ``\\u00e8`` escapes),
    surrogate pairs and an escaped backslash followed by ``u0000`` pass.
    Deeper encodings (a base64url or percent-encoded value decoded by the endpoint) are met by the
    database backstop in :mod:`service_kit.errors`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or unstorable_form(scope.get("query_string", b"")):
            await self._refuse(scope, receive, send)
            return
        form = other = has_body = False
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                # Endpoints read the first Content-Type; a request sending several is checked as each
                # kind it names: as a form (where %00 is a NUL and \u0000 is text), and as JSON (where
                # the escape is the NUL) when any other type is there too.
                if value[:33].lower() == b"application/x-www-form-urlencoded":
                    form = True
                else:
                    other = True
            elif name == b"content-length":
                has_body = has_body or value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        flagged = False
        response_started = False

        async def checked_receive() -> Message:
            nonlocal flagged
            message = await receive()
            if message["type"] != "http.request" or flagged:
                return message
            body = message.get("body", b"")
            if message.get("more_body", False):
                parts.append(body)
                return message
            if parts:
                parts.append(body)
                body = b"".join(parts)
                parts.clear()
            if body and ((form and unstorable_body(body, True)) or ((other or not form) and unstorable_body(body, False))):
                flagged = True
                raise UnstorableInput()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if flagged:
                # Whatever the endpoint made of the exception (its own "cannot parse" error), the client
                # gets the one answer; the endpoint's is dropped.
                if message["type"] == "http.response.start" and not response_started:
                    response_started = True
                    await self._refuse(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, checked_receive, guarded_send)
        except UnstorableInput:
            if not response_started:
                await self._refuse(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(400, "invalid_request", UNSTORABLE_DESCRIPTION)(scope, receive, send)


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
