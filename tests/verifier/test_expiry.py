"""Expiry of answers whose check never ended: a transaction left in ``processing`` (the checking process
stopped, or its result could not be written) is expired by the background sweep exactly like an
unanswered one, and a check that ends after that expiry loses: one final state, one webhook.

Everything for real: the session's verifier (SQLite) and its background task, the agency's webhook
receiver and a status list server on loopback; the database is written directly only to make a row
what a dead process leaves behind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Response
from sqlalchemy import select, update

from aries.presentation import ProofRequest
from aries.service import webhook_key_hash
from service_kit.crypto import SecretBox, load_master_key
from service_kit.db import Database
from ssi.status_list import StatusList, sign_status_list_token
from tests.support.postgres import PostgresCluster
from tests.support.servers import serve
from tests.verifier.conftest import (
    ISSUER,
    PKI,
    VCT_TAX,
    CredentialFactory,
    Verifier,
    new_request,
    read_result,
    start_verifier,
)
from tests.verifier.test_delivery import Receiver
from verifier import aries_channel
from verifier.aries_channel import VerifierAriesChannel
from verifier.aries_models import AriesPresentation, AriesWebhookKey
from verifier.models import Transaction


def _in_db(verifier: Verifier, work: Any) -> Any:
    """Run ``await work(db)`` on the verifier's database (what another process of it would see)."""
    async def run() -> Any:
        db = Database(verifier.settings.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def _set(verifier: Verifier, tx_id: str, **values: Any) -> None:
    async def work(db: Database) -> None:
        async with db.session() as session:
            await session.execute(update(Transaction).where(Transaction.id == tx_id).values(**values))

    _in_db(verifier, work)


def _row(verifier: Verifier, tx_id: str) -> Any:
    async def work(db: Database) -> Any:
        async with db.read_session() as session:
            return (await session.execute(select(Transaction.__table__).where(Transaction.id == tx_id))).one()

    return _in_db(verifier, work)


def _until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _past() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)


def _events(rec: Receiver) -> list[dict[str, Any]]:
    return [json.loads(call["body"]) for call in rec.accepted]


def _code(response: Any) -> str:
    return response.json().get("code", response.json().get("error"))


def _assert_expired_once(verifier: Verifier, tx_id: str, event: dict[str, Any]) -> None:
    """The final state and webhook of an expired request: no claims, the expiry code, claims retention set."""
    assert event["event"] == "presentation.expired" and event["transaction_id"] == tx_id
    assert event["result"]["status"] == "expired"
    assert [e["code"] for e in event["result"]["errors"]] == ["verifier.expired_transaction"]
    assert event["result"]["claims"] == {} and event["result"]["completed_at"] is not None
    row = _row(verifier, tx_id)
    assert row.status == "expired"
    assert row.purge_at - row.completed_at == dt.timedelta(seconds=row.retention_seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_verifier(request: pytest.FixtureRequest, pki: PKI, tmp_path: Any) -> Iterator[Verifier]:
    """The session's verifier (SQLite), or one of its own on a new PostgreSQL database."""
    if request.param == "sqlite":
        yield request.getfixturevalue("verifier")
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database()
    try:
        with start_verifier(tmp_path, pki, url) as running:
            yield running
    finally:
        cluster.drop_database(url)


def test_a_dead_check_is_expired_by_the_sweep_like_an_unanswered_request(http, any_verifier):
    verifier = any_verifier
    rec = Receiver()
    with serve(rec.app()) as base:
        unanswered = new_request(http, verifier, webhook_url=f"{base}/hooks/vp", response_mode="direct_post")
        dead = new_request(http, verifier, webhook_url=f"{base}/hooks/vp", response_mode="direct_post")
        # Both past their expiry: one never answered, one claimed by an answer whose process died.
        _set(verifier, unanswered["id"], expires_at=_past())
        _set(verifier, dead["id"], status="processing", expires_at=_past())
        reported = _until(lambda: len(rec.accepted) >= 2, timeout=8)  # the background sweep (every 0.2 s)
        time.sleep(1.0)  # several more sweeps: nothing is reported twice
    events = {event["transaction_id"]: event for event in _events(rec)}
    assert reported and len(rec.accepted) == 2, [(e["transaction_id"], e["event"]) for e in events.values()]
    assert set(events) == {unanswered["id"], dead["id"]}
    for tx_id, event in events.items():
        _assert_expired_once(verifier, tx_id, event)
        assert read_result(http, verifier, tx_id)["status"] == "expired"

    def same_shape(event: dict[str, Any]) -> dict[str, Any]:
        result = {k: v for k, v in event["result"].items() if k not in ("id", "created_at", "expires_at",
                                                                         "completed_at")}
        return {"event": event["event"], "result": result}

    assert same_shape(events[dead["id"]]) == same_shape(events[unanswered["id"]])


@dataclass
class SlowStatusServer:
    """A status list server whose answer waits until the test releases it: a check in progress."""

    pki: PKI
    base_url: str = ""
    asked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/status/{name}")
        def status(name: str) -> Response:
            self.asked.set()
            self.release.wait(10)
            token = sign_status_list_token(StatusList(1024, bits=2), uri=self.uri(name), key=self.pki.issuer_key,
                                           ttl=300, exp=int(time.time()) + 3600, x5c=self.pki.issuer_x5c)
            return Response(token, media_type="application/statuslist+jwt")

        return app

    def uri(self, name: str) -> str:
        return f"{self.base_url}/status/{name}"


def test_a_check_ending_after_the_expiry_sweep_loses_and_reports_nothing(http, verifier, wallet, pki):
    rec = Receiver()
    slow = SlowStatusServer(pki)
    with serve(slow.app()) as slow_url, serve(rec.app()) as base, ThreadPoolExecutor(1) as pool:
        slow.base_url = slow_url
        held = CredentialFactory(pki, slow).tax()  # type: ignore[arg-type]
        created = new_request(http, verifier, webhook_url=f"{base}/hooks/vp", response_mode="direct_post")
        request = wallet.fetch_request(created["uri"])
        vp_token = wallet.build_vp_token(request, [held])
        try:
            answer = pool.submit(wallet.post_response, request, vp_token)
            assert slow.asked.wait(10), "the check never fetched the status list"
            # The check is running (the row claimed) when the request's expiry passes: the sweep expires it.
            assert _row(verifier, created["id"]).status == "processing"
            _set(verifier, created["id"], expires_at=_past())
            _until(lambda: len(rec.accepted) >= 1, timeout=5)
        finally:
            slow.release.set()  # the check goes on and ends: it would verify the presentation
        response = answer.result(timeout=20)
        time.sleep(1.0)  # several worker ticks: a second outcome would have been delivered
    assert [e["event"] for e in _events(rec)] == ["presentation.expired"]
    _assert_expired_once(verifier, created["id"], _events(rec)[0])
    # The wallet is told the truth: the request had expired; no redirect, no response code.
    assert response.status_code == 400, response.text
    assert _code(response) == "verifier.expired_transaction"
    assert _row(verifier, created["id"]).response_code_hash is None


# -- the Aries channel -----------------------------------------------------------------------------

WEBHOOK_KEY = secrets.token_urlsafe(32)


class _Agent:
    """The agent's record of the exchange (the judged content is stubbed: the write is under test)."""

    removed: list[str] = []  # noqa: RUF012 - the records removed from the agent, across instances

    async def pres_record(self, pres_ex_id: str) -> dict[str, Any]:
        return {"pres_ex_id": pres_ex_id, "state": "done"}

    async def delete_pres_record(self, pres_ex_id: str) -> None:
        self.removed.append(pres_ex_id)


def _aries_request(verifier: Verifier, tx_id: str) -> str:
    """The Aries part of transaction ``tx_id``, as ``create_request`` stores it; returns its ``pres_ex_id``."""
    pres_ex_id = f"pres-{tx_id[:16]}"
    request = ProofRequest(type_id="tax-compliance", type_name="Tax compliance", claims=("nif",), proof_type="bbs",
                           challenge=secrets.token_urlsafe(16), domain="127.0.0.1", presentation_definition={})

    async def work(db: Database) -> None:
        async with db.session() as session:
            session.add(AriesPresentation(
                tx_id=tx_id, pres_ex_id=pres_ex_id, thread_id=f"thread-{tx_id[:16]}", query_id="tax", vct=VCT_TAX,
                request=asdict(request), issuers=[ISSUER], values={}, short_code=secrets.token_urlsafe(16),
                invitation={}, invitation_url="https://agent.example/oob", created_at=dt.datetime.now(dt.UTC)))
            if await session.get(AriesWebhookKey, webhook_key_hash(WEBHOOK_KEY)) is None:
                session.add(AriesWebhookKey(key_hash=webhook_key_hash(WEBHOOK_KEY), created_at=dt.datetime.now(dt.UTC)))

    _in_db(verifier, work)
    return pres_ex_id


@pytest.mark.parametrize("failed_writes", [1, 2], ids=["write-fails-once", "writes-keep-failing"])
def test_aries_result_that_cannot_be_written_is_reported_once(http, verifier, monkeypatch, failed_writes):
    """The verifier's Aries webhook handler (the agent's real delivery path, ``receive``) judging a
    presentation whose result write fails: reported once as an internal error, or, when no write
    goes through, left ``processing`` for the sweep, which expires it. Never silently dropped, never
    reported twice, and the agent's redelivery is a duplicate."""
    writes: list[str] = []
    real_finish = aries_channel._finish

    async def finish(*args: Any, **kwargs: Any) -> Any:
        writes.append(kwargs["status"])
        if len(writes) <= failed_writes:
            raise ConnectionResetError("the database connection was lost")
        return await real_finish(*args, **kwargs)

    async def check(_record: Any, _request: Any, row: AriesPresentation) -> tuple[str, dict[str, Any], None]:
        return ISSUER, {"nif": "12345678Z"}, None

    monkeypatch.setattr(aries_channel, "_finish", finish)
    rec = Receiver()
    with serve(rec.app()) as base:
        created = new_request(http, verifier, webhook_url=f"{base}/hooks/vp", response_mode="direct_post")
        pres_ex_id = _aries_request(verifier, created["id"])
        body = json.dumps({"pres_ex_id": pres_ex_id, "thread_id": f"thread-{created['id'][:16]}",
                           "state": "done"}).encode()

        async def deliver_twice() -> list[str]:
            db = Database(verifier.settings.database_url)
            channel = VerifierAriesChannel(verifier.settings, db, SecretBox(load_master_key(verifier.settings)))
            channel.agent_client = _Agent  # type: ignore[assignment,method-assign]
            channel._check = check  # type: ignore[assignment,method-assign]
            try:
                headers = {"x-api-key": WEBHOOK_KEY}
                return [await channel.receive(headers, "present_proof_v2_0", body) for _ in range(2)]
            finally:
                await db.dispose()

        outcomes = asyncio.run(deliver_twice())
        assert outcomes == ["processed", "duplicate"]
        if failed_writes == 1:
            # The outcome could not be written: the fallback, an internal error, was.
            assert writes == ["verified", "rejected"]
            assert _until(lambda: len(rec.accepted) >= 1, timeout=5)
        else:
            assert writes == ["verified", "rejected"]
            assert _row(verifier, created["id"]).status == "processing"
            time.sleep(0.6)  # sweeps: not due yet, nothing reported
            assert rec.accepted == []
            _set(verifier, created["id"], expires_at=_past())
            assert _until(lambda: len(rec.accepted) >= 1, timeout=5)
        time.sleep(1.0)  # several worker ticks: nothing else is reported
    events = _events(rec)
    assert len(events) == 1, [e["event"] for e in events]
    if failed_writes == 1:
        assert _Agent.removed[-1:] == [pres_ex_id]  # judged: the agent's copy of the presentation goes
        assert events[0]["event"] == "presentation.rejected"
        assert [e["code"] for e in events[0]["result"]["errors"]] == ["verifier.internal_error"]
        assert events[0]["result"]["claims"] == {}
        assert _row(verifier, created["id"]).status == "rejected"
    else:
        _assert_expired_once(verifier, created["id"], events[0])
