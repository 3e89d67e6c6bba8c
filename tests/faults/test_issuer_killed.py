"""The issuer process killed with SIGKILL while wallets are mid-issuance, then restarted (PostgreSQL).

Each wallet has its access token; half of them have their credential request in flight when the process
dies (the data source, a simulated Via Oberta, answers after a delay), the others are about to send it. After the
restart every wallet's client — the wallet service's own OpenID4VCI client, which resends the same
request after a lost connection — ends up with exactly one credential, and the database holds exactly
one issuance record and one status entry per wallet: none lost, none issued twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ssi.jose import Key
from ssi.oid4vci import build_proof_jwt
from ssi.sd_jwt import SDJWT
from tests.faults.conftest import issuer_stack, tax_citizens, wallet_context, wallet_session
from tests.support.postgres import PostgresCluster
from wallet_api import receiving

WALLETS = 6


async def _counts(database_url: str) -> dict[str, int]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            out = {}
            for name, sql in (("records", "SELECT count(*) FROM issuance_records"),
                              ("entries", "SELECT count(*) FROM status_entries"),
                              ("distinct_records", "SELECT count(DISTINCT id) FROM issuance_records"),
                              ("entries_per_record", "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM "
                                                     "status_entries GROUP BY record_id) AS t")):
                out[name] = int((await conn.execute(text(sql))).scalar_one())
            return out
    finally:
        await engine.dispose()


def test_sigkill_mid_issuance_loses_nothing_and_issues_nothing_twice(
        postgres_cluster: PostgresCluster, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The wallet resends for 30 s; a loaded test machine may take longer than that to restart a process.
    monkeypatch.setattr(receiving, "CREDENTIAL_RETRY_SECONDS", 120.0)
    database_url = postgres_cluster.create_database()
    citizens = tax_citizens(WALLETS)
    # Source answers after 1 s: requests started in the 1.2 s before the kill are still in flight then.
    with issuer_stack(folder, database_url, source_timeout=4.0, latency_seconds=1.0) as stack:
        stack.viaoberta.fault = "latency"
        offers = [stack.offer(identifier, name) for identifier, name in citizens]
        ctx = wallet_context(folder)

        async def scenario() -> list[tuple[object, list[object]]]:
            async with ctx.client() as client:
                sessions = [await wallet_session(ctx, client, offer) for offer in offers]

                async def wallet(n: int) -> tuple[object, list[object]]:
                    await asyncio.sleep(0.2 * n)  # staggered: the first are in flight at the kill, the last not yet sent
                    return await sessions[n].request_credential("tax-compliance")

                tasks = [asyncio.create_task(wallet(n)) for n in range(WALLETS)]
                # Kill once half the requests reached the source: those are in flight (the source answers
                # after 1 s), the later ones are about to ask for a nonce or to send their request.
                deadline = time.monotonic() + 60
                while stack.source.posts < WALLETS // 2:
                    assert time.monotonic() < deadline, "no credential request reached the data source"
                    await asyncio.sleep(0.02)
                stack.issuer.kill()
                killed_at = time.monotonic()
                stack.viaoberta.fault = None
                await asyncio.to_thread(stack.issuer.start)
                results = await asyncio.gather(*tasks)
                # Recovery is bounded: a dead process's claim is taken over after source_timeout + grace.
                assert time.monotonic() - killed_at < 110
                return results

        results = asyncio.run(scenario())
        assert stack.issuer.starts == 2
        held = []
        copies = len(results[0][1])  # the wallet asks for a batch: one copy per holder key it proves
        assert copies >= 1
        for response, keys in results:
            assert response.credentials is not None and len(response.credentials) == len(keys) == copies
            for issued, key in zip(response.credentials, keys, strict=True):
                sd = SDJWT.parse(issued.credential)
                # Each copy is bound to the key this wallet proved for it, and has its own status slot.
                assert sd.payload["cnf"]["jwk"]["x"] == key.public_jwk()["x"]
                status = sd.payload["status"]["status_list"]
                held.append((status["uri"], status["idx"]))
        assert len(set(held)) == WALLETS * copies

        counts = asyncio.run(_counts(database_url))
        assert counts == {"records": WALLETS, "entries": WALLETS * copies, "distinct_records": WALLETS,
                          "entries_per_record": copies}

        # A wallet that asks again with a fresh proof is refused: the token's one issuance is spent.
        async def again() -> int:
            async with ctx.client() as client:
                session = await wallet_session(ctx, client, stack.offer(*citizens[0]))
                await session.request_credential("tax-compliance")
                nonce = await session.nonce()
                proof = build_proof_jwt(Key.generate("ES256"), audience=stack.tenant_url, nonce=nonce)
                response = await client.post(session.metadata.credential_endpoint, json={
                    "credential_configuration_id": "tax-compliance", "proofs": {"jwt": [proof]}},
                    headers=session._auth_headers("POST", session.metadata.credential_endpoint))
                assert response.json()["error"] == "credential_request_denied"
                return response.status_code

        assert asyncio.run(again()) == 400
        assert asyncio.run(_counts(database_url))["records"] == WALLETS + 1
