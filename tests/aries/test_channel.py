"""The Aries channel end to end with REAL ACA-Py 0.12 agents: one plays the issuer/verifier's agent,
the other the citizen's Aries wallet. Agents and the controller are shared by the module's tests."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from aries import channel
from aries.client import BBS, AdminClient
from aries.errors import AgentCrashed, AgentUnavailable, AriesError, VerificationFailed
from aries.jsonld import build_credential, status_entry
from aries.presentation import build_proof_request, check_presentation
from aries.runner import AgentConfig, AgentProcess
from aries.status import status_lookup
from credential_schemas import load_builtin_types
from tests.support.servers import free_port, serve

from .harness import Controller, Wallet

DIPLOMA = load_builtin_types()["university-diploma"]
CLAIMS = {
    "name": "Anna Puig i Soler", "birthDate": "1998-04-12", "personalIdentifier": "12345678Z",
    "title": "Grau en Dret", "qualificationCode": "2500001", "degreeType": "bachelor", "eqfLevel": 6,
    "awardingBody": "Universitat de Barcelona", "faculty": "Facultat de Dret", "completionDate": "2020-06-30",
    "awardingDate": "2020-09-01", "countryOfAward": "ES", "registrationNumber": "2020/000123",
}
DOMAIN = "verifier.cartera.example"


@dataclass
class World:
    controller: Controller
    base_url: str
    agent: AgentConfig
    wallet_agent: AgentConfig
    issuer_did: str
    other_did: str
    holder_did: str


def _start_all(configs: list[AgentConfig]) -> list[AgentProcess]:
    processes = [AgentProcess(c) for c in configs]
    errors: list[BaseException] = []

    def run(p: AgentProcess) -> None:
        try:
            p.start(timeout=60)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after every start attempt finished
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in processes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for p in processes:
            p.stop()
        raise errors[0]
    return processes


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("aries")
    controller = Controller([DIPLOMA], webhook_key=secrets.token_urlsafe(24))
    with serve(controller.app()) as base_url:
        controller.bind(base_url)
        contexts = root / "contexts.json"
        contexts.write_text(json.dumps(controller.contexts), encoding="utf-8")
        agent = AgentConfig(name="cartera", label="Cartera demo university", data_dir=root / "cartera",
                            inbound_port=free_port(), admin_port=free_port(), contexts_file=contexts,
                            webhook_url=f"{base_url}/webhooks", webhook_api_key=controller.webhook_key,
                            extra_args=["--auto-accept-requests", "--auto-respond-credential-request",
                                        "--auto-verify-presentation"])
        wallet = AgentConfig(name="citizen", label="Citizen wallet", data_dir=root / "citizen",
                             inbound_port=free_port(), admin_port=free_port(), contexts_file=contexts,
                             extra_args=["--auto-accept-invites", "--auto-store-credential"])
        processes = _start_all([agent, wallet])
        try:
            async def dids() -> tuple[str, str, str]:
                async with AdminClient(agent.admin_url, agent.admin_api_key) as a, \
                        AdminClient(wallet.admin_url, wallet.admin_api_key) as w:
                    issuer_did, other_did = await a.create_did_key(BBS), await a.create_did_key(BBS)
                    holder_did = await w.create_did_key(BBS)
                    await controller.publish_list(a, issuer_did, "1")
                    await controller.publish_list(a, other_did, "2")
                    return issuer_did, other_did, holder_did
            issuer_did, other_did, holder_did = asyncio.run(dids())
            yield World(controller, base_url, agent, wallet, issuer_did, other_did, holder_did)
        finally:
            for p in processes:
                p.stop()


async def _issue(world: World, a: AdminClient, wallet: Wallet, *, issuer_did: str, list_id: str,
                 index: int) -> tuple[str, str]:
    """Issue a diploma to the wallet over DIDComm; return (credential id, final issuer-side state)."""
    credential = build_credential(DIPLOMA, CLAIMS, issuer_did=issuer_did, issuer_base_url=world.base_url,
                                  proof_type=BBS,
                                  status=status_entry(world.controller.list_url(list_id), index))
    invitation = await channel.invite(a, alias="subject-ref-1")
    exchange: dict[str, channel.Exchange] = {}

    async def offer_thread() -> str:
        connection_id = await channel.connection_for(a, invitation)
        exchange["x"] = await channel.offer(a, connection_id, credential, BBS)
        return exchange["x"].thread_id

    holder_state = await wallet.accept_credential(invitation.invitation, offer_thread)
    assert holder_state == "done"
    return credential["id"], await channel.issued(a, exchange["x"])


async def _present(world: World, a: AdminClient, wallet: Wallet, credential_id: str, claims: list[str],
                   *, asked: list[str] | None = None) -> tuple[dict[str, Any], Any]:
    """Ask for ``claims`` (the wallet is sent ``asked`` when given) and return (record, our request)."""
    ours = build_proof_request(DIPLOMA, claims, domain=DOMAIN)
    sent = ours if asked is None else build_proof_request(DIPLOMA, asked, domain=DOMAIN, challenge=ours.challenge)
    # Another claim set under our definition's id and challenge (as if the agent's copy were altered):
    # only the disclosure tells the answer from the one we asked for.
    sent.presentation_definition["id"] = ours.presentation_definition["id"]
    exchange, invitation = await channel.request_proof(a, sent)
    await wallet.answer_proof(invitation.invitation, exchange.thread_id, credential_id)
    return await channel.presentation(a, exchange), ours


def _clients(world: World) -> tuple[AdminClient, Wallet]:
    a = AdminClient(world.agent.admin_url, world.agent.admin_api_key)
    w = AdminClient(world.wallet_agent.admin_url, world.wallet_agent.admin_api_key)
    return a, Wallet(w, world.holder_did)


def test_diploma_over_didcomm_then_bbs_proof_discloses_exactly_two_claims(world: World) -> None:
    async def scenario() -> None:
        a, wallet = _clients(world)
        async with a, wallet.client:
            credential_id, state = await _issue(world, a, wallet, issuer_did=world.issuer_did, list_id="1", index=3)
            assert state in ("done", "credential-issued")
            stored = await wallet.client.w3c_credentials()
            assert any(c["cred_value"]["id"] == credential_id for c in stored)

            record, request = await _present(world, a, wallet, credential_id, ["title", "awardingBody"])
            async with httpx.AsyncClient() as http:
                verified = await check_presentation(
                    record, request, trusted_issuers={world.issuer_did},
                    status_lookup=status_lookup(a, http, allowed_prefixes=(world.base_url,)))
            assert verified.claims == {"title": "Grau en Dret", "awardingBody": "Universitat de Barcelona"}
            assert verified.issuer == world.issuer_did and verified.holder == world.holder_did
            # The derived credential itself carries nothing else of the subject.
            vc = record["by_format"]["pres"]["dif"]["verifiableCredential"][0]
            assert set(vc["credentialSubject"]) == {"id", "title", "awardingBody"}
            assert vc["proof"]["type"] == "BbsBlsSignatureProof2020"
            # Webhooks arrived authenticated, one event per (thread, state) however often delivered.
            states = {(e.topic, e.state) for e in world.controller.events.values()}
            assert ("issue_credential_v2_0", "credential-issued") in states or \
                ("issue_credential_v2_0", "done") in states
            assert ("present_proof_v2_0", "done") in states

    asyncio.run(scenario())


def test_revoked_untrusted_and_other_claim_sets_are_refused(world: World) -> None:
    async def scenario() -> None:
        a, wallet = _clients(world)
        async with a, wallet.client, httpx.AsyncClient() as http:
            lookup = status_lookup(a, http, allowed_prefixes=(world.base_url,))
            # Revoked: bit 9 of list 1 set and the list re-signed.
            revoked_id, _ = await _issue(world, a, wallet, issuer_did=world.issuer_did, list_id="1", index=9)
            await world.controller.publish_list(a, world.issuer_did, "1", revoked=(9,))
            record, request = await _present(world, a, wallet, revoked_id, ["title", "awardingBody"])
            with pytest.raises(VerificationFailed) as revoked:
                await check_presentation(record, request, trusted_issuers={world.issuer_did}, status_lookup=lookup)
            assert revoked.value.code == "aries.revoked"

            # Untrusted issuer: a valid signature by a DID not on the trust list for this type.
            foreign_id, _ = await _issue(world, a, wallet, issuer_did=world.other_did, list_id="2", index=1)
            record, request = await _present(world, a, wallet, foreign_id, ["title", "awardingBody"])
            assert str(record.get("verified")).lower() == "true"  # ACA-Py alone would accept it
            with pytest.raises(VerificationFailed) as untrusted:
                await check_presentation(record, request, trusted_issuers={world.issuer_did}, status_lookup=lookup)
            assert untrusted.value.code == "aries.untrusted_issuer"

            # A proof disclosing another claim set than the one we asked for.
            # Its own credential: under xdist the module's other tests may run in another worker.
            valid_id, _ = await _issue(world, a, wallet, issuer_did=world.issuer_did, list_id="1", index=11)
            record, request = await _present(world, a, wallet, valid_id, ["title", "awardingBody"],
                                             asked=["title", "awardingBody", "name"])
            with pytest.raises(VerificationFailed) as other_set:
                await check_presentation(record, request, trusted_issuers={world.issuer_did}, status_lookup=lookup)
            assert other_set.value.code == "aries.disclosure_mismatch"

    asyncio.run(scenario())


def test_a_status_list_naming_other_contexts_never_reaches_the_agent(world: World) -> None:
    """Verifying a status list's signature makes the agent load every context it names, fetched with no
    timeout, following redirects, outside the outbound policy. A list whose ``@context`` is not its
    issuer's, or that embeds one, is refused (``aries.status_list_invalid``) before the agent sees it:
    the context host is never asked. The honest list still reads."""
    fetched: list[str] = []
    host = FastAPI()

    @host.get("/ctx")
    async def context() -> JSONResponse:
        fetched.append("ctx")
        return JSONResponse({"@context": {"@version": 1.1}}, media_type="application/ld+json")

    async def scenario(context_url: str) -> dict[str, str]:
        a = AdminClient(world.agent.admin_url, world.agent.admin_api_key)
        async with a, httpx.AsyncClient() as http:
            await world.controller.publish_list(a, world.issuer_did, "ctx-honest")
            honest = world.controller.status_lists["ctx-honest"]
            swapped = {**honest, "@context": [honest["@context"][0], context_url, honest["@context"][2]]}
            added = {**honest, "@context": [*honest["@context"], context_url]}
            embedded = {**honest, "credentialSubject": {**honest["credentialSubject"], "@context": context_url}}
            lookup = status_lookup(a, http, allowed_prefixes=(world.base_url,))
            codes = {}
            for name, document in (("honest", honest), ("swapped", swapped), ("added", added),
                                   ("embedded", embedded)):
                world.controller.status_lists["ctx-honest"] = document  # served at the honest list's URL
                entry = {"type": "BitstringStatusListEntry", "statusPurpose": "revocation", "statusListIndex": "5",
                         "statusListCredential": world.controller.list_url("ctx-honest")}
                try:
                    codes[name] = "revoked" if await lookup(entry, world.issuer_did) else "valid"
                except AriesError as exc:
                    codes[name] = exc.code
            return codes

    with serve(host) as host_url:
        codes = asyncio.run(scenario(f"{host_url}/ctx"))
    assert fetched == [], codes  # the agent never loaded that context
    assert codes == {"honest": "valid", "swapped": "aries.status_list_invalid",
                     "added": "aries.status_list_invalid", "embedded": "aries.status_list_invalid"}


def test_webhook_without_the_right_key_is_refused_and_not_recorded(world: World) -> None:
    before = dict(world.controller.events)
    body = json.dumps({"pres_ex_id": "x", "thread_id": "forged-thread", "state": "done", "verified": "true"})
    url = f"{world.base_url}/webhooks/topic/present_proof_v2_0/"
    assert httpx.post(url, content=body).status_code == 401
    assert httpx.post(url, content=body, headers={"x-api-key": "wrong"}).status_code == 401
    assert world.controller.events == before
    good = {"x-api-key": world.controller.webhook_key}
    assert httpx.post(url, content="{not json", headers=good).status_code == 400
    for _ in range(2):  # ACA-Py re-delivers: the same (thread, state) is one event
        assert httpx.post(url, content=body, headers=good).status_code == 200
    assert [k for k in world.controller.events if "forged-thread" in k] == ["present_proof_v2_0:forged-thread:done"]


def test_agent_down_is_a_clear_error_and_nothing_is_issued(world: World, tmp_path: Path) -> None:
    crashed: list[int] = []
    config = AgentConfig(name="doomed", data_dir=tmp_path / "doomed", inbound_port=free_port(),
                         admin_port=free_port())
    process = AgentProcess(config, on_crash=crashed.append).start()
    process.kill()  # an unexpected exit, as a crash would be

    async def scenario() -> None:
        async with AdminClient(config.admin_url, config.admin_api_key, timeout=2.0) as client:
            with pytest.raises(AgentUnavailable) as down:
                await client.create_invitation(alias="subject-ref-2")
            assert down.value.code == "aries.agent_unavailable"
            assert "not reachable" in down.value.detail

    issued_before = {k for k in world.controller.events if k.startswith("issue_credential")}
    asyncio.run(scenario())
    for _ in range(50):
        if crashed:
            break
        threading.Event().wait(0.05)
    assert crashed and crashed[0] != 0
    with pytest.raises(AgentCrashed) as dead:
        process.check()
    assert str(config.log_file) in dead.value.detail and config.log_file.exists()
    assert {k for k in world.controller.events if k.startswith("issue_credential")} == issued_before
