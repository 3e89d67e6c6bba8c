"""A deferred Aries poll that outlasts its lease sends one offer, and its exchange follows that offer.

Real peers on loopback: the simulated Via Oberta, the issuer's ACA-Py agent (run beside the issuer, as
in compose, so that its admin API is reached through a slow link), the citizen's agent, and two issuer
workers on one database, each running its deferred sweep. The poll lease is shortened to 1 s
(``aries_poll_lease``) and the link holds each ``send-offer`` for several leases before passing it on:
the poll that got the data outlasts its lease while its offer is on its way.

Before, the other worker took the exchange over as soon as the lease ran out: it found the record of the
offer in flight but no offer in the agent yet, withdrew the record, asked the source again (which had
delivered its answer already: refused) and failed the exchange, and the first worker's offer went out
all the same: an offer with no record, for a failed exchange (and with a source that answers twice, a
second offer). Now a poll renews its lease while it runs and claims the exchange right before the
record and the offer (a conditional ``UPDATE`` that moves the lease past the longest an offer takes).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from aries.client import AdminClient
from aries.jsonld import contexts_document
from aries.runner import AgentConfig, AgentProcess
from credential_schemas import load_builtin_types
from issuer.app import create_app as create_issuer
from tests.support.servers import free_port, serve

from .test_deferred_and_workers import (
    PENDING_SUBJECT,
    Outside,
    _connect,
    _invite,
    _issuer_settings,
    _provision,
    _take_offer,
    _wait_exchange,
    outside,  # noqa: F401 - the module's fixture: the simulated Via Oberta and the citizen's agent
)

LEASE = 1.0
#: How long the link holds an offer: several leases, and several sweeps of the other worker.
HOLD = 4 * LEASE
SLUG = "uni-barcelona"


class SlowLink:
    """A link to the agent's admin API that holds every ``send-offer`` for :data:`HOLD` seconds before
    passing it on (a slow agent, as seen from the issuer); it counts the offers it passed."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.offers = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def forward(path: str, request: Request) -> Response:
            body = await request.body()
            if request.method == "POST" and path.endswith("send-offer"):
                await asyncio.sleep(HOLD)
                self.offers += 1
            headers = {k: v for k, v in request.headers.items() if k in ("x-api-key", "content-type", "accept")}
            async with httpx.AsyncClient(timeout=60) as client:
                answer = await client.request(request.method, f"{self.target}/{path}", params=request.query_params,
                                              content=body, headers=headers)
            return Response(answer.content, status_code=answer.status_code,
                            media_type=answer.headers.get("content-type"))

        return app


@pytest.fixture
def workers(outside: Outside) -> Iterator[tuple[str, str, SlowLink]]:  # noqa: F811 - the imported fixture
    """Two issuer workers on one database and one agent reached through a :class:`SlowLink`; yields the
    first worker's URL, its tenant's API key and the link."""
    settings = _issuer_settings(outside, "issuer-slow-offer")
    tenant = _provision(outside, settings)
    contexts = settings.data_dir / "contexts.json"
    contexts.write_text(json.dumps(contexts_document(load_builtin_types().values(),
                                                     f"{settings.public_url}/t/{SLUG}")), encoding="utf-8")
    webhook_key = secrets.token_urlsafe(32)
    agent = AgentConfig(name="cartera-issuer", label="Cartera issuer", data_dir=settings.data_dir / "agent",
                        inbound_port=settings.aries_inbound_port, admin_port=settings.aries_admin_port,
                        webhook_url=f"{settings.public_url}/v1/aries/webhooks", webhook_api_key=webhook_key,
                        contexts_file=contexts, extra_args=["--auto-accept-requests"])
    link = SlowLink(agent.admin_url)
    with ExitStack() as stack:
        stack.enter_context(AgentProcess(agent))
        link_url = stack.enter_context(serve(link.app()))
        first = settings.model_copy(update={
            "aries_admin_url": link_url, "aries_admin_api_key": SecretStr(agent.admin_api_key),
            "aries_webhook_key": SecretStr(webhook_key), "aries_poll_lease": LEASE})
        second = first.model_copy(update={"port": free_port()})
        base = stack.enter_context(serve(create_issuer(first, configure_logs=False), port=first.port))
        stack.enter_context(serve(create_issuer(second, configure_logs=False), port=second.port))
        yield base, tenant["api_key"], link


async def _offers_at(outside: Outside, before: set[str]) -> list[dict[str, Any]]:  # noqa: F811
    async with AdminClient(outside.wallet.admin_url, outside.wallet.admin_api_key) as w:
        return [r["cred_ex_record"] for r in await w.cred_records() if r["cred_ex_record"]["cred_ex_id"] not in before]


def test_a_deferred_poll_that_outlasts_its_lease_sends_one_offer_which_its_exchange_follows(
        outside: Outside, workers: tuple[str, str, SlowLink]) -> None:  # noqa: F811
    base, key, link = workers
    body = _invite(base, key, PENDING_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    offered = _wait_exchange(base, key, body["exchange_id"], {"offered", "failed"}, timeout=60)
    assert offered["state"] == "offered", offered
    record = httpx.get(f"{base}/v1/credentials/{offered['credential_id']}",
                       headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert record.status_code == 200 and record.json()["status"] == "valid", record.text
    vc = asyncio.run(_take_offer(outside.wallet, before))
    assert vc["credentialSubject"]["personalIdentifier"] == PENDING_SUBJECT["identifier"]
    issued = _wait_exchange(base, key, body["exchange_id"], {"issued", "failed"})
    assert issued["state"] == "issued" and issued["credential_id"] == offered["credential_id"], issued
    # One offer asked of the agent, one reached the citizen.
    assert link.offers == 1
    assert len(asyncio.run(_offers_at(outside, before))) == 1
