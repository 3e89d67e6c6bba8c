"""The claims a verified answer reports when the query's paths go into arrays: every requested claim
that was disclosed, at its place (docs/verifier.md, "Verification"). Everything for real: the
session's verifier and the test wallet over HTTP.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from tests.support.presenter import HeldCredential
from tests.verifier.conftest import ISSUER, PKI, VCT_PADRO, read_result

ANNA = {"name": "Anna", "birthDate": "1990-01-01"}
PAU = {"name": "Pau", "birthDate": "2015-02-02"}
NAMELESS = {"birthDate": "2016-03-03"}


def _ad_hoc(paths: list[list[Any]]) -> dict[str, Any]:
    return {"dcql_query": {"credentials": [{"id": "padro", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT_PADRO]},
                                            "claims": [{"path": p} for p in paths]}]},
            "purpose": {"en": "Household members"}, "trusted_issuers": [{"vct": VCT_PADRO, "issuers": [ISSUER]}],
            "response_mode": "direct_post"}


def _household(pki: PKI, members: list[dict[str, Any]]) -> HeldCredential:
    holder = Key.generate("ES256")
    token = issue_sd_jwt_vc({"members": members, "municipality": "Barcelona"}, vct=VCT_PADRO, issuer=ISSUER,
                            key=pki.issuer_key, holder_jwk=holder.public_jwk(),
                            disclosable=[("members",), ("municipality",)], x5c=pki.issuer_x5c,
                            exp=int(time.time()) + 3600)
    return HeldCredential(token, holder)


def _answer(http, verifier, wallet, pki, paths, members):
    created = http.post(f"{verifier.url}/v1/requests", json=_ad_hoc(paths), headers=verifier.headers())
    assert created.status_code == 201, created.text
    response = wallet.present(created.json()["uri"], [_household(pki, members)])
    return created.json()["id"], response


@pytest.mark.parametrize(("paths", "members", "claims"), [
    # An element without the requested key is left out of the selection (OpenID4VP 1.0 §7.1.1): its
    # position is null, and the array ends at the last selected element.
    ([["members", None, "name"]], [ANNA, NAMELESS], {"members": [{"name": "Anna"}]}),
    ([["members", None, "name"]], [NAMELESS, PAU], {"members": [None, {"name": "Pau"}]}),
    ([["members", None, "name"]], [ANNA, NAMELESS, PAU], {"members": [{"name": "Anna"}, None, {"name": "Pau"}]}),
    # Two paths into the same array: both kept, each at its element.
    ([["members", None, "name"], ["members", 0, "birthDate"]], [ANNA, PAU],
     {"members": [{"name": "Anna", "birthDate": "1990-01-01"}, {"name": "Pau"}]}),
    ([["members", 0, "birthDate"], ["members", None, "name"]], [ANNA, PAU],
     {"members": [{"name": "Anna", "birthDate": "1990-01-01"}, {"name": "Pau"}]}),
    # An index reports the element at its position, not as the first one.
    ([["members", 1, "birthDate"]], [ANNA, PAU, NAMELESS], {"members": [None, {"birthDate": "2015-02-02"}]}),
    # A whole array and a path into it: the whole array.
    ([["members", 1, "name"], ["members"], ["municipality"]], [ANNA, PAU],
     {"members": [ANNA, PAU], "municipality": "Barcelona"}),
], ids=["nameless-last", "nameless-first", "nameless-middle", "wildcard-and-index", "index-and-wildcard",
        "index-position", "whole-array"])
def test_every_requested_disclosed_claim_is_reported_at_its_place(http, verifier, wallet, pki, paths, members,
                                                                   claims):
    tx_id, response = _answer(http, verifier, wallet, pki, paths, members)
    assert response.status_code == 200, response.text
    result = read_result(http, verifier, tx_id)
    assert result["status"] == "verified", result["errors"]
    assert result["claims"] == {"padro": claims}
    assert result["credentials"]["padro"][0]["claims"] == claims
