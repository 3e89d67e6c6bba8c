"""Issue 9 end to end through the SERVICES' APIs with real ACA-Py agents.

The issuer and the verifier each start their own agent (``CARTERA_*_ARIES_ENABLED``, through
``aries.runner``); a third agent, started here, plays the citizen's Aries wallet. The data come from
the simulated Via Oberta, as for OpenID4VCI. Everything runs on loopback over real HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from aries import cleanup
from aries.client import BBS, AdminClient
from aries.errors import AgentUnavailable, AriesError
from aries.jsonld import contexts_document
from aries.runner import AgentConfig, AgentProcess
from credential_schemas import load_builtin_types
from issuer.app import create_app as create_issuer
from issuer.aries_channel import IssuerAriesChannel
from issuer.provisioning import provision_demo as provision_issuer
from issuer.settings import IssuerSettings
from sandbox.population import DEMO_EVERYTHING
from sandbox.viaoberta_service import ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from ssi import x509 as ssi_x509
from tests.support.servers import free_port, serve
from verifier.app import create_app as create_verifier
from verifier.provisioning import provision_demo as provision_verifier
from verifier.settings import VerifierSettings
from viaoberta.credentials import generate_identity

from .harness import Ended, wait_for

CITIZEN = DEMO_EVERYTHING
SUBJECT = {"identifier": CITIZEN, "name": "Montserrat Puig Ferrer"}
DIPLOMA = load_builtin_types()["university-diploma"]


@dataclass
class World:
    issuer_url: str
    verifier_url: str
    issuer_app: Any
    issuer_key: str
    agency_key: str
    tenant_url: str
    wallet: AgentConfig
    holder_did: str
    verifier_app: Any = None

    def issuer_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer_key}"}

    def agency_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agency_key}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("aries-services")
    ca_key, ca_cert = ssi_x509.create_ca("Cartera test CA")
    rp_key, rp_cert = ssi_x509.create_ca("Cartera test RP CA")
    platform, requester = generate_identity("platform"), generate_identity("issuer-requester")
    vo = ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                registered_certs_pem=[requester.cert_pem])
    issuer_port, verifier_port = free_port(), free_port()
    with serve(create_viaoberta(vo)) as vo_url:
        issuer_settings = IssuerSettings(
            database_url=f"sqlite+aiosqlite:///{root / 'issuer.db'}", port=issuer_port,
            public_url=f"http://127.0.0.1:{issuer_port}", dev_mode=True, master_key=secrets.token_hex(32),
            data_dir=root / "issuer", aries_enabled=True, aries_inbound_port=free_port(),
            aries_admin_port=free_port(), aries_proof_types={"university-diploma": BBS})
        provisioned = asyncio.run(provision_issuer(
            issuer_settings, ca_key=ca_key, ca_cert=ca_cert, viaoberta_url=vo_url,
            viaoberta_platform_cert_pem=platform.cert_pem, requester_key_pem=requester.key_pem,
            requester_cert_pem=requester.cert_pem))
        tenant = provisioned["tenants"]["uni-barcelona"]
        verifier_settings = VerifierSettings(
            database_url=f"sqlite+aiosqlite:///{root / 'verifier.db'}", port=verifier_port,
            public_url=f"http://127.0.0.1:{verifier_port}", dev_mode=True, master_key=secrets.token_hex(32),
            data_dir=root / "verifier", aries_enabled=True, aries_inbound_port=free_port(),
            aries_admin_port=free_port())
        agencies = asyncio.run(provision_verifier(
            verifier_settings, ca_key=rp_key, ca_cert=rp_cert, trusted_issuer_anchors=[ca_cert],
            issuers={"diploma": [tenant["issuer_url"]]}))["agencies"]
        # The citizen's wallet agent knows the type's context without the network, as a real wallet app would.
        contexts = root / "contexts.json"
        contexts.write_text(json.dumps(contexts_document([DIPLOMA], tenant["issuer_url"])), encoding="utf-8")
        wallet = AgentConfig(name="citizen", label="Citizen wallet", data_dir=root / "citizen",
                             inbound_port=free_port(), admin_port=free_port(), contexts_file=contexts,
                             extra_args=["--auto-accept-invites", "--auto-store-credential"])
        issuer_app = create_issuer(issuer_settings, configure_logs=False)
        verifier_app = create_verifier(verifier_settings)
        with AgentProcess(wallet), serve(issuer_app, port=issuer_port) as issuer_url, \
                serve(verifier_app, port=verifier_port) as verifier_url:
            async def holder_did() -> str:
                async with AdminClient(wallet.admin_url, wallet.admin_api_key) as client:
                    return await client.create_did_key(BBS)
            yield World(issuer_url, verifier_url, issuer_app, tenant["api_key"],
                        agencies["uni-admissions"]["api_key"], tenant["issuer_url"], wallet, asyncio.run(holder_did()),
                        verifier_app)


def _wallet(world: World) -> AdminClient:
    return AdminClient(world.wallet.admin_url, world.wallet.admin_api_key)


def _poll(fetch: Any, done: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"state not reached: {value}"
        time.sleep(0.1)


async def _new_offer(w: AdminClient, invitation: dict[str, Any]) -> dict[str, Any]:
    """Answer the invitation with the citizen's wallet; the offer that then arrives (its record)."""
    before = {r["cred_ex_record"]["cred_ex_id"] for r in await w.cred_records()}
    await w.receive_invitation(invitation)
    offered = await wait_for(w.cred_records, lambda rs: any(
        r["cred_ex_record"]["state"] == "offer-received" and r["cred_ex_record"]["cred_ex_id"] not in before
        for r in rs), timeout=30)
    return dict(next(r["cred_ex_record"] for r in offered if r["cred_ex_record"]["cred_ex_id"] not in before))


async def _take(w: AdminClient, cred_ex_id: str, holder_did: str, timeout: float = 30) -> str:
    """Request an offered credential; the state the exchange ends in (``done`` or ``abandoned``)."""
    await w.send_cred_request(cred_ex_id, holder_did)
    done = await wait_for(lambda: w.cred_record(cred_ex_id),
                          lambda r: r["cred_ex_record"]["state"] in ("done", "abandoned"), timeout=timeout)
    return str(done["cred_ex_record"]["state"])


def _receive_diploma(world: World, *, removed: bool = True) -> tuple[str, str]:
    """Invitation from the issuer's admin API → wallet connects → diploma stored. Returns (record id, VC id).
    With ``removed``, checks that the issuer's agent no longer holds the exchange once acknowledged."""
    created = httpx.post(f"{world.issuer_url}/v1/aries/invitations", headers=world.issuer_headers(),
                         json={"type": "university-diploma", "subject": SUBJECT})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["proof_type"] == BBS and body["qr_svg"].lstrip().startswith("<")
    assert body["short_url"].startswith(f"{world.tenant_url}/v1/aries/i/") and body["qr_png_base64"]
    # The QR code carries the short URL; a wallet app fetches the invitation from it.
    invitation = httpx.get(body["short_url"], headers={"Accept": "application/json"}).json()
    assert invitation["@type"].endswith("out-of-band/1.1/invitation")
    redirect = httpx.get(body["short_url"])
    assert redirect.status_code == 302 and "oob=" in redirect.headers["location"]

    async def wallet_side() -> str:
        async with _wallet(world) as w:
            stored = {c["cred_value"]["id"] for c in await w.w3c_credentials()}
            offer = await _new_offer(w, invitation)
            assert await _take(w, offer["cred_ex_id"], world.holder_did) == "done"
            new = [c["cred_value"] for c in await w.w3c_credentials() if c["cred_value"]["id"] not in stored]
            assert len(new) == 1 and new[0]["credentialStatus"]["type"] == "BitstringStatusListEntry"
            return str(new[0]["id"])

    vc_id = asyncio.run(wallet_side())
    exchange = _poll(lambda: httpx.get(f"{world.issuer_url}/v1/aries/invitations/{body['exchange_id']}",
                                       headers=world.issuer_headers()).json(), lambda e: e["state"] == "issued")
    # The issuance is a record of the shared table (same API as OpenID4VCI), with the source's evidence.
    record = httpx.get(f"{world.issuer_url}/v1/credentials/{exchange['credential_id']}",
                       headers=world.issuer_headers()).json()
    assert record["subject_identifier"] == CITIZEN and record["status"] == "valid"
    assert record["login"]["channel"] == "aries" and record["evidence"]
    # Acknowledged, the exchange (the credential, its claims) is removed from the issuer's agent.
    agent = world.issuer_app.state.aries.runtime.client

    async def agent_records() -> list[dict[str, Any]]:
        async with AdminClient(agent.admin_url, agent._headers["x-api-key"]) as client:
            return await client.cred_records()

    if removed:
        _poll(lambda: [r["cred_ex_record"]["state"] for r in asyncio.run(agent_records())],
              lambda states: "done" not in states, timeout=10)
    assert redirect.status_code == 302
    assert httpx.get(body["short_url"], headers={"Accept": "application/json"}).status_code == 404  # used
    return exchange["credential_id"], vc_id


def test_a_credential_request_that_follows_no_offer_is_not_signed(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """ACA-Py accepts a request that answers no offer and would sign the credential it describes, as
    the holder wrote it, with any DID of the issuer's wallet. A citizen with a connection writes their
    own diploma (another title, no status, a far expiry) and asks for it: the issuer leaves the request
    unanswered and signs nothing; the offer it made is still answered as usual."""
    created = httpx.post(f"{world.issuer_url}/v1/aries/invitations", headers=world.issuer_headers(),
                         json={"type": "university-diploma", "subject": SUBJECT})
    assert created.status_code == 201, created.text
    invitation = httpx.get(created.json()["short_url"], headers={"Accept": "application/json"}).json()
    agent = world.issuer_app.state.aries.runtime.client
    handled = Ended(monkeypatch, IssuerAriesChannel, "_on_credential")

    async def scenario() -> tuple[str, list[str], str]:
        async with _wallet(world) as w, AdminClient(agent.admin_url, agent._headers["x-api-key"]) as issuer_agent:
            offer = await _new_offer(w, invitation)
            detail = offer["by_format"]["cred_offer"]["ld_proof"]
            forged = dict(detail["credential"])
            forged.pop("credentialStatus", None)
            forged["expirationDate"] = "2099-01-01T00:00:00Z"
            forged["credentialSubject"] = {**forged["credentialSubject"], "title": "Doctorat en Medicina"}
            sent = await w.request("POST", "/issue-credential-2.0/send-request", json={
                "connection_id": offer["connection_id"], "holder_did": world.holder_did,
                "filter": {"ld_proof": {"credential": forged, "options": detail["options"]}}})
            # The issuer's webhook for the request has looked for its offer and given up; the issuer's
            # agent holds the request unanswered.
            thread = sent["thread_id"]
            await asyncio.to_thread(handled.wait, lambda event: event.state == "request-received"
                                    and event.thread_id == thread)
            states = {r["cred_ex_record"]["thread_id"]: r["cred_ex_record"]["state"]
                      for r in await issuer_agent.cred_records()}
            assert states[thread] == "request-received"
            forged_state = (await w.cred_record(sent["cred_ex_id"]))["cred_ex_record"]["state"]
            # The real offer is still answered: the citizen gets the diploma the registry holds.
            real_state = await _take(w, offer["cred_ex_id"], world.holder_did)
            titles = [c["cred_value"]["credentialSubject"].get("title") for c in await w.w3c_credentials()]
            return forged_state, titles, real_state

    forged_state, titles, real_state = asyncio.run(scenario())
    assert forged_state == "request-sent", forged_state  # nothing came back
    assert "Doctorat en Medicina" not in titles
    assert real_state == "done"


def test_an_offered_exchange_whose_webhooks_are_lost_is_finished_by_the_sweep(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """ACA-Py keeps its webhook queue in memory: deliveries lost (the issuer restarting, say), the
    holder's request would wait for ever. The sweep reads the agent's record of an exchange ``offered``
    without news, issues on the request, and settles the exchange as issued."""
    from issuer import aries_channel

    real_receive = aries_channel.IssuerAriesChannel.receive

    async def losing(self: Any, headers: Any, topic: str, body: bytes) -> str:
        if topic == "issue_credential_v2_0":
            return "ignored"  # lost on the way
        return await real_receive(self, headers, topic, body)

    monkeypatch.setattr(aries_channel.IssuerAriesChannel, "receive", losing)
    monkeypatch.setattr(aries_channel, "OFFERED_CHECK_AFTER", aries_channel.dt.timedelta(seconds=2))
    created = httpx.post(f"{world.issuer_url}/v1/aries/invitations", headers=world.issuer_headers(),
                         json={"type": "university-diploma", "subject": SUBJECT})
    assert created.status_code == 201, created.text
    exchange_id = created.json()["exchange_id"]
    invitation = httpx.get(created.json()["short_url"], headers={"Accept": "application/json"}).json()

    async def wallet_side() -> str:
        async with _wallet(world) as w:
            offer = await _new_offer(w, invitation)
            return await _take(w, offer["cred_ex_id"], world.holder_did, timeout=40)

    assert asyncio.run(wallet_side()) == "done"
    exchange = _poll(lambda: httpx.get(f"{world.issuer_url}/v1/aries/invitations/{exchange_id}",
                                       headers=world.issuer_headers()).json(),
                     lambda e: e["state"] == "issued", timeout=20)
    assert exchange["credential_id"]
    # Settled from a credential-issued record, the acknowledged (done) record is the periodic cleanup's
    # to remove; removed here, so that other tests' looks at the agent find only their own records.
    agent = world.issuer_app.state.aries.runtime.client

    async def remove_finished() -> None:
        async with AdminClient(agent.admin_url, agent._headers["x-api-key"]) as client:
            for item in await client.cred_records(state="done"):
                await client.delete_cred_record(item["cred_ex_record"]["cred_ex_id"])

    asyncio.run(remove_finished())


def test_an_invitation_whose_connection_webhook_is_lost_is_offered_by_the_sweep(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wallet connects but the ``connections`` webhook is lost (ACA-Py's queue lives in memory):
    the exchange stayed ``invited`` with the citizen's wallet connected and waiting, until the
    invitation expired. The sweep asks the agent for the invitation's connection and offers."""
    from issuer import aries_channel

    real_receive = aries_channel.IssuerAriesChannel.receive

    async def losing(self: Any, headers: Any, topic: str, body: bytes) -> str:
        if topic == "connections":
            return "ignored"  # lost on the way
        return await real_receive(self, headers, topic, body)

    monkeypatch.setattr(aries_channel.IssuerAriesChannel, "receive", losing)
    monkeypatch.setattr(aries_channel, "INVITED_CHECK_AFTER", aries_channel.dt.timedelta(seconds=2), raising=False)
    created = httpx.post(f"{world.issuer_url}/v1/aries/invitations", headers=world.issuer_headers(),
                         json={"type": "university-diploma", "subject": SUBJECT})
    assert created.status_code == 201, created.text
    exchange_id = created.json()["exchange_id"]
    invitation = httpx.get(created.json()["short_url"], headers={"Accept": "application/json"}).json()

    async def wallet_side() -> str:
        async with _wallet(world) as w:
            offer = await _new_offer(w, invitation)
            return await _take(w, offer["cred_ex_id"], world.holder_did)

    assert asyncio.run(wallet_side()) == "done"
    exchange = _poll(lambda: httpx.get(f"{world.issuer_url}/v1/aries/invitations/{exchange_id}",
                                       headers=world.issuer_headers()).json(),
                     lambda e: e["state"] in ("issued", "failed"), timeout=20)
    assert exchange["state"] == "issued" and exchange["credential_id"], exchange


def _present(world: World, vc_id: str, *,
             before_answer: Callable[[dict[str, Any]], None] = lambda invitation: None) -> dict[str, Any]:
    """Verifier request variant → wallet answers with a BBS+ derived proof → the verifier's result.
    ``before_answer`` gets the invitation once the wallet could fetch it, before the wallet answers."""
    created = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=world.agency_headers(),
                         json={"template": "job-application"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["claims"] == ["title", "awardingBody"] and body["uri"] == body["short_url"]
    qr = httpx.get(body["qr_svg_url"], headers=world.agency_headers())
    assert qr.status_code == 200 and qr.headers["content-type"].startswith("image/svg+xml")
    invitation = httpx.get(body["short_url"], headers={"Accept": "application/json"}).json()
    before_answer(invitation)

    async def wallet_side() -> None:
        async with _wallet(world) as w:
            before = {r["pres_ex_id"] for r in await w.pres_records()}
            await w.receive_invitation(invitation)
            records = await wait_for(w.pres_records, lambda rs: any(
                r["state"] == "request-received" and r["pres_ex_id"] not in before for r in rs), timeout=30)
            record = next(r for r in records if r["pres_ex_id"] not in before)
            matching = await w.matching_credentials(record["pres_ex_id"])
            chosen = [m["record_id"] for m in matching if m.get("id") == vc_id]
            assert chosen, "the diploma does not match the verifier's request"
            descriptor = record["by_format"]["pres_request"]["dif"]["presentation_definition"]["input_descriptors"][0]
            await w.send_presentation(record["pres_ex_id"], {descriptor["id"]: chosen[:1]})

    asyncio.run(wallet_side())
    return _poll(lambda: httpx.get(body["status_url"], headers=world.agency_headers()).json(),
                 lambda r: r["status"] != "pending")


def test_a_presentation_whose_webhooks_are_lost_is_judged_by_the_sweep(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier's agent no longer verifies on its own: with its ``present_proof_v2_0`` webhooks
    lost (ACA-Py's queue lives in memory), an answered request stayed pending until it expired. The
    sweep reads the agent's record of pending requests, prechecks and verifies the presentation, then
    judges it, as the webhooks would have."""
    from verifier import aries_channel

    real_receive = aries_channel.VerifierAriesChannel.receive

    async def losing(self: Any, headers: Any, topic: str, body: bytes) -> str:
        if topic == "present_proof_v2_0":
            return "ignored"  # lost on the way
        return await real_receive(self, headers, topic, body)

    monkeypatch.setattr(aries_channel.VerifierAriesChannel, "receive", losing)
    for name, value in (("PENDING_CHECK_AFTER", aries_channel.dt.timedelta(seconds=1)), ("PENDING_CHECK_EVERY", 1.0)):
        monkeypatch.setattr(aries_channel, name, value, raising=False)
    _, vc_id = _receive_diploma(world)
    result = _present(world, vc_id)
    assert result["status"] == "verified", result["errors"]
    assert set(result["claims"]["diploma"]) == {"title", "awardingBody"}


def test_diploma_over_didcomm_then_two_claims_verified_then_revoked(world: World) -> None:
    credential_id, vc_id = _receive_diploma(world)

    result = _present(world, vc_id)
    assert result["status"] == "verified", result["errors"]
    # The verifier's agent no longer holds the presentation (the disclosed claims) once it is judged:
    # the verifier's own copy is sealed and deleted after the retention, the agent's would stay for ever.
    agent = world.verifier_app.state.aries.runtime.client

    async def agent_records() -> list[dict[str, Any]]:
        async with AdminClient(agent.admin_url, agent._headers["x-api-key"]) as client:
            return await client.pres_records()

    assert all(r.get("state") != "done" for r in asyncio.run(agent_records())), "the agent kept the presentation"
    assert set(result["claims"]) == {"diploma"}
    assert set(result["claims"]["diploma"]) == {"title", "awardingBody"}  # those 2 and nothing more
    assert all(isinstance(v, str) and v for v in result["claims"]["diploma"].values())
    assert result["credentials"]["diploma"][0]["issuer"] == world.tenant_url
    assert result["errors"] == []

    revoked = httpx.post(f"{world.issuer_url}/v1/credentials/{credential_id}/revoke", headers=world.issuer_headers())
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    after = _present(world, vc_id)
    assert after["status"] == "rejected" and after["claims"] == {}
    assert [e["code"] for e in after["errors"]] == ["aries.revoked"]


def test_the_verifier_s_agent_verifies_a_presentation_only_when_the_verifier_asks(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """ACA-Py keeps create-request's ``auto_verify`` on the exchange record and, when true, verifies
    the presentation on arrival whatever the agent's flags: it loads every context the holder named,
    before (and whatever) our precheck. Then the verifier's own verify-presentation call finds the
    record ``done``, ACA-Py answers 400 and the webhook 500 (re-delivered, failing each time). The
    request's record says ``auto_verify: false``; the verifier's one call to verify succeeds and the
    answer is verified, as before."""
    calls: list[str] = []
    real = AdminClient.verify_presentation

    async def watched(self: AdminClient, pres_ex_id: str) -> dict[str, Any]:
        try:
            answer = await real(self, pres_ex_id)
        except AriesError as exc:
            calls.append(exc.code)
            raise
        calls.append("verified")
        return answer

    monkeypatch.setattr(AdminClient, "verify_presentation", watched)
    agent = world.verifier_app.state.aries.runtime.client
    stored: list[Any] = []

    def read_back(invitation: dict[str, Any]) -> None:
        thread_id = invitation["requests~attach"][0]["data"]["json"]["@id"]

        async def record() -> dict[str, Any]:
            async with AdminClient(agent.admin_url, agent._headers["x-api-key"]) as client:
                (found,) = await client.pres_records(thread_id=thread_id)
                return found

        stored.append(asyncio.run(record()).get("auto_verify"))

    _, vc_id = _receive_diploma(world)
    result = _present(world, vc_id, before_answer=read_back)
    assert stored == [False]
    assert result["status"] == "verified", result["errors"]
    assert calls == ["verified"]


def test_a_request_the_holder_declines_ends_declined_as_on_openid4vp(world: World) -> None:
    """The citizen's wallet declines the request: its agent sends a present-proof problem report. The
    transaction ends ``declined`` with ``aries.declined``, the agency's webhook says
    ``presentation.declined``, and the agent's record is removed, as OpenID4VP ends a wallet's
    ``access_denied``.

    ACA-Py 0.12.8's own handler fails on a report without a connection, which a connectionless
    request's is (``'NoneType' object has no attribute 'connection_id'``): the refusal was lost and
    the request stayed pending until it expired. The ``cartera_contexts`` plugin's handler records it
    (aries/acapy_plugins/cartera_contexts/declines.py)."""
    deliveries: list[dict[str, Any]] = []
    hooks = FastAPI()

    @hooks.post("/hook")
    async def hook(request: Request) -> Response:
        deliveries.append(json.loads(await request.body()))
        return Response(status_code=204)

    agent = world.verifier_app.state.aries.runtime.client
    with serve(hooks) as hook_url:
        created = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=world.agency_headers(),
                             json={"template": "job-application", "webhook_url": f"{hook_url}/hook"})
        assert created.status_code == 201, created.text
        body = created.json()
        invitation = httpx.get(body["short_url"], headers={"Accept": "application/json"}).json()
        thread_id = invitation["requests~attach"][0]["data"]["json"]["@id"]

        async def refuse() -> str:
            async with _wallet(world) as w, AdminClient(agent.admin_url, agent._headers["x-api-key"]) as verifier:
                await w.receive_invitation(invitation)
                (asked,) = await wait_for(lambda: w.pres_records(thread_id=thread_id),
                                          lambda rs: bool(rs) and rs[0]["state"] == "request-received", timeout=30)
                (record,) = await verifier.pres_records(thread_id=thread_id)
                await w.request("POST", f"/present-proof-2.0/records/{asked['pres_ex_id']}/problem-report",
                                json={"description": "the citizen declined"})
                return str(record["pres_ex_id"])

        pres_ex_id = asyncio.run(refuse())
        result = _poll(lambda: httpx.get(body["status_url"], headers=world.agency_headers()).json(),
                       lambda r: r["status"] != "pending")
        _poll(lambda: deliveries, bool, timeout=20)
    assert result["status"] == "declined", result
    assert [e["code"] for e in result["errors"]] == ["aries.declined"] and result["claims"] == {}
    assert [(d["event"], d["transaction_id"]) for d in deliveries] == [("presentation.declined", body["id"])]

    async def gone() -> bool:
        async with AdminClient(agent.admin_url, agent._headers["x-api-key"]) as client:
            return pres_ex_id not in {r["pres_ex_id"] for r in await client.pres_records()}

    assert _poll(lambda: asyncio.run(gone()), bool, timeout=10)


def test_the_issuer_publishes_the_suite_it_signs_with(world: World) -> None:
    # The issuer publishes, per vct, the suite it signs with: what a verifier must ask for, since a
    # request in the other suite could never be answered. How a verifier reads it (signed documents
    # only, the default, disagreement, issuers not answering): tests/aries/test_aries_issuer_trust.py.
    published = httpx.get(f"{world.tenant_url}/v1/aries/issuer").json()
    assert published["suites"][DIPLOMA.vct] == BBS


def _finished_on_agent(app: Any, protocol: str) -> list[str]:
    """The ids of the finished (``done``) exchange records ``app``'s agent holds."""
    agent = app.state.aries.runtime.client

    async def records() -> list[str]:
        async with AdminClient(agent.admin_url, agent._headers["x-api-key"]) as client:
            if protocol == "credential":
                return [r["cred_ex_record"]["cred_ex_id"] for r in await client.cred_records(state="done")]
            return [r["pres_ex_id"] for r in await client.pres_records(state="done")]

    return asyncio.run(records())


def test_records_left_on_the_agents_by_a_failed_removal_are_removed_by_the_cleanup(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agents keep every exchange record: the issuer's with the credential, the verifier's with the
    disclosed claims. When the removal right after the exchange fails (the agent did not answer), the
    periodic cleanup of each service removes them once the exchange is settled on its side."""
    failing = threading.Event()
    failing.set()
    real = {name: getattr(AdminClient, name) for name in ("delete_cred_record", "delete_pres_record")}

    def flaky(name: str) -> Any:
        async def delete(self: AdminClient, record_id: str) -> None:
            if failing.is_set():
                raise AgentUnavailable("injected: the agent did not answer")
            await real[name](self, record_id)
        return delete

    for name in real:
        monkeypatch.setattr(AdminClient, name, flaky(name))
    issued_before = set(_finished_on_agent(world.issuer_app, "credential"))
    judged_before = set(_finished_on_agent(world.verifier_app, "presentation"))
    _credential_id, vc_id = _receive_diploma(world, removed=False)
    result = _present(world, vc_id)
    assert result["status"] == "verified", result["errors"]
    left_issued = set(_finished_on_agent(world.issuer_app, "credential")) - issued_before
    left_judged = set(_finished_on_agent(world.verifier_app, "presentation")) - judged_before
    assert len(left_issued) == 1 and len(left_judged) == 1  # the removals failed: both still there

    failing.clear()
    monkeypatch.setattr(cleanup, "CLEANUP_EVERY", 0.5)  # instead of waiting ten minutes for the next round
    _poll(lambda: set(_finished_on_agent(world.issuer_app, "credential")),
          lambda ids: not ids & left_issued, timeout=20)
    _poll(lambda: set(_finished_on_agent(world.verifier_app, "presentation")),
          lambda ids: not ids & left_judged, timeout=20)
    # The results stay where they belong: the issuance record at the issuer, the result at the verifier.
    assert httpx.get(f"{world.issuer_url}/v1/credentials/{_credential_id}",
                     headers=world.issuer_headers()).json()["status"] == "valid"


@pytest.mark.parametrize("service", ["issuer", "verifier"])
def test_webhook_without_the_right_key_is_refused(world: World, service: str) -> None:
    base = world.issuer_url if service == "issuer" else world.verifier_url
    url = f"{base}/v1/aries/webhooks/topic/present_proof_v2_0/"
    body = json.dumps({"pres_ex_id": "x", "thread_id": "forged", "state": "done", "verified": "true"})
    for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": "w" * 5000}):
        answer = httpx.post(url, content=body, headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == "aries.webhook_unauthorized"


@pytest.mark.parametrize("service", ["issuer", "verifier"])
def test_a_delivery_whose_processing_failed_is_processed_when_delivered_again(
        world: World, monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    """A failed processing forgets the event's key so that ACA-Py's re-delivery is processed. The
    issuer stored the key cut to its column's 300 characters but deleted it whole: an event whose
    thread id is long (one the holder's wallet chose) was never processed again, its re-deliveries
    all taken for duplicates."""
    from issuer.aries_channel import IssuerAriesChannel
    from verifier.aries_channel import VerifierAriesChannel

    owner, handler = ((IssuerAriesChannel, "_on_connection") if service == "issuer"
                      else (VerifierAriesChannel, "_judge"))
    real = getattr(owner, handler)
    failures: list[str] = []

    async def failing_once(self: Any, event: Any) -> None:
        if not failures:
            failures.append(event.key)
            raise RuntimeError("injected: the database went away")
        await real(self, event)

    monkeypatch.setattr(owner, handler, failing_once)
    app = world.issuer_app if service == "issuer" else world.verifier_app
    base = world.issuer_url if service == "issuer" else world.verifier_url
    headers = {"x-api-key": app.state.aries.runtime.webhook_key}
    thread_id = "t" * 400 + secrets.token_hex(8)
    if service == "issuer":
        topic, payload = "connections", {"connection_id": "c-" + secrets.token_hex(8), "state": "active",
                                         "thread_id": thread_id, "invitation_msg_id": "none-of-ours"}
    else:
        topic, payload = "present_proof_v2_0", {"pres_ex_id": "p-" + secrets.token_hex(8), "thread_id": thread_id,
                                                "state": "presentation-received"}
    url = f"{base}/v1/aries/webhooks/topic/{topic}/"
    first = httpx.post(url, json=payload, headers=headers)
    assert first.status_code == 500 and failures
    again = httpx.post(url, json=payload, headers=headers)
    assert again.status_code == 200 and again.json()["outcome"] == "processed", again.text
    assert httpx.post(url, json=payload, headers=headers).json()["outcome"] == "duplicate"


def test_malformed_inputs_get_4xx_not_5xx(world: World) -> None:
    checks = [
        httpx.post(f"{world.issuer_url}/v1/aries/invitations", headers=world.issuer_headers(), content=b"{not json"),
        httpx.post(f"{world.issuer_url}/v1/aries/invitations", headers=world.issuer_headers(),
                   json={"type": "no-such-type", "subject": {"identifier": CITIZEN}}),
        httpx.post(f"{world.issuer_url}/v1/aries/invitations", json={"type": "university-diploma",
                                                                    "subject": {"identifier": CITIZEN}}),
        httpx.get(f"{world.tenant_url}/v1/aries/i/{'x' * 300}"),
        httpx.get(f"{world.tenant_url}/v1/aries/status/nope/bbs"),
        httpx.get(f"{world.issuer_url}/v1/aries/invitations/nope", headers=world.issuer_headers()),
        httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=world.agency_headers(),
                   json={"template": "no-such-template"}),
        httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=world.agency_headers(), content=b"[]"),
        httpx.get(f"{world.verifier_url}/v1/aries/i/unknown"),
        httpx.get(f"{world.verifier_url}/v1/aries/requests/unknown/qr.svg", headers=world.agency_headers()),
    ]
    assert [c.status_code for c in checks] == [400, 400, 401, 404, 404, 404, 404, 400, 404, 404]
    published = httpx.get(f"{world.tenant_url}/v1/aries/issuer").json()
    assert published["issuer"] == world.tenant_url


def test_a_didcomm_request_is_not_served_or_answered_over_openid4vp(world: World) -> None:
    """An Aries transaction shares the table with OpenID4VP ones, not their wallet endpoints: no request
    object for it, no Authorization Response taken (its trust and claims were set up for DIDComm)."""
    created = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=world.agency_headers(),
                         json={"template": "job-application"})
    assert created.status_code == 201, created.text
    tx_id = created.json()["id"]
    answers = [httpx.get(f"{world.verifier_url}/v1/wallet/requests/{tx_id}"),
               httpx.post(f"{world.verifier_url}/v1/wallet/requests/{tx_id}", data={"wallet_nonce": "n"}),
               httpx.post(f"{world.verifier_url}/v1/wallet/responses/{tx_id}",
                          data={"vp_token": "{}", "state": "s"})]
    assert [(a.status_code, a.json().get("code")) for a in answers] == [(404, "verifier.unknown_transaction")] * 3
    result = httpx.get(created.json()["status_url"], headers=world.agency_headers()).json()
    assert result["status"] == "pending"


def test_desk_switches_to_the_aries_channel_and_shows_the_disclosed_claims(world: World) -> None:
    """The desk page in headless Chromium (Debian's, as tests/verifier/test_desk.py): Aries switch → QR
    of the short URL → the citizen's agent answers the invitation → the claims appear on the live view."""
    from playwright.sync_api import expect, sync_playwright

    from tests.verifier.test_desk import ARGS, CHROMIUM

    _, vc_id = _receive_diploma(world)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{world.verifier_url}/desk?lang=en")
            page.fill("#api-key", world.agency_key)
            page.click("#connect")
            expect(page.locator("#template")).to_contain_text("job-application")
            page.select_option("#template", "job-application")
            expect(page.locator("#channel")).to_contain_text("Aries wallet (DIDComm)")
            page.check("input[name=channel][value=aries]")
            page.click("#show")
            expect(page.locator("#qr svg")).to_be_visible()
            expect(page.locator("#status")).to_have_text("Waiting for the answer")
            short_url = page.get_attribute("#same-device", "href")
            assert short_url is not None and short_url.startswith(f"{world.verifier_url}/v1/aries/i/")
            invitation = httpx.get(short_url, headers={"Accept": "application/json"}).json()
            assert invitation["@type"].endswith("out-of-band/1.1/invitation")

            async def wallet_side() -> None:
                async with _wallet(world) as w:
                    before = {r["pres_ex_id"] for r in await w.pres_records()}
                    await w.receive_invitation(invitation)
                    records = await wait_for(w.pres_records, lambda rs: any(
                        r["state"] == "request-received" and r["pres_ex_id"] not in before for r in rs), timeout=30)
                    record = next(r for r in records if r["pres_ex_id"] not in before)
                    matching = await w.matching_credentials(record["pres_ex_id"])
                    chosen = [m["record_id"] for m in matching if m.get("id") == vc_id]
                    pd = record["by_format"]["pres_request"]["dif"]["presentation_definition"]
                    await w.send_presentation(record["pres_ex_id"], {pd["input_descriptors"][0]["id"]: chosen[:1]})

            # Playwright's sync API runs its own event loop in this thread: the wallet acts from another.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, wallet_side()).result(timeout=90)
            expect(page.locator("#status")).to_have_text("Verified", timeout=30_000)
            outcome = page.locator("#outcome")
            expect(outcome).to_contain_text("title")
            expect(outcome).to_contain_text("awardingBody")
            assert "personalIdentifier" not in outcome.inner_text()  # only what was asked is shown
            assert not [e for e in errors if "Content Security Policy" in e]

            # Without the switch (the default), the same page still shows the OpenID4VP QR code.
            page.click("#again")
            page.check("input[name=channel][value=openid4vp]")
            page.click("#show")
            expect(page.locator("#qr svg")).to_be_visible()
            assert (page.get_attribute("#same-device", "href") or "").startswith("openid4vp://")
            page.close()
        finally:
            browser.close()


# Last in the module: it kills the issuer's agent that the tests above share.
def test_agent_down_is_a_clear_error_and_nothing_is_recorded(world: World, tmp_path: Path) -> None:
    before = httpx.get(f"{world.issuer_url}/v1/credentials", headers=world.issuer_headers()).json()["total"]
    process = world.issuer_app.state.aries.runtime.process
    process.kill()  # an unexpected exit, as a crash would be
    answer = httpx.post(f"{world.issuer_url}/v1/aries/invitations", headers=world.issuer_headers(),
                        json={"type": "university-diploma", "subject": SUBJECT})
    assert answer.status_code == 503
    assert answer.json()["code"] in ("aries.agent_unavailable", "aries.agent_crashed")
    assert "Retry-After" in answer.headers
    after = httpx.get(f"{world.issuer_url}/v1/credentials", headers=world.issuer_headers()).json()["total"]
    assert after == before

