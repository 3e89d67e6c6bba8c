"""Issuance benchmark: concurrent wallets running the whole pre-authorized flow against the issuer.

Each wallet loops: offer created through the admin API → token (with tx_code) → nonce → key proof →
credential. The issuer runs in its own uvicorn process (``issuer.app:create_app``) on loopback, with
SQLite and then with PostgreSQL (a throwaway cluster from ``tests/support/postgres.py``); its data
source is a SQL table (a registry in a local SQLite file), so the figures measure the issuer, not a SOAP
stand-in. The load generator (this process) shares the same machine.

Printed per backend and concurrency (1, 8, 32 wallets): credentials per second, p50/p99 latency of the
whole flow and of the credential request alone, the cost per credential in CPU-milliseconds of the
machine (wall time × cores / credentials) and, measured from ``/proc``, the CPU time per credential of
the issuer processes, of PostgreSQL and of this load generator — on a machine shared with other work
those are the stable figures — beside the bare ``ssi`` issue cost measured in the same run (CPU time of
``issue_sd_jwt_vc`` called with the issuer's arguments); after the load levels, the CPU cost of one
cheap request (``GET /healthz``, and the nonce endpoint: an HMAC, no database), the floor each of a
flow's four requests pays before any OpenID4VCI work. Each row also carries the share of the machine's CPU
time stolen by the hypervisor during the level (``/proc/stat``): on a virtual machine with busy
neighbours a level can run on much less than two cores. The wallets speak HTTP/1.1 through a minimal
client (httpx would spend more CPU than the issuer on a loopback request): by default each flow opens
its own connection and keeps it alive for its four requests, as a phone receiving one credential does.
``--connections wallet`` instead keeps one connection per concurrent wallet for the whole run; with
several issuer workers that measures the kernel's hand-out of a few long-lived connections more than the
issuer: the workers share one listening socket, the first one awake accepts the whole opening burst, and
the other worker idles (seen here: one worker at 101% of a core, the other at 16%). PostgreSQL is
durable by default (``--pg-durability durable``: PostgreSQL's own fsync, synchronous_commit and
full_page_writes, all on, so a commit waits for its WAL flush); ``--pg-durability unsafe`` switches the
three off as the test suite does. The settings in force are read from the server (``SHOW``) and printed
before the backend's rows.

Every credential a wallet receives is kept and, after the level's deadline (outside the timed window and
after the CPU counters are read), verified as a wallet would with ``ssi``: signature by the ``x5c``
leaf, chain validated to the bench CA (the trust anchor), SAN matching ``iss``, ``cnf`` equal to that
wallet's holder key, ``vct`` the one of the issuer's metadata, ``status`` present, ``exp`` present and
in the future, at least one disclosure. A flow the issuer answers with a non-2xx (or a broken
connection) is counted per level by step and HTTP status/error code and the load goes on. The run exits
with status 1 after printing everything when any flow failed or any credential did not verify, so a
figure never comes silently from a run with errors.

Run: ``.venv/bin/python bench/issuance.py [--seconds 8] [--wallets 1,8,32] [--backends
sqlite,postgresql] [--workers 2] [--connections flow|wallet] [--pg-connect tcp|socket] [--pg-durability
durable|unsafe] [--profile /tmp/issuer]`` (py-spy collapsed stacks of the issuer, one file per backend).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cputime import machine_ticks, postmaster_pid, process_tree_cpu, steal_percent  # noqa: E402
from cryptography import x509 as cx509  # noqa: E402
from loadclient import Connection  # noqa: E402

from credential_schemas import load_builtin_types  # noqa: E402
from issuer.keys import issue_tenant_certificate  # noqa: E402
from service_kit.migrations import run_migrations  # noqa: E402
from ssi import x509 as ssi_x509  # noqa: E402
from ssi.errors import SSIError  # noqa: E402
from ssi.jose import Key  # noqa: E402
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT, build_proof_jwt  # noqa: E402
from ssi.sd_jwt_vc import X5CKeyResolver, issue_sd_jwt_vc, verify_sd_jwt_vc  # noqa: E402
from ssi.status_list import status_claim  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.servers import free_port, wait_http  # noqa: E402
from tests.support.wallet_client import well_known  # noqa: E402

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


async def provision(base: str) -> tuple[str, str]:
    """Create the bench tenant and its type; the tenant's API key and the type's ``vct`` as the issuer
    metadata publishes it (what a wallet expects to receive)."""
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
        metadata = await http.get(well_known(f"{base}/t/bench", "openid-credential-issuer"))
        metadata.raise_for_status()
        return key, metadata.json()["credential_configurations_supported"]["tax-compliance"]["vct"]




def run(coro: Any) -> Any:
    """``asyncio.run`` on uvloop: the load generator shares the two cores with what it measures, and
    the issuer's own event loop costs it less CPU per request (uvloop is a dependency of the services)."""
    return uvloop.run(coro)


class FlowError(Exception):
    """A step of a flow failed: the issuer answered with a non-2xx ``status`` (and its protocol
    ``error`` code when the body has one), or the exchange broke (``status`` 0, the exception's name)."""

    def __init__(self, step: str, status: int, code: str = "") -> None:
        self.step, self.status, self.code = step, status, code
        super().__init__(self.key)

    @property
    def key(self) -> str:
        """How failures are counted: ``token 429/slow_down``, ``credential 500``, ``nonce ConnectionResetError``."""
        what = str(self.status) if self.status else ""
        if self.code:
            what = f"{what}/{self.code}" if what else self.code
        return f"{self.step} {what}"


def _checked(status: int, body: bytes, step: str) -> dict:
    if not 200 <= status < 300:
        code = ""
        try:
            answer = json.loads(body)
            if isinstance(answer, dict):
                code = str(answer.get("error") or answer.get("code") or "")[:48]
        except ValueError:
            pass
        raise FlowError(step, status, code)
    try:
        return json.loads(body)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise FlowError(step, status, "bad_json") from exc


async def one_flow(http: Connection, base: str, api_key: str, holder: Key, subject: str) -> tuple[float, float, str]:
    """One whole pre-authorized flow: (flow seconds, credential request seconds, the credential).
    Any failure is a :class:`FlowError` naming the step."""
    step = "offer"
    try:
        start = time.perf_counter()
        offer = _checked(*await http.request("POST", f"{base}/v1/offers", content_type="application/json", body=json.dumps({
            "credential_configuration_ids": ["tax-compliance"], "subject": {"identifier": subject, "name": "Bench"},
            "by_reference": False}).encode(), headers={"Authorization": f"Bearer {api_key}"}), step)
        grant = offer["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]
        issuer = offer["offer"]["credential_issuer"]
        form = urlencode({"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": grant["pre-authorized_code"],
                          "tx_code": offer["tx_code"]}).encode()
        step = "token"
        token = _checked(*await http.request("POST", f"{issuer}/token", body=form,
                                             content_type="application/x-www-form-urlencoded"), step)["access_token"]
        step = "nonce"
        nonce = _checked(*await http.request("POST", f"{issuer}/nonce"), step)["c_nonce"]
        proof = build_proof_jwt(holder, audience=issuer, nonce=nonce)
        step = "credential"
        t_credential = time.perf_counter()
        body = json.dumps({"credential_configuration_id": "tax-compliance", "proofs": {"jwt": [proof]}}).encode()
        answer = _checked(*await http.request("POST", f"{issuer}/credential", body=body, content_type="application/json",
                                              headers={"Authorization": f"Bearer {token}"}), step)
        end = time.perf_counter()
        credentials = answer.get("credentials")
        if not (isinstance(credentials, list) and len(credentials) == 1 and isinstance(credentials[0], dict)
                and isinstance(credentials[0].get("credential"), str)):
            raise FlowError(step, 200, "not_one_credential")
        return end - start, end - t_credential, credentials[0]["credential"]
    except FlowError:
        raise
    except Exception as exc:  # a broken connection, an unexpected body: counted like an error status
        raise FlowError(step, 0, type(exc).__name__) from exc


async def run_load(base: str, api_key: str, wallets: int, seconds: float, per_flow: bool = True) -> dict[str, Any]:
    """``wallets`` concurrent loops of whole flows for ``seconds``. ``per_flow``: each flow on a new
    connection (a new phone each time); otherwise each loop keeps one keep-alive connection.

    A failed flow is counted in ``errors`` (by :attr:`FlowError.key`) and its wallet goes on with a
    new connection. ``received`` holds every credential with the thumbprint of the holder key of the
    wallet that asked for it, for :func:`verify_received` after the deadline."""
    flows: list[float] = []
    credential_calls: list[float] = []
    received: list[tuple[str, str]] = []
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def wallet(n: int) -> None:
        holder = Key.generate()
        thumbprint = holder.thumbprint()
        http = Connection(base)
        i = n
        try:
            while time.perf_counter() < deadline:
                try:
                    flow, cred, credential = await one_flow(http, base, api_key, holder, SUBJECTS[i % len(SUBJECTS)])
                except FlowError as exc:
                    errors[exc.key] += 1
                    await http.close()  # the connection's state is unknown after a failure
                    http = Connection(base)
                else:
                    flows.append(flow)
                    credential_calls.append(cred)
                    received.append((credential, thumbprint))
                    if per_flow:
                        await http.close()
                        http = Connection(base)
                i += wallets
        finally:
            await http.close()

    warm = Connection(base)
    try:
        await one_flow(warm, base, api_key, Key.generate(), SUBJECTS[0])  # warm-up
    except FlowError as exc:
        errors[exc.key] += 1
    await warm.close()
    started = time.perf_counter()
    await asyncio.gather(*(wallet(n) for n in range(wallets)))
    elapsed = time.perf_counter() - started
    flows.sort()
    credential_calls.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    return {"credentials": len(flows), "per_second": len(flows) / elapsed, "p50_ms": pct(flows, 0.5),
            "p99_ms": pct(flows, 0.99), "credential_p50_ms": pct(credential_calls, 0.5),
            "credential_p99_ms": pct(credential_calls, 0.99),
            "cpu_ms_per_credential": elapsed * (os.cpu_count() or 1) * 1000 / max(1, len(flows)),
            "errors": errors, "received": received}


def check_credential(credential: str, holder_thumbprint: str, resolver: X5CKeyResolver, *, issuer: str, vct: str,
                     now: float) -> str | None:
    """What a wallet checks on a credential it receives; ``None`` when it passes, else the reason.

    ``verify_sd_jwt_vc`` checks the issuer signature with the ``x5c`` leaf key, the chain to the trust
    anchor (dates, key usage, basic constraints), the SAN against ``iss``, ``typ``, ``vct``, the time
    claims and the ``status`` syntax (raising an ``SSIError`` with its code); the rest is checked here."""
    v = verify_sd_jwt_vc(credential, key_resolver=resolver, expected_vcts=(vct,), now=now, allow_http_loopback=True)
    checks = [(v.key_source == "x5c", "key_not_from_x5c"), (v.issuer == issuer, "unexpected_iss"),
              (v.holder_key is not None, "no_cnf"),
              (v.holder_key is not None and v.holder_key.thumbprint() == holder_thumbprint, "cnf_not_wallet_key"),
              (v.status is not None, "no_status"), (v.exp is not None, "no_exp"),
              (v.exp is not None and v.exp > now, "expired"), (bool(v.disclosed_paths), "nothing_disclosed")]
    return next((reason for ok, reason in checks if not ok), None)


def verify_received(received: list[tuple[str, str]], *, anchor: cx509.Certificate, issuer: str,
                    vct: str) -> Counter[str]:
    """Verify every received credential (:func:`check_credential`); failures counted by reason.

    The chain is validated for every credential (no validation cache), as a wallet receiving its
    first credential from this issuer does."""
    resolver = X5CKeyResolver([anchor], cache=None)
    failures: Counter[str] = Counter()
    now = time.time()
    for credential, holder in received:
        try:
            reason = check_credential(credential, holder, resolver, issuer=issuer, vct=vct, now=now)
        except SSIError as exc:
            reason = exc.code
        if reason is not None:
            failures[reason] += 1
    return failures


def counted(counter: Counter[str]) -> str:
    """``token 429/slow_down×3, credential 500×1`` (most frequent first)."""
    return ", ".join(f"{key}×{n}" for key, n in counter.most_common())


async def request_load(base: str, method: str, path: str, seconds: float,
                       connections: int = 8) -> tuple[int, Counter[str]]:
    """How many ``method path`` requests ``connections`` keep-alive clients complete in ``seconds``,
    and the failed ones by status."""
    done = 0
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        http = Connection(base)
        try:
            while time.perf_counter() < deadline:
                try:
                    _checked(*await http.request(method, f"{base}{path}"), path)
                except FlowError as exc:
                    errors[exc.key] += 1
                    continue
                except (OSError, RuntimeError) as exc:  # a broken connection: counted, and a new one
                    errors[f"{path} {type(exc).__name__}"] += 1
                    await http.close()
                    http = Connection(base)
                    continue
                done += 1
        finally:
            await http.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return done, errors


def request_floor(base: str, method: str, path: str, server_pid: int, db_pid: int,
                  seconds: float = 2.0) -> tuple[float, float, Counter[str]]:
    """Issuer and PostgreSQL CPU ms per request of one cheap endpoint: what any request costs before
    OpenID4VCI work (uvicorn, FastAPI, the middleware; the nonce endpoint adds an HMAC, no database),
    and the requests that failed."""
    _, errors = run(request_load(base, method, path, 0.5))
    before = process_tree_cpu(server_pid), process_tree_cpu(db_pid)
    done, more = run(request_load(base, method, path, seconds))
    n = max(1, done) / 1000
    return ((process_tree_cpu(server_pid) - before[0]) / n, (process_tree_cpu(db_pid) - before[1]) / n,
            errors + more)


def bare_issue_cost(rounds: int = 400) -> float:
    """CPU ms (``time.process_time``, like the client column) of one ``issue_sd_jwt_vc`` called as the
    issuer calls it (``issuer.issuance.sign_and_record``): the tax-compliance claims mapped from a
    registry record, ``x5c`` (a tenant leaf certificate from a CA), ``kid`` (the key's thumbprint),
    ``iat``/``nbf``/``exp``, a ``status`` reference built per credential, ``vct#integrity``; the best
    of three rounds."""
    ctype = load_builtin_types()["tax-compliance"]
    issuer = "http://127.0.0.1:8000/t/bench"
    ca_key, ca_cert = ssi_x509.create_ca("Cartera bench CA")
    generated = Key.generate("ES256")
    key = Key.from_pem(generated.private_pem(), kid=generated.thumbprint())
    x5c = ssi_x509.x5c_from_chain([issue_tenant_certificate(ca_key, ca_cert, key, issuer, "Bench issuer")])
    holder = Key.generate().public_jwk()
    now = dt.datetime.now(dt.UTC)
    claims = ctype.map_claims({"Certificado": {"Resultado": "POSITIVO", "ReferenciaAEAT": "ECOT1030000000001",
                                               "FechaEmision": "20260320"},
                               "subject": {"identifier": SUBJECTS[0], "name": "Bench"}}, now=now)
    disclosable, integrity = ctype.disclosable_paths(), ctype.type_metadata_integrity()
    iat, exp = int(now.timestamp()), int(ctype.expires_at(now).timestamp())
    status_uri = f"{issuer}/status/sl_bench"
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for i in range(rounds):
            issue_sd_jwt_vc(claims, vct=ctype.vct, issuer=issuer, key=key, holder_jwk=holder, disclosable=disclosable,
                            x5c=x5c, kid=key.kid, status=status_claim(i, status_uri), iat=iat, nbf=iat, exp=exp,
                            vct_integrity=integrity)
        best = min(best, (time.process_time() - start) / rounds)
    return best * 1000


def durability_line(cluster: PostgresCluster, requested: str) -> str:
    """The durability settings the server runs with (``SHOW``), for the header of its rows."""
    shown = cluster.durability()
    text = ", ".join(f"{name}={value}" for name, value in shown.items())
    external = "; external server (CARTERA_TEST_POSTGRES_URL): --pg-durability not applied" \
        if getattr(cluster, "_external", False) else ""
    line = f"postgresql durability in force (SHOW): {text} (--pg-durability {requested}{external})"
    if requested == "durable" and (shown["fsync"] != "on" or shown["synchronous_commit"] == "off"):
        line += "\n  WARNING: durability was asked for but this server does not wait for the disk on commit"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Exit status 1 when any flow failed or any credential did not verify.")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each load level (default 8)")
    parser.add_argument("--wallets", default="1,8,32", help="concurrency levels, comma-separated (default 1,8,32)")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="issuer databases, comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the issuer (default 1)")
    parser.add_argument("--connections", choices=("flow", "wallet"), default="flow",
                        help="a new keep-alive connection per flow (default), or one per wallet for the whole run")
    parser.add_argument("--pg-connect", choices=("tcp", "socket"), default="tcp",
                        help="reach PostgreSQL over loopback TCP (default) or its Unix-domain socket")
    parser.add_argument("--pg-durability", choices=("durable", "unsafe"), default="durable",
                        help="durable (default): PostgreSQL's fsync, synchronous_commit and full_page_writes on, a "
                             "commit waits for its WAL flush; unsafe: all three off, as in the test suite")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="record the issuer with py-spy during the load (PREFIX-<backend>.txt, collapsed stacks)")
    args = parser.parse_args()
    bare = bare_issue_cost()
    print(f"bare ssi issue_sd_jwt_vc with the issuer's arguments (tax-compliance; x5c, kid, iat/nbf/exp, status, "
          f"vct#integrity, cnf): {bare:.3f} CPU ms per credential (process_time, best of 3 x 400)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; load generator and issuer "
          f"({args.workers} worker(s)) on the same machine; one connection per {args.connections}"
          + (f"; PostgreSQL asked to be {args.pg_durability}" if "postgresql" in args.backends.split(",") else ""))
    print("CPU ms per credential of the issuer processes (server), of PostgreSQL (db) and of this load generator "
          "(client); machine = wall time x cores / credentials; srv/bare = server over the bare issue")
    print("errors = failed flows (non-2xx or broken exchange, listed below the row); verified = credentials that "
          "passed a wallet's checks after the level (x5c signature chained to the bench CA, cnf = the wallet's key, "
          "vct, status, exp, >= 1 disclosure) / credentials received; steal = share of the machine's CPU time the "
          "hypervisor gave to other guests during the level (a level with more than a few % ran on less than 2 cores)")
    columns = (f"{'backend':<11}{'wallets':>8}{'creds':>7}{'cred/s':>9}{'flow p50':>10}{'flow p99':>10}"
               f"{'cred p50':>10}{'cred p99':>10}{'machine':>9}{'server':>8}{'db':>6}{'client':>8}{'srv/bare':>9}"
               f"{'errors':>8}{'verified':>12}{'steal':>7}")
    problems: list[str] = []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            registry = folder / "registry.sqlite"
            make_registry(registry)
            cluster = None
            if backend == "postgresql":
                cluster = PostgresCluster(durable=args.pg_durability == "durable")
                cluster.start()
                print(f"\n{durability_line(cluster, args.pg_durability)}")
                url = cluster.create_database()
                if args.pg_connect == "socket":
                    url = cluster.socket_url(url)
            else:
                url = f"sqlite+aiosqlite:///{folder / 'issuer.db'}"
                print("\nsqlite: the issuer's database in a local file (aiosqlite)")
            print(columns, flush=True)
            port = free_port()
            proc = start_issuer(url, folder, port, args.workers)
            anchor = ssi_x509.load_pem_certificates((folder / "ca.pem").read_bytes())[0]
            profiler = None
            try:
                base = f"http://127.0.0.1:{port}"
                api_key, vct = run(provision(base))
                issuer = f"{base}/t/bench"
                levels = [int(w) for w in args.wallets.split(",")]
                # Warm-up at the highest concurrency, not counted: the pools open their connections and
                # the statement caches fill, so every level measures the steady state.
                per_flow = args.connections == "flow"
                warm = run(run_load(base, api_key, max(levels), min(3.0, args.seconds), per_flow))
                if warm["errors"]:
                    print(f"{backend:<11}warm-up (not counted) errors: {counted(warm['errors'])}", flush=True)
                if args.profile:
                    profiler = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--subprocesses",
                         "--rate", "200", "--pid", str(proc.pid), "--duration", str(int(args.seconds * len(levels)) + 2),
                         "-o", f"{args.profile}-{backend}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)
                db_pid = postmaster_pid(cluster)
                for wallets in levels:
                    before = process_tree_cpu(proc.pid), process_tree_cpu(db_pid), time.process_time()
                    ticks = machine_ticks()
                    r = run(run_load(base, api_key, wallets, args.seconds, per_flow))
                    n = max(1, r["credentials"]) / 1000
                    server = (process_tree_cpu(proc.pid) - before[0]) / n
                    db = (process_tree_cpu(db_pid) - before[1]) / n
                    client = (time.process_time() - before[2]) / n
                    steal = steal_percent(ticks, machine_ticks())
                    # After the counters are read: the wallets' verification is outside the timed
                    # window and outside the client column.
                    failures = verify_received(r["received"], anchor=anchor, issuer=issuer, vct=vct)
                    received = len(r["received"])
                    verified = f"{received - sum(failures.values())}/{received}"
                    errors = sum(r["errors"].values())
                    db_text = f"{db:>6.1f}" if cluster is not None else f"{'-':>6}"
                    print(f"{backend:<11}{wallets:>8}{r['credentials']:>7.0f}{r['per_second']:>9.1f}{r['p50_ms']:>10.1f}"
                          f"{r['p99_ms']:>10.1f}{r['credential_p50_ms']:>10.1f}{r['credential_p99_ms']:>10.1f}"
                          f"{r['cpu_ms_per_credential']:>9.1f}{server:>8.1f}{db_text}{client:>8.1f}"
                          f"{server / bare:>8.0f}×{errors:>8}{verified:>12}{steal:>6.0f}%", flush=True)
                    if r["errors"]:
                        print(f"{'':<11}  errors: {counted(r['errors'])}", flush=True)
                        problems.append(f"{backend}, {wallets} wallets: {errors} failed flows ({counted(r['errors'])})")
                    if failures:
                        print(f"{'':<11}  NOT VERIFIED: {counted(failures)}", flush=True)
                        problems.append(f"{backend}, {wallets} wallets: {sum(failures.values())} of {received} "
                                        f"credentials did not verify ({counted(failures)})")
                    if received == 0:
                        problems.append(f"{backend}, {wallets} wallets: no credential received")
                if profiler is not None:
                    profiler.wait(timeout=120)
                health = request_floor(base, "GET", "/healthz", proc.pid, db_pid)
                nonce = request_floor(base, "POST", "/t/bench/nonce", proc.pid, db_pid)
                db_part = f" + {nonce[1]:.2f} ms db" if cluster is not None else ""
                print(f"{backend:<11}floor per request (8 connections): GET /healthz {health[0]:.2f} ms server; "
                      f"POST nonce (no database) {nonce[0]:.2f} ms server{db_part}", flush=True)
                floor_errors = health[2] + nonce[2]
                if floor_errors:
                    print(f"{'':<11}  errors: {counted(floor_errors)}", flush=True)
                    problems.append(f"{backend}, floor requests: {counted(floor_errors)}")
            finally:
                proc.terminate()
                proc.wait(timeout=20)
                if cluster is not None:
                    cluster.stop()
    if problems:
        print("\nissuance benchmark FAILED: the figures above come from a run with errors or unverified credentials:",
              file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
