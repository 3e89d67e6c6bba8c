"""`cartera aries contexts`: the agents' contexts file from the issuer's database (compose runs it)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

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


def _contexts(output: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARTERA_")}
    return subprocess.run([sys.executable, "-m", "cartera.cli", "aries", "contexts", "--output", str(output)],
                          cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("where", ["directory", "under-a-file", "read-only"])
def test_an_output_it_cannot_write_is_a_readable_error_and_leaves_nothing(tmp_path: Path, where: str) -> None:
    env = {"CARTERA_ISSUER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}",
           "CARTERA_ISSUER_PUBLIC_URL": "https://issuer.example.org", "CARTERA_ISSUER_MASTER_KEY": secrets.token_hex(32),
           "CARTERA_ISSUER_DATA_DIR": str(tmp_path)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARTERA_")}
    upgraded = subprocess.run([sys.executable, "-m", "cartera.cli", "db", "upgrade", "--service", "issuer"], cwd=tmp_path,
                              env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False)
    assert upgraded.returncode == 0, upgraded.stderr  # an issuer database the command reads: no tenant yet
    if where == "directory":
        output = tmp_path / "agents"
        output.mkdir()
        reason = "it is a directory"
    elif where == "under-a-file":
        (tmp_path / "agents").write_text("a file, not a folder")
        output = tmp_path / "agents" / "contexts.json"
        reason = f"{tmp_path / 'agents'} is not a directory"
    else:  # sysfs takes no new file, not even from root
        if not Path("/sys/kernel").is_dir():
            pytest.skip("needs Linux's /sys")
        output = Path("/sys/cartera-contexts.json")
        reason = "Permission denied"
    result = _contexts(output, env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: cannot write {output}: {reason}".replace(" ", "") in "".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert not output.with_name(output.name + ".tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "agents" in p.name) == ([] if where == "read-only" else ["agents"])
