"""A tenant name up to the 200 characters the admin API accepts makes a tenant and its signing key,
whose certificate carries the name cut to X.509's 64 (bytes of UTF-8, with "…"), instead of a 500 —
with the key in software, and in the PKCS#11 token (where a failed creation left an orphaned key).

Real servers on loopback: the session's issuer (SQLite, its CA configured), one with its tenant keys
in a SoftHSM2 token.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from service_kit.pkcs11 import Token
from ssi.x509 import fit_name
from tests.hsm.conftest import hsm_issuer, softhsm, token  # noqa: F401 - fixtures used by name
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv

NAMES = [
    pytest.param("Ajuntament de Sant Joan de Vilatorrada i altres municipis del Bages (OAC)", id="73-ascii"),
    pytest.param("Consorci d'Administració Oberta de Catalunya, Oficina d'Atenció Ciutadana", id="accented"),
    pytest.param("é" * 40, id="40-chars-80-bytes"),
    pytest.param("x" * 200, id="200"),
    pytest.param("Universitat de Girona", id="short"),
]


def _create(env: IssuerEnv, slug: str, name: str) -> httpx.Response:
    return httpx.post(f"{env.url}/v1/tenants", json={"slug": slug, "name": name},
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)


def _keys(env: IssuerEnv, created: dict) -> list[dict]:
    response = httpx.get(f"{env.url}/v1/keys", headers={"Authorization": f"Bearer {created['api_key']}"}, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("name", NAMES)
def test_a_tenant_name_the_api_accepts_makes_a_tenant_and_its_key(issuer_env: IssuerEnv, name: str) -> None:
    slug = "named-" + secrets.token_hex(4)
    response = _create(issuer_env, slug, name)
    assert response.status_code == 201, response.text
    [key] = _keys(issuer_env, response.json())
    assert key["active"] and key["kid"] == response.json()["signing_kid"]
    assert key["certificate_subject"] == fit_name(name)
    assert len(key["certificate_subject"].encode("utf-8")) <= 64
    assert key["san_uris"] == [issuer_env.issuer(slug)]
    tenant = httpx.get(f"{issuer_env.url}/v1/tenant", headers={"Authorization": f"Bearer {response.json()['api_key']}"},
                       timeout=20).json()
    assert tenant["name"] == name


@pytest.mark.parametrize("name", [
    pytest.param("Universitat\nFALSE LOG LINE", id="LF"),
    pytest.param("Universitat\tde Girona", id="TAB"),
    pytest.param("Universitat \x1b[2J", id="ESC"),
    pytest.param("Universitat \x85 de Girona", id="NEL"),
    pytest.param("Banc \u202egpj.exe", id="RLO"),
    pytest.param("Banc \u2066x", id="LRI"),
])
def test_a_tenant_name_with_a_control_character_is_refused(issuer_env: IssuerEnv, name: str) -> None:
    """Wallets show it to citizens, certificates carry it, logs name it."""
    slug = "control-" + secrets.token_hex(4)
    for body in ({"name": name}, {"name": "Universitat de Girona", "display": [{"name": name, "locale": "ca"}]}):
        response = httpx.post(f"{issuer_env.url}/v1/tenants", json={"slug": slug, **body},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"
        assert "name" in response.json()["error_description"]
        assert "control character" in response.json()["error_description"]
        assert name not in response.text


def test_a_tenant_name_is_kept_without_spaces_around_it_and_an_empty_one_is_refused(issuer_env: IssuerEnv) -> None:
    blank = _create(issuer_env, "blank-" + secrets.token_hex(4), " \u00a0 ")
    assert blank.status_code == 400, blank.text
    assert blank.json()["error"] == "invalid_request" and "nothing to read" in blank.json()["error_description"]
    slug = "spaced-" + secrets.token_hex(4)
    response = httpx.post(f"{issuer_env.url}/v1/tenants", json={
        "slug": slug, "name": "  Universitat de Girona ", "display": [{"name": " UdG ", "locale": "ca"}]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
    assert response.status_code == 201, response.text
    [key] = _keys(issuer_env, response.json())
    assert key["certificate_subject"] == "Universitat de Girona"
    tenant = httpx.get(f"{issuer_env.url}/v1/tenant", headers={"Authorization": f"Bearer {response.json()['api_key']}"},
                       timeout=20).json()
    assert tenant["name"] == "Universitat de Girona"
    metadata = httpx.get(f"{issuer_env.url}/.well-known/openid-credential-issuer/t/{slug}", timeout=20).json()
    assert metadata["display"] == [{"name": "UdG", "locale": "ca"}]


def test_a_long_tenant_name_with_a_token_key_makes_one_key(hsm_issuer: IssuerEnv, token: Token) -> None:  # noqa: F811
    slug = "hsm-named-" + secrets.token_hex(4)
    name = "Ajuntament de Sant Joan de Vilatorrada i altres municipis del Bages (OAC)"
    response = _create(hsm_issuer, slug, name)
    assert response.status_code == 201, response.text
    [key] = _keys(hsm_issuer, response.json())
    assert key["backend"] == "pkcs11" and key["certificate_subject"] == fit_name(name)
    in_token = [info.label for info in token.list_keys() if info.label.startswith(f"cartera-{slug}-")]
    assert in_token == [key["token_key"]["label"]]
