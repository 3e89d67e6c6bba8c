"""Verifier benchmark: concurrent wallets answering presentation requests end to end on loopback.

Each verification: create a request (agency API) → fetch the request object (``request_uri``) →
present an SD-JWT VC with a KB-JWT (``direct_post``) → read the result. Reported at 1, 8 and 32
concurrent wallets: verifications per second, p50/p99 latency, and the cost per verification next to
the bare ``ssi`` verify cost measured in the same run. The verifier runs in its own process (uvicorn)
on a throwaway PostgreSQL (``tests/support/postgres.py``); the load generator is this process.

    .venv/bin/python bench/verification.py [--seconds 10] [--sqlite] [--workers 2] [--levels 1,8,32]

Every credential carries a Token Status List reference (served from this process, ``--status-ttl``),
so the figures include the status check. Besides wall-clock figures it prints the CPU time per
verification of the verifier, of PostgreSQL and of this load generator: on a machine shared with other
work those are the stable numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cputime import postmaster_pid, process_tree_cpu  # noqa: E402
from loadclient import Connection  # noqa: E402

from ssi import x509 as ssi_x509  # noqa: E402
from ssi.jose import Key, parse_jws  # noqa: E402
from ssi.sd_jwt import SDJWT  # noqa: E402
from ssi.sd_jwt_vc import X5CKeyResolver, issue_sd_jwt_vc, verify_sd_jwt_vc  # noqa: E402
from ssi.status_list import StatusList, sign_status_list_token, status_claim  # noqa: E402
from tests.support.servers import free_port, serve, wait_http  # noqa: E402

VCT = "https://types.cartera.example/tax-compliance/v1"
ISSUER = "https://issuer.bench.example"


class StatusEndpoint:
    """The issuer's status list endpoint: every bench credential carries a ``status.status_list``
    reference to it, so each verification includes the status check (the verifier fetches the
    signed list, checks it with the issuer's x5c key, caches it for ``ttl`` and fetches it again after).
    Served from this process in a thread, like any issuer would be, on loopback."""

    def __init__(self, size: int, ttl: int) -> None:
        self.ca_key, self.ca = ssi_x509.create_ca("Bench issuer CA")
        self.key = Key.generate("ES256")
        cert = ssi_x509.issue_certificate(self.ca_key, self.ca, self.key, "Bench issuer", san_uris=[ISSUER])
        self.x5c = ssi_x509.x5c_from_chain([cert])
        self.list = StatusList(size, bits=2)
        self.ttl = ttl
        self.fetches = 0
        self.uri = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/status/1")
        def status() -> Response:
            self.fetches += 1
            token = sign_status_list_token(self.list, uri=self.uri, key=self.key, ttl=self.ttl,
                                           exp=int(time.time()) + 3600, x5c=self.x5c)
            return Response(token, media_type="application/statuslist+jwt")

        return app


def make_credentials(n: int, issuer: StatusEndpoint) -> list[tuple[SDJWT, Key]]:
    out = []
    for i in range(n):
        holder = Key.generate("ES256")
        token = issue_sd_jwt_vc({"nif": "12345678Z", "name": f"Citizen {i}", "complianceStatus": "POSITIVE"},
                                vct=VCT, issuer=ISSUER, key=issuer.key, holder_jwk=holder.public_jwk(),
                                disclosable=[("nif",), ("name",), ("complianceStatus",)], x5c=issuer.x5c,
                                status=status_claim(i, issuer.uri), exp=int(time.time()) + 7200)
        out.append((SDJWT.parse(token), holder))
    return out


PATHS = [("nif",), ("name",), ("complianceStatus",)]


def bare_verify_cost(creds: list[tuple[SDJWT, Key]], ca: object, rounds: int = 300) -> float:
    resolver = X5CKeyResolver([ca])  # type: ignore[list-item]
    presentations = [sd.present(PATHS, holder_key=h, aud="x509_san_dns:127.0.0.1", nonce=f"n{i}")
                     for i, (sd, h) in enumerate(creds[:rounds])]
    start = time.perf_counter()
    for i, p in enumerate(presentations):
        verify_sd_jwt_vc(p, key_resolver=resolver, expected_vcts=[VCT], require_kb=True,
                         expected_aud="x509_san_dns:127.0.0.1", expected_nonce=f"n{i}", allow_http_loopback=True)
    return (time.perf_counter() - start) / len(presentations)








async def one_verification(http: Connection, base: str, headers: dict[str, str], cred: tuple[SDJWT, Key]) -> float:
    start = time.perf_counter()
    status, body = await http.request("POST", f"{base}/v1/requests", content_type="application/json",
                                      body=json.dumps({"template": "grant-application",
                                                       "response_mode": "direct_post"}).encode(), headers=headers)
    created = json.loads(body)
    status, ro = await http.request("GET", created["request_uri"])
    claims = parse_jws(ro.decode()).json_payload()
    sd, holder = cred
    presentation = sd.present(PATHS, holder_key=holder, aud=claims["client_id"], nonce=claims["nonce"])
    form = urlencode({"vp_token": json.dumps({"tax": [presentation]}), "state": claims["state"]}).encode()
    status, answer = await http.request("POST", claims["response_uri"], body=form,
                                        content_type="application/x-www-form-urlencoded")
    if status != 200:
        raise RuntimeError(f"rejected: {answer[:300]!r}")
    status, body = await http.request("GET", created["status_url"], headers=headers)
    result = json.loads(body)
    if result["status"] != "verified":
        raise RuntimeError(f"not verified: {result['errors']}")
    return time.perf_counter() - start


async def run_level(base: str, headers: dict[str, str], creds: list, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        http = Connection(base)
        try:
            while time.perf_counter() < deadline:
                latencies.append(await one_verification(http, base, headers, creds[next(counter) % len(creds)]))
        finally:
            await http.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"concurrency": concurrency, "count": len(latencies), "per_second": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each concurrency level.")
    parser.add_argument("--sqlite", action="store_true", help="Use SQLite instead of PostgreSQL.")
    parser.add_argument("--levels", default="1,8,32", help="Concurrency levels, comma-separated.")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the verifier.")
    parser.add_argument("--status-ttl", type=int, default=30,
                        help="ttl of the status list token, seconds (the verifier refetches it after).")
    parser.add_argument("--profile", metavar="FILE", help="Record the verifier with py-spy (collapsed stacks).")
    args = parser.parse_args()

    status_endpoint = StatusEndpoint(1024, args.status_ttl)
    status_port = free_port()
    status_endpoint.uri = f"http://127.0.0.1:{status_port}/status/1"
    creds = make_credentials(400, status_endpoint)
    ca = status_endpoint.ca
    bare = bare_verify_cost(creds, ca)
    tmp = Path(tempfile.mkdtemp(prefix="cartera-bench-"))
    cluster = None
    if args.sqlite:
        db_url = f"sqlite+aiosqlite:///{tmp / 'verifier.db'}"
    else:
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster(durable=True)  # PostgreSQL's own fsync/synchronous_commit, as in production
        cluster.start()
        db_url = cluster.create_database()
    port = free_port()
    anchors = tmp / "anchors.pem"
    anchors.write_bytes(ssi_x509.cert_to_pem(ca))  # type: ignore[arg-type]
    env = {**os.environ, "CARTERA_VERIFIER_DATABASE_URL": db_url, "CARTERA_VERIFIER_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "CARTERA_VERIFIER_PORT": str(port), "CARTERA_VERIFIER_DEV_MODE": "true", "CARTERA_VERIFIER_MASTER_KEY": "1" * 64,
           "CARTERA_VERIFIER_DATA_DIR": str(tmp), "CARTERA_VERIFIER_ISSUER_ANCHORS_FILE": str(anchors),
           "CARTERA_VERIFIER_LOG_LEVEL": "warning",
           # One API key and one address make the whole load: raise (not disable) the request-creation
           # limits, so the limiter's statement stays in the measured cost.
           "CARTERA_VERIFIER_RATE_LIMIT_REQUESTS_KEY": "100000000/60",
           "CARTERA_VERIFIER_RATE_LIMIT_REQUESTS_CLIENT": "100000000/60"}
    from verifier.provisioning import provision_demo
    from verifier.settings import VerifierSettings

    rp_key, rp_ca = ssi_x509.create_ca("Bench RP CA")
    settings = VerifierSettings(database_url=db_url, public_url=f"http://127.0.0.1:{port}", port=port, dev_mode=True,
                                master_key="1" * 64, data_dir=tmp)
    provisioned = asyncio.run(provision_demo(settings, ca_key=rp_key, ca_cert=rp_ca, issuers={"tax": [ISSUER]}))
    headers = {"Authorization": f"Bearer {provisioned['agencies']['ajuntament-barcelona']['api_key']}"}
    command = [sys.executable, "-m", "service_kit.server", "verifier.app:create_app", "--port", str(port),
               "--workers", str(args.workers), "--log-level", "warning"]
    status_server = serve(status_endpoint.app(), port=status_port)
    status_server.__enter__()
    server = subprocess.Popen(command, env=env, cwd=ROOT)
    profiler = None
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        base = f"http://127.0.0.1:{port}"
        asyncio.run(run_level(base, headers, creds, 4, 1.0))  # warm-up
        if args.profile:
            levels = len(args.levels.split(","))
            profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                                         "--subprocesses", "--rate", "250", "--pid", str(server.pid), "--duration",
                                         str(int(args.seconds * levels)), "-o", args.profile])
            time.sleep(1.0)
        print(f"backend: {'sqlite' if args.sqlite else 'postgresql'}; bare ssi verify: {bare * 1000:.2f} ms")
        if cluster is not None:
            shown = ", ".join(f"{name}={value}" for name, value in cluster.durability().items())
            print(f"postgresql durability in force (SHOW): {shown}")
        db_pid = postmaster_pid(cluster)
        print(f"workers: {args.workers}; CPU ms per verification of the verifier processes (server), of "
              "PostgreSQL (db) and of this load generator (client)")
        print(f"{'wallets':>8} {'verif/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ms/verif':>9} {'x bare':>7} "
              f"{'server':>7} {'db':>6} {'client':>7}")
        for level in (int(x) for x in args.levels.split(",")):
            before = process_tree_cpu(server.pid), process_tree_cpu(db_pid), time.process_time()
            r = asyncio.run(run_level(base, headers, creds, level, args.seconds))
            server_cpu, db_cpu, client_cpu = (process_tree_cpu(server.pid) - before[0],
                                              process_tree_cpu(db_pid) - before[1], time.process_time() - before[2])
            cost = 1000 / r["per_second"]
            n = r["count"] / 1000
            print(f"{level:>8} {r['per_second']:>9.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {cost:>9.2f} "
                  f"{cost / (bare * 1000):>7.1f} {server_cpu / n:>7.2f} {db_cpu / n:>6.2f} {client_cpu / n:>7.2f}")
        print(f"status list: every credential references it (ttl {args.status_ttl} s); "
              f"{status_endpoint.fetches} fetches by the verifier in the run")
        if profiler is not None:
            profiler.wait(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=10)
        status_server.__exit__(None, None, None)
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
