"""Signatures per second: an ES256 key in SoftHSM2 (PKCS#11) against the same work with a software key.

Run with ``.venv/bin/python bench/hsm.py`` (needs Debian's softhsm2: ``scripts/ensure-test-deps.sh``).
It makes a throwaway token in a temp dir (``SOFTHSM2_CONF``), never the system's token directory.
Prints figures only; no assertions. Rows:

- ``raw sign``: ``Key.sign`` over a JWS-sized signing input (ES256: SHA-256 then ECDSA);
- ``JWS``: a whole compact JWS (``sign_jws``: header, payload, base64url, signature);
- ``SD-JWT VC``: a diploma credential with ten disclosable claims (``issue_sd_jwt_vc``);
- ``raw sign, N threads``: N threads signing at once (the token's calls are serialised per module).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service_kit.pkcs11 import PKCS11Config, open_token  # noqa: E402
from ssi.jose import Key, sign_jws  # noqa: E402
from ssi.sd_jwt_vc import issue_sd_jwt_vc  # noqa: E402

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "bench-1234"
CLAIMS: dict[str, Any] = {
    "given_name": "Anna", "family_name": "Puig i Soler", "birthdate": "1990-04-12",
    "personal_identifier": "12345678Z", "title": "Grau en Enginyeria Informàtica",
    "qualificationCode": "2500001", "degreeType": "grau", "eqfLevel": 6,
    "awardingBody": "Universitat de Girona", "completionDate": "2013-07-01",
}


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``fn``: best of three rounds of about ``seconds`` / 3 each, after a warm-up."""
    for _ in range(20):
        fn()
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while time.perf_counter() < deadline:
            for _ in range(20):
                fn()
            n += 20
        best = max(best, n / (time.perf_counter() - start))
    return best


def threaded_rate(fn: Callable[[], Any], threads: int, seconds: float) -> float:
    """Total calls per second of ``threads`` threads calling ``fn`` for ``seconds``."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            fn()
            counts[i] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def make_token(root: Path) -> PKCS11Config:
    util = shutil.which("softhsm2-util")
    if util is None or not MODULE.is_file():
        sys.exit("SoftHSM2 is not installed: run scripts/ensure-test-deps.sh (Debian package softhsm2)")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run([util, "--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", "bench-so"],
                   check=True, capture_output=True)
    return PKCS11Config(module=MODULE, token_label="bench", pin=PIN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Time per figure (default 3).")
    parser.add_argument("--threads", type=int, default=4, help="Threads of the concurrent row (default 4).")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cartera-bench-hsm-"))
    try:
        token = open_token(make_token(root))
        try:
            hsm_key, _ref = token.generate_key(label="bench-es256", alg="ES256")
            soft_key = Key.generate("ES256")
            holder = Key.generate("ES256").public_jwk()
            data = b"e" * 400  # about a JWS signing input
            header = {"typ": "dc+sd-jwt", "kid": "k1"}
            payload = {"iss": "https://issuer.example.cat", "iat": 1_700_000_000, "vct": "https://x/vct", "sub": "x"}

            def vc(key: Key) -> Callable[[], Any]:
                return lambda: issue_sd_jwt_vc(CLAIMS, vct="https://issuer.example.cat/vct/diploma",
                                               issuer="https://issuer.example.cat", key=key, holder_jwk=holder,
                                               disclosable=[(name,) for name in CLAIMS], iat=1_700_000_000,
                                               exp=1_900_000_000)

            rows = [
                ("raw sign", lambda k: (lambda: k.sign(data))),
                ("JWS", lambda k: (lambda: sign_jws(header, payload, k))),
                ("SD-JWT VC", vc),
            ]
            print(f"{'operation':<26} {'software /s':>12} {'SoftHSM2 /s':>12} {'HSM per op':>11}")
            for name, make in rows:
                soft = rate(make(soft_key), args.seconds)
                hsm = rate(make(hsm_key), args.seconds)
                print(f"{name:<26} {soft:>12,.0f} {hsm:>12,.0f} {1000 / hsm:>9.3f}ms")
            name = f"raw sign, {args.threads} threads"
            soft = threaded_rate(lambda: soft_key.sign(data), args.threads, args.seconds)
            hsm = threaded_rate(lambda: hsm_key.sign(data), args.threads, args.seconds)
            print(f"{name:<26} {soft:>12,.0f} {hsm:>12,.0f} {1000 / hsm:>9.3f}ms")
            print(f"(cpus: {os.cpu_count()}; SoftHSM2 signs in-process with OpenSSL: a network HSM adds a "
                  "round trip per signature)")
        finally:
            token.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
