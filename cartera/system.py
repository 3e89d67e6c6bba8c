"""The composition root: provision the embedded system and run every service as its own process.

This is the one module allowed to know all the services. It

1. creates (once) a development PKI under ``<data_dir>/dev-pki``: one CA for issuers, one for
   relying parties — both marked DEVELOPMENT in their subject;
2. provisions each service's database through the service's own ``provision_demo`` (idempotent):
   demo issuer tenants with Via Oberta sources, demo agencies with templates, the wallet's trust
   anchors and issuer catalogue;
3. registers the wallet and the issuer as clients of the sandbox identity provider, and the wallet as
   the issuer's OAuth client (``oauth_clients``: its client id and issuance callback);
4. writes ``<data_dir>/cartera-dev.json`` (mode 0600: it holds development API keys), which the
   ``cartera issuer|verifier|status`` commands read;
5. starts the sandbox and the three services as separate processes on 127.0.0.1 (separate
   origins), each configured through environment variables exactly as a deployment would be.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509 as cx509
from pydantic import SecretStr

from ssi import x509 as ssi_x509
from ssi.jose import Key

#: The built-in type id behind each kind of demo template (verifier.provisioning.DEMO_VCTS).
DEMO_TEMPLATE_TYPES = {"tax": "tax-compliance", "diploma": "university-diploma", "padro": "padro"}
#: Offsets from the port base (default base 8000: issuer on 8001 ... identity provider on 8005).
PORT_OFFSETS = {"issuer": 1, "verifier": 2, "wallet": 3, "viaoberta": 4, "idp": 5}
#: With ``aries``: the ACA-Py agents' ports (DIDComm inbound and admin API) as offsets from the base.
ARIES_PORT_OFFSETS = {"issuer-agent": 20, "issuer-agent-admin": 21, "verifier-agent": 30, "verifier-agent-admin": 31}
DEV_FILE_NAME = "cartera-dev.json"
WALLET_IDP_CLIENT = "cartera-wallet"
ISSUER_IDP_CLIENT = "cartera-issuer"


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` with mode 0600: created so from the start (never readable by others, not even
    briefly), and an existing file is made 0600 before anything is written to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: make it private too
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass
class CertificateAuthority:
    key: Key
    cert: cx509.Certificate
    cert_file: Path
    key_file: Path

    @property
    def cert_pem(self) -> bytes:
        return ssi_x509.cert_to_pem(self.cert)


def ensure_ca(folder: Path, name: str, common_name: str) -> CertificateAuthority:
    """Load the development CA ``name`` from ``folder``, creating it on first use."""
    key_file, cert_file = folder / f"{name}-key.pem", folder / f"{name}.pem"
    if key_file.exists() and cert_file.exists():
        key = Key.from_pem(key_file.read_bytes())
        cert = ssi_x509.load_certificate(cert_file.read_bytes())
    else:
        key, cert = ssi_x509.create_ca(common_name, development=True)
        write_private(key_file, key.private_pem())
        cert_file.write_bytes(ssi_x509.cert_to_pem(cert))
    return CertificateAuthority(key, cert, cert_file, key_file)


def ensure_idp_clients(sandbox_dir: Path, wanted: dict[str, list[str]]) -> dict[str, str]:
    """Register clients (id → redirect URIs) with the sandbox identity provider; keep existing secrets.

    Returns client id → secret. The file is the one ``cartera sandbox run`` reads.
    """
    path = sandbox_dir / "idp-clients.yaml"
    current: list[dict[str, Any]] = []
    if path.exists():
        current = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("clients", []) or []
    by_id = {c["client_id"]: c for c in current if isinstance(c, dict) and "client_id" in c}
    for client_id, redirect_uris in wanted.items():
        entry = by_id.setdefault(client_id, {"client_id": client_id, "client_secret": secrets.token_urlsafe(24)})
        entry["redirect_uris"] = list(redirect_uris)
    write_private(path, yaml.safe_dump({"clients": list(by_id.values())}, sort_keys=False).encode("utf-8"))
    return {client_id: by_id[client_id]["client_secret"] for client_id in wanted}


@dataclass
class ServiceProcess:
    """How to start one service: its command line and environment (which may hold secrets)."""

    name: str
    title: str
    url: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    health_path: str = "/healthz"
    openapi_path: str | None = "/openapi.json"


@dataclass
class SystemPlan:
    processes: list[ServiceProcess]
    dev_file: Path
    info: dict[str, Any]


def demo_issuers(issuer_info: dict[str, Any]) -> dict[str, list[str]]:
    """The issuer identifiers each demo template trusts: the demo tenants that issue its type.

    Never "any issuer the CA certifies": the one development issuers CA certifies every tenant, so
    such a rule would take a town council's tax certificate for the tax agency's. Aries requests
    also need the list (the issuers' DIDs are published at these identifiers)."""
    return {kind: [tenant["issuer_url"] for tenant in issuer_info["tenants"].values() if type_id in tenant["types"]]
            for kind, type_id in DEMO_TEMPLATE_TYPES.items()}


def _ports(base: int) -> dict[str, int]:
    return {name: base + offset for name, offset in PORT_OFFSETS.items()}


def load_dev_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


async def provision(data_dir: Path, *, host: str = "127.0.0.1", port_base: int = 8000,
                    aries: bool = False, database_urls: dict[str, str] | None = None) -> SystemPlan:
    """Prepare everything the embedded system needs (idempotent) and return how to start it.

    ``database_urls`` (service name ``issuer``/``verifier``/``wallet`` → URL) puts those services on
    another database than their SQLite file under ``data_dir`` (the soak test uses PostgreSQL).

    ``aries``: the issuer and verifier also start their ACA-Py agents (ports base+20/21 and base+30/31;
    docs/aries.md) and offer the Aries channel; the diploma is issued with BBS+ over DIDComm.
    """
    from cartera.commands.sandbox import ensure_sandbox_files
    from issuer.provisioning import provision_demo as provision_issuer
    from issuer.settings import IssuerSettings, OAuthClient
    from service_kit.settings import settings_env
    from verifier.provisioning import provision_demo as provision_verifier
    from verifier.settings import VerifierSettings
    from wallet_api.provisioning import provision_demo as provision_wallet
    from wallet_api.settings import WalletSettings

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = _ports(port_base)
    url = {name: f"http://{host}:{port}" for name, port in ports.items()}
    dev_file = data_dir / DEV_FILE_NAME
    previous = load_dev_file(dev_file)

    pki_dir = data_dir / "dev-pki"
    issuers_ca = ensure_ca(pki_dir, "issuers-ca", "Cartera development issuer CA")
    rp_ca = ensure_ca(pki_dir, "relying-parties-ca", "Cartera development relying-party CA")

    sandbox_dir = data_dir / "sandbox"
    wallet_callback = f"{url['wallet']}/v1/auth/callback"
    sandbox = ensure_sandbox_files(sandbox_dir, url["viaoberta"], [wallet_callback])

    common: dict[str, Any] = {"dev_mode": True, "data_dir": data_dir, "host": host}
    urls = database_urls or {}

    def db(service: str) -> dict[str, Any]:
        return {"database_url": urls[service]} if service in urls else {}

    issuer_settings = IssuerSettings(
        **common, **db("issuer"), port=ports["issuer"], master_key_file=data_dir / "issuer-master.key",
        ca_key_file=issuers_ca.key_file, ca_cert_file=issuers_ca.cert_file,
        idp_authorize_url=f"{url['idp']}/o/oauth2/auth", idp_token_url=f"{url['idp']}/o/oauth2/token",
        idp_userinfo_url=f"{url['idp']}/serveis-rest/getUserInfo", idp_client_id=ISSUER_IDP_CLIENT,
        idp_forward_login_hint=True,
        # Development timing: status list tokens live 10 s in caches, so a revocation reaches the wallet
        # (and `cartera demo`) within seconds instead of the production default of 5 minutes.
        status_list_ttl=10,
        **({"aries_enabled": True, "aries_inbound_port": port_base + ARIES_PORT_OFFSETS["issuer-agent"],
            "aries_admin_port": port_base + ARIES_PORT_OFFSETS["issuer-agent-admin"],
            "aries_proof_types": {"university-diploma": "BbsBlsSignature2020"}} if aries else {}))
    if issuer_settings.admin_api_key is None:
        # The platform admin key (new tenants, shared vcts: `cartera issuer share-vct`), kept across runs
        # in the private development file like the tenants' keys; an operator's own setting wins.
        admin_key = previous.get("issuer", {}).get("admin_api_key") or secrets.token_urlsafe(32)
        issuer_settings = issuer_settings.model_copy(update={"admin_api_key": SecretStr(admin_key)})
    previous_issuer_keys = {slug: entry.get("api_key") for slug, entry in
                            (previous.get("issuer", {}).get("tenants") or {}).items() if entry.get("api_key")}
    issuer_info = await provision_issuer(
        issuer_settings, ca_key=issuers_ca.key, ca_cert=issuers_ca.cert, viaoberta_url=url["viaoberta"],
        viaoberta_platform_cert_pem=sandbox["platform_cert"], requester_key_pem=sandbox["requester_key"],
        requester_cert_pem=sandbox["requester_cert"], api_keys=previous_issuer_keys)

    verifier_settings = VerifierSettings(
        **common, **db("verifier"), port=ports["verifier"], master_key_file=data_dir / "verifier-master.key",
        issuer_anchors_file=issuers_ca.cert_file, rp_ca_key_file=rp_ca.key_file, rp_ca_cert_file=rp_ca.cert_file,
        status_default_ttl=2,  # development: the desk sees a revocation at once
        **({"aries_enabled": True, "aries_inbound_port": port_base + ARIES_PORT_OFFSETS["verifier-agent"],
            "aries_admin_port": port_base + ARIES_PORT_OFFSETS["verifier-agent-admin"]} if aries else {}))
    previous_agencies = previous.get("verifier", {}).get("agencies") or {}
    verifier_info = await provision_verifier(
        verifier_settings, ca_key=rp_ca.key, ca_cert=rp_ca.cert, trusted_issuer_anchors=[issuers_ca.cert],
        new_api_keys=not previous_agencies or not all(a.get("api_key") for a in previous_agencies.values()),
        issuers=demo_issuers(issuer_info))
    for slug, agency in verifier_info.get("agencies", {}).items():
        if not agency.get("api_key") and previous_agencies.get(slug, {}).get("api_key"):
            agency["api_key"] = previous_agencies[slug]["api_key"]

    tenants = issuer_info["tenants"]
    secrets_by_client = ensure_idp_clients(sandbox_dir, {
        WALLET_IDP_CLIENT: [wallet_callback],
        ISSUER_IDP_CLIENT: [tenant["login_callback"] for tenant in tenants.values()],
    })
    issuer_settings = issuer_settings.model_copy(update={"idp_client_secret": secrets_by_client[ISSUER_IDP_CLIENT]})

    wallet_settings, wallet_info = await provision_wallet(
        WalletSettings(**common, **db("wallet"), port=ports["wallet"], master_key_file=data_dir / "wallet-master.key",
                       idp_client_id=WALLET_IDP_CLIENT, idp_allow_login_hint=True,
                       background_interval=2),  # development: status alerts within seconds
        issuer_anchor_pems=[issuers_ca.cert_pem], rp_anchor_pems=[rp_ca.cert_pem], idp_url=url["idp"],
        idp_client_secret=secrets_by_client[WALLET_IDP_CLIENT],
        catalogue=[{"credential_issuer": tenant["issuer_url"], "name": tenant["name"],
                    "credential_configuration_ids": tenant["types"]} for tenant in tenants.values()])

    # The wallet API is the issuer's one registered client of the authorization code flow (wallet-
    # initiated issuance): its client id and the callback it sends (wallet_api.receiving.issuance_callback_url).
    issuer_settings = issuer_settings.model_copy(update={"oauth_clients": {
        wallet_settings.issuance_client_id: OAuthClient(
            redirect_uris=[f"{wallet_settings.public_url}/v1/issuance/callback"], name="Cartera wallet API")}})

    python = sys.executable
    processes = [
        ServiceProcess("sandbox", "Identity provider, VÀLid-like (sandbox, DEVELOPMENT)", url["idp"],
                       [python, "-m", "cartera.cli", "sandbox", "run", "--host", host,
                        "--viaoberta-port", str(ports["viaoberta"]), "--idp-port", str(ports["idp"]),
                        "--data-dir", str(sandbox_dir), "--allow-login-hint"], {}, health_path="/healthz",
                       openapi_path=None),
        ServiceProcess("issuer", "Issuer (OpenID4VCI)", url["issuer"],
                       [python, "-m", "service_kit.server", "issuer.app:create_app", "--host", host,
                        "--port", str(ports["issuer"])], settings_env(issuer_settings)),
        ServiceProcess("verifier", "Verifier (OpenID4VP) and desk page", url["verifier"],
                       [python, "-m", "service_kit.server", "verifier.app:create_app", "--host", host,
                        "--port", str(ports["verifier"])], settings_env(verifier_settings)),
        ServiceProcess("wallet", "Wallet API", url["wallet"],
                       [python, "-m", "service_kit.server", "wallet_api.app:create_app", "--host", host,
                        "--port", str(ports["wallet"])], settings_env(wallet_settings)),
    ]
    services = [{"name": p.name, "title": p.title, "url": p.url, "health_url": p.url + p.health_path,
                 "openapi_url": (p.url + p.openapi_path) if p.openapi_path else None} for p in processes]
    services.insert(1, {"name": "viaoberta", "title": "Simulated Via Oberta (SCSP v3, DEVELOPMENT)",
                        "url": url["viaoberta"], "health_url": url["viaoberta"] + "/healthz", "openapi_url": None})
    admin_secret = issuer_settings.admin_api_key
    info = {
        "services": services,
        "issuer": {**issuer_info, "admin_api_key": admin_secret.get_secret_value() if admin_secret else None},
        "verifier": verifier_info,
        "wallet": wallet_info,
        "sandbox": {"viaoberta_url": url["viaoberta"], "idp_url": url["idp"], "data_dir": str(sandbox_dir)},
        "dev_pki": {"issuers_ca": str(issuers_ca.cert_file), "relying_parties_ca": str(rp_ca.cert_file)},
    }
    write_private(dev_file, json.dumps(info, indent=2).encode("utf-8"))
    return SystemPlan(processes, dev_file, info)
