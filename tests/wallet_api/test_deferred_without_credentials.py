"""A deferred credential response of HTTP 200 that carries no credentials (a new ``transaction_id``
instead, which only a 202 may carry) ends the issuance ``failed`` with ``invalid_issuer_response``.

It made the poll answer 500 (an ``assert`` in storing) and left the offer ``polling``, so that every
sweep polled it again, for ever (the wallet review's ``t1_deferred``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.population import generate_population
from tests.wallet_api.conftest import _WALLET_PORTS, WalletHandle, bearer, login
from tests.wallet_api.standin_issuer import StandInIssuer, own_wallet, standin_issuer

CITIZEN = generate_population(size=50).citizens[5].identifier


@pytest.fixture(scope="module")
def issuer() -> Iterator[StandInIssuer]:
    with standin_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def own(idp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletHandle]:
    with own_wallet(idp_url, tmp_path_factory.mktemp("deferred-200"), _WALLET_PORTS[1]) as running:
        yield running


def _pending_offer(wallet: WalletHandle, headers: dict[str, str], issuer: StandInIssuer) -> str:
    scanned = httpx.post(f"{wallet.url}/v1/offers", json={"offer_uri": issuer.offer_uri()}, headers=headers,
                         timeout=30)
    assert scanned.status_code == 201, scanned.text
    offer_id: str = scanned.json()["offer_id"]
    accepted = httpx.post(f"{wallet.url}/v1/offers/{offer_id}/accept", json={}, headers=headers, timeout=30)
    assert accepted.status_code == 200 and accepted.json()["state"] == "pending", accepted.text
    return offer_id


@pytest.mark.parametrize("answer", [{"transaction_id": "tx-2", "interval": 1},
                                    {"transaction_id": "tx-1", "interval": 5}])
def test_a_200_without_credentials_fails_the_offer(own: WalletHandle, issuer: StandInIssuer,
                                                   answer: dict[str, object]) -> None:
    headers = bearer(login(own.url, CITIZEN))
    issuer.reset()
    issuer.deferred, issuer.deferred_answer = True, (200, answer)
    offer_id = _pending_offer(own, headers, issuer)
    polled = httpx.post(f"{own.url}/v1/offers/{offer_id}/poll", headers=headers, timeout=30)
    assert polled.status_code == 200, polled.text
    assert polled.json()["state"] == "failed", polled.text
    assert polled.json()["error"]["error"] == "invalid_issuer_response", polled.text
    assert polled.json()["credential_ids"] == []
    # Settled: a later poll (the app's, or the sweep's) does not ask the issuer again.
    asked = issuer.deferred_polls
    again = httpx.post(f"{own.url}/v1/offers/{offer_id}/poll", headers=headers, timeout=30)
    assert again.status_code == 200 and again.json()["state"] == "failed", again.text
    assert issuer.deferred_polls == asked
    shown = httpx.get(f"{own.url}/v1/offers/{offer_id}", headers=headers, timeout=30).json()
    assert shown["state"] == "failed" and shown["error"]["error"] == "invalid_issuer_response"


def test_a_202_keeps_it_pending_and_credentials_deliver_it(own: WalletHandle, issuer: StandInIssuer) -> None:
    headers = bearer(login(own.url, CITIZEN))
    issuer.reset()
    issuer.deferred, issuer.deferred_answer = True, (202, {"transaction_id": "tx-1", "interval": 1})
    offer_id = _pending_offer(own, headers, issuer)
    polled = httpx.post(f"{own.url}/v1/offers/{offer_id}/poll", headers=headers, timeout=30)
    assert polled.status_code == 200 and polled.json()["state"] == "pending", polled.text
    issuer.deferred_answer = None  # the credentials, with 200
    delivered = httpx.post(f"{own.url}/v1/offers/{offer_id}/poll", headers=headers, timeout=30)
    assert delivered.status_code == 200 and delivered.json()["state"] == "issued", delivered.text
    [credential_id] = delivered.json()["credential_ids"]
    assert httpx.get(f"{own.url}/v1/credentials/{credential_id}", headers=headers).status_code == 200
