"""A long history can be read to its first entry: citizens "can see every share ever made" (DESIGN.md).

The list, its search and the export stopped at the newest 5,000 entries, and the list had no way to
page back. Now the list pages with an opaque ``before`` cursor (the ``Cartera-Next-Before`` header of
the previous page), in an order that is total (time, then id, both descending), so a walk meets every
entry exactly once — also where a page ends between entries with the same time; a search reads the
history in batches up to a bound per request and hands back a cursor to search on from; the export
streams every entry.

Real wallet over HTTP (the ``system`` fixture on SQLite, and the same system on PostgreSQL, whose
string and time comparisons the cursor relies on too), its history seeded with correctly sealed rows
written straight to its database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from sandbox.population import generate_population
from service_kit.db import Database
from ssi.encoding import b64url_encode
from tests.support.postgres import PostgresCluster
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, running_pg_system
from wallet_api.context import master_box
from wallet_api.models import HistoryEntry, Wallet
from wallet_api.vault import Vault

#: What docs/wallet-api.md promises: the cursor's header, the rows a search reads per batch and at most
#: per request.
NEXT_HEADER, BATCH, SEARCH_SCAN_LIMIT = "Cartera-Next-Before", 500, 5000
#: A citizen of the system's population no other test logs in (nor needs a credential of).
CITIZEN = generate_population(size=50).citizens[13].identifier
#: More entries than the old 5,000 cap and than one search request reads.
SEEDED = SEARCH_SCAN_LIMIT + 350
#: Entries found only by their marker: one past the first search batch, and the oldest of all.
PAST_FIRST_BATCH, OLDEST = BATCH + 200, SEEDED - 1


@pytest.fixture(scope="module")
def pg_system(postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_pg_system(postgres_cluster, tmp_path_factory.mktemp("pg-history-paging")) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def any_system(request: pytest.FixtureRequest) -> System:
    return request.getfixturevalue("system" if request.param == "sqlite" else "pg_system")


def _details(index: int) -> dict[str, Any]:
    marker = {PAST_FIRST_BATCH: "marker-past-first-batch", OLDEST: "marker-oldest"}.get(index)
    return {"verifier": {"name": f"seeded verifier {index}"}, "purpose": "seeded", "disclosed": [],
            "outcome": "sent", **({"note": marker} if marker else {})}


def _seed(system: System, wallet_id: str) -> dict[int, str]:
    """``SEEDED`` share entries sealed under the wallet's key, written to its database; entry ``i`` is
    ``i`` steps older than the newest, three entries per instant (a page end falls between two of
    them). Their ids by index."""
    settings = system.wallet_app.state.wallet.settings
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)

    async def write() -> dict[int, str]:
        db = Database(settings.database_url)
        try:
            async with db.session() as session:
                wallet = await session.get(Wallet, wallet_id)
                assert wallet is not None
                key = Vault(master_box(settings)).data_key(wallet)
                ids = {i: f"hist_seeded{i:05d}" for i in range(SEEDED)}
                session.add_all(HistoryEntry(id=ids[i], wallet_id=wallet_id, kind="share",
                                             created_at=start - dt.timedelta(seconds=i // 3, microseconds=7),
                                             sealed=key.seal("history", ids[i], _details(i)))
                                for i in range(SEEDED))
            return ids
        finally:
            await db.dispose()

    return asyncio.run(write())


def _row_count(system: System, wallet_id: str) -> int:
    async def count() -> int:
        db = Database(system.wallet_app.state.wallet.settings.database_url)
        try:
            async with db.read_session() as session:
                return (await session.execute(select(func.count()).select_from(HistoryEntry)
                                              .where(HistoryEntry.wallet_id == wallet_id))).scalar_one()
        finally:
            await db.dispose()

    return asyncio.run(count())


def _page(system: System, tokens: dict[str, str], **params: Any) -> tuple[list[dict[str, Any]], str | None]:
    r = httpx.get(f"{system.wallet}/v1/history", params=params, headers=bearer(tokens), timeout=60)
    assert r.status_code == 200, (params, r.text)
    return r.json(), r.headers.get(NEXT_HEADER)


@pytest.fixture
def seeded(any_system: System) -> tuple[System, dict[str, str], dict[int, str]]:
    tokens = login(any_system.wallet, CITIZEN)
    wallet_id = httpx.get(f"{any_system.wallet}/v1/me", headers=bearer(tokens), timeout=30).json()["wallet_id"]
    if _row_count(any_system, wallet_id) < SEEDED:  # once per system: the module's tests share them
        ids = _seed(any_system, wallet_id)
    else:
        ids = {i: f"hist_seeded{i:05d}" for i in range(SEEDED)}
    return any_system, tokens, ids


def test_paging_with_before_walks_the_whole_history_once(seeded: tuple[System, dict[str, str], dict[int, str]]
                                                         ) -> None:
    system, tokens, ids = seeded
    walked: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 1000}  # 1000 is no multiple of 3: pages end inside an instant
        if cursor is not None:
            params["before"] = cursor
        page, cursor = _page(system, tokens, **params)
        pages += 1
        new = [entry["id"] for entry in page]
        assert not set(new) & set(walked), f"page {pages} repeats entries"
        walked.extend(new)
        if cursor is None:
            break
        assert len(page) == 1000 and pages < 20
    # Every seeded entry exactly once, newest first, the same-instant ones by id (descending).
    # (the ids grow with the index, so within an instant the descending id order is the descending index)
    assert walked == [ids[i] for i in sorted(ids, key=lambda i: (i // 3, -i))]
    assert pages == -(-SEEDED // 1000)

    # The cursor keeps the other filters: a kind walks on from where it was.
    first, cursor = _page(system, tokens, kind="share", limit=7)
    second, _ = _page(system, tokens, kind="share", limit=7, before=cursor)
    assert [e["id"] for e in first + second] == walked[:14]
    assert _page(system, tokens, kind="receipt", limit=7) == ([], None)

    # A cursor the wallet did not give is a clean 400, as is a time with no UTC equivalent.
    edge = b64url_encode(b"0001-01-01T00:00:00+05:00|hist_seeded00001")
    for params in ({"before": "not-a-cursor"}, {"before": "bm90fGE"}, {"before": edge},
                   {"since": "0001-01-01T00:00:00+05:00"}):
        r = httpx.get(f"{system.wallet}/v1/history", params=params, headers=bearer(tokens), timeout=30)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (params, r.text)


def test_search_reaches_entries_past_its_first_batch_and_past_its_bound(
        seeded: tuple[System, dict[str, str], dict[int, str]]) -> None:
    system, tokens, ids = seeded
    # Past the first batch of rows read: found by the first request.
    found, cursor = _page(system, tokens, q="marker-past-first-batch")
    assert [e["id"] for e in found] == [ids[PAST_FIRST_BATCH]] and cursor is not None
    # The oldest entry lies beyond what one request reads: the first answers none and a cursor, and
    # searching on from it finds the entry, the history's end then reached (no cursor).
    found, cursor = _page(system, tokens, q="marker-oldest")
    assert found == [] and cursor is not None
    found, cursor = _page(system, tokens, q="marker-oldest", before=cursor)
    assert [e["id"] for e in found] == [ids[OLDEST]] and cursor is None
    assert found[0]["details"]["note"] == "marker-oldest"

    # `limit` matches end a page; the next one goes on right after the last match, none skipped.
    first, cursor = _page(system, tokens, q="seeded verifier", limit=5)
    second, _ = _page(system, tokens, q="seeded verifier", limit=5, before=cursor)
    walk, _ = _page(system, tokens, kind="share", limit=1000)
    seeded_walk = [e["id"] for e in walk if e["id"].startswith("hist_seeded")]
    assert [e["id"] for e in first + second] == seeded_walk[:10]


def test_the_export_holds_every_entry(seeded: tuple[System, dict[str, str], dict[int, str]]) -> None:
    system, tokens, ids = seeded
    exported = httpx.get(f"{system.wallet}/v1/history/export", headers=bearer(tokens), timeout=120)
    assert exported.status_code == 200, exported.text
    assert exported.headers["cache-control"] == "no-store"
    assert exported.headers["content-disposition"] == 'attachment; filename="wallet-history.json"'
    doc = exported.json()
    assert doc["format"] == "cartera-wallet-history" and doc["version"] == 1
    assert isinstance(doc["audit"], dict) and doc["audit"]["format"] == "cartera-audit-chain"
    entry_ids = [e["id"] for e in doc["entries"]]
    assert len(entry_ids) == len(set(entry_ids))
    assert set(ids.values()) <= set(entry_ids) and len(entry_ids) > 5000
    oldest = next(e for e in doc["entries"] if e["id"] == ids[OLDEST])
    assert oldest["details"]["note"] == "marker-oldest" and oldest["unreadable"] is False
    # Newest first, as the list: the same order as a walk of the list.
    walked: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = _page(system, tokens, limit=1000, **({"before": cursor} if cursor else {}))
        walked.extend(e["id"] for e in page)
        if cursor is None:
            break
    assert entry_ids == walked
