"""SD-JWT VC Type Metadata for a received credential: at the ``vct`` URL, or else the issuer's own copy.

A ``vct`` is a type's name and often names no server (the built-in types' shared vcts); Cartera
issuers serve the document at ``<credential issuer>/types/<configuration id>``. The wallet takes that
copy only when it matches the ``vct#integrity`` the issuer signed into the credential: a document
that differs, or a credential without integrity, gets no metadata (display falls back to the
issuer metadata). The happy path over a real issuer: tests/wallet_api/test_e2e.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from ssi.jose import Key
from ssi.sd_jwt_vc import PinnedKeyResolver, issue_sd_jwt_vc, verify_sd_jwt_vc
from tests.support.servers import serve
from tests.wallet_api.conftest import offline_wallet
from wallet_api.receiving import fetch_type_metadata

pytestmark = pytest.mark.anyio

VCT = "https://types.invalid/diploma/v1"  # names no server (.invalid never resolves)


def _document(name: str) -> bytes:
    return json.dumps({"vct": VCT, "name": name, "display": [{"locale": "en", "name": name}]}).encode()


def _integrity(content: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode()


def _verified(issuer: str, integrity: str | None) -> object:
    key, holder = Key.generate(), Key.generate()
    token = issue_sd_jwt_vc({"name": "x"}, vct=VCT, issuer=issuer, key=key, holder_jwk=holder.public_jwk(),
                            disclosable=[("name",)], vct_integrity=integrity)
    return verify_sd_jwt_vc(token, key_resolver=PinnedKeyResolver({issuer: [key.public()]}), allow_http_loopback=True)


@pytest.mark.parametrize(("served", "signed_for", "found"), [
    ("Diploma", "Diploma", True),     # the issuer's copy, matching the integrity the issuer signed
    ("Forged", "Diploma", False),     # a different document at that address
    ("Diploma", None, False),         # no integrity in the credential: nothing binds the copy to it
])
async def test_the_issuers_copy_is_taken_only_when_it_matches_vct_integrity(
        tmp_path: Path, served: str, signed_for: str | None, found: bool) -> None:
    async def type_metadata(request: object) -> Response:
        return Response(_document(served), media_type="application/json")

    app = Starlette(routes=[Route("/t/uni/types/diploma", type_metadata)])
    with serve(app) as url:
        issuer = f"{url}/t/uni"
        verified = _verified(issuer, _integrity(_document(signed_for)) if signed_for else None)
        async with offline_wallet(tmp_path) as ctx, httpx.AsyncClient() as client:
            metadata = await fetch_type_metadata(ctx, client, verified, credential_issuer=issuer,  # type: ignore[arg-type]
                                                 configuration_id="diploma")
    if found:
        assert metadata is not None and metadata["vct"] == VCT and metadata["name"] == "Diploma"
    else:
        assert metadata is None
