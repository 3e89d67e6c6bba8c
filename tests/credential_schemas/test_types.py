"""Built-in credential types, the validator and the declarative mapping."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credential_schemas import (
    ClaimsInvalid,
    MappingError,
    SchemaError,
    load_builtin_types,
    load_type,
    validate_type_definition,
)
from credential_schemas.mapping import Duration, evaluate
from sandbox.population import generate_population
from sandbox.viaoberta_service import registry_data
from viaoberta.products import DEGREES, PADRO, TAX, WORKING_LIFE

NOW = dt.datetime(2026, 3, 20, 9, 30, tzinfo=dt.UTC)
TODAY = NOW.date()
TYPES = load_builtin_types()
PRODUCT_OF = {"tax-compliance": TAX, "university-diploma": DEGREES, "padro": PADRO, "working-life": WORKING_LIFE}


def record_for(type_id: str, citizen, population) -> dict:
    data = registry_data(citizen, PRODUCT_OF[type_id], population, today=TODAY)
    if type_id == "university-diploma":
        data = dict(data)
        data["DatosTitulacion"] = data.pop("ListaTitulos")["DatosTitulacion"][0]
    data["subject"] = {"identifier": citizen.identifier, "identifierType": citizen.identifier_type,
                       "name": citizen.full_name, "birthDate": citizen.birth_date.isoformat()}
    return data


def test_the_four_builtin_types_load() -> None:
    assert set(TYPES) == {"university-diploma", "tax-compliance", "padro", "working-life"}
    for ctype in TYPES.values():
        assert ctype.vct.startswith("https://")
        assert {d["locale"] for d in ctype.display} >= {"ca", "es", "en"}
        assert validate_type_definition(ctype.definition) == []


@pytest.mark.parametrize("type_id", sorted(PRODUCT_OF))
def test_every_sandbox_citizen_with_data_maps_to_valid_claims(type_id: str) -> None:
    population = generate_population(size=1000)
    ctype = TYPES[type_id]
    holders = [c for c in population.citizens if PRODUCT_OF[type_id].codigo_certificado in c.products]
    assert len(holders) > 50
    for citizen in holders:
        claims = ctype.map_claims(record_for(type_id, citizen, population), now=NOW)
        assert ctype.validate_claims(claims) == []
        for path in ctype.mandatory_paths():
            assert path[0] in claims


def test_demo_citizen_claims_are_exact() -> None:
    population = generate_population(size=10)
    montse = population.get("12345678Z")
    diploma = TYPES["university-diploma"].map_claims(record_for("university-diploma", montse, population), now=NOW)
    assert diploma["title"].startswith("Graduat o Graduada en Dret") and diploma["completionDate"] == "2003-06-27"
    assert diploma["awardingBody"] == "Universitat de Barcelona" and diploma["eqfLevel"] == 6
    assert diploma["birthDate"] == "1980-04-12" and diploma["registrationNumber"] == "2003/081234"
    jordi = population.get("23456789D")
    tax = TYPES["tax-compliance"].map_claims(record_for("tax-compliance", jordi, population), now=NOW)
    assert tax["complianceStatus"] == "NEGATIVE" and tax["negativeCause"]["code"] == "01"
    assert tax["purpose"] == "ECOT103" and tax["validUntil"] > tax["issuedAt"]
    padro = TYPES["padro"].map_claims(record_for("padro", montse, population), now=NOW)
    assert padro["householdSize"] == 2 and len(padro["householdMembers"]) == 2
    assert padro["registeredSince"] == "2010-03-01" and padro["address"]["postalCode"] == "08036"


def test_metadata_document_and_integrity() -> None:
    ctype = TYPES["padro"]
    doc = ctype.type_metadata()
    assert doc["vct"] == ctype.vct and doc["name"]
    assert all({"path", "display", "sd", "mandatory"} <= set(c) for c in doc["claims"])
    assert {"locale", "label"} <= set(doc["claims"][0]["display"][0])
    raw = ctype.type_metadata_bytes()
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    expected = "sha256-" + base64.b64encode(hashlib.sha256(raw).digest()).decode()
    assert ctype.type_metadata_integrity() == expected
    moved = ctype.with_vct("https://issuer.example/types/padro")
    assert moved.type_metadata_integrity() != expected and moved.vct == "https://issuer.example/types/padro"


def test_disclosable_paths_per_element_and_per_predicate() -> None:
    paths = TYPES["padro"].disclosable_paths()
    assert ("householdMembers", None) in paths and ("age_equal_or_over", "18") in paths
    assert ("age_equal_or_over", "65") in paths and ("municipality", "code") not in paths
    tax_paths = TYPES["tax-compliance"].disclosable_paths()
    assert ("issuedAt",) not in tax_paths and ("purpose",) not in tax_paths
    assert ("complianceStatus",) in tax_paths


def test_validity_and_display() -> None:
    assert TYPES["university-diploma"].validity == dt.timedelta(days=5 * 365)
    assert TYPES["padro"].validity == dt.timedelta(days=90)
    assert TYPES["padro"].expires_at(dt.datetime(2026, 11, 30, tzinfo=dt.UTC)) == dt.datetime(2027, 2, 28, tzinfo=dt.UTC)
    assert TYPES["padro"].display_for("ca-ES")["name"] == "Volant d'empadronament"
    assert TYPES["padro"].display_for("fr")["locale"] == "en"
    assert TYPES["padro"].claim_label(("householdSize",), "es") == "Número de personas en el domicilio"


def test_missing_mandatory_source_field_is_named() -> None:
    population = generate_population(size=10)
    record = record_for("university-diploma", population.get("12345678Z"), population)
    del record["DatosTitulacion"]["DatosTitulo"]["NumTitulo"]
    with pytest.raises(MappingError) as info:
        TYPES["university-diploma"].map_claims(record, now=NOW)
    assert info.value.code == "credential_schema.missing_source_field"
    assert info.value.field == "DatosTitulacion.DatosTitulo.NumTitulo" and info.value.claim == "/registrationNumber"


def test_bad_source_values_are_typed_errors_without_values() -> None:
    population = generate_population(size=10)
    record = record_for("university-diploma", population.get("12345678Z"), population)
    record["DatosTitulacion"]["DatosTitulo"]["FechaExpedicion"] = "SECRET-VALUE"
    with pytest.raises(MappingError) as info:
        TYPES["university-diploma"].map_claims(record, now=NOW)
    assert info.value.code == "credential_schema.bad_source_value" and "SECRET-VALUE" not in str(info.value)
    record = record_for("university-diploma", population.get("12345678Z"), population)
    record["DatosTitulacion"]["DatosTitulo"]["CodTipoTitulo"] = "ZZ"
    with pytest.raises(MappingError) as info:
        TYPES["university-diploma"].map_claims(record, now=NOW)
    assert info.value.code == "credential_schema.unmapped_code"


def test_schema_violations_are_reported_without_values() -> None:
    population = generate_population(size=10)
    record = record_for("university-diploma", population.get("12345678Z"), population)
    record["DatosTitulacion"]["DatosTitulo"]["CodTitulacion"] = "SECRET"
    with pytest.raises(ClaimsInvalid) as info:
        TYPES["university-diploma"].map_claims(record, now=NOW)
    assert info.value.problems[0].path == "/qualificationCode" and "SECRET" not in str(info.value)


# ----------------------------------------------------------------------------- broken definitions

def base() -> dict:
    return copy.deepcopy(TYPES["tax-compliance"].definition)


def _set(data: dict, dotted: str, value) -> dict:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


_DELETE = object()
CLAIM_STATUS = 2  # index of complianceStatus in tax-compliance claims


BROKEN = [
    ("vct", "http://types.example/x", "vct", "https URL"),
    ("vct", _DELETE, "vct", "vct is required"),
    ("validity", "five years", "validity", "ISO 8601 duration"),
    ("validity", "P0D", "validity", "ISO 8601 duration"),
    ("schema.type", "objekt", "schema.type", "not a valid JSON Schema"),
    ("schema.properties.nif.type", 12, "schema.properties.nif.type", "not a valid JSON Schema"),
    (f"claims.{CLAIM_STATUS}.sd", "sometimes", f"claims[{CLAIM_STATUS}].sd", "sd must be"),
    (f"claims.{CLAIM_STATUS}.path", ["nowhere"], f"claims[{CLAIM_STATUS}].path", "is not in the schema"),
    (f"claims.{CLAIM_STATUS}.path", [], f"claims[{CLAIM_STATUS}].path", "non-empty list"),
    (f"claims.{CLAIM_STATUS}.display.1", _DELETE, f"claims[{CLAIM_STATUS}].display", "locale 'es'"),
    (f"claims.{CLAIM_STATUS}.display.0.label", "", f"claims[{CLAIM_STATUS}].display[0].label", "label is required"),
    (f"claims.{CLAIM_STATUS}.source", _DELETE, "schema.properties.complianceStatus", "no source mapping"),
    (f"claims.{CLAIM_STATUS}.source.transform", ["upper", "explode"], f"claims[{CLAIM_STATUS}].source.transform",
     "unknown transform 'explode'"),
    (f"claims.{CLAIM_STATUS}.source.field", "a..b", f"claims[{CLAIM_STATUS}].source.field", "malformed"),
    (f"claims.{CLAIM_STATUS}.mandatory", "yes", f"claims[{CLAIM_STATUS}].mandatory", "true or false"),
    ("display.2", _DELETE, "display", "locale 'en'"),
    ("display.0.locale", "es", "display[1].locale", "appears twice"),
    ("id", "has spaces", "id", "id is required"),
    ("colour", "red", "colour", "unknown top-level member"),
    ("schema.properties._sd", {"type": "string"}, "schema.properties._sd", "reserved"),
]


@pytest.mark.parametrize(("where", "value", "path", "message"), BROKEN,
                         ids=[f"{w}={v if v is not _DELETE else 'deleted'}" for w, v, _, _ in BROKEN])
def test_broken_definitions_are_rejected_with_their_path(where: str, value, path: str, message: str) -> None:
    data = _set(base(), where, value)
    problems = validate_type_definition(data)
    assert any(p.path == path and message in p.message for p in problems), problems
    with pytest.raises(SchemaError) as info:
        load_type(data)
    assert info.value.code == "credential_schema.invalid_type_definition"
    assert info.value.problems == problems


@pytest.mark.parametrize("registered", ["iss", "exp", "nbf", "cnf", "status", "vct"])
def test_registered_claims_can_never_be_disclosable(registered: str) -> None:
    data = base()
    data["claims"].append({"path": [registered], "sd": "always",
                           "display": [{"locale": loc, "label": "x"} for loc in ("ca", "es", "en")]})
    problems = validate_type_definition(data)
    assert any(p.path == f"claims[{len(data['claims']) - 1}].sd" and "never" in p.message for p in problems)
    data["claims"][-1]["sd"] = "allowed"  # the draft's default is also refused
    assert validate_type_definition(data)
    data["claims"][-1]["sd"] = "never"
    assert validate_type_definition(data) == []


def test_every_problem_is_reported_not_just_the_first() -> None:
    data = base()
    data["vct"] = "http://x"
    data["validity"] = "soon"
    data["claims"][0]["sd"] = "maybe"
    del data["display"][0]
    paths = {p.path for p in validate_type_definition(data)}
    assert {"vct", "validity", "claims[0].sd", "display"} <= paths


@given(st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.sampled_from(["id", "vct", "claims", "schema", "display", "validity"]),
                                 st.one_of(st.none(), st.integers(), st.text(max_size=10),
                                           st.lists(st.one_of(st.none(), st.text(max_size=5), st.dictionaries(
                                               st.sampled_from(["path", "sd", "display", "source"]),
                                               st.one_of(st.none(), st.text(max_size=5),
                                                         st.lists(st.text(max_size=3), max_size=3))),
                                           ), max_size=3),
                                           st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)),
                                 max_size=6)))
@settings(max_examples=200, deadline=None)
def test_validator_never_raises_on_arbitrary_input(data) -> None:
    problems = validate_type_definition(data)
    assert problems and all(isinstance(p.path, str) and p.message for p in problems)


def test_load_type_from_files(tmp_path) -> None:
    good = tmp_path / "t.json"
    good.write_text(json.dumps(base()), encoding="utf-8")
    assert load_type(good).id == "tax-compliance"
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed", encoding="utf-8")
    with pytest.raises(SchemaError):
        load_type(bad)
    with pytest.raises(SchemaError):
        load_type(tmp_path / "missing.yaml")


def test_mapping_primitives() -> None:
    record = {"a": {"b": [{"c": "x"}, {"c": "y"}], "one": {"c": "z"}, "d": "19991231", "e": ""}}
    assert evaluate("a.b[].c", record, now=NOW) == ["x", "y"]
    assert evaluate("a.one[].c", record, now=NOW) == ["z"]  # a single element counts as a list
    assert evaluate("a.b[1].c", record, now=NOW) == "y"
    assert evaluate({"field": "a.d", "transform": "date_yyyymmdd"}, record, now=NOW) == "1999-12-31"
    assert evaluate({"field": "a.d", "transform": "age_equal_or_over", "thresholds": [18, 30]}, record,
                    now=NOW) == {"18": True, "30": False}
    assert evaluate({"field": "a.e", "default": "-"}, record, now=NOW) == "-"
    assert evaluate({"now": "date", "offset": "P1M"}, record, now=NOW) == "2026-04-20"
    assert evaluate({"field": "a.b[]", "transform": "count"}, record, now=NOW) == 2
    assert Duration("P1Y").add_to(dt.date(2024, 2, 29)) == dt.date(2025, 2, 28)
    with pytest.raises(MappingError):
        Duration("PT")


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2026, 3, 20)))
@settings(max_examples=200, deadline=None)
def test_age_predicates_agree_with_calendar_age(birth: dt.date) -> None:
    result = evaluate({"field": "b", "transform": "age_equal_or_over", "thresholds": [18, 65]},
                      {"b": birth.strftime("%Y%m%d")}, now=NOW)
    for years, flag in ((18, result["18"]), (65, result["65"])):
        try:
            birthday = birth.replace(year=birth.year + years)
        except ValueError:  # 29 February: the birthday is 1 March in common years
            birthday = dt.date(birth.year + years, 3, 1)
        assert flag == (birthday <= TODAY)


# ----------------------------------------------------------------------------- the compiled fast path

def _python_only(ctype):
    slow = copy.copy(ctype)
    slow.__dict__["_claims_accepted"] = None  # the cached_property's slot: no compiled check
    return slow


_JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False),
                         st.text(max_size=12), st.sampled_from(["2026-03-20", "2026-02-30", "20260320", "12345678Z",
                                                                "12345678Z\n", "X1234567L", "POSITIVE", "", "0"]))
_JSON = st.recursive(_JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _valid_claims() -> dict[str, list[dict]]:
    population = generate_population(size=200)
    out = {}
    for type_id, product in PRODUCT_OF.items():
        holders = [c for c in population.citizens if product.codigo_certificado in c.products][:5]
        out[type_id] = [TYPES[type_id].map_claims(record_for(type_id, c, population), now=NOW) for c in holders]
    return out


VALID_CLAIMS = _valid_claims()


@given(st.sampled_from(sorted(PRODUCT_OF)), st.integers(0, 4), st.lists(
    st.tuples(st.sampled_from(["replace", "delete", "add", "nested"]), st.integers(0, 50), _JSON), max_size=4))
@settings(max_examples=400, deadline=None)
def test_compiled_check_never_accepts_what_jsonschema_refuses(type_id: str, which: int, edits) -> None:
    """The Rust validator answers only "valid"; the problems must be exactly the Python validator's."""
    ctype = TYPES[type_id]
    claims = copy.deepcopy(VALID_CLAIMS[type_id][which % len(VALID_CLAIMS[type_id])])
    for action, pick, value in edits:
        keys = sorted(claims)
        key = keys[pick % len(keys)] if keys else "x"
        if action == "replace":
            claims[key] = value
        elif action == "delete":
            claims.pop(key, None)
        elif action == "add":
            claims[f"extra{pick}"] = value
        elif isinstance(claims.get(key), dict) and claims[key]:
            inner = sorted(claims[key])
            claims[key][inner[pick % len(inner)]] = value
        elif isinstance(claims.get(key), list) and claims[key]:
            claims[key][pick % len(claims[key])] = value
    assert ctype.validate_claims(claims) == _python_only(ctype).validate_claims(claims)


def test_compiled_check_is_used_and_a_pattern_it_cannot_take_is_refused() -> None:
    ctype = TYPES["tax-compliance"]
    assert ctype._claims_accepted is not None
    assert ctype._claims_accepted(VALID_CLAIMS["tax-compliance"][0])
    definition = copy.deepcopy(ctype.definition)
    # \\Z is Python's end-of-text: the linear-time engine does not read it, and Python's re never runs
    # a registered pattern, so the definition is refused rather than validated by jsonschema alone.
    definition["schema"]["properties"]["aeatReference"]["pattern"] = "^ECOT103[0-9A-Z]+\\Z"
    problems = validate_type_definition(definition)
    assert [p.path for p in problems] == ["schema.properties.aeatReference.pattern"]
    claims = dict(VALID_CLAIMS["tax-compliance"][0])
    claims["nif"] = "1234567"  # the Python wording of a pattern failure, matched by the linear-time engine
    assert [p.path for p in _python_only(ctype).validate_claims(claims)] == ["/nif"]


@pytest.mark.parametrize("ref", ["http://127.0.0.1:9/never-fetched.json", "#/$defs/missing", "other.json"])
def test_a_reference_outside_the_schema_is_refused_at_registration(ref: str) -> None:
    definition = copy.deepcopy(TYPES["tax-compliance"].definition)
    definition["schema"]["properties"]["purpose"] = {"$ref": ref}
    problems = validate_type_definition(definition)
    assert [p.path for p in problems] == ["schema"] and "$ref" in problems[0].message
    with pytest.raises(SchemaError):
        load_type(definition)


def test_a_reference_within_the_schema_is_allowed() -> None:
    definition = copy.deepcopy(TYPES["tax-compliance"].definition)
    definition["schema"]["$defs"] = {"purpose": {"type": "string", "const": "ECOT103"}}
    definition["schema"]["properties"]["purpose"] = {"$ref": "#/$defs/purpose"}
    ctype = load_type(definition)
    assert ctype._claims_accepted is not None and ctype.validate_claims(VALID_CLAIMS["tax-compliance"][0]) == []
