"""PostgreSQL stopped for a few seconds and started again (same port) while the services are under load.

The issuer and the verifier run as their own processes on a PostgreSQL cluster of this module's own
(so no other test's database goes away). Clients keep calling endpoints that read and write the
database, and the issuer's nonce endpoint, which needs none and keeps answering. While the server is
down every answer is either a success or a 503 with the typed body
(``temporarily_unavailable`` and ``Retry-After``): never a 500, never a hang. Once it is back, the same
processes (not restarted) serve every endpoint again within seconds: their pools drop the dead
connections and reconnect.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service_kit.settings import settings_env
from ssi import x509 as ssi_x509
from tests.faults.conftest import ROOT, IssuerStack, issuer_stack, tax_citizens
from tests.support.postgres import PostgresCluster
from tests.support.servers import free_port
from verifier.provisioning import provision_demo as provision_verifier
from verifier.settings import VerifierSettings

DOWN_SECONDS = 4.0
CLIENT_TIMEOUT = 40.0


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    if cluster._dir is None:  # an external server (CARTERA_TEST_POSTGRES_URL) cannot be restarted from here
        pytest.fail("this test restarts PostgreSQL: it needs the throwaway local cluster", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def _pg_ctl(cluster: PostgresCluster, *args: str) -> None:
    assert cluster._dir is not None
    cluster._run("pg_ctl", "-D", str(cluster._dir / "data"), *args)


def restart(cluster: PostgresCluster, down_seconds: float) -> None:
    """Stop the server (fast shutdown: sessions are cut), wait, start it with the same options."""
    assert cluster._dir is not None
    data = cluster._dir / "data"
    argv = shlex.split((data / "postmaster.opts").read_text())
    options = [a for i, a in enumerate(argv[1:], start=1) if a != "-D" and argv[i - 1] != "-D"]
    _pg_ctl(cluster, "-m", "fast", "-w", "stop")
    time.sleep(down_seconds)
    _pg_ctl(cluster, "-o", shlex.join(options), "-l", str(cluster._dir / "server.log"), "-w", "-t", "60", "start")


@dataclass
class Outcome:
    """One call: when it started, how long it took, its status (0: no answer) and error code."""

    started: float
    seconds: float
    status: int
    error: str = ""


@dataclass
class Load:
    """Client threads calling one endpoint each in a loop until stopped."""

    calls: dict[str, Callable[[httpx.Client], httpx.Response]]
    results: dict[str, list[Outcome]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def _run(self, name: str, call: Callable[[httpx.Client], httpx.Response]) -> None:
        out = self.results.setdefault(name, [])
        with httpx.Client(timeout=CLIENT_TIMEOUT) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = call(http)
                    error = ""
                    if response.status_code >= 400:
                        body = response.json()
                        error = f"{body.get('error')}|{response.headers.get('retry-after', '')}"
                    out.append(Outcome(started, time.monotonic() - started, response.status_code, error))
                except (httpx.HTTPError, ValueError) as exc:
                    out.append(Outcome(started, time.monotonic() - started, 0, type(exc).__name__))
                time.sleep(0.05)

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._run, args=item, daemon=True) for item in self.calls.items()]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)


@pytest.fixture(scope="module")
def services(own_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[IssuerStack, subprocess.Popen[bytes], str, str]]:
    folder = tmp_path_factory.mktemp("pg-restart")
    with issuer_stack(folder, own_cluster.create_database(prefix="issuer")) as stack:
        port = free_port()
        ca_key, ca = ssi_x509.create_ca("Cartera fault-test RP CA")
        settings = VerifierSettings(database_url=own_cluster.create_database(prefix="verifier"),
                                    public_url=f"http://127.0.0.1:{port}", port=port, dev_mode=True,
                                    master_key="4" * 64, data_dir=folder / "verifier", log_level="warning",
                                    rate_limits_enabled=False)
        info = asyncio.run(provision_verifier(settings, ca_key=ca_key, ca_cert=ca))
        agency_key = next(iter(info["agencies"].values()))["api_key"]
        with (folder / "verifier.log").open("ab") as log:
            verifier = subprocess.Popen(  # noqa: S603 - the service's own command line
                [sys.executable, "-m", "service_kit.server", "verifier.app:create_app", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"],
                env={**os.environ, **settings_env(settings)}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{settings.public_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert verifier.poll() is None and time.monotonic() < deadline, "the verifier did not start"
                time.sleep(0.1)
            yield stack, verifier, settings.public_url, agency_key
        finally:
            verifier.terminate()
            verifier.wait(timeout=15)


def test_postgres_restart_under_load_gives_503s_then_recovers_without_restart(
        own_cluster: PostgresCluster, services: tuple[IssuerStack, subprocess.Popen[bytes], str, str]) -> None:
    stack, verifier, verifier_url, agency_key = services
    issuer_pid, verifier_pid = stack.issuer.proc.pid, verifier.pid  # type: ignore[union-attr]
    identifier, name = tax_citizens(1)[0]
    tenant = stack.tenant_url
    calls: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        # Hands out c_nonce values without the database (issuer/nonces.py): it must not notice the outage.
        "issuer nonce (no database)": lambda http: http.post(f"{tenant}/nonce"),
        "issuer offer (admin write)": lambda http: http.post(
            f"{stack.issuer.url}/v1/offers", headers=stack.admin, json={
                "credential_configuration_ids": ["tax-compliance"], "subject": {"identifier": identifier, "name": name},
                "tx_code": True, "by_reference": True}),
        "issuer readiness": lambda http: http.get(f"{stack.issuer.url}/readyz"),
        "verifier request (write)": lambda http: http.post(
            f"{verifier_url}/v1/requests", headers={"Authorization": f"Bearer {agency_key}"},
            json={"template": "grant-application"}),
        "verifier readiness": lambda http: http.get(f"{verifier_url}/readyz"),
    }
    with Load(calls) as load:
        # Warm: every endpoint answered successfully twice (pools open, caches filled) before the outage.
        deadline = time.monotonic() + 30
        while not all(sum(o.status in (200, 201) for o in load.results.get(name, [])) >= 2 for name in calls):
            assert time.monotonic() < deadline, "the services did not answer before the outage"
            time.sleep(0.1)
        down_at = time.monotonic()
        restart(own_cluster, DOWN_SECONDS)
        up_at = time.monotonic()

        def recovered(name: str) -> bool:
            last = [o for o in load.results[name] if o.started > up_at][-3:]
            return len(last) == 3 and all(o.status in (200, 201) for o in last)

        deadline = time.monotonic() + 60
        while not all(recovered(name) for name in calls) and time.monotonic() < deadline:
            time.sleep(0.2)
        recovery = time.monotonic() - up_at
    # Same processes all along: recovery needed no restart.
    assert stack.issuer.proc.poll() is None and verifier.poll() is None  # type: ignore[union-attr]
    assert (stack.issuer.proc.pid, verifier.pid) == (issuer_pid, verifier_pid)  # type: ignore[union-attr]

    for name, outcomes in load.results.items():
        before = [o for o in outcomes if o.started + o.seconds < down_at]
        assert before and all(o.status in (200, 201) for o in before), f"{name}: before the outage {[(o.status, o.error) for o in before if o.status not in (200, 201)]}"
        # Never a 500 nor a dropped request; every failure is the typed 503 with Retry-After.
        failures = [o for o in outcomes if o.status not in (200, 201)]
        if "readiness" in name:
            # /readyz answers its own document (which check failed), with 503 so traffic goes elsewhere.
            untyped = [(o.status, o.error) for o in failures if o.status != 503]
        else:
            untyped = [(o.status, o.error) for o in failures if not (
                o.status == 503 and o.error.split("|")[0] == "temporarily_unavailable" and o.error.split("|")[1])]
        assert not untyped, f"{name}: {untyped}"
        # No hang: nothing waited for the database much longer than it was down (slack for a loaded machine).
        assert max(o.seconds for o in outcomes) < DOWN_SECONDS + 25, name
        if "no database" in name:
            assert not failures and any(down_at <= o.started <= up_at for o in outcomes), name
            continue
        # The outage was seen (the load did reach the database while it was down).
        assert any(o.status == 503 and down_at <= o.started <= up_at for o in outcomes), name
        # Recovered: the last three calls after the start succeeded, within a minute at most.
        assert recovered(name), (name, recovery, [(o.status, o.error) for o in outcomes[-3:]])
    assert Path(own_cluster._dir or "").exists()
