"""The wallet PIN's attempt limit under concurrency — against a real wallet on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx

from sandbox.population import generate_population
from tests.wallet_api.conftest import WalletHandle, bearer, login

#: Citizens of the wallet fixture's population (50) that no other test of that wallet logs in.
RACE_CITIZEN = generate_population(size=50).citizens[40].identifier
PIN = "4821"


def _pin_set(wallet: WalletHandle, headers: dict[str, str]) -> bool:
    return bool(httpx.get(f"{wallet.url}/v1/me", headers=headers).json()["pin_set"])


# -- the PIN ------------------------------------------------------------------------------------

def test_concurrent_wrong_pins_test_no_more_than_the_allowed_attempts(wallet: WalletHandle) -> None:
    headers = bearer(login(wallet.url, RACE_CITIZEN))
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": PIN}, headers=headers).status_code == 204
    guesses = [f"{i:04d}" for i in range(5000, 5040)]  # 40 wrong PINs

    async def guess_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as client:
            return await asyncio.gather(*(client.put(f"{wallet.url}/v1/pin", json={"pin": None, "current_pin": g},
                                                     headers=headers) for g in guesses))

    answers = asyncio.run(guess_all())
    tested = [r for r in answers if r.status_code != 423]
    assert len(tested) <= wallet.settings.pin_max_attempts, [r.status_code for r in answers]
    assert {r.status_code for r in tested} <= {403}
    assert all(r.json()["error"] == "pin_locked" and int(r.headers["retry-after"]) >= 1
               for r in answers if r.status_code == 423)
    # Locked now: the right PIN is refused too, and the PIN stays.
    right = httpx.put(f"{wallet.url}/v1/pin", json={"pin": None, "current_pin": PIN}, headers=headers)
    assert right.status_code == 423 and right.json()["error"] == "pin_locked"
    assert _pin_set(wallet, headers)
