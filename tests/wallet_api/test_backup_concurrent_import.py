"""Two imports of the same backup file into one wallet at once store each credential (and each history
entry) once: what is already present is read inside the transaction that stores, serialised per wallet
(``wallet_api.store.lock_wallet``), so the second import finds what the first stored. Before, both read
"not present" before either stored, and the wallet held the credential twice.

Real issuer and wallet over HTTP (``system`` fixture), the imports sent at once from threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System
from tests.wallet_api.test_e2e import make_offer, receive

#: A citizen no other test of this system logs in.
CITIZEN = generate_population(size=50).citizens[24].identifier
PASSPHRASE = "correct horse battery"
IMPORTS = 4


def test_concurrent_imports_of_one_backup_store_each_credential_once(system: System) -> None:
    check_concurrent_imports_store_each_credential_once(system)


def check_concurrent_imports_store_each_credential_once(system: System) -> None:
    """The whole check, for any running system (``tests/wallet_api/test_postgres.py`` runs it on
    PostgreSQL, where the per-wallet lock is ``SELECT ... FOR UPDATE``)."""
    tokens = login(system.wallet, CITIZEN)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", CITIZEN))
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", CITIZEN))
    received = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens), timeout=30).json()
    assert len(received) == 2
    exported = httpx.post(f"{system.wallet}/v1/backup/export", json={"passphrase": PASSPHRASE},
                          headers=bearer(tokens), timeout=60)
    assert exported.status_code == 200, exported.text
    for credential in received:
        assert httpx.delete(f"{system.wallet}/v1/credentials/{credential['id']}", headers=bearer(tokens),
                            timeout=30).status_code == 204

    def restore(_: int) -> httpx.Response:
        return httpx.post(f"{system.wallet}/v1/backup/import", headers=bearer(tokens), timeout=120,
                          json={"passphrase": PASSPHRASE, "backup": exported.json()})

    with ThreadPoolExecutor(IMPORTS) as pool:
        answers = list(pool.map(restore, range(IMPORTS)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sum(a.json()["credentials_added"] for a in answers) == 2, [a.json() for a in answers]
    restored = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens), timeout=30).json()
    assert sorted(c["vct"] for c in restored) == sorted(c["vct"] for c in received), restored
    # The history in the file (this wallet's own receipts, still there) is not imported either.
    assert all(a.json()["history_imported"] == 0 for a in answers)
    kinds = [h["kind"] for h in httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens), timeout=30).json()]
    assert sorted(kinds) == ["deletion"] * 2 + ["receipt"] * 2 + ["restore"] * IMPORTS, kinds
    assert httpx.get(f"{system.wallet}/v1/audit/check", headers=bearer(tokens), timeout=30).json()["ok"] is True
