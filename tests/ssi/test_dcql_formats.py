"""ssi.dcql evaluates and checks SD-JWT VCs only: a Credential Query of another format parses, but no
credential matches it (a wallet never offers an SD-JWT VC, nor anything claiming that format, for an
mdoc query) and an answer to it is ``dcql.format_mismatch``."""

from __future__ import annotations

import copy

import pytest

from ssi.dcql import SUPPORTED_FORMATS, check_presented, evaluate, parse_dcql_query
from tests.ssi.test_dcql import ARTHUR, PID, FakeCredential, cred, q

MDOC = {"id": "mdl", "format": "mso_mdoc", "meta": {"doctype_value": "org.iso.18013.5.1.mDL"},
        "claims": [{"path": ["org.iso.18013.5.1", "family_name"]}]}
W3C = {"id": "w3c", "format": "jwt_vc_json", "meta": {"type_values": [["VerifiableCredential"]]},
       "claims": [{"path": ["family_name"]}]}


def test_only_sd_jwt_vc_is_supported() -> None:
    assert frozenset({"dc+sd-jwt"}) == SUPPORTED_FORMATS


@pytest.mark.parametrize("query", [MDOC, W3C], ids=["mso_mdoc", "jwt_vc_json"])
def test_no_credential_matches_a_query_of_another_format(query) -> None:
    parsed = parse_dcql_query(q(query))
    fmt = query["format"]
    # an SD-JWT VC, and a credential whose own format (an SD-JWT's typ) names the queried one
    claims = {**copy.deepcopy(ARTHUR), "org.iso.18013.5.1": {"family_name": "Dent"}}
    credentials = [FakeCredential(PID, copy.deepcopy(claims)), FakeCredential(PID, copy.deepcopy(claims), format=fmt)]
    result = evaluate(parsed, credentials)
    assert not result.satisfiable
    assert result.matches[query["id"]] == []
    assert result.unsatisfied == {query["id"]: "format_mismatch"}


def test_an_optional_query_of_another_format_is_left_out() -> None:
    parsed = parse_dcql_query(q(cred(claims=[{"path": ["family_name"]}]), MDOC,
                                credential_sets=[{"options": [["pid"]]}, {"options": [["mdl"]], "required": False}]))
    result = evaluate(parsed, [FakeCredential(PID, copy.deepcopy(ARTHUR)),
                               FakeCredential(PID, copy.deepcopy(ARTHUR), format="mso_mdoc")])
    assert result.satisfiable and result.required == ["pid"] and result.optional == []
    assert result.unsatisfied == {"mdl": "format_mismatch"}


@pytest.mark.parametrize("query", [MDOC, W3C], ids=["mso_mdoc", "jwt_vc_json"])
def test_an_answer_to_a_query_of_another_format_is_refused(query) -> None:
    parsed = parse_dcql_query(q(query))
    presented = {query["id"]: [{"vct": PID, "family_name": "Dent", "org.iso.18013.5.1": {"family_name": "Dent"}}]}
    problems = check_presented(parsed, presented)
    assert [(p.query_id, p.code) for p in problems] == [(query["id"], "dcql.format_mismatch")]


def test_an_sd_jwt_vc_query_is_still_answered() -> None:
    parsed = parse_dcql_query(q(cred(claims=[{"path": ["family_name"]}])))
    assert evaluate(parsed, [FakeCredential(PID, copy.deepcopy(ARTHUR))]).satisfiable
    assert check_presented(parsed, {"pid": [{"vct": PID, "family_name": "Dent"}]}) == []
