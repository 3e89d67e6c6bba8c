"""Issuance benchmark: concurrent wallets running the whole pre-authorized flow against the issuer.

Each wallet loops: offer created through the admin API → token (with tx_code) → nonce → key proof →
credential. The issuer runs in its own uvicorn process (``issuer.app:create_app``) on loopback, with
SQLite and then with PostgreSQL (a throwaway cluster from ``tests/support/postgres.py``); its data
source is a SQL table (a registry in a local SQLite file), so the figures measure the issuer, not a
SOAP stand-in. The load generator (this process) shares the same machine.

Printed per backend and concurrency (1, 8, 32 wallets): credentials per second, p50/p99 latency of
the whole flow and of the credential request alone, the cost per credential in CPU-milliseconds of
the machine (wall time × cores / credentials) and, measured from ``/proc``, the CPU time per
credential of the issuer processes, of PostgreSQL and of this load generator — on a machine shared
with other work those are the stable figures — beside the bare ``ssi`` issue cost measured in the
same run; after the load levels, the CPU cost of one cheap request (``GET /healthz``, and the nonce
endpoint: an HMAC, no database), the floor each of a flow's four requests pays before any
OpenID4VCI work. The wallets speak HTTP/1.1 through a minimal client (httpx would spend more CPU
than the issuer on a loopback request): by default each flow opens its own connection and keeps it alive for its four
requests, as a phone receiving one credential does. ``--connections wallet`` instead keeps one
connection per concurrent wallet for the whole run; with several issuer workers that measures the
kernel's hand-out of a few long-lived connections more than the issuer: the workers share one
listening socket, the first one awake accepts the whole opening burst, and the other worker idles
(seen here: one worker at 101% of a core, the other at 16%). Run:
``.venv/bin/python bench/issuance.py [--seconds 8] [--backends sqlite,postgresql] [--workers 2]
[--connections flow|wallet] [--pg-connect tcp|socket] [--profile /tmp/issuer]`` (py-spy collapsed
stacks of the issuer, one file per backend).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cputime import postmaster_pid, process_tree_cpu  # noqa: E402
from loadclient import Connection  # noqa: E402

from credential_schemas import load_builtin_types  # noqa: E402
from service_kit.migrations import run_migrations  # noqa: E402
from ssi import x509 as ssi_x509  # noqa: E402
from ssi.jose import Key  # noqa: E402
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT, build_proof_jwt  # noqa: E402
from ssi.sd_jwt_vc import issue_sd_jwt_vc  # noqa: E402
from ssi.status_list import status_claim  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.servers import free_port, wait_http  # noqa: E402

ADMIN = "bench-admin-" + secrets.token_urlsafe(8)
SUBJECTS = [f"{n:08d}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}" for n in range(10_000_000, 10_000_200)]


def make_registry(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tax (nif TEXT PRIMARY KEY, resultado TEXT, referencia TEXT, fecha TEXT)")
        db.executemany("INSERT INTO tax VALUES (?, 'POSITIVO', ?, '20260320')",
                       [(s, f"ECOT103{i:012d}") for i, s in enumerate(SUBJECTS)])


def start_issuer(database_url: str, folder: Path, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    ca_key, ca_cert = ssi_x509.create_ca("Cartera bench CA")
    (folder / "ca.key").write_bytes(ca_key.private_pem())
    (folder / "ca.pem").write_bytes(ssi_x509.cert_to_pem(ca_cert))
    env = {**os.environ, "CARTERA_ISSUER_DATABASE_URL": database_url, "CARTERA_ISSUER_PORT": str(port),
           "CARTERA_ISSUER_PUBLIC_URL": f"http://127.0.0.1:{port}", "CARTERA_ISSUER_DEV_MODE": "true",
           "CARTERA_ISSUER_MASTER_KEY": secrets.token_hex(32), "CARTERA_ISSUER_ADMIN_API_KEY": ADMIN,
           "CARTERA_ISSUER_DATA_DIR": str(folder), "CARTERA_ISSUER_CA_KEY_FILE": str(folder / "ca.key"),
           "CARTERA_ISSUER_CA_CERT_FILE": str(folder / "ca.pem"), "CARTERA_ISSUER_LOG_LEVEL": "warning",
           # Every wallet of the load comes from 127.0.0.1: raise (not disable) the per-client limit, so
           # the limiter's statement stays in the measured cost.
           "CARTERA_ISSUER_RATE_LIMIT_TOKEN_CLIENT": "100000000/60",
           # The registry, opened to the bench tenant: a source names it, never its URL.
           "CARTERA_ISSUER_SQL_CONNECTIONS": json.dumps(
               {"registry": {"url": f"sqlite:///{folder / 'registry.sqlite'}", "tenants": ["bench"]}})}
    # Migrate first, so that several workers starting together find the schema in place.
    run_migrations(ROOT / "issuer" / "migrations", database_url)
    proc = subprocess.Popen([sys.executable, "-m", "service_kit.server", "issuer.app:create_app", "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"],
                            cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
    return proc


async def provision(base: str) -> str:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{base}/v1/tenants", json={"slug": "bench", "name": "Bench issuer"},
                            headers={"Authorization": f"Bearer {ADMIN}"})
        r.raise_for_status()
        key = r.json()["api_key"]
        headers = {"Authorization": f"Bearer {key}"}
        (await http.post(f"{base}/v1/types", json={"builtin": "tax-compliance"}, headers=headers)).raise_for_status()
        (await http.put(f"{base}/v1/types/tax-compliance/source", headers=headers, json={
            "kind": "sql", "connection": "registry", "product": "ECOT103",
            "query": "SELECT resultado, referencia, fecha FROM tax WHERE nif = :identifier",
            "fields": {"Certificado.Resultado": "resultado", "Certificado.ReferenciaAEAT": "referencia",
                       "Certificado.FechaEmision": "fecha"},
            "context": {"purpose": "Benchmark", "procedure": "BENCH", "consent": "Ley", "official_name": "Bench",
                        "official_nif": "00000000T"}})).raise_for_status()
        return key




def run(coro: Any) -> Any:
    """``asyncio.run`` on uvloop: the load generator shares the two cores with what it measures, and
    the issuer's own event loop costs it less CPU per request (uvloop is a dependency of the services)."""
    return uvloop.run(coro)


def _checked(status: int, body: bytes, step: str) -> dict:
    if status >= 300:
        raise RuntimeError(f"{step} failed: {status} {body[:200]!r}")
    return json.loads(body)


async def one_flow(http: Connection, base: str, api_key: str, holder: Key, subject: str) -> tuple[float, float]:
    start = time.perf_counter()
    offer = _checked(*await http.request("POST", f"{base}/v1/offers", content_type="application/json", body=json.dumps({
        "credential_configuration_ids": ["tax-compliance"], "subject": {"identifier": subject, "name": "Bench"},
        "by_reference": False}).encode(), headers={"Authorization": f"Bearer {api_key}"}), "offer")
    grant = offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]
    issuer = offer["offer"]["credential_issuer"]
    form = urlencode({"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": grant["pre-authorized_code"],
                      "tx_code": offer["tx_code"]}).encode()
    token = _checked(*await http.request("POST", f"{issuer}/token", body=form,
                                         content_type="application/x-www-form-urlencoded"), "token")["access_token"]
    nonce = _checked(*await http.request("POST", f"{issuer}/nonce"), "nonce")["c_nonce"]
    proof = build_proof_jwt(holder, audience=issuer, nonce=nonce)
    t_credential = time.perf_counter()
    body = json.dumps({"credential_configuration_id": "tax-compliance", "proofs": {"jwt": [proof]}}).encode()
    answer = _checked(*await http.request("POST", f"{issuer}/credential", body=body, content_type="application/json",
                                          headers={"Authorization": f"Bearer {token}"}), "credential")
    if not answer.get("credentials"):
        raise RuntimeError("credential response without credentials")
    end = time.perf_counter()
    return end - start, end - t_credential


async def run_load(base: str, api_key: str, wallets: int, seconds: float, per_flow: bool = True) -> dict[str, float]:
    """``wallets`` concurrent loops of whole flows for ``seconds``. ``per_flow``: each flow on a new
    connection (a new phone each time); otherwise each loop keeps one keep-alive connection."""
    flows: list[float] = []
    credential_calls: list[float] = []
    deadline = time.perf_counter() + seconds

    async def wallet(n: int) -> None:
        holder = Key.generate()
        http = Connection(base)
        i = n
        try:
            while time.perf_counter() < deadline:
                flow, cred = await one_flow(http, base, api_key, holder, SUBJECTS[i % len(SUBJECTS)])
                flows.append(flow)
                credential_calls.append(cred)
                i += wallets
                if per_flow:
                    await http.close()
                    http = Connection(base)
        finally:
            await http.close()

    warm = Connection(base)
    await one_flow(warm, base, api_key, Key.generate(), SUBJECTS[0])  # warm-up
    await warm.close()
    started = time.perf_counter()
    await asyncio.gather(*(wallet(n) for n in range(wallets)))
    elapsed = time.perf_counter() - started
    flows.sort()
    credential_calls.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    return {"credentials": len(flows), "per_second": len(flows) / elapsed, "p50_ms": pct(flows, 0.5),
            "p99_ms": pct(flows, 0.99), "credential_p50_ms": pct(credential_calls, 0.5),
            "credential_p99_ms": pct(credential_calls, 0.99),
            "cpu_ms_per_credential": elapsed * (os.cpu_count() or 1) * 1000 / max(1, len(flows))}






async def request_load(base: str, method: str, path: str, seconds: float, connections: int = 8) -> int:
    """How many ``method path`` requests ``connections`` keep-alive clients complete in ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        http = Connection(base)
        try:
            while time.perf_counter() < deadline:
                _checked(*await http.request(method, f"{base}{path}"), path)
                done += 1
        finally:
            await http.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return done


def request_floor(base: str, method: str, path: str, server_pid: int, db_pid: int, seconds: float = 2.0) -> tuple[float, float]:
    """Issuer and PostgreSQL CPU ms per request of one cheap endpoint: what any request costs before
    OpenID4VCI work (uvicorn, FastAPI, the middleware; the nonce endpoint adds an HMAC, no database)."""
    run(request_load(base, method, path, 0.5))
    before = process_tree_cpu(server_pid), process_tree_cpu(db_pid)
    n = max(1, run(request_load(base, method, path, seconds))) / 1000
    return (process_tree_cpu(server_pid) - before[0]) / n, (process_tree_cpu(db_pid) - before[1]) / n


def bare_issue_cost(rounds: int = 400) -> float:
    ctype = load_builtin_types()["tax-compliance"]
    key = Key.generate()
    holder = Key.generate().public_jwk()
    claims = {"nif": "12345678Z", "name": "Bench", "complianceStatus": "POSITIVE", "purpose": "ECOT103",
              "aeatReference": "ECOT1030000000001", "issuedAt": "2026-03-20", "validUntil": "2026-09-20"}
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(rounds):
            issue_sd_jwt_vc(claims, vct=ctype.vct, issuer="https://issuer.example/t/bench", key=key, holder_jwk=holder,
                            disclosable=ctype.disclosable_paths(), status=status_claim(i, "https://issuer.example/s/1"),
                            exp=int(time.time()) + 3600)
        best = min(best, (time.perf_counter() - start) / rounds)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each load level")
    parser.add_argument("--wallets", default="1,8,32", help="concurrency levels")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the issuer")
    parser.add_argument("--connections", choices=("flow", "wallet"), default="flow",
                        help="a new keep-alive connection per flow (default), or one per wallet for the whole run")
    parser.add_argument("--pg-connect", choices=("tcp", "socket"), default="tcp",
                        help="reach PostgreSQL over loopback TCP (default) or its Unix-domain socket")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="record the issuer with py-spy during the load (PREFIX-<backend>.txt, collapsed stacks)")
    args = parser.parse_args()
    bare = bare_issue_cost()
    print(f"bare ssi issue_sd_jwt_vc (tax-compliance, 1 holder key): {bare:.3f} ms per credential")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; load generator and issuer "
          f"({args.workers} worker(s)) on the same machine; one connection per {args.connections}")
    print("CPU ms per credential of the issuer processes (server), of PostgreSQL (db) and of this load generator "
          "(client); machine = wall time x cores / credentials\n")
    print(f"{'backend':<11}{'wallets':>8}{'creds':>7}{'cred/s':>9}{'flow p50':>10}{'flow p99':>10}"
          f"{'cred p50':>10}{'cred p99':>10}{'machine':>9}{'server':>8}{'db':>6}{'client':>8}{'srv/bare':>9}")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            registry = folder / "registry.sqlite"
            make_registry(registry)
            cluster = None
            if backend == "postgresql":
                cluster = PostgresCluster()
                cluster.start()
                url = cluster.create_database()
                if args.pg_connect == "socket":
                    url = cluster.socket_url(url)
            else:
                url = f"sqlite+aiosqlite:///{folder / 'issuer.db'}"
            port = free_port()
            proc = start_issuer(url, folder, port, args.workers)
            profiler = None
            try:
                base = f"http://127.0.0.1:{port}"
                api_key = run(provision(base))
                levels = [int(w) for w in args.wallets.split(",")]
                # Warm-up at the highest concurrency, not counted: the pools open their connections and
                # the statement caches fill, so every level measures the steady state.
                per_flow = args.connections == "flow"
                run(run_load(base, api_key, max(levels), min(3.0, args.seconds), per_flow))
                if args.profile:
                    profiler = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--subprocesses",
                         "--rate", "200", "--pid", str(proc.pid), "--duration", str(int(args.seconds * len(levels)) + 2),
                         "-o", f"{args.profile}-{backend}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)
                db_pid = postmaster_pid(cluster)
                for wallets in levels:
                    before = process_tree_cpu(proc.pid), process_tree_cpu(db_pid), time.process_time()
                    r = run(run_load(base, api_key, wallets, args.seconds, per_flow))
                    n = max(1, r["credentials"]) / 1000
                    server = (process_tree_cpu(proc.pid) - before[0]) / n
                    db = (process_tree_cpu(db_pid) - before[1]) / n
                    client = (time.process_time() - before[2]) / n
                    db_text = f"{db:>6.1f}" if cluster is not None else f"{'-':>6}"
                    print(f"{backend:<11}{wallets:>8}{r['credentials']:>7.0f}{r['per_second']:>9.1f}{r['p50_ms']:>10.1f}"
                          f"{r['p99_ms']:>10.1f}{r['credential_p50_ms']:>10.1f}{r['credential_p99_ms']:>10.1f}"
                          f"{r['cpu_ms_per_credential']:>9.1f}{server:>8.1f}{db_text}{client:>8.1f}"
                          f"{server / bare:>9.0f}", flush=True)
                if profiler is not None:
                    profiler.wait(timeout=120)
                health = request_floor(base, "GET", "/healthz", proc.pid, db_pid)
                nonce = request_floor(base, "POST", "/t/bench/nonce", proc.pid, db_pid)
                db_part = f" + {nonce[1]:.2f} ms db" if cluster is not None else ""
                print(f"{backend:<11}floor per request (8 connections): GET /healthz {health[0]:.2f} ms server; "
                      f"POST nonce (no database) {nonce[0]:.2f} ms server{db_part}", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=20)
                if cluster is not None:
                    cluster.stop()


if __name__ == "__main__":
    main()
