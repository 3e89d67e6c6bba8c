"""The notification endpoint: only the token a credential was issued under notifies about it, a
repeated event is recorded once, and a record keeps only the last few distinct events."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from issuer.routes.protocol import NOTIFICATION_EVENTS_KEPT
from sandbox.population import DEMO_EVERYTHING
from ssi.jose import Key
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT, build_proof_jwt
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer

pytestmark = pytest.mark.anyio
SLUG, TYPE = "aoc-tax", "tax-compliance"


async def _access(http: httpx.AsyncClient, env: IssuerEnv) -> tuple[str, str]:
    """An access token and the credential id its offer reserved."""
    offer = await create_offer(http, env, SLUG, TYPE, DEMO_EVERYTHING)
    answer = await http.post(f"{env.issuer(SLUG)}/token", data={
        "grant_type": PRE_AUTHORIZED_CODE_GRANT, "tx_code": offer["tx_code"],
        "pre-authorized_code": offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]["pre-authorized_code"]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"]), str(offer["credential_ids"][TYPE])


async def _issue(http: httpx.AsyncClient, env: IssuerEnv, access: str) -> str:
    base = env.issuer(SLUG)
    nonce = (await http.post(f"{base}/nonce")).json()["c_nonce"]
    answer = await http.post(f"{base}/credential", headers={"Authorization": f"Bearer {access}"}, json={
        "credential_identifier": TYPE, "proofs": {"jwt": [build_proof_jwt(Key.generate(), audience=base, nonce=nonce)]}})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["notification_id"])


async def _notify(http: httpx.AsyncClient, env: IssuerEnv, access: str, notification_id: str, event: str,
                  description: str | None = None) -> httpx.Response:
    body = {"notification_id": notification_id, "event": event}
    if description is not None:
        body["event_description"] = description
    return await http.post(f"{env.issuer(SLUG)}/notification", json=body, headers={"Authorization": f"Bearer {access}"})


async def _events(http: httpx.AsyncClient, env: IssuerEnv, credential_id: str) -> list[dict]:
    record = await http.get(f"{env.url}/v1/credentials/{credential_id}", headers=env.headers(SLUG))
    assert record.status_code == 200, record.text
    return list(record.json()["notifications"])


async def test_another_token_of_the_same_citizen_cannot_notify(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        first, credential_id = await _access(http, issuer_env)
        notification_id = await _issue(http, issuer_env, first)
        second, _ = await _access(http, issuer_env)
        foreign = await _notify(http, issuer_env, second, notification_id, "credential_deleted")
        own = await _notify(http, issuer_env, first, notification_id, "credential_accepted")
        events = await _events(http, issuer_env, credential_id)
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_notification_id", foreign.text
    assert own.status_code == 204, own.text
    assert [e["event"] for e in events] == ["credential_accepted"]


async def test_repeated_events_are_kept_once_and_the_record_keeps_the_last_few(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        access, credential_id = await _access(http, issuer_env)
        notification_id = await _issue(http, issuer_env, access)
        repeats = await asyncio.gather(*(_notify(http, issuer_env, access, notification_id, "credential_failure", "x" * 50)
                                         for _ in range(8)))
        once = await _events(http, issuer_env, credential_id)
        for i in range(NOTIFICATION_EVENTS_KEPT + 5):
            answer = await _notify(http, issuer_env, access, notification_id, "credential_failure", f"attempt {i}")
            assert answer.status_code == 204, answer.text
        kept = await _events(http, issuer_env, credential_id)
    assert {r.status_code for r in repeats} == {204}
    assert len(once) == 1
    assert [e.get("event_description") for e in kept] == [
        f"attempt {i}" for i in range(5, NOTIFICATION_EVENTS_KEPT + 5)]
