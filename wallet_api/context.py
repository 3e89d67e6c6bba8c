"""Per-app state shared by the routes: settings, database, vault, trust anchors, outgoing HTTP."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509 as cx509

from service_kit.crypto import SecretBox, load_master_key, parse_master_key
from service_kit.db import Database
from service_kit.outbound import (
    CALL_DEADLINE_FACTOR,
    IDENTITY,
    OutboundPolicy,
    ResponseBodyRefused,
    guarded_sync_transport,
    guarded_transport,
    read_capped,
)
from ssi import x509 as ssi_x509
from ssi.encoding import json_loads
from ssi.errors import EncodingError

from .settings import WalletSettings
from .vault import Vault

MAX_FETCH_BYTES = 2_000_000


class FetchError(Exception):
    """An outgoing HTTP call failed (network, status, size, not JSON); ``detail`` never holds secrets.

    ``maybe_delivered``: the request may have reached the peer, and been acted on, before the answer
    was lost (a read timeout, a dropped connection, the deadline); False when it never left."""

    def __init__(self, detail: str, status: int | None = None, body: Any = None, *,
                 maybe_delivered: bool = False) -> None:
        self.detail = detail
        self.status = status
        self.body = body
        self.maybe_delivered = maybe_delivered
        super().__init__(detail)


def get_json_blocking(url: str, *, timeout: float, policy: OutboundPolicy) -> Any:
    """GET ``url`` and parse JSON, from a worker thread (for the synchronous key resolvers of ``ssi``),
    with the same size cap, whole-call deadline and destinations (``policy``) as
    :meth:`WalletContext.request`."""
    deadline = time.monotonic() + CALL_DEADLINE_FACTOR * timeout
    with httpx.Client(timeout=timeout, follow_redirects=False, transport=guarded_sync_transport(policy)) as client, \
            client.stream("GET", url, headers={"Accept": "application/json", **IDENTITY}) as response:
        if response.status_code != 200:
            raise FetchError(f"{_host(url)} answered HTTP {response.status_code}", response.status_code)
        if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
            # Asked for as is: a compressed answer is not read (it could inflate past any cap at once).
            raise FetchError(f"{_host(url)} answered compressed data")
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > MAX_FETCH_BYTES:
                raise FetchError(f"{_host(url)} answered too much data")
            if time.monotonic() > deadline:
                raise FetchError(f"{_host(url)} did not finish answering in time")
    return json_loads(bytes(body))


def load_anchors(paths: list[Path]) -> list[cx509.Certificate]:
    """Every certificate in the given PEM files."""
    anchors: list[cx509.Certificate] = []
    for path in paths:
        anchors.extend(ssi_x509.load_pem_certificates(Path(path).read_bytes()))
    return anchors


def previous_master_keys(settings: WalletSettings) -> list[bytes]:
    """The older master keys still accepted while a rotation is under way (settings and key files)."""
    previous = [parse_master_key(k.get_secret_value()) for k in settings.previous_master_keys]
    previous += [parse_master_key(Path(p).read_bytes()) for p in settings.previous_master_key_files]
    return previous


def master_box(settings: WalletSettings) -> SecretBox:
    """The SecretBox holding the current master key and the previous ones (during a rotation)."""
    return SecretBox(load_master_key(settings), previous_keys=previous_master_keys(settings))


@dataclass
class WalletContext:
    """Everything a request handler needs besides the request."""

    settings: WalletSettings
    db: Database
    vault: Vault
    issuer_anchors: list[cx509.Certificate] = field(default_factory=list)
    rp_anchors: list[cx509.Certificate] = field(default_factory=list)
    transport: httpx.AsyncBaseTransport | None = None
    #: ``cartera_wallet_sweeps_total`` and ``cartera_wallet_sweep_job_failures_total{job}`` (set by the
    #: app; ``None`` where a context is built without one): that the background sweeps still run is
    #: what keeps revocation alerts, deferred credentials and purges going.
    sweeps_counter: Any = None
    sweep_failures: Any = None

    @property
    def dev(self) -> bool:
        return self.settings.dev_mode

    @property
    def webhook(self) -> bool:
        """Whether alerts are also pushed to a configured webhook."""
        return bool(self.settings.webhook_url)

    def client(self, *, operator_configured: bool = False) -> httpx.AsyncClient:
        """An HTTP client (no redirects) for calls to issuers and verifiers, whose URLs come from offers,
        QR codes and credentials: it reaches only the destinations of the outbound policy
        (``service_kit.outbound``). ``operator_configured``: for the identity provider and the alert
        webhook, which the operator's settings name."""
        transport = self.transport
        if transport is None and not operator_configured:
            transport = guarded_transport(self.settings.outbound_policy())
        return httpx.AsyncClient(timeout=self.settings.http_timeout, follow_redirects=False,
                                 transport=transport, headers={"User-Agent": "cartera-wallet/0.1"})

    async def get_json(self, client: httpx.AsyncClient, url: str, **kwargs: Any) -> Any:
        """GET ``url`` and parse JSON; raise :class:`FetchError` on any failure."""
        return await self.request_json(client, "GET", url, **kwargs)

    async def request_json(self, client: httpx.AsyncClient, method: str, url: str, *,
                           ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """Send a request, check the status is in ``ok`` and return the parsed JSON body."""
        response = await self.request(client, method, url, **kwargs)
        body = _json_or_none(response)
        if response.status_code not in ok:
            raise FetchError(f"{_host(url)} answered HTTP {response.status_code}", response.status_code, body)
        if body is None:
            raise FetchError(f"{_host(url)} did not answer JSON", response.status_code)
        return body

    async def request(self, client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request with a size cap on the answer and a deadline on the whole call
        (:data:`CALL_DEADLINE_FACTOR`); raise :class:`FetchError` on network failure."""
        deadline = CALL_DEADLINE_FACTOR * (client.timeout.read or self.settings.http_timeout)
        # Any verifier that shows a QR code is a peer: its answer is counted inflated and never
        # inflated past the cap (httpx inflates a network chunk whole, whatever it grows to).
        kwargs["headers"] = {**IDENTITY, **dict(kwargs.get("headers") or {})}
        try:
            async with asyncio.timeout(deadline), client.stream(method, url, **kwargs) as response:
                response._content = await read_capped(response, MAX_FETCH_BYTES)
                return response
        except ResponseBodyRefused as exc:
            what = "too much data" if exc.too_large else "a body that cannot be read"
            raise FetchError(f"{_host(url)} answered {what}", maybe_delivered=method != "GET") from exc
        except TimeoutError as exc:
            raise FetchError(f"{_host(url)} did not finish answering in time",
                             maybe_delivered=method != "GET") from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise FetchError(f"{_host(url)} could not be reached ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"{_host(url)} could not be reached ({type(exc).__name__})",
                             maybe_delivered=method != "GET") from exc


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or "the server"
    except (httpx.InvalidURL, TypeError, ValueError):  # ValueError: a bad IDNA label
        return "the server"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json_loads(response.content)
    except EncodingError:
        return None
