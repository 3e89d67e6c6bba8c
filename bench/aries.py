"""Aries channel benchmark: issuances and presentations per second over DIDComm between two real ACA-Py
agents, sequential and with 8 in flight, beside the OpenID4VC (SD-JWT VC) figures of the same run.

One agent plays the issuer/verifier (auto-responding to credential requests, verifying presentations),
the other the citizen's Aries wallet (driven through its admin API as a wallet app would). The wallet is
connected once; each issuance is an issue-credential 2.0 ``ld_proof`` exchange (Ed25519Signature2020,
then BbsBlsSignature2020 with the holder's bls12381g2 did:key), each presentation a connectionless
present-proof 2.0 exchange with a BBS+ derived proof of 2 claims, checked by our policies.

The channel's own overhead is the time spent in our controller code (building the credential and the
presentation definition, applying the policies) against the whole exchange; the goal is under 10 %.
The OpenID4VC figures are the bare ``ssi`` costs (issue, and verify with key binding) of the same
diploma claims on this machine, measured in this run. Run: ``.venv/bin/python bench/aries.py [--n 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aries import channel  # noqa: E402
from aries.client import BBS, ED25519, AdminClient  # noqa: E402
from aries.jsonld import build_credential, contexts_document  # noqa: E402
from aries.presentation import build_proof_request, check_presentation  # noqa: E402
from aries.runner import AgentConfig, AgentProcess  # noqa: E402
from credential_schemas import load_builtin_types  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

DIPLOMA = load_builtin_types()["university-diploma"]
CLAIMS = {
    "name": "Anna Puig i Soler", "personalIdentifier": "12345678Z", "title": "Grau en Dret",
    "qualificationCode": "2500001", "degreeType": "bachelor", "eqfLevel": 6, "awardingBody": "Universitat de Barcelona",
    "completionDate": "2020-06-30", "awardingDate": "2020-09-01", "countryOfAward": "ES",
    "registrationNumber": "2020/000123",
}
BASE = "http://127.0.0.1:9"  # contexts are pre-cached in both agents; nothing is fetched from here


class Overhead:
    """Accumulates the time spent in our own controller code."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began

    async def awaited(self, coro: Awaitable[Any]) -> Any:
        began = time.perf_counter()
        try:
            return await coro
        finally:
            self.seconds += time.perf_counter() - began


async def wait(fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]) -> Any:
    while True:
        value = await fetch()
        if done(value):
            return value
        await asyncio.sleep(0.01)


async def issue_one(a: AdminClient, w: AdminClient, connection_id: str, holder_did: str, issuer_did: str,
                    proof_type: str, overhead: Overhead) -> str:
    credential = overhead(build_credential, DIPLOMA, CLAIMS, issuer_did=issuer_did, issuer_base_url=BASE,
                          proof_type=proof_type)
    exchange = await channel.offer(a, connection_id, credential, proof_type)
    records = await wait(lambda: w.cred_records(thread_id=exchange.thread_id),
                         lambda r: bool(r) and r[0]["cred_ex_record"]["state"] == "offer-received")
    cred_ex_id = records[0]["cred_ex_record"]["cred_ex_id"]
    await w.send_cred_request(cred_ex_id, holder_did if proof_type == BBS else None)
    await wait(lambda: w.cred_record(cred_ex_id), lambda r: r["cred_ex_record"]["state"] in ("done", "abandoned"))
    return str(credential["id"])


async def present_one(a: AdminClient, w: AdminClient, credential_id: str, issuer_did: str,
                      overhead: Overhead) -> None:
    request = overhead(build_proof_request, DIPLOMA, ["title", "awardingBody"], domain="verifier.example",
                       with_status=False)
    exchange, invitation = await channel.request_proof(a, request)
    await w.receive_invitation(invitation.invitation)
    records = await wait(lambda: w.pres_records(thread_id=exchange.thread_id),
                         lambda r: bool(r) and r[0]["state"] == "request-received")
    pres_ex_id = records[0]["pres_ex_id"]
    matching = await w.matching_credentials(pres_ex_id)
    chosen = [m["record_id"] for m in matching if m.get("id") == credential_id][:1]
    await w.send_presentation(pres_ex_id, {DIPLOMA.id: chosen})
    record = await channel.presentation(a, exchange)
    # No status in these credentials: the issuer's base (its identifier) pins the credential's context.
    result = await overhead.awaited(check_presentation(record, request, trusted_issuers={issuer_did: BASE}))
    assert set(result.claims) == {"title", "awardingBody"}


async def run(label: str, n: int, in_flight: int, job: Callable[[int], Awaitable[Any]]) -> float:
    semaphore = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with semaphore:
            await job(i)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - began
    print(f"  {label:<34} in flight {in_flight:>2}: {n / elapsed:7.2f}/s  ({1000 * elapsed / n:7.1f} ms each)")
    return elapsed


def oid4vc_figures() -> None:
    from ssi.jose import Key
    from ssi.sd_jwt import SDJWT
    from ssi.sd_jwt_vc import PinnedKeyResolver, issue_sd_jwt_vc, verify_sd_jwt_vc

    iss, vct = "https://issuer.example", DIPLOMA.vct
    issuer_key, holder_key = Key.generate("ES256"), Key.generate("ES256")
    disclosable = [(name,) for name in CLAIMS]
    n = 200
    began = time.perf_counter()
    for _ in range(n):
        token = issue_sd_jwt_vc(CLAIMS, vct=vct, issuer=iss, key=issuer_key, holder_jwk=holder_key.public_jwk(),
                                disclosable=disclosable)
    issue_ms = 1000 * (time.perf_counter() - began) / n
    presentation = SDJWT.parse(token).present([("title",), ("awardingBody",)], holder_key=holder_key,
                                              aud="https://verifier.example", nonce="n")
    resolver = PinnedKeyResolver({iss: [issuer_key.public()]})
    began = time.perf_counter()
    for _ in range(n):
        verify_sd_jwt_vc(presentation, key_resolver=resolver, require_kb=True, expected_aud="https://verifier.example",
                         expected_nonce="n")
    verify_ms = 1000 * (time.perf_counter() - began) / n
    print(f"  OpenID4VC (ssi, same claims): issue {issue_ms:.2f} ms, verify with KB {verify_ms:.2f} ms "
          f"(library cost, no HTTP)")


async def bench(n: int, root: Path) -> None:
    contexts = root / "contexts.json"
    import json
    contexts.write_text(json.dumps(contexts_document([DIPLOMA], BASE)), encoding="utf-8")
    issuer = AgentConfig(name="bench-issuer", data_dir=root / "issuer", inbound_port=free_port(),
                         admin_port=free_port(), contexts_file=contexts,
                         extra_args=["--auto-accept-requests", "--auto-respond-credential-request",
                                     "--auto-verify-presentation"])
    wallet = AgentConfig(name="bench-wallet", data_dir=root / "wallet", inbound_port=free_port(),
                         admin_port=free_port(), contexts_file=contexts,
                         extra_args=["--auto-accept-invites", "--auto-store-credential"])
    processes = []
    try:
        for config in (issuer, wallet):
            process = AgentProcess(config)
            await asyncio.to_thread(process.start)
            processes.append(process)
            print(f"  agent {config.name} ready in {process.started_in:.2f}s")
        async with AdminClient(issuer.admin_url, issuer.admin_api_key, timeout=60) as a, \
                AdminClient(wallet.admin_url, wallet.admin_api_key, timeout=60) as w:
            bbs_did, ed_did = await a.create_did_key(BBS), await a.create_did_key(ED25519)
            holder_did = await w.create_did_key(BBS)
            invitation = await channel.invite(a, alias=secrets.token_hex(8))
            await w.receive_invitation(invitation.invitation)
            connection_id = await channel.connection_for(a, invitation)
            overhead = Overhead()
            total = 0.0
            issued: list[str] = []
            for proof_type, did in ((ED25519, ed_did), (BBS, bbs_did)):
                for in_flight in (1, 8):
                    async def job(_: int, proof_type: str = proof_type, did: str = did) -> None:
                        credential_id = await issue_one(a, w, connection_id, holder_did, did, proof_type, overhead)
                        if proof_type == BBS:
                            issued.append(credential_id)
                    total += await run(f"issuance {proof_type}", n, in_flight, job)
            for in_flight in (1, 8):
                async def present(i: int) -> None:
                    await present_one(a, w, issued[i % len(issued)], bbs_did, overhead)
                total += await run("presentation BBS+ (2 claims)", n, in_flight, present)
            print(f"  controller overhead: {1000 * overhead.seconds / (6 * n):.2f} ms per exchange, "
                  f"{100 * overhead.seconds / total:.1f} % of the exchanges' wall time")
    finally:
        for process in processes:
            process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20, help="exchanges per measurement")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cartera-aries-bench-"))
    try:
        print("Aries channel (ACA-Py 0.12.8, two agents on loopback)")
        asyncio.run(bench(args.n, root))
        oid4vc_figures()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
