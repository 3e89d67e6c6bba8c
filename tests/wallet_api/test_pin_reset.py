"""A PIN set by whoever holds a session is announced to the citizen, and a forgotten (or stolen) PIN is
reset without the current one only from a fresh login, which ends the other sessions — against a real
wallet on 127.0.0.1 logged in through the sandbox identity provider."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from sandbox.population import generate_population
from tests.wallet_api.conftest import WalletHandle, bearer, login

#: Citizens of the wallet fixture's population (50) that no other test of that wallet logs in.
THIEF_CITIZEN, FIRST_PIN_CITIZEN = [c.identifier for c in generate_population(size=50).citizens[30:32]]


def _age_login(wallet: WalletHandle, tokens: dict[str, Any], minutes: int) -> None:
    """Make a session's login ``minutes`` old (a session stolen, or kept, long after its login)."""
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with contextlib.closing(sqlite3.connect(make_url(wallet.settings.database_url).database)) as db:
        db.execute("UPDATE sessions SET created_at = ? WHERE id = ?", (when, tokens["session_id"]))
        db.commit()


def _alerts(wallet: WalletHandle, tokens: dict[str, Any]) -> list[dict[str, Any]]:
    r = httpx.get(f"{wallet.url}/v1/alerts", headers=bearer(tokens))
    assert r.status_code == 200, r.text
    return list(reversed(r.json()))  # oldest first


def test_a_first_pin_raises_an_alert_naming_the_session(wallet: WalletHandle) -> None:
    tokens = login(wallet.url, FIRST_PIN_CITIZEN, user_agent="Tablet/2 (kitchen)")
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": "2468"}, headers=bearer(tokens)).status_code == 204
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": "1357", "current_pin": "2468"},
                     headers=bearer(tokens)).status_code == 204
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": None, "current_pin": "1357"},
                     headers=bearer(tokens)).status_code == 204
    alerts = _alerts(wallet, tokens)
    assert [a["kind"] for a in alerts] == ["pin_set", "pin_changed", "pin_removed"]
    for alert in alerts:
        assert tokens["session_id"] in alert["message"] and "Tablet/2 (kitchen)" in alert["message"]
        assert "2468" not in alert["message"] and "1357" not in alert["message"]


def test_a_pin_set_by_a_thief_is_reset_only_after_a_fresh_login_which_ends_the_other_sessions(
        wallet: WalletHandle) -> None:
    owner_laptop = login(wallet.url, THIEF_CITIZEN, user_agent="Owner-laptop")
    thief = login(wallet.url, THIEF_CITIZEN, user_agent="Stolen-phone")
    _age_login(wallet, owner_laptop, 60 * 24)
    _age_login(wallet, thief, 60)
    # The thief, holding a session but no PIN, sets one: the owner is told, from which session.
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": "1111"}, headers=bearer(thief)).status_code == 204
    [alert] = _alerts(wallet, owner_laptop)
    assert alert["kind"] == "pin_set" and thief["session_id"] in alert["message"]
    assert "Stolen-phone" in alert["message"] and "1111" not in alert["message"]

    # A session whose login is not recent cannot reset the PIN without the current one: neither the
    # thief's (who would take the PIN over again) nor the owner's old one.
    for tokens in (thief, owner_laptop):
        refused = httpx.post(f"{wallet.url}/v1/pin/reset", json={"pin": "2468"}, headers=bearer(tokens))
        assert refused.status_code == 403 and refused.json()["error"] == "recent_login_required", refused.text
    # The thief locks the PIN guessing; the owner could not even type the right one now.
    for _ in range(wallet.settings.pin_max_attempts):
        httpx.put(f"{wallet.url}/v1/pin", json={"pin": None, "current_pin": "0000"}, headers=bearer(thief))
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": None, "current_pin": "1111"},
                     headers=bearer(owner_laptop)).status_code == 423

    # The owner logs in again at the identity provider and resets it, lock or not.
    fresh = login(wallet.url, THIEF_CITIZEN, user_agent="Owner-laptop")
    reset = httpx.post(f"{wallet.url}/v1/pin/reset", json={"pin": "2468"}, headers=bearer(fresh))
    assert reset.status_code == 204, reset.text
    # Every other session ended: the thief's first of all.
    for tokens in (thief, owner_laptop):
        assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens)).status_code == 401
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(fresh)).json()["pin_set"] is True
    kinds = [a["kind"] for a in _alerts(wallet, fresh)]
    assert kinds == ["pin_set", "pin_locked", "pin_reset"], kinds
    # The new PIN works at once (the counters and the lock were cleared); the thief's does not.
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": "1357", "current_pin": "1111"},
                     headers=bearer(fresh)).json()["error"] == "invalid_pin"
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": "1357", "current_pin": "2468"},
                     headers=bearer(fresh)).status_code == 204
