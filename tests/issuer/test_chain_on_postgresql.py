"""On PostgreSQL a single-copy issuance writes its record, status index, stored response and audit
chain entry in one statement, the entry's hash computed by the database: the chain it builds must be
exactly the one ``ssi.audit_chain`` verifies, under concurrency, from the tenant's first issuance on."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from issuer.audit import CHECKPOINT_EVERY
from issuer.keys import issue_tenant_certificate
from sandbox.population import DEMO_EVERYTHING
from ssi import x509 as ssi_x509
from ssi.audit_chain import keys_from_jwks, read_checkpoint, verify_chain, verify_inclusion
from ssi.jose import Key
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer, own_builtin
from tests.support.wallet_client import WalletClient

pytestmark = pytest.mark.anyio

SLUG = "chain-pg"


async def _new_tenant(http: httpx.AsyncClient, env: IssuerEnv) -> str:
    sandbox = env.sandbox
    created = await http.post(f"{env.url}/v1/tenants", json={"slug": SLUG, "name": "Chain on PostgreSQL"},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert created.status_code == 201, created.text
    key = created.json()["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert (await http.post(f"{env.url}/v1/types", json={"definition": own_builtin(env.url, SLUG, "tax-compliance")},
                            headers=headers)).status_code < 300
    r = await http.put(f"{env.url}/v1/types/tax-compliance/source", headers=headers, json={
        "kind": "viaoberta", "endpoint": sandbox.viaoberta_url, "product": "ECOT103",
        "signing_key_pem": sandbox.requester_key_pem.decode(), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
        "platform_certs_pem": [sandbox.platform_cert_pem.decode()],
        "context": {"purpose": "p", "procedure": "p", "consent": "Ley", "official_name": "o", "official_nif": "1H"}})
    assert r.status_code == 200, r.text
    signing = Key.generate()
    cert = issue_tenant_certificate(sandbox.ca_key, sandbox.ca_cert, signing, f"{env.url}/t/{SLUG}", "Chain")
    r = await http.post(f"{env.url}/v1/keys/rotate", headers=headers, json={
        "private_key_pem": signing.private_pem().decode(), "certificate_chain_pem": ssi_x509.cert_to_pem(cert).decode()})
    assert r.status_code == 201, r.text
    return key


async def _issue(http: httpx.AsyncClient, env: IssuerEnv) -> str:
    offer = await create_offer(http, env, SLUG, "tax-compliance", DEMO_EVERYTHING)
    result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"], keys=[Key.generate()])
    assert len(result.credentials) == 1
    return offer["credential_ids"]["tax-compliance"]


async def test_one_statement_issuance_builds_a_verifiable_chain(pg_issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=60, limits=LIMITS) as http:
        pg_issuer_env.api_keys[SLUG] = await _new_tenant(http, pg_issuer_env)
        # The first issuance finds no chain head: the statement writes nothing, the head is created,
        # and the issuance goes through on the next draw.
        ids = [await _issue(http, pg_issuer_env)]
        for _ in range(6):  # concurrent appends queue on the head row inside the statement
            ids += await asyncio.gather(*(_issue(http, pg_issuer_env) for _ in range(10)))
        while len(ids) < CHECKPOINT_EVERY + 2:  # one at a time past the checkpoint, so its seq is known
            ids.append(await _issue(http, pg_issuer_env))
        headers = pg_issuer_env.headers(SLUG)
        export = (await http.get(f"{pg_issuer_env.url}/v1/audit/export", headers=headers)).json()
        check = (await http.get(f"{pg_issuer_env.url}/v1/audit/check", headers=headers)).json()
        proof = (await http.get(f"{pg_issuer_env.url}/v1/audit/credentials/{ids[0]}/proof", headers=headers)).json()

    keys = keys_from_jwks(export["jwks"])
    report = verify_chain(export["chain"], export["entries"], export["checkpoints"], keys, require_checkpoint=True,
                          require_content=True)
    assert report.ok, report
    assert [e["seq"] for e in export["entries"]] == list(range(1, len(ids) + 1))
    assert sorted(e["id"] for e in export["entries"]) == sorted(ids)
    # The checkpoint the 64th entry was due (signed by the issuance itself) and the export's own.
    assert [read_checkpoint(t)["seq"] for t in export["checkpoints"]] == [CHECKPOINT_EVERY, len(ids)]
    assert check["ok"] and check["kinds"]["issued"] == len(ids), check
    assert verify_inclusion(proof, keys, content=proof["content"], salt=proof["salt"]).seq == CHECKPOINT_EVERY

    # Every record has exactly its one status index, and nothing was left behind by draws that lost.
    conn = await asyncpg.connect(pg_issuer_env.settings.database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch("SELECT r.id, count(s.idx) AS n FROM issuance_records r "
                                "LEFT JOIN status_entries s ON s.record_id = r.id "
                                "WHERE r.tenant_id = (SELECT id FROM tenants WHERE slug = $1) GROUP BY r.id", SLUG)
    finally:
        await conn.close()
    assert sorted(r["id"] for r in rows) == sorted(ids) and {r["n"] for r in rows} == {1}
