"""The embedded system as `make run` starts it: observability over a full flow, and the quickstart.

One `cartera run` (separate processes, SQLite, development PKI) serves the module. The demo scenario
(`cartera.commands.demo.run_scenario`, HTTP only) plays a whole flow; then every service's JSON log is
scanned for anything secret or personal that went through it, and the Prometheus counters are read.
The commands of docs/quickstart.md's "Try it" block are run against the same system, and a
wallet-initiated issuance (the wallet as the issuer's registered client).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cartera.commands.demo import run_scenario
from cartera.system import load_dev_file
from sandbox.population import DEMO_EVERYTHING
from tests.cli.test_run_system import _free_port_base, _start, _wait_healthy
from tests.wallet_api.conftest import APP_REDIRECT, bearer, login

ROOT = Path(__file__).resolve().parents[2]
CARTERA = [sys.executable, "-m", "cartera.cli"]
SERVICES = ("issuer", "verifier", "wallet")


@dataclass
class Running:
    data_dir: Path
    info: dict[str, Any]

    def url(self, name: str) -> str:
        return next(s["url"] for s in self.info["services"] if s["name"] == name)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("running")
    base = _free_port_base()
    process = _start(data_dir, base)  # Ctrl-C below reaches it however pytest was started
    try:
        _wait_healthy(data_dir, process)
        yield Running(data_dir, load_dev_file(data_dir / "cartera-dev.json"))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def flow(system: Running) -> dict[str, Any]:
    """The demo scenario, once; returns what it handled (ids, codes, tokens, the citizen's claims)."""
    ctx = run_scenario(system.info, timeout=60)
    claims: dict[str, Any] = {}
    for type_id in ("university-diploma", "tax-compliance"):
        detail = httpx.get(f"{ctx.wallet}/v1/credentials/{ctx.facts[type_id]['wallet_id']}", headers=ctx.bearer).json()
        claims[type_id] = detail["claims"]
    return {"facts": ctx.facts, "token": ctx.token, "claims": claims}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _secrets(system: Running, flow: dict[str, Any]) -> dict[str, str]:
    """Every secret or personal value the flow handled, labelled (so a failure says which kind leaked)."""
    found: dict[str, str] = {}
    info = system.info
    for slug, tenant in info["issuer"]["tenants"].items():
        found[f"issuer API key {slug}"] = tenant["api_key"]
    for slug, agency in info["verifier"]["agencies"].items():
        found[f"verifier API key {slug}"] = agency["api_key"]
        if agency.get("webhook_secret"):
            found[f"webhook secret {slug}"] = agency["webhook_secret"]
    facts = flow["facts"]
    found["wallet access token"] = flow["token"]
    found["wallet login code"] = facts["login"]["code"]
    if facts["login"].get("refresh_token"):
        found["wallet refresh token"] = facts["login"]["refresh_token"]
    for type_id in ("university-diploma", "tax-compliance"):
        found[f"tx_code of the {type_id} offer"] = facts[type_id]["offer"]["tx_code"]
    for name in ("issuer", "verifier", "wallet"):
        found[f"{name} master key"] = (system.data_dir / f"{name}-master.key").read_text().strip()[:32]
    for pem in (system.data_dir / "dev-pki").glob("*-key.pem"):
        body = "".join(line for line in pem.read_text().splitlines() if "-----" not in line)
        found[f"private key {pem.name}"] = body[20:60]
    clients = yaml.safe_load((system.data_dir / "sandbox" / "idp-clients.yaml").read_text())["clients"]
    for client in clients:
        found[f"identity provider secret of {client['client_id']}"] = client["client_secret"]
    for type_id, claims in flow["claims"].items():
        for value in _strings(claims):
            # Dates also occur in log timestamps, and short values ("ES", "6") everywhere: not telling.
            if len(value) >= 6 and not re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", value) and not (value.isalpha() and value.isupper()):
                found[f"claim value of the {type_id}"] = value
                found[f"claim value of the {type_id}: {value[:3]}…"] = value
    assert len(found) > 15
    return found


def check_no_secret_or_claim_value_in_the_json_logs(system: Running, flow: dict[str, Any]) -> None:
    secrets = _secrets(system, flow)
    assert any(k.startswith("claim value") for k in secrets)
    for name in SERVICES:
        text = (system.data_dir / "logs" / f"{name}.log").read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        requests = [r for r in records if r.get("message") == "request"]
        assert requests, f"{name} logged no requests"
        assert all(re.fullmatch(r"[0-9a-f]{32}", r["request_id"]) and r["service"] == name for r in requests)
        leaked = sorted(label for label, value in secrets.items() if value and value in text)
        assert not leaked, f"{name}'s log contains: {leaked}"


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in values.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def check_metrics_count_the_flow_by_outcome(system: Running, flow: dict[str, Any]) -> None:
    issuer = _metrics(system.url("issuer"))
    assert _total(issuer, "cartera_issuer_issuances_total", outcome="issued") >= 2
    assert _total(issuer, "cartera_issuer_source_calls_total", outcome="ok") >= 2
    assert _total(issuer, "cartera_issuer_source_calls_total", outcome="ok", type="tax-compliance") >= 1
    assert _total(issuer, "http_requests_total", route="/v1/credentials/{credential_id}/{action}", status="200") >= 1
    verifier = _metrics(system.url("verifier"))
    assert _total(verifier, "cartera_verifier_verifications_total", outcome="verified") >= 1
    revoked_seen = "verifier.revoked" in " ".join(o for _, o in flow["facts"]["steps"])
    assert _total(verifier, "cartera_verifier_verifications_total", outcome="rejected") >= (1 if revoked_seen else 0)
    # every series docs/operations.md documents is served
    documented = set(re.findall(r"`(cartera_[a-z_]+_total)`", (ROOT / "docs" / "operations.md").read_text()))
    exposition = "".join(httpx.get(f"{system.url(service)}/metrics").text for service in ("issuer", "verifier", "wallet"))
    served = set(re.findall(r"^# HELP (cartera_[a-z_]+_total) ", exposition, re.MULTILINE))
    assert documented and documented <= served, sorted(documented - served)
    wallet = _metrics(system.url("wallet"))
    assert _total(wallet, "cartera_wallet_sweeps_total") >= 1
    assert _total(wallet, "http_requests_total", method="POST", route="/v1/presentations/{presentation_id}/approve") >= 1
    assert _total(wallet, "http_request_duration_seconds_count") > 0


def _try_it_commands() -> list[str]:
    doc = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    section = doc.split("## Try it", 1)[1]
    block = re.search(r"```(?:sh|bash)?\n(.*?)```", section, re.DOTALL)
    assert block, "docs/quickstart.md has no fenced block under 'Try it'"
    commands = [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [c for c in commands if c]


def check_quickstart_try_it_commands(system: Running, tmp_path: Path) -> None:
    commands = _try_it_commands()
    assert len(commands) >= 4
    env = {**os.environ, "CARTERA_DEV_FILE": str(system.data_dir / "cartera-dev.json"), "COLUMNS": "120"}
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] in (".venv/bin/cartera", "cartera"), command
        # files the examples write under /tmp go to this test's own folder instead
        argv = [str(tmp_path / a[len("/tmp/"):]) if a.startswith("/tmp/") else a for a in argv[1:]]
        result = subprocess.run([*CARTERA, *argv], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr


def check_wallet_initiated_issuance_as_the_issuers_registered_client(system: Running) -> None:
    """`cartera run` registers the wallet API as the issuer's client: wallet-initiated issuance (the
    authorization code flow) works, and no other client gets a login link."""
    issuer = system.info["issuer"]["tenants"]["uni-barcelona"]["issuer_url"]
    tokens = login(system.url("wallet"), DEMO_EVERYTHING)
    started = httpx.post(f"{system.url('wallet')}/v1/issuance/authorize", headers=bearer(tokens), timeout=30, json={
        "credential_issuer": issuer, "credential_configuration_id": "university-diploma",
        "redirect_uri": APP_REDIRECT, "login_hint": DEMO_EVERYTHING})
    assert started.status_code == 200, started.text
    url = started.json()["authorization_url"]
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        for _ in range(8):
            if url.startswith(APP_REDIRECT):
                break
            response = browser.get(url)
            assert response.status_code in (302, 303), (response.status_code, response.text)
            url = response.headers["location"]
    # The wallet's callback receives nothing: the app, logged in as this wallet, completes the issuance.
    back = parse_qs(urlsplit(url).query)
    assert back.get("offer_id") == [started.json()["offer_id"]] and back.get("completion"), url
    done = httpx.post(f"{system.url('wallet')}/v1/issuance/complete", headers=bearer(tokens), timeout=60,
                      json={"offer_id": back["offer_id"][0], "completion": back["completion"][0]})
    assert done.status_code == 200 and done.json()["state"] == "issued", done.text
    stranger = httpx.post(f"{issuer}/par", timeout=30, data={
        "response_type": "code", "client_id": "someone-else", "redirect_uri": "https://phish.example/cb",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
        "scope": "university-diploma"})
    assert stranger.status_code == 400 and stranger.json()["error"] == "unauthorized_client", stranger.text


def test_full_flow_logs_metrics_and_quickstart(system: Running, tmp_path: Path) -> None:
    """One test, so that xdist keeps the one running system on one worker: the demo flow, then the logs
    scanned, the counters read, and the quickstart's commands run."""
    played = flow(system)
    check_no_secret_or_claim_value_in_the_json_logs(system, played)
    check_metrics_count_the_flow_by_outcome(system, played)
    check_quickstart_try_it_commands(system, tmp_path)
    check_wallet_initiated_issuance_as_the_issuers_registered_client(system)
