"""Deferred issuance follows the data source's own retry time: a wallet's poll before it is answered
"pending" with the time left, and the source is not asked; a poll after it asks the source, and when the
source is still pending the answer's ``interval`` is the source's new ``retry_after`` (at least
``deferred_interval``), not ``deferred_interval`` alone. The time is kept on the deferred transaction
(``next_poll_at``, migration 0017), so every worker agrees.

Real servers on loopback: the session's issuers on SQLite and on PostgreSQL, the sandbox Via Oberta
(its pending queries answer on the second poll), a tenant of the test's own whose Via Oberta source asks
again after 120 s when the emitter estimates "within the hour". The source's calls are counted by the
issuer's own metric, ``cartera_issuer_source_calls_total``, of that tenant only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import sqlite3
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy import insert, inspect, select

from issuer.keys import issue_tenant_certificate
from issuer.models import DeferredTransaction, Tenant
from sandbox.population import DEMO_PENDING
from sandbox.viaoberta_service import ViaObertaSandboxConfig
from sandbox.viaoberta_service import create_app as create_viaoberta
from service_kit.db import Database
from service_kit.migrations import make_config, run_migrations
from ssi import x509 as ssi_x509
from ssi.jose import Key
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer, own_builtin
from tests.issuer.test_schema import MIGRATIONS
from tests.support.servers import serve
from tests.support.wallet_client import IssuanceResult, WalletClient
from viaoberta.client import ViaObertaClient
from viaoberta.credentials import generate_identity
from viaoberta.messages import PendingResult

pytestmark = pytest.mark.anyio

RETRY = 120
TYPE = "tax-compliance"


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest) -> IssuerEnv:
    return request.getfixturevalue("issuer_env" if request.param == "sqlite" else "pg_issuer_env")  # type: ignore[no-any-return]


def _source(env: IssuerEnv, **extra: Any) -> dict[str, Any]:
    sandbox = env.sandbox
    return {"kind": "viaoberta", "endpoint": sandbox.viaoberta_url, "product": "ECOT103",
            "signing_key_pem": sandbox.requester_key_pem.decode(), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
            "platform_certs_pem": [sandbox.platform_cert_pem.decode()], "timeout": 10, "retries": 1,
            "context": {"purpose": "Subvencions", "procedure": "ECOT", "consent": "Si", "official_name": "Oficina",
                        "official_nif": "00000000T"}, **extra}


async def _tenant(http: httpx.AsyncClient, env: IssuerEnv, **source: Any) -> str:
    """A tenant of this test's own, issuing tax-compliance from the sandbox Via Oberta; its slug (its
    API key is added to ``env.api_keys``)."""
    slug = "deferred-" + secrets.token_hex(4)
    created = await http.post(f"{env.url}/v1/tenants", json={"slug": slug, "name": "Deferred polls"},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert created.status_code == 201, created.text
    env.api_keys[slug] = created.json()["api_key"]
    headers = env.headers(slug)
    registered = await http.post(f"{env.url}/v1/types", json={"definition": own_builtin(env.url, slug, TYPE)},
                                 headers=headers)
    assert registered.status_code == 201, registered.text
    r = await http.put(f"{env.url}/v1/types/{TYPE}/source", headers=headers, json=_source(env, **source))
    assert r.status_code == 200, r.text
    if created.json()["signing_kid"] is None:  # no CA configured for this issuer: import a certified key
        key = Key.generate()
        cert = issue_tenant_certificate(env.sandbox.ca_key, env.sandbox.ca_cert, key, env.issuer(slug), slug)
        r = await http.post(f"{env.url}/v1/keys/rotate", headers=headers, json={
            "private_key_pem": key.private_pem().decode(), "certificate_chain_pem": ssi_x509.cert_to_pem(cert).decode()})
        assert r.status_code == 201, r.text
    return slug


async def _source_calls(http: httpx.AsyncClient, env: IssuerEnv, slug: str) -> float:
    text = (await http.get(f"{env.url}/metrics")).text
    pattern = re.compile(r'^cartera_issuer_source_calls_total\{[^}]*tenant="' + re.escape(slug) + r'"[^}]*\} (\S+)$',
                         re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def _poll(http: httpx.AsyncClient, result: IssuanceResult) -> httpx.Response:
    return await http.post(result.issuer_metadata["deferred_credential_endpoint"],
                           json={"transaction_id": result.transaction_id},
                           headers={"Authorization": f"Bearer {result.access_token}"})


async def _make_due(env: IssuerEnv, slug: str) -> None:
    """Move the tenant's pending transaction's next poll into the past (the test does not wait 120 s)."""
    statement = ("UPDATE deferred_transactions SET next_poll_at = {past} WHERE sealed_response IS NULL "
                 "AND tenant_id = (SELECT id FROM tenants WHERE slug = {slug})")
    url = str(env.settings.database_url)
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("///", 1)[1]) as db:
            changed = db.execute(statement.format(past="'2000-01-01 00:00:00.000000'", slug="?"), (slug,)).rowcount
    else:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            status = await conn.execute(statement.format(past="'2000-01-01 00:00:00+00'", slug="$1"), slug)
            changed = int(status.rsplit(" ", 1)[-1])
        finally:
            await conn.close()
    assert changed == 1


async def test_polls_before_the_sources_retry_time_do_not_ask_it_and_the_interval_is_the_sources(
        env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:
        slug = await _tenant(http, env, pending_retry_seconds=RETRY)
        offer = await create_offer(http, env, slug, TYPE, DEMO_PENDING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        assert result.transaction_id and result.interval == RETRY
        asked = await _source_calls(http, env, slug)
        assert asked == 1  # the credential request's query

        # Early: "pending", the time left, and the source is not asked (it would only say pending again).
        early = [await _poll(http, result) for _ in range(3)]
        for answer in early:
            assert answer.status_code == 202, answer.text
            assert answer.json()["transaction_id"] == result.transaction_id
            assert RETRY - 30 <= answer.json()["interval"] <= RETRY, answer.json()
        assert await _source_calls(http, env, slug) == asked

        # Due: the source is asked; still pending, it says 120 s again, and so does the answer.
        await _make_due(env, slug)
        pending = await _poll(http, result)
        assert pending.status_code == 202, pending.text
        assert pending.json()["interval"] == RETRY
        assert await _source_calls(http, env, slug) == asked + 1
        # ... and the next poll is early again.
        again = await _poll(http, result)
        assert again.status_code == 202 and RETRY - 30 <= again.json()["interval"] <= RETRY, again.text
        assert await _source_calls(http, env, slug) == asked + 1

        await _make_due(env, slug)
        done = await _poll(http, result)
        assert done.status_code == 200, done.text
        assert done.json()["credentials"][0]["credential"]
        # Delivered: later polls get the stored answer, without asking anyone.
        repeat = await _poll(http, result)
        assert await _source_calls(http, env, slug) == asked + 2
    assert repeat.status_code == 200 and repeat.json()["credentials"] == done.json()["credentials"]


async def test_a_source_that_retries_sooner_than_the_deferred_interval_still_gets_that_interval(
        env: IssuerEnv) -> None:
    """deferred_interval is the least interval a wallet is told; the sandbox source asks again after 1 s."""
    async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:
        slug = await _tenant(http, env, pending_retry_seconds=1)
        offer = await create_offer(http, env, slug, TYPE, DEMO_PENDING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            answer = await _poll(http, result)
            if answer.status_code != 202 or asyncio.get_running_loop().time() > deadline:
                break
            assert 1 <= answer.json()["interval"] <= max(1, env.settings.deferred_interval)
            await asyncio.sleep(answer.json()["interval"])
    assert result.interval == max(1, env.settings.deferred_interval)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("value", [0, 3601, "30", True, 2.5])
async def test_the_pending_retry_of_a_via_oberta_source_is_checked(issuer_env: IssuerEnv, value: Any) -> None:
    async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:
        r = await http.put(f"{issuer_env.url}/v1/types/{TYPE}/source", headers=issuer_env.headers("aoc-tax"),
                           json=_source(issuer_env, pending_retry_seconds=value))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_source"
    assert "pending_retry_seconds" in r.json()["error_description"]


async def test_the_migration_adds_the_next_poll_time_to_pending_transactions(database_url: str) -> None:
    """0017 on SQLite and PostgreSQL: a transaction made before it has no next poll time (its next poll
    asks the source, as before), new ones store theirs; down to 0016 and up again."""
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url, "0016")
    now = dt.datetime.now(dt.UTC)
    db = Database(database_url)
    row = {"tenant_id": "t_old", "token_hash": "t", "configuration_id": TYPE, "credential_id": "c_1",
           "source_reference": "ref", "subject": {"identifier": DEMO_PENDING}, "selector": None, "login": {},
           "holder_jwks": [], "request_id": "ref", "offer_id": None, "created_at": now,
           "expires_at": now + dt.timedelta(days=30), "sealed_response": None, "dpop_jkt": None}
    try:
        async with db.session() as session:
            await session.execute(insert(Tenant.__table__).values(id="t_old", slug="old", name="Old", display=[],
                                                                  body_id="", created_at=now))
            await session.execute(insert(DeferredTransaction.__table__).values(transaction_hash="before", **row))
        await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
        later = now + dt.timedelta(seconds=RETRY)
        async with db.session() as session:
            session.add(DeferredTransaction(transaction_hash="after", next_poll_at=later, **row))
        async with db.session() as session:
            kept = dict((await session.execute(select(DeferredTransaction.transaction_hash,
                                                      DeferredTransaction.next_poll_at))).all())
        assert kept == {"before": None, "after": later}
        await asyncio.to_thread(command.downgrade, make_config(MIGRATIONS, database_url), "0016")
        async with db.session() as session:
            columns = await session.run_sync(
                lambda s: [c["name"] for c in inspect(s.connection()).get_columns("deferred_transactions")])
        assert "next_poll_at" not in columns and "transaction_hash" in columns
        await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    finally:
        await db.dispose()


# -- a pending answer is delivered once: kept, and never lost -----------------------------------------

async def _sql(env: IssuerEnv, statement: str, *args: Any) -> list[tuple[Any, ...]] | int:
    """Run ``statement`` (``?`` placeholders) on the issuer's database: its rows, or the rows it changed."""
    url = str(env.settings.database_url)
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("///", 1)[1]) as db:
            cursor = db.execute(statement, args)
            return cursor.fetchall() if statement.lstrip().upper().startswith("SELECT") else cursor.rowcount
    numbered = statement
    for n in range(1, len(args) + 1):
        numbered = numbered.replace("?", f"${n}", 1)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        if statement.lstrip().upper().startswith("SELECT"):
            return [tuple(r) for r in await conn.fetch(numbered, *args)]
        return int((await conn.execute(numbered, *args)).rsplit(" ", 1)[-1])
    finally:
        await conn.close()


TENANT_ID = "(SELECT id FROM tenants WHERE slug = ?)"


async def _transaction(env: IssuerEnv, slug: str) -> tuple[Any, ...] | None:
    """The tenant's deferred transaction: (source_reference, source_context, sealed_record, sealed_response)."""
    rows = await _sql(env, "SELECT source_reference, source_context, sealed_record, sealed_response "
                           f"FROM deferred_transactions WHERE tenant_id = {TENANT_ID}", slug)
    assert isinstance(rows, list) and len(rows) <= 1
    return rows[0] if rows else None


async def test_a_poll_is_sent_under_the_context_the_query_was_sent_under(env: IssuerEnv) -> None:
    """The tenant edits its source's purpose and official while a query is pending. The source's answer
    echoes the context the query was sent with: checked against the edited one, it was refused (502), and
    the source, which had delivered it, answered the next poll "unknown IdPeticion" (400) for 30 days."""
    async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:
        slug = await _tenant(http, env, pending_retry_seconds=RETRY)
        offer = await create_offer(http, env, slug, TYPE, DEMO_PENDING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        assert result.transaction_id
        sent = _source(env)["context"]
        edited = _source(env, pending_retry_seconds=RETRY)
        edited["context"] = {**sent, "purpose": "Subvencions 2027", "official_name": "Una altra oficina"}
        r = await http.put(f"{env.url}/v1/types/{TYPE}/source", headers=env.headers(slug), json=edited)
        assert r.status_code == 200, r.text

        await _make_due(env, slug)
        assert (await _poll(http, result)).status_code == 202  # the sandbox answers on the second poll
        await _make_due(env, slug)
        done = await _poll(http, result)
    assert done.status_code == 200, done.text
    told = done.json()["query_evidence"]
    assert told["purpose"] == "Subvencions" and told["official"] == {"name": "Oficina"}  # as sent, not as edited
    stored = (await _transaction(env, slug))[1]  # kept on the transaction (migration 0018)
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored == {**sent, "requesting_body_id": slug, "requesting_body_name": "Deferred polls"}


async def test_a_poll_whose_issuance_failed_is_issued_from_the_kept_record_without_asking_again(
        env: IssuerEnv) -> None:
    """The source answers a poll with the data, and the credential cannot be signed (the tenant has no
    active signing key: 503). The record was kept, sealed, on the transaction: the next poll issues from it
    and does not ask the source, which delivered its answer once (asked again, it answers "unknown
    IdPeticion", and the transaction was refused for good)."""
    async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:
        slug = await _tenant(http, env, pending_retry_seconds=RETRY)
        offer = await create_offer(http, env, slug, TYPE, DEMO_PENDING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        await _make_due(env, slug)
        assert (await _poll(http, result)).status_code == 202
        await _make_due(env, slug)
        assert await _sql(env, f"UPDATE signing_keys SET active = FALSE WHERE tenant_id = {TENANT_ID}", slug) == 1
        failed = await _poll(http, result)
        assert failed.status_code == 503 and failed.json()["error"] == "temporarily_unavailable", failed.text
        asked = await _source_calls(http, env, slug)
        _, _, kept, delivered = await _transaction(env, slug)

        assert await _sql(env, f"UPDATE signing_keys SET active = TRUE WHERE tenant_id = {TENANT_ID}", slug) == 1
        done = await _poll(http, result)
        assert done.status_code == 200, done.text
        assert done.json()["credentials"] and done.json()["query_evidence"]["purpose"] == "Subvencions"
        assert await _source_calls(http, env, slug) == asked  # the source was not asked again
        again = await _poll(http, result)
    assert again.status_code == 200 and again.json()["credentials"] == done.json()["credentials"]
    # Between the two polls the record was kept, sealed, and no response; now the response is kept (for a
    # wallet that failed to store it), and the record no more.
    assert kept is not None and delivered is None and b"POSITIVO" not in bytes(kept)
    _, _, kept, delivered = await _transaction(env, slug)
    assert kept is None and delivered is not None


async def test_a_pending_query_the_source_refuses_for_good_ends_its_transaction(env: IssuerEnv) -> None:
    """Its answer was consumed elsewhere (here: collected by another client, as when a poll that heard it
    stopped before keeping it): the source answers "unknown IdPeticion". The wallet is told
    credential_request_denied, which tells it to stop polling (OpenID4VCI 1.0 §9.3), the transaction is
    deleted, and a later poll is invalid_transaction_id, not the same refusal for 30 days."""
    sandbox = env.sandbox
    async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:
        slug = await _tenant(http, env, pending_retry_seconds=RETRY)
        offer = await create_offer(http, env, slug, TYPE, DEMO_PENDING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        reference = (await _transaction(env, slug))[0]
        other = ViaObertaClient(sandbox.viaoberta_url, signing_key_pem=sandbox.requester_key_pem,
                                signing_cert_pem=sandbox.requester_cert_pem,
                                platform_certs_pem=[sandbox.platform_cert_pem], http=http)
        while isinstance(await other.poll(reference, "ECOT103"), PendingResult):
            pass

        await _make_due(env, slug)
        refused = await _poll(http, result)
        assert refused.status_code == 400 and refused.json()["error"] == "credential_request_denied", refused.text
        assert "will not complete" in refused.json()["error_description"]
        assert await _transaction(env, slug) is None
        later = await _poll(http, result)
    assert later.status_code == 400 and later.json()["error"] == "invalid_transaction_id", later.text


async def test_two_polls_at_once_ask_the_source_once(env: IssuerEnv) -> None:
    """A wallet that polls again while its first poll still waits for the source (a slow one, here a
    sandbox answering after a second): the second is answered "pending" without asking the source. Two
    queries at once would make the source deliver its answer to one and refuse the other."""
    platform = generate_identity("slow platform")
    slow = ViaObertaSandboxConfig(signing_key_pem=platform.key_pem, signing_cert_pem=platform.cert_pem,
                                  registered_certs_pem=[env.sandbox.requester_cert_pem],
                                  pending_identifiers=frozenset({DEMO_PENDING}), pending_polls=5, fault="latency",
                                  latency_seconds=1.0, allow_fault_header=False)
    with serve(create_viaoberta(slow)) as slow_url:
        async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:
            slug = await _tenant(http, env, pending_retry_seconds=RETRY, endpoint=slow_url,
                                 platform_certs_pem=[platform.cert_pem.decode()])
            offer = await create_offer(http, env, slug, TYPE, DEMO_PENDING)
            result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
            asked = await _source_calls(http, env, slug)
            await _make_due(env, slug)
            answers = await asyncio.gather(_poll(http, result), _poll(http, result))
            assert await _source_calls(http, env, slug) == asked + 1
    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]


async def test_the_migration_keeps_the_sent_context_and_the_polled_record(database_url: str) -> None:
    """0018 on SQLite and PostgreSQL: a transaction made before it has neither (it is polled under the
    current context, as before), new ones store theirs; down to 0017 and up again."""
    await asyncio.to_thread(run_migrations, MIGRATIONS, database_url, "0017")
    now = dt.datetime.now(dt.UTC)
    db = Database(database_url)
    row = {"tenant_id": "t_old", "token_hash": "t", "configuration_id": TYPE, "credential_id": "c_1",
           "source_reference": "ref", "subject": {"identifier": DEMO_PENDING}, "selector": None, "login": {},
           "holder_jwks": [], "request_id": "ref", "offer_id": None, "created_at": now,
           "expires_at": now + dt.timedelta(days=30), "sealed_response": None, "dpop_jkt": None, "next_poll_at": None}
    sent = {"purpose": "Subvencions", "procedure": "ECOT", "consent": "Si", "official_name": "Oficina",
            "official_nif": "00000000T", "requesting_body_id": "L0", "requesting_body_name": "Ajuntament"}
    try:
        async with db.session() as session:
            await session.execute(insert(Tenant.__table__).values(id="t_old", slug="old", name="Old", display=[],
                                                                  body_id="", created_at=now))
            await session.execute(insert(DeferredTransaction.__table__).values(transaction_hash="before", **row))
        await asyncio.to_thread(run_migrations, MIGRATIONS, database_url, "0018")
        async with db.session() as session:
            session.add(DeferredTransaction(transaction_hash="after", source_context=sent, sealed_record=b"\x01sealed",
                                            **row))
        async with db.session() as session:
            kept = {r[0]: tuple(r[1:]) for r in (await session.execute(select(
                DeferredTransaction.transaction_hash, DeferredTransaction.source_context,
                DeferredTransaction.sealed_record))).all()}
        assert kept == {"before": (None, None), "after": (sent, b"\x01sealed")}
        await asyncio.to_thread(command.downgrade, make_config(MIGRATIONS, database_url), "0017")
        async with db.session() as session:
            columns = await session.run_sync(
                lambda s: [c["name"] for c in inspect(s.connection()).get_columns("deferred_transactions")])
        assert "source_context" not in columns and "sealed_record" not in columns and "next_poll_at" in columns
        await asyncio.to_thread(run_migrations, MIGRATIONS, database_url)
    finally:
        await db.dispose()
