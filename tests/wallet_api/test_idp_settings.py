"""Outside dev_mode the wallet logs citizens in only at an https identity provider that is not this
machine, and never asks for the sandbox's non-interactive login (``idp_allow_login_hint``): the rule
the issuer applies to its ``idp_*_url`` (``service_kit.settings.check_idp_url``). Otherwise a production wallet could be
pointed at the sandbox identity provider (``http://sandbox:8005`` with compose's sandbox profile), which
logs anybody in as anybody without authentication."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from wallet_api.settings import OIDCProvider, WalletSettings

ROOT = Path(__file__).resolve().parents[2]

REFUSED = [
    "http://sandbox:8005",  # compose's sandbox profile
    "http://127.0.0.1:8005",  # cartera run's sandbox
    "http://identitats.aoc.cat",
    "https://127.0.0.1:8005",
    "https://localhost/idp",
    "https://[::1]:8005",
    "https://user:pw@identitats.aoc.cat",
    "ftp://identitats.aoc.cat",
    "identitats.aoc.cat",
]


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for variable in [v for v in os.environ if v.startswith("CARTERA_")]:
        monkeypatch.delenv(variable)
    return {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", "data_dir": tmp_path, "master_key": "1" * 64}


def _provider(issuer: str) -> dict[str, str]:
    return {"name": "sandbox", "issuer": issuer, "client_id": "cartera-wallet"}


@pytest.mark.parametrize("url", REFUSED)
def test_an_idp_url_that_is_not_https_or_is_loopback_is_refused_outside_dev_mode(base: dict[str, Any],
                                                                                 url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        WalletSettings(**base, idp_url=url)
    errors = raised.value.errors()
    assert [e["loc"] for e in errors] == [("idp_url",)]
    assert "outside dev_mode" in errors[0]["msg"]
    assert url not in str(raised.value)  # start-up errors name the setting, never the value
    # the same URL in development (cartera run, the tests) is accepted
    assert WalletSettings(**base, dev_mode=True, idp_url=url).idp_url == url


@pytest.mark.parametrize("url", REFUSED)
def test_an_oidc_provider_issuer_follows_the_same_rule(base: dict[str, Any], url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        WalletSettings(**base, oidc_providers=[_provider("https://accounts.example.org"), _provider(url)])
    errors = raised.value.errors()
    assert [e["loc"] for e in errors] == [("oidc_providers",)]
    assert "provider 'sandbox': issuer must" in errors[0]["msg"] and "outside dev_mode" in errors[0]["msg"]
    assert url not in str(raised.value)
    dev = WalletSettings(**base, dev_mode=True, oidc_providers=[_provider(url)])
    assert dev.oidc_providers == [OIDCProvider(**_provider(url))]


def test_https_identity_providers_are_accepted_outside_dev_mode(base: dict[str, Any]) -> None:
    settings = WalletSettings(**base, idp_url=" https://identitats.aoc.cat/ ",
                              oidc_providers=[_provider("https://accounts.example.org")])
    assert settings.idp_url == "https://identitats.aoc.cat"
    assert settings.oidc_providers[0].issuer == "https://accounts.example.org"
    assert WalletSettings(**base).idp_url == ""  # no VÀLid login at all is fine too


def test_the_sandbox_login_hint_is_refused_outside_dev_mode(base: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as raised:
        WalletSettings(**base, idp_url="https://identitats.aoc.cat", idp_allow_login_hint=True)
    errors = raised.value.errors()
    assert [e["loc"] for e in errors] == [("idp_allow_login_hint",)]
    assert "refused outside dev_mode" in errors[0]["msg"]
    assert WalletSettings(**base, dev_mode=True, idp_allow_login_hint=True).idp_allow_login_hint
    assert not WalletSettings(**base, idp_allow_login_hint=False).idp_allow_login_hint


def test_a_production_wallet_pointed_at_the_sandbox_does_not_start(tmp_path: Path) -> None:
    # As compose would configure it with VALID_URL=http://sandbox:8005: the start fails and says which
    # settings, once and without a traceback.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARTERA_")}
    env = {**clean, "CARTERA_WALLET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
           "CARTERA_WALLET_DATA_DIR": str(tmp_path), "CARTERA_WALLET_MASTER_KEY": "1" * 64,
           "CARTERA_WALLET_IDP_URL": "http://sandbox:8005", "CARTERA_WALLET_IDP_ALLOW_LOGIN_HINT": "true",
           "CARTERA_WALLET_OIDC_PROVIDERS": '[{"name": "sandbox", "issuer": "http://sandbox:8005", '
                                            '"client_id": "cartera-wallet"}]'}
    result = subprocess.run([sys.executable, "-m", "service_kit.server", "wallet_api.app:create_app",
                             "--host", "127.0.0.1", "--port", "1", "--workers", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for setting in ("idp_url", "idp_allow_login_hint", "oidc_providers"):
        assert setting in output, output
    assert "sandbox:8005" not in output and "Traceback" not in output, output


@pytest.mark.parametrize("url", [*REFUSED, "https://identitats.aoc.cat", "https://idp.example.org:8443/base"])
def test_the_wallet_and_the_issuer_refuse_the_same_identity_providers(base: dict[str, Any], url: str) -> None:
    from issuer.settings import IssuerSettings

    def refused(build: Any) -> bool:
        try:
            build()
        except ValidationError:
            return True
        return False

    by_wallet = refused(lambda: WalletSettings(**base, idp_url=url))
    by_issuer = refused(lambda: IssuerSettings(**base, idp_authorize_url=url, idp_token_url=url, idp_userinfo_url=url))
    assert by_wallet == by_issuer == (url in REFUSED)
