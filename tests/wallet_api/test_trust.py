"""The wallet's trust decision about verifiers: unknown relying parties are refused unless the operator
opts into warned previews; unsigned ``redirect_uri:`` requests exist in development mode only.

The requests are served (and any answer caught) by a small recording verifier written here, so the
tests can assert that nothing at all was posted back when the wallet refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING
from ssi import x509 as ssi_x509
from ssi.jose import Key
from ssi.oid4vp import sign_request_object, unsigned_request_object
from tests.support.servers import serve
from tests.wallet_api.conftest import (
    _WALLET_PORTS,
    APP_REDIRECT,
    Recorder,
    WalletHandle,
    bearer,
    login,
    wallet_settings,
)
from wallet_api.app import create_app


def _wallet(idp_url: str, tmp: Path, port: int, *, production: bool = False, **extra: Any) -> Iterator[WalletHandle]:
    settings = wallet_settings(tmp, port, idp_url, **extra)
    if production:
        # Outside dev_mode the settings refuse the sandbox identity provider (loopback http) and its
        # login_hint; the test still logs in through it, so dev_mode is turned off past validation.
        settings = settings.model_copy(update={"dev_mode": False})
    app = create_app(settings)
    with serve(app, port=port) as url:
        yield WalletHandle(url, settings, app, idp_url)


@pytest.fixture(scope="module")
def lenient_wallet(idp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletHandle]:
    """A development wallet whose operator allows warned previews of unknown verifiers."""
    yield from _wallet(idp_url, tmp_path_factory.mktemp("lenient"), _WALLET_PORTS[1], allow_untrusted_verifiers=True)


@pytest.fixture(scope="module")
def production_wallet(idp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletHandle]:
    """A wallet outside development mode (registered app redirect, no loopback leniency)."""
    yield from _wallet(idp_url, tmp_path_factory.mktemp("prod"), _WALLET_PORTS[2], production=True,
                       app_redirect_uris=[APP_REDIRECT], allow_untrusted_verifiers=True)


QUERY = {"credentials": [{"id": "q", "format": "dc+sd-jwt", "meta": {"vct_values": ["https://example.org/x"]}}]}


def _unknown_ca_request(recorder: Recorder, name: str) -> str:
    """A correctly signed x509_san_dns request whose certificate comes from a CA nobody configured."""
    ca_key, ca = ssi_x509.create_ca("Unknown relying-party CA")
    cert_key = Key.generate("ES256")
    cert = ssi_x509.issue_certificate(ca_key, ca, cert_key, "Agència Desconeguda", san_dns=["127.0.0.1"])
    client_id = "x509_san_dns:127.0.0.1"
    recorder.requests[name] = sign_request_object({
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post",
        "response_uri": f"{recorder.url}/response", "nonce": "n-" + name, "state": "s-" + name,
        "dcql_query": QUERY}, cert_key, ssi_x509.x5c_from_chain([cert]))
    return f"openid4vp://?client_id={quote(client_id)}&request_uri={quote(f'{recorder.url}/request/{name}')}"


def _answers(recorder: Recorder, state: str) -> list[dict[str, Any]]:
    return [p for p in recorder.posts if p.get("state") == state]


def test_unknown_relying_party_is_refused_by_default_and_nothing_is_sent(wallet: WalletHandle,
                                                                          recorder: Recorder) -> None:
    assert wallet.settings.allow_untrusted_verifiers is False
    tokens = login(wallet.url, DEMO_EVERYTHING)
    r = httpx.post(f"{wallet.url}/v1/presentations", json={"request_uri": _unknown_ca_request(recorder, "strict")},
                   headers=bearer(tokens), timeout=30)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "untrusted_verifier"
    assert "nothing was sent" in body["error_description"]
    assert "presentation_id" not in body
    assert _answers(recorder, "s-strict") == []


def test_unknown_relying_party_previewed_with_warning_when_allowed(lenient_wallet: WalletHandle,
                                                                    recorder: Recorder) -> None:
    tokens = login(lenient_wallet.url, DEMO_EVERYTHING)
    r = httpx.post(f"{lenient_wallet.url}/v1/presentations",
                   json={"request_uri": _unknown_ca_request(recorder, "lenient")}, headers=bearer(tokens), timeout=30)
    assert r.status_code == 201, r.text
    preview = r.json()
    verifier = preview["verifier"]
    assert verifier["trust"] == "untrusted" and verifier["verified"] is False
    assert verifier["name"] is None  # the certificate's organisation is never shown unverified
    assert "not issued by an authority this wallet trusts" in verifier["warning"]
    assert _answers(recorder, "s-lenient") == []  # a preview sends nothing
    declined = httpx.post(f"{lenient_wallet.url}/v1/presentations/{preview['presentation_id']}/decline",
                          headers=bearer(tokens), timeout=30)
    assert declined.status_code == 200
    assert [p["error"] for p in _answers(recorder, "s-lenient")] == ["access_denied"]


def _unsigned(recorder: Recorder, name: str, base: str) -> str:
    client_id = f"redirect_uri:{base}/response"
    token = unsigned_request_object({
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post",
        "response_uri": f"{base}/response", "nonce": "n-" + name, "state": "s-" + name, "dcql_query": QUERY})
    return f"openid4vp://?client_id={quote(client_id)}&request={token}"


def test_unsigned_redirect_uri_request_in_dev_mode_only_and_always_warned(
        wallet: WalletHandle, production_wallet: WalletHandle, recorder: Recorder) -> None:
    tokens = login(wallet.url, DEMO_EVERYTHING)
    r = httpx.post(f"{wallet.url}/v1/presentations", json={"request_uri": _unsigned(recorder, "dev", recorder.url)},
                   headers=bearer(tokens), timeout=30)
    assert r.status_code == 201, r.text
    verifier = r.json()["verifier"]
    assert verifier["trust"] == "unsigned" and verifier["verified"] is False and verifier["name"] is None
    assert "not signed" in verifier["warning"]
    # Outside development mode the same kind of request is refused, even with unknown verifiers
    # allowed (an https response URI, so only the missing signature is at fault).
    prod_tokens = login(production_wallet.url, DEMO_EVERYTHING)
    r = httpx.post(f"{production_wallet.url}/v1/presentations",
                   json={"request_uri": _unsigned(recorder, "prod", "https://verifier.example")},
                   headers=bearer(prod_tokens), timeout=30)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request_object"
    assert "unsigned_request_object" in r.json()["error_description"]
    assert _answers(recorder, "s-dev") == [] and _answers(recorder, "s-prod") == []
