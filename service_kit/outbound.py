"""Outgoing HTTP to addresses others choose: which destinations a service may reach, and for how long.

A tenant's data source and webhooks, an agency's webhook, an issuer named in a credential, a
request URI in a QR code: the services call URLs that someone outside the operator chose. Left open,
such a URL points the service at its own database port, the ACA-Py admin API, a cloud metadata
endpoint or any host of the internal network, and the service makes the call with its own network
position (server-side request forgery).

:class:`OutboundPolicy` says what may be reached: addresses on the public internet, plus the hosts and
networks the operator lists as internal destinations, plus loopback in development. It is enforced
where the connection is made (:func:`guarded_transport`): every address a host name resolves to is
checked, and the connection goes to the address that was checked, so a name that resolves to a public
address when the URL is registered and to an internal one when it is called (DNS rebinding) gets
nowhere. Redirects are not followed by the services' clients, so a public server cannot bounce a call
inward either.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import ipaddress
import socket
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpcore
import httpx

from ssi.urls import UnsafeURL, split_secure_url

#: A whole call (connection, request, every chunk of the answer) ends within this many times the
#: per-operation timeout: that one bounds each wait, and a peer trickling its answer a byte at a time
#: never waits that long, holding the call (and whatever waits for it) open for ever.
CALL_DEADLINE_FACTOR = 4

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationRefused(httpcore.ConnectError):
    """The destination is not one the policy lets the service reach (raised as a connection error, so
    callers treat it as an unreachable peer; the message names the host, never the path or query)."""


#: NAT64 (RFC 6052): a gateway turns 64:ff9b::a.b.c.d into a connection to a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: SIIT (RFC 2765): ::ffff:0:a.b.c.d, an IPv4-translated address, which a translator turns into a.b.c.d.
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
#: Translation prefixes that are never a public destination, whatever they carry: SIIT, and the
#: local-use NAT64 prefix (RFC 8215), which leads to a translator of the operator's own network with
#: an embedding its prefix length decides. This Python (3.11.7) calls both global.
_NEVER_PUBLIC: tuple[ipaddress.IPv6Network, ...] = (_SIIT, ipaddress.ip_network("64:ff9b:1::/48"))
#: Special-purpose blocks the IANA registries mark not globally reachable, assigned after this Python
#: (3.11.7) learnt its list, so that ``is_global`` still says True: the IPv4 dummy address (RFC 7600),
#: the IPv6 documentation prefix 3fff::/20 (RFC 9637) and SRv6 segment identifiers 5f00::/16 (RFC 9602).
_NOT_GLOBAL: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("192.0.0.8/32"), ipaddress.ip_network("3fff::/20"), ipaddress.ip_network("5f00::/16"))


def _address(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _reached(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries and reaches (mapped, SIIT, NAT64, 6to4, Teredo), else
    itself: the one to judge. (``is_global`` calls NAT64 global whatever it carries.)"""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64 or address in _SIIT:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


@dataclass(frozen=True)
class OutboundPolicy:
    """Destinations a service may reach on behalf of others.

    ``internal_hosts``: host names (exact, case-insensitive), IP addresses or networks (CIDR) that may
    be reached although not public, e.g. a registry on the administration's internal network.
    ``allow_loopback``: loopback addresses too (development, where every service runs on one host).
    """

    internal_hosts: tuple[str, ...] = ()
    allow_loopback: bool = False
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in self.internal_hosts:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def from_settings(cls, internal_hosts: Iterable[str], *, dev_mode: bool) -> OutboundPolicy:
        return cls(tuple(internal_hosts), allow_loopback=dev_mode)

    def host_listed(self, host: str) -> bool:
        """Whether ``host`` is a host name the operator listed as an internal destination."""
        return host.lower().rstrip(".") in self._names

    def address_allowed(self, address: IPAddress) -> bool:
        """Whether a connection to ``address`` is allowed."""
        if any(address in network for network in self._networks):
            return True
        translated = isinstance(address, ipaddress.IPv6Address) and any(address in n for n in _NEVER_PUBLIC)
        address = _reached(address)
        if any(address in network for network in self._networks):
            return True  # e.g. ::ffff:0:10.1.2.3 when 10.1.0.0/16 is listed
        if translated:
            return False
        if address.is_loopback:
            return self.allow_loopback
        if isinstance(address, ipaddress.IPv6Address) and (address.is_site_local or int(address) >> 32 == 0):
            return False  # fec0::/10, and ::a.b.c.d (IPv4-compatible, deprecated): never public
        if any(address.version == network.version and address in network for network in _NOT_GLOBAL):
            return False
        return address.is_global and not address.is_multicast

    def refusal(self, host: str, addresses: Iterable[IPAddress]) -> str | None:
        """Why a connection to ``host`` (resolved to ``addresses``) is refused, or ``None``."""
        if self.host_listed(host):
            return None
        addresses = list(addresses)
        if not addresses:
            return f"{host} has no address"
        for address in addresses:
            if not self.address_allowed(address):
                # The address itself is not said: the message reaches tenants and agencies, who would
                # learn the internal network's names and addresses from it.
                return f"{host} is an internal address and not a listed internal host (settings: internal_hosts)"
        return None

    async def check_url(self, url: str) -> str | None:
        """Why calls to ``url`` would be refused, or ``None``: for a clear answer when the URL is
        registered. A host that does not resolve now is not refused here (it may later); the check
        made at each connection is the one that counts."""
        try:
            host = httpx.URL(url).host
        except (httpx.InvalidURL, TypeError, ValueError):  # ValueError: a bad IDNA label (xn--zz.com)
            return "the URL cannot be read"
        if not host:
            return "the URL has no host"
        if self.host_listed(host):
            return None
        try:
            addresses = await _resolve(host, 443)
        except httpcore.ConnectError:
            return None
        return self.refusal(host, addresses)


async def refused_destination(url: Any, policy: OutboundPolicy, *, dev_mode: bool) -> str | None:
    """Why ``url`` may not be registered as a destination (a webhook), or ``None``: it must be https
    (http to loopback in development) and reach an address ``policy`` allows."""
    try:
        split_secure_url(url, allow_http_loopback=dev_mode, allow_fragment=False)
    except UnsafeURL as exc:
        return f"the URL {exc}"
    return await policy.check_url(url)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """``host``'s addresses (itself when it is one); ``httpcore.ConnectError`` when it does not resolve."""
    literal = _address(host)
    if literal is not None:
        return [literal]
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpcore.ConnectError(f"{host} cannot be resolved") from exc
    return [a for a in (_address(str(info[4][0])) for info in infos) if a is not None]


def _resolve_blocking(host: str, port: int) -> list[IPAddress]:
    literal = _address(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpcore.ConnectError(f"{host} cannot be resolved") from exc
    return [a for a in (_address(str(info[4][0])) for info in infos) if a is not None]


def _checked(policy: OutboundPolicy, host: str, addresses: list[IPAddress]) -> list[IPAddress]:
    """``addresses`` when the policy allows every one, else :class:`DestinationRefused`. The caller
    connects to these, in the resolver's order, the next one when one cannot be reached (an IPv6
    address without a route); TLS still checks the certificate against ``host``, which httpcore
    passes to start_tls, not the address connected to."""
    reason = policy.refusal(host, addresses)
    if reason is not None:
        raise DestinationRefused(reason)
    return addresses


class _GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows, and to the very address it checked."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.AsyncNetworkBackend) -> None:
        self._policy = policy
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        if self._policy.host_listed(host):
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = _checked(self._policy, host, await _resolve(host, port))
        for address in addresses[:-1]:
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
        return await self._inner.connect_tcp(str(addresses[-1]), port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("Unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedSyncBackend(httpcore.NetworkBackend):
    def __init__(self, policy: OutboundPolicy, inner: httpcore.NetworkBackend) -> None:
        self._policy = policy
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        if self._policy.host_listed(host):
            return self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = _checked(self._policy, host, _resolve_blocking(host, port))
        for address in addresses[:-1]:
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
        return self._inner.connect_tcp(str(addresses[-1]), port, timeout, local_address, socket_options)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise DestinationRefused("Unix sockets are not an outbound destination")


def _guard_pool(transport: httpx.AsyncHTTPTransport | httpx.HTTPTransport, backend: Any) -> None:
    pool = getattr(transport, "_pool", None)
    # httpx builds the connection pool itself and takes no network backend: the guard is set on the
    # pool it built. Checked, so an httpx that changes this fails loudly instead of going unguarded.
    if not isinstance(pool, httpcore.AsyncConnectionPool | httpcore.ConnectionPool) or \
            not hasattr(pool, "_network_backend"):
        raise RuntimeError("this httpx version cannot be guarded: outbound calls would reach any address")
    pool._network_backend = backend(pool._network_backend)


def guarded_transport(policy: OutboundPolicy, **kwargs: Any) -> httpx.AsyncHTTPTransport:
    """An ``httpx`` transport that connects only where ``policy`` allows (``kwargs`` as for
    ``httpx.AsyncHTTPTransport``; no proxy: the destination is what is checked)."""
    transport = httpx.AsyncHTTPTransport(**kwargs)
    _guard_pool(transport, lambda inner: _GuardedAsyncBackend(policy, inner))
    return transport


def guarded_sync_transport(policy: OutboundPolicy, **kwargs: Any) -> httpx.HTTPTransport:
    """The blocking counterpart of :func:`guarded_transport`."""
    transport = httpx.HTTPTransport(**kwargs)
    _guard_pool(transport, lambda inner: _GuardedSyncBackend(policy, inner))
    return transport


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The seconds a peer's ``Retry-After`` asks for (RFC 9110 §10.2.3: delay-seconds, or an HTTP date,
    read as UTC when it names no zone), or ``None`` when absent or unreadable. The peer writes it:
    nothing in it may raise (``str.isdigit`` alone takes ``²``, which ``float`` refuses)."""
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # no zone, or "-0000": the date is UTC (RFC 5322 3.3)
            when = when.replace(tzinfo=dt.UTC)
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


class ResponseBodyRefused(Exception):
    """An answer's body is larger than the caller accepts (``too_large``), or cannot be read: a coding
    that cannot be bounded, a corrupt or truncated compressed body."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


#: ``Accept-Encoding`` of a bounded read: ask for the body as is (httpx asks for gzip by default, and
#: a small compressed answer can inflate a thousandfold).
IDENTITY = {"Accept-Encoding": "identity"}


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body of a streamed ``response`` (``client.stream(...)``), at most ``max_bytes`` once
    decoded; :class:`ResponseBodyRefused` beyond, before more than that is read or inflated.

    Reads the raw bytes: a gzip or deflate body (a server may compress although asked for
    :data:`IDENTITY`) is inflated here, never past the cap; httpx's own decoding inflates a whole
    network chunk at once, whatever it grows to. Other codings are refused.
    """
    codings = [c.strip() for c in response.headers.get("content-encoding", "").lower().split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
        raise ResponseBodyRefused("the answer's content encoding cannot be read within bounds")
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        # Compressed or not: nothing worth reading is bigger than the cap itself.
        raise ResponseBodyRefused(f"the answer is larger than {max_bytes} bytes", too_large=True)
    if response.is_stream_consumed:  # read already by a transport that reads answers whole
        if len(response.content) > max_bytes:
            raise ResponseBodyRefused(f"the answer is larger than {max_bytes} bytes", too_large=True)
        return response.content
    coding = codings[0] if codings else None
    inflater: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding in ("gzip", "x-gzip") else None
    pending = b""  # deflate: the first bytes, until they say zlib-wrapped or raw
    parts: list[bytes] = []
    size = raw = 0
    async for chunk in response.aiter_raw():
        raw += len(chunk)
        if raw > max_bytes:
            raise ResponseBodyRefused(f"the answer is larger than {max_bytes} bytes", too_large=True)
        if coding == "deflate" and inflater is None:
            pending += chunk
            if len(pending) < 2:
                continue
            # HTTP's deflate is zlib-wrapped (RFC 1950 header); some servers send a raw stream.
            wrapped = pending[0] & 0x0F == 8 and (pending[0] << 8 | pending[1]) % 31 == 0
            inflater = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            chunk, pending = pending, b""
        if inflater is not None:
            try:
                # max_length: at most one byte past the cap comes out; the rest of the input would wait
                # in unconsumed_tail, and there is no rest when the output stays within the limit.
                chunk = inflater.decompress(chunk, max_bytes - size + 1)
            except zlib.error as exc:
                raise ResponseBodyRefused("the answer's compressed body cannot be read") from exc
        size += len(chunk)
        if size > max_bytes:
            raise ResponseBodyRefused(f"the answer is larger than {max_bytes} bytes", too_large=True)
        parts.append(chunk)
    if pending or (inflater is not None and not inflater.eof):
        # The stream ended inside the compressed body: what came is not the whole answer.
        raise ResponseBodyRefused("the answer's compressed body is truncated")
    return b"".join(parts)
