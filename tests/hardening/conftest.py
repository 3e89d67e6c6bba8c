"""Services run with tight abuse limits for the hardening tests, plus a black-hole peer.

The issuer, verifier and wallet here trust ``127.0.0.1`` as a reverse proxy, so each test picks its
own client address with ``X-Forwarded-For`` and never drains another test's buckets. Everything runs
on loopback over real HTTP, built with the other folders' fixtures (sandbox, PKI, settings).
"""

from __future__ import annotations

import itertools
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.idp_service import IdPSandboxConfig, RegisteredClient
from sandbox.idp_service import create_app as create_idp
from sandbox.population import DEMO_EVERYTHING
from tests.issuer.conftest import IssuerEnv, Sandbox, make_settings, sandbox, start_issuer  # noqa: F401
from tests.support.servers import free_port, serve
from tests.verifier.conftest import PKI, Verifier, pki, start_verifier  # noqa: F401
from tests.wallet_api.conftest import IDP_SECRET, login, wallet_settings
from wallet_api.app import create_app as create_wallet

PROXY = ["127.0.0.1"]

#: Tight limits: the tests below reach each one within a handful of requests.
ISSUER_LIMITS = {"rate_limit_token_client": "6/60", "rate_limit_token_code": "5/60",
                 "rate_limit_tx_code_client": "4/600", "rate_limit_tx_code_offer": "2/600"}
VERIFIER_LIMITS = {"rate_limit_requests_key": "3/60", "rate_limit_requests_client": "1000/60"}
WALLET_LOGIN_LIMIT = "3/60"


class BlackHole:
    """A TCP peer that accepts connections and never answers (nor closes) them."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(64)
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._held.append(conn)
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        """What the peer does with a connection it holds: nothing."""

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        for conn in self._held:
            conn.close()


class Trickle(BlackHole):
    """A peer that answers every request with a 200 whose body comes one byte every ``every`` seconds,
    for ever: each read returns within any per-operation timeout, the answer never ends."""

    def __init__(self, every: float = 0.3) -> None:
        self.every = every
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not self._closed.wait(self.every):
                conn.sendall(b"1\r\n \r\n")
        except OSError:
            return


@pytest.fixture(scope="session")
def trickle() -> Iterator[Trickle]:
    peer = Trickle()
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture(scope="session")
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


@pytest.fixture(scope="session")
def limited_issuer(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:  # noqa: F811
    folder = tmp_path_factory.mktemp("hardened-issuer")
    base = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", free_port(), folder, folder)
    settings = base.model_copy(update={**ISSUER_LIMITS, "trusted_proxies": PROXY, "tx_code_max_attempts": 10,
                                       "source_timeout": 1.0})
    yield from start_issuer(sandbox, settings)


@pytest.fixture(scope="session")
def pg_limited_issuer(sandbox: Sandbox, postgres_cluster, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
                      ) -> Iterator[IssuerEnv]:
    """:func:`limited_issuer` on PostgreSQL, where a token request with a transaction code counts its
    limits and redeems its code in one statement (``issuer.statements.pg_redeem_within_limits``)."""
    folder = tmp_path_factory.mktemp("hardened-issuer-pg")
    base = make_settings(sandbox, postgres_cluster.create_database(), free_port(), folder, folder)
    settings = base.model_copy(update={**ISSUER_LIMITS, "trusted_proxies": PROXY, "tx_code_max_attempts": 10,
                                       "source_timeout": 1.0})
    yield from start_issuer(sandbox, settings)


@pytest.fixture(scope="session")
def limited_verifier(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Verifier]:  # noqa: F811
    with start_verifier(tmp_path_factory.mktemp("hardened-verifier"), pki, trusted_proxies=PROXY,
                        **VERIFIER_LIMITS) as running:
        yield running


@dataclass
class WalletEnv:
    url: str
    idp_url: str
    tokens: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}


@pytest.fixture(scope="session")
def limited_wallet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletEnv]:
    """A wallet with a 1-second outgoing timeout and a tight login limit, and one citizen logged in."""
    tmp: Path = tmp_path_factory.mktemp("hardened-wallet")
    port = free_port()
    idp = IdPSandboxConfig(clients=[RegisteredClient("cartera-wallet", IDP_SECRET,
                                                     (f"http://127.0.0.1:{port}/v1/auth/callback",))],
                           allow_login_hint=True, population_size=20)
    with serve(create_idp(idp)) as idp_url:
        settings = wallet_settings(tmp, port, idp_url, http_timeout=1.0, trusted_proxies=PROXY,
                                   rate_limit_login_client=WALLET_LOGIN_LIMIT, max_backup_bytes=4 * 1_048_576)
        with serve(create_wallet(settings), port=port) as url:
            tokens = login(url, DEMO_EVERYTHING)
            yield WalletEnv(url, idp_url, tokens)


_addresses = itertools.count(1)


def new_client() -> str:
    """A client address no other test uses (IPv6 documentation range), in a /64 of its own: the
    limiter counts an IPv6 client by its /64."""
    return f"2001:db8:{next(_addresses):x}:{secrets.randbelow(0xFFFF):x}::1"


def forwarded(address: str) -> dict[str, str]:
    """Headers making the request come from ``address`` through the trusted proxy (the test client)."""
    return {"X-Forwarded-For": address}
