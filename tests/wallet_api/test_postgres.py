"""The wallet on PostgreSQL: a full receive-and-share flow, with its background sweep and alert webhook
outbox (``FOR UPDATE SKIP LOCKED`` leasing) running against a real PostgreSQL server.

The vault's database-scan test stays on SQLite (``test_e2e.py``): there the whole database is one file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from tests.support.postgres import PostgresCluster
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, open_copies, running_pg_system
from tests.wallet_api.test_backup_concurrent_import import check_concurrent_imports_store_each_credential_once
from tests.wallet_api.test_e2e import make_offer, receive
from tests.wallet_api.test_flows import wait_for


@pytest.fixture(scope="module")
def pg_system(postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_pg_system(postgres_cluster, tmp_path_factory.mktemp("pg-system")) as running:
        yield running


def _outbox(system: System, wallet_id: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import select

    from service_kit.db import Database
    from wallet_api.models import AlertWebhookOutbox

    async def read() -> list[tuple[Any, ...]]:
        db = Database(system.wallet_app.state.wallet.settings.database_url)
        try:
            async with db.read_session() as session:
                rows = (await session.execute(select(AlertWebhookOutbox).where(
                    AlertWebhookOutbox.wallet_id == wallet_id))).scalars().all()
                return [(r.event_type, r.delivered_at) for r in rows]
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_receive_and_share_on_postgresql(pg_system: System) -> None:
    system = pg_system
    assert system.wallet_app.state.wallet.settings.database_url.startswith("postgresql")
    tokens = login(system.wallet, DEMO_EVERYTHING)
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens)).json()["wallet_id"]
    offer = make_offer(system, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
    result = receive(system, tokens, offer)
    assert result["state"] == "issued"
    cid = result["credential_ids"][0]
    copies = open_copies(system, cid)
    assert len(copies) >= 2 and len({c["token"] for c in copies}) == len(copies)

    request = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers("ajuntament-barcelona"),
                         json={"template": "grant-application"}).json()
    preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                         headers=bearer(tokens), timeout=30).json()
    assert preview["verifier"]["name"] == "Ajuntament de Barcelona" and preview["satisfiable"]
    sent = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                      headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    # the same approval cannot be sent twice
    again = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                       headers=bearer(tokens), timeout=30)
    assert again.status_code == 409

    def outcome() -> dict[str, Any] | None:
        body = httpx.get(request["status_url"], headers=system.verifier_headers("ajuntament-barcelona")).json()
        return body if body["status"] != "pending" else None

    verified = wait_for(outcome)
    assert verified and verified["status"] == "verified"
    kinds = [h["kind"] for h in httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens)).json()]
    assert kinds == ["share", "receipt"]
    assert sorted(c["uses"] for c in open_copies(system, cid))[-1] == 1

    # the background sweep checked the status list; the alert webhook outbox was leased and delivered
    def checked() -> dict[str, Any] | None:
        body = httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).json()
        return body if body["status_checked_at"] else None

    assert (wait_for(checked) or {}).get("status") == "valid"
    assert wait_for(lambda: len(_outbox(system, wallet_id)) >= 2
                    and all(delivered for _, delivered in _outbox(system, wallet_id)))
    assert {e["data"]["kind"] for e in system.webhook.accepted if e["data"]["wallet_id"] == wallet_id} \
        >= {"offer_received", "credential_received"}

    assert httpx.delete(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).status_code == 204
    assert httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json() == []


def test_concurrent_imports_of_one_backup_store_each_credential_once_on_postgresql(pg_system: System) -> None:
    check_concurrent_imports_store_each_credential_once(pg_system)
