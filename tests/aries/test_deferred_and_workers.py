"""The issuer's Aries channel beyond the simple case, with real ACA-Py agents and real HTTP on loopback.

- A data source that answers *pending* (the sandbox's pending citizen) defers the DIDComm issuance: the
  connection and the exchange are kept in the database, the issuer polls the source on the deferred
  schedule, and the offer reaches the citizen's agent later, even across a restart of the issuer.
- An issuer run with TWO worker processes starts exactly one agent, shared by both workers; the
  agent's webhooks reach whichever worker the kernel hands them to, and issuance completes.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aries.client import ED25519, AdminClient
from aries.runner import REPO_ROOT, AgentConfig, AgentProcess
from credential_schemas import load_builtin_types
from issuer.app import create_app as create_issuer
from issuer.provisioning import provision_demo as provision_issuer
from issuer.settings import IssuerSettings
from sandbox.population import DEMO_EVERYTHING, DEMO_PENDING
from sandbox.viaoberta_service import ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from service_kit.settings import settings_env
from ssi import x509 as ssi_x509
from tests.support.servers import free_port, serve
from viaoberta.credentials import generate_identity

from .harness import wait_for

DIPLOMA = load_builtin_types()["university-diploma"]
PENDING_SUBJECT = {"identifier": DEMO_PENDING, "name": "Pere Serra Mas"}
READY_SUBJECT = {"identifier": DEMO_EVERYTHING, "name": "Montserrat Puig Ferrer"}


@dataclass
class Outside:
    """What stays up while issuers come and go: the simulated Via Oberta and the citizen's agent."""

    vo_url: str
    platform: Any
    requester: Any
    ca: tuple[Any, Any]
    wallet: AgentConfig
    root: Path


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outside]:
    root = tmp_path_factory.mktemp("aries-deferred")
    platform, requester = generate_identity("platform"), generate_identity("issuer-requester")
    # Pending answers turn ready on the second poll: the issuer must ask again on its schedule.
    vo = ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                registered_certs_pem=[requester.cert_pem], pending_polls=1)
    wallet = AgentConfig(name="citizen", label="Citizen wallet", data_dir=root / "citizen",
                         inbound_port=free_port(), admin_port=free_port(),
                         extra_args=["--auto-accept-invites", "--auto-store-credential"])
    with serve(create_viaoberta(vo)) as vo_url, AgentProcess(wallet):
        yield Outside(vo_url, platform, requester, ssi_x509.create_ca("Cartera test CA"), wallet, root)


def _issuer_settings(outside: Outside, name: str) -> IssuerSettings:
    port = free_port()
    return IssuerSettings(
        database_url=f"sqlite+aiosqlite:///{outside.root / name / 'issuer.db'}", port=port,
        public_url=f"http://127.0.0.1:{port}", dev_mode=True, master_key=secrets.token_hex(32),
        data_dir=outside.root / name, aries_enabled=True, aries_inbound_port=free_port(),
        aries_admin_port=free_port(), deferred_interval=1, aries_deferred_max_interval=1)


def _provision(outside: Outside, settings: IssuerSettings) -> dict[str, Any]:
    (outside.root / settings.data_dir.name).mkdir(exist_ok=True)
    ca_key, ca_cert = outside.ca
    provisioned = asyncio.run(provision_issuer(
        settings, ca_key=ca_key, ca_cert=ca_cert, viaoberta_url=outside.vo_url,
        viaoberta_platform_cert_pem=outside.platform.cert_pem, requester_key_pem=outside.requester.key_pem,
        requester_cert_pem=outside.requester.cert_pem))
    return dict(provisioned["tenants"]["uni-barcelona"])


def _invite(base: str, api_key: str, subject: dict[str, str]) -> dict[str, Any]:
    created = httpx.post(f"{base}/v1/aries/invitations", headers={"Authorization": f"Bearer {api_key}"},
                         json={"type": "university-diploma", "subject": subject}, timeout=30)
    assert created.status_code == 201, created.text
    return dict(created.json())


def _exchange(base: str, api_key: str, exchange_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{base}/v1/aries/invitations/{exchange_id}", headers={"Authorization": f"Bearer {api_key}"},
                       timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _wait_exchange(base: str, api_key: str, exchange_id: str, states: set[str], timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = _exchange(base, api_key, exchange_id)
            if found["state"] in states:
                return found
        except httpx.TransportError:
            found = {"state": "unreachable"}
        assert time.monotonic() < deadline, f"exchange stuck in {found['state']}"
        time.sleep(0.2)


async def _connect(wallet: AgentConfig, short_url: str) -> set[str]:
    """The citizen scans the QR code: its agent fetches the invitation and connects. Returns the known offers."""
    invitation = httpx.get(short_url, headers={"Accept": "application/json"}).json()
    async with AdminClient(wallet.admin_url, wallet.admin_api_key) as w:
        before = {r["cred_ex_record"]["cred_ex_id"] for r in await w.cred_records()}
        await w.receive_invitation(invitation)
    return before


async def _take_offer(wallet: AgentConfig, before: set[str], timeout: float = 60) -> dict[str, Any]:
    """Wait for a new offer, request it (Ed25519: the wallet's own did:key as holder) and return the VC."""
    async with AdminClient(wallet.admin_url, wallet.admin_api_key) as w:
        offered = await wait_for(w.cred_records, lambda rs: any(
            r["cred_ex_record"]["state"] == "offer-received" and r["cred_ex_record"]["cred_ex_id"] not in before
            for r in rs), timeout=timeout)
        cred_ex_id = next(r["cred_ex_record"]["cred_ex_id"] for r in offered
                          if r["cred_ex_record"]["cred_ex_id"] not in before)
        stored = {c["cred_value"]["id"] for c in await w.w3c_credentials()}
        await w.send_cred_request(cred_ex_id, await w.create_did_key(ED25519))
        done = await wait_for(lambda: w.cred_record(cred_ex_id),
                              lambda r: r["cred_ex_record"]["state"] in ("done", "abandoned"), timeout=30)
        assert done["cred_ex_record"]["state"] == "done"
        new = [c["cred_value"] for c in await w.w3c_credentials() if c["cred_value"]["id"] not in stored]
        assert len(new) == 1
        return dict(new[0])


def test_pending_source_defers_the_offer_which_arrives_later_even_after_a_restart(outside: Outside) -> None:
    settings = _issuer_settings(outside, "issuer-deferred")
    tenant = _provision(outside, settings)
    key = tenant["api_key"]
    with serve(create_issuer(settings, configure_logs=False), port=settings.port) as base:
        body = _invite(base, key, PENDING_SUBJECT)
        before = asyncio.run(_connect(outside.wallet, body["short_url"]))
        pending = _wait_exchange(base, key, body["exchange_id"], {"pending", "offered", "failed"})
        # Pending is no failure on this channel any more: the exchange waits for the source.
        assert pending["state"] == "pending" and pending["error"] is None and pending["credential_id"] is None
    # The issuer (and its agent) stopped while the source was still working: the deferral is in the database.
    with serve(create_issuer(settings, configure_logs=False), port=settings.port) as base:
        vc = asyncio.run(_take_offer(outside.wallet, before))
        assert vc["credentialSubject"]["personalIdentifier"] == DEMO_PENDING
        assert vc["credentialStatus"]["type"] == "BitstringStatusListEntry"
        issued = _wait_exchange(base, key, body["exchange_id"], {"issued", "failed"})
        assert issued["state"] == "issued", issued
        record = httpx.get(f"{base}/v1/credentials/{issued['credential_id']}",
                           headers={"Authorization": f"Bearer {key}"}).json()
        assert record["subject_identifier"] == DEMO_PENDING and record["login"]["channel"] == "aries"
        assert record["evidence"]


def test_a_restarted_agent_s_webhook_key_replaces_the_old_one(outside: Outside) -> None:
    """Each managed-agent start has a fresh webhook key; the old agent is gone, so its key must stop
    working: whoever learnt it (from that agent's environment, say) cannot post events afterwards."""
    settings = _issuer_settings(outside, "issuer-webhook-keys")
    _provision(outside, settings)
    url = "/v1/aries/webhooks/topic/issue_credential_v2_0/"
    body = json.dumps({"cred_ex_id": "x", "thread_id": "t", "state": "offer-sent"})
    keys = []
    for _ in range(2):
        app = create_issuer(settings, configure_logs=False)
        with serve(app, port=settings.port) as base:
            keys.append(app.state.aries.runtime.webhook_key)
            answers = [httpx.post(base + url, content=body, headers={"x-api-key": key}).status_code for key in keys]
    assert keys[0] != keys[1]
    assert answers == [401, 200]  # after the restart: the old key refused, the new one accepted


def _acapy_processes(home: Path) -> list[int]:
    """Pids of the aca-py processes whose ACAPY_HOME is ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"aca-py" not in (entry / "cmdline").read_bytes():
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"ACAPY_HOME={home}".encode() in environ:
            found.append(int(entry.name))
    return found


def _log_pid(log_path: Path, message: str, exchange_id: str) -> int:
    """The ``worker_pid`` of the JSON log line ``message`` about ``exchange_id``."""
    for line in log_path.read_text().splitlines():
        if line.startswith("{") and exchange_id in line:
            entry = json.loads(line)
            if entry.get("message") == message:
                return int(entry["worker_pid"])
    raise AssertionError(f"no log line {message!r} for {exchange_id}")


def test_two_workers_share_one_agent_and_either_handles_its_webhooks(outside: Outside) -> None:
    settings = _issuer_settings(outside, "issuer-workers")
    tenant = _provision(outside, settings)
    key = tenant["api_key"]
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    log_path = outside.root / "issuer-workers.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(  # noqa: S603 - our own argv
            [sys.executable, "-m", "service_kit.server", "issuer.app:create_app", "--port", str(settings.port),
             "--workers", "2", "--log-level", "warning"], cwd=REPO_ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    base = settings.public_url
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        # Each worker builds its app; both must be past start-up (the second attaches to the first's agent).
        wait_until = time.monotonic() + 30
        while "attached to the managed agent" not in log_path.read_text():
            assert time.monotonic() < wait_until, log_path.read_text()[-3000:]
            time.sleep(0.2)
        text = log_path.read_text()
        assert text.count("started by this worker") == 1 and text.count("attached to the managed agent") == 1
        home = settings.data_dir / "aries-issuer"
        assert len(_acapy_processes(home)) == 1

        # Invitations on fresh connections until both workers have made one (the kernel spreads the
        # connections between them), then each is taken up to issuance: the agent's webhooks reach
        # whichever worker, which finishes exchanges it may not have started.
        by_worker: dict[int, dict[str, Any]] = {}
        for _ in range(40):
            body = _invite(base, key, READY_SUBJECT)
            by_worker.setdefault(_log_pid(log_path, "aries invitation created", body["exchange_id"]), body)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "all invitations were made by one worker"
        for body in by_worker.values():
            before = asyncio.run(_connect(outside.wallet, body["short_url"]))
            vc = asyncio.run(_take_offer(outside.wallet, before))
            assert vc["credentialSubject"]["personalIdentifier"] == DEMO_EVERYTHING
            issued = _wait_exchange(base, key, body["exchange_id"], {"issued", "failed"})
            assert issued["state"] == "issued", issued
        assert len(_acapy_processes(home)) == 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    # The owner stopped the shared agent with the service.
    deadline = time.monotonic() + 10
    while _acapy_processes(settings.data_dir / "aries-issuer") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _acapy_processes(settings.data_dir / "aries-issuer")


def test_a_worker_starting_after_its_owner_was_killed_adopts_the_running_agent(tmp_path: Path) -> None:
    """SIGKILL of the owning worker leaves its agent running; the next worker adopts it, not a second one."""
    from aries.service import start_runtime

    master = secrets.token_bytes(32)
    kwargs: dict[str, Any] = {
        "name": "cartera-issuer", "label": "Cartera issuer", "admin_url": "", "admin_api_key": None,
        "webhook_key": None, "data_dir": tmp_path / "aries-issuer", "inbound_port": free_port(),
        "admin_port": free_port(), "endpoint": "", "webhook_url": "http://127.0.0.1:9/v1/aries/webhooks",
        "master_key": master}

    async def scenario() -> None:
        owner = await start_runtime(**kwargs)
        assert owner.role == "owner" and owner.process is not None
        pid = owner.process.pid
        did = await owner.client.create_did_key(ED25519)
        await owner.client.aclose()
        # What the kernel does when the owner dies: its lock goes, agent.json and the agent stay.
        assert owner.lock is not None and owner.lock._fd is not None
        os.close(owner.lock._fd)
        owner.lock._fd = None
        owner.process._stopping = True  # this test process is not the agent's watcher any more
        heir = await start_runtime(**kwargs)
        try:
            assert heir.role == "adopted" and heir.agent_pid == pid
            assert _acapy_processes(kwargs["data_dir"]) == [pid]
            assert did in {d["did"] for d in await heir.client.list_dids()}
        finally:
            await heir.stop()
        assert not _acapy_processes(kwargs["data_dir"])

    asyncio.run(scenario())


def test_an_abandoned_exchange_settles_issued_when_the_agent_had_issued_the_credential(outside: Outside) -> None:
    """ACA-Py abandons a record on a holder's problem report in any state, and delivers webhooks
    concurrently: an ``abandoned`` event whose record holds the issued credential (``cred_issue``)
    may come before, or instead of, ``credential-issued``. The holder has the credential then, so its
    issuance record (and the status entry that can revoke it) must stay; without ``cred_issue`` the
    offer was never fulfilled and the record is withdrawn."""
    settings = _issuer_settings(outside, "issuer-abandoned")
    tenant = _provision(outside, settings)
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    url = "/v1/aries/webhooks/topic/issue_credential_v2_0/"
    app = create_issuer(settings, configure_logs=False)
    outcomes = {}
    with serve(app, port=settings.port) as base:
        for holds_credential in (True, False):
            invitation = _invite(base, tenant["api_key"], READY_SUBJECT)
            asyncio.run(_connect(outside.wallet, invitation["short_url"]))
            offered = _wait_exchange(base, tenant["api_key"], invitation["exchange_id"], {"offered"})
            record_url = f"{base}/v1/credentials/{offered['credential_id']}"
            assert httpx.get(record_url, headers=headers).status_code == 200
            db = outside.root / settings.data_dir.name / "issuer.db"
            with sqlite3.connect(db) as conn:
                (cred_ex_id,) = conn.execute("SELECT cred_ex_id FROM aries_exchanges WHERE id = ?",
                                             (invitation["exchange_id"],)).fetchone()
            # What the agent posts: the record, abandoned, with or without the credential it issued.
            record = {"cred_ex_id": cred_ex_id, "thread_id": f"t-{cred_ex_id}", "state": "abandoned",
                      "error_msg": "issuance-abandoned", "by_format": {"cred_offer": {"ld_proof": {}}}}
            if holds_credential:
                record["by_format"]["cred_issue"] = {"ld_proof": {"credentialSubject": {}}}
            posted = httpx.post(base + url, content=json.dumps(record),
                                headers={"x-api-key": app.state.aries.runtime.webhook_key})
            assert posted.status_code == 200, posted.text
            settled = _wait_exchange(base, tenant["api_key"], invitation["exchange_id"], {"issued", "abandoned"})
            kept = httpx.get(record_url, headers=headers)
            outcomes[holds_credential] = (settled["state"], kept.status_code,
                                          kept.json().get("status") if kept.status_code == 200 else None)
    assert outcomes == {True: ("issued", 200, "valid"), False: ("abandoned", 404, None)}
