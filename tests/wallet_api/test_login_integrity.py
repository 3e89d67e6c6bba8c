"""Whoever can write the wallet's database but lacks the master key cannot log in.

Login secrets (access and refresh tokens, app codes) are stored as HMACs under a key the master key
seals, so a row written with the SHA-256 of a token of one's choosing opens nothing; and a login opens
the wallet its subject index points at only when that wallet's sealed profile names the same citizen, so
subject indexes swapped between two rows send nobody into another's wallet.

Over real HTTP with the sandbox identity provider; the database is written beside the running service,
as such a writer would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from sandbox.population import generate_population
from service_kit.db import Database
from tests.wallet_api.conftest import APP_REDIRECT, WalletHandle, bearer, login
from wallet_api.auth import pkce_pair
from wallet_api.models import AppCode, Session, Wallet

CITIZEN_A, CITIZEN_B, CITIZEN_C = [generate_population(size=50).citizens[i].identifier for i in (33, 34, 37)]


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _write(wallet: WalletHandle, change: Any) -> Any:
    """Run ``change(session)`` in one transaction on the wallet's database, beside the service."""
    async def run() -> Any:
        db = Database(wallet.settings.database_url)
        try:
            async with db.session() as session:
                return await change(session)
        finally:
            await db.dispose()
    return asyncio.run(run())


def _login_redirect(wallet_url: str, identifier: str) -> dict[str, list[str]]:
    """The login up to the app redirect; its query parameters (a code, or an error)."""
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        start = client.get(f"{wallet_url}/v1/auth/login", params={
            "provider": "valid", "redirect_uri": APP_REDIRECT, "state": "app-state", "login_hint": identifier,
            "code_challenge": pkce_pair()[1], "code_challenge_method": "S256"})
        assert start.status_code == 302, start.text
        idp = client.get(start.headers["location"] + "&login_method=idcatmobil")
        back = client.get(idp.headers["location"])
        assert back.status_code == 302 and back.headers["location"].startswith(APP_REDIRECT), back.text
        return parse_qs(urlsplit(back.headers["location"]).query)


def test_rows_written_with_the_sha256_of_a_chosen_token_open_nothing(wallet: WalletHandle) -> None:
    tokens = login(wallet.url, CITIZEN_C)
    wallet_id = httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens)).json()["wallet_id"]
    access, refresh, code = (secrets.token_urlsafe(32) for _ in range(3))
    verifier, challenge = pkce_pair()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)

    async def forge(session: Any) -> tuple[str | None, str | None]:
        real = await session.get(Session, tokens["session_id"])
        session.add(Session(id="ses_forged", wallet_id=wallet_id, provider="valid", user_agent="forged",
                            access_hash=_sha256(access), access_expires_at=later,
                            refresh_hash=_sha256(refresh), refresh_expires_at=later))
        await session.flush()
        session.add(AppCode(code_hash=_sha256(code), session_id="ses_forged",
                            redirect_uri_hash=_sha256(APP_REDIRECT + challenge), expires_at=later))
        return real.access_hash, real.refresh_hash

    stored_access, stored_refresh = _write(wallet, forge)
    # what is stored of the citizen's own tokens is no plain hash either
    assert stored_access != _sha256(tokens["access_token"]) and stored_refresh != _sha256(tokens["refresh_token"])
    assert httpx.get(f"{wallet.url}/v1/me", headers={"Authorization": f"Bearer {access}"}).status_code == 401
    r = httpx.post(f"{wallet.url}/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = httpx.post(f"{wallet.url}/v1/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                        "redirect_uri": APP_REDIRECT, "code_verifier": verifier})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # the citizen's own session still works
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens)).json()["identifier"] == CITIZEN_C


def _swap_subject_indexes(wallet: WalletHandle, first: str, second: str) -> None:
    async def swap(session: Any) -> None:
        rows = {w.id: w for w in (await session.execute(select(Wallet).where(Wallet.id.in_([first, second])))).scalars()}
        one, two = rows[first].subject_index, rows[second].subject_index
        rows[first].subject_index = "swapping"
        await session.flush()
        rows[second].subject_index = one
        await session.flush()
        rows[first].subject_index = two

    _write(wallet, swap)


def test_a_swapped_subject_index_sends_no_login_into_another_wallet(wallet: WalletHandle,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    a_tokens, b_tokens = login(wallet.url, CITIZEN_A), login(wallet.url, CITIZEN_B)
    a_id = httpx.get(f"{wallet.url}/v1/me", headers=bearer(a_tokens)).json()["wallet_id"]
    b_id = httpx.get(f"{wallet.url}/v1/me", headers=bearer(b_tokens)).json()["wallet_id"]
    _swap_subject_indexes(wallet, a_id, b_id)
    try:
        with caplog.at_level(logging.ERROR, logger="wallet_api.auth"):
            params = _login_redirect(wallet.url, CITIZEN_A)  # A's subject index now names B's wallet
        assert "code" not in params, "A's login was served into B's wallet"
        assert params["error"] == ["server_error"] and params["state"] == ["app-state"]
        refusal = [r.getMessage() for r in caplog.records if r.name == "wallet_api.auth"]
        assert refusal and b_id in refusal[0] and CITIZEN_A not in caplog.text and CITIZEN_B not in caplog.text
        # B's wallet was not rewritten to A, nor given a session
        me_b = httpx.get(f"{wallet.url}/v1/me", headers=bearer(b_tokens)).json()
        assert me_b["wallet_id"] == b_id and me_b["identifier"] == CITIZEN_B
        assert {s["id"] for s in httpx.get(f"{wallet.url}/v1/me/logins", headers=bearer(b_tokens)).json()} \
            == {b_tokens["session_id"]}
    finally:
        _swap_subject_indexes(wallet, a_id, b_id)
    again = login(wallet.url, CITIZEN_A)
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(again)).json()["wallet_id"] == a_id
