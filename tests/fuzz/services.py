"""Each Cartera service running for a fuzz run: real apps under uvicorn on loopback, real SQLite files.

Every context manager yields a :class:`Target`: the base URL, the headers that authenticate the
fuzzer (a tenant's or agency's API key, a citizen's wallet session) and the operations left out
(with the reason). Each starts only what its service needs, so the per-service tests spread over
pytest-xdist workers without starting the whole system in each.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpcore

from issuer.app import create_app as create_issuer
from issuer.provisioning import provision_demo as provision_issuer
from issuer.settings import IssuerSettings
from sandbox.idp_service import IdPSandboxConfig, RegisteredClient
from sandbox.idp_service import create_app as create_idp
from sandbox.viaoberta_service import ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from ssi import x509 as ssi_x509
from ssi.urls import is_loopback_host
from tests.fuzz.engine import Link
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import IDP_SECRET, login, wallet_settings
from verifier.app import create_app as create_verifier
from verifier.provisioning import provision_demo as provision_verifier
from verifier.settings import VerifierSettings
from viaoberta.credentials import generate_identity
from wallet_api.app import create_app as create_wallet

MASTER = "2" * 64
ISSUER_TENANTS = ("uni-barcelona", "aoc-tax", "ajuntament-girona")


@dataclass
class Target:
    """A running service to fuzz."""

    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    # Regexes of paths left out of this run, e.g. the call that ends the fuzzer's own session.
    exclude_paths: tuple[str, ...] = ()
    # 5xx statuses that are the protocol here, not a failure (SOAP 1.1 faults are HTTP 500).
    protocol_server_errors: tuple[str, ...] = ()
    # (operation, check) pairs known and accepted, each with its reason.
    accepted: dict[tuple[str, str], str] = field(default_factory=dict)
    # Links for the stateful phase (long profile).
    links: tuple[Link, ...] = ()


def _links_from(source: tuple[str, str, str], parameter: str, expression: str, targets: list[tuple[str, str]],
                **constants: str) -> tuple[Link, ...]:
    return tuple(Link(f"{method}{path}".replace("/", "_").replace("{", "").replace("}", ""), source, (path, method),
                      ((parameter, expression), *constants.items())) for path, method in targets)


ISSUER_LINKS = (
    *_links_from(("/v1/types", "post", "201"), "type_id", "$response.body#/id",
                 [("/v1/types/{type_id}", "get"), ("/v1/types/{type_id}/source", "put")]),
    *_links_from(("/v1/offers", "post", "201"), "credential_id", "$response.body#/credential_ids/0",
                 [("/v1/credentials/{credential_id}", "get"), ("/v1/credentials/{credential_id}/{action}", "post")]),
    *_links_from(("/v1/offers", "post", "201"), "offer_id", "$response.body#/offer_id",
                 [("/t/{slug}/offers/{offer_id}", "get")], slug="uni-barcelona"),
)
VERIFIER_LINKS = (
    *_links_from(("/v1/requests", "post", "201"), "tx_id", "$response.body#/id",
                 [("/v1/requests/{tx_id}", "get"), ("/v1/requests/{tx_id}/qr.png", "get"),
                  ("/v1/requests/{tx_id}/qr.svg", "get"), ("/v1/wallet/requests/{tx_id}", "get"),
                  ("/v1/wallet/requests/{tx_id}", "post"), ("/v1/wallet/responses/{tx_id}", "post"),
                  ("/v1/requests/{tx_id}/exchange", "post")]),
    *_links_from(("/v1/templates", "post", "201"), "name", "$response.body#/name",
                 [("/v1/templates/{name}", "get"), ("/v1/templates/{name}", "put"), ("/v1/templates/{name}", "delete")]),
)


# The fuzzer writes URLs into bodies (webhook targets, offer URIs, data source endpoints) and the
# services then call them. Nothing may leave the machine: in the test process every httpx connection
# to a host that is not loopback is refused, as an unreachable host would be.
class LoopbackOnly(httpcore.ConnectError):
    """A connection to a host outside loopback, refused during fuzzing."""


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Refuse, in this process, every httpx/httpcore TCP connection to a host that is not loopback."""
    from httpcore._backends.anyio import AnyIOBackend
    from httpcore._backends.auto import AutoBackend
    from httpcore._backends.sync import SyncBackend

    originals = {cls: cls.connect_tcp for cls in (AnyIOBackend, AutoBackend, SyncBackend)}

    def guard(original):
        if asyncio.iscoroutinefunction(original):
            async def connect_async(self, host, port, *args, **kwargs):
                if not is_loopback_host(host):
                    raise LoopbackOnly(f"{host} is not loopback (fuzzing keeps traffic on the machine)")
                return await original(self, host, port, *args, **kwargs)
            return connect_async

        def connect(self, host, port, *args, **kwargs):
            if not is_loopback_host(host):
                raise LoopbackOnly(f"{host} is not loopback (fuzzing keeps traffic on the machine)")
            return original(self, host, port, *args, **kwargs)
        return connect

    for cls, original in originals.items():
        cls.connect_tcp = guard(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.connect_tcp = original


@contextlib.contextmanager
def idp_target(_tmp: Path | None = None) -> Iterator[Target]:
    """The development identity provider (VÀLid-compatible), with one registered client."""
    config = IdPSandboxConfig(clients=[RegisteredClient("cartera-wallet", IDP_SECRET,
                                                        ("http://127.0.0.1:9/v1/auth/callback",))],
                              allow_login_hint=True, population_size=20)
    with serve(create_idp(config)) as url:
        yield Target("idp", url)


@contextlib.contextmanager
def viaoberta_target(_tmp: Path | None = None) -> Iterator[Target]:
    """The simulated Via Oberta (SOAP over HTTP)."""
    platform, requester = generate_identity("platform"), generate_identity("requester")
    config = ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                    registered_certs_pem=[requester.cert_pem], latency_seconds=0.0,
                                    population_size=20)
    with serve(create_viaoberta(config)) as url:
        yield Target("viaoberta", url, protocol_server_errors=("500",))


@contextlib.contextmanager
def issuer_target(tmp: Path) -> Iterator[Target]:
    """The issuer with its three demo tenants, on SQLite, against the sandbox Via Oberta and IdP;
    authenticated as the university's admin API key."""
    platform, requester = generate_identity("platform"), generate_identity("issuer")
    ca_key, ca = ssi_x509.create_ca("Cartera fuzz development CA")
    port, idp_port = free_port(), free_port()
    idp_config = IdPSandboxConfig(clients=[RegisteredClient("cartera-issuer", "issuer-secret", tuple(
        f"http://127.0.0.1:{port}/t/{slug}/login/callback" for slug in ISSUER_TENANTS))],
        allow_login_hint=True, population_size=20)
    vo_config = ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                       registered_certs_pem=[requester.cert_pem], latency_seconds=0.0,
                                       population_size=20)
    idp = f"http://127.0.0.1:{idp_port}"
    settings = IssuerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'issuer.db'}", public_url=f"http://127.0.0.1:{port}", port=port,
        dev_mode=True, master_key=MASTER, data_dir=tmp / "issuer", log_level="warning",
        admin_api_key="platform-" + secrets.token_urlsafe(12),
        idp_authorize_url=f"{idp}/o/oauth2/auth", idp_token_url=f"{idp}/o/oauth2/token",
        idp_userinfo_url=f"{idp}/serveis-rest/getUserInfo", idp_client_secret="issuer-secret")
    with serve(create_viaoberta(vo_config)) as vo_url, serve(create_idp(idp_config), port=idp_port):
        provisioned = asyncio.run(provision_issuer(
            settings, ca_key=ca_key, ca_cert=ca, viaoberta_url=vo_url, viaoberta_platform_cert_pem=platform.cert_pem,
            requester_key_pem=requester.key_pem, requester_cert_pem=requester.cert_pem))
        key = provisioned["tenants"]["uni-barcelona"]["api_key"]
        with serve(create_issuer(settings, configure_logs=False), port=port) as url:
            yield Target("issuer", url, {"Authorization": f"Bearer {key}"}, links=ISSUER_LINKS)


@contextlib.contextmanager
def verifier_target(tmp: Path) -> Iterator[Target]:
    """The verifier with its two demo agencies on SQLite; authenticated as one agency's API key."""
    ca_key, ca = ssi_x509.create_ca("Cartera fuzz development CA")
    port = free_port()
    settings = VerifierSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'verifier.db'}", public_url=f"http://127.0.0.1:{port}",
        port=port, dev_mode=True, master_key=MASTER, data_dir=tmp / "verifier", worker_interval=0.5,
        log_level="warning")
    provisioned = asyncio.run(provision_verifier(settings, ca_key=ca_key, ca_cert=ca, trusted_issuer_anchors=[ca]))
    key = provisioned["agencies"]["ajuntament-barcelona"]["api_key"]
    with serve(create_verifier(settings), port=port) as url:
        yield Target("verifier", url, {"Authorization": f"Bearer {key}"}, links=VERIFIER_LINKS)


@contextlib.contextmanager
def wallet_target(tmp: Path) -> Iterator[Target]:
    """The wallet API on SQLite, with a citizen logged in through the sandbox IdP; the fuzzer uses
    that session (logging out would end it, so the logout calls are left out)."""
    port = free_port()
    idp_config = IdPSandboxConfig(clients=[RegisteredClient("cartera-wallet", IDP_SECRET, (
        f"http://127.0.0.1:{port}/v1/auth/callback",))], allow_login_hint=True, population_size=20)
    with serve(create_idp(idp_config)) as idp_url:
        settings = wallet_settings(tmp, port, idp_url)
        with serve(create_wallet(settings), port=port) as url:
            tokens = login(url, "12345678Z")
            yield Target("wallet", url, {"Authorization": f"Bearer {tokens['access_token']}"},
                         # the logout calls would end the fuzzer's session; the alert stream (Server-Sent
                         # Events) stays open until the client leaves.
                         exclude_paths=(r"^/v1/auth/logout$", r"^/v1/sessions/\{session_id\}$",
                                        r"^/v1/alerts/stream$"),
                         accepted={("GET /v1/history", "negative_data_rejection"):
                                   "since takes Unix seconds as well as ISO 8601 date-times (Pydantic's datetime)"})
