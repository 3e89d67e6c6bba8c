"""Results delivered out of band: signed webhooks with retries (to a real local receiver), the
same-device ``redirect_uri`` + ``response_code`` exchange, and issuers found through their JWT VC
Issuer Metadata (credentials without ``x5c``, status list signed with the metadata key)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import select

from service_kit.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_webhook
from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.status_list import StatusList, sign_status_list_token, status_claim
from tests.support.presenter import HeldCredential
from tests.support.servers import serve
from tests.verifier.conftest import ISSUER, new_request, read_result

OTHER = "uni-admissions"

# -- webhooks ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "url", "says"), [
    ("webhook_url", "https://169.254.169.254/latest/meta-data", "internal address"),
    ("webhook_url", "https://10.0.0.7/hook", "internal address"),
    ("webhook_url", "http://8.8.8.8/hook", ""),  # refused by the body's own validation
])
def test_a_webhook_the_verifier_may_not_reach_is_refused_at_once(http, verifier, field, url, says):
    response = http.post(f"{verifier.url}/v1/requests", json={"template": "grant-application", field: url},
                         headers=verifier.headers())
    assert response.status_code == 400 and response.json()["error"] == "invalid_request", response.text
    assert says in response.json()["error_description"]


def test_outside_development_loopback_webhooks_and_http_redirects_are_refused(tmp_path, pki):
    """Loopback is the verifier's own host (the ACA-Py admin API, the other services): only in
    dev_mode may an agency's webhook go there, and a redirect_uri be plain http."""
    from tests.support.servers import free_port
    from tests.verifier.conftest import MASTER_KEY
    from verifier.app import create_app
    from verifier.provisioning import provision_demo
    from verifier.settings import VerifierSettings

    port = free_port()
    settings = VerifierSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'v.db'}", dev_mode=False,
                                public_url="https://verifier.example", port=port, master_key=MASTER_KEY,
                                data_dir=tmp_path)
    # Outside dev_mode every demo template names its issuers.
    provisioned = asyncio.run(provision_demo(settings, ca_key=pki.rp_ca_key, ca_cert=pki.rp_ca,
                                             issuers={kind: [ISSUER] for kind in ("tax", "diploma", "padro")}))
    key = next(iter(provisioned["agencies"].values()))["api_key"]
    with serve(create_app(settings), port=port) as url, httpx.Client(timeout=10) as client:
        def create(**fields: str) -> httpx.Response:
            return client.post(f"{url}/v1/requests", json={"template": "grant-application", **fields},
                               headers={"Authorization": f"Bearer {key}"})

        for fields, says in [({"webhook_url": f"http://127.0.0.1:{port}/v1/requests"}, "must use https"),
                             ({"webhook_url": "https://127.0.0.1/hook"}, "internal address"),
                             ({"webhook_url": "https://localhost/hook"}, "internal address"),
                             ({"redirect_uri": "http://127.0.0.1:9/done"}, "must use https")]:
            response = create(**fields)
            assert response.status_code == 400, (fields, response.text)
            assert says in response.json()["error_description"], response.text
        assert create(redirect_uri="https://agency.example/done").status_code == 201



@dataclass
class Receiver:
    """An agency's webhook endpoint: answers 503 to the first ``fail_first`` deliveries, then 204."""

    fail_first: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks/vp")
        async def hook(request: Request) -> Response:
            entry = {"body": await request.body(), "signature": request.headers.get(SIGNATURE_HEADER),
                     "event_id": request.headers.get(EVENT_ID_HEADER), "at": time.monotonic()}
            with self.lock:
                self.calls.append(entry)
                if len(self.calls) <= self.fail_first:
                    return Response(status_code=503)
                self.accepted.append(entry)
            return Response(status_code=204)

        return app


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver(fail_first=1)
    with serve(rec.app()) as url:
        yield rec, f"{url}/hooks/vp"


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_webhook_is_signed_retried_after_a_failure_and_accepted_once(http, verifier, wallet, creds, receiver):
    rec, hook_url = receiver
    created = new_request(http, verifier, webhook_url=hook_url, response_mode="direct_post")
    request = wallet.fetch_request(created["uri"])
    assert wallet.post_response(request, wallet.build_vp_token(request, [creds.tax()])).status_code == 200

    _wait(lambda: len(rec.accepted) == 1)
    time.sleep(1.0)  # several worker ticks: a delivered row is never sent again
    assert len(rec.calls) == 2 and len(rec.accepted) == 1
    first, second = rec.calls
    # The retry is the same event (same id, same body), signed again.
    assert first["event_id"] == second["event_id"] and first["body"] == second["body"]
    secret = verifier.agencies["ajuntament-barcelona"]["webhook_secret"]
    for call in rec.calls:
        verify_webhook(secret, call["body"], call["signature"])
    payload = json.loads(second["body"])
    assert payload["event"] == "presentation.verified"
    assert payload["transaction_id"] == created["id"]
    assert payload["result"]["status"] == "verified"
    assert payload["result"]["claims"]["tax"]["nif"] == "12345678Z"
    # Signed with this agency's secret only: another agency's secret does not verify it.
    with pytest.raises(Exception, match="webhook"):
        verify_webhook("not-the-secret", second["body"], second["signature"])


def test_webhook_reports_rejections_and_declines(http, verifier, wallet, creds):
    rec = Receiver()
    with serve(rec.app()) as url:
        rejected = new_request(http, verifier, webhook_url=f"{url}/hooks/vp", response_mode="direct_post")
        request = wallet.fetch_request(rejected["uri"])
        expired = creds.tax(exp=int(time.time()) - 3600)
        assert wallet.post_response(request, wallet.build_vp_token(request, [expired])).status_code == 400
        declined = new_request(http, verifier, webhook_url=f"{url}/hooks/vp", response_mode="direct_post")
        request = wallet.fetch_request(declined["uri"])
        assert wallet.post_response(request, error="access_denied").status_code == 200
        _wait(lambda: len(rec.accepted) == 2)
    events = {json.loads(c["body"])["transaction_id"]: json.loads(c["body"]) for c in rec.accepted}
    assert events[rejected["id"]]["event"] == "presentation.rejected"
    assert events[rejected["id"]]["result"]["errors"]
    assert events[rejected["id"]]["result"]["claims"] == {}
    assert events[declined["id"]]["event"] == "presentation.declined"


# -- same-device redirect ------------------------------------------------------------------------

RETURN = "https://agency.example/return"


def test_same_device_response_code_is_exchanged_once_by_its_agency(http, verifier, wallet, creds):
    created = new_request(http, verifier, redirect_uri=RETURN, response_mode="direct_post")
    request = wallet.fetch_request(created["uri"])
    response = wallet.post_response(request, wallet.build_vp_token(request, [creds.tax()]))
    assert response.status_code == 200, response.text
    redirect = response.json()["redirect_uri"]
    assert redirect.startswith(RETURN + "#response_code=")
    code = urlsplit(redirect).fragment.split("=", 1)[1]
    assert len(code) >= 32

    url = f"{verifier.url}/v1/requests/{created['id']}/exchange"
    assert http.post(url, json={"response_code": "x" * 43}, headers=verifier.headers()).status_code == 400
    assert http.post(url, json={"response_code": code}).status_code == 401
    assert http.post(url, json={"response_code": code}, headers=verifier.headers(OTHER)).status_code == 404
    exchanged = http.post(url, json={"response_code": code}, headers=verifier.headers())
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["status"] == "verified"
    assert exchanged.json()["claims"]["tax"]["name"] == "Anna Puig"
    again = http.post(url, json={"response_code": code}, headers=verifier.headers())
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_no_response_code_for_a_rejected_or_declined_answer(http, verifier, wallet, creds):
    created = new_request(http, verifier, redirect_uri=RETURN, response_mode="direct_post")
    request = wallet.fetch_request(created["uri"])
    rejected = wallet.post_response(request, wallet.build_vp_token(request, [creds.tax(exp=int(time.time()) - 3600)]))
    assert rejected.status_code == 400
    assert "redirect_uri" not in rejected.json()
    created = new_request(http, verifier, redirect_uri=RETURN, response_mode="direct_post")
    request = wallet.fetch_request(created["uri"])
    declined = wallet.post_response(request, error="access_denied")
    assert declined.status_code == 200 and declined.json() == {}


def test_redirect_and_webhook_urls_must_be_https_off_loopback(http, verifier):
    for field_name in ("redirect_uri", "webhook_url"):
        for bad in ("http://agency.example/return", "javascript:alert(1)", "https://agency.example/r#frag"):
            response = http.post(f"{verifier.url}/v1/requests", headers=verifier.headers(),
                                 json={"template": "grant-application", field_name: bad})
            assert response.status_code == 400, (field_name, bad, response.text)


# -- issuer metadata -----------------------------------------------------------------------------

META_VCT = "https://metadata-issuer.example/vct/membership"


@dataclass
class MetadataIssuer:
    """An issuer that publishes ``/.well-known/jwt-vc-issuer`` (jwks) and a status list, no x5c."""

    key: Key
    published: list[dict[str, Any]]
    status: StatusList = field(default_factory=lambda: StatusList(64, bits=2))
    base_url: str = ""
    metadata_fetches: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/jwt-vc-issuer")
        def metadata() -> dict[str, Any]:
            self.metadata_fetches += 1
            return {"issuer": self.base_url, "jwks": {"keys": self.published}}

        @app.get("/status/1")
        def status() -> Response:
            token = sign_status_list_token(self.status, uri=f"{self.base_url}/status/1", key=self.key,
                                           kid=self.key.kid, ttl=1, exp=int(time.time()) + 600)
            return Response(token, media_type="application/statuslist+jwt")

        return app

    def credential(self, *, idx: int, key: Key | None = None, kid: str | None = None) -> HeldCredential:
        holder = Key.generate("ES256")
        token = issue_sd_jwt_vc({"member": "Anna Puig", "since": "2020"}, vct=META_VCT, issuer=self.base_url,
                                key=key or self.key, holder_jwk=holder.public_jwk(),
                                disclosable=[("member",), ("since",)], kid=kid or self.key.kid,
                                status=status_claim(idx, f"{self.base_url}/status/1"), exp=int(time.time()) + 600)
        return HeldCredential(token, holder)


@pytest.fixture(scope="module")
def metadata_issuer() -> Iterator[MetadataIssuer]:
    key = Key.generate("ES256")
    jwk = {**key.public_jwk(), "kid": "k1", "use": "sig", "alg": "ES256"}
    key = Key.from_jwk({**key.private_jwk(), "kid": "k1"})
    issuer = MetadataIssuer(key=key, published=[jwk])
    with serve(issuer.app()) as url:
        issuer.base_url = url
        yield issuer


def _metadata_request(http, verifier, issuer_url: str, *, metadata: bool = True) -> dict:
    return new_request(
        http, verifier, template=None, response_mode="direct_post",
        dcql_query={"credentials": [{"id": "membership", "format": "dc+sd-jwt", "meta": {"vct_values": [META_VCT]},
                                     "claims": [{"path": ["member"]}]}]},
        purpose={"en": "Membership check", "ca": "Comprovació", "es": "Comprobación"},
        trusted_issuers=[{"vct": META_VCT, "issuers": [issuer_url], "metadata": metadata}])


def _present(http, verifier, wallet, credential: HeldCredential, issuer_url: str, *, metadata: bool = True):
    created = _metadata_request(http, verifier, issuer_url, metadata=metadata)
    request = wallet.fetch_request(created["uri"])
    response = wallet.post_response(request, wallet.build_vp_token(request, [credential]))
    return response, read_result(http, verifier, created["id"])


def test_issuer_key_from_jwt_vc_issuer_metadata_end_to_end(http, verifier, wallet, metadata_issuer):
    response, result = _present(http, verifier, wallet, metadata_issuer.credential(idx=3), metadata_issuer.base_url)
    assert response.status_code == 200, response.text
    assert result["status"] == "verified", result["errors"]
    entry = result["credentials"]["membership"][0]
    assert entry["key_source"] == "metadata" and entry["issuer"] == metadata_issuer.base_url
    assert result["claims"] == {"membership": {"member": "Anna Puig"}}
    assert metadata_issuer.metadata_fetches >= 1


def test_metadata_issuer_status_list_is_checked_with_the_metadata_key(http, verifier, wallet, metadata_issuer):
    metadata_issuer.status.set(5, 1)
    time.sleep(1.1)  # the list's ttl is one second: the verifier fetches it again
    response, result = _present(http, verifier, wallet, metadata_issuer.credential(idx=5), metadata_issuer.base_url)
    assert response.status_code == 400
    assert [e["code"] for e in result["errors"]] == ["verifier.revoked"]


def test_metadata_issuer_refusals(http, verifier, wallet, metadata_issuer):
    # Signed by a key the metadata does not publish (under the published kid).
    forged = metadata_issuer.credential(idx=7, key=Key.generate("ES256"))
    _, result = _present(http, verifier, wallet, forged, metadata_issuer.base_url)
    assert result["status"] == "rejected" and result["errors"][0]["code"].endswith("bad_signature"), result["errors"]
    # A kid the metadata does not publish.
    unknown_kid = metadata_issuer.credential(idx=8, kid="k-unknown")
    _, result = _present(http, verifier, wallet, unknown_kid, metadata_issuer.base_url)
    assert result["status"] == "rejected" and result["errors"], result["errors"]
    # The template names the issuer but does not allow metadata lookup: without x5c it is untrusted.
    _, result = _present(http, verifier, wallet, metadata_issuer.credential(idx=9), metadata_issuer.base_url,
                         metadata=False)
    assert result["status"] == "rejected"
    assert result["errors"][0]["code"] == "verifier.untrusted_issuer"


# -- the same on PostgreSQL ----------------------------------------------------------------------


def test_webhook_redirect_and_replay_on_postgresql(http, wallet, creds, pki, postgres_url, tmp_path):
    from tests.verifier.conftest import start_verifier

    rec = Receiver(fail_first=1)
    with serve(rec.app()) as hook_base, start_verifier(tmp_path, pki, postgres_url) as pg_verifier:
        created = new_request(http, pg_verifier, webhook_url=f"{hook_base}/hooks/vp", redirect_uri=RETURN,
                              response_mode="direct_post")
        request = wallet.fetch_request(created["uri"])
        vp_token = wallet.build_vp_token(request, [creds.tax()])
        response = wallet.post_response(request, vp_token)
        assert response.status_code == 200, response.text
        code = urlsplit(response.json()["redirect_uri"]).fragment.split("=", 1)[1]
        _wait(lambda: len(rec.accepted) == 1)
        secret = pg_verifier.agencies["ajuntament-barcelona"]["webhook_secret"]
        verify_webhook(secret, rec.accepted[0]["body"], rec.accepted[0]["signature"])
        assert len(rec.calls) == 2
        exchanged = http.post(f"{pg_verifier.url}/v1/requests/{created['id']}/exchange",
                              json={"response_code": code}, headers=pg_verifier.headers())
        assert exchanged.status_code == 200 and exchanged.json()["status"] == "verified"
        # The same vp_token on a new request of the same agency: refused as a replay.
        second = new_request(http, pg_verifier, response_mode="direct_post")
        request2 = wallet.fetch_request(second["uri"])
        replay = http.post(request2.response_uri, data={"vp_token": json.dumps(vp_token), "state": request2.state})
        assert replay.status_code == 400
        assert [e["code"] for e in replay.json()["errors"]] == ["verifier.replayed_vp_token"]


def test_concurrent_answers_on_postgresql_one_wins(http, wallet, creds, pki, postgres_url, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tests.verifier.conftest import start_verifier

    with start_verifier(tmp_path, pki, postgres_url) as pg_verifier:
        created = new_request(http, pg_verifier, response_mode="direct_post")
        request = wallet.fetch_request(created["uri"])
        form = {"vp_token": json.dumps(wallet.build_vp_token(request, [creds.tax()])), "state": request.state}

        def post(_: int) -> tuple[int, list[str]]:
            response = http.post(request.response_uri, data=form)
            body = response.json()
            return response.status_code, [body.get("code")] if "code" in body else [e["code"] for e in
                                                                                   body.get("errors", [])]

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(post, range(8)))
        assert sorted(status for status, _ in outcomes) == [200] + [400] * 7, outcomes
        assert all(codes == ["verifier.already_answered"] for status, codes in outcomes if status == 400), outcomes
        result = http.get(f"{pg_verifier.url}/v1/requests/{created['id']}", headers=pg_verifier.headers()).json()
        assert result["status"] == "verified"


def test_a_row_that_cannot_be_sent_uses_up_its_attempts_and_not_the_other_rows(tmp_path):
    """The worker's round on a real database: a row whose agency's secret does not open (sealed under
    another master key) and a row whose agency is gone are each counted as a failed attempt, and the
    good row of the same round is delivered."""
    import asyncio
    import datetime as dt
    import os

    import httpx

    from service_kit.crypto import SecretBox
    from service_kit.db import Database
    from service_kit.migrations import run_migrations
    from service_kit.webhooks import GIVEN_UP
    from verifier.models import Agency, Transaction, WebhookOutbox
    from verifier.worker import deliver_due

    url = f"sqlite+aiosqlite:///{tmp_path / 'verifier.db'}"
    run_migrations(Path(__file__).resolve().parents[2] / "verifier" / "migrations", url)
    box = SecretBox(os.urandom(32))
    rec = Receiver()

    async def scenario(hook_url: str) -> tuple[int, dict[str, tuple[int, Any, Any]]]:
        db = Database(url)
        now = dt.datetime.now(dt.UTC)
        try:
            async with db.session() as session:
                for agency_id, sealed_by in (("good", box), ("locked", SecretBox(os.urandom(32)))):
                    session.add(Agency(id=agency_id, slug=agency_id, name=agency_id, signing_key=b"\0", x5c=[],
                                       webhook_secret=sealed_by.seal(b"secret", f"agency:{agency_id}:webhook".encode()),
                                       created_at=now))
                session.add(Transaction(
                    id="tx-1", agency_id="good", dcql_query={}, purpose={}, trusted_issuers=[], anchors_pem=[],
                    retention_seconds=60, client_id="client", response_mode="direct_post", nonce="n", state="s",
                    status="rejected", created_at=now, expires_at=now, watch_token_hash="w", errors=[], record={}))
                reference = b'{"event": "presentation.rejected", "transaction_id": "tx-1"}'
                for row_id, agency_id in (("to-good", "good"), ("to-locked", "locked"), ("to-gone", "gone")):
                    session.add(WebhookOutbox(id=row_id, endpoint_id=agency_id, url=hook_url, event_type="e",
                                              body=reference, attempts=0, created_at=now,
                                              next_attempt_at=now - dt.timedelta(seconds=1)))
            async with httpx.AsyncClient() as client:
                delivered = await deliver_due(db, box, client)
            async with db.read_session() as session:
                rows = {r.id: (r.attempts, r.delivered_at, r.last_error)
                        for r in (await session.execute(select(WebhookOutbox))).scalars()}
                gone_next = (await session.get(WebhookOutbox, "to-gone")).next_attempt_at
            assert gone_next == GIVEN_UP  # never due again: out of every later round's range
            return delivered, rows
        finally:
            await db.dispose()

    with serve(rec.app()) as base:
        delivered, rows = asyncio.run(scenario(f"{base}/hooks/vp"))
    assert delivered == 1 and len(rec.accepted) == 1
    assert json.loads(rec.accepted[0]["body"])["result"]["status"] == "rejected"
    assert rows["to-good"][0] == 1 and rows["to-good"][1] is not None
    assert rows["to-locked"] == (1, None, "the agency's webhook secret cannot be opened")
    assert rows["to-gone"] == (12, None, "the agency was removed")  # given up: nobody to deliver to


def test_a_row_that_raises_does_not_end_the_round(tmp_path, caplog):
    """A row whose URL httpx cannot even parse (InvalidURL, not a transport error) comes first in the
    round: it keeps its lease (the attempt counted) and the next row is delivered in the same round."""
    import asyncio
    import datetime as dt
    import os

    import httpx

    from service_kit.crypto import SecretBox
    from service_kit.db import Database
    from service_kit.migrations import run_migrations
    from verifier.models import Agency, Transaction, WebhookOutbox
    from verifier.worker import deliver_due

    url = f"sqlite+aiosqlite:///{tmp_path / 'verifier.db'}"
    run_migrations(Path(__file__).resolve().parents[2] / "verifier" / "migrations", url)
    box = SecretBox(os.urandom(32))
    rec = Receiver()

    async def scenario(hook_url: str) -> tuple[int, dict[str, Any], dt.datetime]:
        db = Database(url)
        now = dt.datetime.now(dt.UTC)
        try:
            async with db.session() as session:
                session.add(Agency(id="good", slug="good", name="good", signing_key=b"\0", x5c=[],
                                   webhook_secret=box.seal(b"secret", b"agency:good:webhook"), created_at=now))
                session.add(Transaction(
                    id="tx-1", agency_id="good", dcql_query={}, purpose={}, trusted_issuers=[], anchors_pem=[],
                    retention_seconds=60, client_id="client", response_mode="direct_post", nonce="n", state="s",
                    status="rejected", created_at=now, expires_at=now, watch_token_hash="w", errors=[], record={}))
                reference = b'{"event": "presentation.rejected", "transaction_id": "tx-1"}'
                for row_id, row_url, age in (("to-broken", "http://[::1/hooks/vp", 2), ("to-good", hook_url, 1)):
                    session.add(WebhookOutbox(id=row_id, endpoint_id="good", url=row_url, event_type="e",
                                              body=reference, attempts=0, created_at=now,
                                              next_attempt_at=now - dt.timedelta(seconds=age)))
            async with httpx.AsyncClient() as client:
                delivered = await deliver_due(db, box, client)
            async with db.read_session() as session:
                rows = {r.id: r for r in (await session.execute(select(WebhookOutbox))).scalars()}
            return delivered, rows, now
        finally:
            await db.dispose()

    with serve(rec.app()) as base, caplog.at_level("ERROR", logger="verifier.worker"):
        delivered, rows, now = asyncio.run(scenario(f"{base}/hooks/vp"))
    assert delivered == 1 and len(rec.accepted) == 1
    # Logged by type: the exception's message (it may quote the URL or an answer) is not.
    (record,) = [r for r in caplog.records if r.name == "verifier.worker"]
    assert record.error == "InvalidURL" and record.exc_info is None and "[::1" not in record.getMessage()
    assert rows["to-good"].delivered_at is not None
    broken = rows["to-broken"]
    assert broken.delivered_at is None and broken.attempts == 1 and broken.next_attempt_at > now


def test_the_outbox_keeps_no_claims_and_a_late_retry_carries_none_past_their_retention(
        http, verifier, wallet, creds):
    """The claims of a verified answer are in the webhook the agency receives, but never at rest in
    the outbox (in clear, and kept after delivery as its record); a retry after the claims' retention
    carries the result without them, as polling shows it then."""
    import sqlite3
    from contextlib import closing

    rec = Receiver(fail_first=1)
    database = verifier.settings.database_url.split("///", 1)[1]
    with serve(rec.app()) as url:
        created = new_request(http, verifier, webhook_url=f"{url}/hooks/vp", response_mode="direct_post")
        request = wallet.fetch_request(created["uri"])
        assert wallet.post_response(request, wallet.build_vp_token(request, [creds.tax()])).status_code == 200
        _wait(lambda: len(rec.calls) == 1)  # the first attempt, refused: the row waits for its retry

        def stored() -> bytes:
            with closing(sqlite3.connect(database)) as conn:
                return conn.execute("SELECT body FROM webhook_outbox WHERE json_extract(CAST(body AS TEXT), "
                                    "'$.transaction_id') = ?", (created["id"],)).fetchone()[0]

        assert json.loads(rec.calls[0]["body"])["result"]["claims"]["tax"]["nif"] == "12345678Z"
        assert b"12345678Z" not in stored() and b"claims" not in stored()
        # The claims' retention passes before the retry is due.
        with closing(sqlite3.connect(database)) as conn:
            conn.execute("UPDATE transactions SET purge_at = '2000-01-01 00:00:00.000000' WHERE id = ?",
                         (created["id"],))
            conn.execute("UPDATE webhook_outbox SET next_attempt_at = '2000-01-01 00:00:00.000000' "
                         "WHERE json_extract(CAST(body AS TEXT), '$.transaction_id') = ?", (created["id"],))
            conn.commit()
        _wait(lambda: len(rec.accepted) == 1)
    retried = json.loads(rec.accepted[0]["body"])
    assert retried["result"]["status"] == "verified" and retried["result"]["claims"] == {}
    assert retried["result"]["claims_deleted"] is True
    assert b"12345678Z" not in stored()


def test_migration_0008_takes_the_claims_out_of_queued_webhooks(database_url):
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from service_kit.migrations import run_migrations

    migrations = Path(__file__).resolve().parents[2] / "verifier" / "migrations"
    run_migrations(migrations, database_url, "0007")
    old = {"event": "presentation.verified", "transaction_id": "tx-1",
           "result": {"status": "verified", "claims": {"tax": {"nif": "12345678Z"}}}}

    async def sql(statement: str, **params: Any) -> Any:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as conn:
                return (await conn.execute(text(statement), params)).all() if statement.startswith("SELECT") \
                    else await conn.execute(text(statement), params)
        finally:
            await engine.dispose()

    asyncio.run(sql("INSERT INTO webhook_outbox (id, endpoint_id, url, event_type, body, attempts, created_at, "
                    "next_attempt_at, delivered_at) VALUES ('w1', 'a', 'https://x', 'e', :body, 1, :t, :t, :t)",
                    body=json.dumps(old).encode(), t=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    run_migrations(migrations, database_url)
    ((body,),) = asyncio.run(sql("SELECT body FROM webhook_outbox WHERE id = 'w1'"))
    assert json.loads(bytes(body)) == {"event": "presentation.verified", "transaction_id": "tx-1"}
