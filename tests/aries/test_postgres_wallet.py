"""An ACA-Py agent whose askar wallet lives on PostgreSQL (the test cluster), run for real.

The issuer's agent keeps its wallet on the throwaway cluster (``postgres_storage``, as
``AgentConfig.postgres_url`` configures it); a second agent with a SQLite wallet plays the citizen. A
diploma is issued end to end over DIDComm; the issuer's agent is then stopped and started again on the
same database, and its DID (with its private key: it still signs), its connection and its
issue-credential record are all still there.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from aries import channel
from aries.client import ED25519, AdminClient
from aries.jsonld import build_credential
from aries.runner import AgentConfig, AgentProcess
from tests.support.postgres import PostgresCluster
from tests.support.servers import free_port, serve

from .harness import Controller, Wallet
from .test_channel import CLAIMS, DIPLOMA, _start_all


@pytest.fixture
def controller() -> Iterator[Controller]:
    ctl = Controller([DIPLOMA], webhook_key=secrets.token_urlsafe(24))
    with serve(ctl.app()) as base_url:
        ctl.bind(base_url)
        yield ctl


def test_agent_wallet_on_postgresql_issues_and_survives_a_restart(
        postgres_cluster: PostgresCluster, controller: Controller, tmp_path: Path) -> None:
    contexts = tmp_path / "contexts.json"
    contexts.write_text(json.dumps(controller.contexts), encoding="utf-8")
    # A wallet name of its own: askar creates a database of that name on the cluster.
    name = f"issuer_{secrets.token_hex(4)}"
    issuer = AgentConfig(name=name, label="Cartera issuer on PostgreSQL", data_dir=tmp_path / "issuer",
                         inbound_port=free_port(), admin_port=free_port(), contexts_file=contexts,
                         postgres_url=postgres_cluster.url(),
                         extra_args=["--auto-accept-requests", "--auto-respond-credential-request"])
    citizen = AgentConfig(name="citizen", label="Citizen wallet", data_dir=tmp_path / "citizen",
                          inbound_port=free_port(), admin_port=free_port(), contexts_file=contexts,
                          extra_args=["--auto-accept-invites", "--auto-store-credential"])
    issuer_process, citizen_process = _start_all([issuer, citizen])
    try:
        async def issue() -> tuple[str, str, str, str]:
            async with AdminClient(issuer.admin_url, issuer.admin_api_key) as a, \
                    AdminClient(citizen.admin_url, citizen.admin_api_key) as w:
                issuer_did = await a.create_did_key(ED25519)
                credential = build_credential(DIPLOMA, CLAIMS, issuer_did=issuer_did,
                                              issuer_base_url=controller.base_url, proof_type=ED25519)
                invitation = await channel.invite(a, alias="pg-subject")
                sent: dict[str, channel.Exchange] = {}

                async def offer_thread() -> str:
                    connection_id = await channel.connection_for(a, invitation)
                    sent["x"] = await channel.offer(a, connection_id, credential, ED25519)
                    sent["connection"] = channel.Exchange(connection_id, "")
                    return sent["x"].thread_id

                holder_state = await Wallet(w, await w.create_did_key(ED25519)).accept_credential(
                    invitation.invitation, offer_thread)
                assert holder_state == "done"
                assert await channel.issued(a, sent["x"]) in ("done", "credential-issued")
                held = [c["cred_value"] for c in await w.w3c_credentials()]
                assert [c["id"] for c in held] == [credential["id"]]
                assert held[0]["credentialSubject"]["title"] == CLAIMS["title"]
                return issuer_did, sent["connection"].record_id, sent["x"].record_id, credential["id"]

        issuer_did, connection_id, cred_ex_id, vc_id = asyncio.run(issue())

        # The wallet is on PostgreSQL, not in the agent's data directory.
        assert not list(issuer.data_dir.rglob("sqlite.db"))
        issuer_process.stop()
        restarted = AgentProcess(issuer).start(timeout=60)
        try:
            async def after_restart() -> None:
                async with AdminClient(issuer.admin_url, issuer.admin_api_key) as a:
                    assert issuer_did in {d["did"] for d in await a.list_dids()}
                    connection = await a.connection(connection_id)
                    assert connection["state"] in ("active", "completed")
                    record = await a.cred_record(cred_ex_id)
                    assert record["cred_ex_record"]["state"] in ("done", "credential-issued")
                    # The issuer's private key survived too: the same DID still signs.
                    signed = await a.request("POST", "/vc/credentials/issue", json={
                        "credential": build_credential(DIPLOMA, CLAIMS, issuer_did=issuer_did,
                                                       issuer_base_url=controller.base_url, proof_type=ED25519,
                                                       credential_id=f"{vc_id}-again"),
                        "options": {"proofType": ED25519}})
                    assert signed["verifiableCredential"]["proof"]["verificationMethod"].startswith(issuer_did)

            asyncio.run(after_restart())
        finally:
            restarted.stop()
    finally:
        issuer_process.stop()
        citizen_process.stop()
