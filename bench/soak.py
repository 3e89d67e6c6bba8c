"""Soak test: the whole system on PostgreSQL, issuance and verification at a steady rate for minutes.

The system is provisioned and started through the composition root (``cartera.system.provision``, the
code behind ``cartera run``): the sandbox (simulated Via Oberta and identity provider), the issuer,
the verifier and the wallet API, each its own process on 127.0.0.1, the three services on databases of
a throwaway PostgreSQL cluster (``tests/support/postgres.py``). This process is the citizens' phones
and the desks: it logs ``--wallets`` synthetic citizens in to the wallet API through the sandbox
identity provider, then starts ``--rate`` cycles per second (open loop: a slow answer does not slow
the schedule down), each cycle being

1. **issuance** (pre-authorized code with ``tx_code``): the tax agency's desk creates an offer (issuer
   admin API), the wallet scans and accepts it (the wallet API runs token → nonce → credential against
   the issuer, which queries the simulated Via Oberta over signed SOAP);
2. **verification**: the city hall creates a request (verifier API, ``direct_post.jwt``), the wallet
   reads it and the citizen approves the credential just received, the desk reads the result, which
   must be ``verified``;
3. the wallet deletes the credential (so a wallet's size, and each cycle's work, stay constant).

Every ``--interval`` seconds it prints the cycles done, the errors (target 0), the p50/p95/p99 latency
of issuance and of verification over the interval and the RSS of each service's process tree (from
``/proc``). At the end: a summary table, and per service whether the RSS is flat after warm-up (the
mean of the last third of the run against the RSS at the end of warm-up) with the slope over the
post-warm-up samples. Run::

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 1] [--wallets 4] [--interval 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cartera.commands.demo import APP_REDIRECT, GRANT_TEMPLATE, _free_port_base, pkce_pair  # noqa: E402
from cartera.system import provision  # noqa: E402
from sandbox.population import generate_population  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.servers import wait_http  # noqa: E402
from viaoberta.products import TAX  # noqa: E402

TYPE_ID = "tax-compliance"
AGENCY = "ajuntament-barcelona"
#: RSS growth after warm-up above which a service is reported as not flat.
FLAT_TOLERANCE = 0.05


class CycleError(Exception):
    """One step of a cycle did not answer as expected; the message names the step and the status."""


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants, in KiB (Linux ``/proc``); 0 once it is gone."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
        todo.extend(children.get(current, []))
    return total


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values`` in milliseconds; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute; 0 with fewer than two samples."""
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [v for _, v in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


@dataclass
class Wallet:
    """One citizen logged in to the wallet API."""

    identifier: str
    name: str = ""
    token: str = ""

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Interval:
    """What happened during one reporting interval."""

    issued: list[float] = field(default_factory=list)
    verified: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def _expect(response: httpx.Response, status: int, step: str) -> Any:
    if response.status_code != status:
        try:
            body = response.json()
            reason = body.get("error", "") if isinstance(body, dict) else ""
        except ValueError:
            reason = ""
        raise CycleError(f"{step}: HTTP {response.status_code} {reason}".strip())
    return response.json() if response.content else None


class Driver:
    """The citizens and desks: logs in, then runs issuance + verification cycles."""

    def __init__(self, info: dict[str, Any], client: httpx.AsyncClient) -> None:
        self.client = client
        self.wallet_url = info["wallet"]["wallet_url"]
        self.issuer_url = info["issuer"]["issuer_url"]
        tenant = next(t for t in info["issuer"]["tenants"].values() if TYPE_ID in t["types"])
        self.issuer_key = tenant["api_key"]
        self.verifier_url = info["verifier"]["url"]
        self.agency_key = info["verifier"]["agencies"][AGENCY]["api_key"]

    async def login(self, wallet: Wallet) -> None:
        state = secrets.token_urlsafe(8)
        verifier, challenge = pkce_pair()
        start = await self.client.get(f"{self.wallet_url}/v1/auth/login", params={
            "provider": "valid", "redirect_uri": APP_REDIRECT, "state": state, "login_hint": wallet.identifier,
            "code_challenge": challenge, "code_challenge_method": "S256"})
        if start.status_code != 302:
            raise CycleError(f"login start: HTTP {start.status_code}")
        location = start.headers["location"]
        at_idp = await self.client.get(location + ("&" if "?" in location else "?") + "login_method=idcatmobil")
        back = await self.client.get(at_idp.headers["location"])
        params = parse_qs(urlsplit(back.headers.get("location", "")).query)
        if params.get("state") != [state] or "code" not in params:
            raise CycleError("login: the wallet did not return a code")
        tokens = _expect(await self.client.post(f"{self.wallet_url}/v1/auth/token", data={
            "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": APP_REDIRECT,
            "code_verifier": verifier}),
            200, "login token")
        wallet.token = tokens["access_token"]
        me = _expect(await self.client.get(f"{self.wallet_url}/v1/me", headers=wallet.bearer), 200, "me")
        wallet.name = me.get("name") or me.get("display_name") or ""

    async def issue(self, wallet: Wallet) -> str:
        offer = _expect(await self.client.post(
            f"{self.issuer_url}/v1/offers", headers={"Authorization": f"Bearer {self.issuer_key}"},
            json={"credential_configuration_ids": [TYPE_ID], "subject": {"identifier": wallet.identifier,
                                                                         "name": wallet.name},
                  "tx_code": True, "by_reference": True}), 201, "offer")
        preview = _expect(await self.client.post(f"{self.wallet_url}/v1/offers", json={"offer_uri": offer["offer_uri"]},
                                                 headers=wallet.bearer), 201, "scan offer")
        accepted = _expect(await self.client.post(f"{self.wallet_url}/v1/offers/{preview['offer_id']}/accept",
                                                  json={"tx_code": offer["tx_code"]}, headers=wallet.bearer),
                           200, "accept offer")
        if accepted.get("state") != "issued" or not accepted.get("credential_ids"):
            raise CycleError(f"accept offer: state {accepted.get('state')}")
        return str(accepted["credential_ids"][0])

    async def verify(self, wallet: Wallet, credential_id: str) -> None:
        agency = {"Authorization": f"Bearer {self.agency_key}"}
        request = _expect(await self.client.post(f"{self.verifier_url}/v1/requests", headers=agency,
                                                 json={"template": GRANT_TEMPLATE}), 201, "create request")
        preview = _expect(await self.client.post(f"{self.wallet_url}/v1/presentations",
                                                 json={"request_uri": request["uri"]}, headers=wallet.bearer),
                          201, "scan request")
        selection = {q["query_id"]: credential_id for q in preview.get("queries", [])
                     if any(o["credential_id"] == credential_id for o in q.get("options", []))}
        if not selection:
            raise CycleError("scan request: the new credential is not offered")
        sent = _expect(await self.client.post(f"{self.wallet_url}/v1/presentations/{preview['presentation_id']}/approve",
                                              json={"selection": selection}, headers=wallet.bearer), 200, "approve")
        if sent.get("state") != "sent":
            raise CycleError(f"approve: state {sent.get('state')}")
        result = _expect(await self.client.get(request["status_url"], headers=agency), 200, "read result")
        if result.get("status") != "verified":
            raise CycleError(f"read result: {result.get('status')}")

    async def forget(self, wallet: Wallet, credential_id: str) -> None:
        response = await self.client.delete(f"{self.wallet_url}/v1/credentials/{credential_id}", headers=wallet.bearer)
        if response.status_code != 204:
            raise CycleError(f"delete credential: HTTP {response.status_code}")


async def cycle(driver: Driver, wallet: Wallet, interval_of: Any) -> None:
    """One issuance + verification; latencies and errors go to the interval the step ended in."""
    start = time.perf_counter()
    try:
        credential_id = await driver.issue(wallet)
    except (CycleError, httpx.HTTPError) as exc:
        interval_of().error(f"issuance: {exc if isinstance(exc, CycleError) else type(exc).__name__}")
        return
    interval_of().issued.append(time.perf_counter() - start)
    start = time.perf_counter()
    try:
        await driver.verify(wallet, credential_id)
        interval_of().verified.append(time.perf_counter() - start)
    except (CycleError, httpx.HTTPError) as exc:
        interval_of().error(f"verification: {exc if isinstance(exc, CycleError) else type(exc).__name__}")
    try:
        await driver.forget(wallet, credential_id)
    except (CycleError, httpx.HTTPError) as exc:
        interval_of().error(f"cleanup: {exc if isinstance(exc, CycleError) else type(exc).__name__}")


def pick_citizens(count: int) -> list[str]:
    """Synthetic citizens whose tax record is positive and answered synchronously."""
    population = generate_population(2026, 1000)
    chosen = [c.identifier for c in population.citizens
              if c.tax is not None and c.tax.status == "POSITIVO" and TAX.codigo_certificado not in c.pending]
    if len(chosen) < count:
        raise SystemExit(f"the synthetic population has only {len(chosen)} suitable citizens")
    return chosen[:count]


async def drive(info: dict[str, Any], pids: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; print each interval; return everything measured."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=60.0, follow_redirects=False, limits=limits) as client:
        driver = Driver(info, client)
        wallets = [Wallet(identifier) for identifier in pick_citizens(args.wallets)]
        for wallet in wallets:
            await driver.login(wallet)
        intervals: list[Interval] = [Interval()]
        rss: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        rows: list[dict[str, Any]] = []
        duration = args.minutes * 60
        t0 = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        late = 0

        def report(now: float) -> None:
            current = intervals[-1]
            row: dict[str, Any] = {
                "t": round(now - t0, 1), "issued": len(current.issued), "verified": len(current.verified),
                "errors": sum(current.errors.values()), "error_kinds": dict(current.errors),
                "issuance_ms": {f"p{q}": round(percentile(current.issued, q / 100), 1) for q in (50, 95, 99)},
                "verification_ms": {f"p{q}": round(percentile(current.verified, q / 100), 1) for q in (50, 95, 99)},
                "rss_mib": {}, "in_flight": len(tasks)}
            for name, pid in pids.items():
                value = rss_kib(pid)
                rss[name].append((now - t0, value))
                row["rss_mib"][name] = round(value / 1024, 1)
            rows.append(row)
            services = " ".join(f"{name}={mib:.0f}" for name, mib in row["rss_mib"].items())
            print(f"{row['t']:>6.0f}s  cycles {row['issued']:>4}/{row['verified']:<4} errors {row['errors']:>3}  "
                  f"issue p50/95/99 {row['issuance_ms']['p50']:>6.0f}{row['issuance_ms']['p95']:>6.0f}"
                  f"{row['issuance_ms']['p99']:>6.0f} ms  verify {row['verification_ms']['p50']:>6.0f}"
                  f"{row['verification_ms']['p95']:>6.0f}{row['verification_ms']['p99']:>6.0f} ms  "
                  f"in flight {len(tasks):>3}  RSS MiB {services}", flush=True)
            for kind, n in current.errors.items():
                print(f"         {n} x {kind}", flush=True)
            intervals.append(Interval())

        for name, pid in pids.items():
            rss[name].append((0.0, rss_kib(pid)))
        print(f"soak: {args.rate} cycles/s for {args.minutes} min, {args.wallets} wallets; columns: cycles "
              f"issued/verified, errors, latency of issuance and verification, RSS per service", flush=True)
        n = 0
        next_report = t0 + args.interval
        while True:
            now = time.monotonic()
            if now >= next_report:
                report(now)
                next_report += args.interval
            if now - t0 >= duration:
                break
            due = t0 + n / args.rate
            if now >= due:
                if len(tasks) >= args.max_in_flight:
                    late += 1  # the system cannot keep up: count the cycle as not started
                else:
                    task = asyncio.create_task(cycle(driver, wallets[n % len(wallets)], lambda: intervals[-1]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                n += 1
                continue
            await asyncio.sleep(min(due, next_report) - now)
        if tasks:
            await asyncio.wait(tasks, timeout=120)
        if sum(len(i.issued) + len(i.verified) + len(i.errors) for i in intervals[-1:]):
            report(time.monotonic())
    return {"rows": rows, "rss": rss, "late": late, "intervals": intervals, "elapsed": time.monotonic() - t0}


def summarise(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Print the summary table and the RSS verdict; return them for ``--json``."""
    intervals: list[Interval] = result["intervals"]
    issued = [x for i in intervals for x in i.issued]
    verified = [x for i in intervals for x in i.verified]
    errors: dict[str, int] = {}
    for i in intervals:
        for kind, n in i.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    total_errors = sum(errors.values())
    print("\nsummary")
    print(f"{'':<14}{'count':>8}{'per s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    summary: dict[str, Any] = {"errors": total_errors, "error_kinds": errors, "not_started": result["late"],
                               "seconds": round(result["elapsed"], 1)}
    for label, values in (("issuance", issued), ("verification", verified)):
        stats = {"count": len(values), "per_second": round(len(values) / result["elapsed"], 2),
                 **{f"p{q}_ms": round(percentile(values, q / 100), 1) for q in (50, 95, 99)},
                 "max_ms": round(max(values) * 1000, 1) if values else 0.0}
        summary[label] = stats
        print(f"{label:<14}{stats['count']:>8}{stats['per_second']:>8.2f}{stats['p50_ms']:>9.0f}"
              f"{stats['p95_ms']:>9.0f}{stats['p99_ms']:>9.0f}{stats['max_ms']:>9.0f}")
    print(f"errors: {total_errors} (target 0); cycles not started because {args.max_in_flight} were in flight: "
          f"{result['late']}")
    for kind, n in errors.items():
        print(f"  {n} x {kind}")

    duration = result["elapsed"]
    warmup = args.warmup if args.warmup is not None else max(args.interval, duration * 0.2)
    print(f"\nRSS after warm-up ({warmup:.0f} s): RSS at the end of warm-up, mean of the last third, growth, "
          f"slope after warm-up (least squares)")
    print(f"{'service':<10}{'start MiB':>10}{'warm MiB':>10}{'last3 MiB':>11}{'growth':>8}{'MiB/min':>9}  verdict")
    summary["rss"] = {}
    for name, samples in result["rss"].items():
        after = [(t, v / 1024) for t, v in samples if t >= warmup]
        before = [(t, v / 1024) for t, v in samples if t <= warmup]
        if not after or not before:
            continue
        warm_end = before[-1][1]
        last_third = [v for t, v in samples if t >= duration * 2 / 3]
        last_mean = statistics.fmean(last_third) / 1024 if last_third else after[-1][1]
        growth = (last_mean - warm_end) / warm_end if warm_end else 0.0
        slope = slope_per_minute(after)
        flat = growth <= FLAT_TOLERANCE
        summary["rss"][name] = {"start_mib": round(samples[0][1] / 1024, 1), "warm_mib": round(warm_end, 1),
                                "last_third_mib": round(last_mean, 1), "growth": round(growth, 4),
                                "slope_mib_per_min": round(slope, 3), "flat": flat}
        print(f"{name:<10}{samples[0][1] / 1024:>10.1f}{warm_end:>10.1f}{last_mean:>11.1f}{growth * 100:>7.1f}%"
              f"{slope:>9.2f}  {'flat' if flat else 'GROWING'}")
    return summary


def wait_started(url: str, child: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    """Wait for ``url`` to answer; stop with the service's log tail if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while True:
        if child.poll() is not None:
            raise SystemExit(f"a service exited at start-up ({url}); its log ends with:\n"
                             + log.read_text(errors="replace")[-3000:])
        try:
            wait_http(url, timeout=1.0)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {timeout:.0f} s") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to drive the load (default 10)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="cycles started per second; each cycle is one issuance and one verification (default 1)")
    parser.add_argument("--wallets", type=int, default=4, help="citizens logged in to the wallet API (default 4)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between progress lines (default 10)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of warm-up before RSS must be flat (default: a fifth of the run)")
    parser.add_argument("--max-in-flight", type=int, default=64,
                        help="cycles allowed in flight at once; beyond, a due cycle is counted as not started")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the data folder (service logs) afterwards")
    args = parser.parse_args()
    if args.rate <= 0 or args.minutes <= 0 or args.interval <= 0:
        parser.error("--rate, --minutes and --interval must be positive")

    data_dir = Path(tempfile.mkdtemp(prefix="cartera-soak-"))
    cluster = PostgresCluster(durable=True).start()  # PostgreSQL's own fsync/synchronous_commit, as in production
    print("postgresql durability in force (SHOW): "
          + ", ".join(f"{name}={value}" for name, value in cluster.durability().items()), flush=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        urls = {name: cluster.create_database(prefix=name) for name in ("issuer", "verifier", "wallet")}
        plan = asyncio.run(provision(data_dir, port_base=_free_port_base(), database_urls=urls))
        logs = data_dir / "logs"
        logs.mkdir()
        for process in plan.processes:
            log = (logs / f"{process.name}.log").open("wb")
            children[process.name] = subprocess.Popen(  # noqa: S603 - the composition root's own argv
                process.argv, env={**os.environ, **process.env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        for process in plan.processes:
            wait_started(process.url + process.health_path, children[process.name], logs / f"{process.name}.log")
        print(f"system on PostgreSQL {cluster.host}:{cluster.port}; services: "
              + ", ".join(f"{p.name} pid {children[p.name].pid}" for p in plan.processes), flush=True)
        result = asyncio.run(drive(plan.info, {name: child.pid for name, child in children.items()}, args))
        summary = summarise(result, args)
        crashed = [name for name, child in children.items() if child.poll() is not None]
        if crashed:
            print(f"services that exited during the soak: {', '.join(crashed)}")
        if args.json is not None:
            args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v)
                                                      for k, v in vars(args).items()},
                                             "summary": summary, "intervals": result["rows"]}, indent=2))
        if args.keep:
            print(f"data and service logs kept in {data_dir}")
        sys.exit(1 if summary["errors"] or crashed else 0)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        cluster.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
