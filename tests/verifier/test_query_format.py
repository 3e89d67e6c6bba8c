"""The verifier checks SD-JWT VCs only: a Credential Query of another ``format`` (``mso_mdoc``,
``jwt_vc_json``...) is refused when a template or an ad hoc request is made, a template stored with
one before that rule makes no request, and a request stored with one fails every answer
(``dcql.format_mismatch``) instead of taking an SD-JWT VC for the credential it asked.

Real servers on loopback: the session's verifier (SQLite) and the test wallet.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import update

from service_kit.errors import APIError
from tests.verifier.conftest import ISSUER, VCT_TAX, read_result
from tests.verifier.test_expiry import _in_db
from tests.verifier.test_template_rules import _store_template
from verifier.aries_channel import query_for_aries
from verifier.models import Transaction

OTHER_FORMATS = [
    pytest.param({"format": "mso_mdoc", "meta": {"doctype_value": "org.iso.18013.5.1.mDL"},
                  "claims": [{"path": ["org.iso.18013.5.1", "nif"]}]}, id="mso_mdoc"),
    pytest.param({"format": "jwt_vc_json", "meta": {"type_values": [["VerifiableCredential", "TaxCompliance"]]}},
                 id="jwt_vc_json"),
    # vct_values do not make another format an SD-JWT VC
    pytest.param({"format": "vc+sd-jwt", "meta": {"vct_values": [VCT_TAX]}}, id="vc+sd-jwt"),
]
SD_JWT = {"format": "dc+sd-jwt", "meta": {"vct_values": [VCT_TAX]}}


def _query(shape: dict[str, Any]) -> dict[str, Any]:
    return {"credentials": [{"id": "q", "claims": [{"path": ["nif"]}], **shape}]}


def _ad_hoc(shape: dict[str, Any]) -> dict[str, Any]:
    return {"dcql_query": _query(shape), "purpose": {"en": "Testing"},
            "trusted_issuers": [{"vct": VCT_TAX, "issuers": [ISSUER]}], "response_mode": "direct_post"}


def _refused_for_format(response: Any) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "dc+sd-jwt" in body["error_description"] and "format" in body["error_description"]


@pytest.mark.parametrize("shape", OTHER_FORMATS)
def test_a_template_of_another_format_is_refused(http, verifier, shape):
    url, h = f"{verifier.url}/v1/templates", verifier.headers()
    name = f"format-{time.time_ns()}"
    template = {"name": name, **_ad_hoc(shape)}
    _refused_for_format(http.post(url, json=template, headers=h))
    assert http.get(f"{url}/{name}", headers=h).status_code == 404
    # an SD-JWT VC template is accepted; replacing its query by one of another format is refused
    assert http.post(url, json={**template, "dcql_query": _query(SD_JWT)}, headers=h).status_code == 201
    _refused_for_format(http.put(f"{url}/{name}", json=template, headers=h))
    assert http.get(f"{url}/{name}", headers=h).json()["dcql_query"]["credentials"][0]["format"] == "dc+sd-jwt"


@pytest.mark.parametrize("shape", OTHER_FORMATS)
def test_an_ad_hoc_request_of_another_format_is_refused(http, verifier, shape):
    _refused_for_format(http.post(f"{verifier.url}/v1/requests", json=_ad_hoc(shape), headers=verifier.headers()))


def test_a_stored_template_of_another_format_makes_no_request(http, verifier):
    name = f"legacy-mdoc-{time.time_ns()}"
    _store_template(verifier, name, {"id": "q", "format": "mso_mdoc",
                                     "meta": {"doctype_value": "org.iso.18013.5.1.mDL"}})
    response = http.post(f"{verifier.url}/v1/requests", json={"template": name}, headers=verifier.headers())
    assert response.status_code == 400, response.text
    assert name in response.json()["error_description"]
    assert "dc+sd-jwt" in response.json()["error_description"]


def _store_query(verifier: Any, tx_id: str, query: dict[str, Any]) -> None:
    """Give a stored request another query, as one made before the rule would have."""

    async def work(db: Any) -> None:
        async with db.session() as session:
            await session.execute(update(Transaction).where(Transaction.id == tx_id).values(dcql_query=query))

    _in_db(verifier, work)


@pytest.mark.parametrize("shape", OTHER_FORMATS)
def test_a_stored_request_of_another_format_fails_an_sd_jwt_vc_answer(http, verifier, wallet, creds, shape):
    created = http.post(f"{verifier.url}/v1/requests", json=_ad_hoc(SD_JWT), headers=verifier.headers())
    assert created.status_code == 201, created.text
    request = created.json()
    _store_query(verifier, request["id"], _query(shape))
    ro = wallet.fetch_request(request["uri"])
    assert ro.dcql_query["credentials"][0]["format"] == shape["format"]
    answer = wallet.post_response(ro, {"q": [wallet.present_one(creds.tax(), [["nif"]], ro)]})
    assert answer.status_code == 400, answer.text
    assert [e["code"] for e in answer.json()["errors"]] == ["dcql.format_mismatch"]
    result = read_result(http, verifier, request["id"])
    assert result["status"] == "rejected"
    assert [(e["code"], e["query_id"]) for e in result["errors"]] == [("dcql.format_mismatch", "q")]
    assert result["claims"] == {}


def test_didcomm_asks_no_query_of_another_format():
    query = {"credentials": [{"id": "q", "format": "jwt_vc_json", "meta": {"vct_values": [VCT_TAX]},
                              "claims": [{"path": ["nif"]}]}]}
    with pytest.raises(APIError) as raised:
        query_for_aries(query, None)
    assert raised.value.status_code == 400 and "dc+sd-jwt" in raised.value.error_description
