"""`cartera demo`: the scripted end-to-end scenario of the whole system, also a smoke test.

The demo is an outside party: it speaks HTTP only, to the public APIs a citizen's app, an issuing
desk and a verifying desk would use — the wallet API (login, offers, consent, history, alerts), the
issuer's admin API (offers, revocation) and the verifier's agency API (requests, results). It reads
URLs and development API keys from ``<data dir>/cartera-dev.json`` (written by ``cartera run``), or
starts the whole system itself with ``--start`` (temporary folder, free ports, stopped at the end).

Every step checks that the system behaved as described and the command exits 1 with a readable
message at the first step that did not, so ``make test`` runs it as a smoke test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import typer
from rich.table import Table

from cartera.console import console, fail, safe
from cartera.system import DEV_FILE_NAME, PORT_OFFSETS, load_dev_file

app = typer.Typer()

#: Where the wallet sends the demo "app" back after login. Loopback, so the development wallet accepts
#: it without registration; nothing listens there: the demo reads the redirect without following it.
APP_REDIRECT = "http://127.0.0.1:9/cartera-demo/callback"
#: The synthetic citizen with a degree, a positive tax record and a padró entry (see docs/sandbox.md).
DEFAULT_CITIZEN = "12345678Z"
GRANT_TEMPLATE = "grant-application"


class DemoFailure(Exception):
    """A step did not behave as the scenario describes."""


@dataclass
class DemoContext:
    """What the scenario knows about the running system (from the development file)."""

    wallet: str
    issuer_keys: dict[str, str]
    issuer_types: dict[str, str]
    verifier: str
    agency: str
    agency_key: str
    agency_name: str
    citizen: str
    timeout: float
    client: httpx.Client
    facts: dict[str, Any] = field(default_factory=dict)
    token: str = ""

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _expect(response: httpx.Response, status: int | tuple[int, ...], what: str) -> Any:
    wanted = (status,) if isinstance(status, int) else status
    if response.status_code not in wanted:
        try:
            body = response.json()
            reason = f"{body.get('error')}: {body.get('error_description')}" if isinstance(body, dict) else body
        except ValueError:
            reason = response.text[:200]
        raise DemoFailure(f"{what}: HTTP {response.status_code} ({reason})")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _context_from(info: dict[str, Any], citizen: str, agency: str, timeout: float,
                  client: httpx.Client) -> DemoContext:
    try:
        tenants = info["issuer"]["tenants"]
        issuer_keys = {slug: t["api_key"] for slug, t in tenants.items()}
        issuer_types = {type_id: slug for slug, t in tenants.items() for type_id in t["types"]}
        agencies = info["verifier"]["agencies"]
        chosen = agencies[agency]
        return DemoContext(wallet=info["wallet"]["wallet_url"], issuer_keys=issuer_keys, issuer_types=issuer_types,
                           verifier=info["verifier"]["url"], agency=agency, agency_key=chosen["api_key"],
                           agency_name=chosen.get("name", agency), citizen=citizen, timeout=timeout, client=client)
    except (KeyError, TypeError) as exc:
        raise DemoFailure(f"the development file lacks {exc}; was it written by `cartera run`?") from exc


# -- the steps ---------------------------------------------------------------------------------------

def pkce_pair() -> tuple[str, str]:
    """What an app keeps and what it sends at login: a fresh PKCE ``(code_verifier, S256 code_challenge)``
    (RFC 7636); the wallet exchanges the login's one-time code only with the verifier."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def login(ctx: DemoContext) -> str:
    """The citizen logs in to the wallet through the sandbox VÀLid (``login_hint`` skips its page)."""
    state = secrets.token_urlsafe(8)
    verifier, challenge = pkce_pair()
    start = ctx.client.get(f"{ctx.wallet}/v1/auth/login", params={
        "provider": "valid", "redirect_uri": APP_REDIRECT, "state": state, "login_hint": ctx.citizen,
        "code_challenge": challenge, "code_challenge_method": "S256"})
    _expect(start, 302, "the wallet did not start a login")
    location = start.headers["location"]
    at_idp = ctx.client.get(location + ("&" if "?" in location else "?") + "login_method=idcatmobil")
    _expect(at_idp, (302, 303), "the identity provider did not log the citizen in")
    back = ctx.client.get(at_idp.headers["location"])
    _expect(back, 302, "the wallet did not complete the login")
    location = back.headers["location"]
    params = parse_qs(urlsplit(location).query)
    if not location.startswith(APP_REDIRECT) or params.get("state") != [state] or "code" not in params:
        raise DemoFailure(f"the wallet returned an unexpected redirect ({params.get('error', ['no code'])[0]})")
    tokens = _expect(ctx.client.post(f"{ctx.wallet}/v1/auth/token", data={
        "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": APP_REDIRECT,
        "code_verifier": verifier}),
        200, "the wallet refused the login code")
    ctx.token = tokens["access_token"]
    ctx.facts["login"] = {"code": params["code"][0], "refresh_token": tokens.get("refresh_token", "")}
    me = _expect(ctx.client.get(f"{ctx.wallet}/v1/me", headers=ctx.bearer), 200, "the wallet does not know the citizen")
    name = me.get("name") or me.get("display_name") or ""
    ctx.facts["name"] = name
    return f"logged in as {name or 'the citizen'} ({ctx.citizen}) through the sandbox identity provider"


def receive(ctx: DemoContext, type_id: str) -> str:
    """The issuer's desk makes an offer (admin API); the wallet previews it and accepts it."""
    slug = ctx.issuer_types.get(type_id)
    if slug is None:
        raise DemoFailure(f"no demo issuer issues {type_id}")
    issuer_url = ctx.facts["issuer_url"]
    offer = _expect(ctx.client.post(f"{issuer_url}/v1/offers", headers={"Authorization": f"Bearer {ctx.issuer_keys[slug]}"},
                                    json={"credential_configuration_ids": [type_id],
                                          "subject": {"identifier": ctx.citizen, "name": ctx.facts.get("name", "")},
                                          "tx_code": True,
                                          "by_reference": True}),
                    201, f"the issuer {slug} did not create an offer")
    preview = _expect(ctx.client.post(f"{ctx.wallet}/v1/offers", json={"offer_uri": offer["offer_uri"]},
                                      headers={**ctx.bearer, "Accept-Language": "en"}),
                      201, "the wallet could not read the offer")
    if not preview.get("tx_code_required"):
        raise DemoFailure("the offer should ask for the transaction code given at the desk")
    accepted = _expect(ctx.client.post(f"{ctx.wallet}/v1/offers/{preview['offer_id']}/accept",
                                       json={"tx_code": offer["tx_code"]}, headers=ctx.bearer),
                       200, f"the wallet could not receive the {type_id} credential")
    deadline = time.monotonic() + ctx.timeout
    while accepted.get("state") == "pending" and time.monotonic() < deadline:
        time.sleep(1)
        accepted = _expect(ctx.client.post(f"{ctx.wallet}/v1/offers/{preview['offer_id']}/poll", headers=ctx.bearer),
                           200, "the deferred issuance could not be polled")
    if accepted.get("state") != "issued" or not accepted.get("credential_ids"):
        raise DemoFailure(f"the {type_id} credential was not issued (state {accepted.get('state')})")
    wallet_id = accepted["credential_ids"][0]
    detail = _expect(ctx.client.get(f"{ctx.wallet}/v1/credentials/{wallet_id}", headers=ctx.bearer),
                     200, "the new credential is not in the wallet")
    if detail.get("status") != "valid":
        raise DemoFailure(f"the new {type_id} credential is {detail.get('status')}, not valid")
    ctx.facts[type_id] = {"wallet_id": wallet_id, "issuer_id": offer["credential_ids"][type_id], "issuer": slug,
                          "offer": offer}
    issuer_name = (accepted.get("issuer") or {}).get("name") or slug
    return f"{detail.get('name') or type_id} from {issuer_name} ({len(detail.get('claims') or {})} claims)"


def _new_request(ctx: DemoContext) -> dict[str, Any]:
    return _expect(ctx.client.post(f"{ctx.verifier}/v1/requests", headers={"Authorization": f"Bearer {ctx.agency_key}"},
                                   json={"template": GRANT_TEMPLATE}),
                   201, f"the verifier {ctx.agency} did not create a {GRANT_TEMPLATE} request")


def _result(ctx: DemoContext, request: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + ctx.timeout
    while True:
        result = _expect(ctx.client.get(request["status_url"], headers={"Authorization": f"Bearer {ctx.agency_key}"}),
                         200, "the verifier's result could not be read")
        if result.get("status") not in ("pending", "processing") or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def _selection(preview: dict[str, Any], credential_id: str) -> dict[str, str]:
    return {q["query_id"]: credential_id for q in preview.get("queries", [])
            if any(o["credential_id"] == credential_id for o in q.get("options", []))}


def consent_preview(ctx: DemoContext) -> str:
    """The city hall asks (grant application); the wallet shows who asks, why and exactly what."""
    request = _new_request(ctx)
    preview = _expect(ctx.client.post(f"{ctx.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                                      headers={**ctx.bearer, "Accept-Language": "en"}),
                      201, "the wallet could not read the presentation request")
    verifier = preview.get("verifier") or {}
    if not verifier.get("verified") or verifier.get("name") != ctx.agency_name:
        raise DemoFailure(f"the wallet should name the verified agency {ctx.agency_name!r}, shows {verifier.get('name')!r}")
    if not preview.get("satisfiable"):
        raise DemoFailure("the wallet cannot answer the grant request with the credentials it holds")
    tax_id = ctx.facts["tax-compliance"]["wallet_id"]
    selection = _selection(preview, tax_id)
    if not selection:
        raise DemoFailure("the consent preview does not offer the tax-compliance certificate just received")
    table = Table(title=f"Consent: {safe(verifier['name'])} asks — {safe(preview.get('purpose') or '')}",
                  show_lines=False)
    table.add_column("claim")
    table.add_column("value that would be shared")
    shown = 0
    for query in preview["queries"]:
        option = next((o for o in query["options"] if o["credential_id"] == selection.get(query["query_id"])), None)
        for claim in (option or {}).get("claims", []):
            table.add_row(safe(claim["name"]), safe(claim["value"]))
            shown += 1
    if shown == 0:
        raise DemoFailure("the consent preview lists no claim")
    console.print(table)
    ctx.facts["first"] = {"request": request, "preview": preview, "selection": selection}
    return f"{shown} claims shown for the citizen's approval; nothing sent yet"


def approve_and_verify(ctx: DemoContext) -> str:
    """The citizen approves; the verifier reports the verified claims (its result API)."""
    first = ctx.facts["first"]
    status = _expect(ctx.client.get(first["request"]["status_url"], headers={"Authorization": f"Bearer {ctx.agency_key}"}),
                     200, "the verifier's result could not be read")
    if status.get("status") != "pending":
        raise DemoFailure("the verifier received something before the citizen approved")
    sent = _expect(ctx.client.post(f"{ctx.wallet}/v1/presentations/{first['preview']['presentation_id']}/approve",
                                   json={"selection": first["selection"]}, headers=ctx.bearer),
                   200, "the wallet could not send the presentation")
    if sent.get("state") != "sent":
        raise DemoFailure(f"the presentation is {sent.get('state')}, not sent")
    result = _result(ctx, first["request"])
    if result.get("status") != "verified":
        codes = ", ".join(e.get("code", "?") for e in result.get("errors") or []) or "no reason given"
        raise DemoFailure(f"the verifier did not verify the presentation: {result.get('status')} ({codes})")
    table = Table(title=f"{safe(ctx.agency_name)} — verified claims")
    table.add_column("query")
    table.add_column("claims")
    for query_id, claims in (result.get("claims") or {}).items():
        table.add_row(safe(query_id), safe(claims))
    console.print(table)
    return "verified: signature, trust in the issuer, holder binding, nonce and status all checked"


def revoke(ctx: DemoContext) -> str:
    """The tax-compliance issuer revokes the certificate (admin API)."""
    fact = ctx.facts["tax-compliance"]
    # The wallet checks a new credential's status list once soon after receipt, then after the list's
    # ttl. Revoking after that first check lets the scenario show the verifier catching the revocation
    # (rather than the wallet, which would simply stop offering the certificate).
    deadline = time.monotonic() + ctx.timeout
    while True:
        detail = _expect(ctx.client.get(f"{ctx.wallet}/v1/credentials/{fact['wallet_id']}", headers=ctx.bearer),
                         200, "the certificate is not in the wallet")
        if detail.get("status_checked_at") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    body = _expect(ctx.client.post(f"{ctx.facts['issuer_url']}/v1/credentials/{fact['issuer_id']}/revoke",
                                   headers={"Authorization": f"Bearer {ctx.issuer_keys[fact['issuer']]}"}),
                   200, "the issuer could not revoke the certificate")
    if isinstance(body, dict) and body.get("status") not in (None, "revoked"):
        raise DemoFailure(f"the issuer reports the certificate as {body.get('status')}")
    # The embedded verifier keeps status lists for at most 2 s (CARTERA_VERIFIER_STATUS_DEFAULT_TTL);
    # waiting that long is what a desk would see in production after the list's ttl.
    time.sleep(ctx.facts.get("status_wait", 2.5))
    return f"certificate {fact['issuer_id']} revoked; its status list entry now says invalid"


def rejected_as_revoked(ctx: DemoContext) -> str:
    """The next grant request with the revoked certificate fails as revoked."""
    tax_id = ctx.facts["tax-compliance"]["wallet_id"]
    request = _new_request(ctx)
    preview = _expect(ctx.client.post(f"{ctx.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                                      headers=ctx.bearer), 201, "the wallet could not read the second request")
    selection = _selection(preview, tax_id)
    if not selection:
        # The wallet's own status check got there first: it no longer offers the revoked certificate.
        detail = _expect(ctx.client.get(f"{ctx.wallet}/v1/credentials/{tax_id}", headers=ctx.bearer),
                         200, "the certificate disappeared from the wallet")
        if detail.get("status") != "revoked":
            raise DemoFailure(f"the wallet no longer offers the certificate, yet calls it {detail.get('status')}")
        _expect(ctx.client.post(f"{ctx.wallet}/v1/presentations/{preview['presentation_id']}/decline",
                                headers=ctx.bearer), 200, "the wallet could not decline")
        return "the wallet already knows the certificate is revoked and no longer offers it"
    sent = ctx.client.post(f"{ctx.wallet}/v1/presentations/{preview['presentation_id']}/approve",
                           json={"selection": selection}, headers=ctx.bearer)
    if sent.status_code >= 500 and sent.status_code != 502:
        raise DemoFailure(f"the wallet failed while sending (HTTP {sent.status_code})")
    result = _result(ctx, request)
    codes = [e.get("code", "") for e in result.get("errors") or []]
    if result.get("status") != "rejected" or not any("revoked" in code for code in codes):
        raise DemoFailure(f"the verifier should reject the revoked certificate; it says {result.get('status')} "
                          f"({', '.join(codes) or 'no errors'})")
    ctx.facts["rejected_presentation"] = preview["presentation_id"]
    return f"the verifier rejected the presentation: {', '.join(codes)}"


def history_and_alerts(ctx: DemoContext) -> str:
    """The citizen's history shows both receipts and the shares; an alert says the certificate was revoked."""
    tax_id = ctx.facts["tax-compliance"]["wallet_id"]
    diploma_id = ctx.facts["university-diploma"]["wallet_id"]
    deadline = time.monotonic() + ctx.timeout
    revoked_alert = None
    while revoked_alert is None:
        alerts = _expect(ctx.client.get(f"{ctx.wallet}/v1/alerts", headers=ctx.bearer), 200, "alerts unreadable")
        revoked_alert = next((a for a in alerts if a.get("kind") == "revoked" and a.get("credential_id") == tax_id), None)
        if revoked_alert is None:
            if time.monotonic() > deadline:
                raise DemoFailure("no 'revoked' alert reached the wallet (its background status check did not run?)")
            time.sleep(1)
    received = {a.get("credential_id") for a in alerts if a.get("kind") == "credential_received"}
    if not {tax_id, diploma_id} <= received:
        raise DemoFailure("the wallet did not alert the citizen about both new credentials")
    history = _expect(ctx.client.get(f"{ctx.wallet}/v1/history", params={"limit": 100}, headers=ctx.bearer),
                      200, "history unreadable")
    receipts = {h["details"].get("credential_id") for h in history if h["kind"] == "receipt"}
    if not {tax_id, diploma_id} <= receipts:
        raise DemoFailure("the history lacks a receipt of the new credentials")
    shares = [h for h in history if h["kind"] in ("share", "decline")
              and any(d.get("credential_id") == tax_id for d in h["details"].get("disclosed") or [])]
    if not any(h["details"].get("outcome") == "sent" for h in shares):
        raise DemoFailure("the history lacks the approved share with the city hall")
    if ctx.facts.get("rejected_presentation") and not any(h["details"].get("outcome") == "failed" for h in shares):
        raise DemoFailure("the history lacks the share the verifier rejected")
    # Newest first: everything down to the diploma's receipt happened during this run.
    first = next(i for i, h in enumerate(history) if h["kind"] == "receipt"
                 and h["details"].get("credential_id") == diploma_id)
    history = history[:first + 1]
    table = Table(title="The citizen's wallet: history (newest first) and alerts")
    table.add_column("when", no_wrap=True)
    table.add_column("what")
    for entry in history:
        details = entry["details"]
        if entry["kind"] == "receipt":
            what = f"received {details.get('credential_name') or details.get('type') or details.get('vct', '')}"
        elif entry["kind"] in ("share", "decline"):
            verifier = (details.get("verifier") or {}).get("name") or "unverified verifier"
            claims = sum(len(d.get("claims") or []) for d in details.get("disclosed") or [])
            what = f"{entry['kind']} with {verifier}: {claims} claims, outcome {details.get('outcome', entry['kind'])}"
        else:
            what = entry["kind"]
        table.add_row(safe(str(entry.get("created_at", ""))[:19]), safe(what))
    table.add_row("alert", safe(revoked_alert.get("message") or revoked_alert.get("text") or "revoked"))
    console.print(table)
    return f"{len(history)} history entries; alerts include 'revoked' for the certificate"


STEPS: list[tuple[str, Callable[[DemoContext], str]]] = [
    ("The citizen logs in through the sandbox identity provider", login),
    ("The university issues a diploma into the wallet", lambda ctx: receive(ctx, "university-diploma")),
    ("The tax-compliance body issues a certificate into the wallet", lambda ctx: receive(ctx, "tax-compliance")),
    ("The city hall asks for tax compliance and name (grant application)", consent_preview),
    ("The citizen approves; the verifier shows the verified claims", approve_and_verify),
    ("The issuer revokes the tax-compliance certificate", revoke),
    ("The next presentation is rejected as revoked", rejected_as_revoked),
    ("The citizen's history and alerts show all of it", history_and_alerts),
]


def run_scenario(info: dict[str, Any], *, citizen: str = DEFAULT_CITIZEN, agency: str = "ajuntament-barcelona",
                 timeout: float = 60.0) -> DemoContext:
    """Run every step against the system described by ``info`` (the development file's content).

    Returns the scenario's context (``facts["steps"]`` holds ``(step, outcome)`` pairs; tests also read
    the codes and tokens it handled); raises :class:`DemoFailure` at the first step that misbehaves.
    """
    done: list[tuple[str, str]] = []
    with httpx.Client(timeout=30.0, follow_redirects=False) as client:
        ctx = _context_from(info, citizen, agency, timeout, client)
        ctx.facts["issuer_url"] = info["issuer"]["issuer_url"]
        for number, (title, step) in enumerate(STEPS, start=1):
            console.print(f"[bold]{number}. {title}[/]", highlight=False)
            try:
                outcome = step(ctx)
            except httpx.HTTPError as exc:
                raise DemoFailure(f"step {number} ({title}): a service did not answer ({type(exc).__name__})") from exc
            except DemoFailure as exc:
                raise DemoFailure(f"step {number} ({title}): {exc}") from exc
            console.print(f"   [green]✓[/] {safe(outcome)}", highlight=False)
            done.append((title, outcome))
        ctx.facts["steps"] = done
    return ctx


# -- starting a system of our own -------------------------------------------------------------------

def _free_port_base() -> int:
    for _ in range(200):
        # Below the ephemeral range (32768+), where outgoing connections could take a port first.
        base = random.randrange(20_000, 31_900, 10)  # noqa: S311 - a port number, not a secret
        try:
            for offset in PORT_OFFSETS.values():
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise DemoFailure("no free range of local ports to start the system on")


def _healthy(info: dict[str, Any]) -> bool:
    try:
        return all(httpx.get(s["health_url"], timeout=2).status_code == 200 for s in info.get("services", []))
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def started_system(data_dir: Path, timeout: float = 120.0) -> Iterator[dict[str, Any]]:
    """Run ``cartera run`` in the background on ``data_dir`` and free ports; stop it on exit."""
    base = _free_port_base()
    log = (data_dir / "cartera-run.log").open("wb")
    # argv: this interpreter and fixed module name; the port base and folder are ours, not user input.
    process = subprocess.Popen([sys.executable, "-m", "cartera.cli", "run", "--data-dir", str(data_dir),  # noqa: S603
                                "--port-base", str(base)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + timeout
        with console.status("Starting the system (sandbox, issuer, verifier, wallet)…"):
            while True:
                if process.poll() is not None:
                    raise DemoFailure(f"`cartera run` exited during start-up; see {data_dir / 'cartera-run.log'}")
                info = load_dev_file(data_dir / DEV_FILE_NAME)
                if info.get("services") and _healthy(info):
                    break
                if time.monotonic() > deadline:
                    raise DemoFailure(f"the system was not healthy after {timeout:.0f} s")
                time.sleep(0.5)
        console.print(f"System started on ports {base + 1}–{base + 5} (data in {safe(data_dir)})", highlight=False)
        yield info
    finally:
        if process.poll() is None:
            # SIGTERM, not SIGINT: a shell that started us in the background may have made children
            # ignore SIGINT; `cartera run` stops every service on SIGTERM either way.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@app.command("demo")
def demo(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help=f"Folder of the running system (its {DEV_FILE_NAME}); default: the file named by "
                           "CARTERA_DEV_FILE, else var/.")] = None,
    start: Annotated[bool, typer.Option("--start", help="Start the whole system in a temporary folder on free "
                                                         "ports, run the demo, and stop it.")] = False,
    citizen: Annotated[str, typer.Option(help="Synthetic citizen (NIF) who plays the scenario.")] = DEFAULT_CITIZEN,
    agency: Annotated[str, typer.Option(help="Demo agency that asks for the grant application.")] = "ajuntament-barcelona",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for asynchronous steps (results, alerts).")] = 60.0,
) -> None:
    """Play the whole scenario against the running system, checking every step.

    A citizen logs in through the sandbox identity provider, receives a university diploma and a
    tax-compliance certificate, a city hall asks for tax compliance and name for a grant, the citizen
    sees the consent preview and approves, the verifier shows the verified claims, the issuer revokes
    the certificate, the next presentation is rejected as revoked, and the citizen's history and alerts
    show it all. Exits 1 with the failing step when anything does not behave as described.
    """
    started = time.monotonic()
    try:
        if start:
            with tempfile.TemporaryDirectory(prefix="cartera-demo-") as tmp, started_system(Path(tmp)) as info:
                run_scenario(info, citizen=citizen, agency=agency, timeout=timeout)
        else:
            dev_file = data_dir / DEV_FILE_NAME if data_dir is not None else \
                Path(os.environ.get("CARTERA_DEV_FILE") or Path("var") / DEV_FILE_NAME)
            info = load_dev_file(dev_file)
            if not info.get("services"):
                fail(f"no running system described in {dev_file}",
                     hint="start it with `cartera run` (or `make run`), or use `cartera demo --start`")
            if not _healthy(info):
                fail("some services of the system are not answering", hint="check `cartera status`")
            run_scenario(info, citizen=citizen, agency=agency, timeout=timeout)
    except DemoFailure as exc:
        fail(f"the demo failed — {exc}")
    console.print(f"[bold green]Demo complete[/] in {time.monotonic() - started:.1f} s: every step behaved as "
                  "described.", highlight=False)
