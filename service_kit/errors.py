"""One JSON error shape for every failure: ``{"error": ..., "error_description": ...}``.

That is the OAuth 2.0 / OpenID4VCI / OpenID4VP error body, so protocol endpoints and admin endpoints
answer alike. Services raise :class:`APIError` with the protocol's code (``invalid_grant``,
``invalid_proof``...); everything else is mapped here:

- request validation errors → 400 ``invalid_request`` naming the offending fields (never their values,
  which may be secrets), malformed JSON → 400 ``invalid_request``;
- ``HTTPException`` (404, 405, 413...) → the same shape with a code derived from the status;
- ``ssi.errors.SSIError`` escaping a handler → 400 ``invalid_request`` with its stable ``code``;
- a value the database cannot store as text (PostgreSQL refusing a NUL in text or ``\\u0000`` in
  ``jsonb``, the driver failing to encode a lone UTF-16 surrogate) → 400 ``invalid_request``: the
  backstop behind :class:`service_kit.security.UnstorableInputMiddleware`, which refuses those in the
  request itself, for a value an endpoint decoded from a deeper encoding (its transaction rolled back);
- the database unreachable (refused or dropped connections, a server shutting down or starting up,
  a full pool, a connect timeout) → 503 ``temporarily_unavailable`` with ``Retry-After``: an outage
  the client may retry through, not a bug (see docs/operations.md, "Failure behaviour"). Python's own
  ``ConnectionError``/``TimeoutError`` count only when the database driver raised them;
- any other exception → 500 ``server_error`` "internal error (request id ...)" with no stack trace in
  the body; it is logged with the request id (see :class:`service_kit.logging.RequestContextMiddleware`).

Error responses carry ``Cache-Control: no-store``: they may concern codes or tokens. Every
``error_description`` answered is printable ASCII without ``"`` and ``\\`` (RFC 6749 §5.2), whatever a
handler put in it (see :func:`safe_description`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import unicodedata
from collections.abc import Mapping
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service_kit.logging import current_request_id
from ssi.errors import SSIError

_STATUS_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "access_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "temporarily_unavailable",
}

ERROR_HEADERS = {"Cache-Control": "no-store"}


class APIError(Exception):
    """An error answered to the client as ``{"error", "error_description"}`` with ``status_code``.

    ``error`` is a protocol error code (``invalid_request``, ``invalid_grant``...); the description is a
    human-readable sentence that must not contain secrets or claim values. ``extra`` adds members to the
    body (for example ``c_nonce``), ``headers`` adds response headers (for example ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status_code: int,
        error: str,
        error_description: str = "",
        headers: Mapping[str, str] | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.status_code = status_code
        self.error = error
        self.error_description = error_description or error
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{status_code} {error}: {self.error_description}")

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return {"error": self.error, "error_description": self.error_description, **self.extra}


def safe_description(text: str, limit: int | None = None) -> str:
    """``text`` within RFC 6749's ``error_description`` characters (%x20-21 / %x23-5B / %x5D-7E): accents
    dropped (``À`` → ``A``), ``"`` → ``'``, ``\\`` → ``/``, any other character → ``?``. With ``limit``,
    cut to that many characters and marked with ``...`` (for a client-chosen name quoted in a message)."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return "".join(_REPLACEMENTS.get(c, c) if " " <= c <= "~" else "?" for c in text)


_REPLACEMENTS = {'"': "'", "\\": "/"}


def error_response(
    status_code: int,
    error: str,
    error_description: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A ``JSONResponse`` in the common error shape."""
    body = {"error": error, "error_description": safe_description(error_description), **(extra or {})}
    return JSONResponse(body, status_code=status_code, headers={**ERROR_HEADERS, **(headers or {})})


def internal_error_body(request_id: str) -> bytes:
    """The body of a 500 answer: no detail beyond the request id to quote to the operator."""
    return json.dumps(
        {"error": "server_error", "error_description": f"internal error (request id {request_id})"}
    ).encode()


def internal_error_asgi(request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of a 500 answer, for the catch-all middleware."""
    body = internal_error_body(request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    return 500, headers, body


def describe_validation_errors(errors: list[Any]) -> str:
    """A readable summary of validation errors naming locations and problems, never input values."""
    parts: list[str] = []
    for err in errors[:10]:
        if not isinstance(err, Mapping):
            continue
        if err.get("type") == "json_invalid":
            return "request body is not valid JSON"
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc) if loc else "body"
        kind = str(err.get("type", "invalid"))
        message = _MESSAGES.get(kind) or str(err.get("msg", "invalid value"))
        parts.append(f"{where}: {message}")
    if len(errors) > 10:
        parts.append(f"and {len(errors) - 10} more")
    return "; ".join(parts) or "invalid request"


# Pydantic's messages for these echo the offending input (e.g. "Input should be 'a' or 'b'" is fine,
# but value_error messages come from our own validators and may quote input): prefer fixed texts.
_MESSAGES: dict[str, str] = {
    "missing": "required",
    "extra_forbidden": "unexpected member",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "model_attributes_type": "must be an object",
    "value_error": "invalid value",
    "assertion_error": "invalid value",
    "string_too_long": "too long",
    "string_too_short": "too short",
    "string_pattern_mismatch": "does not match the expected format",
    "url_parsing": "must be a URL",
    "url_scheme": "URL scheme not allowed",
}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the common JSON shape."""

    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return error_response(exc.status_code, exc.error, exc.error_description, exc.headers, exc.extra)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, "invalid_request", describe_validation_errors(list(exc.errors())))

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code) or ("server_error" if exc.status_code >= 500 else "invalid_request")
        description = exc.detail if isinstance(exc.detail, str) and exc.detail else code.replace("_", " ")
        return error_response(exc.status_code, code, description, exc.headers)

    async def ssi_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SSIError)
        # Errors of a server-side dependency (a PKCS#11 token: service_kit.pkcs11) carry their own status.
        status = getattr(exc, "http_status", 400)
        error = _STATUS_CODES.get(status) or ("server_error" if status >= 500 else "invalid_request")
        return error_response(status, error, exc.detail, extra={"code": exc.code})

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SSIError, ssi_error)

    async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        if unstorable_value(exc):
            return _unstorable_answer(exc)
        if not _database_outage(exc):
            raise exc
        logging.getLogger("cartera.errors").warning("database unavailable (%s)", type(exc).__name__)
        return error_response(503, "temporarily_unavailable", "the service's database is unavailable; retry shortly",
                              {"Retry-After": "2"})

    for kind in DATABASE_OUTAGE_ERRORS:
        app.add_exception_handler(kind, database_unavailable)

    async def unencodable(_request: Request, exc: Exception) -> JSONResponse:
        # SQLite's driver raises Python's own UnicodeEncodeError for a lone surrogate.
        if not unstorable_value(exc):
            raise exc
        return _unstorable_answer(exc)

    app.add_exception_handler(UnicodeEncodeError, unencodable)


#: SQLSTATEs of PostgreSQL refusing a character: a NUL in text (22021 character_not_in_repertoire) or
#: ``\u0000`` in jsonb (22P05 untranslatable_character).
_UNSTORABLE_SQLSTATES = ("22021", "22P05")


def unstorable_value(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a value as text: PostgreSQL's NUL (in text or jsonb), or
    the driver unable to encode a lone surrogate (asyncpg's DataError from a ``UnicodeEncodeError``,
    SQLite's ``UnicodeEncodeError`` itself). Never true for an error that is not the database's."""
    if isinstance(exc, UnicodeEncodeError):
        return _from_driver(exc)
    if not isinstance(exc, (sqlalchemy.exc.DBAPIError, *_ADAPTER_ERRORS)):
        return False
    current: BaseException | None = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    for _ in range(4):  # the adapter's error, asyncpg's, the codec's
        if current is None:
            return False
        if getattr(current, "sqlstate", None) in _UNSTORABLE_SQLSTATES or isinstance(current, UnicodeEncodeError):
            return True
        current = current.__cause__
    return False


def _unstorable_answer(exc: BaseException) -> JSONResponse:
    # The value is never logged; the type says which layer refused it (the request check missed it).
    logging.getLogger("cartera.errors").warning("a value the database cannot store (%s)", type(exc).__name__)
    return error_response(400, "invalid_request", "the request contains a value that cannot be stored "
                                                  "(a NUL character or an unpaired UTF-16 surrogate)")


#: Exceptions that may mean "the database cannot be reached now"; DBAPIError only when it is about the
#: connection, never for an integrity or programming error, and the builtin ConnectionError and
#: TimeoutError only when the driver raised them (see :func:`_database_outage`).
DATABASE_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError, ConnectionError, TimeoutError)
try:  # PostgreSQL's driver raises its own classes for a server that is starting, stopping or full.
    import asyncpg.exceptions as _pg
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

    # SQLAlchemy's DB-API adapter error escapes unwrapped when a raw pool connection fails to open.
    _ADAPTER_ERRORS: tuple[type[BaseException], ...] = (AsyncAdapt_asyncpg_dbapi.Error,)
    DATABASE_OUTAGE_ERRORS += (_pg.PostgresConnectionError, _pg.OperatorInterventionError,
                               _pg.InsufficientResourcesError, *_ADAPTER_ERRORS)
except ImportError:  # pragma: no cover - SQLite-only installation
    _ADAPTER_ERRORS = ()


#: SQLSTATE classes of an unreachable server: connection exception (08), operator intervention
#: (57P: shutting down, starting up) and insufficient resources (53: too many connections).
_OUTAGE_SQLSTATES = ("08", "57P", "53")


def _database_outage(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
                exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        orig: BaseException | None = exc.orig
    elif isinstance(exc, _ADAPTER_ERRORS):
        orig = exc
    elif isinstance(exc, ConnectionError | TimeoutError):
        # Python's own classes: anyone's (an outbound call, an asyncio.timeout of the service's). The
        # database's only when the driver raised them (a refused connect comes out of asyncpg as is).
        return _from_driver(exc)
    else:
        return True
    # The driver's own exception (asyncpg's, behind SQLAlchemy's adapter) says what happened.
    for cause in (orig, getattr(orig, "__cause__", None)):
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATES):
            return True
        if isinstance(cause, ConnectionError | TimeoutError):
            return True
    return False


#: Modules of the database stack: an exception raised in or through them is the database's.
_DRIVER_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.", "sqlite3", "_sqlite3")


def _from_driver(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it comes from (``__cause__``/``__context__``), is the database
    driver's: one of its classes, or raised through its code (a frame of its traceback is the driver's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.SQLAlchemyError | sqlite3.Error) \
                or type(current).__module__.startswith(_DRIVER_MODULES):
            return True
        tb = current.__traceback__
        while tb is not None:
            if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return False


def request_id_of(request: Request) -> str:
    """The id of ``request`` (set by the request-context middleware)."""
    return str(getattr(request.state, "request_id", None) or current_request_id() or "")
