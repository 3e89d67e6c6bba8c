"""Running services for the wallet API tests: the sandbox identity provider and the wallet itself.

Session-scoped (one set per xdist worker) to keep the folder fast; every test logs in a citizen of
its own when it needs isolation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from sandbox.idp_service import IdPSandboxConfig, RegisteredClient
from sandbox.idp_service import create_app as create_idp
from ssi.x509 import cert_to_pem, create_ca
from tests.support.servers import free_port, serve
from wallet_api.app import create_app
from wallet_api.auth import pkce_pair
from wallet_api.settings import WalletSettings

if TYPE_CHECKING:
    from tests.wallet_api.system import System

APP_REDIRECT = "http://127.0.0.1:9/app/callback"
IDP_SECRET = "wallet-test-secret"
#: ``(key, certificate)`` of a test CA that the ``wallet`` fixture trusts as its issuer anchor: tests
#: sign credentials under it (a leaf certificate naming their issuer) for the wallet to verify.
ISSUER_CA = create_ca("Cartera wallet tests issuer CA",
                      not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))  # credentials issued long ago


@dataclass
class WalletHandle:
    url: str
    settings: WalletSettings
    app: object
    idp_url: str


def wallet_settings(tmp: Path, port: int, idp_url: str, **extra: object) -> WalletSettings:
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp / 'wallet.db'}", "public_url": f"http://127.0.0.1:{port}",
        "port": port, "dev_mode": True, "data_dir": tmp,
        "master_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
        "idp_url": idp_url, "idp_client_id": "cartera-wallet", "idp_client_secret": IDP_SECRET,
        "idp_allow_login_hint": True, "background_interval": 0, "log_level": "warning"}
    values.update(extra)
    return WalletSettings(**values)


@contextlib.asynccontextmanager
async def offline_wallet(tmp: Path, **settings: object) -> AsyncIterator[Any]:
    """The wallet API's context, its app started without the background loop and with no identity
    provider listening: what the sweep and purge tests seed and drive by hand (``settings``: more of
    ``WalletSettings``)."""
    app = create_app(wallet_settings(tmp, free_port(), "http://127.0.0.1:9", **settings), run_background=False)
    async with app.router.lifespan_context(app):
        yield app.state.wallet


@pytest.fixture(scope="session")
def idp_url() -> Iterator[str]:
    port = free_port()
    config = IdPSandboxConfig(clients=[], allow_login_hint=True, population_size=50)
    config.clients = [RegisteredClient("cartera-wallet", IDP_SECRET, tuple(
        f"http://127.0.0.1:{p}/v1/auth/callback" for p in _WALLET_PORTS))]
    with serve(create_idp(config), port=port) as url:
        yield url


_WALLET_PORTS = [free_port() for _ in range(3)]


@pytest.fixture(scope="session")
def wallet(idp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletHandle]:
    tmp = tmp_path_factory.mktemp("wallet")
    port = _WALLET_PORTS[0]
    anchor = tmp / "issuer-anchor.pem"
    anchor.write_bytes(cert_to_pem(ISSUER_CA[1]))
    settings = wallet_settings(tmp, port, idp_url, issuer_anchor_files=[anchor])
    app = create_app(settings)
    with serve(app, port=port) as url:
        yield WalletHandle(url, settings, app, idp_url)


def login(wallet_url: str, identifier: str, *, method: str = "idcatmobil", user_agent: str = "pytest-phone"
          ) -> dict[str, str]:
    """Log a synthetic citizen in through the real IdP redirects, as an app does (its own state and PKCE
    verifier); return the token response."""
    state = secrets.token_urlsafe(8)
    verifier, challenge = pkce_pair()
    with httpx.Client(follow_redirects=False, timeout=10, headers={"User-Agent": user_agent}) as client:
        r = client.get(f"{wallet_url}/v1/auth/login", params={
            "provider": "valid", "redirect_uri": APP_REDIRECT, "state": state, "login_hint": identifier,
            "code_challenge": challenge, "code_challenge_method": "S256"})
        assert r.status_code == 302, r.text
        idp = client.get(r.headers["location"] + f"&login_method={method}")
        assert idp.status_code == 303, idp.text
        back = client.get(idp.headers["location"])
        assert back.status_code == 302, back.text
        location = back.headers["location"]
        assert location.startswith(APP_REDIRECT)
        params = parse_qs(urlsplit(location).query)
        assert params["state"] == [state]
        tokens = client.post(f"{wallet_url}/v1/auth/token", data={
            "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": APP_REDIRECT,
            "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        return tokens.json()


def bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def bound_backup(settings: WalletSettings, wallet_id: str, content: dict[str, Any], passphrase: str,
                 *, n: int = 2**10) -> dict[str, Any]:
    """A backup file of ``content`` bound to the wallet ``wallet_id`` as its export would be (the
    service's subject index key read from its database on a fresh engine): a file the wallet's binding
    accepts, whose content the test chose. ``n``: a cheap scrypt."""
    from service_kit.db import Database
    from wallet_api.backup import seal_backup, subject_binding
    from wallet_api.context import master_box
    from wallet_api.models import Wallet
    from wallet_api.vault import Vault

    async def binding() -> str:
        db = Database(settings.database_url)
        try:
            async with db.read_session() as session:
                wallet = await session.get(Wallet, wallet_id)
                assert wallet is not None
                return subject_binding(await Vault(master_box(settings)).index_key(session),
                                       wallet.subject_index, content)
        finally:
            await db.dispose()

    return seal_backup({**content, "subject": asyncio.run(binding())}, passphrase, n=n)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The whole embedded system on SQLite, shared by the end-to-end modules of one worker."""
    from tests.wallet_api.system import running_system

    with running_system(tmp_path_factory.mktemp("system")) as running:
        yield running


@dataclass
class Recorder:
    """A stand-in verifier (the ``recorder`` fixture): serves the request objects put in ``requests``
    at ``<url>/request/<name>`` and records every answer posted to ``<url>/response``, as posted, each
    answered with ``answer``."""

    url: str = ""
    requests: dict[str, str] = field(default_factory=dict)
    posts: list[dict[str, Any]] = field(default_factory=list)
    #: The JSON the stand-in answers each post with (the verifier's ``redirect_uri``, say).
    answer: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    app = FastAPI()
    state = Recorder()

    @app.get("/request/{name}")
    async def request_object(name: str) -> PlainTextResponse:
        return PlainTextResponse(state.requests.get(name, ""), media_type="application/oauth-authz-req+jwt")

    @app.post("/response")
    async def response(request: Request) -> JSONResponse:
        state.posts.append(dict(await request.form()))
        return JSONResponse(state.answer)

    with serve(app) as url:
        state.url = url
        yield state
