"""A SQL table as a data source: a SQLAlchemy URL and a parameterised query.

The query names the subject only through bind parameters (``:identifier``, and optionally
``:identifier_type`` and ``:selector``); values are never formatted into SQL text. The query must
be a single ``SELECT`` (or ``WITH ... SELECT``); give the adapter a read-only database account.

Rows: none → :class:`SubjectNotFound`; one → the record; several → with ``list_field`` all rows
become a list under that name (for example household members), otherwise the query is ambiguous
and the answer is refused (:class:`BadSourceAnswer`). Dates become ISO strings, decimals numbers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from .base import (
    BadSourceAnswer,
    Claims,
    Evidence,
    SourceConfigError,
    SourceContext,
    SourceRefused,
    SourceUnavailable,
    Subject,
    SubjectNotFound,
    check_fields,
    check_timeout,
    reshape,
    with_subject,
)

if TYPE_CHECKING:
    from credential_schemas import CredentialType

_SELECT = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)
_PARAM = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")
ALLOWED_PARAMS = frozenset({"identifier", "identifier_type", "selector"})
MAX_ROWS = 1000


def _plain(value: Any) -> Any:
    """A database value as JSON-like data, so mappings see the same types as from other sources."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise BadSourceAnswer("the query returned binary data")
    return value


class SqlSource:
    """Fetch a subject's record from a SQL database (any SQLAlchemy URL; SQLite by default in tests).

    Settings: ``url``, ``query`` (with ``:identifier``), ``fields`` (record path → column or
    ``list_field[].column``), ``list_field``, ``product`` (name in the evidence), ``timeout`` (seconds,
    above 0, at most 120, as the other adapters).
    """

    def __init__(self, *, url: str, query: str, fields: dict[str, str] | None = None, list_field: str | None = None,
                 product: str = "sql", name: str = "sql", timeout: float = 10.0) -> None:
        if not isinstance(query, str) or not _SELECT.match(query) or ";" in query.strip().rstrip(";"):
            raise SourceConfigError("query must be a single SELECT statement")
        params = set(_PARAM.findall(query))
        if "identifier" not in params:
            raise SourceConfigError("query must use the bind parameter :identifier")
        if params - ALLOWED_PARAMS:
            raise SourceConfigError(f"unknown bind parameter(s): {', '.join(sorted(params - ALLOWED_PARAMS))}")
        if list_field is not None and (not isinstance(list_field, str) or not list_field.isidentifier()):
            raise SourceConfigError("list_field must be a simple name")
        timeout = check_timeout(timeout)
        try:
            # A pooled connection to a server can go stale (restart, idle timeout): ping it before
            # use. A SQLite file cannot, and the ping cost 20 µs of every query.
            self.engine: Engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"), hide_parameters=True)
        except (ArgumentError, SQLAlchemyError, ImportError, ValueError) as exc:
            raise SourceConfigError("url is not a usable SQLAlchemy database URL") from exc
        self.statement = text(query)
        self.params = params
        self.fields = check_fields(fields)
        self.list_field = list_field
        self.product = product
        self.name = name
        self.timeout = timeout

    def _query(self, subject: Subject, context: SourceContext) -> list[dict[str, Any]]:
        values = {"identifier": subject.identifier, "identifier_type": subject.identifier_type,
                  "selector": context.selector}
        try:
            conn = self.engine.connect()
        except (DBAPIError, SQLAlchemyError) as exc:
            raise SourceUnavailable("the database could not be reached") from exc
        try:
            with conn:
                result = conn.execute(self.statement, {k: v for k, v in values.items() if k in self.params})
                rows = result.mappings().fetchmany(MAX_ROWS + 1)
        except DBAPIError as exc:
            # A dropped connection is transient; anything else (a missing table, a type error) is
            # the configured query failing and will fail again.
            if exc.connection_invalidated:
                raise SourceUnavailable("the database connection was lost") from exc
            raise BadSourceAnswer("the database refused the configured query") from exc
        except SQLAlchemyError as exc:
            raise BadSourceAnswer("the database refused the configured query") from exc
        if len(rows) > MAX_ROWS:
            raise BadSourceAnswer("the query returned too many rows")
        return [{str(k): _plain(v) for k, v in row.items()} for row in rows]

    async def fetch(self, credential_type: CredentialType, subject: Subject, context: SourceContext) -> Claims:
        """Run the query for ``subject`` in a worker thread (drivers are blocking)."""
        try:
            # On timeout the worker thread is abandoned, not stopped: a blocking driver call cannot be
            # interrupted. (asyncio's own thread hop: anyio's cost ~60 µs more per query.)
            async with asyncio.timeout(self.timeout):
                rows = await asyncio.to_thread(self._query, subject, context)
        except TimeoutError as exc:
            raise SourceUnavailable("the database did not answer in time") from exc
        if not rows:
            raise SubjectNotFound()
        if self.list_field is not None:
            data: dict[str, Any] = dict(rows[0])
            data[self.list_field] = rows
        elif len(rows) > 1:
            raise BadSourceAnswer("the query returned several rows for one subject; set list_field or narrow it")
        else:
            data = rows[0]
        record = with_subject(reshape(data, self.fields), subject)
        return Claims(record=record, evidence=Evidence.build(context, product=self.product, source=self.name))

    async def poll(self, reference: str, credential_type: CredentialType, subject: Subject,
                   context: SourceContext) -> Claims:
        """A database answers synchronously: there is nothing to poll."""
        raise SourceRefused("this source answers synchronously; there is no pending query to poll")

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()
