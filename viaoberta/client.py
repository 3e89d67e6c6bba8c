"""The Via Oberta HTTP client: signed SCSP v3 queries over SOAP, verified and parsed answers.

Transport policy: each call has an httpx timeout; transient failures (connection errors, timeouts,
HTTP 429/502/503/504, and an HTTP 500 that is *not* a SOAP fault) are retried at most ``retries`` times
with exponential backoff; a SOAP fault, a bad or missing signature, or a malformed answer is never
retried (repeating the query cannot change it), nor is a transport error the caller's ``final_error``
turns into its own error (the issuer's outbound policy refusing the destination); an unsigned SOAP fault is
:class:`~viaoberta.errors.ViaObertaUnavailable` (anyone on the path could have written it), and so is a
signed one whose ``IdPeticion`` is not the query's, or is missing (a fault replayed from another exchange:
only a fault about this very query may refuse it). When retries are exhausted the error is
:class:`~viaoberta.errors.ViaObertaUnavailable` (``viaoberta.timeout`` when the last failure was a
timeout, ``viaoberta.unavailable`` otherwise). Every call carries its ``IdPeticion`` in the message
and in an ``X-Request-Id`` header. Nothing from the answer (source data) is logged; log lines name
only the request id, the product and the outcome.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import anyio
import httpx
from lxml import etree

from .errors import ViaObertaError, ViaObertaUnavailable
from .messages import (
    DEFAULT_PENDING_RETRY_SECONDS,
    QueryRequest,
    ViaObertaResult,
    build_peticion,
    build_solicitud_respuesta,
    parse_fault,
    parse_respuesta,
)
from .wssecurity import (
    envelope_body,
    is_signed,
    load_certificate,
    load_private_key,
    sign_envelope,
    verify_envelope,
)
from .xmlsafe import MAX_XML_BYTES, SOAP11_NS, parse_xml, qname

logger = logging.getLogger(__name__)

#: Paths of the AOC front ends, relative to the configured endpoint.
SYNC_PATH = "/siri-proxy/services/Sincron"
ASYNC_RESPONSE_PATH = "/siri-proxy/services/AsincronResposta"
_TRANSIENT_STATUS = frozenset({429, 502, 503, 504})


class ViaObertaClient:
    """A client for one Via Oberta endpoint (base URL of the platform, e.g. ``https://serveis3.iop.aoc.cat``).

    ``signing_key_pem``/``signing_cert_pem`` are the requesting body's WS-Security credentials;
    ``platform_certs_pem`` the platform certificates whose signatures on answers are accepted.
    ``http`` is the caller's client (it owns its lifetime, and decides where it may connect: the
    issuer's is guarded by its outbound policy); the client never builds one of its own, which would
    reach any address. ``final_error``, given a transport error, returns an exception to raise at
    once instead of retrying (the issuer's: a destination its outbound policy refuses), or ``None``.
    """

    def __init__(
        self, endpoint: str, *, signing_key_pem: bytes, signing_cert_pem: bytes,
        platform_certs_pem: list[bytes], http: httpx.AsyncClient, timeout: float = 10.0,
        retries: int = 2, variant: str = "aoc", backoff_seconds: float = 0.2,
        max_response_bytes: int = MAX_XML_BYTES,
        pending_floor_seconds: int = DEFAULT_PENDING_RETRY_SECONDS,
        final_error: Callable[[Exception], Exception | None] | None = None,
    ) -> None:
        if not isinstance(http, httpx.AsyncClient):
            raise ViaObertaError("bad_configuration", "an HTTP client (http) is required")
        if not platform_certs_pem:
            raise ViaObertaError("bad_configuration", "at least one platform certificate is required")
        if variant not in ("aoc", "state"):
            raise ViaObertaError("bad_configuration", "variant must be 'aoc' or 'state'")
        if not _number(timeout) or not 0 < timeout <= 120:
            raise ViaObertaError("bad_configuration", "timeout must be a number of seconds above 0, at most 120")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 5:
            raise ViaObertaError("bad_configuration", "retries must be an integer from 0 to 5")
        if not _number(backoff_seconds) or not 0 <= backoff_seconds <= 60:
            raise ViaObertaError("bad_configuration", "backoff_seconds must be a number of seconds from 0 to 60")
        if not isinstance(signing_key_pem, bytes) or not isinstance(signing_cert_pem, bytes):
            raise ViaObertaError("bad_configuration", "the signing key and certificate must be PEM bytes")
        self.endpoint = endpoint.rstrip("/")
        self._key_pem = signing_key_pem
        self._cert_pem = signing_cert_pem
        # Fail at configuration time, not at the first query.
        load_private_key(signing_key_pem)
        load_certificate(signing_cert_pem)
        self._trusted = [load_certificate(pem) for pem in platform_certs_pem]
        self._http = http
        self._final_error = final_error
        self.timeout = float(timeout)
        self.retries = retries
        self.variant = variant
        self.backoff_seconds = float(backoff_seconds)
        self.max_response_bytes = max_response_bytes
        self.pending_floor_seconds = pending_floor_seconds

    async def query(self, request: QueryRequest) -> ViaObertaResult:
        """Send one signed ``Peticion`` to the synchronous front end and return the typed result."""
        body = build_peticion(request, self.variant)
        product = request.validate()
        result = await self._exchange(SYNC_PATH, body, request.request_id, product.codigo_certificado)
        logger.info("via oberta query %s %s -> %s", request.request_id, product.codigo_certificado,
                    type(result).__name__)
        return result

    async def poll(self, request_id: str, product: str) -> ViaObertaResult:
        """Ask for the answer to an asynchronous query (``PendingResult``) by its ``IdPeticion``."""
        body = build_solicitud_respuesta(request_id, product, self.variant)
        result = await self._exchange(ASYNC_RESPONSE_PATH, body, request_id, product)
        logger.info("via oberta poll %s %s -> %s", request_id, product, type(result).__name__)
        return result

    async def _exchange(self, path: str, body: etree._Element, request_id: str, product: str) -> ViaObertaResult:
        payload = sign_envelope(body, self._key_pem, self._cert_pem)
        status, content = await self._post(self.endpoint + path, payload, request_id)
        root = parse_xml(content, max_bytes=self.max_response_bytes)
        unverified_body = envelope_body(root)
        if status != 200 or unverified_body.find(qname(SOAP11_NS, "Fault")) is not None:
            # A fault carries no registry data, but an unsigned one could come from anyone on the
            # path: it may make this query fail for now (unavailable), never refuse it for good.
            signed = is_signed(root)
            if signed:
                unverified_body, _ = verify_envelope(root, self._trusted)
            fault = parse_fault(unverified_body)
            if fault is not None and not signed:
                raise ViaObertaUnavailable("unavailable", f"unsigned SOAP fault (HTTP {status})")
            if fault is not None and fault.request_id != request_id:
                # Signed by the platform, but not tied to this query: a fault captured from another
                # exchange (or one naming none) and replayed. Like an unsigned one, it may make this
                # query fail for now, never refuse it for good.
                raise ViaObertaUnavailable("unavailable", f"SOAP fault for another IdPeticion (HTTP {status})")
            if fault is not None:
                return fault
            raise ViaObertaError("http_status", f"HTTP {status} without a SOAP fault")
        signed_body, _ = verify_envelope(root, self._trusted)
        # A fault or an answer for another IdPeticion (or none) is refused by parse_respuesta.
        return parse_respuesta(signed_body, self.variant, expected_request_id=request_id,
                               expected_product=product, pending_floor_seconds=self.pending_floor_seconds)

    async def _post(self, url: str, payload: bytes, request_id: str) -> tuple[int, bytes]:
        # identity: a compressed answer would be inflated before the size limit could see it (a small
        # gzip bomb costs hundreds of MiB); one sent compressed anyway is refused unread (_send).
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""', "X-Request-Id": request_id,
                   "Accept-Encoding": "identity"}
        last_code, last_detail = "unavailable", "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                await anyio.sleep(self.backoff_seconds * (2 ** (attempt - 1)))
            try:
                status, content = await self._send(url, payload, headers)
            except httpx.TimeoutException:
                last_code, last_detail = "timeout", f"no answer within {self.timeout} s"
                continue
            except httpx.HTTPError as exc:  # transport errors, and an answer httpx cannot decode
                final = self._final_error(exc) if self._final_error is not None else None
                if final is not None:
                    raise final from exc
                last_code, last_detail = "unavailable", f"transport error ({type(exc).__name__})"
                continue
            if status in _TRANSIENT_STATUS or (status == 500 and not _looks_like_fault(content)):
                last_code, last_detail = "unavailable", f"HTTP {status}"
                continue
            if status not in (200, 500):
                raise ViaObertaError("http_status", f"unexpected HTTP {status}")
            return status, content
        logger.warning("via oberta %s unavailable after %d attempts: %s", request_id, self.retries + 1, last_code)
        raise ViaObertaUnavailable(last_code, f"{last_detail} after {self.retries + 1} attempts")

    async def _send(self, url: str, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        # Streamed so that an oversized answer is cut off instead of being read into memory.
        async with self._http.stream("POST", url, content=payload, headers=headers, timeout=self.timeout) as response:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise ViaObertaError("malformed", "the answer is content-encoded although identity was asked")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise ViaObertaError("too_large", f"answer larger than {self.max_response_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise ViaObertaError("too_large", f"answer larger than {self.max_response_bytes} bytes")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _looks_like_fault(content: bytes) -> bool:
    # Only a cheap sniff to decide whether a 500 is a SOAP fault (final) or a crash (transient);
    # the real parse happens later with the hardened parser.
    head = content[:4096]
    return b"Envelope" in head and b"Fault" in content[:65536]
