"""``GET /v1/history?since=`` takes a time with a time zone; one without (``2020-01-01T00:00:00``, a bare
date) names no instant and answers 400 ``invalid_request`` — it used to reach the database, which
refuses naive times, and answer 500.

Real wallet and sandbox identity provider on 127.0.0.1 (the session-scoped ``wallet`` fixture).
"""

from __future__ import annotations

import httpx

from sandbox.population import DEMO_PENDING
from tests.wallet_api.conftest import WalletHandle, bearer, login


def test_history_since_a_time_without_a_zone_is_a_bad_request(wallet: WalletHandle) -> None:
    tokens = login(wallet.url, DEMO_PENDING)
    history = f"{wallet.url}/v1/history"
    for naive in ("2020-01-01T00:00:00", "2020-01-01 00:00:00", "2020-01-01"):
        r = httpx.get(history, params={"since": naive}, headers=bearer(tokens))
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (naive, r.status_code, r.text)
    for aware in ("2020-01-01T00:00:00Z", "2020-01-01T01:00:00+01:00"):
        r = httpx.get(history, params={"since": aware}, headers=bearer(tokens))
        assert r.status_code == 200 and r.json() == [], (aware, r.text)
