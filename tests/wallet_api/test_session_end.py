"""A session that ends stops everything it opened.

- The alert stream (SSE) checks its access token on every poll, not only when it opens: after a
  logout, a revocation from another device or the token's refresh, it ends without sending anything.
- A refresh token presented again after it was rotated revokes its session (RFC 9700 §4.14.2): the
  reuse is refused, the token it was rotated into stops working too, and the session shows inactive.
  Of two refreshes racing with the same token, one wins and the other is a reuse: the session ends.

Real wallet and sandbox identity provider on 127.0.0.1 (the session-scoped ``wallet`` fixture).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import httpx

from sandbox.population import DEMO_PENDING, DEMO_TAX_NEGATIVE
from tests.wallet_api.conftest import WalletHandle, bearer, login


def _insert_alert(wallet: WalletHandle, wallet_id: str, message: str) -> None:
    """An alert written straight into the database, as the background sweep of another worker would."""
    path = wallet.settings.database_url.split("///", 1)[1]
    with closing(sqlite3.connect(path)) as db:
        db.execute("INSERT INTO alerts (wallet_id, kind, message, read, created_at) VALUES (?, ?, ?, ?, ?)",
                   (wallet_id, "revoked", message, 0,
                    dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")))
        db.commit()


class _Stream:
    """An open alert stream read by a thread: ``lines`` received, ``ended`` once the server closed it."""

    def __init__(self, wallet: WalletHandle, tokens: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.ended = threading.Event()
        self.opened = threading.Event()
        self.status = 0
        self._thread = threading.Thread(target=self._read, args=(wallet.url, bearer(tokens)), daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", f"{url}/v1/alerts/stream", headers=headers, timeout=30) as response:
                self.status = response.status_code
                self.opened.set()
                for line in response.iter_lines():
                    self.lines.append(line)
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()

    def data(self) -> list[str]:
        return [line for line in self.lines if line.startswith("data:")]

    def wait_for_data(self, count: int, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.data()) >= count:
                return True
            time.sleep(0.1)
        return False


def _wallet_id(wallet: WalletHandle, tokens: dict[str, Any]) -> str:
    return httpx.get(f"{wallet.url}/v1/me", headers=bearer(tokens)).json()["wallet_id"]


def test_the_alert_stream_ends_at_logout_without_sending_later_alerts(wallet: WalletHandle) -> None:
    tokens = login(wallet.url, DEMO_TAX_NEGATIVE)
    wallet_id = _wallet_id(wallet, tokens)
    stream = _Stream(wallet, tokens)
    assert stream.status == 200
    _insert_alert(wallet, wallet_id, "delivered while logged in")
    assert stream.wait_for_data(1), stream.lines  # the stream works until the logout

    assert httpx.post(f"{wallet.url}/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    _insert_alert(wallet, wallet_id, "after the logout")
    assert stream.ended.wait(10), "the stream outlived the logout"
    assert len(stream.data()) == 1 and "after the logout" not in "\n".join(stream.lines)


def test_the_alert_stream_ends_when_its_session_is_revoked_from_another_device(wallet: WalletHandle) -> None:
    phone = login(wallet.url, DEMO_TAX_NEGATIVE, user_agent="lost-phone")
    laptop = login(wallet.url, DEMO_TAX_NEGATIVE, user_agent="laptop")
    wallet_id = _wallet_id(wallet, phone)
    stream = _Stream(wallet, phone)
    revoked = httpx.delete(f"{wallet.url}/v1/sessions/{phone['session_id']}", headers=bearer(laptop))
    assert revoked.status_code == 204
    _insert_alert(wallet, wallet_id, "after the revocation")
    assert stream.ended.wait(10), "the stream outlived its session"
    assert stream.data() == []
    # The other device's session and stream are unaffected.
    other = _Stream(wallet, laptop)
    _insert_alert(wallet, wallet_id, "for the laptop")
    assert other.wait_for_data(1), other.lines
    assert not other.ended.is_set()


def _refresh(wallet: WalletHandle, refresh_token: str) -> httpx.Response:
    return httpx.post(f"{wallet.url}/v1/auth/token", data={"grant_type": "refresh_token",
                                                           "refresh_token": refresh_token}, timeout=30)


def _session_active(wallet: WalletHandle, observer: dict[str, Any], session_id: str) -> bool:
    logins = httpx.get(f"{wallet.url}/v1/me/logins", headers=bearer(observer)).json()
    return next(s for s in logins if s["id"] == session_id)["active"]


def test_a_reused_refresh_token_revokes_its_session(wallet: WalletHandle) -> None:
    stolen = login(wallet.url, DEMO_PENDING, user_agent="phone")
    observer = login(wallet.url, DEMO_PENDING, user_agent="laptop")
    rotated = _refresh(wallet, stolen["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()

    reuse = _refresh(wallet, stolen["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", reuse.text
    # The whole session ended: the token it was rotated into and its access token stop working.
    later = _refresh(wallet, fresh["refresh_token"])
    assert later.status_code == 400 and later.json()["error"] == "invalid_grant", later.text
    assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(fresh)).status_code == 401
    assert not _session_active(wallet, observer, stolen["session_id"])
    assert _session_active(wallet, observer, observer["session_id"])  # other sessions go on


def test_a_refresh_token_reused_after_several_rotations_still_revokes_the_session(wallet: WalletHandle) -> None:
    """The thief refreshed first, twice: the citizen's copy, two rotations old, still ends the session."""
    first = login(wallet.url, DEMO_PENDING)
    observer = login(wallet.url, DEMO_PENDING)
    second = _refresh(wallet, first["refresh_token"]).json()
    third = _refresh(wallet, second["refresh_token"]).json()
    reuse = _refresh(wallet, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert _refresh(wallet, third["refresh_token"]).status_code == 400
    assert not _session_active(wallet, observer, first["session_id"])


def test_two_refreshes_racing_with_one_token_end_the_session(wallet: WalletHandle) -> None:
    tokens = login(wallet.url, DEMO_PENDING)
    observer = login(wallet.url, DEMO_PENDING)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: _refresh(wallet, tokens["refresh_token"]), range(2)))
    assert sorted(a.status_code for a in answers) in ([200, 400], [400, 400]), [a.text for a in answers]
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)
    # Whichever won, its tokens are dead: the loser's presentation was a reuse.
    for won in (a.json() for a in answers if a.status_code == 200):
        assert _refresh(wallet, won["refresh_token"]).status_code == 400
        assert httpx.get(f"{wallet.url}/v1/me", headers=bearer(won)).status_code == 401
    assert not _session_active(wallet, observer, tokens["session_id"])


def _logged_in_ago(wallet: WalletHandle, session_id: str, age: dt.timedelta) -> None:
    path = wallet.settings.database_url.split("///", 1)[1]
    when = (dt.datetime.now(dt.UTC) - age).replace(tzinfo=None).isoformat(sep=" ")
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("UPDATE sessions SET created_at = ? WHERE id = ?", (when, session_id)).rowcount == 1
        db.commit()


def test_refreshing_never_takes_a_session_past_its_maximum_age(wallet: WalletHandle) -> None:
    """A refresh token chain, stolen once, does not live for as long as it is refreshed: the session
    ends ``session_max_age`` after its login, and the tokens of its last refreshes end with it."""
    max_age = dt.timedelta(seconds=wallet.settings.session_max_age)
    nearly = login(wallet.url, DEMO_PENDING)
    _logged_in_ago(wallet, nearly["session_id"], max_age - dt.timedelta(seconds=120))
    last = _refresh(wallet, nearly["refresh_token"])
    assert last.status_code == 200, last.text
    assert 0 < last.json()["refresh_expires_in"] <= 120 and 0 < last.json()["expires_in"] <= 120

    ended = login(wallet.url, DEMO_PENDING)
    _logged_in_ago(wallet, ended["session_id"], max_age + dt.timedelta(seconds=1))
    refused = _refresh(wallet, ended["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    assert "log in again" in refused.json()["error_description"]
