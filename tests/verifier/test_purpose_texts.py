"""A presentation's purpose (ca/es/en), shown to citizens on the consent screen and carried by the
request object, goes through ``ssi.names.display_text``: a text with a control character (a line
break that forges a log line, ESC, C1, U+2028, a bidirectional override that makes the screen read
otherwise than what the agency stored) or with nothing to read is refused with 400 invalid_request
when a template is created or replaced and when an ad hoc request is made, without quoting it. A
template stored before this rule is still listed, read and replaced (never a 500), and makes no
request until its purpose is replaced.

Real servers on loopback: the session's verifier (SQLite), its database written to directly for
the template stored before the rule, and the test wallet reading the signed request object.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest

from tests.support.presenter import Presenter
from tests.verifier.conftest import ISSUER, VCT_TAX, Verifier
from tests.verifier.test_expiry import _in_db
from verifier.models import Agency, Template

QUERY = {"credentials": [{"id": "tax", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT_TAX]},
                          "claims": [{"path": ["nif"]}]}]}
RULES = [{"vct": VCT_TAX, "issuers": [ISSUER]}]

REFUSED = [
    pytest.param("Sol·licitud d'ajut\n2026-01-01 INFO verifier: request verified", "control character", id="LF"),
    pytest.param("Sol·licitud\r\nd'ajut", "control character", id="CRLF"),
    pytest.param("Sol·licitud\td'ajut", "control character", id="TAB"),
    pytest.param("Sol·licitud \x1b[2J d'ajut", "control character", id="ESC"),
    pytest.param("Sol·licitud \x85 d'ajut", "control character", id="NEL"),
    pytest.param("Sol·licitud \u2028 d'ajut", "control character", id="line-separator"),
    pytest.param("Grant application \u202e(no data is kept)", "control character", id="RLO"),
    pytest.param("Grant application \u2067x\u2069", "control character", id="RLI-PDI"),
    pytest.param("Grant application \u200f", "control character", id="RLM"),
    pytest.param("\u200b\u2060", "nothing to read", id="invisible-only"),
    pytest.param(" \u3000 ", "nothing to read", id="spaces-only"),
]


def _template(name: str, purpose: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "dcql_query": QUERY, "purpose": purpose, "trusted_issuers": RULES,
            "response_mode": "direct_post"}


def _refused(response: Any, text: str, kind: str, lang: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "purpose" in body["error_description"] and kind in body["error_description"]
    assert f"the {lang} text" in body["error_description"]
    assert text not in response.text
    assert not text.strip() or text.strip() not in body["error_description"]


@pytest.mark.parametrize(("text", "kind"), REFUSED)
def test_a_template_purpose_with_a_control_character_is_refused(http, verifier, text, kind):
    url, h = f"{verifier.url}/v1/templates", verifier.headers()
    name = f"purpose-{time.time_ns()}"
    purpose = {"ca": "Sol·licitud d'ajut", "es": text, "en": "Grant application"}
    _refused(http.post(url, json=_template(name, purpose), headers=h), text, kind, "es")
    assert http.get(f"{url}/{name}", headers=h).status_code == 404
    # A template made with clean texts cannot be given such a text either.
    assert http.post(url, json=_template(name, {"en": "Grant application"}), headers=h).status_code == 201
    _refused(http.put(f"{url}/{name}", json=_template(name, {"en": text}), headers=h), text, kind, "en")
    assert http.get(f"{url}/{name}", headers=h).json()["purpose"] == {"en": "Grant application"}


@pytest.mark.parametrize(("text", "kind"), REFUSED)
def test_an_ad_hoc_purpose_with_a_control_character_is_refused(http, verifier, text, kind):
    body = {"dcql_query": QUERY, "purpose": {"ca": text}, "trusted_issuers": RULES, "response_mode": "direct_post"}
    _refused(http.post(f"{verifier.url}/v1/requests", json=body, headers=verifier.headers()), text, kind, "ca")


@pytest.mark.parametrize(("purpose", "said"), [
    ({"ca": "x" * 501}, "each purpose text is 1-500 characters"),
    ({"fr": "Demande de subvention"}, "purpose needs texts keyed by ca, es and/or en"),
    ({}, "purpose needs texts keyed by ca, es and/or en"),
])
def test_the_other_purpose_rules_say_what_is_wrong(http, verifier, purpose, said):
    """Said to the agency, as the refusals above are (they were all "invalid value")."""
    name = f"purpose-rule-{time.time_ns()}"
    response = http.post(f"{verifier.url}/v1/templates", json=_template(name, purpose), headers=verifier.headers())
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_request", "error_description": f"purpose: {said}"}


@pytest.mark.parametrize("text", [
    pytest.param("Sol·licitud de subvenció: estar al corrent de les obligacions tributàries", id="catalan"),
    pytest.param("  Solicitud de ayuda, niño  ", id="spaces-around-kept"),
    pytest.param("Grant application \U0001f468\u200d\U0001f469\u200d\U0001f467 (family)", id="emoji-ZWJ"),
    pytest.param("طلب منحة دراسية", id="arabic"),  # right-to-left script, no control character
    pytest.param("x" * 500, id="500"),
])
def test_a_real_purpose_reaches_the_wallet_as_the_agency_wrote_it(http, verifier, pki, text):
    body = {"dcql_query": QUERY, "purpose": {"ca": text, "en": "Grant application"}, "trusted_issuers": RULES,
            "response_mode": "direct_post"}
    response = http.post(f"{verifier.url}/v1/requests", json=body, headers=verifier.headers())
    assert response.status_code == 201, response.text
    request = Presenter(http, [pki.rp_ca]).fetch_request(response.json()["uri"])
    assert (request.model_extra or {})["purpose"] == {"ca": text, "en": "Grant application"}
    url, h = f"{verifier.url}/v1/templates", verifier.headers()
    name = f"real-purpose-{time.time_ns()}"
    created = http.post(url, json=_template(name, {"ca": text}), headers=h)
    assert created.status_code == 201, created.text
    assert http.get(f"{url}/{name}", headers=h).json()["purpose"] == {"ca": text}


def _store_template(verifier: Verifier, name: str, purpose: dict[str, str],
                    query: dict[str, Any] | None = None) -> None:
    """A template written straight into the database, as one stored before today's rules would be."""

    async def work(db: Any) -> None:
        from sqlalchemy import select

        async with db.session() as session:
            agency_id = await session.scalar(select(Agency.id).where(Agency.slug == "ajuntament-barcelona"))
            now = dt.datetime.now(dt.UTC)
            session.add(Template(id=str(uuid.uuid4()), agency_id=agency_id, name=name,
                                 dcql_query=query or QUERY, purpose=purpose,
                                 trusted_issuers=[{**RULES[0], "metadata": False}], anchors_pem=[],
                                 retention_seconds=60, response_mode="direct_post", created_at=now, updated_at=now))

    _in_db(verifier, work)


def test_a_template_stored_with_such_a_purpose_is_read_and_replaced_but_makes_no_request(http, verifier, pki):
    url, h = f"{verifier.url}/v1/templates", verifier.headers()
    name = f"legacy-purpose-{time.time_ns()}"
    reversed_text = "Grant application \u202e(no data is kept)"
    _store_template(verifier, name, {"ca": "Sol·licitud d'ajut", "en": reversed_text})
    # Read and listed as stored (JSON escapes it), not a 500: the agency sees what to replace.
    read = http.get(f"{url}/{name}", headers=h)
    assert read.status_code == 200, read.text
    assert read.json()["purpose"]["en"] == reversed_text
    listed = http.get(url, headers=h)
    assert listed.status_code == 200, listed.text
    assert name in [t["name"] for t in listed.json()]
    # No request carries it to citizens.
    response = http.post(f"{verifier.url}/v1/requests", json={"template": name}, headers=h)
    assert response.status_code == 400, response.text
    description = response.json()["error_description"]
    assert response.json()["error"] == "invalid_request"
    assert name in description and "purpose" in description and "the en text" in description
    assert "control character" in description and reversed_text not in response.text
    # Replaced with a clean purpose, it makes requests again.
    replaced = http.put(f"{url}/{name}", json=_template(name, {"en": "Grant application"}), headers=h)
    assert replaced.status_code == 200, replaced.text
    made = http.post(f"{verifier.url}/v1/requests", json={"template": name}, headers=h)
    assert made.status_code == 201, made.text
    request = Presenter(http, [pki.rp_ca]).fetch_request(made.json()["uri"])
    assert (request.model_extra or {})["purpose"] == {"en": "Grant application"}


def test_a_template_stored_with_a_query_now_refused_is_read_not_a_500(http, verifier):
    """Reading a stored template re-checked it against today's rules: one stored with a query of a
    format refused since (an mdoc) failed every read and listing of the agency's templates."""
    url, h = f"{verifier.url}/v1/templates", verifier.headers()
    name = f"legacy-mdoc-{time.time_ns()}"
    mdoc = {"credentials": [{"id": "pid", "format": "mso_mdoc", "meta": {"doctype_value": "eu.europa.ec.eudi.pid.1"},
                             "claims": [{"path": ["eu.europa.ec.eudi.pid.1", "family_name"]}]}]}
    _store_template(verifier, name, {"en": "Identity"}, mdoc)
    read = http.get(f"{url}/{name}", headers=h)
    assert read.status_code == 200, read.text
    assert read.json()["dcql_query"] == mdoc
    assert http.get(url, headers=h).status_code == 200
    response = http.post(f"{verifier.url}/v1/requests", json={"template": name}, headers=h)
    assert response.status_code == 400 and name in response.json()["error_description"], response.text
