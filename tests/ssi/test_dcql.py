"""DCQL: parsing rules, claims path pointers, wallet-side evaluation and verifier-side checking."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssi.dcql import (
    DCQLCredential,
    Match,
    check_presented,
    evaluate,
    parse_dcql_query,
    resolve_path,
)
from ssi.errors import DCQLError, SSIError

PID = "https://credentials.example.org/pid"
DIPLOMA = "https://credentials.example.org/diploma"


@dataclass
class FakeCredential:
    """Implements the DCQLCredential protocol over a plain dict of claims."""

    vct: str | None
    claims: dict
    format: str = "dc+sd-jwt"
    asked: list = field(default_factory=list)

    def disclosures_for(self, paths: Iterable[tuple]) -> list:
        paths = list(paths)
        self.asked.append(paths)
        return [("disclosure", p) for p in paths]


ARTHUR = {
    "vct": PID,
    "iss": "https://issuer.example.org",
    "name": "Arthur Dent",
    "given_name": "Arthur",
    "family_name": "Dent",
    "birthdate": "1952-03-11",
    "age_equal_or_over": {"18": True, "65": False},
    "address": {"street_address": "42 Market Street", "locality": "Milliways", "postal_code": "12345"},
    "degrees": [
        {"type": "Bachelor of Science", "university": "University of Betelgeuse"},
        {"type": "Master of Science", "university": "University of Betelgeuse"},
    ],
    "nationalities": ["British", "Betelgeusian"],
    "household_size": 3,
}


def q(*credentials: dict, credential_sets: list | None = None) -> dict:
    out: dict[str, Any] = {"credentials": list(credentials)}
    if credential_sets is not None:
        out["credential_sets"] = credential_sets
    return out


def cred(cid: str = "pid", vct: str = PID, **extra: Any) -> dict:
    return {"id": cid, "format": "dc+sd-jwt", "meta": {"vct_values": [vct]}, **extra}


# -- claims path pointer (OpenID4VP 1.0 §7, the specification's own example credential) --------

@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["name"], [(("name",), "Arthur Dent")]),
        (["address", "street_address"], [(("address", "street_address"), "42 Market Street")]),
        (["degrees", None, "type"], [(("degrees", 0, "type"), "Bachelor of Science"),
                                     (("degrees", 1, "type"), "Master of Science")]),
        (["nationalities", 1], [(("nationalities", 1), "Betelgeusian")]),
        (["nationalities", 5], []),
        (["missing"], []),
        (["name", "first"], []),  # a string component on a non-object aborts
        (["address", None], []),  # null on a non-array aborts
        (["address", 0], []),  # an index on a non-array aborts
        (["degrees", -1], []),
        (["degrees", True], []),
    ],
)
def test_claims_path_pointer(path: list, expected: list) -> None:
    assert resolve_path(ARTHUR, path) == expected


def test_address_selects_the_whole_object() -> None:
    [(where, value)] = resolve_path(ARTHUR, ["address"])
    assert where == ("address",) and value["locality"] == "Milliways"


# -- parsing ------------------------------------------------------------------------------------

def test_parse_full_query_and_round_trip() -> None:
    data = q(
        cred("pid", claims=[{"id": "a", "path": ["age_equal_or_over", "18"], "values": [True]},
                            {"id": "b", "path": ["birthdate"]}],
             claim_sets=[["a"], ["b"]], multiple=True, require_cryptographic_holder_binding=False,
             trusted_authorities=[{"type": "aki", "values": ["s9tIpPmhxdiuNkHMEWNpYim8S8Y"]}],
             unknown_member="ignored"),
        cred("diploma", vct=DIPLOMA, claims=[{"path": ["degrees", None, "type"]}]),
        credential_sets=[{"options": [["pid"]]}, {"options": [["diploma"]], "required": False}],
    )
    data["future_extension"] = {"x": 1}
    query = parse_dcql_query(data)
    pid = query.credential("pid")
    assert pid.multiple and not pid.require_cryptographic_holder_binding
    assert pid.vct_values == (PID,)
    assert pid.claims[0].values == (True,) and pid.claim_sets == (("a",), ("b",))
    assert pid.trusted_authorities[0].type == "aki"
    assert query.credential("diploma").claims[0].path == ("degrees", None, "type")
    assert query.credential_sets[1].required is False and query.credential_sets[0].required is True
    assert parse_dcql_query(query.to_json()) == query


def _bad(mutate) -> dict:
    data = q(cred("pid", claims=[{"id": "n", "path": ["name"]}, {"id": "b", "path": ["birthdate"]}],
                  claim_sets=[["n"], ["b"]]),
             cred("dip", vct=DIPLOMA),
             credential_sets=[{"options": [["pid"], ["dip"]]}])
    mutate(data)
    return data


def _set(path: list, value: Any):
    def mutate(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path: list):
    def mutate(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ([], "dcql.bad_query"),
        ("credentials", "dcql.bad_query"),
        ({}, "dcql.missing_credentials"),
        ({"credentials": []}, "dcql.bad_credentials"),
        ({"credentials": {}}, "dcql.bad_credentials"),
        ({"credentials": ["pid"]}, "dcql.bad_credential_query"),
        (_bad(_set(["credentials", 0, "id"], "")), "dcql.bad_credential_id"),
        (_bad(_set(["credentials", 0, "id"], "has space")), "dcql.bad_credential_id"),
        (_bad(_set(["credentials", 0, "id"], "ümlaut")), "dcql.bad_credential_id"),
        (_bad(_set(["credentials", 0, "id"], "pid\n")), "dcql.bad_credential_id"),
        (_bad(_set(["credentials", 0, "claims", 0, "id"], "n\n")), "dcql.bad_claim_id"),
        (_bad(_set(["credentials", 0, "id"], 7)), "dcql.bad_credential_id"),
        (_bad(_delete(["credentials", 0, "id"])), "dcql.bad_credential_id"),
        (_bad(_set(["credentials", 1, "id"], "pid")), "dcql.duplicate_credential_id"),
        (_bad(_delete(["credentials", 0, "format"])), "dcql.bad_format"),
        (_bad(_set(["credentials", 0, "format"], "")), "dcql.bad_format"),
        (_bad(_set(["credentials", 0, "multiple"], "yes")), "dcql.bad_multiple"),
        (_bad(_set(["credentials", 0, "require_cryptographic_holder_binding"], 1)), "dcql.bad_holder_binding"),
        (_bad(_delete(["credentials", 0, "meta"])), "dcql.bad_meta"),
        (_bad(_set(["credentials", 0, "meta"], [])), "dcql.bad_meta"),
        (_bad(_set(["credentials", 0, "meta"], {})), "dcql.bad_vct_values"),
        (_bad(_set(["credentials", 0, "meta"], {"vct_values": []})), "dcql.bad_vct_values"),
        (_bad(_set(["credentials", 0, "meta"], {"vct_values": [1]})), "dcql.bad_vct_values"),
        (_bad(_set(["credentials", 0, "trusted_authorities"], [])), "dcql.bad_trusted_authorities"),
        (_bad(_set(["credentials", 0, "trusted_authorities"], [{"type": "aki"}])), "dcql.bad_trusted_authorities"),
        (_bad(_set(["credentials", 0, "trusted_authorities"], [{"type": "aki", "values": [1]}])), "dcql.bad_trusted_authorities"),
        (_bad(_set(["credentials", 0, "trusted_authorities"], [{"values": ["x"]}])), "dcql.bad_trusted_authorities"),
        (_bad(_set(["credentials", 0, "claims"], [])), "dcql.bad_claims"),
        (_bad(_set(["credentials", 0, "claims"], ["name"])), "dcql.bad_claims"),
        (_bad(_set(["credentials", 0, "claims", 0, "path"], [])), "dcql.bad_path"),
        (_bad(_set(["credentials", 0, "claims", 0, "path"], "name")), "dcql.bad_path"),
        (_bad(_set(["credentials", 0, "claims", 0, "path"], ["a", -1])), "dcql.bad_path"),
        (_bad(_set(["credentials", 0, "claims", 0, "path"], ["a", 1.5])), "dcql.bad_path"),
        (_bad(_set(["credentials", 0, "claims", 0, "path"], ["a", True])), "dcql.bad_path"),
        (_bad(_set(["credentials", 0, "claims", 0, "path"], [{"a": 1}])), "dcql.bad_path"),
        (_bad(_delete(["credentials", 0, "claims", 0, "path"])), "dcql.bad_path"),
        (_bad(_set(["credentials", 0, "claims", 0, "values"], [])), "dcql.bad_values"),
        (_bad(_set(["credentials", 0, "claims", 0, "values"], [1.5])), "dcql.bad_values"),
        (_bad(_set(["credentials", 0, "claims", 0, "values"], [None])), "dcql.bad_values"),
        (_bad(_set(["credentials", 0, "claims", 0, "values"], [{"a": 1}])), "dcql.bad_values"),
        (_bad(_set(["credentials", 0, "claims", 0, "id"], "bad id")), "dcql.bad_claim_id"),
        (_bad(_set(["credentials", 0, "claims", 1, "id"], "n")), "dcql.duplicate_claim_id"),
        (_bad(_set(["credentials", 0, "claims", 1, "path"], ["name"])), "dcql.duplicate_claim_path"),
        (_bad(_delete(["credentials", 0, "claims", 1, "id"])), "dcql.missing_claim_id"),
        (_bad(_delete(["credentials", 0, "claims"])), "dcql.claim_sets_without_claims"),
        (_bad(_set(["credentials", 0, "claim_sets"], [])), "dcql.bad_claim_sets"),
        (_bad(_set(["credentials", 0, "claim_sets"], [[]])), "dcql.bad_claim_sets"),
        (_bad(_set(["credentials", 0, "claim_sets"], ["n"])), "dcql.bad_claim_sets"),
        (_bad(_set(["credentials", 0, "claim_sets"], [[1]])), "dcql.bad_claim_sets"),
        (_bad(_set(["credentials", 0, "claim_sets"], [["zz"]])), "dcql.unknown_claim_id"),
        (_bad(_set(["credential_sets"], [])), "dcql.bad_credential_sets"),
        (_bad(_set(["credential_sets"], [["pid"]])), "dcql.bad_credential_sets"),
        (_bad(_set(["credential_sets"], [{"options": []}])), "dcql.bad_credential_sets"),
        (_bad(_set(["credential_sets"], [{"options": [[]]}])), "dcql.bad_credential_sets"),
        (_bad(_set(["credential_sets"], [{}])), "dcql.bad_credential_sets"),
        (_bad(_set(["credential_sets"], [{"options": [[3]]}])), "dcql.bad_credential_sets"),
        (_bad(_set(["credential_sets"], [{"options": [["nope"]]}])), "dcql.unknown_credential_id"),
        (_bad(_set(["credential_sets"], [{"options": [["pid"]], "required": "no"}])), "dcql.bad_required"),
        (q({"id": "m", "format": "mso_mdoc", "meta": {"doctype_value": "org.iso.18013.5.1.mDL"},
            "claims": [{"path": ["org.iso.18013.5.1", "given_name", "x"]}]}), "dcql.bad_path"),
        (q({"id": "m", "format": "mso_mdoc", "meta": {"doctype_value": 5}}), "dcql.bad_meta"),
    ],
)
def test_parse_refusals(data: Any, code: str) -> None:
    with pytest.raises(DCQLError) as err:
        parse_dcql_query(data)
    assert err.value.code == code


def test_wallet_mode_ignores_repeated_claims() -> None:
    data = q(cred(claims=[{"path": ["name"]}, {"path": ["name"]}, {"path": ["birthdate"]}]))
    with pytest.raises(DCQLError):
        parse_dcql_query(data)
    query = parse_dcql_query(data, strict=False)
    assert [c.path for c in query.credentials[0].claims] == [("name",), ("birthdate",)]


def test_other_formats_need_only_a_meta_object() -> None:
    query = parse_dcql_query(q({"id": "x", "format": "jwt_vc_json", "meta": {}}))
    assert query.credentials[0].vct_values is None


# -- evaluation (wallet) ------------------------------------------------------------------------

def wallet() -> list[FakeCredential]:
    return [
        FakeCredential(PID, copy.deepcopy(ARTHUR)),
        FakeCredential(DIPLOMA, {"vct": DIPLOMA, "title": "Physics", "eqfLevel": 7}),
        FakeCredential(PID, copy.deepcopy(ARTHUR), format="mso_mdoc"),
    ]


def test_fake_credential_satisfies_the_protocol() -> None:
    assert isinstance(wallet()[0], DCQLCredential)


def test_simple_query_discloses_exactly_the_requested_paths() -> None:
    query = parse_dcql_query(q(cred(claims=[{"path": ["family_name"]}, {"path": ["address", "postal_code"]},
                                           {"path": ["degrees", None, "type"]}])))
    creds = wallet()
    result = evaluate(query, creds)
    assert result.satisfiable and result.required == ["pid"] and result.optional == []
    [match] = result.matches["pid"]
    assert match.credential is creds[0]
    assert match.paths == (("family_name",), ("address", "postal_code"), ("degrees", 0, "type"), ("degrees", 1, "type"))
    assert dict(match.claims_preview)[("address", "postal_code")] == "12345"
    assert match.disclosures() == [("disclosure", p) for p in match.paths]
    assert creds[0].asked == [list(match.paths)]


def test_no_claims_requested_discloses_nothing_selectively() -> None:
    result = evaluate(parse_dcql_query(q(cred())), wallet())
    assert result.satisfiable and result.matches["pid"][0].paths == ()


def test_claim_sets_take_the_first_satisfiable_option() -> None:
    # the verifier prefers the age predicate over the birth date (least information first)
    query = parse_dcql_query(q(cred(claims=[
        {"id": "over18", "path": ["age_equal_or_over", "18"], "values": [True]},
        {"id": "over65", "path": ["age_equal_or_over", "65"], "values": [True]},
        {"id": "bd", "path": ["birthdate"]},
    ], claim_sets=[["over65"], ["over18"], ["bd"]])))
    [match] = evaluate(query, wallet()).matches["pid"]
    assert match.claim_set == ("over18",)
    assert match.paths == (("age_equal_or_over", "18"),)
    # without the predicate, the birth date is the fallback
    no_pred = FakeCredential(PID, {k: v for k, v in ARTHUR.items() if k != "age_equal_or_over"})
    [match] = evaluate(query, [no_pred]).matches["pid"]
    assert match.claim_set == ("bd",) and match.paths == (("birthdate",),)


def test_values_must_match_type_and_value() -> None:
    def run(values: list) -> Any:
        return evaluate(parse_dcql_query(q(cred(claims=[{"path": ["household_size"], "values": values}]))), wallet())

    assert run([3]).satisfiable
    assert run([2, 3]).satisfiable
    assert not run(["3"]).satisfiable
    assert run(["3"]).unsatisfied == {"pid": "value_mismatch"}
    bool_query = q(cred(claims=[{"path": ["age_equal_or_over", "18"], "values": [1]}]))
    assert not evaluate(parse_dcql_query(bool_query), wallet()).satisfiable


def test_values_with_wildcards_disclose_only_matching_elements() -> None:
    query = parse_dcql_query(q(cred(claims=[{"path": ["nationalities", None], "values": ["British"]}])))
    [match] = evaluate(query, wallet()).matches["pid"]
    assert match.paths == (("nationalities", 0),)


def test_unsatisfied_reasons() -> None:
    creds = wallet()
    assert evaluate(parse_dcql_query(q(cred(vct="https://other"))), creds).unsatisfied == {"pid": "vct_mismatch"}
    assert evaluate(parse_dcql_query(q(cred(claims=[{"path": ["nope"]}]))), creds).unsatisfied == {"pid": "missing_claim"}
    r = evaluate(parse_dcql_query(q({"id": "x", "format": "ldp_vc", "meta": {}})), creds)
    assert r.unsatisfied == {"x": "format_mismatch"} and not r.satisfiable
    assert evaluate(parse_dcql_query(q(cred())), []).unsatisfied == {"pid": "no_credentials"}
    sets = q(cred(claims=[{"id": "a", "path": ["nope"]}], claim_sets=[["a"]]))
    assert evaluate(parse_dcql_query(sets), creds).unsatisfied == {"pid": "no_claim_set_satisfied"}


def test_several_matching_credentials_are_all_offered() -> None:
    creds = wallet() + [FakeCredential(PID, {**ARTHUR, "given_name": "Ford"})]
    result = evaluate(parse_dcql_query(q(cred(claims=[{"path": ["given_name"]}]))), creds)
    assert [m.claims_preview[0][1] for m in result.matches["pid"]] == ["Arthur", "Ford"]


def test_credential_sets_required_and_optional() -> None:
    query = parse_dcql_query(q(
        cred("pid"), cred("pid_other", vct="https://other-pid"), cred("diploma", vct=DIPLOMA),
        cred("missing", vct="https://nothing"),
        credential_sets=[
            {"options": [["pid_other"], ["pid"]]},
            {"options": [["missing"], ["diploma"]], "required": False},
        ],
    ))
    result = evaluate(query, wallet())
    assert result.satisfiable
    assert result.required == ["pid"] and result.optional == ["diploma"]
    assert result.credential_sets[0].satisfied_options == (("pid",),)
    assert result.credential_sets[1].chosen == ("diploma",)
    assert set(result.unsatisfied) == {"pid_other", "missing"}


def test_required_credential_set_unsatisfiable() -> None:
    query = parse_dcql_query(q(cred("pid"), cred("diploma", vct=DIPLOMA),
                               credential_sets=[{"options": [["pid", "diploma"]]}]))
    assert evaluate(query, wallet()).satisfiable
    assert not evaluate(query, wallet()[:1]).satisfiable
    optional_only = parse_dcql_query(q(cred("diploma", vct=DIPLOMA),
                                       credential_sets=[{"options": [["diploma"]], "required": False}]))
    result = evaluate(optional_only, [])
    assert result.satisfiable and result.required == [] and result.optional == []


def test_without_credential_sets_every_query_is_required() -> None:
    query = parse_dcql_query(q(cred("pid"), cred("diploma", vct=DIPLOMA)))
    assert evaluate(query, wallet()).satisfiable
    result = evaluate(query, wallet()[:1])
    assert not result.satisfiable and result.unsatisfied == {"diploma": "vct_mismatch"}


def test_match_is_a_dataclass_with_the_credential() -> None:
    [m] = evaluate(parse_dcql_query(q(cred())), wallet()).matches["pid"]
    assert isinstance(m, Match) and m.credential.vct == PID


# -- checking a presentation (verifier) --------------------------------------------------------

def codes(problems: list) -> list[str]:
    return [p.code for p in problems]


def test_check_presented_accepts_a_correct_answer() -> None:
    query = parse_dcql_query(q(cred(claims=[{"path": ["family_name"]}, {"path": ["address", "locality"]}])))
    disclosed = {"vct": PID, "family_name": "Dent", "address": {"locality": "Milliways"}}
    assert check_presented(query, {"pid": [disclosed]}) == []


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        ({}, ["dcql.missing_credential"]),
        ({"pid": []}, ["dcql.empty_presentation"]),
        ({"pid": [{"vct": PID, "family_name": "Dent"}]}, ["dcql.missing_claim"]),
        ({"pid": [{"vct": "https://other", "family_name": "Dent", "address": {"locality": "M"}}]}, ["dcql.vct_mismatch"]),
        ({"pid": [{"family_name": "Dent", "address": {"locality": "M"}}]}, ["dcql.vct_mismatch"]),
        ({"pid": [{"vct": PID, "family_name": "Dent", "address": {"locality": "M"}}] * 2}, ["dcql.too_many_presentations"]),
        ({"pid": [{"vct": PID, "family_name": "Dent", "address": {"locality": "M"}}], "extra": [{}]}, ["dcql.unknown_query_id"]),
        ({"pid": "not a list"}, ["dcql.empty_presentation"]),
    ],
)
def test_check_presented_problems(presented: dict, expected: list) -> None:
    query = parse_dcql_query(q(cred(claims=[{"path": ["family_name"]}, {"path": ["address", "locality"]}])))
    got = codes(check_presented(query, presented))
    assert got[: len(expected)] == expected and set(got) >= set(expected)


def test_check_presented_values_and_claim_sets() -> None:
    query = parse_dcql_query(q(cred(claims=[
        {"id": "over18", "path": ["age_equal_or_over", "18"], "values": [True]},
        {"id": "bd", "path": ["birthdate"]},
    ], claim_sets=[["over18"], ["bd"]])))
    assert check_presented(query, {"pid": [{"vct": PID, "age_equal_or_over": {"18": True}}]}) == []
    assert check_presented(query, {"pid": [{"vct": PID, "birthdate": "2000-01-01"}]}) == []
    assert codes(check_presented(query, {"pid": [{"vct": PID, "age_equal_or_over": {"18": False}}]})) == \
        ["dcql.no_claim_set_satisfied"]
    values_only = parse_dcql_query(q(cred(claims=[{"path": ["age_equal_or_over", "18"], "values": [True]}])))
    assert codes(check_presented(values_only, {"pid": [{"vct": PID, "age_equal_or_over": {"18": False}}]})) == \
        ["dcql.value_mismatch"]


def test_check_presented_multiple_and_credential_sets() -> None:
    query = parse_dcql_query(q(
        cred("pid", multiple=True), cred("diploma", vct=DIPLOMA), cred("other", vct="https://o"),
        cred("loose", vct="https://l"),
        credential_sets=[{"options": [["pid"], ["other"]]}, {"options": [["diploma"]], "required": False}],
    ))
    assert check_presented(query, {"pid": [{"vct": PID}, {"vct": PID}]}) == []
    assert check_presented(query, {"other": [{"vct": "https://o"}], "diploma": [{"vct": DIPLOMA}]}) == []
    assert codes(check_presented(query, {"diploma": [{"vct": DIPLOMA}]})) == ["dcql.credential_set_unsatisfied"]
    assert codes(check_presented(query, {"pid": [{"vct": "https://wrong"}]})) == \
        ["dcql.vct_mismatch", "dcql.credential_set_unsatisfied"]
    assert "dcql.unrequested_credential" in codes(check_presented(query, {"pid": [{"vct": PID}], "loose": [{"vct": "https://l"}]}))
    assert codes(check_presented(query, ["not", "a", "mapping"])) == ["dcql.bad_vp_token"]


# -- property-based -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.sampled_from(["pid", "a", "name", "", "dc+sd-jwt", PID]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["credentials", "credential_sets", "id", "format", "meta", "vct_values", "claims", "path",
                         "values", "claim_sets", "options", "required", "multiple", "trusted_authorities", "type"]),
        c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=json_values)
def test_random_json_only_typed_errors(data: Any) -> None:
    try:
        query = parse_dcql_query(data)
    except SSIError as exc:
        assert exc.code.startswith("dcql.")
        return
    assert parse_dcql_query(query.to_json()) == query
    evaluate(query, wallet())


claims_trees = st.recursive(st.none() | st.booleans() | st.integers(0, 3) | st.text(max_size=3),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), c, max_size=3),
                            max_leaves=12)
paths = st.lists(st.one_of(st.sampled_from(["a", "b", "c"]), st.none(), st.integers(0, 3)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(tree=claims_trees, path=paths)
def test_resolution_never_crashes_and_concrete_paths_point_at_values(tree: Any, path: list) -> None:
    for where, value in resolve_path(tree, path):
        assert len(where) == len(path) and None not in where
        node = tree
        for step in where:
            node = node[step]
        assert node == value


# -- with real SD-JWT VCs (ssi.sd_jwt / ssi.sd_jwt_vc) --------------------------------------------

def test_end_to_end_with_real_sd_jwt_vcs() -> None:
    from ssi.jose import Key
    from ssi.sd_jwt import SDJWT, verify_sd_jwt
    from ssi.sd_jwt_vc import issue_sd_jwt_vc

    issuer_key, holder_key = Key.generate("ES256"), Key.generate("ES256")
    claims = {k: v for k, v in ARTHUR.items() if k not in ("vct", "iss")}
    token = issue_sd_jwt_vc(claims, vct=PID, issuer="https://issuer.example.org", key=issuer_key,
                            holder_jwk=holder_key.public_jwk(),
                            disclosable=[("given_name",), ("family_name",), ("birthdate",), ("address", "locality"),
                                         ("address", "street_address"), ("age_equal_or_over", "18"),
                                         ("age_equal_or_over", "65"), ("nationalities", None)])
    credential = SDJWT.parse(token)
    assert isinstance(credential, DCQLCredential) and credential.format == "dc+sd-jwt"
    query = parse_dcql_query(q(cred(claims=[
        {"id": "over18", "path": ["age_equal_or_over", "18"], "values": [True]},
        {"id": "bd", "path": ["birthdate"]},
        {"id": "town", "path": ["address", "locality"]},
    ], claim_sets=[["over18", "town"], ["bd", "town"]])))
    result = evaluate(query, [credential])
    assert result.satisfiable
    [match] = result.matches["pid"]
    assert match.claim_set == ("over18", "town")
    assert {d.value for d in match.disclosures()} == {True, "Milliways"}
    presentation = credential.present(match.paths, holder_key=holder_key, aud="x509_san_dns:v.example", nonce="n1")
    verified = verify_sd_jwt(presentation, issuer_key=issuer_key.public(), expected_aud="x509_san_dns:v.example",
                             expected_nonce="n1")
    # least data: neither the birth date nor the street nor the other predicate was disclosed
    assert "birthdate" not in verified.claims and "street_address" not in verified.claims["address"]
    assert "65" not in verified.claims["age_equal_or_over"]
    assert check_presented(query, {"pid": [verified.claims]}) == []
    # a presentation that withholds the requested claims does not answer the query
    bare = credential.present([], holder_key=holder_key, aud="x509_san_dns:v.example", nonce="n1")
    bare_claims = verify_sd_jwt(bare, issuer_key=issuer_key.public(), expected_aud="x509_san_dns:v.example",
                                expected_nonce="n1").claims
    assert [p.code for p in check_presented(query, {"pid": [bare_claims]})] == ["dcql.no_claim_set_satisfied"]


# -- array indices survive selective disclosure --------------------------------------------------

def test_an_index_takes_the_elements_before_it_along() -> None:
    # The verifier applies ["nationalities", 1] to the presented array, where a withheld element is
    # absent: the wallet discloses nationalities[0] too, so that index 1 is still "Betelgeusian".
    query = parse_dcql_query(q(cred(claims=[{"path": ["nationalities", 1]}])))
    [match] = evaluate(query, wallet()).matches["pid"]
    assert match.paths == (("nationalities", 1), ("nationalities", 0))
    assert match.claims_preview == ((("nationalities", 1), "Betelgeusian"),)
    nested = parse_dcql_query(q(cred(claims=[{"path": ["degrees", 1, "type"]}, {"path": ["nationalities", 0]}])))
    [match] = evaluate(nested, wallet()).matches["pid"]
    assert match.paths == (("degrees", 1, "type"), ("nationalities", 0), ("degrees", 0))
    # null selects every presented element: nothing else is needed
    wildcard = parse_dcql_query(q(cred(claims=[{"path": ["nationalities", None], "values": ["Betelgeusian"]}])))
    assert evaluate(wildcard, wallet()).matches["pid"][0].paths == (("nationalities", 1),)


def test_index_paths_end_to_end_with_real_sd_jwt_vcs() -> None:
    from ssi.jose import Key
    from ssi.sd_jwt import SDJWT, verify_sd_jwt
    from ssi.sd_jwt_vc import issue_sd_jwt_vc

    issuer_key, holder_key = Key.generate("ES256"), Key.generate("ES256")
    claims = {"nationalities": ["ES", "FR", "DE"], "degrees": [{"type": "BSc", "year": 2000},
                                                                {"type": "MSc", "year": 2002}]}
    token = issue_sd_jwt_vc(claims, vct=PID, issuer="https://issuer.example.org", key=issuer_key,
                            holder_jwk=holder_key.public_jwk(),
                            disclosable=[("nationalities", None), ("degrees", None), ("degrees", None, "type"),
                                         ("degrees", None, "year")])
    credential = SDJWT.parse(token)
    for path, values, shown in [(["nationalities", 1], ["FR"], ["ES", "FR"]),
                                (["nationalities", 2], None, ["ES", "FR", "DE"]),
                                (["degrees", 1, "type"], ["MSc"], None)]:
        claim: dict[str, Any] = {"path": path} if values is None else {"path": path, "values": values}
        query = parse_dcql_query(q(cred(claims=[claim])))
        [match] = evaluate(query, [credential]).matches["pid"]
        presentation = credential.present(match.paths, holder_key=holder_key, aud="x509_san_dns:v.example",
                                          nonce="n1")
        verified = verify_sd_jwt(presentation, issuer_key=issuer_key.public(),
                                 expected_aud="x509_san_dns:v.example", expected_nonce="n1")
        assert check_presented(query, {"pid": [verified.claims]}) == [], path
        if shown is not None:
            assert verified.claims["nationalities"] == shown
        else:
            assert [d["type"] for d in verified.claims["degrees"]] == ["BSc", "MSc"]


# -- trusted_authorities (OpenID4VP 1.0 §6.1.1) ----------------------------------------------------

def test_trusted_authorities_aki_selects_credentials_by_their_certificate_chain() -> None:
    from cryptography import x509 as cx509

    from ssi import x509 as ssi_x509
    from ssi.encoding import b64url_encode
    from ssi.jose import Key
    from ssi.sd_jwt import SDJWT
    from ssi.sd_jwt_vc import issue_sd_jwt_vc

    def ski(ca: Any) -> str:
        return b64url_encode(ca.extensions.get_extension_for_class(cx509.SubjectKeyIdentifier).value.digest)

    _root_key, root = ssi_x509.create_ca("Root")
    mid_key, mid = ssi_x509.create_ca("Intermediate")
    other_key, other = ssi_x509.create_ca("Other root")
    holder = Key.generate("ES256").public_jwk()

    def held(ca_key: Key, ca: Any, chain_above: list) -> SDJWT:
        key = Key.generate("ES256")
        leaf = ssi_x509.issue_certificate(ca_key, ca, key, "Issuer", san_uris=["https://issuer.example.org"])
        return SDJWT.parse(issue_sd_jwt_vc({"given_name": "Arthur"}, vct=PID, issuer="https://issuer.example.org",
                                           key=key, holder_jwk=holder, disclosable=[("given_name",)],
                                           x5c=ssi_x509.x5c_from_chain([leaf, *chain_above])))

    # A chain leaf <- intermediate (the intermediate here is self-signed: only the AKIs matter).
    under_mid = held(mid_key, mid, [mid])
    under_other = held(other_key, other, [])
    no_x5c = SDJWT.parse(issue_sd_jwt_vc({"given_name": "Arthur"}, vct=PID, issuer="https://issuer.example.org",
                                         key=Key.generate("ES256"), holder_jwk=holder, disclosable=[("given_name",)]))
    assert ssi_x509.authority_key_identifiers(under_mid.header["x5c"]) == {ski(mid)}

    def matching(*authorities: dict) -> list[Any]:
        query = parse_dcql_query(q(cred(claims=[{"path": ["given_name"]}], trusted_authorities=list(authorities))))
        result = evaluate(query, [under_mid, under_other, no_x5c])
        return [m.credential for m in result.matches["pid"]] or [result.unsatisfied["pid"]]

    assert matching({"type": "aki", "values": [ski(mid)]}) == [under_mid]
    assert matching({"type": "aki", "values": [ski(root), ski(other)]}) == [under_other]
    assert matching({"type": "aki", "values": [ski(root)]}) == ["untrusted_authority"]
    # Types a wallet cannot decide from the credential never match, even beside a matching one.
    assert matching({"type": "etsi_tl", "values": ["https://tl.example.eu"]}) == ["untrusted_authority"]
    assert matching({"type": "etsi_tl", "values": ["x"]}, {"type": "aki", "values": [ski(other)]}) == [under_other]
    # Without trusted_authorities the chain does not matter.
    assert len(evaluate(parse_dcql_query(q(cred(claims=[{"path": ["given_name"]}]))),
                        [under_mid, under_other, no_x5c]).matches["pid"]) == 3
