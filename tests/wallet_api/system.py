"""The whole embedded system for end-to-end wallet tests: simulated Via Oberta, sandbox IdP, the real
issuer and verifier services (provisioned with their demo tenants), and a wallet trusting the dev CA."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from issuer.app import create_app as create_issuer
from issuer.provisioning import provision_demo as provision_issuer
from issuer.settings import IssuerSettings
from sandbox.idp_service import IdPSandboxConfig, RegisteredClient
from sandbox.idp_service import create_app as create_idp
from sandbox.population import DEMO_PENDING
from sandbox.viaoberta_service import ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from service_kit.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, WebhookSignatureError, verify_webhook
from ssi import x509 as ssi_x509
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import IDP_SECRET, bearer, wallet_settings
from verifier.app import create_app as create_verifier
from verifier.provisioning import provision_demo as provision_verifier
from verifier.settings import VerifierSettings
from viaoberta.credentials import generate_identity
from wallet_api.app import create_app as create_wallet

MASTER = "1" * 64
POPULATION_SIZE = 50


def fresh_citizens(count: int) -> list[str]:
    """Identifiers of synthetic citizens (not the fixed demo ones) with tax, working-life and padró
    records, for tests that need a wallet nobody else uses."""
    from sandbox.population import generate_population

    population = generate_population(size=POPULATION_SIZE)
    found = [c.identifier for c in population.citizens[5:]
             if c.tax is not None and c.working_life is not None and c.padro is not None and not c.pending]
    assert len(found) >= count, "the synthetic population is too small for these tests"
    return found[:count]


WEBHOOK_SECRET = "wallet-alert-webhook-secret"


@dataclass
class WebhookReceiver:
    """The app's push backend stand-in: checks each delivery's signature, refuses the first attempt of
    every event (503) so that retries are exercised, and records what it accepted."""

    url: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0


def webhook_app(receiver: WebhookReceiver) -> Any:
    app = FastAPI()

    @app.post("/alerts")
    async def alerts(request: Request) -> Response:
        body = await request.body()
        try:
            verify_webhook(WEBHOOK_SECRET, body, request.headers.get(SIGNATURE_HEADER))
        except WebhookSignatureError:
            receiver.bad_signatures += 1
            return Response(status_code=401)
        event_id = request.headers.get(EVENT_ID_HEADER, "")
        receiver.attempts[event_id] = receiver.attempts.get(event_id, 0) + 1
        if receiver.attempts[event_id] == 1:
            return Response(status_code=503)
        receiver.accepted.append({"event_id": event_id, **json.loads(body)})
        return Response(status_code=204)

    return app


@dataclass
class System:
    wallet: str
    issuer: str
    verifier: str
    idp: str
    tenants: dict[str, Any]
    agencies: dict[str, Any]
    wallet_db: Path
    wallet_app: Any
    webhook: WebhookReceiver

    def issuer_headers(self, slug: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tenants[slug]['api_key']}"}

    def verifier_headers(self, slug: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agencies[slug]['api_key']}"}


@contextlib.contextmanager
def running_system(tmp: Path, *, wallet_db_url: str | None = None, **wallet: Any) -> Iterator[System]:
    """The whole system on ``tmp``; ``wallet``: more of the wallet's settings (``background_interval=0``:
    no background sweep, so nothing but the test's own requests touches the wallet's rows)."""
    platform, requester = generate_identity("platform"), generate_identity("issuer")
    ca_key, ca = ssi_x509.create_ca("Cartera test development CA")
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(ssi_x509.cert_to_pem(ca))
    ports = {name: free_port() for name in ("issuer", "verifier", "wallet", "idp")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    idp_config = IdPSandboxConfig(clients=[
        RegisteredClient("cartera-wallet", IDP_SECRET, (f"{urls['wallet']}/v1/auth/callback",)),
        RegisteredClient("cartera-issuer", "issuer-secret", tuple(
            f"{urls['issuer']}/t/{slug}/login/callback" for slug in ("uni-barcelona", "aoc-tax", "ajuntament-girona")))],
        allow_login_hint=True, population_size=POPULATION_SIZE)
    vo_config = ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                       registered_certs_pem=[requester.cert_pem], latency_seconds=0.0,
                                       population_size=POPULATION_SIZE, pending_identifiers=frozenset({DEMO_PENDING}),
                                       pending_polls=1)
    issuer_settings = IssuerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'issuer.db'}", public_url=urls["issuer"], port=ports["issuer"],
        dev_mode=True, master_key=MASTER, data_dir=tmp / "issuer", log_level="warning",
        idp_authorize_url=f"{urls['idp']}/o/oauth2/auth", idp_token_url=f"{urls['idp']}/o/oauth2/token",
        idp_userinfo_url=f"{urls['idp']}/serveis-rest/getUserInfo", idp_client_secret="issuer-secret",
        idp_forward_login_hint=True,
        # The wallet is the issuer's registered client (as `cartera run` registers it).
        oauth_clients={"cartera-wallet": {"redirect_uris": [f"{urls['wallet']}/v1/issuance/callback"]}})
    verifier_settings = VerifierSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'verifier.db'}", public_url=urls["verifier"],
        port=ports["verifier"], dev_mode=True, master_key=MASTER, data_dir=tmp / "verifier",
        issuer_anchors_file=ca_file, worker_interval=0.2, log_level="warning")
    receiver = WebhookReceiver()
    with serve(create_viaoberta(vo_config), ready_path="/healthz") as vo_url, \
            serve(create_idp(idp_config), port=ports["idp"]), serve(webhook_app(receiver)) as webhook_url:
        receiver.url = f"{webhook_url}/alerts"
        issued = asyncio.run(provision_issuer(
            issuer_settings, ca_key=ca_key, ca_cert=ca, viaoberta_url=vo_url,
            viaoberta_platform_cert_pem=platform.cert_pem, requester_key_pem=requester.key_pem,
            requester_cert_pem=requester.cert_pem))
        vcts = {}
        with serve(create_issuer(issuer_settings), port=ports["issuer"]) as issuer_url:
            for slug, tenant in issued["tenants"].items():
                for type_id in tenant["types"]:
                    meta = httpx.get(tenant["metadata_url"]).json()
                    vcts[type_id] = meta["credential_configurations_supported"][type_id]["vct"]
            verified = asyncio.run(provision_verifier(
                verifier_settings, ca_key=ca_key, ca_cert=ca, trusted_issuer_anchors=[ca],
                vcts={"tax": vcts["tax-compliance"], "diploma": vcts["university-diploma"], "padro": vcts["padro"]}))
            catalogue = [{"credential_issuer": t["issuer_url"], "name": t["name"]} for t in issued["tenants"].values()]
            settings = wallet_settings(tmp, ports["wallet"], f"{urls['idp']}", **{
                "issuer_anchor_files": [ca_file], "rp_anchor_files": [ca_file], "issuer_catalogue": catalogue,
                "background_interval": 0.3, "webhook_url": receiver.url, "webhook_secret": WEBHOOK_SECRET,
                "webhook_interval": 0.3, **({"database_url": wallet_db_url} if wallet_db_url else {}), **wallet})
            wallet_app = create_wallet(settings)
            with serve(create_verifier(verifier_settings), port=ports["verifier"]) as verifier_url, \
                    serve(wallet_app, port=ports["wallet"]) as wallet_url:
                yield System(wallet_url, issuer_url, verifier_url, urls["idp"], issued["tenants"],
                             verified["agencies"], tmp / "wallet.db", wallet_app, receiver)


@contextlib.contextmanager
def running_pg_system(cluster: Any, tmp: Path) -> Iterator[System]:
    """:func:`running_system` on a database of its own in the test PostgreSQL ``cluster``
    (tests/support/postgres.py), dropped afterwards."""
    url = cluster.create_database()
    try:
        with running_system(tmp, wallet_db_url=url) as running:
            yield running
    finally:
        cluster.drop_database(url)


def open_copies(system: System, credential_id: str) -> list[dict[str, Any]]:
    """The decrypted copies of one credential, read with the wallet's own vault code on a fresh engine
    (the test's only way to see holder keys): ``{"id", "uses", "token", "holder_jwk"}``."""
    from sqlalchemy import select

    from service_kit.db import Database
    from wallet_api.context import master_box
    from wallet_api.models import Credential, Wallet
    from wallet_api.store import load_credentials
    from wallet_api.vault import Vault

    settings = system.wallet_app.state.wallet.settings

    async def read() -> list[dict[str, Any]]:
        db = Database(settings.database_url)
        try:
            async with db.read_session() as session:
                row = await session.get(Credential, credential_id)
                assert row is not None
                wallet = (await session.execute(select(Wallet).where(Wallet.id == row.wallet_id))).scalar_one()
                key = Vault(master_box(settings)).data_key(wallet)
                cred = (await load_credentials(session, key, credential_id=credential_id))[0]
                return [{"id": c.id, "uses": c.uses, "token": c.token, "holder_jwk": c.holder_key.public_jwk()}
                        for c in cred.copies]
        finally:
            await db.dispose()

    return asyncio.run(read())


def query_sql(system: System, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of one SQL query on the wallet's SQLite file."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(system.wallet_db)) as connection:
        return connection.execute(statement, params).fetchall()


def execute_sql(system: System, statement: str, *params: Any) -> None:
    """Run one SQL statement on the wallet's SQLite file (to make time pass for a scheduled job)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(system.wallet_db)) as connection:
        connection.execute(statement, params)
        connection.commit()


def agency_request(system: System, template: str = "grant-application",
                   agency: str = "ajuntament-barcelona") -> dict[str, Any]:
    """A presentation request the agency creates from one of its templates (the verifier's answer)."""
    r = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers(agency),
                   json={"template": template})
    assert r.status_code in (200, 201), r.text
    return r.json()


def open_presentation(system: System, tokens: dict[str, str], request: dict[str, Any],
                      language: str | None = None) -> dict[str, Any]:
    """The wallet's preview of a request the citizen scanned (``POST /v1/presentations``)."""
    headers = {**bearer(tokens), **({"Accept-Language": language} if language else {})}
    r = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]}, headers=headers,
                   timeout=30)
    assert r.status_code == 201, r.text
    return r.json()
