"""Webhook signatures and delivery with retries, against a real receiver on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import tracemalloc
import zlib

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from service_kit.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    backoff_delay,
    deliver_webhook,
    sign_webhook,
    verify_webhook,
)
from tests.support.servers import free_port, serve

SECRET = "whsec_test_secret"
BODY = json.dumps({"event": "presentation.verified", "transaction_id": "t-1"}).encode()


def test_signature_matches_the_documented_scheme() -> None:
    header = sign_webhook(SECRET, BODY, timestamp=1_700_000_000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_webhook(SECRET, BODY, header, now=1_700_000_100) == 1_700_000_000


def test_verification_failures_have_codes() -> None:
    header = sign_webhook(SECRET, BODY, timestamp=1_700_000_000)
    cases = {
        "webhook.mismatch": (SECRET, BODY + b" ", header),
        "webhook.stale": (SECRET, BODY, header),
        "webhook.malformed": (SECRET, BODY, "v1=abc"),
    }
    with pytest.raises(Exception) as err:
        verify_webhook(*cases["webhook.mismatch"], now=1_700_000_000)
    assert getattr(err.value, "code", None) == "webhook.mismatch"
    with pytest.raises(Exception) as err:
        verify_webhook(*cases["webhook.stale"], now=1_700_000_000 + 301)
    assert getattr(err.value, "code", None) == "webhook.stale"
    for bad in ["", "v1=abc", "t=abc,v1=00", "t=1700000000", "garbage", "t=1,,v1=2"]:
        with pytest.raises(Exception) as err:
            verify_webhook(SECRET, BODY, bad, now=1_700_000_000)
        assert getattr(err.value, "code", None) == "webhook.malformed", bad
    with pytest.raises(Exception) as err:
        verify_webhook("other-secret", BODY, header, now=1_700_000_000)
    assert getattr(err.value, "code", None) == "webhook.mismatch"


def test_rotation_accepts_any_listed_secret_or_signature() -> None:
    ts = 1_700_000_000
    old = sign_webhook("old", BODY, ts)
    new = sign_webhook("new", BODY, ts)
    both = f"{old},v1={new.split('v1=')[1]}"
    assert verify_webhook(["new", "old"], BODY, old, now=ts) == ts
    assert verify_webhook("new", BODY, both, now=ts) == ts


def test_backoff_is_bounded_and_grows() -> None:
    for attempt in range(1, 12):
        assert 0 <= backoff_delay(attempt, base=0.5, cap=8) <= min(8, 0.5 * 2 ** (attempt - 1))


class Receiver:
    """A webhook endpoint that fails a given number of times first, then accepts."""

    def __init__(self, failures: int, fail_status: int = 503) -> None:
        self.failures = failures
        self.fail_status = fail_status
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            verify_webhook(SECRET, body, request.headers.get(SIGNATURE_HEADER))
            with self.lock:
                self.calls.append((request.headers[EVENT_ID_HEADER], body.decode()))
                failing = len(self.calls) <= self.failures
            if failing:
                return JSONResponse({"error": "busy"}, status_code=self.fail_status)
            return JSONResponse({"ok": True})


async def _no_sleep(_seconds: float) -> None:
    return None


def _deliver(url: str, **kwargs: object) -> object:
    async def run() -> object:
        async with httpx.AsyncClient() as client:
            return await deliver_webhook(client, url, BODY, SECRET, event_id="evt-1", sleep=_no_sleep, **kwargs)

    return asyncio.run(run())


def test_delivery_retries_transient_failures_then_succeeds() -> None:
    receiver = Receiver(failures=2)
    with serve(receiver.app) as base:
        result = _deliver(f"{base}/hook", max_attempts=5)
    assert result.delivered and result.attempts == 3 and result.status_code == 200
    assert [event for event, _ in receiver.calls] == ["evt-1"] * 3
    assert all(body == BODY.decode() for _, body in receiver.calls)


def test_delivery_gives_up_after_max_attempts() -> None:
    receiver = Receiver(failures=100)
    with serve(receiver.app) as base:
        result = _deliver(f"{base}/hook", max_attempts=4)
    assert not result.delivered and result.attempts == 4 and result.status_code == 503
    assert len(receiver.calls) == 4


def test_delivery_does_not_retry_a_client_error() -> None:
    receiver = Receiver(failures=100, fail_status=400)
    with serve(receiver.app) as base:
        result = _deliver(f"{base}/hook", max_attempts=5)
    assert not result.delivered and result.attempts == 1 and result.error == "HTTP 400"


def test_delivery_retries_connection_errors() -> None:
    result = _deliver(f"http://127.0.0.1:{free_port()}/hook", max_attempts=3)
    assert not result.delivered and result.attempts == 3 and result.status_code is None
    assert result.error == "ConnectError"


def _gzip_bomb(inflated: int) -> bytes:
    """A gzip body of zeros: ~1/1000 of ``inflated`` on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join([*(packer.compress(block) for _ in range(inflated >> 20)), packer.flush()])


def test_a_receivers_compressed_answer_is_never_inflated() -> None:
    """A receiver answering 200 with a gzip of 64 MiB of zeros (64 KiB sent): the delivery reads the
    status and at most a few kilobytes, asking for no compression at all."""
    bomb = _gzip_bomb(64 << 20)
    seen: list[str | None] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        seen.append(request.headers.get("accept-encoding"))
        return Response(bomb, media_type="application/json", headers={"Content-Encoding": "gzip"})

    with serve(app) as base:
        tracemalloc.start()
        try:
            result = _deliver(f"{base}/hook", max_attempts=1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert result.delivered and result.status_code == 200
    assert peak < 8 << 20, f"{peak >> 20} MiB allocated while delivering"
    assert seen == ["identity"]


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2015 07:28:00 -0000", "Wed, 21 Oct 2015 07:28:00", "\u00b2",
                                   "Fri, 31 Dec 9999 23:59:59 +1400", "soon", "-5"])
def test_an_odd_retry_after_is_ignored_not_raised(value: str) -> None:
    """Whatever a receiver writes in Retry-After, the attempt ends in a result (the default backoff)."""
    app = FastAPI()
    waits: list[float] = []

    @app.post("/hook")
    async def hook() -> Response:
        return Response(status_code=503, headers={"Retry-After": value})

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def run() -> object:
        async with httpx.AsyncClient() as client:
            return await deliver_webhook(client, f"{base}/hook", BODY, SECRET, event_id="evt-1", max_attempts=2,
                                         max_delay=30.0, sleep=record_sleep)

    with serve(app) as base:
        result = asyncio.run(run())
    assert not result.delivered and result.attempts == 2 and result.status_code == 503
    assert len(waits) == 1 and 0 <= waits[0] <= 30.0


def test_a_past_retry_after_date_in_utc_means_no_wait() -> None:
    app = FastAPI()
    waits: list[float] = []

    @app.post("/hook")
    async def hook() -> Response:
        return Response(status_code=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"})

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def run() -> object:
        async with httpx.AsyncClient() as client:
            return await deliver_webhook(client, f"{base}/hook", BODY, SECRET, event_id="evt-1", max_attempts=2,
                                         sleep=record_sleep)

    with serve(app) as base:
        asyncio.run(run())
    assert waits == [0.0]
