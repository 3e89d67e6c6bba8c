"""A stand-in credential issuer over real HTTP whose answers a test chooses, and a wallet of the test's own.

The issuer serves OpenID4VCI metadata (pre-authorized offers), a token, a nonce, credential and deferred
endpoints and the SD-JWT VC Type Metadata of its one type at ``<url>/types/card`` (the ``vct``); its
credentials are signed under the ``wallet`` fixtures' trusted test CA, the certificate naming the issuer.
What it says is set per test: ``metadata`` / ``configuration`` (merged into the issuer metadata and into
its one credential configuration), ``type_metadata`` (the document served at the ``vct``; ``None``: 404),
``deferred`` (answer 202 with a transaction) and ``deferred_answer`` (the deferred endpoint's
``(status, body)``; by default the credentials).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.x509 import cert_to_pem, issue_certificate, x5c_from_chain
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import ISSUER_CA, WalletHandle, wallet_settings
from wallet_api.app import create_app

CONFIGURATION = "card"
CLAIMS = {"given_name": "Laia", "family_name": "Puig"}


@dataclass
class StandInIssuer:
    url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    configuration: dict[str, Any] = field(default_factory=dict)
    type_metadata: Any = None
    deferred: bool = False
    deferred_answer: tuple[int, Any] | None = None
    deferred_polls: int = 0
    proofs: list[str] = field(default_factory=list)

    @property
    def vct(self) -> str:
        return f"{self.url}/types/{CONFIGURATION}"

    def reset(self) -> None:
        self.metadata, self.configuration, self.type_metadata = {}, {}, None
        self.deferred, self.deferred_answer, self.deferred_polls = False, None, 0

    def offer_uri(self) -> str:
        offer = {"credential_issuer": self.url, "credential_configuration_ids": [CONFIGURATION],
                 "grants": {"urn:ietf:params:oauth:grant-type:pre-authorized_code": {
                     "pre-authorized_code": secrets.token_urlsafe(16)}}}
        return "openid-credential-offer://?credential_offer=" + quote(json.dumps(offer))


def _proven_key(proof: str) -> dict[str, Any]:
    header = proof.split(".")[0]
    jwk: dict[str, Any] = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["jwk"]
    return jwk


@contextlib.contextmanager
def standin_issuer() -> Iterator[StandInIssuer]:
    port = free_port()
    state = StandInIssuer(url=f"http://127.0.0.1:{port}")
    signing_key = Key.generate("ES256")
    x5c = x5c_from_chain([issue_certificate(ISSUER_CA[0], ISSUER_CA[1], signing_key, "Stand-in issuer",
                                            san_uris=[state.url])])
    app = FastAPI()

    def credentials() -> dict[str, Any]:
        return {"credentials": [{"credential": issue_sd_jwt_vc(
            CLAIMS, vct=state.vct, issuer=state.url, key=signing_key, holder_jwk=_proven_key(proof),
            disclosable=[(name,) for name in CLAIMS], x5c=x5c)} for proof in state.proofs]}

    @app.get("/.well-known/openid-credential-issuer")
    async def metadata() -> dict[str, Any]:
        configuration = {"format": "dc+sd-jwt", "vct": state.vct, "cryptographic_binding_methods_supported": ["jwk"],
                         "proof_types_supported": {"jwt": {"proof_signing_alg_values_supported": ["ES256"]}},
                         **state.configuration}
        return {"credential_issuer": state.url, "credential_endpoint": f"{state.url}/credential",
                "deferred_credential_endpoint": f"{state.url}/deferred",
                "display": [{"name": "Stand-in issuer", "locale": "en"}],
                "credential_configurations_supported": {CONFIGURATION: configuration}, **state.metadata}

    @app.get("/.well-known/oauth-authorization-server")
    async def as_metadata() -> dict[str, Any]:
        return {"issuer": state.url, "token_endpoint": f"{state.url}/token",
                "pre-authorized_grant_anonymous_access_supported": True}

    @app.post("/token")
    async def token() -> dict[str, Any]:
        return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300}

    @app.post("/credential")
    async def credential(request: Request) -> JSONResponse:
        state.proofs = (await request.json())["proofs"]["jwt"]
        if state.deferred:
            return JSONResponse({"transaction_id": "tx-1", "interval": 1}, status_code=202)
        return JSONResponse(credentials())

    @app.post("/deferred")
    async def deferred() -> JSONResponse:
        state.deferred_polls += 1
        if state.deferred_answer is not None:
            status, body = state.deferred_answer
            return JSONResponse(body, status_code=status)
        return JSONResponse(credentials())

    @app.get(f"/types/{CONFIGURATION}")
    async def type_metadata() -> JSONResponse:
        if state.type_metadata is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(state.type_metadata)

    with serve(app, port=port):
        yield state


@contextlib.contextmanager
def own_wallet(idp_url: str, tmp: Path, port: int, **settings: Any) -> Iterator[WalletHandle]:
    """A wallet of the test module's own (its citizens' credentials are the module's alone), trusting the
    test CA; ``port`` must be one the session's identity provider redirects to (``_WALLET_PORTS``)."""
    anchor = tmp / "issuer-anchor.pem"
    anchor.write_bytes(cert_to_pem(ISSUER_CA[1]))
    config = wallet_settings(tmp, port, idp_url, issuer_anchor_files=[anchor], **settings)
    app = create_app(config)
    with serve(app, port=port) as url:
        yield WalletHandle(url, config, app, idp_url)
