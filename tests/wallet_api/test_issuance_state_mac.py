"""The OAuth ``state`` of a wallet-initiated issuance is stored as an HMAC under the token key, as the
login's secrets are: someone who can write the wallet's database but lacks the master key cannot plant
the digest of a ``state`` of their own choosing on an issuance and drive the issuer's callback into it.

Earlier versions stored ``SHA-256(state)``, which anyone can compute. Real issuer and wallet over HTTP
(``system`` fixture), the database written directly as such a writer would.
"""

from __future__ import annotations

import hashlib
import secrets

import httpx

from sandbox.population import generate_population
from tests.wallet_api.conftest import APP_REDIRECT, bearer, login
from tests.wallet_api.system import System, execute_sql, query_sql

#: A citizen no other test of this system logs in.
CITIZEN = generate_population(size=50).citizens[22].identifier


def test_a_state_digest_planted_in_the_database_does_not_complete_the_issuance(system: System) -> None:
    tokens = login(system.wallet, CITIZEN)
    r = httpx.post(f"{system.wallet}/v1/issuance/authorize", headers=bearer(tokens), timeout=30, json={
        "credential_issuer": f"{system.issuer}/t/aoc-tax", "credential_configuration_id": "tax-compliance",
        "redirect_uri": APP_REDIRECT, "login_hint": CITIZEN})
    assert r.status_code == 200, r.text
    offer_id = r.json()["offer_id"]
    [(stored,)] = query_sql(system, "SELECT state_hash FROM offers WHERE id = ?", offer_id)
    assert stored is not None and len(stored) == 64

    # The writer picks a state and stores its plain SHA-256 on the citizen's issuance.
    state = secrets.token_urlsafe(32)
    execute_sql(system, "UPDATE offers SET state_hash = ? WHERE id = ?",
                hashlib.sha256(state.encode()).hexdigest(), offer_id)
    callback = httpx.get(f"{system.wallet}/v1/issuance/callback", timeout=30,
                         params={"state": state, "code": "a-code-of-the-writer"})
    assert callback.status_code == 400 and callback.json()["error"] == "invalid_request", callback.text
    assert "location" not in callback.headers
    # Nothing moved: the issuance still waits for the issuer, holding no code and no completion.
    [(after, state_now)] = query_sql(system, "SELECT state_hash, state FROM offers WHERE id = ?", offer_id)
    assert after == hashlib.sha256(state.encode()).hexdigest() and state_now == "authorizing"
    shown = httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(tokens), timeout=30).json()
    assert shown["state"] == "authorizing" and shown["credential_ids"] == []
