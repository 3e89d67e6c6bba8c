"""Anyone who shows the citizen a QR code is a peer of the wallet service: what it answers (a request
object, issuer metadata) is read within the wallet's cap counted inflated, and never inflated past it."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.peers import compressed_peer
from tests.support.servers import serve
from tests.wallet_api.conftest import offline_wallet
from wallet_api.context import FetchError, get_json_blocking

pytestmark = pytest.mark.anyio

@pytest.fixture(scope="module")
def peer() -> Iterator[tuple[str, list[str | None]]]:
    app, seen = compressed_peer()
    with serve(app) as base:
        yield base, seen


async def test_a_compressed_answer_is_never_inflated_past_the_cap(tmp_path: Path,
                                                                  peer: tuple[str, list[str | None]]) -> None:
    base, seen = peer
    async with offline_wallet(tmp_path) as ctx, ctx.client() as client:
        tracemalloc.start()
        try:
            with pytest.raises(FetchError, match="too much data"):
                await ctx.request(client, "GET", f"{base}/bomb")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, f"{peak >> 20} MiB allocated while refusing it"
        assert seen[-1] == "identity"
        assert await ctx.get_json(client, f"{base}/small") == {"ok": True}
        # The synchronous path (issuer metadata for the key resolvers) does not read a compressed answer.
        with pytest.raises(FetchError, match="compressed"):
            get_json_blocking(f"{base}/bomb", timeout=5, policy=ctx.settings.outbound_policy())
