"""`cartera run` (the whole system on embedded defaults) and `cartera status`.

`cartera run` stops its services when it is stopped: Ctrl-C (SIGINT), SIGTERM, SIGHUP (the terminal
closed) and SIGQUIT all stop every service first, whether they reach `cartera run` alone or its whole
process group (the terminal's Ctrl-C, ``kill -TERM -<pgid>``). Each service runs in a process group of
its own, so such a signal reaches `cartera run` only, which stops the services one way: SIGTERM, the
signal on which uvicorn shuts down cleanly (its lifespan shutdown, where the issuer and verifier stop
their ACA-Py agents; a SIGINT after a first signal makes uvicorn skip it and leave the agents
running), then SIGKILL after a grace period. On Linux `cartera run` is also the subreaper of everything
it starts: an agent whose service died without stopping it becomes its child and is stopped too. Each
service also gets SIGTERM from the kernel when `cartera run` dies without a chance to stop them
(SIGKILL): ``PR_SET_PDEATHSIG``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from cartera.console import console, fail, print_json, safe
from cartera.http_api import dev_file_path
from cartera.system import (
    ARIES_PORT_OFFSETS,
    DEV_FILE_NAME,
    PORT_OFFSETS,
    ServiceProcess,
    load_dev_file,
    provision,
)

app = typer.Typer()

DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Folder for databases, development keys and the "
                                                              f"{DEV_FILE_NAME} file.")]


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


#: Signals that stop `cartera run` (and so every service) like Ctrl-C does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PR_SET_CHILD_SUBREAPER = 36
#: Seconds a service has to shut down after SIGTERM before it is killed: enough for its ACA-Py agent
#: (aries.runner gives one 10 s after its own SIGTERM) to go first.
STOP_GRACE = 20.0


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: nothing is loaded after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def _adopt_orphans() -> None:
    """Make this process the subreaper of its descendants (Linux): a process whose parent dies (an
    ACA-Py agent whose service was killed) becomes our child instead of init's, for :func:`_stop_orphans`."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _orphans(services: dict[str, subprocess.Popen[bytes]]) -> list[int]:
    """Our children other than the services: descendants whose parent died, adopted (Linux, /proc)."""
    ours, known, found = os.getpid(), {child.pid for child in services.values()}, []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) in known:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == ours:
            found.append(int(entry.name))
    return found


def _stop_orphans(services: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM the adopted orphans, then SIGKILL those still there after the grace period; reap them."""
    pending = set(_orphans(services))
    for pid in pending:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while pending:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.discard(pid)
        if not pending:
            break
        if time.monotonic() > deadline:
            for pid in pending:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            break
        time.sleep(0.1)


def _start(process: ServiceProcess, log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{process.name}.log").open("ab")
    # Each child gets only the variables of its own service (plus the parent's environment).
    # argv is built by cartera.system from sys.executable and fixed module names, never from input.
    # process_group=0: a process group of its own, so a signal to ours (the terminal's Ctrl-C, a
    # hang-up, `kill -<pgid>`) reaches `cartera run` alone, which then stops every service one way.
    try:
        return subprocess.Popen(process.argv, env={**os.environ, **process.env}, stdin=subprocess.DEVNULL,  # noqa: S603
                                stdout=log, stderr=subprocess.STDOUT, process_group=0,
                                preexec_fn=_die_with_parent())
    finally:
        log.close()


def _usable_host(host: str) -> bool:
    """Whether the services can run at ``host``: localhost or an IPv4 loopback address.

    The services accept plain http:// URLs only on loopback (offers, metadata and redirect URIs
    elsewhere must be https), and `cartera run` serves http: on another interface the issuer refuses
    the wallet's redirect URI and the wallet refuses the offers' URLs."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def _stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """Stop every service, and what they leave behind: SIGTERM (uvicorn's clean shutdown, which stops
    the ACA-Py agents), SIGKILL after :data:`STOP_GRACE`, then the orphans (:func:`_stop_orphans`)."""
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    _stop_orphans(children)


def _summary(info: dict[str, Any], data_dir: Path) -> None:
    table = Table(title="Cartera is running (embedded defaults, development only)")
    table.add_column("service")
    table.add_column("URL", no_wrap=True)
    table.add_column("API description (OpenAPI)", no_wrap=True)
    for service in info["services"]:
        table.add_row(safe(service["title"]), safe(service["url"]), safe(service.get("openapi_url") or ""))
    console.print(table)
    verifier = info.get("verifier", {})
    console.print("[bold]Open first:[/]", highlight=False)
    console.print(f"  • the verifier desk page: {safe(verifier.get('desk_url', ''))}", highlight=False)
    console.print(f"  • the web wallet (best in a phone-sized window): {safe(info['wallet']['wallet_url'])}/app/",
                  highlight=False)
    console.print(f"  • the identity provider's login page (synthetic citizens): {safe(info['sandbox']['idp_url'])}"
                  "/o/oauth2/auth is reached through the wallet login", highlight=False)
    console.print("[bold]Try:[/]", highlight=False)
    console.print("  cartera sandbox citizens --limit 5           # whom to log in as (12345678Z has everything)")
    console.print('  cartera issuer offer --type university-diploma --subject 12345678Z --name "Montserrat Puig Ferrer"')
    console.print("  cartera verifier request --template grant-application")
    console.print(f"Development API keys and URLs: {safe(data_dir / DEV_FILE_NAME)}; logs: {safe(data_dir / 'logs')}/",
                  highlight=False)
    console.print("Ctrl-C stops everything.")


@app.command("run")
def run(
    data_dir: DataDirOpt = Path("var"),
    host: Annotated[str, typer.Option(help="Loopback address to listen on: 127.0.0.1, another 127.x.y.z, or "
                                           "localhost (the services speak plain http, which they accept on "
                                           "loopback only).")] = "127.0.0.1",
    port_base: Annotated[int, typer.Option(help="Services listen on base+1 (issuer), +2 (verifier), +3 (wallet), "
                                                 "+4 (Via Oberta sandbox), +5 (identity provider); with --aries the agents "
                                                 "use +20, +21 (issuer) and +30, +31 (verifier).")] = 8000,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be healthy.")] = 60.0,
    aries: Annotated[bool, typer.Option("--aries", help="Also start the ACA-Py agents of the Aries (DIDComm) channel "
                                                         "(needs `make acapy`; adds a few seconds of start-up).")] = False,
) -> None:
    """Start the whole system on embedded defaults: sandbox, issuer, verifier and wallet API.

    The first start provisions a development PKI, demo issuers and agencies, the built-in credential
    types and the synthetic citizens; later starts reuse them. Ctrl-C (or SIGTERM, SIGHUP, SIGQUIT, to
    `cartera run` or to its process group) stops every service, and the ACA-Py agents with --aries.
    """
    if not _usable_host(host):
        fail(f"--host {host} is not a loopback address: the services accept plain http:// only on loopback, "
             "and `cartera run` serves http",
             hint="keep --host 127.0.0.1; to reach Cartera from other machines, deploy it behind https "
                  "(docs/operations.md)")
    highest = port_base + max((*PORT_OFFSETS.values(), *(ARIES_PORT_OFFSETS.values() if aries else ())))
    if port_base < 0 or highest > 65535:  # checked before anything is provisioned with these ports
        fail(f"--port-base {port_base} puts ports outside 1-65535: the services use base+1 to base+5"
             + (", the ACA-Py agents (--aries) base+20 to base+31" if aries else ""),
             hint=f"choose a base from 0 to {65535 - (highest - port_base)}")
    console.print("Provisioning (development PKI, demo tenants, agencies, wallet trust)…")
    try:
        plan = asyncio.run(provision(data_dir, host=host, port_base=port_base, aries=aries))
    except OSError as exc:
        fail(f"cannot prepare {data_dir}: {exc}")

    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    # From here on Ctrl-C is one more stop signal (no KeyboardInterrupt half-way through starting or
    # stopping the services), unless it is ignored (a background job of a shell without job control).
    handled = STOP_SIGNALS if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else (signal.SIGINT, *STOP_SIGNALS)
    for signum in handled:
        signal.signal(signum, on_signal)
    _adopt_orphans()
    log_dir = data_dir.resolve() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    busy = [p for p in plan.processes if _healthy(p.url + p.health_path, timeout=0.5)]
    if busy:
        fail(f"something already answers at {busy[0].url}", hint="stop it, or choose other ports with --port-base")
    try:
        for process in plan.processes:
            if stopping:
                break
            children[process.name] = _start(process, log_dir)
        with console.status("Starting services…"):
            deadline = time.monotonic() + startup_timeout
            pending = {p.name: p for p in plan.processes}
            while pending and not stopping:
                for name, process in list(pending.items()):
                    if stopping:
                        break
                    if children[name].poll() is not None:
                        raise RuntimeError(f"{process.title} exited during start-up; see {log_dir / name}.log")
                    if _healthy(process.url + process.health_path, timeout=0.5):
                        del pending[name]
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not healthy after {startup_timeout:.0f} s: {', '.join(pending)}; "
                                       f"see the logs in {log_dir}")
                time.sleep(0.2)
        if not stopping:
            _summary(plan.info, data_dir)
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    raise RuntimeError(f"{name} stopped unexpectedly (exit {child.returncode}); see {log_dir / name}.log")
            time.sleep(0.5)
    except KeyboardInterrupt:  # not expected (SIGINT is handled above); stop all the same
        pass
    except RuntimeError as exc:
        _stop(children)
        fail(str(exc))
    _stop(children)
    try:
        console.print("Stopped.")
    except OSError:  # SIGHUP: the terminal may be gone
        pass


@app.command("status")
def status(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help=f"Folder of the running system (its {DEV_FILE_NAME}); default: the file named by "
                           "CARTERA_DEV_FILE, else var/.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print [{"name", "url", "openapi_url", "healthy"}].')] = False,
) -> None:
    """Show each service of the running system with its URL and health. Exit 1 if any is unhealthy."""
    dev_file = data_dir / DEV_FILE_NAME if data_dir is not None else dev_file_path()
    info = load_dev_file(dev_file)
    if not info.get("services"):
        fail(f"no system provisioned in {dev_file}", hint="start it with `cartera run` (or `make run`)")
    rows = [{"name": s["name"], "url": s["url"], "openapi_url": s.get("openapi_url"),
             "healthy": _healthy(s["health_url"])} for s in info["services"]]
    if as_json:
        print_json(rows)
    else:
        table = Table(title="Cartera services")
        for column in ("service", "URL", "health"):
            table.add_column(column)
        for row in rows:
            table.add_row(safe(row["name"]), safe(row["url"]), "[green]healthy[/]" if row["healthy"] else "[red]down[/]")
        console.print(table)
    raise typer.Exit(0 if all(r["healthy"] for r in rows) else 1)
