"""``cartera vc verify --metadata`` on a credential from the running issuer, as docs/ssi.md shows it.

Every Cartera credential carries ``x5c``; without ``--trust-anchor`` the key must come from the
issuer's JWT VC Issuer Metadata all the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cartera.cli import app
from sandbox.population import DEMO_EVERYTHING
from ssi import x509 as ssi_x509
from ssi.sd_jwt import SDJWT
from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS, create_offer
from tests.support.wallet_client import WalletClient

pytestmark = pytest.mark.anyio
runner = CliRunner()


def _verify(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["vc", "verify", *args, "--json"])
    assert result.stdout, result.output
    return result.exit_code, json.loads(result.stdout)


async def test_metadata_alone_verifies_a_cartera_credential(issuer_env: IssuerEnv, tmp_path: Path) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "uni-barcelona", "university-diploma", DEMO_EVERYTHING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
    credential = tmp_path / "credential.sd-jwt"
    credential.write_text(result.credentials[0])
    assert "x5c" in SDJWT.parse(result.credentials[0]).header
    iss = issuer_env.issuer("uni-barcelona")

    code, report = _verify(str(credential), "--metadata", "--issuer", iss, "--allow-http-loopback", "--check-status")
    assert code == 0 and report["valid"] is True, report
    assert report["claims"]["iss"] == iss
    assert {"name": "status", "ok": True, "code": "ok"} in report["checks"]

    # A credential naming another iss fails issuer_key as untrusted.
    code, report = _verify(str(credential), "--metadata", "--issuer", issuer_env.issuer("aoc-tax"),
                           "--allow-http-loopback")
    assert code == 1
    assert {"name": "issuer_key", "ok": False, "code": "sd_jwt_vc.untrusted_issuer"} in report["checks"]

    # With a trust anchor as well, the x5c chain is what is checked: an anchor the chain does not
    # lead to fails even though the metadata would have given the key.
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(ssi_x509.cert_to_pem(ssi_x509.create_ca("Another CA")[1]))
    code, report = _verify(str(credential), "--metadata", "--issuer", iss, "--trust-anchor", str(other_ca),
                           "--allow-http-loopback")
    assert code == 1
    assert {"name": "issuer_key", "ok": False, "code": "x509.untrusted_chain"} in report["checks"]
