"""The data source slow, failing or returning garbage: a typed error on the wire, nothing half-issued.

The issuer is its own process; its source is the simulated Via Oberta with fault injection switched on
for one credential request and off for the retry. For each fault the wallet (plain HTTP here: the exact
answer on the wire is the point) gets the documented status and ``{"error", "error_description"}``
body; the issuer's database holds no issuance record, no status entry and no claim for the request;
and the same access token, with a fresh nonce, obtains the credential once the fault is gone.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ssi.jose import Key
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT, build_proof_jwt
from ssi.sd_jwt import SDJWT
from tests.faults.conftest import IssuerStack, issuer_stack, tax_citizens

# Generous: on a loaded CI machine a healthy query (signing, SOAP, verifying) may take seconds.
SOURCE_TIMEOUT = 6.0

#: fault → (HTTP status, OAuth error code) the wallet must receive.
FAULTS: dict[str, tuple[int, str]] = {
    "latency": (503, "temporarily_unavailable"),        # slower than the issuer's source timeout
    "http500": (503, "temporarily_unavailable"),        # plain HTTP 500 from the platform
    "soap_fault": (503, "temporarily_unavailable"),     # a signed SOAP fault 0502: the emitter is down
    "malformed": (502, "server_error"),                 # broken XML
    "bad_signature": (502, "server_error"),             # signed, then altered
    "unsigned": (502, "server_error"),                  # a correct answer without WS-Security
    "other_subject": (502, "server_error"),             # valid and signed, but about another citizen
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerStack]:
    folder = tmp_path_factory.mktemp("source-faults")
    with issuer_stack(folder, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", source_timeout=SOURCE_TIMEOUT,
                      latency_seconds=SOURCE_TIMEOUT + 2) as running:
        yield running


def _rows(stack: IssuerStack) -> dict[str, int]:
    with sqlite3.connect(stack.database_url.split(":///", 1)[1]) as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
                for table in ("issuance_records", "status_entries", "issuance_claims", "stored_responses")}


def _token(http: httpx.Client, offer: dict[str, Any]) -> str:
    grant = offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]
    response = http.post(f"{offer['offer']['credential_issuer']}/token", data={
        "grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": grant["pre-authorized_code"],
        "tx_code": offer["tx_code"]})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _credential_request(http: httpx.Client, issuer: str, token: str, holder: Key) -> httpx.Response:
    nonce = http.post(f"{issuer}/nonce").json()["c_nonce"]
    proof = build_proof_jwt(holder, audience=issuer, nonce=nonce)
    return http.post(f"{issuer}/credential", headers={"Authorization": f"Bearer {token}"},
                     json={"credential_configuration_id": "tax-compliance", "proofs": {"jwt": [proof]}})


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_source_fault_is_typed_leaves_nothing_half_issued_and_a_retry_succeeds(stack: IssuerStack, fault: str) -> None:
    identifier, name = tax_citizens(1, skip=sorted(FAULTS).index(fault))[0]
    offer = stack.offer(identifier, name)
    issuer = offer["offer"]["credential_issuer"]
    holder = Key.generate("ES256")
    with httpx.Client(timeout=30) as http:
        token = _token(http, offer)
        before = _rows(stack)
        stack.viaoberta.fault = fault
        try:
            started = time.monotonic()
            refused = _credential_request(http, issuer, token, holder)
            elapsed = time.monotonic() - started
        finally:
            stack.viaoberta.fault = None
        status, error = FAULTS[fault]
        assert refused.status_code == status, refused.text
        body = refused.json()
        assert body["error"] == error and body["error_description"]
        assert refused.headers["cache-control"] == "no-store"
        if status == 503:
            assert int(refused.headers["retry-after"]) > 0
        # Bounded by the issuer's source timeout (plus the client's backoff), never a hang.
        assert elapsed < SOURCE_TIMEOUT + 15
        # Nothing half-issued: no record, no status index used, the claim released, nothing stored.
        assert _rows(stack) == before

        issued = _credential_request(http, issuer, token, holder)
        assert issued.status_code == 200, issued.text
        sd = SDJWT.parse(issued.json()["credentials"][0]["credential"])
        assert sd.payload["cnf"]["jwk"]["x"] == holder.public_jwk()["x"]
        after = _rows(stack)
        assert after["issuance_records"] == before["issuance_records"] + 1
        assert after["status_entries"] == before["status_entries"] + 1


def test_a_resent_request_while_the_first_is_still_at_the_source_gets_the_same_credentials(
        stack: IssuerStack) -> None:
    """A wallet whose connection timed out resends the identical request (same proofs) while the issuer
    is still waiting for the slow source: the copies that arrive meanwhile are told to retry (503,
    never ``invalid_nonce`` or "already used", which would strand the credential being issued), and
    once the first is done every copy gets its stored response: one credential, issued once."""
    import concurrent.futures

    identifier, name = tax_citizens(1, skip=len(FAULTS))[0]
    offer = stack.offer(identifier, name)
    issuer = offer["offer"]["credential_issuer"]
    with httpx.Client(timeout=60) as http:
        token = _token(http, offer)
        nonce = http.post(f"{issuer}/nonce").json()["c_nonce"]
        proof = build_proof_jwt(Key.generate("ES256"), audience=issuer, nonce=nonce)
        body = {"credential_configuration_id": "tax-compliance", "proofs": {"jwt": [proof]}}
        before = _rows(stack)

        def send() -> httpx.Response:
            return http.post(f"{issuer}/credential", headers={"Authorization": f"Bearer {token}"}, json=body)

        stack.viaoberta.latency_seconds, stack.viaoberta.fault = 2.0, "latency"
        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                first = pool.submit(send)
                time.sleep(0.3)
                copies = [pool.submit(send) for _ in range(3)]
                answers = [first.result(), *(c.result() for c in copies)]
        finally:
            stack.viaoberta.fault, stack.viaoberta.latency_seconds = None, SOURCE_TIMEOUT + 2
        assert answers[0].status_code == 200, [a.text[:200] for a in answers]
        assert {a.status_code for a in answers} <= {200, 503}, [a.text[:200] for a in answers]
        assert all(a.json()["error"] == "temporarily_unavailable" for a in answers if a.status_code == 503)
        issued = {a.json()["credentials"][0]["credential"] for a in answers if a.status_code == 200}
        again = send()
        assert again.status_code == 200, again.text
        issued.add(again.json()["credentials"][0]["credential"])
        assert len(issued) == 1  # every answer is the one stored response
        after = _rows(stack)
        assert after["issuance_records"] == before["issuance_records"] + 1
        assert after["status_entries"] == before["status_entries"] + 1
