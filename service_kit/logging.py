"""JSON log lines, request ids and the access log.

Each log record is one JSON object on stderr: ``time``, ``level``, ``logger``, ``message``,
``request_id``, ``service`` and any ``extra=`` fields the caller passed. The request-id middleware takes
a sane incoming ``X-Request-Id`` or makes one, echoes it in the response and puts it in a context
variable so every record logged while handling the request carries it.

What is never logged here: exception messages (a traceback names each exception's type only, and
the event loop's handler, :func:`loop_exception_handler`, does not quote the exception either),
query strings (they carry authorization codes, tokens and ``AccessToken``
parameters), request or response bodies, headers. The access log names the route template
(``/v1/offers/{offer_id}``), not the raw path, for the same reason.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import secrets
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from typing import IO, Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode()
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_HANDLER_MARK = "_cartera_json_handler"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

access_logger = logging.getLogger("cartera.access")


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return request_id_var.get()


def new_request_id() -> str:
    """A fresh random request id (128 bits, hex)."""
    return secrets.token_hex(16)


def sane_request_id(value: str | None) -> str | None:
    """``value`` if it is a short token safe to echo and log, else ``None``."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


class JSONFormatter(logging.Formatter):
    """Format records as one-line JSON objects."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
            "service": self.service,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging.Formatter's name
        """The traceback with each exception's type, never its message: a message may quote the data
        being handled (a claim value, a subject's identifier, a token), and logs keep none of it."""
        _type, value, _tb = ei
        if value is None:
            return ""
        lines: list[str] = []
        for exc in _chain(value):
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
            lines.append(f"{type(exc).__module__}.{type(exc).__qualname__} (message not logged)\n")
        return "".join(lines).rstrip("\n")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes and contexts, oldest first (as Python prints them)."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain[::-1]


def configure_logging(service: str, level: str = "info", *, stream: IO[str] | None = None) -> None:
    """Send every log record (ours, uvicorn's, libraries') as JSON lines to ``stream`` (stderr).

    Idempotent: calling it again replaces the handler it installed before. uvicorn's own access log is
    silenced because it prints the raw path with its query string; ours replaces it.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter(service))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    uvicorn_access.disabled = True
    # httpx logs every outgoing request's full URL at INFO: those URLs carry codes and tokens too
    # (credential offers, getUserInfo?AccessToken=...). Keep only its warnings.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def loop_exception_handler(_loop: Any, context: dict[str, Any]) -> None:
    """The event loop's handler for errors nobody received ("Task exception was never retrieved"...).

    asyncio's own writes the task's repr, which quotes the exception's message (``exception=
    ValueError('...')``); this one logs asyncio's message, the exception's type and the coroutine's
    name, nothing the exception says."""
    exc = context.get("exception")
    future = context.get("future")
    coro = future.get_coro() if hasattr(future, "get_coro") else None
    logging.getLogger("asyncio").error(
        str(context.get("message") or "unhandled error in the event loop"),
        extra={"error": type(exc).__name__ if exc is not None else None,
               "coroutine": getattr(coro, "__qualname__", None)})


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/offers/{offer_id}``), or ``"unmatched"``.

    Never the raw path: it would put identifiers and codes into logs and metric labels.
    """
    # Recent FastAPI keeps included routers nested: scope["route"] then holds the route's own path
    # without the router prefixes, and the full template is only on FastAPI's effective route context.
    # Read it defensively (it is not public API); the tests pin the behaviour.
    fastapi_scope = scope.get("fastapi")
    context = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    full = getattr(context, "path_format", None)
    if isinstance(full, str) and full:
        return scope.get("root_path", "").rstrip("/") + full
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path, str):
        return "unmatched"
    return scope.get("root_path", "").rstrip("/") + path


class RequestContextMiddleware:
    """Request id, access log, catch-all for unexpected errors and per-request metrics.

    Outermost of Cartera's middlewares so that every response, including a 500, carries the
    ``X-Request-Id`` header and is counted. ``on_complete(method, route, status, seconds)`` is called
    once per request (the metrics hook).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        on_complete: Callable[[str, str, int, float], None] | None = None,
        error_response: Callable[[str], tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None,
    ) -> None:
        self.app = app
        self.on_complete = on_complete
        self.error_response = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == _REQUEST_ID_NAME:
                incoming = value.decode("latin-1")
                break
        request_id = sane_request_id(incoming) or new_request_id()
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        recorded = False

        def record() -> None:
            # Once per request, just before the last body chunk goes out: by the time a client has the
            # whole response, its access line and metrics exist (tests and log readers rely on that).
            nonlocal recorded
            if recorded:
                return
            recorded = True
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope.get("method", "")
            if access_logger.isEnabledFor(logging.INFO):  # the extra fields cost more than the check
                access_logger.info(
                    "request",
                    extra={"method": method, "route": route, "status": status, "duration_ms": round(elapsed * 1000, 2)},
                )
            if self.on_complete is not None:
                self.on_complete(method, route, status, elapsed)

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _REQUEST_ID_NAME]
                headers.append((_REQUEST_ID_NAME, request_id.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logging.getLogger("cartera.errors").exception(
                "unhandled error", extra={"method": scope.get("method"), "route": route_template(scope)}
            )
            if response_started:
                raise
            status, headers, body = (
                self.error_response(request_id)
                if self.error_response
                else (500, [(b"content-type", b"text/plain")], b"internal error")
            )
            headers = [*headers, (b"x-request-id", request_id.encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            record()
            await send({"type": "http.response.body", "body": body})
        finally:
            record()
            request_id_var.reset(token)
