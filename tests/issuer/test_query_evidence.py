"""The credential response says why the registry was queried (``query_evidence``): built from the
issuance record's evidence, without the official's NIF nor any claim value, and the same in the
immediate response, its replay to an identical request and a deferred delivery (and its re-poll)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from issuer.issuance import QUERY_EVIDENCE, query_evidence
from sandbox.population import DEMO_EVERYTHING, DEMO_PENDING
from ssi.jose import Key
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer, verify_with_ssi
from tests.support.wallet_client import WalletClient

RECORD = {"request_id": "0a1b2c3d4e5f60718293a4b5c6", "transmission_id": "T-42", "product": "AEAT_DADES/ECOT103",
          "purpose": "Certificat d'estar al corrent", "procedure": "ECOT-SUBVENCIONS",
          "official": "Oficina de Cartera (demo) (00000000T)", "consent": "Si",
          "timestamp": "2025-03-01T10:00:00.000+01:00", "source": "viaoberta"}


def test_the_member_is_the_record_evidence_without_the_nif_nor_the_transmission_id() -> None:
    assert query_evidence(RECORD) == {
        "purpose": "Certificat d'estar al corrent", "procedure": "ECOT-SUBVENCIONS", "legal_basis": "consent",
        "official": {"name": "Oficina de Cartera (demo)"},
        "source": {"name": "viaoberta", "product": "AEAT_DADES/ECOT103"},
        "queried_at": "2025-03-01T10:00:00.000+01:00", "request_id": "0a1b2c3d4e5f60718293a4b5c6"}
    assert "00000000T" not in json.dumps(query_evidence(RECORD)) and "T-42" not in json.dumps(query_evidence(RECORD))


@pytest.mark.parametrize(("consent", "code"), [("Si", "consent"), ("Ley", "law"), ("NoOpo", "no_objection")])
def test_each_consent_has_its_stable_legal_basis_code(consent: str, code: str) -> None:
    assert query_evidence({**RECORD, "consent": consent})["legal_basis"] == code


def test_what_the_record_lacks_is_left_out() -> None:
    sparse = {**RECORD, "procedure": None, "consent": "Desconegut", "official": "Joan Puig", "transmission_id": None}
    told = query_evidence(sparse)
    assert "procedure" not in told and "legal_basis" not in told and told["official"] == {"name": "Joan Puig"}
    assert query_evidence({}) == {}


def _body(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 202), response.text
    return response.json()  # type: ignore[no-any-return]


async def _record(http: httpx.AsyncClient, env: IssuerEnv, slug: str, credential_id: str) -> dict[str, Any]:
    response = await http.get(f"{env.url}/v1/credentials/{credential_id}", headers=env.headers(slug))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _check(told: dict[str, Any], record: dict[str, Any], claims: dict[str, Any]) -> None:
    assert told == query_evidence(record["evidence"])
    assert told["request_id"] == record["evidence"]["request_id"] and told["purpose"]
    assert "00000000T" not in json.dumps(told)
    values = {str(v) for v in claims.values() if isinstance(v, str | int) and not isinstance(v, bool)}
    assert not values & {t for t in json.dumps(told).split('"') if t}, values


async def _immediate_and_replay(env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        wallet = WalletClient(http)
        ready = await wallet.redeem_offer(offer["offer_uri"], offer["tx_code"])
        key = Key.generate("ES256")
        proofs = wallet.proofs([key], ready.issuer, await wallet.nonce(ready.issuer_metadata))
        request = {"credential_configuration_id": "tax-compliance", "proofs": {"jwt": proofs}}
        first = _body(await wallet.credential_request(ready.issuer_metadata, ready.access_token, request))
        again = _body(await wallet.credential_request(ready.issuer_metadata, ready.access_token, request))
        record = await _record(http, env, "aoc-tax", offer["credential_ids"]["tax-compliance"])
    claims = verify_with_ssi(env, first["credentials"][0]["credential"], key)
    _check(first[QUERY_EVIDENCE], record, claims)
    assert again == first  # the stored response replayed, member included


@pytest.mark.anyio
async def test_the_immediate_response_and_its_replay_carry_the_query_evidence(issuer_env: IssuerEnv) -> None:
    await _immediate_and_replay(issuer_env)


@pytest.mark.anyio
async def test_on_postgresql_too(pg_issuer_env: IssuerEnv) -> None:
    """PostgreSQL writes a single-copy issuance and its stored response in one statement."""
    await _immediate_and_replay(pg_issuer_env)


@pytest.mark.anyio
async def test_a_deferred_delivery_and_its_re_poll_carry_the_query_evidence(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_PENDING)
        wallet = WalletClient(http)
        result = await wallet.receive_offer(offer["offer_uri"], offer["tx_code"])
        assert result.transaction_id
        url = result.issuer_metadata["deferred_credential_endpoint"]
        poll = {"transaction_id": result.transaction_id}
        auth = {"Authorization": f"Bearer {result.access_token}"}
        for _ in range(50):
            response = await http.post(url, json=poll, headers=auth)
            if response.status_code == 200:
                break
            assert "query_evidence" not in _body(response)  # nothing was queried to an answer yet
            await asyncio.sleep(0.1)
        delivered = _body(response)
        again = _body(await http.post(url, json=poll, headers=auth))
        record = await _record(http, issuer_env, "aoc-tax", offer["credential_ids"]["tax-compliance"])
    claims = verify_with_ssi(issuer_env, delivered["credentials"][0]["credential"], result.holder_keys[0])
    _check(delivered[QUERY_EVIDENCE], record, claims)
    assert again == delivered
