"""Managing the wallet end to end: the PIN, the alert stream, history search and export, expiry alerts,
and deletion reported to the issuer (real issuer, verifier and sandbox over HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from typing import Any

import httpx

from sandbox.population import DEMO_EVERYTHING
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, agency_request, execute_sql, fresh_citizens, open_presentation
from tests.wallet_api.test_e2e import make_offer, receive
from tests.wallet_api.test_flows import wait_for

PIN_CITIZEN, HISTORY_CITIZEN, EXPIRY_CITIZEN, DELETE_CITIZEN, WEBHOOK_CITIZEN = fresh_citizens(5)


def _preview(system: System, tokens: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
    return open_presentation(system, tokens, request, language="en")


def _result(system: System, request: dict[str, Any], agency: str = "ajuntament-barcelona") -> dict[str, Any]:
    return httpx.get(request["status_url"], headers=system.verifier_headers(agency)).json()


def _wallet_row(system: System, wallet_id: str) -> tuple[Any, ...]:
    with contextlib.closing(sqlite3.connect(system.wallet_db)) as db:
        return db.execute("SELECT pin_hash, pin_failures, pin_locked_until FROM wallets WHERE id = ?",
                          (wallet_id,)).fetchone()


def test_pin_guards_presenting_with_limited_attempts_kept_in_the_database(system: System) -> None:
    tokens = login(system.wallet, PIN_CITIZEN)
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", PIN_CITIZEN))
    me = httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens)).json()
    assert me["pin_set"] is False
    assert httpx.put(f"{system.wallet}/v1/pin", json={"pin": "12a4"}, headers=bearer(tokens)).status_code == 400
    assert httpx.put(f"{system.wallet}/v1/pin", json={"pin": "2468"}, headers=bearer(tokens)).status_code == 204
    assert httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens)).json()["pin_set"] is True
    pin_hash, failures, locked = _wallet_row(system, me["wallet_id"])
    # sealed under the wallet's data key: nothing to test PINs against without the master key
    assert pin_hash.startswith("sealed$") and "scrypt" not in pin_hash and failures == 0 and locked is None
    # changing the PIN needs the current one: without it, asked for (no attempt counted); a wrong one counts
    unasked = httpx.put(f"{system.wallet}/v1/pin", json={"pin": "1357"}, headers=bearer(tokens))
    assert unasked.status_code == 403 and unasked.json()["error"] == "pin_required"
    assert _wallet_row(system, me["wallet_id"])[1] == 0
    wrong_change = httpx.put(f"{system.wallet}/v1/pin", json={"pin": "1357", "current_pin": "9999"},
                             headers=bearer(tokens))
    assert wrong_change.status_code == 403 and wrong_change.json()["error"] == "invalid_pin"

    request = agency_request(system)
    preview = _preview(system, tokens, request)
    approve = f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve"
    # Approving without the PIN (an app that did not know one was set, as often as it likes) costs nothing.
    for body in ({}, {"pin": None}, {"pin": ""}, {}, {}, {}, {}):
        missing = httpx.post(approve, json=body, headers=bearer(tokens), timeout=30)
        assert missing.status_code == 403 and missing.json()["error"] == "pin_required", missing.text
    assert _wallet_row(system, me["wallet_id"])[1] == 1
    first_wrong = httpx.post(approve, json={"pin": "0000"}, headers=bearer(tokens), timeout=30)
    assert first_wrong.status_code == 403 and first_wrong.json()["error"] == "invalid_pin"
    left = first_wrong.json()["attempts_left"]
    # (the wrong change attempt above counted too: attempts are per wallet, not per request)
    assert left == system.wallet_app.state.wallet.settings.pin_max_attempts - 2
    assert _wallet_row(system, me["wallet_id"])[1] == 2
    for _ in range(left - 1):
        r = httpx.post(approve, json={"pin": "0000"}, headers=bearer(tokens), timeout=30)
        assert r.status_code == 403
    locked = httpx.post(approve, json={"pin": "0000"}, headers=bearer(tokens), timeout=30)
    assert locked.status_code == 423 and locked.json()["error"] == "pin_locked"
    # locked: even the right PIN is refused for now, and the lock is in the database (any worker sees it)
    assert httpx.post(approve, json={"pin": "2468"}, headers=bearer(tokens), timeout=30).status_code == 423
    assert _wallet_row(system, me["wallet_id"])[2] is not None
    assert _result(system, request)["status"] == "pending"  # nothing reached the verifier
    assert httpx.get(f"{system.wallet}/v1/presentations/{preview['presentation_id']}",
                     headers=bearer(tokens)).json()["state"] == "pending"
    # the lock ends (made to pass here); the right PIN sends and clears the counter
    execute_sql(system, "UPDATE wallets SET pin_locked_until = '2000-01-01 00:00:00.000000' WHERE id = ?",
                me["wallet_id"])
    sent = httpx.post(approve, json={"pin": "2468"}, headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    assert _wallet_row(system, me["wallet_id"])[1] == 0
    assert wait_for(lambda: _result(system, request)["status"] != "pending")
    assert _result(system, request)["status"] == "verified"
    # removing the PIN needs it too
    assert httpx.put(f"{system.wallet}/v1/pin", json={"pin": None, "current_pin": "2468"},
                     headers=bearer(tokens)).status_code == 204
    # A removal stores a sealed "no PIN", never NULL (NULL on a wallet that had a PIN is tampering).
    assert _wallet_row(system, me["wallet_id"])[0].startswith("sealed$")
    assert httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens)).json()["pin_set"] is False


def test_alert_appears_on_the_sse_stream_and_resumes_after_last_event_id(system: System) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    offer = make_offer(system, "ajuntament-girona", "padro", DEMO_EVERYTHING)
    events: list[dict[str, Any]] = []
    with httpx.Client(timeout=httpx.Timeout(10.0)) as client, \
            client.stream("GET", f"{system.wallet}/v1/alerts/stream", headers=bearer(tokens)) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        scanned = httpx.post(f"{system.wallet}/v1/offers", json={"offer_uri": offer["offer_uri"]},
                             headers=bearer(tokens), timeout=30)
        assert scanned.status_code == 201
        event: dict[str, str] = {}
        deadline = time.monotonic() + 10
        for line in lines:
            if line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                event[name] = value.strip()
            elif line == "" and event:
                events.append({"id": int(event["id"]), "event": event["event"], **json.loads(event["data"])})
                event = {}
                if events[-1]["kind"] == "offer_received":
                    break
            assert time.monotonic() < deadline, "no alert on the stream"
    alert = events[-1]
    assert alert["event"] == "alert" and alert["kind"] == "offer_received" and alert["read"] is False
    assert alert["message"].startswith("New credential offer from")
    # resuming after the previous id replays it
    with httpx.Client(timeout=httpx.Timeout(10.0)) as client, \
            client.stream("GET", f"{system.wallet}/v1/alerts/stream",
                          headers={**bearer(tokens), "Last-Event-ID": str(alert["id"] - 1)}) as stream:
        lines = (line for line in stream.iter_lines() if line)
        assert next(lines) == ": connected"
        assert next(lines) == f"id: {alert['id']}"
    # another citizen's stream never carries it; a bad Last-Event-ID is a 400, not a 500
    other = login(system.wallet, "Y1234567X")
    with httpx.Client(timeout=httpx.Timeout(1.5)) as client, \
            client.stream("GET", f"{system.wallet}/v1/alerts/stream",
                          headers={**bearer(other), "Last-Event-ID": "0"}) as stream:
        seen = []
        with contextlib.suppress(httpx.ReadTimeout):
            for line in stream.iter_lines():
                seen.append(line)
                if len(seen) > 50:
                    break
    assert not any(line == f"id: {alert['id']}" for line in seen)
    bad = httpx.get(f"{system.wallet}/v1/alerts/stream", headers={**bearer(tokens), "Last-Event-ID": "abc"})
    assert bad.status_code == 400


def test_history_search_filters_and_export_holds_exactly_what_was_disclosed(system: System) -> None:
    tokens = login(system.wallet, HISTORY_CITIZEN)
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", HISTORY_CITIZEN))
    request = agency_request(system)
    preview = _preview(system, tokens, request)
    sent = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                      headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200, sent.text
    declined_request = agency_request(system, "residence")
    declined = _preview(system, tokens, declined_request)
    httpx.post(f"{system.wallet}/v1/presentations/{declined['presentation_id']}/decline", headers=bearer(tokens))
    assert wait_for(lambda: _result(system, request)["status"] != "pending")
    verifier_saw = _result(system, request)
    assert verifier_saw["status"] == "verified"

    history = f"{system.wallet}/v1/history"
    every = httpx.get(history, headers=bearer(tokens)).json()
    assert [h["kind"] for h in every] == ["decline", "share", "receipt"]  # newest first
    assert [h["kind"] for h in httpx.get(history, params={"kind": "share"}, headers=bearer(tokens)).json()] == ["share"]
    found = httpx.get(history, params={"q": "barcelona"}, headers=bearer(tokens)).json()  # case-insensitive
    assert {h["kind"] for h in found} == {"share", "decline"}
    assert httpx.get(history, params={"q": "no such words"}, headers=bearer(tokens)).json() == []
    assert httpx.get(history, params={"since": "2999-01-01T00:00:00Z"}, headers=bearer(tokens)).json() == []
    assert len(httpx.get(history, params={"limit": 1}, headers=bearer(tokens)).json()) == 1
    assert httpx.get(history, params={"since": "yesterday"}, headers=bearer(tokens)).status_code == 400

    exported = httpx.get(f"{history}/export", headers=bearer(tokens))
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    doc = exported.json()
    assert doc["format"] == "cartera-wallet-history" and len(doc["entries"]) == 3
    share = next(e for e in doc["entries"] if e["kind"] == "share")["details"]
    assert share["outcome"] == "sent" and share["verifier"]["name"] == "Ajuntament de Barcelona"
    assert share["purpose"].startswith("Grant application")
    disclosed = {c["path"][0]: c["value"] for item in share["disclosed"] for c in item["claims"]}
    asked = {c["path"][0]: c["value"] for item in share["disclosed"] for c in item["claims"] if c["requested"]}
    received = verifier_saw["claims"]["tax"]
    received = received[0] if isinstance(received, list) else received
    # the verifier reports the claims it asked for: exactly those the history says were asked, same values
    assert {k: received[k] for k in asked} == asked
    assert set(asked) == {"nif", "name", "complianceStatus"}
    # and the type's plain claims, which leave in every presentation, are in the history too
    assert set(disclosed) - set(asked) == {"purpose", "issuedAt", "validUntil"}
    tax_claims = httpx.get(f"{system.wallet}/v1/credentials/{share['disclosed'][0]['credential_id']}",
                           headers=bearer(tokens)).json()["claims"]
    undisclosed = [str(v) for k, v in tax_claims.items() if k not in disclosed and isinstance(v, str) and len(v) > 3]
    assert undisclosed and not any(value in json.dumps(share) for value in undisclosed)
    decline = next(e for e in doc["entries"] if e["kind"] == "decline")["details"]
    assert decline["disclosed"] == [] and decline["outcome"] == "declined"


def test_expiring_soon_alert_is_raised_once(system: System) -> None:
    tokens = login(system.wallet, EXPIRY_CITIZEN)
    soon = receive(system, tokens, make_offer(system, "aoc-tax", "working-life", EXPIRY_CITIZEN))["credential_ids"][0]
    later = receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", EXPIRY_CITIZEN))["credential_ids"][0]
    days = system.wallet_app.state.wallet.settings.expiry_alert_days
    in_window = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(time.time() + (days - 2) * 86400))
    beyond = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(time.time() + (days + 30) * 86400))
    execute_sql(system, "UPDATE credentials SET expires_at = ? WHERE id = ?", in_window, soon)
    execute_sql(system, "UPDATE credentials SET expires_at = ? WHERE id = ?", beyond, later)

    def expiring() -> list[dict[str, Any]]:
        alerts = httpx.get(f"{system.wallet}/v1/alerts", headers=bearer(tokens)).json()
        return [a for a in alerts if a["kind"] == "expiring"]

    alerts = wait_for(expiring)
    assert [a["credential_id"] for a in alerts] == [soon]
    assert in_window[:10] in alerts[0]["message"]
    # More rounds of the expiry job, run here (each one done when it returns): still one alert.
    for _ in range(2):
        _expiry_round(system)
    assert len(expiring()) == 1


def _expiry_round(system: System) -> int:
    """One round of the wallet's expiry-alert job on the system wallet's database, run by a second
    instance of the wallet without background loops (as another worker would): done when it returns."""
    from wallet_api.app import create_app
    from wallet_api.background import expiry_alerts

    app = create_app(system.wallet_app.state.wallet.settings, run_background=False)

    async def run() -> int:
        async with app.router.lifespan_context(app):
            return await expiry_alerts(app.state.wallet)

    return asyncio.run(run())


def _issuer_record(system: System, slug: str, issuer_id: str) -> dict[str, Any]:
    return httpx.get(f"{system.issuer}/v1/credentials/{issuer_id}", headers=system.issuer_headers(slug)).json()


def test_delete_notifies_the_issuer(system: System) -> None:
    tokens = login(system.wallet, DELETE_CITIZEN)
    offer = make_offer(system, "aoc-tax", "working-life", DELETE_CITIZEN)
    cid = receive(system, tokens, offer)["credential_ids"][0]
    issuer_id = offer["credential_ids"]["working-life"]
    assert [n["event"] for n in _issuer_record(system, "aoc-tax", issuer_id)["notifications"]] == ["credential_accepted"]
    assert httpx.delete(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).status_code == 204
    events = [n["event"] for n in _issuer_record(system, "aoc-tax", issuer_id)["notifications"]]
    assert events == ["credential_accepted", "credential_deleted"]
    deletions = httpx.get(f"{system.wallet}/v1/history", params={"kind": "deletion"}, headers=bearer(tokens)).json()
    assert deletions[0]["details"]["credential_id"] == cid and deletions[0]["details"]["issuer_notified"] is True


def test_alerts_are_pushed_signed_and_retried_to_the_webhook(system: System) -> None:
    tokens = login(system.wallet, WEBHOOK_CITIZEN)
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens)).json()["wallet_id"]
    cid = receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", WEBHOOK_CITIZEN)
                  )["credential_ids"][0]

    def pushed() -> list[dict[str, Any]]:
        mine = [e for e in system.webhook.accepted if e["data"]["wallet_id"] == wallet_id]
        return mine if len(mine) >= 2 else []

    events = wait_for(pushed)
    assert [e["data"]["kind"] for e in events] == ["offer_received", "credential_received"]
    alerts = {a["id"]: a for a in httpx.get(f"{system.wallet}/v1/alerts", headers=bearer(tokens)).json()}
    for event in events:
        assert event["type"] == "wallet.alert" and event["id"] == event["event_id"]
        assert alerts[event["data"]["alert_id"]]["message"] == event["data"]["message"]
        assert system.webhook.attempts[event["event_id"]] == 2  # the first attempt was refused, then retried
    assert events[1]["data"]["credential_id"] == cid
    assert system.webhook.bad_signatures == 0
    assert WEBHOOK_CITIZEN not in json.dumps(events)  # no identifier, no claim value
    with contextlib.closing(sqlite3.connect(system.wallet_db)) as db:
        rows = db.execute("SELECT delivered_at, attempts, last_error FROM webhook_outbox WHERE wallet_id = ?",
                          (wallet_id,)).fetchall()
    assert len(rows) == 2 and all(r[0] is not None and r[1] == 1 and r[2] is None for r in rows)


def test_webhook_settings_are_checked(tmp_path: Any) -> None:
    import pytest
    from pydantic import ValidationError

    from wallet_api.settings import WalletSettings

    base = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", "data_dir": tmp_path, "master_key": "1" * 64}
    with pytest.raises(ValidationError, match="webhook_secret"):
        WalletSettings(**base, dev_mode=True, webhook_url="http://127.0.0.1:9/hook")
    with pytest.raises(ValidationError, match="https"):
        WalletSettings(**base, webhook_url="http://127.0.0.1:9/hook", webhook_secret="s" * 20)
    with pytest.raises(ValidationError, match="https"):
        WalletSettings(**base, dev_mode=True, webhook_url="http://push.example/hook", webhook_secret="s" * 20)
    ok = WalletSettings(**base, webhook_url="https://push.example/hook", webhook_secret="s" * 20)
    assert ok.webhook_url == "https://push.example/hook"
