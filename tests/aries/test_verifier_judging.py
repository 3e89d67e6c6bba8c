"""How the verifier's Aries channel asks and judges, with real ACA-Py agents (test_services.py's world:
the issuer and the verifier with their own agents, a third agent as the citizen's wallet).

The verifier's database is changed directly (sqlite3) only to set up what another worker or an earlier
delivery would have left: a template stored before a rule, a processed-event key.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aries.client import AdminClient
from tests.support.servers import free_port

from . import test_services as services
from .harness import Ended, wait_for
from .test_services import World, _poll

world = services.world  # the module's own world (module scope)


def _verifier_db(world: World) -> sqlite3.Connection:
    url = world.verifier_app.state.aries.settings.database_url
    return sqlite3.connect(url.split(":///", 1)[1], timeout=30)


def _verifier_agent(world: World) -> AdminClient:
    agent = world.verifier_app.state.aries.runtime.client
    return AdminClient(agent.admin_url, agent._headers["x-api-key"])


def _agent_records(world: World) -> list[dict[str, Any]]:
    async def records() -> list[dict[str, Any]]:
        async with _verifier_agent(world) as client:
            return await client.pres_records()

    return asyncio.run(records())


def test_a_template_stored_with_a_purpose_now_refused_makes_no_aries_request(world: World) -> None:
    """A template stored before purpose texts were checked (here a U+202E, which makes a consent
    screen read otherwise than what the agency stored) made no OpenID4VP request, but its text went
    to the holder's wallet over DIDComm (the presentation definition's purpose). It is refused alike:
    400 naming the template and the language, never quoting the text, and the agent is not asked."""
    url, headers = f"{world.verifier_url}/v1/templates", world.agency_headers()
    model = httpx.get(f"{url}/job-application", headers=headers).json()
    name = f"legacy-purpose-{time.time_ns()}"
    template = {key: model[key] for key in ("dcql_query", "trusted_issuers", "anchors_pem", "retention_seconds",
                                                  "response_mode")}
    created = httpx.post(url, json={**template, "name": name, "purpose": {"en": "Job application"}}, headers=headers)
    assert created.status_code == 201, created.text
    reversed_text = "Job application \u202e(no data is kept)"
    with _verifier_db(world) as db:  # as stored before the rule
        assert db.execute("UPDATE templates SET purpose = ? WHERE name = ?",
                          (json.dumps({"ca": "Sol·licitud de feina", "en": reversed_text}), name)).rowcount == 1
    before = len(_agent_records(world))

    refused = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=headers, json={"template": name})
    assert refused.status_code == 400, refused.text
    description = refused.json()["error_description"]
    assert refused.json()["error"] == "invalid_request"
    assert name in description and "the en text" in description and "control character" in description
    assert reversed_text not in refused.text
    assert len(_agent_records(world)) == before  # no request was made on the agent

    replaced = httpx.put(f"{url}/{name}", json={**template, "name": name, "purpose": {"en": "Job application"}},
                         headers=headers)
    assert replaced.status_code == 200, replaced.text
    made = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=headers, json={"template": name})
    assert made.status_code == 201, made.text
    invitation = httpx.get(made.json()["short_url"], headers={"Accept": "application/json"}).json()
    descriptor = invitation["requests~attach"][0]["data"]["json"]["request_presentations~attach"][0]["data"]["json"]
    assert descriptor["presentation_definition"]["input_descriptors"][0]["purpose"] == "Job application"


# -- judging: what an earlier delivery, another worker or another agent left ------------------------

@pytest.fixture(scope="module")
def vc_id(world: World) -> str:
    """The id of a diploma the citizen's wallet holds (issued once for the module's tests)."""
    return services._receive_diploma(world)[1]


@dataclass
class Asked:
    """A request made through the verifier's API: its transaction, invitation and agent record's thread."""

    tx_id: str
    status_url: str
    invitation: dict[str, Any]
    thread_id: str


def _ask(world: World) -> Asked:
    created = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=world.agency_headers(),
                         json={"template": "job-application"})
    assert created.status_code == 201, created.text
    body = created.json()
    invitation = httpx.get(body["short_url"], headers={"Accept": "application/json"}).json()
    return Asked(body["id"], body["status_url"], invitation, invitation["requests~attach"][0]["data"]["json"]["@id"])


def _result(world: World, asked: Asked) -> dict[str, Any]:
    return dict(httpx.get(asked.status_url, headers=world.agency_headers()).json())


def _event_key(asked: Asked, state: str) -> str:
    return f"present_proof_v2_0:{asked.thread_id}:{state}"


def _taken(world: World, asked: Asked, *states: str) -> None:
    """Insert the processed-event keys of ``states``, as another worker processing them would have."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    with _verifier_db(world) as db:
        db.executemany("INSERT INTO aries_webhook_events (key, received_at) VALUES (?, ?)",
                       [(_event_key(asked, state), now) for state in states])


def _handled(processed: Ended, asked: Asked, state: str) -> None:
    """Wait until the agent's own delivery of ``state`` was processed (here: found taken), so that
    forgetting its key next cannot race it."""
    processed.wait(lambda event: event.thread_id == asked.thread_id and event.state == state)


def _forgotten(world: World, asked: Asked, state: str) -> None:
    """Delete an event's key, as a failed processing does (so that ACA-Py's re-delivery is processed)."""
    with _verifier_db(world) as db:
        db.execute("DELETE FROM aries_webhook_events WHERE key = ?", (_event_key(asked, state),))


def _pres_ex_id(world: World, asked: Asked) -> str:
    with _verifier_db(world) as db:
        (found,) = db.execute("SELECT pres_ex_id FROM aries_presentations WHERE tx_id = ?", (asked.tx_id,)).fetchone()
    return str(found)


def _deliver(world: World, asked: Asked, state: str) -> httpx.Response:
    """The ``present_proof_v2_0`` webhook the verifier's agent posts (or re-delivers) for ``state``."""
    headers = {"x-api-key": world.verifier_app.state.aries.runtime.webhook_key}
    payload = {"pres_ex_id": _pres_ex_id(world, asked), "thread_id": asked.thread_id, "state": state}
    return httpx.post(f"{world.verifier_url}/v1/aries/webhooks/topic/present_proof_v2_0/", json=payload,
                      headers=headers)


def _agent_state(world: World, asked: Asked) -> str | None:
    async def state() -> str | None:
        async with _verifier_agent(world) as client:
            found = await client.pres_records(thread_id=asked.thread_id)
        return str(found[0]["state"]) if found else None

    return asyncio.run(state())


def _present(world: World, asked: Asked, vc_id: str) -> None:
    """The citizen's wallet answers the request with the diploma (a BBS+ derived proof)."""
    async def wallet_side() -> None:
        async with services._wallet(world) as w:
            await w.receive_invitation(asked.invitation)
            (record,) = await wait_for(lambda: w.pres_records(thread_id=asked.thread_id),
                                       lambda rs: bool(rs) and rs[0]["state"] == "request-received", timeout=30)
            matching = await w.matching_credentials(record["pres_ex_id"])
            chosen = [m["record_id"] for m in matching if m.get("id") == vc_id]
            descriptor = record["by_format"]["pres_request"]["dif"]["presentation_definition"]["input_descriptors"][0]
            await w.send_presentation(record["pres_ex_id"], {descriptor["id"]: chosen[:1]})

    asyncio.run(wallet_side())


def test_a_presentation_received_webhook_redelivered_after_the_judgement_is_acknowledged(
        world: World, vc_id: str) -> None:
    """ACA-Py re-delivers a webhook whose processing failed. A ``presentation-received`` one arriving
    after the transaction was judged made the verifier read the record the judgement had removed
    (404) or ask the agent to verify it again (400); that error escaped, and the webhook failed until
    ACA-Py gave up. It is acknowledged (200), and the judgement stands."""
    asked = _ask(world)
    _present(world, asked, vc_id)
    result = _poll(lambda: _result(world, asked), lambda r: r["status"] != "pending")
    assert result["status"] == "verified", result["errors"]
    _poll(lambda: _agent_state(world, asked), lambda state: state is None, timeout=10)  # judged: removed

    _forgotten(world, asked, "presentation-received")  # as a first processing that failed left it
    again = _deliver(world, asked, "presentation-received")
    assert again.status_code == 200, again.text
    assert _result(world, asked) == result


def test_a_presentation_the_agent_verified_on_its_own_is_not_verified_again(
        world: World, vc_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent run elsewhere with --auto-verify-presentation verifies on arrival: by the time the
    ``presentation-received`` webhook is processed its record is ``done``, and the verifier's own
    verify call answered 400, which escaped: the webhook failed, was delivered again and failed each
    time. The webhook is acknowledged without a call; the ``done`` one judges the presentation."""
    from verifier.aries_channel import VerifierAriesChannel

    processed = Ended(monkeypatch, VerifierAriesChannel, "_process")
    asked = _ask(world)
    _taken(world, asked, "presentation-received", "done")  # held while the agent verifies on its own
    _present(world, asked, vc_id)
    _handled(processed, asked, "presentation-received")

    async def verify_on_its_own() -> None:
        async with _verifier_agent(world) as client:
            await client.verify_presentation(_pres_ex_id(world, asked))

    asyncio.run(verify_on_its_own())
    _handled(processed, asked, "done")
    assert _agent_state(world, asked) == "done"
    _forgotten(world, asked, "presentation-received")
    received = _deliver(world, asked, "presentation-received")
    assert received.status_code == 200, received.text
    assert _result(world, asked)["status"] == "pending"  # the done event judges it
    _forgotten(world, asked, "done")
    done = _deliver(world, asked, "done")
    assert done.status_code == 200, done.text
    result = _poll(lambda: _result(world, asked), lambda r: r["status"] != "pending")
    assert result["status"] == "verified", result["errors"]
    assert set(result["claims"]["diploma"]) == {"title", "awardingBody"}


@contextlib.contextmanager
def _agent_unreachable(world: World) -> Iterator[None]:
    """The verifier's admin calls go to a closed port (its agent, still running, sends webhooks)."""
    runtime = world.verifier_app.state.aries.runtime
    real = runtime.client
    runtime.client = AdminClient(f"http://127.0.0.1:{free_port()}", "unreachable", timeout=5)
    try:
        yield
    finally:
        runtime.client = real


def test_an_agent_that_does_not_answer_leaves_the_presentation_to_be_judged_again(
        world: World, vc_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent not answering while a presentation is judged (connection refused, a timeout, a 5xx)
    ended the transaction ``rejected`` with ``aries.agent_unavailable``, for good, though nothing was
    wrong with the presentation. The webhook now answers 503 (ACA-Py delivers it again), the
    transaction stays pending, and once the agent answers the presentation is judged: here by the
    sweep, after ACA-Py's re-deliveries were spent."""
    from verifier import aries_channel

    processed = Ended(monkeypatch, aries_channel.VerifierAriesChannel, "_process")
    asked = _ask(world)
    _taken(world, asked, "presentation-received", "done")  # the agent's own deliveries held back
    _present(world, asked, vc_id)
    _handled(processed, asked, "presentation-received")

    # Asked to verify while the agent does not answer: 503, nothing judged.
    _forgotten(world, asked, "presentation-received")
    with _agent_unreachable(world):
        received = _deliver(world, asked, "presentation-received")
    assert received.status_code == 503, received.text
    assert received.json()["code"] == "aries.agent_unavailable"
    assert _result(world, asked)["status"] == "pending"
    assert _deliver(world, asked, "presentation-received").status_code == 200  # ACA-Py's next delivery
    _handled(processed, asked, "done")
    assert _agent_state(world, asked) == "done"

    # Judged while the agent does not answer: 503, the transaction still pending, no error recorded.
    _forgotten(world, asked, "done")
    with _agent_unreachable(world):
        done = _deliver(world, asked, "done")
        assert done.status_code == 503, done.text
        assert done.json()["code"] == "aries.agent_unavailable"
        result = _result(world, asked)
        assert (result["status"], result["errors"]) == ("pending", [])

    # ACA-Py's re-deliveries spent, the sweep judges it once the agent answers.
    for name, value in (("PENDING_CHECK_AFTER", dt.timedelta(seconds=1)), ("PENDING_CHECK_EVERY", 1.0)):
        monkeypatch.setattr(aries_channel, name, value)
    result = _poll(lambda: _result(world, asked), lambda r: r["status"] != "pending", timeout=30)
    assert result["status"] == "verified", result["errors"]
    assert set(result["claims"]["diploma"]) == {"title", "awardingBody"}


def test_a_definite_answer_of_the_agent_still_rejects(
        world: World, vc_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a definite answer ends the transaction: a received presentation whose record the agent no
    longer has (404) is ``rejected`` with ``aries.agent_request_failed``, where its webhook failed
    (the agent's error escaped) until ACA-Py gave up, and the request stayed pending until it expired."""
    from verifier.aries_channel import VerifierAriesChannel

    processed = Ended(monkeypatch, VerifierAriesChannel, "_process")
    asked = _ask(world)
    _taken(world, asked, "presentation-received")
    _present(world, asked, vc_id)
    _handled(processed, asked, "presentation-received")

    async def remove() -> None:
        async with _verifier_agent(world) as client:
            await client.delete_pres_record(_pres_ex_id(world, asked))

    asyncio.run(remove())
    _forgotten(world, asked, "presentation-received")
    received = _deliver(world, asked, "presentation-received")
    assert received.status_code == 200, received.text
    result = _result(world, asked)
    assert result["status"] == "rejected" and [e["code"] for e in result["errors"]] == ["aries.agent_request_failed"]


def test_a_problem_report_after_the_presentation_changes_nothing(
        world: World, vc_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's handler of connectionless problem reports abandons a request only while nothing
    was presented: a report arriving once the presentation is in (from the holder, or from anyone who
    saw the invitation) leaves the record as it is, and the presentation is judged."""
    from verifier.aries_channel import VerifierAriesChannel

    processed = Ended(monkeypatch, VerifierAriesChannel, "_process")
    asked = _ask(world)
    _taken(world, asked, "presentation-received")  # the presentation waits, unjudged, on the agent
    _present(world, asked, vc_id)
    _handled(processed, asked, "presentation-received")
    pres_ex_id = _pres_ex_id(world, asked)
    log = world.verifier_app.state.aries.runtime.process.config.log_file

    async def report() -> None:
        async with services._wallet(world) as w:
            (record,) = await w.pres_records(thread_id=asked.thread_id)
            await w.request("POST", f"/present-proof-2.0/records/{record['pres_ex_id']}/problem-report",
                            json={"description": "changed my mind"})

    asyncio.run(report())
    _poll(lambda: log.read_text(encoding="utf-8", errors="replace"),
          lambda text: f"problem report on request {pres_ex_id} in state presentation-received: ignored" in text)
    assert _agent_state(world, asked) == "presentation-received"
    _forgotten(world, asked, "presentation-received")
    assert _deliver(world, asked, "presentation-received").status_code == 200
    result = _poll(lambda: _result(world, asked), lambda r: r["status"] != "pending")
    assert result["status"] == "verified", result["errors"]
