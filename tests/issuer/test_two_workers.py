"""Two issuer workers on one database file: what one worker changes, the other follows (after its caches
expire, a few seconds) -- as the design's scale-out runs them."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from issuer.app import create_app
from issuer.provisioning import provision_demo
from sandbox.population import DEMO_EVERYTHING
from ssi.sd_jwt import SDJWT
from tests.issuer.conftest import Sandbox, make_settings
from tests.issuer.helpers import LIMITS
from tests.support.servers import free_port, serve
from tests.support.wallet_client import WalletClient

pytestmark = pytest.mark.anyio

#: How long to wait for another worker to follow a change: far longer than any cache of the issuer.
FOLLOW_DEADLINE = 45.0


@dataclass
class Workers:
    one: str
    two: str
    api_keys: dict[str, str]

    def headers(self, slug: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_keys[slug]}"}


@pytest.fixture
def workers(sandbox: Sandbox, tmp_path: Path) -> Iterator[Workers]:
    """Worker 1 and worker 2 on one SQLite file; the public URL (offers, metadata) is worker 2's."""
    port_one, port_two = free_port(), free_port()
    settings_two = make_settings(sandbox, f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", port_two, tmp_path, tmp_path)
    settings_one = settings_two.model_copy(update={"port": port_one})
    provisioned = asyncio.run(provision_demo(
        settings_two, ca_key=sandbox.ca_key, ca_cert=sandbox.ca_cert, viaoberta_url=sandbox.viaoberta_url,
        viaoberta_platform_cert_pem=sandbox.platform_cert_pem, requester_key_pem=sandbox.requester_key_pem,
        requester_cert_pem=sandbox.requester_cert_pem))
    keys = {slug: t["api_key"] for slug, t in provisioned["tenants"].items()}
    with ExitStack() as stack:
        one = stack.enter_context(serve(create_app(settings_one, configure_logs=False), port=port_one))
        two = stack.enter_context(serve(create_app(settings_two, configure_logs=False), port=port_two))
        yield Workers(one, two, keys)


def _kid(jws: str) -> str:
    return json.loads(base64.urlsafe_b64decode(jws.split(".")[0] + "==="))["kid"]


async def _issue(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[str, str]:
    """Issue a padró credential whose offer was made at ``url`` (the wallet redeems it at worker 2)."""
    r = await http.post(f"{url}/v1/offers", headers=headers, json={
        "credential_configuration_ids": ["padro"], "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular"}})
    assert r.status_code == 201, r.text
    offer = r.json()
    result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
    return offer["credential_ids"]["padro"], result.credentials[0]


async def test_after_a_rotation_through_one_worker_the_other_signs_with_the_new_key(workers: Workers) -> None:
    slug = "ajuntament-girona"
    headers = workers.headers(slug)
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        # Worker 2 signs (and so caches its active key) before the rotation.
        cid, credential = await _issue(http, workers.two, headers)
        old_kid = _kid(credential)
        audit = await http.get(f"{workers.two}/v1/audit/head", headers=headers)
        assert audit.status_code == 200 and _kid(audit.json()["checkpoint"]["token"]) == old_kid
        rotated = await http.post(f"{workers.one}/v1/keys/rotate", json={}, headers=headers)
        assert rotated.status_code == 201, rotated.text
        new_kid = rotated.json()["kid"]
        assert new_kid != old_kid
        # Status list re-signing on worker 2 follows within its cache's lifetime (not "never").
        status_uri = SDJWT.parse(credential).payload["status"]["status_list"]["uri"]
        deadline = time.monotonic() + FOLLOW_DEADLINE
        action, list_kid = "suspend", old_kid
        while time.monotonic() < deadline:
            r = await http.post(f"{workers.two}/v1/credentials/{cid}/{action}", headers=headers)
            assert r.status_code == 200, r.text
            action = "reinstate" if action == "suspend" else "suspend"
            list_kid = _kid((await http.get(status_uri)).text)
            if list_kid == new_kid:
                break
            await asyncio.sleep(0.5)
        assert list_kid == new_kid, "worker 2 still re-signs status lists with the retired key"
        # New credentials and audit checkpoints on worker 2: the new key too.
        _, after = await _issue(http, workers.two, headers)
        assert _kid(after) == new_kid
        audit = await http.get(f"{workers.two}/v1/audit/head", headers=headers)
        assert _kid(audit.json()["checkpoint"]["token"]) == new_kid


async def test_a_key_revoked_through_one_worker_is_refused_by_the_other(workers: Workers) -> None:
    headers = workers.headers("aoc-tax")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{workers.one}/v1/tenant/api-keys", headers=headers)
        assert r.status_code == 201, r.text
        leaked_id, leaked = r.json()["key_id"], {"Authorization": f"Bearer {r.json()['api_key']}"}
        assert (await http.get(f"{workers.two}/v1/tenant", headers=leaked)).status_code == 200  # cached there
        r = await http.delete(f"{workers.one}/v1/tenant/api-keys/{leaked_id}", headers=headers)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + FOLLOW_DEADLINE
        status = 200
        while time.monotonic() < deadline:
            status = (await http.get(f"{workers.two}/v1/tenant", headers=leaked)).status_code
            if status == 401:
                break
            await asyncio.sleep(0.5)
        assert status == 401, "worker 2 still accepts the revoked key"
        assert (await http.post(f"{workers.two}/v1/tenant/api-keys", headers=leaked)).status_code == 401
