"""A credential type's texts are shown to citizens by wallets: its name and description, each display
entry's name and description, each claim's label and description, a logo's ``alt_text``. The
validator refuses one holding a control character (``ssi.names.display_text``: a line break, tab,
ESC, C1, U+2028/U+2029, a bidirectional control such as U+202E, which makes the card read otherwise
than what the issuer registered) as it refuses any other problem, with its path and a message that
never quotes the text; a required text with nothing to read too. Every built-in type still
validates, and a definition stored before this rule is still loaded."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from credential_schemas import SchemaError, load_builtin_types, load_type, validate_type_definition
from credential_schemas.model import TYPES_DIR
from issuer.registry import load_stored_type
from tests.credential_schemas.test_tenant_definitions import tenant_type

CONTROL = [
    pytest.param("Volant\nd'empadronament", id="LF"),
    pytest.param("Volant\r\nd'empadronament", id="CRLF"),
    pytest.param("Volant\td'empadronament", id="TAB"),
    pytest.param("Volant \x1b[2J", id="ESC"),
    pytest.param("Volant\x00", id="NUL"),
    pytest.param("Volant\x7f", id="DEL"),
    pytest.param("Volant \x85 d'empadronament", id="NEL"),
    pytest.param("Volant \u2028 d'empadronament", id="line-separator"),
    pytest.param("Certificat \u202e(caducat)", id="RLO"),
    pytest.param("Certificat \u202d(vàlid)", id="LRO"),
    pytest.param("Certificat \u2066x\u2069", id="LRI-PDI"),
    pytest.param("Certificat \u200e", id="LRM"),
    pytest.param("Certificat \u061c", id="ALM"),
]


def _with_logo(definition: dict[str, Any]) -> dict[str, Any]:
    for entry in definition["display"]:
        entry["rendering"] = {"simple": {"logo": {"uri": "https://issuer.example/logo.png", "alt_text": "Escut"}}}
    return definition


def _claims_with_descriptions(definition: dict[str, Any]) -> dict[str, Any]:
    for entry in definition["claims"][0]["display"]:
        entry["description"] = "Com consta al padró"
    return definition


#: Where a text shown to citizens sits: (path as the validator reports it, how to put ``text`` there).
PLACES = {
    "name": lambda d, t: d.update(name=t),
    "description": lambda d, t: d.update(description=t),
    "display[0].name": lambda d, t: d["display"][0].update(name=t),
    "display[2].description": lambda d, t: d["display"][2].update(description=t),
    "display[1].rendering.simple.logo.alt_text":
        lambda d, t: _with_logo(d)["display"][1]["rendering"]["simple"]["logo"].update(alt_text=t),
    "claims[0].display[1].label": lambda d, t: d["claims"][0]["display"][1].update(label=t),
    "claims[0].display[2].description":
        lambda d, t: _claims_with_descriptions(d)["claims"][0]["display"][2].update(description=t),
}


def _placed(where: str, text: str) -> dict[str, Any]:
    definition = tenant_type()
    PLACES[where](definition, text)
    return definition


def test_every_built_in_type_validates() -> None:
    files = sorted(TYPES_DIR.glob("*.yaml"))
    assert len(files) == len(load_builtin_types()) >= 4
    for path in files:
        assert load_type(path).id == path.stem
        assert validate_type_definition(load_type(path).definition) == [], path.name


@pytest.mark.parametrize("where", list(PLACES))
@pytest.mark.parametrize("text", CONTROL)
def test_a_text_with_a_control_character_is_a_problem_at_its_path(where: str, text: str) -> None:
    definition = _placed(where, text)
    problems = validate_type_definition(definition)
    assert [p.path for p in problems] == [where], problems
    member = where.rsplit(".", 1)[-1]
    assert problems[0].message.startswith(f"{member} holds a control character")
    assert text not in problems[0].message and text.strip() not in str(problems[0])
    with pytest.raises(SchemaError) as caught:
        load_type(definition)
    assert text not in caught.value.detail


@pytest.mark.parametrize("where", ["name", "display[0].name", "claims[0].display[1].label"])
def test_a_required_text_with_nothing_to_read_is_a_problem(where: str) -> None:
    problems = validate_type_definition(_placed(where, "\u200b\u2060"))
    assert [(p.path, p.message) for p in problems] == [
        (where, f"{where.rsplit('.', 1)[-1]} has nothing to read (it is empty, or only spaces and invisible "
                "characters)")]
    # A blank one is "required", as before.
    assert [(p.path, p.message) for p in validate_type_definition(_placed(where, "  "))] == [
        (where, f"{where.rsplit('.', 1)[-1]} is required")]


@pytest.mark.parametrize("where", ["description", "display[2].description", "claims[0].display[2].description",
                                   "display[1].rendering.simple.logo.alt_text"])
def test_an_optional_text_may_still_be_empty(where: str) -> None:
    assert validate_type_definition(_placed(where, "")) == []


@pytest.mark.parametrize("text", [
    "Certificat d'estar al corrent d'obligacions tributàries (AEAT) · 2026",
    "  Volant d'empadronament ",
    "شهادة القيد في السجل البلدي",
    "Família \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "e\u0301cole, niño",
])
@pytest.mark.parametrize("where", list(PLACES))
def test_real_texts_are_accepted_as_written(where: str, text: str) -> None:
    definition = _placed(where, text)
    assert validate_type_definition(definition) == []
    assert load_type(definition).definition == definition


def test_every_problem_is_reported_at_once() -> None:
    definition = tenant_type(name="T\n", description="\u202eabc")
    definition["display"][1]["name"] = "\x1b[31m"
    definition["claims"][0]["display"][0]["label"] = "Nom\u2028"
    assert sorted(p.path for p in validate_type_definition(definition)) == [
        "claims[0].display[0].label", "description", "display[1].name", "name"]


def test_a_definition_stored_before_the_rule_is_still_loaded() -> None:
    """The issuer keeps serving and issuing a type registered before (load_type(validate=False),
    which issuer.registry.load_stored_type falls back to, logged)."""
    definition = copy.deepcopy(load_builtin_types()["padro"].definition)
    definition["display"][0]["name"] = "Volant \u202e(caducat)"
    definition["claims"][0]["display"][2]["label"] = "Municipality\n"
    with pytest.raises(SchemaError):
        load_type(definition)
    for ctype in (load_type(definition, validate=False), load_stored_type(definition)):
        assert ctype.display_for("ca")["name"] == "Volant \u202e(caducat)"
        assert ctype.type_metadata()["display"][0]["name"] == "Volant \u202e(caducat)"
        assert ctype.type_metadata_integrity().startswith("sha256-")
