"""What the verifier fetches (status lists, issuer metadata) is read within ``max_bytes`` counted as
inflated, and never inflated past it: a small gzip answer must not grow to its full size in memory."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest

from service_kit.outbound import OutboundPolicy, guarded_transport
from tests.support.peers import compressed_peer
from tests.support.servers import serve
from verifier.verification import FetchError, fetch_bytes


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[str | None]]]:
    app, seen = compressed_peer("application/statuslist+jwt")
    with serve(app) as base:
        yield base, seen


def _fetch(url: str, max_bytes: int) -> bytes:
    async def run() -> bytes:
        transport = guarded_transport(OutboundPolicy.from_settings([], dev_mode=True))
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            return await fetch_bytes(client, url, accept="application/statuslist+jwt", max_bytes=max_bytes)

    return asyncio.run(run())


def test_a_compressed_answer_is_never_inflated_past_the_cap(server: tuple[str, list[str | None]]) -> None:
    base, seen = server
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match="too large"):
            _fetch(f"{base}/bomb", 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak >> 20} MiB allocated while refusing it"
    assert seen[-1] == "identity"
    # A compressed answer within the cap is read, inflated.
    assert _fetch(f"{base}/small", 1 << 20) == b'{"ok": true}'
