"""Fault tests: real service processes on loopback, broken on purpose, and what the wallet then sees.

The issuer runs as ``python -m service_kit.server issuer.app:create_app`` (a process that can be
killed), provisioned by its own ``provision_demo`` exactly as ``cartera run`` does; its data source is
the simulated Via Oberta (``sandbox.viaoberta_service``) served from the test process, whose fault
injection (``ViaObertaSandboxConfig.fault``, read on every request) the tests switch on and off.
The wallet side is the wallet service's own OpenID4VCI client (:class:`wallet_api.receiving.IssuerSession`)
or plain HTTP where the exact answer on the wire is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from issuer.provisioning import provision_demo
from issuer.settings import IssuerSettings
from sandbox.population import generate_population
from sandbox.viaoberta_service import ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from service_kit.settings import settings_env
from ssi import x509 as ssi_x509
from tests.support.servers import free_port, serve
from viaoberta.credentials import generate_identity
from viaoberta.products import TAX
from wallet_api.context import WalletContext
from wallet_api.receiving import IssuerSession, fetch_issuer_metadata
from wallet_api.settings import WalletSettings

ROOT = Path(__file__).resolve().parents[2]
POPULATION = 60
TENANT = "aoc-tax"
TYPE_ID = "tax-compliance"


def tax_citizens(count: int, skip: int = 0) -> list[tuple[str, str]]:
    """(identifier, full name) of synthetic citizens with a positive tax record answered at once."""
    found = [(c.identifier, c.full_name) for c in generate_population(size=POPULATION).citizens
             if c.tax is not None and c.tax.status == "POSITIVO" and TAX.codigo_certificado not in c.pending]
    assert len(found) >= skip + count, "the synthetic population is too small for these tests"
    return found[skip:skip + count]


@dataclass
class IssuerProcess:
    """The issuer as its own OS process, restartable on the same port and database."""

    settings: IssuerSettings
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return self.settings.public_url

    def start(self, timeout: float = 180.0) -> None:
        env = {**os.environ, **settings_env(self.settings)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - the service's own command line
                [sys.executable, "-m", "service_kit.server", "issuer.app:create_app", "--host", "127.0.0.1",
                 "--port", str(self.settings.port), "--log-level", "warning"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the issuer exited: {self.log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the issuer did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no rollback handler, no response written."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class CountingApp:
    """An ASGI wrapper counting the POSTs an app received (the queries reaching the data source)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.posts = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.posts += 1
        await self.app(scope, receive, send)


@dataclass
class IssuerStack:
    """An issuer process, its simulated Via Oberta (switchable faults) and the tenant's API key."""

    issuer: IssuerProcess
    viaoberta: ViaObertaSandboxConfig
    api_key: str
    tenant_url: str
    database_url: str
    folder: Path
    source: CountingApp

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def offer(self, identifier: str, name: str) -> dict[str, Any]:
        """A pre-authorized offer (by value) for ``identifier``, with its transaction code."""
        response = httpx.post(f"{self.issuer.url}/v1/offers", headers=self.admin, timeout=30, json={
            "credential_configuration_ids": [TYPE_ID], "subject": {"identifier": identifier, "name": name},
            "tx_code": True, "by_reference": False})
        assert response.status_code == 201, response.text
        return response.json()


@contextlib.contextmanager
def issuer_stack(folder: Path, database_url: str, *, source_timeout: float = 3.0,
                 latency_seconds: float = 1.0) -> Iterator[IssuerStack]:
    """Provision the demo issuer on ``database_url`` against a simulated Via Oberta and start it."""
    platform, requester = generate_identity("platform"), generate_identity("issuer")
    ca_key, ca = ssi_x509.create_ca("Cartera fault-test CA")
    vo_config = ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                       registered_certs_pem=[requester.cert_pem], latency_seconds=latency_seconds,
                                       population_size=POPULATION, allow_fault_header=False)
    port = free_port()
    settings = IssuerSettings(
        database_url=database_url, public_url=f"http://127.0.0.1:{port}", port=port, dev_mode=True,
        master_key="2" * 64, data_dir=folder, log_level="warning", source_timeout=source_timeout,
        rate_limits_enabled=False)
    source = CountingApp(create_viaoberta(vo_config))
    with serve(source) as vo_url:
        info = asyncio.run(provision_demo(settings, ca_key=ca_key, ca_cert=ca, viaoberta_url=vo_url,
                                          viaoberta_platform_cert_pem=platform.cert_pem,
                                          requester_key_pem=requester.key_pem,
                                          requester_cert_pem=requester.cert_pem))
        tenant = info["tenants"][TENANT]
        process = IssuerProcess(settings, folder / "issuer.log")
        process.start()
        try:
            yield IssuerStack(process, vo_config, tenant["api_key"], tenant["issuer_url"], database_url, folder,
                              source)
        finally:
            process.stop()


def wallet_context(folder: Path) -> WalletContext:
    """The wallet service's context as far as its OpenID4VCI client needs one (HTTP, dev mode)."""
    settings = WalletSettings(database_url=f"sqlite+aiosqlite:///{folder / 'wallet.db'}", dev_mode=True,
                              master_key="3" * 64, data_dir=folder, public_url="http://127.0.0.1:9",
                              idp_url="http://127.0.0.1:9", idp_client_id="unused", log_level="warning")
    return WalletContext(settings=settings, db=None, vault=None)  # type: ignore[arg-type]


async def wallet_session(ctx: WalletContext, client: httpx.AsyncClient, offer: dict[str, Any]) -> IssuerSession:
    """The wallet's session with the issuer, after redeeming the pre-authorized code of ``offer``."""
    document = offer["offer"]
    metadata, as_meta = await fetch_issuer_metadata(ctx, client, document["credential_issuer"])
    session = IssuerSession(ctx, client, metadata, as_meta)
    grant = document["grants"]["urn:ietf:params:oauth:grant-type:pre-authorized_code"]
    await session.token({"grant_type": "urn:ietf:params:oauth:grant-type:pre-authorized_code",
                         "pre-authorized_code": grant["pre-authorized_code"], "tx_code": offer["tx_code"]})
    return session


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path
