"""`cartera aries contexts`: the agents' contexts file from the issuer's database (compose runs it)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from issuer.provisioning import provision_demo
from issuer.settings import IssuerSettings
from ssi import x509 as ssi_x509
from viaoberta.credentials import generate_identity


def test_contexts_file_holds_every_tenant_type_and_status_context(tmp_path: Path) -> None:
    master_key = secrets.token_hex(32)
    env = {"CARTERA_ISSUER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}",
           "CARTERA_ISSUER_PUBLIC_URL": "https://issuer.example.org", "CARTERA_ISSUER_MASTER_KEY": master_key,
           "CARTERA_ISSUER_DATA_DIR": str(tmp_path)}
    settings = IssuerSettings(database_url=env["CARTERA_ISSUER_DATABASE_URL"], public_url=env["CARTERA_ISSUER_PUBLIC_URL"],
                              master_key=master_key, data_dir=tmp_path)
    ca_key, ca_cert = ssi_x509.create_ca("Cartera test CA")
    platform, requester = generate_identity("platform"), generate_identity("requester")
    provisioned = asyncio.run(provision_demo(
        settings, ca_key=ca_key, ca_cert=ca_cert, viaoberta_url="https://vo.example.org",
        viaoberta_platform_cert_pem=platform.cert_pem, requester_key_pem=requester.key_pem,
        requester_cert_pem=requester.cert_pem))
    output = tmp_path / "agents" / "contexts.json"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARTERA_")}
    result = subprocess.run([sys.executable, "-m", "cartera.cli", "aries", "contexts", "--output", str(output)],
                            cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    documents = json.loads(output.read_text(encoding="utf-8"))
    for slug, tenant in provisioned["tenants"].items():
        base = f"https://issuer.example.org/t/{slug}"
        assert f"{base}/v1/aries/contexts/status/1" in documents
        for type_id in tenant["types"]:
            assert any(url.startswith(f"{base}/v1/aries/contexts/{type_id}/") for url in documents), (slug, type_id)
    assert all("@context" in document for document in documents.values())
