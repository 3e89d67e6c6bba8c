"""A trust rule names its issuers: outside development mode ``issuers: null`` is refused, and trusts none.

One issuers CA certifies every tenant of an issuer service, so a rule accepting "any issuer whose
``x5c`` chains to an anchor" took a town council's tax certificate for the tax agency's. Outside
``dev_mode`` such a rule is refused when a template is created or replaced and when a request is
made (ad hoc, or from a template stored before); a request made before the upgrade is rejected at
verification with ``verifier.trust_rule_without_issuers``. In ``dev_mode`` (``cartera run``, the
tests' session verifier) it keeps its old meaning.

Real servers on loopback: a verifier with ``dev_mode`` off, the session's test wallet and credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ssi import x509 as ssi_x509
from tests.support.servers import free_port, serve
from tests.verifier.conftest import (
    ISSUER,
    MASTER_KEY,
    OTHER_ISSUER,
    PKI,
    VCT_DIPLOMA,
    VCT_PADRO,
    VCT_TAX,
    Verifier,
    new_request,
    read_result,
)
from tests.verifier.test_expiry import _in_db, _set
from verifier.app import create_app
from verifier.models import Agency, Template
from verifier.provisioning import provision_demo
from verifier.settings import VerifierSettings
from verifier.transactions import utcnow

VCTS = {"tax": VCT_TAX, "diploma": VCT_DIPLOMA, "padro": VCT_PADRO}
LISTED = {"tax": [ISSUER], "diploma": [ISSUER], "padro": [ISSUER]}


@contextlib.contextmanager
def production_verifier(tmp: Path, pki: PKI, *, anchors_cert: Any = None,
                        vcts: dict[str, str] | None = None,
                        issuers: dict[str, list[str]] | None = None) -> Iterator[Verifier]:
    """A verifier with ``dev_mode`` off (served over http on loopback, which the test wallet accepts),
    with the demo agencies and templates listing their issuers."""
    port = free_port()
    anchors = tmp / "issuer-anchors.pem"
    anchors.write_bytes(ssi_x509.cert_to_pem(anchors_cert if anchors_cert is not None else pki.issuer_ca))
    settings = VerifierSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'verifier.db'}", dev_mode=False,
                                public_url=f"http://127.0.0.1:{port}", port=port, master_key=MASTER_KEY,
                                data_dir=tmp, worker_interval=0.2, issuer_anchors_file=anchors)
    provisioned = asyncio.run(provision_demo(settings, ca_key=pki.rp_ca_key, ca_cert=pki.rp_ca,
                                             vcts=vcts or VCTS, issuers=issuers or LISTED))
    with serve(create_app(settings), port=port) as url:
        yield Verifier(url, settings, provisioned["agencies"])


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Verifier]:
    with production_verifier(tmp_path_factory.mktemp("verifier-prod"), pki) as running:
        yield running


def _template(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "purpose": {"en": "Testing"}, "trusted_issuers": rules, "response_mode": "direct_post",
            "dcql_query": {"credentials": [{"id": "tax", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT_TAX]},
                                            "claims": [{"path": ["nif"]}]}]}}


def _refused_for_open_rule(response: Any, index: int = 0) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request", body
    assert f"trusted_issuers[{index}]" in body["error_description"], body
    assert "development mode" in body["error_description"], body


@pytest.mark.parametrize("rules, index", [
    ([{"vct": VCT_TAX}], 0),
    ([{"vct": VCT_TAX, "issuers": None, "metadata": False}], 0),
    ([{"vct": VCT_TAX, "issuers": [ISSUER]}, {"vct": VCT_PADRO, "issuers": None}], 1),
], ids=["left-out", "null", "second-rule"])
def test_a_rule_without_issuers_is_refused_outside_development_mode(http, prod, rules, index):
    url, h = f"{prod.url}/v1/templates", prod.headers()
    name = f"open-{uuid.uuid4().hex[:8]}"
    _refused_for_open_rule(http.post(url, json=_template(name, rules), headers=h), index)
    assert http.get(f"{url}/{name}", headers=h).status_code == 404
    # An explicit list is accepted; replacing it by a rule without one is refused, the template unchanged.
    listed = [{"vct": VCT_TAX, "issuers": [ISSUER]}]
    assert http.post(url, json=_template(name, listed), headers=h).status_code == 201
    _refused_for_open_rule(http.put(f"{url}/{name}", json=_template(name, rules), headers=h), index)
    assert http.get(f"{url}/{name}", headers=h).json()["trusted_issuers"][0]["issuers"] == [ISSUER]
    # An ad hoc request likewise.
    ad_hoc = {k: v for k, v in _template(name, rules).items() if k != "name"}
    _refused_for_open_rule(http.post(f"{prod.url}/v1/requests", json=ad_hoc, headers=h), index)


def test_the_listed_issuer_is_verified_and_another_of_the_same_ca_rejected(http, prod, wallet, creds, pki):
    # No status list: outside dev_mode the verifier fetches none over plain http.
    created = new_request(http, prod)
    assert wallet.present(created["uri"], [creds.tax(with_status=False)]).status_code == 200
    assert read_result(http, prod, created["id"])["status"] == "verified"
    other = creds.tax(key=pki.other_issuer_key, x5c=pki.other_issuer_x5c, issuer=OTHER_ISSUER, with_status=False)
    created = new_request(http, prod)
    response = wallet.present(created["uri"], [other])
    assert response.status_code == 400
    assert [e["code"] for e in response.json()["errors"]] == ["verifier.issuer_not_trusted_for_vct"]


def _store_open_template(verifier: Verifier, name: str) -> None:
    """The demo grant template with its rule's issuers null, written straight into the database, as
    one stored before such rules were refused would be."""

    async def work(db: Any) -> None:
        async with db.session() as session:
            agency_id = await session.scalar(select(Agency.id).where(Agency.slug == "ajuntament-barcelona"))
            grant = await session.scalar(select(Template).where(Template.agency_id == agency_id,
                                                                 Template.name == "grant-application"))
            now = utcnow()
            session.add(Template(id=str(uuid.uuid4()), agency_id=agency_id, name=name, dcql_query=grant.dcql_query,
                                 purpose=grant.purpose, anchors_pem=grant.anchors_pem,
                                 trusted_issuers=[{"vct": VCT_TAX, "issuers": None, "metadata": False}],
                                 retention_seconds=60, response_mode="direct_post", created_at=now, updated_at=now))

    _in_db(verifier, work)


def test_a_template_stored_with_a_rule_without_issuers_makes_no_request(http, prod):
    name = f"legacy-open-{time.time_ns()}"
    _store_open_template(prod, name)
    response = http.post(f"{prod.url}/v1/requests", json={"template": name}, headers=prod.headers())
    _refused_for_open_rule(response)
    assert name in response.json()["error_description"]


def test_a_request_made_before_the_upgrade_trusts_no_issuer(http, prod, wallet, creds):
    """A request stored with a rule without issuers (made before the upgrade, or from a template stored
    so) is answered: the answer is rejected, with a code that says what to fix, whoever the issuer."""
    created = new_request(http, prod)
    _set(prod, created["id"], trusted_issuers=[{"vct": VCT_TAX, "issuers": None, "metadata": False}])
    response = wallet.present(created["uri"], [creds.tax(with_status=False)])
    assert response.status_code == 400, response.text
    assert [e["code"] for e in response.json()["errors"]] == ["verifier.trust_rule_without_issuers"]
    result = read_result(http, prod, created["id"])
    assert result["status"] == "rejected" and result["claims"] == {}
    assert "explicit issuers list" in result["errors"][0]["detail"]


def test_a_rule_without_issuers_keeps_its_meaning_in_development_mode(http, verifier, wallet, creds, pki):
    """The session verifier runs in dev_mode: there such a rule is accepted and trusts the anchors' issuers."""
    name = f"dev-open-{time.time_ns()}"
    created = http.post(f"{verifier.url}/v1/templates", json=_template(name, [{"vct": VCT_TAX}]),
                        headers=verifier.headers())
    assert created.status_code == 201, created.text
    request = new_request(http, verifier, template=name)
    # (The test status lists are signed by ISSUER's key: this credential carries none.)
    other = creds.tax(key=pki.other_issuer_key, x5c=pki.other_issuer_x5c, issuer=OTHER_ISSUER, with_status=False)
    response = wallet.present(request["uri"], [other])
    assert response.status_code == 200, response.text


def test_provisioning_outside_development_mode_needs_every_list(tmp_path, pki):
    settings = VerifierSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'v.db'}", dev_mode=False,
                                public_url="https://verifier.example", master_key=MASTER_KEY, data_dir=tmp_path)
    with pytest.raises(ValueError, match="diploma, padro"):
        asyncio.run(provision_demo(settings, ca_key=pki.rp_ca_key, ca_cert=pki.rp_ca, issuers={"tax": [ISSUER]}))
