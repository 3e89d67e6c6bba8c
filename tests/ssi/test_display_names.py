"""``ssi.names.display_name``: the one check of an agency's or a tenant's name (shown to citizens, put in
certificates and logs). Control characters refused, spaces around dropped, a name with nothing to
read refused; what a real name holds (accents, a middle dot, an emoji with its joiner) kept.
``ssi.names.display_text``: the same check for a longer text shown beside a name (a purpose, a
credential type's description), which it returns as given."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from ssi.errors import DisplayNameError
from ssi.names import DisplayName, display_name, display_text

REFUSED = [
    pytest.param("Ajuntament\nde Girona", id="LF"),
    pytest.param("Ajuntament\r\nde Girona", id="CRLF"),
    pytest.param("Ajuntament\tde Girona", id="TAB"),
    pytest.param("Ajuntament\x1b[31m", id="ESC"),
    pytest.param("Ajuntament\x00", id="NUL"),
    pytest.param("Ajuntament\x7f", id="DEL"),
    pytest.param("Ajuntament\x85de Girona", id="NEL"),
    pytest.param("Ajuntament\x9b31m", id="C1-CSI"),
    pytest.param("Ajuntament\u2028de Girona", id="line-separator"),
    pytest.param("Ajuntament\u2029", id="paragraph-separator"),
    *[pytest.param(f"Banc {chr(code)}gpj.exe", id=f"U+{code:04X}")
      for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))],
    pytest.param("Banc \u200fx", id="RLM"),
    pytest.param("Banc \u061cx", id="ALM"),
    pytest.param("Banc \ud800", id="lone-surrogate"),
    pytest.param("Ajuntament de Girona\n", id="trailing-LF"),  # refused, not silently trimmed
]


@pytest.mark.parametrize("name", REFUSED)
def test_a_control_character_is_refused(name: str) -> None:
    with pytest.raises(DisplayNameError) as caught:
        display_name(name)
    assert caught.value.code == "name.control_character"
    assert "control character" in caught.value.detail and name not in caught.value.detail


@pytest.mark.parametrize("name", ["", " ", "   \u3000 \u00a0", "\u200b", " \u200b\u2060 "])
def test_a_name_with_nothing_to_read_is_refused(name: str) -> None:
    with pytest.raises(DisplayNameError) as caught:
        display_name(name)
    assert caught.value.code == "name.empty"


@pytest.mark.parametrize(("given", "kept"), [
    ("  Ajuntament de Girona ", "Ajuntament de Girona"),
    ("\u00a0Consorci AOC\u3000", "Consorci AOC"),
    ("Sol·licituds de la Plaça Major, niño", "Sol·licituds de la Plaça Major, niño"),
    ("Oficina \U0001f468\u200d\U0001f469\u200d\U0001f467", "Oficina \U0001f468\u200d\U0001f469\u200d\U0001f467"),
    ("e\u0301cole", "e\u0301cole"),
    ("x" * 200, "x" * 200),
])
def test_a_real_name_is_kept_without_the_spaces_around_it(given: str, kept: str) -> None:
    assert display_name(given) == kept


class _Named(BaseModel):
    name: DisplayName


def test_the_pydantic_type_trims_and_refuses_without_quoting_the_value() -> None:
    assert _Named(name="  Ajuntament ").name == "Ajuntament"
    for bad, kind in (("a\x1bb", "control character"), (" \t ", "control character"), ("  ", "nothing to read")):
        with pytest.raises(ValidationError) as caught:
            _Named(name=bad)
        [error] = caught.value.errors()
        assert error["type"] == "display_name" and kind in error["msg"] and bad not in error["msg"]


# -- display_text: a purpose, a description ---------------------------------------------------------

@pytest.mark.parametrize("text", REFUSED)
def test_a_text_with_a_control_character_is_refused_naming_the_text_as_the_caller_says(text: str) -> None:
    with pytest.raises(DisplayNameError) as caught:
        display_text(text, "the ca text")
    assert caught.value.code == "name.control_character"
    assert caught.value.detail.startswith("the ca text holds a control character")
    assert "a text shown to citizens" in caught.value.detail and text not in caught.value.detail


@pytest.mark.parametrize("text", ["", " ", "\u200b", " \u200b\u2060 "])
def test_a_text_with_nothing_to_read_is_refused(text: str) -> None:
    with pytest.raises(DisplayNameError) as caught:
        display_text(text)
    assert caught.value.code == "name.empty" and caught.value.detail.startswith("the text has nothing to read")


@pytest.mark.parametrize("text", [
    "  Sol·licitud de subvenció: estar al corrent de les obligacions tributàries ",
    "Per a subvencions i ajuts públics (AEAT).",
    "طلب منحة دراسية",
    "Oficina \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "x" * 5000,
])
def test_a_real_text_is_kept_as_given(text: str) -> None:
    assert display_text(text) is text
