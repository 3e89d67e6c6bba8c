"""Outgoing calls give up on a peer that accepts connections and never answers (a black hole), within
the timeout their service's settings give, with a typed error — and nothing is left half done."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from aries.errors import AriesError
from aries.service import start_runtime
from sandbox.population import DEMO_EVERYTHING
from service_kit.webhooks import deliver_webhook
from ssi.jose import Key
from tests.hardening.conftest import BlackHole, Trickle, WalletEnv
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv
from tests.issuer.helpers import own_builtin
from tests.support.wallet_client import WalletClient

# Each set-up here uses a 1-second timeout; the answer must come well before a default one would.
BOUND = 4.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _timed(call: object) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = call()  # type: ignore[operator]
    return response, time.monotonic() - began


def test_wallet_gives_up_on_an_offer_server_that_never_answers(limited_wallet: WalletEnv,
                                                               black_hole: BlackHole) -> None:
    offer_uri = "openid-credential-offer://?" + urlencode({"credential_offer_uri": f"{black_hole.url}/offers/1"})
    with httpx.Client(timeout=30) as http:
        response, took = _timed(lambda: http.post(f"{limited_wallet.url}/v1/offers", json={"offer_uri": offer_uri},
                                                  headers=limited_wallet.headers))
    assert response.status_code == 502 and response.json()["error"] == "issuer_unavailable"
    assert "timed out" in response.json()["error_description"] or "could not be fetched" in response.text
    assert 0.9 <= took < BOUND


def test_wallet_gives_up_on_a_peer_that_trickles_its_answer(limited_wallet: WalletEnv, trickle: Trickle) -> None:
    """A byte every 0.3 s passes every 1-second read timeout; the whole call's deadline (4 × the
    timeout) ends it, where the wallet used to wait for ever (and the citizen's request with it)."""
    offer_uri = "openid-credential-offer://?" + urlencode({"credential_offer_uri": f"{trickle.url}/offers/1"})
    with httpx.Client(timeout=30) as http:
        response, took = _timed(lambda: http.post(f"{limited_wallet.url}/v1/offers", json={"offer_uri": offer_uri},
                                                  headers=limited_wallet.headers))
    assert response.status_code == 502 and response.json()["error"] == "issuer_unavailable", response.text
    assert 3.9 <= took < 4 + BOUND


def test_wallet_gives_up_on_a_request_object_server_that_never_answers(limited_wallet: WalletEnv,
                                                                       black_hole: BlackHole) -> None:
    request = "openid4vp://?" + urlencode({"client_id": "x509_san_dns:127.0.0.1",
                                          "request_uri": f"{black_hole.url}/requests/1"})
    with httpx.Client(timeout=30) as http:
        response, took = _timed(lambda: http.post(f"{limited_wallet.url}/v1/presentations",
                                                  json={"request_uri": request}, headers=limited_wallet.headers))
    assert response.status_code == 502 and response.json()["error"] == "verifier_unavailable"
    assert 0.9 <= took < BOUND


@pytest.mark.anyio
async def test_issuer_gives_up_on_a_source_that_never_answers_and_issues_nothing(
        limited_issuer: IssuerEnv, black_hole: BlackHole) -> None:
    # The source configuration names no timeout of its own: the issuer's source_timeout (1 s here) applies.
    sandbox = limited_issuer.sandbox
    async with httpx.AsyncClient(timeout=30) as http:
        created = (await http.post(f"{limited_issuer.url}/v1/tenants", json={"slug": "black-hole", "name": "BH"},
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        await http.post(f"{limited_issuer.url}/v1/types", headers=headers,
                        json={"definition": own_builtin(limited_issuer.url, "black-hole", "tax-compliance")})
        r = await http.put(f"{limited_issuer.url}/v1/types/tax-compliance/source", headers=headers, json={
            "kind": "viaoberta", "endpoint": black_hole.url, "product": "ECOT103", "retries": 0,
            "signing_key_pem": sandbox.requester_key_pem.decode(),
            "signing_cert_pem": sandbox.requester_cert_pem.decode(),
            "platform_certs_pem": [sandbox.platform_cert_pem.decode()],
            "context": {"purpose": "p", "procedure": "p", "consent": "Ley", "official_name": "o",
                        "official_nif": "1H"}})
        assert r.status_code == 200, r.text
        offer = (await http.post(f"{limited_issuer.url}/v1/offers", headers=headers, json={
            "credential_configuration_ids": ["tax-compliance"],
            "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"}})).json()
        wallet = WalletClient(http)
        ready = await wallet.redeem_offer(offer["offer_uri"], offer["tx_code"])
        proofs = wallet.proofs([Key.generate()], ready.issuer, await wallet.nonce(ready.issuer_metadata))
        began = time.monotonic()
        response = await wallet.credential_request(ready.issuer_metadata, ready.access_token, {
            "credential_configuration_id": "tax-compliance", "proofs": {"jwt": proofs}})
        took = time.monotonic() - began
        records = (await http.get(f"{limited_issuer.url}/v1/credentials", headers=headers)).json()
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert 0.9 <= took < BOUND
    assert records["total"] == 0


@pytest.mark.anyio
async def test_webhook_delivery_uses_the_clients_timeout(black_hole: BlackHole) -> None:
    # Services build their webhook client from settings; a delivery without its own timeout keeps it.
    async with httpx.AsyncClient(timeout=0.5) as client:
        began = time.monotonic()
        result = await deliver_webhook(client, f"{black_hole.url}/hook", b"{}", "secret", event_id="e1",
                                       max_attempts=1)
        took = time.monotonic() - began
    assert not result.delivered and result.error == "ReadTimeout"
    assert 0.4 <= took < 2.0


@pytest.mark.anyio
async def test_aries_admin_calls_use_the_configured_timeout(black_hole: BlackHole, tmp_path: Path) -> None:
    # An external agent whose admin API hangs: each call fails as agent_unavailable within the
    # service's aries_admin_timeout rather than holding the request for the default 15 s.
    runtime = await start_runtime(name="t", label="t", admin_url=black_hole.url, admin_api_key="k", webhook_key="w",
                                  data_dir=tmp_path, inbound_port=1, admin_port=1, endpoint="", webhook_url="",
                                  master_key=b"\0" * 32, admin_timeout=0.5)
    began = time.monotonic()
    with pytest.raises(AriesError) as raised:
        await runtime.client.ready()
    took = time.monotonic() - began
    await runtime.client.aclose()
    assert raised.value.code == "aries.agent_unavailable"
    assert 0.4 <= took < 2.0


@pytest.mark.anyio
async def test_verifier_gives_up_on_a_status_list_server_that_trickles_its_answer(trickle: Trickle) -> None:
    """The verifier's fetches (status lists, issuer metadata) end at 4 × the read timeout, not never."""
    from verifier.verification import FetchError, fetch_bytes

    async with httpx.AsyncClient(timeout=1.0) as client:
        began = time.monotonic()
        with pytest.raises(FetchError, match="deadline"):
            await fetch_bytes(client, f"{trickle.url}/statuslists/1", accept="application/statuslist+jwt",
                              max_bytes=1_000_000)
    assert 3.9 <= time.monotonic() - began < 4 + BOUND


@pytest.mark.anyio
async def test_webhook_delivery_ends_at_its_deadline_with_a_receiver_that_trickles(trickle: Trickle) -> None:
    """One receiver trickling its answer does not hold the delivery loop (and every other endpoint's
    events) for ever: an attempt ends at 4 × the timeout."""
    async with httpx.AsyncClient(timeout=1.0) as client, asyncio.timeout(4 + 2 * BOUND):
        began = time.monotonic()
        result = await deliver_webhook(client, f"{trickle.url}/hook", b"{}", "secret", event_id="e2",
                                       max_attempts=1)
    assert not result.delivered and result.error == "deadline exceeded"
    assert 3.9 <= time.monotonic() - began < 4 + BOUND
