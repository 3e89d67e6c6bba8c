"""Definitions a tenant registers through the issuer: what is refused at registration so that nothing
registered can freeze the issuer or fail every issuance later."""

from __future__ import annotations

import copy
import datetime as dt
import re

import pytest

from credential_schemas import (
    MappingError,
    SchemaError,
    load_builtin_types,
    load_type,
    validate_type_definition,
)
from credential_schemas.mapping import evaluate

TYPES = load_builtin_types()
NOW = dt.datetime(2026, 3, 20, 9, 30, tzinfo=dt.UTC)


def _labels(text: str) -> list[dict[str, str]]:
    return [{"locale": loc, "label": text} for loc in ("ca", "es", "en")]


def tenant_type(props: dict | None = None, claims: list | None = None, **top) -> dict:
    """A minimal tenant definition: one ``name`` claim read from the offer's subject."""
    definition = {
        "id": "t1", "version": "1", "vct": "https://issuer.example/t/ta/types/t1", "name": "T",
        "display": [{"locale": loc, "name": "T"} for loc in ("ca", "es", "en")],
        "validity": "P1Y",
        "schema": {"type": "object", "properties": props or {"name": {"type": "string"}}},
        "claims": claims or [{"path": ["name"], "display": _labels("Name"), "source": "subject.name"}],
    }
    definition.update(top)
    return definition


# ----------------------------------------------------------------------------- patterns (ReDoS)

@pytest.fixture
def no_backtracking_on(monkeypatch):
    """Fails the test if Python's ``re`` is asked to search with one of the given patterns."""
    guarded: set[str] = set()
    real_search = re.search

    def search(pattern, string, flags=0):
        assert pattern not in guarded and not any(g in str(pattern) for g in guarded), \
            "a tenant pattern reached Python's backtracking re"
        return real_search(pattern, string, flags)

    monkeypatch.setattr(re, "search", search)
    return guarded


def test_a_catastrophic_pattern_is_answered_without_python_re(no_backtracking_on) -> None:
    evil = "^(a+)+$"
    no_backtracking_on.add(evil)
    ctype = load_type(tenant_type({"name": {"type": "string", "pattern": evil},
                                   "tags": {"type": "object", "patternProperties": {evil: {"type": "string"}},
                                            "additionalProperties": False}},
                                  claims=[{"path": ["name"], "display": _labels("N"), "source": "subject.name"},
                                          {"path": ["tags"], "display": _labels("T"), "source": "tags"}]))
    # 40 characters: with backtracking, 2^40 steps.
    problems = ctype.validate_claims({"name": "a" * 40 + "!", "tags": {"a" * 40 + "!": "x"}})
    assert [(p.path, p.message.split(" (")[0]) for p in problems] == [
        ("/name", "fails 'pattern'"), ("/tags", "'" + "a" * 40 + "!' does not match any of the regexes: '^(a+)+$'")]
    assert ctype.validate_claims({"name": "aaaa", "tags": {"aaa": "x"}}) == []
    assert [p.path for p in ctype.validate_claims({"name": "aaaa", "tags": {"aaa": 1}})] == ["/tags/aaa"]


@pytest.mark.parametrize(("pattern", "why"), [
    ("^(?=a)b$", "linear-time"),       # lookahead
    ("^(a)\\1$", "linear-time"),       # backreference
    ("^x\\Z", "linear-time"),          # Python-only syntax
    ("(a{1000}){1000}", "linear-time"),  # compiles to more than the size limit
    ("a" * 257, "at most 256"),
])
def test_a_pattern_the_linear_engine_cannot_take_is_refused(pattern: str, why: str) -> None:
    problems = validate_type_definition(tenant_type({"name": {"type": "string", "pattern": pattern}}))
    assert [p.path for p in problems] == ["schema.properties.name.pattern"] and why in problems[0].message
    in_defs = tenant_type({"name": {"$ref": "#/$defs/n"}})
    in_defs["schema"]["$defs"] = {"n": {"type": "object", "patternProperties": {pattern: {}}}}
    problems = validate_type_definition(in_defs)
    assert [p.path for p in problems] == ["schema.$defs.n.patternProperties"]


def test_pattern_properties_with_unevaluated_properties_is_refused() -> None:
    problems = validate_type_definition(tenant_type({"name": {
        "type": "object", "patternProperties": {"^a": {}}, "unevaluatedProperties": False}}))
    assert any("unevaluatedProperties" in p.message for p in problems)


def test_builtin_patterns_still_validate() -> None:
    for ctype in TYPES.values():
        assert validate_type_definition(copy.deepcopy(ctype.definition)) == []


# ----------------------------------------------------------------------------- size of the schema

def _ref_bomb(k: int, depth: int) -> dict:
    """Each level's k properties all reference the next level: k ** depth claim paths from ~2 KB."""
    defs = {f"d{i}": {"type": "object", "properties": {f"p{j}": {"$ref": f"#/$defs/d{i + 1}"} for j in range(k)}}
            for i in range(depth)}
    defs[f"d{depth}"] = {"type": "string"}
    definition = tenant_type({"name": {"$ref": "#/$defs/d0"}})
    definition["schema"]["$defs"] = defs
    return definition


def test_a_reference_bomb_is_refused_at_registration() -> None:
    problems = validate_type_definition(_ref_bomb(2, 12))  # 4,096 paths
    assert [p.path for p in problems] == ["schema"] and "more than 2000 claim paths" in problems[0].message
    problems = validate_type_definition(_ref_bomb(10, 15))  # 10 ** 15 paths, 6 KB
    assert [p.path for p in problems] == ["schema"]


def test_a_recursive_reference_is_refused() -> None:
    definition = tenant_type({"name": {"$ref": "#/$defs/node"}})
    definition["schema"]["$defs"] = {"node": {"type": "object", "properties": {
        "label": {"type": "string"}, "child": {"$ref": "#/$defs/node"}}}}
    problems = validate_type_definition(definition)
    assert any(p.path == "schema" and "recursive" in p.message for p in problems), problems


def test_a_reference_used_twice_without_recursion_is_fine() -> None:
    definition = tenant_type({"home": {"$ref": "#/$defs/addr"}, "work": {"$ref": "#/$defs/addr"}}, claims=[
        {"path": [where], "display": _labels(where), "source": {"field": where}} for where in ("home", "work")])
    definition["schema"]["$defs"] = {"addr": {"type": "object", "properties": {"street": {"type": "string"}}}}
    assert validate_type_definition(definition) == []


def test_an_oversized_or_deeply_nested_definition_is_refused_without_raising() -> None:
    node: dict = {"type": "string"}
    for _ in range(400):
        node = {"not": node}
    problems = validate_type_definition(tenant_type({"name": node}))
    assert [p.path for p in problems] == [""] and "nested" in problems[0].message
    big = tenant_type(description="x" * 200_000)
    assert [p.message for p in validate_type_definition(big)] == ["the definition is larger than 128 KiB"]


# ----------------------------------------------------------------------------- accepted, then failing at issuance

def test_durations_are_bounded_to_a_hundred_years() -> None:
    problems = validate_type_definition(tenant_type(validity="P99999999999Y"))
    assert [p.path for p in problems] == ["validity"] and "100 years" in problems[0].message
    problems = validate_type_definition(tenant_type(validity="P99999999999W"))  # timedelta overflow
    assert [p.path for p in problems] == ["validity"]
    offset = tenant_type(claims=[{"path": ["name"], "display": _labels("N"),
                                  "source": {"now": "date", "offset": "P9999Y"}}])
    problems = validate_type_definition(offset)
    assert [(p.path, p.message) for p in problems] == [("claims[0].source.offset", "a duration may be at most 100 years")]
    assert validate_type_definition(tenant_type(validity="P100Y")) == []


def test_an_offset_past_year_9999_is_a_mapping_error() -> None:
    with pytest.raises(MappingError) as info:
        evaluate({"field": "d", "offset": "P1Y"}, {"d": "99990601"}, now=NOW)
    assert info.value.code == "credential_schema.bad_source_value" and "9999" not in info.value.detail


def test_a_mapped_claim_inside_another_mapped_claim_is_refused() -> None:
    definition = tenant_type(
        {"name": {"type": "string"}, "address": {"type": "object", "properties": {"street": {"type": "string"}}}},
        claims=[{"path": ["name"], "display": _labels("N"), "source": "subject.name"},
                {"path": ["address"], "display": _labels("A"), "source": "addr"},
                {"path": ["address", "street"], "display": _labels("S"), "source": "street"}])
    problems = validate_type_definition(definition)
    assert [p.path for p in problems] == ["claims[2].source"] and "claims[1]" in problems[0].message


def test_a_mapping_into_an_array_element_is_refused() -> None:
    definition = tenant_type({"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
                             claims=[{"path": ["name"], "display": _labels("N"), "source": "subject.name"},
                                     {"path": ["tags", None], "display": _labels("T"), "source": "tag"}])
    assert "claims[1].source" in [p.path for p in validate_type_definition(definition)]


def test_a_transform_that_is_not_a_name_is_refused_without_raising() -> None:
    definition = tenant_type(claims=[{"path": ["name"], "display": _labels("N"),
                                      "source": {"const": "x", "transform": [["a"], {"b": 1}]}}])
    problems = validate_type_definition(definition)
    assert [p.path for p in problems] == ["claims[0].source.transform"]


@pytest.mark.parametrize(("member", "value"), [("id", "x" * 101), ("version", "9" * 41),
                                               ("vct", "https://issuer.example/" + "v" * 480)])
def test_members_longer_than_the_issuers_columns_are_refused(member: str, value: str) -> None:
    problems = validate_type_definition(tenant_type(**{member: value}))
    assert [p.path for p in problems] == [member] and "at most" in problems[0].message


def test_load_type_refuses_a_deeply_nested_dict_without_raising() -> None:
    node: dict = {"type": "string"}
    for _ in range(3000):
        node = {"not": node}
    with pytest.raises(SchemaError):
        load_type(tenant_type({"name": node}))


# ----------------------------------------------------------------------------- registered claims

@pytest.mark.parametrize(("path", "sd"), [(["cnf", "jwk"], "allowed"), (["status", "status_list"], "always"),
                                          (["status", "status_list"], "never"), (["vct", 0], "never")])
def test_no_claim_can_be_inside_a_registered_claim(path: list, sd: str) -> None:
    definition = tenant_type(claims=[{"path": ["name"], "display": _labels("N"), "source": "subject.name"},
                                     {"path": path, "sd": sd, "display": _labels("X"), "source": "evil"}])
    problems = validate_type_definition(definition)
    assert any(p.path == "claims[1].path" and "set by the issuer" in p.message for p in problems), problems
    del definition["claims"][1]["source"]
    assert any(p.path == "claims[1].path" for p in validate_type_definition(definition))


@pytest.mark.parametrize(("required", "message"), [(["name", "status"], "'status' is set by the issuer"),
                                                   (["name", "nickname"], "'nickname' is not a property")])
def test_required_names_only_mapped_properties(required: list, message: str) -> None:
    definition = tenant_type({"name": {"type": "string"}, "status": {"type": "object"}})
    definition["schema"]["required"] = required
    problems = validate_type_definition(definition)
    assert [p.path for p in problems] == ["schema.required"] and message in problems[0].message


def _nested_type(address_required: list, item_required: list) -> dict:
    props = {
        "address": {"type": "object", "properties": {"street": {"type": "string"}}, "required": address_required},
        "degrees": {"type": "array", "items": {"$ref": "#/$defs/degree"}},
    }
    claims = [{"path": ["address"], "display": _labels("Address"), "source": "subject.address"},
              {"path": ["degrees"], "display": _labels("Degrees"), "source": "subject.degrees"}]
    definition = tenant_type(props, claims)
    definition["schema"]["$defs"] = {"degree": {"type": "object", "properties": {"title": {"type": "string"}},
                                                "required": item_required}}
    return definition


def test_a_nested_required_name_must_be_a_property_of_its_object() -> None:
    # Undeclared, it has no mapping and no display: every issuance of the type would be refused.
    assert validate_type_definition(_nested_type(["street"], ["title"])) == []
    problems = validate_type_definition(_nested_type(["street", "postcode"], ["title", "year"]))
    assert [(p.path, p.message) for p in problems] == [
        ("schema.properties.address.required", "'postcode' is not a property of /address"),
        ("schema.properties.degrees.*.required", "'year' is not a property of /degrees/*"),
    ]
