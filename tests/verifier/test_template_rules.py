"""Rules on what agencies may ask: holder binding is always required (a query saying
``require_cryptographic_holder_binding: false`` is refused), and a template name is taken once, also
by two creations at the same moment (PostgreSQL's unique constraint decides: 409, never a 500).

Real servers on loopback: the session's verifier (SQLite) and, for the race, one of its own on a new
PostgreSQL database, whose template table the test locks so that both creations pass the name check
before either inserts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest

from tests.support.postgres import PostgresCluster
from tests.verifier.conftest import PKI, VCT_TAX, Verifier, start_verifier
from tests.verifier.test_expiry import _in_db, _until
from verifier.models import Agency, Template

UNBOUND = {"id": "tax", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT_TAX]}, "claims": [{"path": ["nif"]}],
           "require_cryptographic_holder_binding": False}


def _template(name: str, *, binding: bool | None = None) -> dict[str, Any]:
    query = {k: v for k, v in UNBOUND.items() if k != "require_cryptographic_holder_binding"}
    if binding is not None:
        query["require_cryptographic_holder_binding"] = binding
    return {"name": name, "dcql_query": {"credentials": [query]}, "purpose": {"en": "Testing"},
            "trusted_issuers": [{"vct": VCT_TAX}], "response_mode": "direct_post"}


def _refused_for_binding(response: Any) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "require_cryptographic_holder_binding" in body["error_description"]
    assert "holder binding" in body["error_description"]


def test_a_template_without_holder_binding_is_refused(http, verifier):
    url, h = f"{verifier.url}/v1/templates", verifier.headers()
    name = f"unbound-{time.time_ns()}"
    _refused_for_binding(http.post(url, json=_template(name, binding=False), headers=h))
    assert http.get(f"{url}/{name}", headers=h).status_code == 404
    # true (the default, said explicitly) is accepted; replacing it by false is refused.
    assert http.post(url, json=_template(name, binding=True), headers=h).status_code == 201
    _refused_for_binding(http.put(f"{url}/{name}", json=_template(name, binding=False), headers=h))
    stored = http.get(f"{url}/{name}", headers=h).json()
    assert stored["dcql_query"]["credentials"][0]["require_cryptographic_holder_binding"] is True


def test_an_ad_hoc_request_without_holder_binding_is_refused(http, verifier):
    body = {"dcql_query": {"credentials": [UNBOUND]}, "purpose": {"en": "Testing"},
            "trusted_issuers": [{"vct": VCT_TAX}], "response_mode": "direct_post"}
    _refused_for_binding(http.post(f"{verifier.url}/v1/requests", json=body, headers=verifier.headers()))
    body["dcql_query"] = {"credentials": [{**UNBOUND, "require_cryptographic_holder_binding": True}]}
    assert http.post(f"{verifier.url}/v1/requests", json=body, headers=verifier.headers()).status_code == 201


def _store_template(verifier: Verifier, name: str, query: dict[str, Any]) -> None:
    """A template written straight into the database, as one stored before today's rules would be."""

    async def work(db: Any) -> None:
        from sqlalchemy import select

        async with db.session() as session:
            agency_id = await session.scalar(select(Agency.id).where(Agency.slug == "ajuntament-barcelona"))
            now = dt.datetime.now(dt.UTC)
            session.add(Template(id=str(uuid.uuid4()), agency_id=agency_id, name=name,
                                 dcql_query={"credentials": [query]}, purpose={"en": "Testing"},
                                 trusted_issuers=[{"vct": VCT_TAX, "issuers": None, "metadata": False}],
                                 anchors_pem=[], retention_seconds=60, response_mode="direct_post",
                                 created_at=now, updated_at=now))

    _in_db(verifier, work)


def test_a_stored_template_without_holder_binding_makes_no_request(http, verifier):
    """A template stored before such queries were refused is not sent to wallets."""
    name = f"legacy-unbound-{time.time_ns()}"
    _store_template(verifier, name, UNBOUND)
    response = http.post(f"{verifier.url}/v1/requests", json={"template": name}, headers=verifier.headers())
    _refused_for_binding(response)
    assert name in response.json()["error_description"]


def test_a_stored_template_naming_an_authority_type_the_verifier_cannot_check_makes_no_request(http, verifier):
    """Such queries are refused when a template is created; one stored before that rule is refused when
    a request is made from it, rather than shown to wallets (which would offer nothing)."""
    name = f"legacy-etsi-{time.time_ns()}"
    query = {k: v for k, v in UNBOUND.items() if k != "require_cryptographic_holder_binding"}
    query["trusted_authorities"] = [{"type": "etsi_tl", "values": ["https://tl.example.eu/tl.xml"]}]
    _store_template(verifier, name, query)
    response = http.post(f"{verifier.url}/v1/requests", json={"template": name}, headers=verifier.headers())
    assert response.status_code == 400, response.text
    assert name in response.json()["error_description"]
    assert "trusted_authorities" in response.json()["error_description"]


# -- two creations of one name at once -----------------------------------------------------------

@pytest.fixture
def pg_verifier(postgres_cluster: PostgresCluster, pki: PKI, tmp_path: Any) -> Iterator[tuple[Verifier, str]]:
    url = postgres_cluster.create_database()
    try:
        with start_verifier(tmp_path, pki, url) as running:
            yield running, url
    finally:
        postgres_cluster.drop_database(url)


class TableLock:
    """Holds ``LOCK TABLE templates IN SHARE ROW EXCLUSIVE MODE`` (reads go on, inserts wait) from
    another connection until :meth:`release`."""

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.locked = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE templates IN SHARE ROW EXCLUSIVE MODE")
                self.locked.set()
                await asyncio.to_thread(self.released.wait, 30)
        finally:
            await conn.close()

    def __enter__(self) -> TableLock:
        self.thread.start()
        assert self.locked.wait(10), "the table lock was not taken"
        return self

    def release(self) -> None:
        self.released.set()

    def __exit__(self, *_exc: Any) -> None:
        self.release()
        self.thread.join(10)


def _waiting_on_locks(cluster: PostgresCluster, url: str) -> int:
    database = url.rsplit("/", 1)[1]
    out = cluster.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
                      "AND wait_event_type = 'Lock'")
    return int(out.strip() or 0)


def test_two_concurrent_creations_of_one_name_give_one_template_and_a_conflict(http, pg_verifier,
                                                                                postgres_cluster):
    verifier, url = pg_verifier
    name = f"race-{time.time_ns()}"
    post = lambda: http.post(f"{verifier.url}/v1/templates", json=_template(name),  # noqa: E731
                             headers=verifier.headers())
    with TableLock(url) as lock, ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(post), pool.submit(post)]
        # Both found no template of that name and wait to insert it: the race, made certain.
        both_waiting = _until(lambda: _waiting_on_locks(postgres_cluster, url) >= 2, timeout=10)
        lock.release()
        responses = [a.result(timeout=20) for a in answers]
    assert both_waiting, "the two creations did not both reach the insert"
    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    conflict = next(r for r in responses if r.status_code == 409).json()
    assert conflict["error"] == "conflict" and conflict["error_description"]
    listed = http.get(f"{verifier.url}/v1/templates", headers=verifier.headers()).json()
    assert [t["name"] for t in listed].count(name) == 1
