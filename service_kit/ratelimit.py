"""Database-backed rate limits that hold across workers, processes and hosts.

Each limit is a GCRA (generic cell rate algorithm) bucket: ``burst`` requests at once, refilled at
``burst`` per ``period`` seconds. A bucket is one row of the service's ``rate_limits`` table holding
the key's *theoretical arrival time* (``tat``, epoch seconds): a hit is allowed when
``max(tat, now) + interval - now <= burst * interval`` and then moves ``tat`` on by one interval.
Every hit, for all the keys of one request, is one atomic statement::

    INSERT INTO rate_limits (key, tat, tolerance, allowed) VALUES (...), (...)
    ON CONFLICT (key) DO UPDATE SET allowed = <fits>, tat = CASE WHEN <fits> THEN <next> ELSE tat END
    RETURNING key, tat, allowed

so concurrent workers never lose an update (PostgreSQL locks the row, SQLite serialises writers) and
the limit is exact whatever the number of processes. Keys are HMAC-SHA256 of the limit's name and the
identity (a client address, an API key, a code), so the table never holds a raw address or secret.
A row whose ``tat`` is in the past is the same as no row: such rows are deleted now and then.

A service declares the table on its own base (``class RateLimitBucket(RateLimitMixin, Base)``) and
creates it with its own Alembic revision; :class:`RateLimiter` takes that model and the service's
:class:`~service_kit.db.Database`. The FastAPI side is small: :func:`client_address` (socket peer, or
``X-Forwarded-For`` only from trusted proxies), :func:`enforce` (raise the 429 ``APIError`` with
``Retry-After``) and :func:`rate_limit_responses` (the 429 answer in an endpoint's OpenAPI).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import Boolean, Double, String, bindparam, case, cast, delete, exists, null, select, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from service_kit.db import Database

if TYPE_CHECKING:
    from starlette.requests import Request

log = logging.getLogger("cartera.ratelimit")

# A cleanup pass runs at most this often per process (seconds): deleting stale rows is cheap but not
# worth a statement per request.
CLEANUP_EVERY = 60.0


class RateLimitMixin:
    """Columns of a service's ``rate_limits`` table; declare ``class RateLimitBucket(RateLimitMixin, Base)``.

    ``key`` is the hex HMAC of the limit name and identity; ``tat`` the theoretical arrival time
    (epoch seconds); ``tolerance`` the limit's ``burst * interval`` (seconds), kept so one statement
    can serve buckets of different limits; ``allowed`` whether the last hit was let through.
    """

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Not indexed: a bucket is rewritten on every hit (a busy client's many times a second), and an
    # index on tat made each rewrite add index entries (no HOT update) and leave a dead tuple behind.
    # The once-a-minute cleanup reads the whole table instead, which holds only recent buckets.
    tat: Mapped[float] = mapped_column(Double)
    tolerance: Mapped[float] = mapped_column(Double)
    allowed: Mapped[bool] = mapped_column(Boolean)


def parse_rate(spec: str) -> tuple[int, float]:
    """``"BURST/SECONDS"`` (``"600/60"``: 600 at once, refilled at 600 a minute) as ``(burst, seconds)``;
    ``"0"`` or ``"off"`` disables the limit (burst 0). Raises ``ValueError`` for anything else."""
    text = spec.strip().lower()
    if text in ("0", "off", "none", ""):
        return 0, 1.0
    burst_text, sep, period_text = text.partition("/")
    if not sep:
        raise ValueError("a rate limit is BURST/SECONDS, e.g. 600/60, or 0 to disable it")
    try:
        burst, period = int(burst_text), float(period_text.rstrip("s"))
    except ValueError:
        raise ValueError("a rate limit is BURST/SECONDS, e.g. 600/60, or 0 to disable it") from None
    if burst < 0 or not 0 < period <= 86_400 * 7:
        raise ValueError("a rate limit needs BURST >= 0 and 0 < SECONDS <= one week")
    return burst, period


def _check_rate(spec: str) -> str:
    parse_rate(spec)
    return spec.strip()


#: A settings field holding a rate (``"600/60"``), validated when the settings load.
RateSpec = Annotated[str, AfterValidator(_check_rate)]


@dataclass(frozen=True)
class Limit:
    """``burst`` hits allowed at once, refilled at ``burst`` per ``period`` seconds.

    ``name`` identifies the limit in keys, logs and metrics (``"token.client"``); a ``burst`` of 0
    disables the limit.
    """

    name: str
    burst: int
    period: float

    def __post_init__(self) -> None:
        if self.burst < 0 or self.period <= 0:
            raise ValueError("a limit needs burst >= 0 and period > 0")

    @classmethod
    def parse(cls, name: str, spec: str) -> Limit:
        """The limit ``name`` from a ``"BURST/SECONDS"`` settings value (see :func:`parse_rate`)."""
        burst, period = parse_rate(spec)
        return cls(name, burst, period)

    @property
    def enabled(self) -> bool:
        """Whether the limit applies at all."""
        return self.burst > 0

    @property
    def interval(self) -> float:
        """Seconds one hit costs (the emission interval)."""
        return self.period / self.burst


@dataclass(frozen=True)
class Decision:
    """The outcome of one :meth:`RateLimiter.hit`: allowed, or which limit refused and for how long."""

    allowed: bool
    retry_after: int = 0
    limit: str = ""


class RateLimitExceeded(Exception):
    """A rate limit refused the request; ``retry_after`` is in whole seconds (at least 1)."""

    def __init__(self, limit: str, retry_after: int) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(f"rate limit {limit} exceeded; retry after {retry_after} s")


@dataclass(frozen=True)
class Charge:
    """One request's rate-limit work, worked out before any database work (:meth:`RateLimiter.charge`):
    the buckets to charge (``wanted``) and the failure-only buckets to read (``peeked``), with the
    statement parameters of both. A service runs it inside one of its own statements (the gate of
    :meth:`RateLimiter.pg_gate`) and reads the outcome with :meth:`RateLimiter.decide`."""

    wanted: dict[str, Limit]
    peeked: dict[str, Limit]
    now: float
    cost: int
    parameters: dict[str, Any]

    @property
    def shape(self) -> tuple[int, int]:
        """``(charged buckets, peeked buckets)``: which prebuilt statement fits."""
        return len(self.wanted), len(self.peeked)


@dataclass(frozen=True)
class Gate:
    """PostgreSQL pieces for running a :class:`Charge` inside another statement (:meth:`RateLimiter.pg_gate`).

    ``admits``: true when every charged bucket let the hit through and no peeked bucket is full (put
    it in the WHERE of the work the limits guard, so that refused work is not done); ``outcome``: the
    ``(key, tat, allowed, blocked)`` rows :meth:`RateLimiter.decide` reads (``blocked`` NULL on
    charged buckets, ``allowed`` NULL on peeked ones)."""

    hit: Any
    peeked: Any
    admits: Any
    outcome: list[Any]


class RateLimiter:
    """Rate limits over one service's ``rate_limits`` table (see the module docstring).

    ``secret`` keys the HMAC of bucket keys; all workers of a service must use the same one (derive it
    from the service's master key). ``clock`` returns epoch seconds (tests pass their own).
    ``connect`` opens the connection each statement runs on (default: the database's autocommit
    connection; on SQLite behind a per-limiter lock). A service that already queues its SQLite writers
    on a lock passes its own (the issuer's ``single_statement``), so the limiter joins that queue
    instead of racing it in SQLite's busy handler.

    A database error while counting lets the request through (logged as a warning): the limiter
    protects the service, it must not be the thing that takes it down under load.
    """

    def __init__(
        self,
        db: Database,
        model: type[RateLimitMixin],
        *,
        secret: bytes = b"",
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
        connect: Callable[[], AbstractAsyncContextManager[AsyncConnection]] | None = None,
    ) -> None:
        self.db = db
        self.model = model
        self.enabled = enabled
        self._secret = secret or b"cartera-rate-limit"
        self._clock = clock
        self._last_cleanup = 0.0
        self._connect = connect or self._default_connection
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        table = model.__table__  # type: ignore[attr-defined]
        self._table = table
        self._statements: dict[tuple[str, str, int], Any] = {}

    @asynccontextmanager
    async def _default_connection(self) -> AsyncIterator[AsyncConnection]:
        if self.db.backend != "sqlite":
            async with self.db.statement_connection() as conn:
                yield conn  # type: ignore[misc]
            return
        # SQLite has one writer: queue this process's limiter statements here rather than have many
        # connections sleep in the busy handler, which starves some of them past its timeout.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock, self.db.autocommit_connection() as conn:
            yield conn

    def bucket_key(self, limit: Limit, identity: str) -> str:
        """The stored key of ``identity`` under ``limit``: hex HMAC-SHA256, never the identity itself."""
        message = limit.name.encode() + b"\x00" + identity.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _wanted(self, checks: Iterable[tuple[Limit, str | None]]) -> dict[str, Limit]:
        # Pairs whose limit is disabled or whose identity is None/empty count for nothing.
        wanted: dict[str, Limit] = {}
        for limit, identity in checks:
            if limit.enabled and identity:
                wanted.setdefault(self.bucket_key(limit, identity), limit)
        return wanted

    async def hit(self, checks: Iterable[tuple[Limit, str | None]], *, cost: int = 1) -> Decision:
        """Count one request against every ``(limit, identity)`` pair; refuse if any bucket is full.

        Pairs whose limit is disabled or whose identity is ``None``/empty are skipped. Every bucket
        that has room is charged even when another refuses (a client hammering one key still pays for
        the others). One statement, whatever the number of pairs.
        """
        return (await self.hit_and_peek(checks, (), cost=cost))[0]

    async def hit_and_peek(self, checks: Iterable[tuple[Limit, str | None]],
                           peek: Iterable[tuple[Limit, str | None]], *, cost: int = 1) -> tuple[Decision, Decision]:
        """:meth:`hit` on ``checks`` and :meth:`blocked` on ``peek`` (read, not charged), as one
        statement on PostgreSQL: an endpoint with a failure-only limit learns both in one round trip."""
        charge = self.charge(checks, peek, cost=cost)
        if charge is None:
            return Decision(True), Decision(True)
        wanted, peeked, now = charge.wanted, charge.peeked, charge.now
        try:
            hit_rows, peek_rows = await self._charge_and_read(charge)
        except DBAPIError:
            log.warning("rate limiter unavailable; request let through",
                        extra={"limits": sorted({limit.name for limit in [*wanted.values(), *peeked.values()]})})
            return Decision(True), Decision(True)
        return self._charged_decision(wanted, hit_rows, now, cost), self._blocked_decision(peeked, peek_rows, now)

    @staticmethod
    def _charged_decision(wanted: dict[str, Limit], hit_rows: Iterable[Any], now: float, cost: int) -> Decision:
        refused: Decision | None = None
        for key, tat, allowed in hit_rows:
            if allowed:
                continue
            limit = wanted[key]
            # The next hit fits once now' >= tat + interval - tolerance.
            wait = max(1, math.ceil(tat + limit.interval * cost - limit.burst * limit.interval - now))
            if refused is None or wait > refused.retry_after:
                refused = Decision(False, wait, limit.name)
        return refused or Decision(True)

    def charge(self, checks: Iterable[tuple[Limit, str | None]], peek: Iterable[tuple[Limit, str | None]] = (),
               *, cost: int = 1) -> Charge | None:
        """What :meth:`hit_and_peek` would count, as a :class:`Charge` for a service's own statement;
        ``None`` when there is nothing to count (limiter off, every limit disabled or unidentified)."""
        if not self.enabled:
            return None
        wanted, peeked = self._wanted(checks), self._wanted(peek)
        if not wanted and not peeked:
            return None
        now = self._clock()
        parameters: dict[str, Any] = {"now_ts": now}
        # Sorted keys: concurrent multi-row upserts lock rows in one order, so they cannot deadlock.
        for i, (key, limit) in enumerate(sorted(wanted.items())):
            parameters.update({f"key_{i}": key, f"tat_{i}": now + limit.interval * cost,
                               f"tolerance_{i}": limit.burst * limit.interval})
        for i, (key, limit) in enumerate(peeked.items()):
            parameters.update({f"peek_{i}": key, f"peek_interval_{i}": limit.interval,
                               f"peek_tolerance_{i}": limit.burst * limit.interval})
        return Charge(wanted, peeked, now, cost, parameters)

    def pg_gate(self, hits: int, peeks: int) -> Gate:
        """The :class:`Gate` of a charge of shape ``(hits, peeks)`` (PostgreSQL; ``hits`` >= 1).

        The charged buckets are the upsert of :meth:`hit` as a CTE. A peeked bucket is full when
        ``max(tat, now) + interval - now > tolerance`` (:meth:`blocked`'s test, here in SQL so that
        the statement itself decides): it reads the rows as they were when the statement started,
        which is what a separate read before it would have seen."""
        table = self._table
        hit = self._hit_statement("postgresql", hits).cte("hit")
        now = bindparam("now_ts", type_=Double)
        full = case(*[(table.c.key == bindparam(f"peek_{i}", type_=String),
                       case((table.c.tat > now, table.c.tat), else_=now)
                       + bindparam(f"peek_interval_{i}", type_=Double) - now
                       > bindparam(f"peek_tolerance_{i}", type_=Double)) for i in range(peeks)],
                    else_=False) if peeks else cast(null(), Boolean)
        peeked = (select(table.c.key, table.c.tat, full.label("blocked"))
                  .where(table.c.key.in_([bindparam(f"peek_{i}", type_=String) for i in range(peeks)]))
                  .cte("peeked"))
        admits = ~exists().where(hit.c.allowed.is_(False))
        if peeks:
            admits = admits & ~exists().where(peeked.c.blocked.is_(True))
        outcome = [select(hit.c.key, hit.c.tat, hit.c.allowed, cast(null(), Boolean).label("blocked"))]
        if peeks:
            outcome.append(select(peeked.c.key, peeked.c.tat, cast(null(), Boolean), peeked.c.blocked))
        return Gate(hit, peeked, admits, outcome)

    def decide(self, charge: Charge, rows: Iterable[Any]) -> tuple[Decision, Decision]:
        """The decisions of a charge run through a :class:`Gate`, from its ``outcome`` rows
        ``(key, tat, allowed, blocked)``: whether the charged buckets let it through, and whether a
        peeked bucket is full (the statement's own verdict; the wait is worked out here)."""
        hit_rows, full_rows = [], []
        for key, tat, allowed, blocked in rows:
            if allowed is not None:
                hit_rows.append((key, tat, allowed))
            elif blocked:
                full_rows.append((key, tat))
        refused: Decision | None = None
        for key, tat in full_rows:
            limit = charge.peeked[key]
            wait = max(1, math.ceil(tat + limit.interval - limit.burst * limit.interval - charge.now))
            if refused is None or wait > refused.retry_after:
                refused = Decision(False, wait, limit.name)
        return self._charged_decision(charge.wanted, hit_rows, charge.now, charge.cost), refused or Decision(True)

    async def cleanup_if_due(self) -> None:
        """:meth:`cleanup`, at most every ``CLEANUP_EVERY`` seconds: for services that charge buckets
        in their own statements (:meth:`charge`), which never pass through :meth:`hit`."""
        if self._clock() - self._last_cleanup >= CLEANUP_EVERY:
            try:
                await self.cleanup()
            except DBAPIError:
                log.warning("rate limit cleanup failed; it is retried later")

    async def _charge_and_read(self, charge: Charge) -> tuple[list[Any], list[Any]]:
        """``(key, tat, allowed)`` of the charged buckets and ``(key, tat)`` of the peeked ones: one
        statement on PostgreSQL when there are both, otherwise one for each that there is."""
        hits, peeks = charge.shape
        peek_keys = list(charge.peeked)
        now = charge.now
        async with self._connect() as conn:
            dialect = conn.dialect.name
            if hits and peeks and dialect == "postgresql":
                result = (await conn.execute(self._hit_and_peek_statement(hits, peeks), charge.parameters)).all()
                hit_rows = [(key, tat, allowed) for key, tat, allowed in result if allowed is not None]
                peek_rows = [(key, tat) for key, tat, allowed in result if allowed is None]
            else:
                params = {name: value for name, value in charge.parameters.items() if not name.startswith("peek_")}
                hit_rows = list((await conn.execute(self._hit_statement(dialect, hits), params)).all()
                                ) if hits else []
                peek_rows = list((await conn.execute(self._blocked_statement(peeks),
                                                     {f"key_{i}": key for i, key in enumerate(peek_keys)})).all()
                                 ) if peeks else []
            if now - self._last_cleanup >= CLEANUP_EVERY:
                self._last_cleanup = now
                await conn.execute(delete(self._table).where(self._table.c.tat < now))
        return hit_rows, peek_rows

    def _hit_and_peek_statement(self, count: int, peeks: int) -> Any:
        """PostgreSQL: the upsert of ``count`` buckets as a CTE, and the ``(key, tat)`` of ``peeks``
        others (parameters ``peek_<i>``) read beside it, ``allowed`` NULL on those rows."""
        cached = self._statements.get(("hit+peek", str(peeks), count))
        if cached is not None:
            return cached
        table = self._table
        hit = self._hit_statement("postgresql", count).cte("hit")
        stmt = union_all(
            select(hit.c.key, hit.c.tat, hit.c.allowed),
            select(table.c.key, table.c.tat, cast(null(), Boolean)).where(
                table.c.key.in_([bindparam(f"peek_{i}", type_=String) for i in range(peeks)])))
        if count <= 8 and peeks <= 8:
            self._statements[("hit+peek", str(peeks), count)] = stmt
        return stmt

    def _hit_statement(self, dialect: str, count: int) -> Any:
        """The upsert of ``count`` buckets (parameters ``now_ts``, ``key_<i>``, ``tat_<i>``,
        ``tolerance_<i>``; ``tat_<i> - now_ts`` is that bucket's cost in seconds), built once per
        dialect and count: built per request it cost more CPU than running it, and a prebuilt
        statement runs on the driver directly (``service_kit.db.StatementConnection``)."""
        cached = self._statements.get(("hit", dialect, count))
        if cached is not None:
            return cached
        table = self._table
        now_param = bindparam("now_ts", type_=Double)
        stmt = dialect_insert_for(dialect, self.model)
        stmt = stmt.values([{"key": bindparam(f"key_{i}", type_=String), "tat": bindparam(f"tat_{i}", type_=Double),
                             "tolerance": bindparam(f"tolerance_{i}", type_=Double), "allowed": True}
                            for i in range(count)])
        excluded = stmt.excluded
        base = case((table.c.tat > now_param, table.c.tat), else_=now_param)
        # excluded.tat - now is this hit's cost in seconds (interval x cost) for that bucket.
        next_tat = base + (excluded.tat - now_param)
        fits = next_tat - now_param <= excluded.tolerance
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"allowed": fits, "tat": case((fits, next_tat), else_=table.c.tat), "tolerance": excluded.tolerance},
        ).returning(table.c.key, table.c.tat, table.c.allowed)
        if count <= 8:
            self._statements[("hit", dialect, count)] = stmt
        return stmt

    def _blocked_statement(self, count: int) -> Any:
        """``(key, tat)`` of ``count`` buckets (parameters ``key_<i>``), built once per count."""
        cached = self._statements.get(("blocked", "", count))
        if cached is not None:
            return cached
        table = self._table
        stmt = select(table.c.key, table.c.tat).where(
            table.c.key.in_([bindparam(f"key_{i}", type_=String) for i in range(count)]))
        if count <= 8:
            self._statements[("blocked", "", count)] = stmt
        return stmt

    async def check(self, checks: Iterable[tuple[Limit, str | None]], *, cost: int = 1) -> None:
        """:meth:`hit`, raising :class:`RateLimitExceeded` when refused."""
        decision = await self.hit(checks, cost=cost)
        if not decision.allowed:
            raise RateLimitExceeded(decision.limit, decision.retry_after)

    async def blocked(self, checks: Iterable[tuple[Limit, str | None]]) -> Decision:
        """Whether the buckets would refuse a hit now, without charging them (for failure-only limits:
        check before the attempt, :meth:`hit` after a failure)."""
        return (await self.hit_and_peek((), checks))[1]

    @staticmethod
    def _blocked_decision(wanted: dict[str, Limit], result: Iterable[Any], now: float) -> Decision:
        refused: Decision | None = None
        for key, tat in result:
            limit = wanted[key]
            if max(tat, now) + limit.interval - now > limit.burst * limit.interval:
                wait = max(1, math.ceil(tat + limit.interval - limit.burst * limit.interval - now))
                if refused is None or wait > refused.retry_after:
                    refused = Decision(False, wait, limit.name)
        return refused or Decision(True)

    async def cleanup(self) -> int:
        """Delete the rows of buckets that are full again (``tat`` in the past); return how many."""
        now = self._clock()
        self._last_cleanup = now
        async with self._connect() as conn:
            result = await conn.execute(delete(self._table).where(self._table.c.tat < now))
        return int(result.rowcount or 0)


def dialect_insert_for(dialect: str, model: Any) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for a dialect name (a Core connection's twin of
    :func:`service_kit.db.dialect_insert`)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


__all__ = [
    "Charge",
    "Decision",
    "Gate",
    "Limit",
    "RateSpec",
    "build_limiter",
    "limiter_of",
    "parse_rate",
    "RateLimitExceeded",
    "RateLimitMixin",
    "RateLimiter",
    "client_address",
    "dialect_insert_for",
    "refuse_if_blocked",
    "enforce",
    "rate_limit_responses",
    "too_many_requests",
]


# --- FastAPI side -------------------------------------------------------------------------------


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: One client's share of IPv6: a /64 is what a single subscriber gets (RFC 6177), and every address in
#: it is theirs to use. Keyed by /128, one attacker had 2^64 buckets.
IPV6_CLIENT_PREFIX = 64


def _unmapped(address: IPAddress) -> IPAddress:
    """The IPv4 address of an IPv4-mapped one (``::ffff:10.0.0.5``, a dual-stack listener's view of an
    IPv4 peer), else the address itself: the same host must compare and count the same either way."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _address(value: str) -> IPAddress | None:
    try:
        return _unmapped(ipaddress.ip_address(value.strip().strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def _parse_networks(trusted: Sequence[str]) -> list[IPNetwork]:
    networks: list[IPNetwork] = []
    for entry in trusted:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            continue
        mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
        if mapped is not None and network.prefixlen >= 96:  # ::ffff:10.0.0.0/104 is 10.0.0.0/8
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96), strict=False)
        networks.append(network)
    return networks


def _is_trusted(address: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    return address is not None and any(address in net for net in networks)


def _identity(address: IPAddress | None, raw: str) -> str:
    """The rate-limit identity of a client: its IPv4 address, or its IPv6 /64."""
    if address is None:
        return raw
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


def client_address(request: Request, trusted_proxies: Sequence[str] = ()) -> str:
    """The identity to rate-limit ``request`` by: the client's IPv4 address, or its IPv6 /64.

    The socket peer, unless the peer is one of ``trusted_proxies`` (addresses or CIDR networks): then
    ``X-Forwarded-For`` is read from the right, skipping trusted hops, and the first untrusted address
    is the client (the left part of the header is whatever the client chose to send). Behind uvicorn's
    ``--proxy-headers`` the peer is already the forwarded address; this works either way. IPv4-mapped
    IPv6 addresses are read as the IPv4 address they carry, for the trust check and the identity.
    """
    peer = request.client.host if request.client else ""
    peer_address = _address(peer)
    networks = _parse_networks(trusted_proxies)
    if not networks or not _is_trusted(peer_address, networks):
        return _identity(peer_address, peer or "unknown")
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if not _is_trusted(address, networks):
            return _identity(address, hop)
    if hops:
        return _identity(_address(hops[0]), hops[0])
    return _identity(peer_address, peer)


def too_many_requests(exc: RateLimitExceeded, error: str = "too_many_requests") -> Exception:
    """The ``APIError`` answering a refused request: 429, ``Retry-After``, ``{"error", "error_description"}``.

    ``error`` is ``slow_down`` on OAuth token endpoints (RFC 8628's code for "poll less often", which
    OAuth clients know) and ``too_many_requests`` elsewhere.
    """
    from service_kit.errors import APIError

    return APIError(
        429, error, f"too many requests; retry after {exc.retry_after} seconds",
        headers={"Retry-After": str(exc.retry_after)},
    )


async def enforce(
    limiter: RateLimiter | None,
    checks: Iterable[tuple[Limit, str | None]],
    *,
    error: str = "too_many_requests",
    cost: int = 1,
    peek: Iterable[tuple[Limit, str | None]] = (),
) -> Decision:
    """Charge the buckets and raise the 429 ``APIError`` when one is full (no-op without a limiter).

    ``peek``: failure-only buckets read in the same statement without charging them; the returned
    decision says whether they would refuse now (apply it with :func:`refuse_if_blocked` where it
    matters, charge them with :meth:`RateLimiter.hit` after a failure)."""
    if limiter is None:
        return Decision(True)
    charged, peeked = await limiter.hit_and_peek(checks, peek, cost=cost)
    refuse_if_blocked(charged, error)
    return peeked


def refuse_if_blocked(decision: Decision, error: str = "too_many_requests") -> None:
    """Raise the 429 ``APIError`` (with ``Retry-After``) for a refusing decision."""
    if not decision.allowed:
        raise too_many_requests(RateLimitExceeded(decision.limit, decision.retry_after), error)


def rate_limit_responses(error: str = "too_many_requests") -> dict[int | str, dict[str, Any]]:
    """The 429 entry for an endpoint's ``responses=`` (OpenAPI), naming ``Retry-After`` and the body."""
    return {
        429: {
            "description": f"Rate limit reached (`{error}`): retry after the number of seconds in `Retry-After`.",
            "headers": {
                "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
            },
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["error", "error_description"],
                        "properties": {
                            "error": {"type": "string", "enum": [error]},
                            "error_description": {"type": "string"},
                        },
                    },
                    "example": {"error": error, "error_description": "too many requests; retry after 5 seconds"},
                }
            },
        }
    }


def limiter_of(request: Request) -> RateLimiter | None:
    """The app's limiter (``app.state.rate_limiter``), or ``None`` when the app has none."""
    return getattr(request.app.state, "rate_limiter", None)


def build_limiter(
    settings: Any,
    db: Database,
    model: type[RateLimitMixin],
    master_key: bytes,
    *,
    connect: Callable[[], AbstractAsyncContextManager[AsyncConnection]] | None = None,
) -> RateLimiter:
    """The limiter of a service: keys under a secret derived from its master key (the same in every
    worker, and useless for anything else), on or off as ``settings.rate_limits_enabled`` says;
    ``connect`` as for :class:`RateLimiter`."""
    secret = hmac.new(master_key, b"cartera rate-limit bucket keys", hashlib.sha256).digest()
    return RateLimiter(db, model, secret=secret, enabled=bool(getattr(settings, "rate_limits_enabled", True)),
                       connect=connect)
