"""``require_par`` (HAIP): only pushed authorization requests start a login, and the metadata says so.

A plain ``/authorize`` request gets 400 ``invalid_request`` at once, never redirected (its redirect URI
was never checked); a pushed one still goes on to the identity provider. Without the setting both
work (tests/issuer/test_flows.py::test_authorization_code_flow_without_par).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from tests.issuer.conftest import IssuerEnv, Sandbox, make_settings, start_issuer
from tests.support.servers import free_port
from tests.support.wallet_client import well_known

pytestmark = pytest.mark.anyio

CLIENT_ID, REDIRECT_URI = "cartera-test-wallet", "http://127.0.0.1:9/callback"  # a client dev_mode accepts



@pytest.fixture(scope="module")
def par_only_issuer(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    folder = tmp_path_factory.mktemp("issuer-par-only")
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", free_port(), folder, folder)
    yield from start_issuer(sandbox, settings.model_copy(update={"require_par": True}))


def _params() -> dict[str, str]:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(secrets.token_bytes(32)).digest()).rstrip(b"=").decode()
    return {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s1",
            "scope": "tax-compliance"}


async def test_only_pushed_requests_start_a_login(par_only_issuer: IssuerEnv) -> None:
    issuer = par_only_issuer.issuer("aoc-tax")
    async with httpx.AsyncClient(timeout=20) as http:
        meta = (await http.get(well_known(issuer, "oauth-authorization-server"))).json()
        plain = await http.get(f"{meta['authorization_endpoint']}?{urlencode(_params())}")
        pushed = await http.post(meta["pushed_authorization_request_endpoint"], data=_params())
        assert pushed.status_code == 201, pushed.text
        by_reference = await http.get(f"{meta['authorization_endpoint']}?" + urlencode(
            {"client_id": CLIENT_ID, "request_uri": pushed.json()["request_uri"]}))
    assert meta["require_pushed_authorization_requests"] is True
    assert plain.status_code == 400 and "location" not in plain.headers
    assert plain.json()["error"] == "invalid_request" and "pushed" in plain.json()["error_description"]
    assert by_reference.status_code == 303
    assert by_reference.headers["location"].startswith(par_only_issuer.sandbox.idp_url)
