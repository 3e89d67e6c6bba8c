"""Fixtures for the verifier tests: PKI, a status list server, a running verifier, agencies, credentials.

Everything runs for real on loopback: the verifier under uvicorn, a small issuer-side status list
service, the test wallet (``tests.support.presenter``) over HTTP. Shared per session to stay fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response

from ssi import x509 as ssi_x509
from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.status_list import StatusList, sign_status_list_token, status_claim
from tests.support.presenter import HeldCredential, Presenter
from tests.support.servers import free_port, serve
from verifier.app import create_app
from verifier.provisioning import provision_demo
from verifier.settings import VerifierSettings

ISSUER = "https://issuer.example.cat"
OTHER_ISSUER = "https://other-issuer.example.cat"
VCT_TAX = "https://issuer.example.cat/vct/tax-compliance"
VCT_DIPLOMA = "https://issuer.example.cat/vct/university-diploma"
VCT_PADRO = "https://issuer.example.cat/vct/padro"
MASTER_KEY = "0" * 64


@dataclass
class StatusServer:
    """Serves status list tokens signed by the issuer key; tests flip entries."""

    key: Key
    x5c: list[str]
    lists: dict[str, StatusList] = field(default_factory=dict)
    ttl: int = 300
    ttls: dict[str, int] = field(default_factory=dict)
    base_url: str = ""
    fetches: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/status/{name}")
        def status(name: str) -> Response:
            self.fetches += 1
            lst = self.lists.get(name)
            if lst is None:
                return Response(status_code=404)
            token = sign_status_list_token(lst, uri=f"{self.base_url}/status/{name}", key=self.key, ttl=self.ttls.get(name, self.ttl),
                                           exp=int(time.time()) + 3600, x5c=self.x5c)
            return Response(token, media_type="application/statuslist+jwt")

        return app

    def uri(self, name: str) -> str:
        return f"{self.base_url}/status/{name}"


@dataclass
class PKI:
    issuer_ca_key: Key
    issuer_ca: Any
    issuer_key: Key
    issuer_x5c: list[str]
    other_issuer_key: Key
    other_issuer_x5c: list[str]
    rogue_key: Key
    rogue_x5c: list[str]
    rp_ca_key: Key
    rp_ca: Any


@pytest.fixture(scope="session")
def pki() -> PKI:
    ca_key, ca = ssi_x509.create_ca("Test issuer CA")
    issuer_key = Key.generate("ES256")
    issuer_cert = ssi_x509.issue_certificate(ca_key, ca, issuer_key, "Test issuer", san_uris=[ISSUER])
    other_key = Key.generate("ES256")
    other_cert = ssi_x509.issue_certificate(ca_key, ca, other_key, "Other issuer", san_uris=[OTHER_ISSUER])
    rogue_ca_key, rogue_ca = ssi_x509.create_ca("Rogue CA")
    rogue_key = Key.generate("ES256")
    rogue_cert = ssi_x509.issue_certificate(rogue_ca_key, rogue_ca, rogue_key, "Rogue", san_uris=[ISSUER])
    rp_ca_key, rp_ca = ssi_x509.create_ca("Test relying-party CA")
    return PKI(ca_key, ca, issuer_key, ssi_x509.x5c_from_chain([issuer_cert]), other_key,
               ssi_x509.x5c_from_chain([other_cert]), rogue_key, ssi_x509.x5c_from_chain([rogue_cert]), rp_ca_key,
               rp_ca)


@pytest.fixture(scope="session")
def status_server(pki: PKI) -> Iterator[StatusServer]:
    server = StatusServer(key=pki.issuer_key, x5c=pki.issuer_x5c)
    server.lists["main"] = StatusList(1024, bits=2)
    with serve(server.app()) as url:
        server.base_url = url
        yield server


@dataclass
class Verifier:
    url: str
    settings: VerifierSettings
    agencies: dict[str, dict[str, Any]]

    def headers(self, slug: str = "ajuntament-barcelona") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agencies[slug]['api_key']}"}


def make_settings(tmp: Path, port: int, database_url: str | None = None, **extra: Any) -> VerifierSettings:
    return VerifierSettings(
        database_url=database_url or f"sqlite+aiosqlite:///{tmp / 'verifier.db'}",
        public_url=f"http://127.0.0.1:{port}", port=port, dev_mode=True, master_key=MASTER_KEY,
        data_dir=tmp, worker_interval=0.2, **extra)


def start_verifier(tmp: Path, pki: PKI, database_url: str | None = None, *, anchors_cert: Any = None,
                   vcts: dict[str, str] | None = None, issuers: dict[str, Any] | None = None, **extra: Any):
    """A context manager running a verifier with the demo agencies; yields :class:`Verifier`."""
    import contextlib

    @contextlib.contextmanager
    def run() -> Iterator[Verifier]:
        port = free_port()
        anchors = tmp / "issuer-anchors.pem"
        anchors.write_bytes(ssi_x509.cert_to_pem(anchors_cert if anchors_cert is not None else pki.issuer_ca))
        settings = make_settings(tmp, port, database_url, issuer_anchors_file=anchors, **extra)
        provisioned = asyncio.run(provision_demo(settings, ca_key=pki.rp_ca_key, ca_cert=pki.rp_ca,
                                                 vcts=vcts if vcts is not None else {"tax": VCT_TAX, "diploma": VCT_DIPLOMA,
                                                                "padro": VCT_PADRO},
                                                 issuers=issuers if issuers is not None else {"tax": [ISSUER]}))
        with serve(create_app(settings), port=port) as url:
            yield Verifier(url, settings, provisioned["agencies"])

    return run()


@pytest.fixture(scope="session")
def verifier(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Verifier]:
    with start_verifier(tmp_path_factory.mktemp("verifier"), pki) as running:
        yield running


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def wallet(http: httpx.Client, pki: PKI) -> Presenter:
    return Presenter(http, [pki.rp_ca])


_next_idx = iter(range(1, 10_000))


@dataclass
class CredentialFactory:
    pki: PKI
    status_server: StatusServer

    def tax(self, *, status: str | None = "POSITIVE", key: Key | None = None, x5c: list[str] | None = None,
            issuer: str = ISSUER, vct: str = VCT_TAX, exp: int | None = None, nbf: int | None = None,
            status_idx: int | None = None, with_status: bool = True, holder: Key | None = None,
            status_list: str = "main") -> HeldCredential:
        holder = holder or Key.generate("ES256")
        idx = status_idx if status_idx is not None else next(_next_idx)
        claims = {"nif": "12345678Z", "name": "Anna Puig", "complianceStatus": status, "purpose": "ECOT103"}
        token = issue_sd_jwt_vc(
            claims, vct=vct, issuer=issuer, key=key or self.pki.issuer_key, holder_jwk=holder.public_jwk(),
            disclosable=[("nif",), ("name",), ("complianceStatus",), ("purpose",)],
            x5c=x5c if x5c is not None else self.pki.issuer_x5c,
            status=status_claim(idx, self.status_server.uri(status_list)) if with_status else None,
            exp=exp if exp is not None else int(time.time()) + 3600, nbf=nbf)
        held = HeldCredential(token, holder)
        held.status_idx = idx  # type: ignore[attr-defined]
        return held

    def diploma(self, *, issuer: str = ISSUER, key: Key | None = None, x5c: list[str] | None = None) -> HeldCredential:
        holder = Key.generate("ES256")
        claims = {"title": "Grau en Enginyeria Informàtica", "awardingBody": "Universitat de Barcelona",
                  "registrationNumber": "UB-2020-001"}
        token = issue_sd_jwt_vc(claims, vct=VCT_DIPLOMA, issuer=issuer, key=key or self.pki.issuer_key,
                                holder_jwk=holder.public_jwk(),
                                disclosable=[("title",), ("awardingBody",), ("registrationNumber",)],
                                x5c=x5c if x5c is not None else self.pki.issuer_x5c, exp=int(time.time()) + 3600)
        return HeldCredential(token, holder)


@pytest.fixture(scope="session")
def creds(pki: PKI, status_server: StatusServer) -> CredentialFactory:
    return CredentialFactory(pki, status_server)


def new_request(http: httpx.Client, verifier: Verifier, slug: str = "ajuntament-barcelona", **body: Any) -> dict:
    body.setdefault("template", "grant-application")
    response = http.post(f"{verifier.url}/v1/requests", json=body, headers=verifier.headers(slug))
    assert response.status_code == 201, response.text
    return response.json()


def read_result(http: httpx.Client, verifier: Verifier, tx_id: str, slug: str = "ajuntament-barcelona") -> dict:
    response = http.get(f"{verifier.url}/v1/requests/{tx_id}", headers=verifier.headers(slug))
    assert response.status_code == 200, response.text
    return response.json()
