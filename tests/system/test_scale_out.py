"""Scale-out (issue 7): two processes of each service on one PostgreSQL behave as one service.

The embedded system is provisioned exactly as ``cartera run`` does it, but with each service's database
on a shared throwaway PostgreSQL cluster (through the services' own ``CARTERA_*_DATABASE_URL``
variables), and the issuer, verifier and wallet API each run as TWO separate processes on two ports
(as two hosts behind a load balancer would). Requests are then aimed at one process or the other on
purpose: nothing may live only in one process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from cartera.system import provision
from sandbox.population import DEMO_EVERYTHING, DEMO_PENDING
from ssi import x509 as ssi_x509
from ssi.jose import Key, parse_jws
from ssi.oid4vci import build_proof_jwt
from ssi.status_list import verify_status_list_token
from tests.cli.test_run_system import _free_port_base
from tests.support.postgres import PostgresCluster
from tests.support.servers import free_port
from wallet_api.auth import pkce_pair

PRE_AUTH = "urn:ietf:params:oauth:grant-type:pre-authorized_code"
APP_REDIRECT = "http://127.0.0.1:9/scale-out/callback"
SERVICES = ("issuer", "verifier", "wallet")


@dataclass
class Cluster:
    a: dict[str, str]  # service -> base URL of process A (also the public URL)
    b: dict[str, str]  # service -> base URL of process B
    info: dict[str, Any]
    issuers_ca: Any

    def issuer_key(self, slug: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.info['issuer']['tenants'][slug]['api_key']}"}

    def agency_key(self, slug: str = "ajuntament-barcelona") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.info['verifier']['agencies'][slug]['api_key']}"}

    def to_b(self, service: str, url: str) -> str:
        """The same URL, served by process B."""
        assert url.startswith(self.a[service]), url
        return self.b[service] + url[len(self.a[service]):]


def _wait_healthy(urls: list[str], processes: list[subprocess.Popen[bytes]], log_dir: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = set(urls)
    while pending:
        for process in processes:
            if process.poll() is not None:
                logs = "\n".join(p.read_text()[-2000:] for p in log_dir.glob("*.log"))
                raise AssertionError(f"a service exited during start-up:\n{logs}")
        for url in list(pending):
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    pending.discard(url)
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready: {pending}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def cluster(postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("scale-out")
    databases = {name: postgres_cluster.create_database(prefix=name[:3]) for name in SERVICES}
    base = _free_port_base()
    with pytest.MonkeyPatch.context() as patch:
        # The services' own configuration variables: provisioning and every process then use PostgreSQL.
        patch.setenv("CARTERA_ISSUER_DATABASE_URL", databases["issuer"])
        patch.setenv("CARTERA_VERIFIER_DATABASE_URL", databases["verifier"])
        patch.setenv("CARTERA_WALLET_DATABASE_URL", databases["wallet"])
        plan = asyncio.run(provision(data_dir, port_base=base))
    log_dir = data_dir / "logs"
    log_dir.mkdir()
    children: list[subprocess.Popen[bytes]] = []
    a: dict[str, str] = {}
    b: dict[str, str] = {}
    try:
        for process in plan.processes:
            assert process.name == "sandbox" or process.env[f"CARTERA_{process.name.upper()}_DATABASE_URL"] \
                .startswith("postgresql")
            copies = [("a", process.argv)]
            if process.name in SERVICES:
                port_b = free_port()
                argv_b = list(process.argv)
                argv_b[argv_b.index("--port") + 1] = str(port_b)
                copies.append(("b", argv_b))
                a[process.name], b[process.name] = process.url, f"http://127.0.0.1:{port_b}"
            for label, argv in copies:
                log = (log_dir / f"{process.name}-{label}.log").open("wb")
                children.append(subprocess.Popen(argv, env={**os.environ, **process.env}, stdout=log,  # noqa: S603
                                                 stderr=subprocess.STDOUT))
        _wait_healthy([*a.values(), *b.values()], children, log_dir)
        ca = ssi_x509.load_certificate(Path(plan.info["dev_pki"]["issuers_ca"]).read_bytes())
        yield Cluster(a, b, plan.info, ca)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


# -- a bare OpenID4VCI wallet that chooses which process gets each request ------------------------------

def _offer(cluster: Cluster, slug: str, type_id: str, subject: str) -> dict[str, Any]:
    r = httpx.post(f"{cluster.a['issuer']}/v1/offers", headers=cluster.issuer_key(slug), timeout=30, json={
        "credential_configuration_ids": [type_id], "subject": {"identifier": subject, "name": "Montserrat Puig Ferrer"},
        "tx_code": True, "by_reference": True})
    assert r.status_code == 201, r.text
    return r.json()


def _token(cluster: Cluster, offer: dict[str, Any], via: dict[str, str]) -> tuple[str, str]:
    """Fetch the offer by reference and redeem its code, both through the process ``via``."""
    offer_url = offer["credential_offer_uri"]
    served = httpx.get(via["issuer"] + offer_url[len(cluster.a["issuer"]):], timeout=10)
    assert served.status_code == 200, served.text
    body = served.json()
    issuer_url = body["credential_issuer"]
    code = body["grants"][PRE_AUTH]["pre-authorized_code"]
    token_url = via["issuer"] + issuer_url[len(cluster.a["issuer"]):] + "/token"
    r = httpx.post(token_url, data={"grant_type": PRE_AUTH, "pre-authorized_code": code, "tx_code": offer["tx_code"]},
                   timeout=10)
    assert r.status_code == 200, r.text
    return issuer_url, r.json()["access_token"]


def _nonce(issuer_base: str, issuer_url: str, cluster: Cluster) -> str:
    r = httpx.post(issuer_base + issuer_url[len(cluster.a["issuer"]):] + "/nonce", timeout=10)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
    return r.json()["c_nonce"]


def _credential(issuer_base: str, issuer_url: str, cluster: Cluster, token: str, type_id: str, nonce: str,
                key: Key | None = None) -> httpx.Response:
    proof = build_proof_jwt(key or Key.generate("ES256"), audience=issuer_url, nonce=nonce)
    return httpx.post(issuer_base + issuer_url[len(cluster.a["issuer"]):] + "/credential", timeout=30,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"credential_configuration_id": type_id, "proofs": {"jwt": [proof]}})


# -- issuer ------------------------------------------------------------------------------------------

def check_offer_made_on_one_process_is_redeemed_on_the_other_once(cluster: Cluster) -> None:
    offer = _offer(cluster, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
    issuer_url, token = _token(cluster, offer, cluster.b)  # offer served and code redeemed by B
    nonce = _nonce(cluster.a["issuer"], issuer_url, cluster)  # nonce from A
    r = _credential(cluster.b["issuer"], issuer_url, cluster, token, "tax-compliance", nonce)  # credential by B
    assert r.status_code == 200, r.text
    assert r.json()["credentials"][0]["credential"].count("~") >= 2
    # the pre-authorized code was used on B: A refuses it too, and so does B (single use across processes)
    code = offer["offer"]["grants"][PRE_AUTH]["pre-authorized_code"]
    for process in (cluster.a, cluster.b):
        again = httpx.post(process["issuer"] + issuer_url[len(cluster.a["issuer"]):] + "/token", timeout=10,
                           data={"grant_type": PRE_AUTH, "pre-authorized_code": code, "tx_code": offer["tx_code"]})
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
    # and the offer, once used, is no longer served by either process
    for process in (cluster.a, cluster.b):
        body = httpx.get(process["issuer"] + offer["credential_offer_uri"][len(cluster.a["issuer"]):], timeout=10)
        assert body.status_code in (400, 404, 410), body.text


def check_a_c_nonce_is_accepted_exactly_once_under_concurrent_replays_on_both(cluster: Cluster) -> None:
    attempts = 12
    tokens = []
    for i in range(attempts):
        offer = _offer(cluster, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        tokens.append(_token(cluster, offer, cluster.a if i % 2 else cluster.b))
    issuer_url = tokens[0][0]
    nonce = _nonce(cluster.b["issuer"], issuer_url, cluster)
    keys = [Key.generate("ES256") for _ in range(attempts)]
    barrier = __import__("threading").Barrier(attempts)

    def replay(i: int) -> httpx.Response:
        barrier.wait()
        base = (cluster.a if i % 2 else cluster.b)["issuer"]
        return _credential(base, issuer_url, cluster, tokens[i][1], "tax-compliance", nonce, keys[i])

    with concurrent.futures.ThreadPoolExecutor(max_workers=attempts) as pool:
        answers = list(pool.map(replay, range(attempts)))
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 1, [(r.status_code, r.text[:120]) for r in answers]
    refused = [r for r in answers if r.status_code != 200]
    assert all(r.status_code == 400 and r.json()["error"] == "invalid_nonce" for r in refused), \
        [(r.status_code, r.text[:120]) for r in refused]


def check_deferred_transaction_started_on_one_completes_on_the_other(cluster: Cluster) -> None:
    offer = _offer(cluster, "aoc-tax", "tax-compliance", DEMO_PENDING)  # Via Oberta answers "pending"
    issuer_url, token = _token(cluster, offer, cluster.a)
    started = _credential(cluster.a["issuer"], issuer_url, cluster, token, "tax-compliance",
                          _nonce(cluster.a["issuer"], issuer_url, cluster))
    assert started.status_code == 202, started.text
    transaction_id = started.json()["transaction_id"]
    deadline = time.monotonic() + 30
    while True:
        r = httpx.post(cluster.to_b("issuer", issuer_url) + "/deferred_credential", timeout=30,
                       headers={"Authorization": f"Bearer {token}"}, json={"transaction_id": transaction_id})
        if r.status_code != 202 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    assert r.json()["credentials"][0]["credential"]
    # later polls, through either process, get the same response
    again = httpx.post(f"{issuer_url}/deferred_credential", headers={"Authorization": f"Bearer {token}"},
                       json={"transaction_id": transaction_id}, timeout=30)
    assert again.status_code == 200 and again.json()["credentials"] == r.json()["credentials"]


def _status_of(cluster: Cluster, via: dict[str, str], sd_jwt: str) -> int:
    jws = parse_jws(sd_jwt.split("~", 1)[0])
    ref = jws.json_payload()["status"]["status_list"]
    r = httpx.get(cluster.to_b("issuer", ref["uri"]) if via is cluster.b else ref["uri"], timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/statuslist+jwt")

    def key(header: dict[str, Any], _payload: dict[str, Any]) -> Key:
        return ssi_x509.certificate_key(ssi_x509.verify_x5c(header["x5c"], [cluster.issuers_ca]))

    token = verify_status_list_token(r.text.strip(), key=key, expected_uri=ref["uri"])
    return token.status(int(ref["idx"]))


def check_status_lists_agree_across_processes(cluster: Cluster) -> None:
    offer = _offer(cluster, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
    issuer_url, token = _token(cluster, offer, cluster.a)
    r = _credential(cluster.a["issuer"], issuer_url, cluster, token, "tax-compliance",
                    _nonce(cluster.a["issuer"], issuer_url, cluster))
    assert r.status_code == 200, r.text
    sd_jwt = r.json()["credentials"][0]["credential"]
    record = offer["credential_ids"]["tax-compliance"]
    headers = cluster.issuer_key("aoc-tax")
    assert _status_of(cluster, cluster.a, sd_jwt) == 0 and _status_of(cluster, cluster.b, sd_jwt) == 0
    # prime both processes' view, then change the status through one and read it through the other
    assert httpx.post(f"{cluster.b['issuer']}/v1/credentials/{record}/suspend", headers=headers).status_code == 200
    assert _status_of(cluster, cluster.a, sd_jwt) == 2
    assert httpx.post(f"{cluster.a['issuer']}/v1/credentials/{record}/reinstate", headers=headers).status_code == 200
    assert _status_of(cluster, cluster.b, sd_jwt) == 0
    assert httpx.post(f"{cluster.a['issuer']}/v1/credentials/{record}/revoke", headers=headers).status_code == 200
    assert _status_of(cluster, cluster.b, sd_jwt) == 1 and _status_of(cluster, cluster.a, sd_jwt) == 1
    shown = httpx.get(f"{cluster.b['issuer']}/v1/credentials/{record}", headers=headers).json()
    assert shown["status"] == "revoked"


# -- wallet and verifier ------------------------------------------------------------------------------

def _login(cluster: Cluster, identifier: str) -> dict[str, str]:
    """Start the login on wallet process B; the identity provider returns to A (the public URL); the
    app's one-time code is exchanged on B again."""
    state = secrets.token_urlsafe(8)
    verifier, challenge = pkce_pair()
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        start = client.get(f"{cluster.b['wallet']}/v1/auth/login", params={
            "provider": "valid", "redirect_uri": APP_REDIRECT, "state": state, "login_hint": identifier,
            "code_challenge": challenge, "code_challenge_method": "S256"})
        assert start.status_code == 302, start.text
        idp = client.get(start.headers["location"] + "&login_method=idcatmobil")
        assert idp.status_code in (302, 303), idp.text
        assert idp.headers["location"].startswith(cluster.a["wallet"])
        back = client.get(idp.headers["location"])
        assert back.status_code == 302, back.text
        code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
        tokens = client.post(f"{cluster.b['wallet']}/v1/auth/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": APP_REDIRECT, "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


def check_wallet_and_verifier_across_two_processes_each(cluster: Cluster) -> None:
    me = _login(cluster, DEMO_EVERYTHING)
    offer = _offer(cluster, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
    preview = httpx.post(f"{cluster.a['wallet']}/v1/offers", json={"offer_uri": offer["offer_uri"]}, headers=me,
                         timeout=30)
    assert preview.status_code == 201, preview.text
    accepted = httpx.post(f"{cluster.b['wallet']}/v1/offers/{preview.json()['offer_id']}/accept",
                          json={"tx_code": offer["tx_code"]}, headers=me, timeout=60)
    assert accepted.status_code == 200 and accepted.json()["state"] == "issued", accepted.text
    credential_id = accepted.json()["credential_ids"][0]

    request = httpx.post(f"{cluster.a['verifier']}/v1/requests", headers=cluster.agency_key(),
                         json={"template": "grant-application"}, timeout=10)
    assert request.status_code == 201, request.text
    created = request.json()
    # the request object is fetched from verifier process B; the response goes to A (the response_uri
    # inside the signed object); the result is read on B
    port_a, port_b = (urlsplit(cluster.a["verifier"]).port, urlsplit(cluster.b["verifier"]).port)
    uri_via_b = created["uri"].replace(quote(f"127.0.0.1:{port_a}", safe=""), quote(f"127.0.0.1:{port_b}", safe=""))
    assert uri_via_b != created["uri"]
    shown = httpx.post(f"{cluster.a['wallet']}/v1/presentations", json={"request_uri": uri_via_b}, headers=me,
                       timeout=30)
    assert shown.status_code == 201, shown.text
    view = shown.json()
    assert view["verifier"]["verified"] and view["satisfiable"]
    selection = {q["query_id"]: credential_id for q in view["queries"]
                 if any(o["credential_id"] == credential_id for o in q["options"])}
    sent = httpx.post(f"{cluster.b['wallet']}/v1/presentations/{view['presentation_id']}/approve",
                      json={"selection": selection}, headers=me, timeout=30)
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    status_url = cluster.to_b("verifier", created["status_url"])
    deadline = time.monotonic() + 15
    while True:
        result = httpx.get(status_url, headers=cluster.agency_key(), timeout=10).json()
        if result["status"] not in ("pending", "processing") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result["status"] == "verified", json.dumps(result)[:500]
    assert result["claims"]["tax"]
    # the history written by one wallet process is read by the other
    history = httpx.get(f"{cluster.a['wallet']}/v1/history", params={"kind": "share"}, headers=me).json()
    assert history[0]["details"]["outcome"] == "sent"

    # both wallet processes sweep status lists: a revocation raises exactly one alert
    revoked = httpx.post(f"{cluster.b['issuer']}/v1/credentials/{offer['credential_ids']['tax-compliance']}/revoke",
                         headers=cluster.issuer_key("aoc-tax"))
    assert revoked.status_code == 200, revoked.text

    def revoked_alerts(base: str) -> list[dict[str, Any]]:
        alerts = httpx.get(f"{base}/v1/alerts", headers=me, timeout=10).json()
        return [a for a in alerts if a["kind"] == "revoked" and a["credential_id"] == credential_id]

    deadline = time.monotonic() + 45  # the list's ttl (10 s in development) plus sweeps
    while not revoked_alerts(cluster.a["wallet"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    # A second alert could only come from a sweep that was under way meanwhile: wait until each wallet
    # process has completed two more sweeps (the first may have started before the alert was seen).
    seen = {name: wallet_sweeps(getattr(cluster, name)["wallet"]) for name in ("a", "b")}
    deadline = time.monotonic() + 30
    while any(wallet_sweeps(getattr(cluster, name)["wallet"]) < seen[name] + 2 for name in seen):
        assert time.monotonic() < deadline, "a wallet process stopped sweeping"
        time.sleep(0.2)
    assert len(revoked_alerts(cluster.a["wallet"])) == 1 and len(revoked_alerts(cluster.b["wallet"])) == 1


def wallet_sweeps(base: str) -> float:
    """``cartera_wallet_sweeps_total`` of one wallet process (its /metrics answers loopback)."""
    metrics = httpx.get(f"{base}/metrics", timeout=10)
    assert metrics.status_code == 200, metrics.status_code
    return next(float(line.split()[-1]) for line in metrics.text.splitlines()
                if line.startswith("cartera_wallet_sweeps_total "))


def test_two_processes_per_service_on_one_postgresql_behave_as_one(cluster: Cluster) -> None:
    """One test, so that xdist keeps the one shared cluster on one worker; each check names what failed."""
    check_offer_made_on_one_process_is_redeemed_on_the_other_once(cluster)
    check_a_c_nonce_is_accepted_exactly_once_under_concurrent_replays_on_both(cluster)
    check_deferred_transaction_started_on_one_completes_on_the_other(cluster)
    check_status_lists_agree_across_processes(cluster)
    check_wallet_and_verifier_across_two_processes_each(cluster)
