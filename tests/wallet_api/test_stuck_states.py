"""No presentation or offer is left half-way (``sending``, ``accepting``) by an error.

- Approving: an error before the answer leaves the wallet gives the request back to the citizen
  (``pending``: choose again or decline) and records no share; an unexpected error once the answer may
  have reached the verifier records the share as ``failed`` with outcome ``unknown`` and never resends it.
- Accepting an offer, or completing an issuance of the authorization code flow: an unexpected error
  records the offer as ``failed`` (``server_error``) so the app can tell the citizen to start again.
- The callback is claimed by a conditional update: a reloaded callback racing the first one cannot
  change the first one's outcome (on PostgreSQL; SQLite serialises the two anyway).
- A worker that stops for good mid-exchange (a crash, a restart, the database gone at its last write)
  leaves nothing half-way either: once past the exchange's expiry the background sweep records the
  share it was sending (outcome ``unknown``), the decline (outcome ``unknown``), or fails the offer;
  should the worker come back after all, its late outcome does not record the share twice.

Real issuer, verifier and wallet over HTTP; the failures are injected into the wallet (same process).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy.exc

from sandbox.population import DEMO_EVERYTHING
from ssi.errors import SSIError
from ssi.sd_jwt import SDJWT
from tests.support.postgres import PostgresCluster
from tests.wallet_api.conftest import APP_REDIRECT, bearer, login
from tests.wallet_api.system import System, execute_sql, fresh_citizens, running_pg_system
from tests.wallet_api.test_e2e import make_offer, receive
from tests.wallet_api.test_flows import wait_for
from wallet_api import receiving
from wallet_api.context import WalletContext

# Others' tests take the first fresh citizens; these wallets are used by this module only, and their
# tax records are positive (the verifier's request asks for a positive certificate).
DELETED_CITIZEN, BROKEN_CITIZEN, UNKNOWN_CITIZEN, ACCEPT_CITIZEN = fresh_citizens(16)[12:16]


def _ask(system: System, tokens: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A verifier's request for the tax certificate, and the wallet's consent preview of it."""
    request = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers("ajuntament-barcelona"),
                         json={"template": "grant-application"})
    assert request.status_code in (200, 201), request.text
    preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request.json()["uri"]},
                         headers=bearer(tokens), timeout=30)
    assert preview.status_code == 201, preview.text
    assert preview.json()["satisfiable"]
    return request.json(), preview.json()


def _asked_with_a_certificate(system: System, citizen: str) -> tuple[dict[str, Any], str, dict[str, Any], str]:
    """``citizen`` logged in, holding a tax certificate, and asked for it by a verifier:
    (tokens, credential id, the verifier's request, the wallet's presentation id)."""
    tokens = login(system.wallet, citizen)
    cid = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", citizen))["credential_ids"][0]
    request, preview = _ask(system, tokens)
    return tokens, cid, request, preview["presentation_id"]


def _verifier_status(system: System, request: dict[str, Any]) -> str:
    return httpx.get(request["status_url"], headers=system.verifier_headers("ajuntament-barcelona")).json()["status"]


def _answered(system: System, request: dict[str, Any]) -> str:
    """The verifier's status once it is no longer ``pending`` (or ``pending`` after the wait)."""
    return wait_for(lambda: (s := _verifier_status(system, request)) != "pending" and s, timeout=10) or "pending"


def _presentation(system: System, tokens: dict[str, Any], presentation_id: str) -> dict[str, Any]:
    r = httpx.get(f"{system.wallet}/v1/presentations/{presentation_id}", headers=bearer(tokens))
    assert r.status_code == 200, r.text
    return r.json()


def _shares(system: System, tokens: dict[str, Any]) -> list[dict[str, Any]]:
    return httpx.get(f"{system.wallet}/v1/history", params={"kind": "share"}, headers=bearer(tokens)).json()


def _approve(system: System, tokens: dict[str, Any], presentation_id: str, credential_id: str) -> httpx.Response:
    return httpx.post(f"{system.wallet}/v1/presentations/{presentation_id}/approve",
                      json={"selection": {"tax": credential_id}}, headers=bearer(tokens), timeout=30)


def test_approving_a_credential_deleted_since_the_preview_gives_the_request_back(system: System) -> None:
    tokens, cid, request, pid = _asked_with_a_certificate(system, DELETED_CITIZEN)
    assert httpx.delete(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).status_code == 204

    refused = _approve(system, tokens, pid, cid)
    assert refused.status_code == 409, refused.text
    # Nothing left the wallet: the request is the citizen's to answer again, no share is recorded.
    assert _presentation(system, tokens, pid)["state"] == "pending"
    assert _shares(system, tokens) == []
    assert _verifier_status(system, request) == "pending"
    declined = httpx.post(f"{system.wallet}/v1/presentations/{pid}/decline", headers=bearer(tokens))
    assert declined.status_code == 200 and declined.json()["state"] == "declined", declined.text
    assert _answered(system, request) in ("declined", "rejected")


def test_a_failure_while_building_the_presentation_leaves_it_pending_to_approve_again(
        system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, cid, request, pid = _asked_with_a_certificate(system, BROKEN_CITIZEN)

    def broken(*_args: Any, **_kwargs: Any) -> str:
        raise SSIError("sd_jwt.injected", "an injected failure while presenting")

    monkeypatch.setattr(SDJWT, "present", broken)
    failed = _approve(system, tokens, pid, cid)
    assert failed.status_code == 400 and failed.json()["code"] == "sd_jwt.injected", failed.text
    assert _presentation(system, tokens, pid)["state"] == "pending"
    assert _shares(system, tokens) == []
    assert _verifier_status(system, request) == "pending"

    monkeypatch.undo()
    sent = _approve(system, tokens, pid, cid)
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    assert _answered(system, request) == "verified"
    assert [s["details"]["outcome"] for s in _shares(system, tokens)] == ["sent"]


def test_an_unexpected_error_once_the_answer_may_have_left_is_recorded_as_failed_with_unknown_outcome(
        system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, cid, request, pid = _asked_with_a_certificate(system, UNKNOWN_CITIZEN)
    real_request = WalletContext.request

    async def lost_after_sending(self: WalletContext, client: httpx.AsyncClient, method: str, url: str,
                                 **kwargs: Any) -> httpx.Response:
        response = await real_request(self, client, method, url, **kwargs)
        if method == "POST" and url.startswith(system.verifier):
            raise RuntimeError("injected: the wallet died after the verifier took the answer")
        return response

    monkeypatch.setattr(WalletContext, "request", lost_after_sending)
    failed = _approve(system, tokens, pid, cid)
    assert failed.status_code == 500, failed.text
    monkeypatch.undo()

    assert _answered(system, request) == "verified"  # it did reach the verifier...
    shown = _presentation(system, tokens, pid)
    assert shown["state"] == "failed" and shown["error"]["error"] == "delivery_unknown", shown
    shares = _shares(system, tokens)  # ...so it is in the citizen's history, with what was disclosed
    assert len(shares) == 1 and shares[0]["details"]["outcome"] == "unknown"
    assert shares[0]["details"]["disclosed"][0]["credential_id"] == cid
    assert shares[0]["details"]["disclosed"][0]["claims"]
    # and it is never sent again
    again = _approve(system, tokens, pid, cid)
    assert again.status_code == 409, again.text


def _fail_storing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wallet's database refuses to store the verified credential."""
    async def refuse(*_args: Any, **_kwargs: Any) -> str:
        raise sqlalchemy.exc.IntegrityError("INSERT INTO credentials", {}, Exception("injected constraint failure"))

    monkeypatch.setattr(receiving, "add_credential", refuse)


def _offer(system: System, tokens: dict[str, Any], offer_id: str) -> dict[str, Any]:
    r = httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(tokens))
    assert r.status_code == 200, r.text
    return r.json()


def _scan_offer(system: System, tokens: dict[str, Any], citizen: str) -> tuple[dict[str, Any], str]:
    """An issuer's offer of the tax certificate to ``citizen``, scanned by the wallet: (offer, offer id)."""
    offer = make_offer(system, "aoc-tax", "tax-compliance", citizen)
    preview = httpx.post(f"{system.wallet}/v1/offers", json={"offer_uri": offer["offer_uri"]},
                         headers=bearer(tokens), timeout=30)
    assert preview.status_code == 201, preview.text
    return offer, preview.json()["offer_id"]


def test_an_unexpected_error_while_accepting_an_offer_records_it_failed(
        system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = login(system.wallet, ACCEPT_CITIZEN)
    offer, offer_id = _scan_offer(system, tokens, ACCEPT_CITIZEN)
    _fail_storing(monkeypatch)
    accepted = httpx.post(f"{system.wallet}/v1/offers/{offer_id}/accept", json={"tx_code": offer["tx_code"]},
                          headers=bearer(tokens), timeout=60)
    assert accepted.status_code == 500, accepted.text
    monkeypatch.undo()

    shown = _offer(system, tokens, offer_id)
    assert shown["state"] == "failed", shown
    assert shown["error"]["error"] == "server_error" and shown["error"]["error_description"]
    assert ACCEPT_CITIZEN not in str(shown["error"])
    again = httpx.post(f"{system.wallet}/v1/offers/{offer_id}/accept", json={"tx_code": offer["tx_code"]},
                       headers=bearer(tokens), timeout=60)
    assert again.status_code == 409  # the pre-authorized code is spent: the citizen scans a new offer


def _browse_to_callback(system: System, tokens: dict[str, Any]) -> tuple[str, str]:
    """Start wallet-initiated issuance of a diploma; follow the browser up to (not into) the wallet's
    callback; return the offer id and the callback URL."""
    r = httpx.post(f"{system.wallet}/v1/issuance/authorize", headers=bearer(tokens), timeout=30, json={
        "credential_issuer": f"{system.issuer}/t/uni-barcelona", "credential_configuration_id": "university-diploma",
        "redirect_uri": APP_REDIRECT, "login_hint": DEMO_EVERYTHING})
    assert r.status_code == 200, r.text
    url = r.json()["authorization_url"]
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        for _ in range(8):
            response = browser.get(url)
            assert response.status_code in (302, 303), (response.status_code, response.text)
            url = response.headers["location"]
            if url.startswith(f"{system.wallet}/v1/issuance/callback"):
                return r.json()["offer_id"], url
    raise AssertionError(f"the browser never came back to the wallet: {url}")


def _complete(system: System, tokens: dict[str, Any], offer_id: str, redirect: str) -> httpx.Response:
    """What the app does with the callback's redirect: complete the issuance as the wallet's owner."""
    completion = parse_qs(urlsplit(redirect).query)["completion"][0]
    return httpx.post(f"{system.wallet}/v1/issuance/complete", headers=bearer(tokens), timeout=60,
                      json={"offer_id": offer_id, "completion": completion})


def test_an_unexpected_error_completing_an_issuance_records_the_offer_failed(
        system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    offer_id, callback = _browse_to_callback(system, tokens)
    back = httpx.get(callback, timeout=60)
    assert back.status_code == 302, back.text
    _fail_storing(monkeypatch)
    done = _complete(system, tokens, offer_id, back.headers["location"])
    assert done.status_code == 500, done.text
    monkeypatch.undo()
    shown = _offer(system, tokens, offer_id)
    assert shown["state"] == "failed", shown
    assert shown["error"]["error"] == "server_error"


# -- the reloaded callback, on PostgreSQL (where two callbacks' transactions can interleave) ----------

@pytest.fixture(scope="module")
def pg_system(postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_pg_system(postgres_cluster, tmp_path_factory.mktemp("pg-stuck")) as running:
        yield running


def _pg_execute(system: System, statement: str, *params: Any) -> list[Any]:
    """Run one statement on the wallet's PostgreSQL database on a connection of its own, from any thread
    (even the wallet's event loop thread: it runs in a thread of its own and is waited for)."""
    import asyncpg

    url = system.wallet_app.state.wallet.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    result: list[Any] = []

    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            result.extend(await connection.fetch(statement, *params))
        finally:
            await connection.close()

    thread = threading.Thread(target=lambda: asyncio.run(run()))
    thread.start()
    thread.join(timeout=30)
    return result


def test_a_reloaded_issuance_callback_cannot_overwrite_the_first_ones_outcome(
        pg_system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    system = pg_system
    tokens = login(system.wallet, DEMO_EVERYTHING)
    offer_id, callback = _browse_to_callback(system, tokens)
    before = _pg_execute(system, "SELECT state_hash, sealed FROM offers WHERE id = $1", offer_id)[0]
    first = httpx.get(callback, timeout=60)
    assert first.status_code == 302, first.text
    assert _complete(system, tokens, offer_id, first.headers["location"]).json()["state"] == "issued"
    assert _offer(system, tokens, offer_id)["state"] == "issued"
    after = _pg_execute(system, "SELECT sealed FROM offers WHERE id = $1", offer_id)[0][0]

    # The reload read the offer while it was still 'authorizing' (as the first callback had found it);
    # the first callback then finished, between the reload's read and its write.
    _pg_execute(system, "UPDATE offers SET state = 'authorizing', state_hash = $2, sealed = $3 WHERE id = $1",
                offer_id, before[0], before[1])
    real_utcnow = receiving.utcnow
    raced: list[bool] = []

    def racing_utcnow() -> Any:
        if not raced and sys._getframe(1).f_code.co_name == "finish_authorization":
            raced.append(True)
            _pg_execute(system, "UPDATE offers SET state = 'issued', state_hash = NULL, sealed = $2 WHERE id = $1",
                        offer_id, after)
        return real_utcnow()

    monkeypatch.setattr(receiving, "utcnow", racing_utcnow)
    reload = httpx.get(callback, timeout=60)
    monkeypatch.undo()
    assert raced
    assert reload.status_code == 400, (reload.status_code, reload.headers.get("location"))
    shown = _offer(system, tokens, offer_id)
    assert shown["state"] == "issued" and shown["error"] is None, shown
    assert len(shown["credential_ids"]) == 1


def test_an_unexpected_error_while_declining_still_records_the_refusal(
        system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    citizen = fresh_citizens(17)[16]
    tokens, _cid, _request, pid = _asked_with_a_certificate(system, citizen)
    real_request = WalletContext.request

    async def broken(self: WalletContext, client: httpx.AsyncClient, method: str, url: str,
                     **kwargs: Any) -> httpx.Response:
        if method == "POST" and url.startswith(system.verifier):
            raise RuntimeError("injected: a bug while telling the verifier")
        return await real_request(self, client, method, url, **kwargs)

    monkeypatch.setattr(WalletContext, "request", broken)
    declined = httpx.post(f"{system.wallet}/v1/presentations/{pid}/decline", headers=bearer(tokens), timeout=30)
    monkeypatch.undo()
    # Nothing was disclosed, so the refusal stands (unreported to the verifier) instead of "declining".
    assert declined.status_code == 200, declined.text
    assert _presentation(system, tokens, pid)["state"] == "declined"
    declines = httpx.get(f"{system.wallet}/v1/history", params={"kind": "decline"}, headers=bearer(tokens)).json()
    assert [d["details"]["outcome"] for d in declines] == ["declined_unreported"]



# -- a worker that stops for good mid-exchange ---------------------------------------------------------

SHARE_CITIZEN, DECLINE_CITIZEN, STOPPED_ACCEPT_CITIZEN = fresh_citizens(20)[17:20]
# Positive tax records too, and used by no other test of this session's system.
UNREACHED_CITIZEN, LOST_ANSWER_CITIZEN = fresh_citizens(11)[9:11]


class StoppedWorker:
    """Makes the wallet's worker stop, as if killed, right after one HTTP exchange of its answer
    (the call went out and was answered), until :meth:`resume` — which a killed worker never does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_after: Any) -> None:
        self.stopped, self.resumed = threading.Event(), threading.Event()
        real_request = WalletContext.request
        worker = self

        async def request(self: WalletContext, client: httpx.AsyncClient, method: str, url: str,
                          **kwargs: Any) -> httpx.Response:
            response = await real_request(self, client, method, url, **kwargs)
            if stop_after(method, url) and not worker.stopped.is_set():
                worker.stopped.set()
                await asyncio.to_thread(worker.resumed.wait, 60)
            return response

        monkeypatch.setattr(WalletContext, "request", request)

    def wait_stopped(self) -> None:
        assert self.stopped.wait(30), "the worker never made the call it stops after"

    def resume(self) -> None:
        self.resumed.set()


def _long_expired(system: System, table: str, row_id: str) -> None:
    """Move an exchange's expiry back past the time the sweep waits for a stopped worker (15 minutes),
    not as far as the presentation purge (a day)."""
    at = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)).strftime("%Y-%m-%d %H:%M:%S.%f")
    execute_sql(system, f"UPDATE {table} SET expires_at = ? WHERE id = ?", at, row_id)


def _stopped_then_swept(system: System, worker: StoppedWorker, call: Callable[[], httpx.Response],
                        table: str, row_id: str, view: Callable[[], dict[str, Any]], stuck: str,
                        while_stuck: Callable[[], None] = lambda: None) -> tuple[dict[str, Any], httpx.Response]:
    """Run ``call`` (the app's request) until the worker stops mid-exchange, check the row is ``stuck``
    (and ``while_stuck``), move its expiry back and wait for the sweep to end it; then let the worker
    come back. Returns the row's view once ended and the app's late answer."""
    with ThreadPoolExecutor(1) as pool:
        answering = pool.submit(call)
        try:
            worker.wait_stopped()
            assert view()["state"] == stuck
            while_stuck()
            _long_expired(system, table, row_id)
            ended = wait_for(lambda: (v := view())["state"] != stuck and v)
        finally:
            worker.resume()
        late = answering.result(timeout=60)
    assert ended, f"the sweep never ended the {table[:-1]} left {stuck}"
    return ended, late


def test_a_share_left_sending_by_a_stopped_worker_is_recorded_once_by_the_sweep(
        system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, cid, request, pid = _asked_with_a_certificate(system, SHARE_CITIZEN)
    worker = StoppedWorker(monkeypatch, lambda method, url: method == "POST" and url.startswith(system.verifier))
    def left_unrecorded() -> None:  # the claims left the wallet, the worker stopped before recording it
        assert _answered(system, request) == "verified" and _shares(system, tokens) == []

    ended, late = _stopped_then_swept(system, worker, lambda: _approve(system, tokens, pid, cid), "presentations",
                                      pid, lambda: _presentation(system, tokens, pid), "sending", left_unrecorded)
    assert ended["state"] == "failed" and ended["error"]["error"] == "delivery_unknown", ended
    shares = _shares(system, tokens)
    assert len(shares) == 1, shares  # the worker's late outcome does not record it again
    assert shares[0]["details"]["outcome"] == "unknown"
    assert [d["credential_id"] for d in shares[0]["details"]["disclosed"]] == [cid]
    assert shares[0]["details"]["disclosed"][0]["claims"]
    assert late.status_code == 200, late.text  # it did reach the verifier
    assert _presentation(system, tokens, pid)["state"] == "failed"


def test_a_decline_left_declining_by_a_stopped_worker_is_recorded_by_the_sweep(
        system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, _cid, _request, pid = _asked_with_a_certificate(system, DECLINE_CITIZEN)
    worker = StoppedWorker(monkeypatch, lambda method, url: method == "POST" and url.startswith(system.verifier))
    ended, _late = _stopped_then_swept(
        system, worker, lambda: httpx.post(f"{system.wallet}/v1/presentations/{pid}/decline", headers=bearer(tokens),
                                           timeout=60),
        "presentations", pid, lambda: _presentation(system, tokens, pid), "declining")
    assert ended["state"] == "declined", ended
    declines = httpx.get(f"{system.wallet}/v1/history", params={"kind": "decline"}, headers=bearer(tokens)).json()
    assert [(d["details"]["outcome"], d["details"]["disclosed"]) for d in declines] == [("unknown", [])]
    assert _shares(system, tokens) == []


def test_an_offer_left_accepting_by_a_stopped_worker_is_failed_by_the_sweep(
        system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = login(system.wallet, STOPPED_ACCEPT_CITIZEN)
    offer, offer_id = _scan_offer(system, tokens, STOPPED_ACCEPT_CITIZEN)
    # Stopped once the pre-authorized code is redeemed: the code is spent, no credential stored yet.
    worker = StoppedWorker(monkeypatch, lambda method, url: method == "POST" and url.endswith("/token"))
    ended, late = _stopped_then_swept(
        system, worker, lambda: httpx.post(f"{system.wallet}/v1/offers/{offer_id}/accept",
                                           json={"tx_code": offer["tx_code"]}, headers=bearer(tokens), timeout=60),
        "offers", offer_id, lambda: _offer(system, tokens, offer_id), "accepting")
    assert ended["state"] == "failed" and ended["error"]["error"] == "server_error", ended
    assert STOPPED_ACCEPT_CITIZEN not in str(ended["error"])
    # A worker that comes back after all finishes the issuance: what it received is not lost.
    assert late.status_code == 200 and late.json()["state"] == "issued", late.text
    assert _offer(system, tokens, offer_id)["state"] == "issued"


# -- the verifier's answer: never reached, or lost ----------------------------------------------------

def _verifier_post(system: System, monkeypatch: pytest.MonkeyPatch, *, lose_answer: bool) -> list[str]:
    """Make the wallet's POST of its answer to the verifier fail at the network: before it leaves (no
    connection) or after the verifier took it (the answer lost on the way back)."""
    real_send = httpx.AsyncClient.send
    failed: list[str] = []

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if request.method != "POST" or not str(request.url).startswith(system.verifier) or failed:
            return await real_send(self, request, **kwargs)
        failed.append(str(request.url))
        if not lose_answer:
            raise httpx.ConnectError("injected: the verifier is unreachable", request=request)
        response = await real_send(self, request, **kwargs)
        await response.aread()
        await response.aclose()
        raise httpx.ReadTimeout("injected: the verifier's answer was lost", request=request)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    return failed


@pytest.mark.parametrize("lose_answer", [False, True], ids=["unreachable", "answer-lost"])
def test_a_failed_delivery_is_recorded_as_failed_or_unknown_as_it_may_have_arrived(
        system: System, monkeypatch: pytest.MonkeyPatch, lose_answer: bool) -> None:
    """Unreachable, nothing left the wallet: outcome ``failed``. The answer lost after the verifier
    took it: outcome ``unknown`` — recording "failed" would tell the citizen the claims did not leave."""
    citizen = LOST_ANSWER_CITIZEN if lose_answer else UNREACHED_CITIZEN
    tokens, cid, request, pid = _asked_with_a_certificate(system, citizen)
    failed = _verifier_post(system, monkeypatch, lose_answer=lose_answer)
    answer = _approve(system, tokens, pid, cid)
    monkeypatch.undo()
    assert failed and answer.status_code == 502, answer.text
    expected = "delivery_unknown" if lose_answer else "verifier_unavailable"
    assert answer.json()["error"] == expected, answer.text
    assert _answered(system, request) == ("verified" if lose_answer else "pending")
    shown = _presentation(system, tokens, pid)
    assert shown["state"] == "failed" and shown["error"]["error"] == expected, shown
    shares = _shares(system, tokens)
    assert [(s["details"]["outcome"], s["details"]["error"]) for s in shares] == [
        ("unknown" if lose_answer else "failed", expected)]
    assert [d["credential_id"] for d in shares[0]["details"]["disclosed"]] == [cid]
    assert _approve(system, tokens, pid, cid).status_code == 409  # never sent again
