"""The benchmark scripts (bench/core.py, bench/issuance.py) keep working and keep their promises.

No timed assertions: these check what the scripts count, verify and print, never how fast anything is.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from ssi import x509 as ssi_x509
from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.status_list import status_claim
from tests.support.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def load_issuance() -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the script imports its neighbours (cputime, loadclient)
    spec = importlib.util.spec_from_file_location("bench_issuance", BENCH / "issuance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


issuance = load_issuance()
ISSUER = "http://127.0.0.1:8000/t/bench"
VCT = "https://types.cartera.example/tax-compliance/v1"


def test_failed_flows_are_counted_by_step_status_and_code() -> None:
    assert issuance.FlowError("token", 429, "slow_down").key == "token 429/slow_down"
    assert issuance.FlowError("credential", 500).key == "credential 500"
    assert issuance.FlowError("nonce", 0, "ConnectionResetError").key == "nonce ConnectionResetError"
    assert issuance.counted(Counter({"credential 500": 1, "token 429/slow_down": 3})) == \
        "token 429/slow_down×3, credential 500×1"
    with pytest.raises(issuance.FlowError) as caught:
        issuance._checked(429, json.dumps({"error": "slow_down"}).encode(), "token")
    assert caught.value.key == "token 429/slow_down"


class FlakyIssuer:
    """Stands in for loadclient.Connection: every other token request is refused with a 429."""

    tokens = 0

    def __init__(self, base: str) -> None:
        self.base = base

    async def request(self, method: str, url: str, **_: object) -> tuple[int, bytes]:
        await asyncio.sleep(0)
        if url.endswith("/v1/offers"):
            return 201, json.dumps({"tx_code": "1234", "offer": {"credential_issuer": ISSUER, "grants": {
                issuance.PRE_AUTHORIZED_CODE_GRANT: {"pre-authorized_code": "c"}}}}).encode()
        if url.endswith("/token"):
            FlakyIssuer.tokens += 1
            if FlakyIssuer.tokens % 2:
                return 429, b'{"error": "slow_down"}'
            return 200, b'{"access_token": "t"}'
        if url.endswith("/nonce"):
            return 200, b'{"c_nonce": "n"}'
        return 200, b'{"credentials": [{"credential": "a~b~"}]}'

    async def close(self) -> None:
        return None


def test_a_refused_flow_is_counted_and_the_load_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(issuance, "Connection", FlakyIssuer)
    result = asyncio.run(issuance.run_load("http://127.0.0.1:9", "key", wallets=2, seconds=0.3))
    assert set(result["errors"]) == {"token 429/slow_down"}
    assert result["credentials"] > 0 and len(result["received"]) == result["credentials"]
    assert all(credential == "a~b~" for credential, _ in result["received"])


@pytest.fixture(scope="module")
def issuer_pki() -> tuple[Key, list[str], object]:
    ca_key, ca_cert = ssi_x509.create_ca("Bench test CA")
    key = Key.generate("ES256")
    leaf = ssi_x509.issue_certificate(ca_key, ca_cert, key, "bench", san_uris=[ISSUER])
    return key, ssi_x509.x5c_from_chain([leaf]), ca_cert


def credential_for(pki: tuple[Key, list[str], object], holder: Key, **overrides: object) -> str:
    key, x5c, _ = pki
    now = int(time.time())
    arguments: dict[str, object] = {
        "vct": VCT, "issuer": ISSUER, "key": key, "holder_jwk": holder.public_jwk(), "disclosable": [("nif",)],
        "x5c": x5c, "kid": key.thumbprint(), "status": status_claim(7, f"{ISSUER}/status/l1"), "iat": now,
        "nbf": now, "exp": now + 3600}
    arguments.update(overrides)
    return issue_sd_jwt_vc({"nif": "12345678Z"}, **arguments)  # type: ignore[arg-type]


def test_received_credentials_are_verified_as_a_wallet_would(issuer_pki: tuple[Key, list[str], object]) -> None:
    holder, other = Key.generate(), Key.generate()
    anchor = issuer_pki[2]
    other_ca_key, other_ca = ssi_x509.create_ca("Another CA")
    stray_key = Key.generate("ES256")
    stray = ssi_x509.x5c_from_chain([ssi_x509.issue_certificate(other_ca_key, other_ca, stray_key, "bench",
                                                                san_uris=[ISSUER])])
    cases = {
        None: credential_for(issuer_pki, holder),
        "cnf_not_wallet_key": credential_for(issuer_pki, other),
        "no_status": credential_for(issuer_pki, holder, status=None),
        "no_exp": credential_for(issuer_pki, holder, exp=None),
        "nothing_disclosed": credential_for(issuer_pki, holder, disclosable=[]),
        "unexpected_vct": credential_for(issuer_pki, holder, vct="https://other.example/vct"),
        "untrusted chain": credential_for(issuer_pki, holder, key=stray_key, x5c=stray),
        "expired": credential_for(issuer_pki, holder, iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200,
                                  exp=int(time.time()) - 3600),
    }
    thumbprint = holder.thumbprint()
    assert issuance.verify_received([(cases[None], thumbprint)], anchor=anchor, issuer=ISSUER, vct=VCT) == Counter()
    for reason, credential in cases.items():
        if reason is None:
            continue
        failures = issuance.verify_received([(credential, thumbprint)], anchor=anchor, issuer=ISSUER, vct=VCT)
        assert sum(failures.values()) == 1, reason
        if " " not in reason:
            assert any(reason in code for code in failures), (reason, failures)
    wrong_iss = issuance.verify_received([(cases[None], thumbprint)], anchor=anchor, issuer=ISSUER + "x", vct=VCT)
    assert wrong_iss == Counter({"unexpected_iss": 1})


def test_postgres_cluster_durability_is_read_from_the_server(postgres_cluster: PostgresCluster) -> None:
    shown = postgres_cluster.durability()
    assert set(shown) == {"fsync", "synchronous_commit", "full_page_writes", "wal_sync_method"}
    if os.environ.get("CARTERA_TEST_POSTGRES_URL"):
        return  # an external server runs with whatever it was configured with
    assert (shown["fsync"], shown["synchronous_commit"], shown["full_page_writes"]) == ("off", "off", "off")
    with PostgresCluster(durable=True) as durable:
        shown = durable.durability()
    assert (shown["fsync"], shown["synchronous_commit"], shown["full_page_writes"]) == ("on", "on", "on")


def run_script(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.mark.slow
def test_issuance_bench_prints_errors_and_verified_columns() -> None:
    done = run_script("bench/issuance.py", "--seconds", "0.5", "--wallets", "1,2", "--backends", "sqlite")
    assert done.returncode == 0, done.stdout + done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("backend"))
    assert header.split()[-4:] == ["srv/bare", "errors", "verified", "steal"]
    rows = [line.split() for line in done.stdout.splitlines() if re.match(r"sqlite\s+\d+\s", line)]
    assert [row[1] for row in rows] == ["1", "2"]
    for row in rows:
        creds, errors, verified, steal = row[2], row[-3], row[-2], row[-1]
        assert row[-4].endswith("×") and errors == "0" and verified == f"{creds}/{creds}" and int(creds) > 0
        assert steal.endswith("%") and 0 <= int(steal[:-1]) <= 100


@pytest.mark.slow
def test_core_bench_labels_its_comparisons() -> None:
    done = run_script("bench/core.py", "--budget", "0.01")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any("time ÷ floor" in line and "vs sd-jwt" in line for line in lines)
    headline = next(line for line in lines if line.startswith("cartera: verify VC + KB (pinned issuer key, new cnf"))
    assert "× faster" in headline or "× slower" in headline
    cached = next(line for line in lines if "cnf key cached" in line and line.startswith("  ..."))
    chain = next(line for line in lines if "chain validated" in line and line.startswith("cartera:"))
    assert cached.split()[-1] == "-" and chain.split()[-1] == "-"
    for line in lines:
        if line.startswith("status: "):
            assert line.split()[-2:] == ["-", "-"], line
