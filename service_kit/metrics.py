"""Prometheus metrics on a per-app registry, served at ``GET /metrics``.

Every app gets its own ``CollectorRegistry`` (two apps in one process, as in tests or the embedded
default, do not collide) with an HTTP request counter and latency histogram labelled by method, route
template and status. Services add their own series on the same registry::

    issued = app.state.metrics.counter("cartera_issuances_total", "Issuances by outcome", ["outcome"])
    issued.labels(outcome="ok").inc()

``/metrics`` answers clients on the same host only, or those with ``settings.metrics_token``
(:func:`metrics_router`). With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
folder before start: values are then shared through files and ``/metrics`` aggregates every worker
(prometheus-client multiprocess mode).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable, Sequence

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from starlette.exceptions import HTTPException as StarletteHTTPException

from service_kit.errors import APIError

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The metrics of one app: its registry, the HTTP series and factories for the service's own."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method, route template and status code.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._outcome_rules: dict[tuple[str, str], tuple[Counter, Callable[[int], str]]] = {}
        # The labelled children per (method, route, status): ``labels(**kw)`` validates and sorts its
        # arguments on every call, which showed in per-request profiles. Bounded: a client can invent
        # methods, and past the bound requests are still counted, just without the shortcut.
        self._children: dict[tuple[str, str, int], tuple[object, object]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request (the request-context middleware calls this)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.http_requests.labels(method, route, str(status)),
                        self.http_latency.labels(method, route, str(status)))
            if len(self._children) < 1024:
                self._children[key] = children
        children[0].inc()  # type: ignore[attr-defined]
        children[1].observe(seconds)  # type: ignore[attr-defined]
        rule = self._outcome_rules.get((method, route))
        if rule is not None:
            rule[0].labels(outcome=rule[1](status)).inc()

    def count_outcomes(self, name: str, documentation: str, routes: Sequence[tuple[str, str]],
                       outcome_of: Callable[[int], str]) -> Counter:
        """A counter ``name{outcome}`` incremented once per finished request to one of ``routes``
        (``(method, route template)`` pairs), with the outcome derived from the HTTP status.

        For protocol endpoints whose status code is the outcome (an OpenID4VCI credential request: 200
        issued, 202 deferred, 503 source unavailable...), so the service needs no extra line per path.
        """
        counter = self.counter(name, documentation, ["outcome"])
        for method, route in routes:
            self._outcome_rules[(method, route)] = (counter, outcome_of)
        return counter

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter on this app's registry (name it ``cartera_<thing>_total``)."""
        return Counter(name, documentation, list(labels), registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        """A histogram on this app's registry (durations in seconds)."""
        return Histogram(name, documentation, list(labels), buckets=tuple(buckets), registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge on this app's registry."""
        return Gauge(name, documentation, list(labels), registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series (aggregated over workers in multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


#: Headers a reverse proxy adds: a request carrying one came through a proxy, whatever its peer.
_PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def _loopback_peer(request: Request) -> bool:
    """Whether ``request`` came straight from this host: a loopback TCP peer and no proxy header.

    A proxy on the same host connects from loopback too, for every client it forwards; and behind
    ``--proxy-headers`` the peer uvicorn reports is the one ``X-Forwarded-For`` names. So the
    forwarding headers rule a request out instead of being believed.
    """
    if request.client is None or any(name in request.headers for name in _PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.client.host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def metrics_router() -> APIRouter:
    """``GET /metrics`` for the app whose ``state.metrics`` is a :class:`Metrics`.

    The series name tenants and count their issuances: with ``settings.metrics_token`` set, the
    request must carry it (``Authorization: Bearer``; 401 otherwise); without it, only a client on
    this host reaches it, and anyone else gets the 404 of a path that does not exist.
    """
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        token = getattr(request.app.state.settings, "metrics_token", None)
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            expected = token.get_secret_value().encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                raise APIError(401, "unauthorized", "the metrics token is missing or wrong",
                               {"WWW-Authenticate": "Bearer"})
        elif not _loopback_peer(request):
            raise StarletteHTTPException(404)
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
