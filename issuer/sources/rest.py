"""A REST/JSON registry as a data source: a URL template with ``{identifier}``, headers and auth from
configuration, an optional field mapping, timeouts and bounded retries for transient failures only.

Answers: 200 with a JSON object → :class:`Claims`; 404 (or ``not_found_status``) → :class:`SubjectNotFound`;
other 4xx → :class:`SourceRefused`; 5xx, 429, timeouts and connection errors → retried, then
:class:`SourceUnavailable`; a URL whose destination the outbound policy refuses → at once (no retry)
:class:`SourceDestinationRefused`; anything unparseable → :class:`BadSourceAnswer`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, urlsplit

import anyio
import httpx

from service_kit.outbound import IDENTITY, ResponseBodyRefused, read_capped, retry_after_seconds
from ssi.encoding import json_loads
from ssi.errors import SSIError

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
    destination_refused,
    reshape,
    with_subject,
)

if TYPE_CHECKING:
    from credential_schemas import CredentialType

#: HTTP statuses worth retrying: the registry may answer on the next attempt.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_ANSWER_BYTES = 1_000_000


def _retry_after(response: _Answer) -> int | None:
    seconds = retry_after_seconds(response.headers)
    return None if seconds is None else int(min(seconds, 86_400))  # a day: never an overflowing int(inf)


#: An HTTP field name (RFC 9110 §5.1: a ``token``).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_text(value: str) -> bool:
    """Printable ASCII (space to ``~``): what an HTTP field value may carry without being encoded, and no
    CR/LF that would end it. Anything else fails only when sent (a ``UnicodeEncodeError``, or an h11
    protocol error taken for an outage), at every query; it is refused when the source is configured."""
    return value.isascii() and value.isprintable()


def _check_headers(headers: object) -> dict[str, str]:
    """The ``headers`` setting: names that are HTTP tokens, values of printable ASCII (the error never
    quotes a value: it may be a secret)."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise SourceConfigError("headers must map header names to values")
    out = {str(k): str(v) for k, v in headers.items()}
    for name, value in out.items():
        if not _HEADER_NAME.fullmatch(name):
            raise SourceConfigError("a header name must be an HTTP token (ASCII letters, digits, -, _ ...)")
        if not _header_text(value):
            raise SourceConfigError(f"the value of header {name} must be printable ASCII")
    return out


class _Answer(NamedTuple):
    """The registry's answer: the body is read (bounded) for a 200 only, nothing else needs it."""

    status_code: int
    headers: httpx.Headers
    content: bytes


class RestSource:
    """Fetch a subject's record from ``url`` (a template with ``{identifier}``).

    Settings: ``url`` (required), ``method`` (GET/POST; POST sends ``{"identifier": ...}``),
    ``headers`` (dict: names HTTP tokens, values printable ASCII), ``auth`` (``{"type": "bearer",
    "token": ...}``, the token printable ASCII, or ``{"type": "basic", "username": ..., "password":
    ...}``), ``fields`` (record path → answer path), ``product`` (the name in the evidence),
    ``timeout`` (seconds, default 10), ``retries`` (default 2), ``backoff`` (first delay in seconds,
    doubled per retry, default 0.2), ``not_found_status``.
    ``http`` is the caller's client (the issuer's is guarded by its outbound policy): the source never
    builds one of its own, which would reach any address.
    """

    def __init__(self, *, url: str, method: str = "GET", headers: dict[str, str] | None = None,
                 auth: dict[str, str] | None = None, fields: dict[str, str] | None = None,
                 product: str = "rest", name: str = "rest", timeout: float = 10.0, retries: int = 2,
                 backoff: float = 0.2, not_found_status: list[int] | None = None,
                 http: httpx.AsyncClient) -> None:
        if not isinstance(http, httpx.AsyncClient):
            raise SourceConfigError("a REST source needs an HTTP client (http)")
        if not isinstance(url, str) or "{identifier}" not in url or urlsplit(url).scheme not in ("http", "https"):
            raise SourceConfigError("url must be an http(s) URL template containing {identifier}")
        if method.upper() not in ("GET", "POST"):
            raise SourceConfigError("method must be GET or POST")
        if not isinstance(retries, int) or not 0 <= retries <= 5:
            raise SourceConfigError("retries must be an integer from 0 to 5")
        timeout = check_timeout(timeout)
        self.url = url
        self.method = method.upper()
        self.headers = _check_headers(headers)
        self.auth = self._auth(auth)
        self.fields = check_fields(fields)
        self.product = product
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.backoff = float(backoff)
        self.not_found = frozenset(not_found_status or [404])
        self._http = http

    @staticmethod
    def _auth(auth: dict[str, str] | None) -> httpx.Auth | dict[str, str] | None:
        if auth is None:
            return None
        kind = auth.get("type") if isinstance(auth, dict) else None
        if kind == "bearer" and isinstance(auth.get("token"), str):
            if not _header_text(auth["token"]):
                raise SourceConfigError("auth.token must be printable ASCII (it is sent in a header)")
            return {"Authorization": f"Bearer {auth['token']}"}
        if kind == "basic" and isinstance(auth.get("username"), str) and isinstance(auth.get("password"), str):
            return httpx.BasicAuth(auth["username"], auth["password"])
        raise SourceConfigError("auth must be {type: bearer, token} or {type: basic, username, password}")

    def _request_url(self, subject: Subject) -> str:
        # Replace, not str.format: a template is configuration and must not evaluate anything else.
        return self.url.replace("{identifier}", quote(subject.identifier, safe=""))

    async def fetch(self, credential_type: CredentialType, subject: Subject, context: SourceContext) -> Claims:
        """GET (or POST) the subject's record; see the module docstring for how answers map."""
        headers = dict(self.headers)
        headers["X-Request-ID"] = context.request_id
        auth = None
        if isinstance(self.auth, dict):
            headers.update(self.auth)
        elif self.auth is not None:
            auth = self.auth
        response = await self._send(subject, headers, auth)
        if response.status_code in self.not_found:
            raise SubjectNotFound()
        if response.status_code in TRANSIENT_STATUS:
            raise SourceUnavailable(f"the registry answered HTTP {response.status_code}",
                                    retry_after=_retry_after(response))
        if 400 <= response.status_code < 500:
            raise SourceRefused(f"the registry refused the query (HTTP {response.status_code})")
        if response.status_code != 200:
            raise BadSourceAnswer(f"unexpected HTTP {response.status_code} from the registry")
        try:
            data = json_loads(response.content)
        except SSIError as exc:
            raise BadSourceAnswer("the registry's answer is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadSourceAnswer("the registry's answer is not a JSON object")
        record = with_subject(reshape(data, self.fields), subject)
        transmission = response.headers.get("x-transmission-id") or response.headers.get("x-request-id")
        evidence = Evidence.build(context, product=self.product, source=self.name, transmission_id=transmission,
                                  timestamp=dt.datetime.now(dt.UTC))
        return Claims(record=record, evidence=evidence)

    async def poll(self, reference: str, credential_type: CredentialType, subject: Subject,
                   context: SourceContext) -> Claims:
        """A REST registry answers synchronously: there is nothing to poll."""
        raise SourceRefused("this source answers synchronously; there is no pending query to poll")

    async def _send(self, subject: Subject, headers: dict[str, str], auth: httpx.Auth | None) -> _Answer:
        url = self._request_url(subject)
        # Uncompressed, read raw and bounded: httpx would inflate a small gzip answer to any size.
        headers = {**headers, **IDENTITY}
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                answer = await self._attempt(self._http, url, subject, headers, auth)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                refused = destination_refused(exc)
                if refused is not None:
                    raise refused from exc  # the configuration must change: asking again cannot help
                if last:
                    raise SourceUnavailable(f"the registry could not be reached ({type(exc).__name__})") from exc
            else:
                if answer.status_code not in TRANSIENT_STATUS or last:
                    return answer
                wait = _retry_after(answer)
                if wait is not None and wait > self.timeout:
                    return answer  # do not sleep longer than a request may take: report it
            await anyio.sleep(delay)
            delay *= 2
        raise SourceUnavailable("the registry could not be reached")  # unreachable: loop returns or raises

    async def _attempt(self, client: httpx.AsyncClient, url: str, subject: Subject, headers: dict[str, str],
                       auth: httpx.Auth | None) -> _Answer:
        payload = {"json": {"identifier": subject.identifier, "identifierType": subject.identifier_type}} \
            if self.method == "POST" else {}
        async with client.stream(self.method, url, headers=headers, auth=auth or httpx.USE_CLIENT_DEFAULT,
                                 timeout=self.timeout, **payload) as response:
            content = b""
            if response.status_code == 200:
                try:
                    content = await read_capped(response, MAX_ANSWER_BYTES)
                except ResponseBodyRefused as exc:
                    raise BadSourceAnswer("the registry's answer is too large or cannot be read") from exc
            return _Answer(response.status_code, response.headers, content)
