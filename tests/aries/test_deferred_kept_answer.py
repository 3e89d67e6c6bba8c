"""A deferred Aries issuance never loses the answer the data source delivered.

Via Oberta delivers a pending query's answer once: the poll that hears it consumes it, and a later poll
of the same ``IdPeticion`` is answered ``0207`` ("unknown or already delivered"), a final refusal. The
Aries channel polls with the same ``fetch_record`` as the OpenID4VCI deferred endpoint, and now keeps
what that endpoint keeps (docs/issuer.md, docs/aries.md):

- the query context the pending query was sent under (``source_context`` on its deferral): a tenant
  editing its source's purpose or official while the query is pending still gets the credential.
  Before, the poll was sent (and its answer checked) under the edited context: the answer, echoing the
  context sent, was refused and the exchange failed;
- the record the poll heard, sealed on the deferral before the offer (``sealed_record``): an offer that
  fails after the poll (here the agent, behind a gateway that answers 502 while it is unreachable) is
  made at the next poll from the kept record, without asking the source again. Before, the exchange
  failed, and with a 503 the next poll heard 0207 and failed it.

Real peers on loopback: the simulated Via Oberta (its polls counted as it receives them), the issuer's
ACA-Py agent reached through a gateway the test can make answer 502 to ``send-offer``, the citizen's
agent and the issuer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from aries.jsonld import contexts_document
from aries.runner import AgentConfig, AgentProcess
from credential_schemas import load_builtin_types
from issuer.app import create_app as create_issuer
from issuer.provisioning import DEMO_OFFICIAL, DEMO_TENANTS
from issuer.settings import IssuerSettings
from sandbox.viaoberta_service import ASYNC_RESPONSE_PATH, ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from ssi import x509 as ssi_x509
from tests.support.servers import free_port, serve
from viaoberta.credentials import generate_identity

from .test_deferred_and_workers import (
    PENDING_SUBJECT,
    Outside,
    _connect,
    _exchange,
    _invite,
    _issuer_settings,
    _provision,
    _take_offer,
    _wait_exchange,
)

SLUG = "uni-barcelona"
TYPE = "university-diploma"
SOURCE = DEMO_TENANTS[0]["types"][TYPE]
#: The sandbox answers a pending query's third poll: the tenant's edit comes well before it.
PENDING_POLLS = 2


class CountedViaOberta:
    """The simulated Via Oberta, counting the polls (``AsincronResposta``) it receives and the SOAP
    faults it answers them with (``0207`` for an answer already delivered)."""

    def __init__(self, config: ViaObertaSandboxConfig) -> None:
        self.polls = 0
        self.refused = 0
        self.app = create_viaoberta(config)

        @self.app.middleware("http")
        async def count(request: Request, call_next: Any) -> Response:
            answer = await call_next(request)
            if request.url.path == ASYNC_RESPONSE_PATH:
                self.polls += 1
                self.refused += answer.status_code == 500
            return answer


class Gateway:
    """What stands between the issuer and its agent's admin API; while ``down`` it answers ``send-offer``
    502, as a gateway whose agent is unreachable does (the offer certainly not sent). Counts both."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.down = False
        self.refused = 0
        self.offers = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def forward(path: str, request: Request) -> Response:
            body = await request.body()
            if request.method == "POST" and path.endswith("send-offer"):
                if self.down:
                    self.refused += 1
                    return Response("Bad Gateway", status_code=502, media_type="text/plain")
                self.offers += 1
            headers = {k: v for k, v in request.headers.items() if k in ("x-api-key", "content-type", "accept")}
            async with httpx.AsyncClient(timeout=60) as client:
                answer = await client.request(request.method, f"{self.target}/{path}", params=request.query_params,
                                              content=body, headers=headers)
            return Response(answer.content, status_code=answer.status_code,
                            media_type=answer.headers.get("content-type"))

        return app


@dataclass
class Setup:
    outside: Outside
    viaoberta: CountedViaOberta
    gateway: Gateway
    settings: IssuerSettings
    base: str
    key: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def deferral(self, exchange_id: str) -> tuple[Any, Any] | None:
        """``(source_context, sealed_record)`` of the exchange's deferral, read from the issuer's database."""
        db = sqlite3.connect(self.settings.data_dir / "issuer.db", timeout=30)
        try:
            return db.execute("SELECT source_context, sealed_record FROM deferred_transactions "
                              "WHERE transaction_hash = ?", (f"aries:{exchange_id}",)).fetchone()
        finally:
            db.close()

    def put_source(self, **context: str) -> None:
        """Configure the type's source as provisioning does, with ``context`` over the demo context."""
        out = self.outside
        config = {"kind": "viaoberta", "endpoint": out.vo_url, "product": SOURCE["product"],
                  "signing_key_pem": out.requester.key_pem.decode("ascii"),
                  "signing_cert_pem": out.requester.cert_pem.decode("ascii"),
                  "platform_certs_pem": [out.platform.cert_pem.decode("ascii")],
                  "timeout": 10, "retries": 1, "pending_retry_seconds": 1,
                  "context": {"purpose": SOURCE["purpose"], "procedure": SOURCE["procedure"],
                              "consent": SOURCE["consent"], **DEMO_OFFICIAL, **context}}
        answer = httpx.put(f"{self.base}/v1/types/{TYPE}/source", headers=self.headers(), json=config, timeout=30)
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("aries-kept-answer")
    platform, requester = generate_identity("platform"), generate_identity("issuer-requester")
    viaoberta = CountedViaOberta(ViaObertaSandboxConfig(
        signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
        registered_certs_pem=[requester.cert_pem], pending_polls=PENDING_POLLS))
    wallet = AgentConfig(name="citizen", label="Citizen wallet", data_dir=root / "citizen",
                         inbound_port=free_port(), admin_port=free_port(),
                         extra_args=["--auto-accept-invites", "--auto-store-credential"])
    with ExitStack() as stack:
        vo_url = stack.enter_context(serve(viaoberta.app))
        stack.enter_context(AgentProcess(wallet))
        outside = Outside(vo_url, platform, requester, ssi_x509.create_ca("Cartera test CA"), wallet, root)
        settings = _issuer_settings(outside, "issuer-kept-answer")
        tenant = _provision(outside, settings)
        # The issuer's agent runs beside the issuer (as in compose), so that a gateway can stand between.
        contexts = settings.data_dir / "contexts.json"
        contexts.write_text(json.dumps(contexts_document(load_builtin_types().values(),
                                                         f"{settings.public_url}/t/{SLUG}")), encoding="utf-8")
        webhook_key = secrets.token_urlsafe(32)
        agent = AgentConfig(name="cartera-issuer", label="Cartera issuer", data_dir=settings.data_dir / "agent",
                            inbound_port=settings.aries_inbound_port, admin_port=settings.aries_admin_port,
                            webhook_url=f"{settings.public_url}/v1/aries/webhooks", webhook_api_key=webhook_key,
                            contexts_file=contexts, extra_args=["--auto-accept-requests"])
        stack.enter_context(AgentProcess(agent))
        gateway = Gateway(agent.admin_url)
        gateway_url = stack.enter_context(serve(gateway.app()))
        settings = settings.model_copy(update={
            "aries_admin_url": gateway_url, "aries_admin_api_key": SecretStr(agent.admin_api_key),
            "aries_webhook_key": SecretStr(webhook_key)})
        base = stack.enter_context(serve(create_issuer(settings, configure_logs=False), port=settings.port))
        yield Setup(outside, viaoberta, gateway, settings, base, tenant["api_key"])


def _pending(setup: Setup) -> tuple[dict[str, Any], set[str]]:
    """An invitation for the pending citizen, connected: its exchange is ``pending`` (the source's query
    is). Returns the invitation and the citizen's credential exchanges before it."""
    body = _invite(setup.base, setup.key, PENDING_SUBJECT)
    before = asyncio.run(_connect(setup.outside.wallet, body["short_url"]))
    pending = _wait_exchange(setup.base, setup.key, body["exchange_id"], {"pending", "offered", "failed"})
    assert pending["state"] == "pending", (pending["state"], pending["error"])
    return body, before


def _issued(setup: Setup, body: dict[str, Any], before: set[str]) -> dict[str, Any]:
    """The citizen takes the offer; returns the issuance record, once the exchange is ``issued``."""
    offered = _wait_exchange(setup.base, setup.key, body["exchange_id"], {"offered", "failed"})
    assert offered["state"] == "offered", (offered["state"], offered["error"])
    vc = asyncio.run(_take_offer(setup.outside.wallet, before))
    assert vc["credentialSubject"]["personalIdentifier"] == PENDING_SUBJECT["identifier"]
    issued = _wait_exchange(setup.base, setup.key, body["exchange_id"], {"issued", "failed"})
    assert issued["state"] == "issued", (issued["state"], issued["error"])
    record = httpx.get(f"{setup.base}/v1/credentials/{issued['credential_id']}", headers=setup.headers(), timeout=10)
    assert record.status_code == 200, record.text
    return dict(record.json())


def test_a_context_edit_while_the_query_is_pending_still_issues(setup: Setup) -> None:
    """The tenant edits its source's purpose and official while an exchange's query is pending. Its
    polls carry the context the query was sent with, and the answer that echoes it is offered."""
    polls = setup.viaoberta.polls
    body, before = _pending(setup)
    stored = setup.deferral(body["exchange_id"])
    try:
        setup.put_source(purpose="Una altra finalitat", official_name="Una altra oficina")
        assert setup.viaoberta.polls - polls <= PENDING_POLLS  # edited before the source answered
        record = _issued(setup, body, before)
    finally:
        setup.put_source()
    # The credential tells what was asked: the purpose and official the query was sent with.
    assert record["evidence"]["purpose"] == SOURCE["purpose"]
    assert record["evidence"]["official"].startswith(DEMO_OFFICIAL["official_name"])
    assert setup.viaoberta.polls - polls == PENDING_POLLS + 1 and setup.viaoberta.refused == 0
    # The context it was sent with was kept on the deferral (while it lasted: it goes with the offer).
    assert stored is not None
    sent = json.loads(stored[0]) if isinstance(stored[0], str) else stored[0]
    assert sent == {"purpose": SOURCE["purpose"], "procedure": SOURCE["procedure"], "consent": SOURCE["consent"],
                    **DEMO_OFFICIAL, "requesting_body_id": DEMO_TENANTS[0]["body_id"],
                    "requesting_body_name": DEMO_TENANTS[0]["name"]}


def test_an_offer_that_fails_after_the_poll_is_made_from_the_kept_record_without_asking_again(
        setup: Setup) -> None:
    """The poll hears the data; the offer then fails (the agent unreachable: 502 from its gateway, so
    certainly not sent). The record was kept, sealed, on the deferral: the exchange stays ``pending``,
    and once the agent is back the next poll offers from it without asking the source, which delivered
    its answer once (asked again, it answers 0207 and the exchange failed)."""
    gateway, viaoberta = setup.gateway, setup.viaoberta
    polls, refused = viaoberta.polls, viaoberta.refused
    gateway.down = True
    try:
        body, before = _pending(setup)
        # Two offers refused: the poll that heard the data, then a poll from the kept record.
        deadline = time.monotonic() + 40
        while gateway.refused < 2:
            state = _exchange(setup.base, setup.key, body["exchange_id"])
            assert state["state"] == "pending", (state["state"], state["error"])
            assert time.monotonic() < deadline, "no offer tried"
            time.sleep(0.2)
        assert viaoberta.polls - polls == PENDING_POLLS + 1  # the answer delivered, and no poll since
        kept = setup.deferral(body["exchange_id"])
        assert kept is not None and kept[1] is not None
        assert b"record" not in bytes(kept[1]) and PENDING_SUBJECT["name"].encode() not in bytes(kept[1])  # sealed
    finally:
        gateway.down = False
    record = _issued(setup, body, before)
    assert record["evidence"]["purpose"] == SOURCE["purpose"]
    assert viaoberta.polls - polls == PENDING_POLLS + 1 and viaoberta.refused == refused  # never asked again
    assert setup.deferral(body["exchange_id"]) is None  # the kept record went with the deferral
