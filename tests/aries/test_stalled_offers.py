"""An Aries offer interrupted half-way is finished by the issuer's sweep, and never offered twice.

Between the connection and the offer the exchange is ``offering``: the issuer queries the data source,
commits the issuance record under the credential id reserved with the claim, then sends the offer. A
worker that stops in there leaves the exchange ``offering``; after the lease the sweep of any worker
takes it over. The cases, with real ACA-Py agents (the issuer's own, and the citizen's wallet):

- stopped before recording: the takeover offers, the citizen gets exactly one credential;
- stopped after the offer went out (the exchange never marked ``offered``, or its webhooks lost): the
  takeover finds the record by its reserved id and the offer in the agent, and adopts it — no second offer;
- stopped after recording but before sending: the record is withdrawn and a fresh offer made;
- an unexpected error before anything was sent fails the exchange (``internal_error``) instead of
  stranding it.

A stopped worker is simulated in the issuer's process: its attempt hangs (it is given up at the end),
and the exchange's ``updated_at`` is aged in the database so the lease is over without waiting for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy.exc

import issuer.aries_channel as issuer_channel
from aries import channel as aries_channel
from aries.client import ED25519, AdminClient
from issuer.app import create_app as create_issuer
from issuer.settings import IssuerSettings
from sandbox.population import DEMO_EVERYTHING, DEMO_PENDING
from tests.support.servers import serve

from .harness import Ended, wait_for
from .test_deferred_and_workers import (
    PENDING_SUBJECT,
    READY_SUBJECT,
    Outside,
    _connect,
    _exchange,
    _invite,
    _issuer_settings,
    _provision,
    _take_offer,
    _wait_exchange,
    outside,  # noqa: F401 - the module's fixture: the simulated Via Oberta and the citizen's agent
)

LONG_AGO = "2000-01-01 00:00:00.000000"


@dataclass
class Issuer:
    base: str
    key: str
    settings: IssuerSettings
    app: Any

    def age(self, exchange_id: str, **columns: Any) -> None:
        """What a worker that stopped mid-offer leaves: ``offering``, last touched long ago."""
        values = {"state": "offering", "updated_at": LONG_AGO, **columns}
        db = sqlite3.connect(self.settings.data_dir / "issuer.db", timeout=30)
        try:
            with db:
                db.execute(f"UPDATE aries_exchanges SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",  # noqa: S608
                           [*values.values(), exchange_id])
        finally:
            db.close()

    def agent_states(self) -> dict[str, str]:
        """Thread id → state of each credential exchange the issuer's agent holds."""
        agent = self.app.state.aries.runtime.client

        async def states() -> dict[str, str]:
            async with AdminClient(agent.admin_url, agent._headers["x-api-key"]) as client:
                return {r["cred_ex_record"]["thread_id"]: r["cred_ex_record"]["state"]
                        for r in await client.cred_records()}

        return asyncio.run(states())

    def record(self, credential_id: str) -> httpx.Response:
        return httpx.get(f"{self.base}/v1/credentials/{credential_id}", headers={"Authorization": f"Bearer {self.key}"},
                         timeout=10)


@pytest.fixture(scope="module")
def issuer(outside: Outside) -> Iterator[Issuer]:  # noqa: F811 - the imported fixture
    settings = _issuer_settings(outside, "issuer-stalled")
    tenant = _provision(outside, settings)
    app = create_issuer(settings, configure_logs=False)
    with serve(app, port=settings.port) as base:
        yield Issuer(base, tenant["api_key"], settings, app)


class Stop:
    """Replaces an async function: its first call hangs as a stopped worker would (and fails once given
    up, as a dead worker does nothing more); later calls run the real one."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.calls = 0
        self.entered = threading.Event()
        self.given_up = threading.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            return await self.real(*args, **kwargs)
        self.entered.set()
        while not self.given_up.is_set():
            await asyncio.sleep(0.05)
        raise RuntimeError("this worker was stopped")


async def _new_records(out: Outside, before: set[str]) -> list[dict[str, Any]]:
    """The citizen agent's credential exchanges started after ``before``."""
    async with AdminClient(out.wallet.admin_url, out.wallet.admin_api_key) as w:
        return [r["cred_ex_record"] for r in await w.cred_records() if r["cred_ex_record"]["cred_ex_id"] not in before]


async def _request_offer(out: Outside, before: set[str]) -> str:
    """The citizen requests the new offer (Ed25519: its own did:key as holder), not waiting for an answer;
    returns the exchange's thread id."""
    async with AdminClient(out.wallet.admin_url, out.wallet.admin_api_key) as w:
        offered = await wait_for(w.cred_records, lambda rs: any(
            r["cred_ex_record"]["state"] == "offer-received" and r["cred_ex_record"]["cred_ex_id"] not in before
            for r in rs))
        record = next(r["cred_ex_record"] for r in offered if r["cred_ex_record"]["cred_ex_id"] not in before)
        await w.send_cred_request(record["cred_ex_id"], await w.create_did_key(ED25519))
        return str(record["thread_id"])


def _offered(out: Outside, before: set[str]) -> list[dict[str, Any]]:
    return asyncio.run(wait_for(lambda: _new_records(out, before), bool))


def test_an_exchange_stopped_before_its_record_is_offered_once_by_the_sweep(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    stop = Stop(issuer_channel.fetch_record)
    monkeypatch.setattr(issuer_channel, "fetch_record", stop)
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    assert stop.entered.wait(30), "the connection webhook never reached the source query"
    assert _exchange(issuer.base, issuer.key, body["exchange_id"])["state"] == "offering"
    issuer.age(body["exchange_id"])
    try:
        vc = asyncio.run(_take_offer(outside.wallet, before, timeout=30))
        assert vc["credentialSubject"]["personalIdentifier"] == DEMO_EVERYTHING
        issued = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"issued", "failed"})
        assert issued["state"] == "issued", issued
        assert issuer.record(issued["credential_id"]).json()["status"] == "valid"
    finally:
        stop.given_up.set()
    # The stopped attempt, given up, changes nothing; exactly one exchange reached the citizen.
    assert len(asyncio.run(_new_records(outside, before))) == 1
    assert _exchange(issuer.base, issuer.key, body["exchange_id"])["state"] == "issued"


@pytest.mark.parametrize("when", ["offered", "issued"])
def test_an_exchange_stopped_after_its_offer_went_out_adopts_that_offer(
        outside: Outside, issuer: Issuer, when: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The normal flow, then the exchange set back to ``offering`` as if the worker had stopped before
    storing the offer's ids (``offered``: the citizen has not answered yet; ``issued``: it has, and the
    request webhook found no exchange with the offer's ids: the request waits, unanswered, until the
    sweep adopts the offer and issues on it)."""
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    first = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"offered", "failed"})
    assert first["state"] == "offered", first
    if when == "issued":
        # Still within its lease, so the sweep waits: the citizen answers, and the request's webhook
        # finds no exchange with the offer's ids: nothing is issued yet.
        issuer.age(body["exchange_id"], cred_ex_id=None, thread_id=None,
                   updated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
        handled = Ended(monkeypatch, issuer_channel.IssuerAriesChannel, "_on_credential")
        thread = asyncio.run(_request_offer(outside, before))
        # The request's webhook has looked for its exchange (REQUEST_MATCH_WAIT) and given up.
        handled.wait(lambda event: event.state == "request-received" and event.thread_id == thread)
        assert issuer.agent_states()[thread] == "request-received"  # not answered by the issuer
        assert [r["state"] for r in asyncio.run(_new_records(outside, before))] == ["request-sent"]
    issuer.age(body["exchange_id"], cred_ex_id=None, thread_id=None)

    adopted = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {when, "failed"})
    assert adopted["state"] == when and adopted["credential_id"] == first["credential_id"], adopted
    if when == "issued":
        asyncio.run(wait_for(lambda: _new_records(outside, before), lambda rs: rs[0]["state"] == "done"))
    if when == "offered":
        vc = asyncio.run(_take_offer(outside.wallet, before))
        assert vc["credentialSubject"]["personalIdentifier"] == DEMO_EVERYTHING
        issued = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"issued", "failed"})
        assert issued["state"] == "issued" and issued["credential_id"] == first["credential_id"], issued
    records = asyncio.run(_new_records(outside, before))
    assert len(records) == 1 and records[0]["state"] == "done", records
    assert issuer.record(first["credential_id"]).json()["status"] == "valid"


def test_an_exchange_stopped_between_its_record_and_its_offer_is_offered_afresh(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    stop = Stop(aries_channel.offer)
    monkeypatch.setattr(aries_channel, "offer", stop)
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    assert stop.entered.wait(30), "the connection webhook never reached the offer"
    stopped = _exchange(issuer.base, issuer.key, body["exchange_id"])
    assert stopped["state"] == "offering"
    # Recorded under the reserved id, never sent.
    assert issuer.record(stopped["credential_id"]).status_code == 200
    issuer.age(body["exchange_id"])
    try:
        vc = asyncio.run(_take_offer(outside.wallet, before, timeout=30))
        assert vc["credentialSubject"]["personalIdentifier"] == DEMO_EVERYTHING
        issued = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"issued", "failed"})
        assert issued["state"] == "issued", issued
    finally:
        stop.given_up.set()
    # The undelivered record was withdrawn; the delivered one is another.
    assert issued["credential_id"] != stopped["credential_id"]
    assert issuer.record(stopped["credential_id"]).status_code == 404
    assert issuer.record(issued["credential_id"]).json()["status"] == "valid"
    assert len(asyncio.run(_new_records(outside, before))) == 1


def _offer_sent_but_first_mark_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first write of ``offered`` (after the offer went out) fails, as with the database gone."""
    real = issuer_channel.IssuerAriesChannel._mark_offered
    calls: list[str] = []

    async def refuse_once(self: Any, exchange_id: str, *args: Any) -> bool:
        calls.append(exchange_id)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE aries_exchanges", {}, Exception("injected: database gone"))
        return bool(await real(self, exchange_id, *args))

    monkeypatch.setattr(issuer_channel.IssuerAriesChannel, "_mark_offered", refuse_once)


def _adopted_and_issued(out: Outside, issuer: Issuer, exchange_id: str, before: set[str], stuck: dict[str, Any],
                        offer: dict[str, Any]) -> None:
    """Once its lease is over the exchange adopts the offer that went out (same credential id), the
    citizen takes it, it is issued; the citizen's agent saw that one offer and no other."""
    adopted = _wait_exchange(issuer.base, issuer.key, exchange_id, {"offered", "failed"})
    assert adopted["state"] == "offered" and adopted["credential_id"] == stuck["credential_id"], adopted
    asyncio.run(_take_offer(out.wallet, before))
    issued = _wait_exchange(issuer.base, issuer.key, exchange_id, {"issued", "failed"})
    assert issued["state"] == "issued" and issued["credential_id"] == stuck["credential_id"], issued
    records = asyncio.run(_new_records(out, before))
    assert [r["cred_ex_id"] for r in records] == [offer["cred_ex_id"]]


def test_an_offer_sent_but_not_marked_offered_is_adopted_not_sent_again(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _offer_sent_but_first_mark_fails(monkeypatch)
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    (offer,) = _offered(outside, before)
    # Neither failed nor given back: the offer is out.
    stuck = _exchange(issuer.base, issuer.key, body["exchange_id"])
    assert stuck["state"] == "offering" and stuck["error"] is None, stuck
    issuer.age(body["exchange_id"])
    _adopted_and_issued(outside, issuer, body["exchange_id"], before, stuck, offer)


def test_an_offer_whose_answer_was_lost_is_adopted_not_withdrawn(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The agent sends the offer but its answer to the issuer is lost (a read timeout). Taken as "not
    sent", the record was withdrawn and the exchange failed while the offer was out: the citizen could
    accept it, the agent issue on its own, and the credential live with no record, its status index free
    for another's. Now the exchange waits for the sweep, which finds the offer and adopts it."""
    real_request = httpx.AsyncClient.request
    lost: list[str] = []

    async def answer_lost(self: httpx.AsyncClient, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        response = await real_request(self, method, url, *args, **kwargs)
        if "/issue-credential-2.0/send-offer" in str(url) and not lost:
            lost.append(str(url))
            raise httpx.ReadTimeout("injected: the agent's answer was lost")
        return response

    monkeypatch.setattr(httpx.AsyncClient, "request", answer_lost)
    attempts = Ended(monkeypatch, issuer_channel.IssuerAriesChannel, "_attempt")
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    (offer,) = _offered(outside, before)  # it did go out
    # The attempt whose answer was lost has ended: its outcome (failed, or left to the sweep) is written.
    attempts.wait(lambda exchange_id, *_: exchange_id == body["exchange_id"])
    stuck = _exchange(issuer.base, issuer.key, body["exchange_id"])
    assert lost and stuck["state"] == "offering" and stuck["error"] is None, stuck
    assert issuer.record(stuck["credential_id"]).json()["status"] == "valid"  # not withdrawn
    issuer.age(body["exchange_id"])
    _adopted_and_issued(outside, issuer, body["exchange_id"], before, stuck, offer)


def test_a_deferred_offer_sent_but_not_marked_offered_is_adopted_by_the_next_poll(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The same on the deferred path: the poll that got the data sent the offer and stopped; the next
    poll finds the record under the deferral's credential id and the offer in the agent."""
    _offer_sent_but_first_mark_fails(monkeypatch)
    body = _invite(issuer.base, issuer.key, PENDING_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    (offer,) = _offered(outside, before)
    stuck = _exchange(issuer.base, issuer.key, body["exchange_id"])
    assert stuck["state"] == "pending" and stuck["error"] is None, stuck
    issuer.age(body["exchange_id"], state="pending", expires_at=LONG_AGO)  # the poll's lease is over
    adopted = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"offered", "failed"})
    assert adopted["state"] == "offered", adopted
    vc = asyncio.run(_take_offer(outside.wallet, before))
    assert vc["credentialSubject"]["personalIdentifier"] == DEMO_PENDING
    issued = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"issued", "failed"})
    assert issued["state"] == "issued" and issuer.record(issued["credential_id"]).json()["status"] == "valid"
    records = asyncio.run(_new_records(outside, before))
    assert [r["cred_ex_id"] for r in records] == [offer["cred_ex_id"]]


def test_an_unexpected_error_before_the_offer_fails_the_exchange(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("a bug in the source adapter")

    monkeypatch.setattr(issuer_channel, "fetch_record", broken)
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    failed = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"failed", "offered"}, timeout=30)
    assert failed["state"] == "failed" and failed["error"] == "internal_error", failed
    assert failed["credential_id"] is None
    assert not asyncio.run(_new_records(outside, before))


def test_an_offer_left_unanswered_is_withdrawn_after_its_deadline(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """An offer the holder never answers kept the exchange ``offered`` for ever: the agent's record with
    every offered claim, the issuance record valid with its status index, and a check of the agent
    every two minutes. Past ``aries_offer_ttl`` (here: offered long ago), a late request is left
    unanswered, and the sweep withdraws the offer: the holder's agent is told (its record abandoned),
    the issuer's agent record and the issuance record are removed, the exchange ends ``abandoned``."""
    handled = Ended(monkeypatch, issuer_channel.IssuerAriesChannel, "_on_credential")
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    (offer,) = _offered(outside, before)
    offered = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"offered", "failed"})
    assert offered["state"] == "offered" and issuer.record(offered["credential_id"]).json()["status"] == "valid"
    # Offered long ago, checked just now (the sweep leaves it for two minutes): the holder answers late.
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    issuer.age(body["exchange_id"], state="offered", expires_at=LONG_AGO, updated_at=now)
    thread_id = asyncio.run(_request_offer(outside, before))
    handled.wait(lambda event: event.state == "request-received" and event.thread_id == thread_id)
    assert issuer.agent_states()[thread_id] == "request-received"  # not issued
    assert _exchange(issuer.base, issuer.key, body["exchange_id"])["state"] == "offered"

    issuer.age(body["exchange_id"], state="offered", expires_at=LONG_AGO)  # the sweep's turn
    withdrawn = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"abandoned", "issued", "failed"},
                               timeout=30)
    assert withdrawn["state"] == "abandoned", withdrawn
    assert issuer.record(offered["credential_id"]).status_code == 404
    assert thread_id not in issuer.agent_states()
    holder = asyncio.run(wait_for(lambda: _new_records(outside, before),
                                  lambda rs: rs[0]["state"] == "abandoned", timeout=20))
    assert [r["cred_ex_id"] for r in holder] == [offer["cred_ex_id"]]
    assert not any(r.get("cred_issue") for r in holder)  # nothing was issued


def test_a_request_after_the_deadline_is_not_issued_by_the_sweep_in_its_grace(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The sweep waits ``2 x aries_admin_timeout`` past the deadline before withdrawing (a request the
    webhook answered just in time may still be being issued). A request that came after the deadline,
    which its webhook leaves unanswered, was issued by a sweep visiting in that grace: it is not."""
    handled = Ended(monkeypatch, issuer_channel.IssuerAriesChannel, "_on_credential")
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    _offered(outside, before)
    offered = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"offered", "failed"})
    assert offered["state"] == "offered", offered
    # Past the deadline by 5 s, well inside the grace (2 x 15 s), checked just now.
    now = dt.datetime.now(dt.UTC)
    went_out = (now - dt.timedelta(seconds=issuer.settings.aries_offer_ttl + 5)).strftime("%Y-%m-%d %H:%M:%S.%f")
    issuer.age(body["exchange_id"], state="offered", expires_at=went_out,
               updated_at=now.strftime("%Y-%m-%d %H:%M:%S.%f"))
    thread_id = asyncio.run(_request_offer(outside, before))
    handled.wait(lambda event: event.state == "request-received" and event.thread_id == thread_id)
    assert issuer.agent_states()[thread_id] == "request-received"  # the webhook left it unanswered

    issuer.age(body["exchange_id"], state="offered", expires_at=went_out)  # the sweep's turn
    assert _swept(issuer, body["exchange_id"])
    time.sleep(2)  # an issue the sweep asked for would be done by now
    assert issuer.agent_states()[thread_id] == "request-received"
    assert _exchange(issuer.base, issuer.key, body["exchange_id"])["state"] == "offered"


def _swept(issuer: Issuer, exchange_id: str, timeout: float = 40) -> bool:
    """Whether the sweep claimed the exchange (its ``updated_at`` moved off :data:`LONG_AGO`) in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = sqlite3.connect(issuer.settings.data_dir / "issuer.db", timeout=30)
        try:
            (touched,) = db.execute("SELECT updated_at FROM aries_exchanges WHERE id = ?", [exchange_id]).fetchone()
        finally:
            db.close()
        if not str(touched).startswith("2000-"):
            return True
        time.sleep(0.2)
    return False
