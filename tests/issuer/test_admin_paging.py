"""Paging the issuance records: out-of-range ``offset``/``limit`` are a 400, never a database error (500)."""

from __future__ import annotations

import httpx
import pytest

from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS

pytestmark = pytest.mark.anyio

BAD = [{"offset": "9223372036854775808"}, {"offset": "9223372036854775807"}, {"offset": str(10**30)},
       {"offset": "-1"}, {"limit": "9223372036854775808"}, {"limit": "0"}, {"limit": "501"}, {"offset": "x"}]


async def _pages(env: IssuerEnv) -> None:
    headers = env.headers("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        for params in BAD:
            r = await http.get(f"{env.url}/v1/credentials", params=params, headers=headers)
            assert r.status_code == 400, (params, r.status_code, r.text)
            assert r.json()["error"] == "invalid_request", r.text
        r = await http.get(f"{env.url}/v1/credentials", params={"offset": "1000000000", "limit": "500"}, headers=headers)
        assert r.status_code == 200 and r.json()["items"] == [], r.text


async def test_out_of_range_paging_is_a_400_on_sqlite(issuer_env: IssuerEnv) -> None:
    await _pages(issuer_env)


async def test_out_of_range_paging_is_a_400_on_postgresql(pg_issuer_env: IssuerEnv) -> None:
    await _pages(pg_issuer_env)
