"""Agency creation (platform admin API): a name up to the 200 characters the API accepts makes an
agency, whose certificate carries it cut to X.509's 64 (bytes of UTF-8, with "…"), instead of a 500;
and a key generated in the PKCS#11 token for an agency that is not stored after all is deleted, not
left orphaned (two creations of one slug racing on PostgreSQL: one 201, one 409, one key).

Real servers on loopback (the verifier on SQLite, and on PostgreSQL for the race), a real SoftHSM2
token, the test wallet checking the request objects signed with the new agencies' certificates.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.x509.oid import NameOID

from service_kit.crypto import SecretBox
from service_kit.db import Database
from service_kit.migrations import run_migrations_async
from service_kit.pkcs11 import Token
from ssi import x509 as ssi_x509
from tests.hsm.conftest import SoftHSM, softhsm, token  # noqa: F401 - fixtures used by name
from tests.hsm.test_verifier_hsm import ADMIN, hsm_extra
from tests.support.postgres import PostgresCluster
from tests.support.presenter import Presenter
from tests.verifier.conftest import ISSUER, PKI, VCT_TAX, Verifier, start_verifier
from tests.verifier.test_expiry import _until
from tests.verifier.test_template_rules import TableLock as TemplatesLock
from tests.verifier.test_template_rules import _waiting_on_locks
from verifier.agencies import AgencyError, CreatedAgency, create_agency
from verifier.app import MIGRATIONS

NAMES = [
    pytest.param("Ajuntament de Sant Joan de Vilatorrada i altres municipis del Bages (OAC)", id="73-ascii"),
    pytest.param("Consorci d'Administració Oberta de Catalunya, Oficina d'Atenció Ciutadana", id="accented"),
    pytest.param("é" * 40, id="40-chars-80-bytes"),
    pytest.param("Ajuntament de Girona", id="short"),
    pytest.param("x" * 200, id="200"),
]
AD_HOC = {"dcql_query": {"credentials": [{"id": "tax", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT_TAX]},
                                          "claims": [{"path": ["nif"]}]}]},
          "purpose": {"en": "Testing"}, "trusted_issuers": [{"vct": VCT_TAX, "issuers": [ISSUER]}]}


def _admin_extra(tmp: Path, pki: PKI) -> dict[str, Any]:
    (tmp / "rp-ca.key").write_bytes(pki.rp_ca_key.private_pem())
    (tmp / "rp-ca.pem").write_bytes(ssi_x509.cert_to_pem(pki.rp_ca))
    return {"admin_api_key": ADMIN, "rp_ca_key_file": tmp / "rp-ca.key", "rp_ca_cert_file": tmp / "rp-ca.pem"}


@pytest.fixture(scope="module")
def admin_verifier(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Verifier]:
    tmp = tmp_path_factory.mktemp("verifier-admin")
    with start_verifier(tmp, pki, **_admin_extra(tmp, pki)) as running:
        yield running


def _create(http: httpx.Client, verifier: Verifier, slug: str, name: str, **extra: Any) -> httpx.Response:
    return http.post(f"{verifier.url}/v1/admin/agencies", json={"slug": slug, "name": name, **extra},
                     headers={"Authorization": f"Bearer {ADMIN}"})


def _slug(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def _check_agency(http: httpx.Client, verifier: Verifier, pki: PKI, created: dict[str, Any], name: str) -> None:
    """The agency keeps its whole name; its certificate names it within 64 bytes; wallets trust it."""
    agency_headers = {"Authorization": f"Bearer {created['api_key']}"}
    me = http.get(f"{verifier.url}/v1/agency", headers=agency_headers).json()
    assert me["name"] == name
    leaf = ssi_x509.load_certificate(base64.b64decode(me["certificate_chain"][0]))
    expected = ssi_x509.fit_name(name)
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        [value] = leaf.subject.get_attributes_for_oid(oid)
        assert value.value == expected
    assert len(expected.encode("utf-8")) <= 64
    assert expected == name or (expected.endswith("…") and name.startswith(expected[:-1]))
    request = http.post(f"{verifier.url}/v1/requests", json=AD_HOC, headers=agency_headers)
    assert request.status_code == 201, request.text
    ro = Presenter(http, [pki.rp_ca]).fetch_request(request.json()["uri"])
    assert ro.trust == "trusted"


@pytest.mark.parametrize("name", NAMES)
def test_an_agency_name_the_api_accepts_makes_an_agency(http, admin_verifier, pki, name):
    response = _create(http, admin_verifier, _slug("named"), name)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    _check_agency(http, admin_verifier, pki, response.json(), name)


def test_a_name_over_200_characters_is_refused(http, admin_verifier):
    response = _create(http, admin_verifier, _slug("too-long"), "x" * 201)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("name", [
    pytest.param("Ajuntament\nFALSE LOG LINE", id="LF"),
    pytest.param("Ajuntament\tde Girona", id="TAB"),
    pytest.param("Ajuntament \x1b[2J", id="ESC"),
    pytest.param("Ajuntament \x85 de Girona", id="NEL"),
    pytest.param("Banc \u202egpj.exe", id="RLO"),
    pytest.param("Banc \u2067x", id="RLI"),
])
def test_a_name_with_a_control_character_is_refused(http, admin_verifier, name):
    """Shown to citizens, put in the certificate's commonName and organizationName, and in logs."""
    slug = _slug("control")
    response = _create(http, admin_verifier, slug, name)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert "name" in response.json()["error_description"]
    assert "control character" in response.json()["error_description"]
    assert name not in response.text


def test_a_name_is_kept_without_spaces_around_it_and_an_empty_one_is_refused(http, admin_verifier, pki):
    blank = _create(http, admin_verifier, _slug("blank"), " \u3000 ")
    assert blank.status_code == 400, blank.text
    assert blank.json()["error"] == "invalid_request" and "nothing to read" in blank.json()["error_description"]
    response = _create(http, admin_verifier, _slug("spaced"), "  Ajuntament de Girona ")
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Ajuntament de Girona"
    _check_agency(http, admin_verifier, pki, response.json(), "Ajuntament de Girona")


def test_create_agency_itself_checks_the_name(tmp_path: Path, pki: PKI) -> None:
    """Every path that creates an agency (the admin API, provisioning) goes through one check."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'agencies.db'}"

    async def create(name: str) -> CreatedAgency:
        db = Database(url)
        try:
            async with db.session() as session:
                return await create_agency(session, SecretBox(secrets.token_bytes(32)), slug=_slug("direct"), name=name,
                                           ca_key=pki.rp_ca_key, ca_cert=pki.rp_ca, host="verifier.example")
        finally:
            await db.dispose()

    asyncio.run(run_migrations_async(MIGRATIONS, url))
    for name, code in (("Ajuntament\nde Girona", "invalid_name"), ("\u202eabc", "invalid_name"), ("  ", "invalid_name")):
        with pytest.raises(AgencyError) as caught:
            asyncio.run(create(name))
        assert caught.value.code == code
    assert asyncio.run(create(" Ajuntament de Girona ")).name == "Ajuntament de Girona"


# -- keys in the token -----------------------------------------------------------------------------

def _token_keys(token: Token, slug: str) -> list[str]:  # noqa: F811
    return [info.label for info in token.list_keys() if info.label.startswith(f"cartera-agency-{slug[:40]}-")]


@pytest.fixture(scope="module")
def hsm_admin_verifier(tmp_path_factory: pytest.TempPathFactory, pki: PKI, softhsm: SoftHSM,  # noqa: F811
                       token: Token) -> Iterator[Verifier]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("verifier-hsm-names")
    with start_verifier(tmp, pki, **hsm_extra(softhsm, tmp, pki)) as running:
        yield running


def test_a_long_name_with_a_token_key_makes_an_agency_and_one_key(http, hsm_admin_verifier, pki,
                                                                  token: Token) -> None:  # noqa: F811
    slug = _slug("hsm-long")
    name = "Ajuntament de Sant Joan de Vilatorrada i altres municipis del Bages (OAC)"
    response = _create(http, hsm_admin_verifier, slug, name)
    assert response.status_code == 201, response.text
    assert response.json()["key_backend"] == "pkcs11"
    assert _token_keys(token, slug) == [response.json()["token_key"]["label"]]
    _check_agency(http, hsm_admin_verifier, pki, response.json(), name)


class AgenciesLock(TemplatesLock):
    """``LOCK TABLE agencies`` (reads go on, inserts wait) from another connection until released."""

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE agencies IN SHARE ROW EXCLUSIVE MODE")
                self.locked.set()
                await asyncio.to_thread(self.released.wait, 30)
        finally:
            await conn.close()


@pytest.fixture
def pg_hsm_verifier(postgres_cluster: PostgresCluster, pki: PKI, softhsm: SoftHSM, token: Token,  # noqa: F811
                    tmp_path: Path) -> Iterator[tuple[Verifier, str]]:
    url = postgres_cluster.create_database()
    try:
        with start_verifier(tmp_path, pki, url, **hsm_extra(softhsm, tmp_path, pki)) as running:
            yield running, url
    finally:
        postgres_cluster.drop_database(url)


def test_two_creations_of_one_slug_give_one_agency_one_key_and_a_conflict(http, pg_hsm_verifier, postgres_cluster,
                                                                          token: Token) -> None:  # noqa: F811
    verifier, url = pg_hsm_verifier
    slug = _slug("race")
    with AgenciesLock(url) as lock, ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(_create, http, verifier, slug, f"Race {i}") for i in range(2)]
        # Both found the slug free and generated their key, and wait to insert: the race, made certain.
        both_waiting = _until(lambda: _waiting_on_locks(postgres_cluster, url) >= 2, timeout=20)
        lock.release()
        responses = [a.result(timeout=30) for a in answers]
    assert both_waiting, "the two creations did not both reach the insert"
    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    conflict = next(r for r in responses if r.status_code == 409).json()
    assert conflict["error"] == "conflict"
    created = next(r for r in responses if r.status_code == 201).json()
    # the loser's key is gone from the token; the winner's is the one its certificate names
    assert _token_keys(token, slug) == [created["token_key"]["label"]]

