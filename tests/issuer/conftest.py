"""A running issuer (SQLite, and one on PostgreSQL) provisioned with the demo tenants, against the sandbox.

Session-scoped (per xdist worker): the development CA, the simulated Via Oberta, the development
identity provider and the issuer all run on loopback over real HTTP, as in ``make run``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509 as cx509

from issuer.app import create_app
from issuer.provisioning import provision_demo
from issuer.settings import IssuerSettings
from sandbox.idp_service import IdPSandboxConfig, RegisteredClient
from sandbox.idp_service import create_app as create_idp
from sandbox.population import DEMO_PENDING
from sandbox.viaoberta_service import ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from ssi import x509 as ssi_x509
from ssi.jose import Key
from tests.support.servers import free_port, serve
from viaoberta.credentials import generate_identity

ADMIN_KEY = "platform-admin-" + secrets.token_urlsafe(16)
IDP_SECRET = secrets.token_urlsafe(16)
TENANTS = ("uni-barcelona", "aoc-tax", "ajuntament-girona")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Sandbox:
    viaoberta_url: str
    idp_url: str
    ca_key: Key
    ca_cert: cx509.Certificate
    platform_cert_pem: bytes
    requester_key_pem: bytes
    requester_cert_pem: bytes
    issuer_port: int
    pg_issuer_port: int


@dataclass
class IssuerEnv:
    url: str
    settings: IssuerSettings
    api_keys: dict[str, str]
    sandbox: Sandbox
    provisioned: dict

    def issuer(self, slug: str) -> str:
        return f"{self.url}/t/{slug}"

    def headers(self, slug: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_keys[slug]}"}


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    ca_key, ca_cert = ssi_x509.create_ca("Cartera test CA")
    platform = generate_identity("platform")
    requester = generate_identity("issuer-requester")
    issuer_port, pg_issuer_port = free_port(), free_port()
    vo = ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                registered_certs_pem=[requester.cert_pem], pending_identifiers=frozenset({DEMO_PENDING}),
                                pending_polls=1)
    callbacks = tuple(f"http://127.0.0.1:{port}/t/{slug}/login/callback"
                      for slug in TENANTS for port in (issuer_port, pg_issuer_port))
    idp = IdPSandboxConfig(clients=[RegisteredClient("cartera-issuer", IDP_SECRET, callbacks)], allow_login_hint=True)
    with serve(create_viaoberta(vo)) as vo_url, serve(create_idp(idp)) as idp_url:
        yield Sandbox(vo_url, idp_url, ca_key, ca_cert, platform.cert_pem, requester.key_pem, requester.cert_pem,
                      issuer_port, pg_issuer_port)


def make_settings(sandbox: Sandbox, database_url: str, port: int, data_dir: Path, ca_dir: Path | None = None) -> IssuerSettings:
    extra = {}
    if ca_dir is not None:
        (ca_dir / "ca.key").write_bytes(sandbox.ca_key.private_pem())
        (ca_dir / "ca.pem").write_bytes(ssi_x509.cert_to_pem(sandbox.ca_cert))
        extra = {"ca_key_file": ca_dir / "ca.key", "ca_cert_file": ca_dir / "ca.pem"}
    return IssuerSettings(
        database_url=database_url, port=port, public_url=f"http://127.0.0.1:{port}", dev_mode=True,
        master_key=secrets.token_hex(32), admin_api_key=ADMIN_KEY, data_dir=data_dir,
        idp_authorize_url=f"{sandbox.idp_url}/o/oauth2/auth", idp_token_url=f"{sandbox.idp_url}/o/oauth2/token",
        idp_userinfo_url=f"{sandbox.idp_url}/serveis-rest/getUserInfo", idp_client_id="cartera-issuer",
        idp_client_secret=IDP_SECRET, idp_forward_login_hint=True, deferred_interval=1, **extra)


def start_issuer(sandbox: Sandbox, settings: IssuerSettings) -> Iterator[IssuerEnv]:
    provisioned = asyncio.run(provision_demo(
        settings, ca_key=sandbox.ca_key, ca_cert=sandbox.ca_cert, viaoberta_url=sandbox.viaoberta_url,
        viaoberta_platform_cert_pem=sandbox.platform_cert_pem, requester_key_pem=sandbox.requester_key_pem,
        requester_cert_pem=sandbox.requester_cert_pem))
    keys = {slug: t["api_key"] for slug, t in provisioned["tenants"].items()}
    with serve(create_app(settings, configure_logs=False), port=settings.port) as url:
        yield IssuerEnv(url, settings, keys, sandbox, provisioned)


@pytest.fixture(scope="session")
def issuer_env(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    folder = tmp_path_factory.mktemp("issuer")
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", sandbox.issuer_port, folder, folder)
    yield from start_issuer(sandbox, settings)


@pytest.fixture(scope="session")
def pg_issuer_env(sandbox: Sandbox, postgres_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    folder = tmp_path_factory.mktemp("issuer-pg")
    url = postgres_cluster.create_database()
    settings = make_settings(sandbox, url, sandbox.pg_issuer_port, folder)
    yield from start_issuer(sandbox, settings)
