from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.population import (
    DEMO_EVERYTHING,
    DEMO_NO_DEGREE,
    DEMO_NOT_FOUND,
    DEMO_PENDING,
    DEMO_TAX_NEGATIVE,
    MUNICIPALITIES,
    generate_population,
    is_valid_nif_or_nie,
    nif_letter,
)


def test_known_check_letters() -> None:
    assert nif_letter(12345678) == "Z"
    assert nif_letter(0) == "T"
    assert is_valid_nif_or_nie("12345678Z")
    assert is_valid_nif_or_nie("X1234567L")  # X -> 0: 01234567 % 23 = 11 -> L
    assert not is_valid_nif_or_nie("12345678A")
    assert not is_valid_nif_or_nie("1234567Z")
    assert not is_valid_nif_or_nie("W1234567L")
    assert not is_valid_nif_or_nie("１２３４５６７８Z")  # full-width digits are not ASCII


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_validator_never_raises(value: str) -> None:
    assert is_valid_nif_or_nie(value) in (True, False)


def test_population_is_deterministic_and_large() -> None:
    first = generate_population(2026, 1000)
    generate_population.cache_clear()
    again = generate_population(2026, 1000)
    assert first is not again
    assert first.citizens == again.citizens
    assert len(first) >= 1000
    other = generate_population(7, 1000)
    assert [c.identifier for c in other.citizens[5:]] != [c.identifier for c in first.citizens[5:]]


def test_every_identifier_is_valid_and_unique() -> None:
    population = generate_population()
    identifiers = [c.identifier for c in population.citizens]
    assert len(set(identifiers)) == len(identifiers)
    assert all(is_valid_nif_or_nie(i) for i in identifiers)
    assert {c.identifier_type for c in population.citizens} == {"NIF", "NIE"}
    for citizen in population.citizens:
        assert (citizen.identifier_type == "NIE") == (citizen.identifier[0] in "XYZ")
        assert date(1940, 1, 1) <= citizen.birth_date <= date(2007, 12, 31)


def test_registries_are_varied_and_consistent() -> None:
    population = generate_population()
    citizens = population.citizens
    statuses = [c.tax.status for c in citizens if c.tax]
    assert statuses.count("POSITIVO") > statuses.count("NEGATIVO") > 20
    assert all(c.tax.tipo_negativo and c.tax.incumplimientos for c in citizens if c.tax and c.tax.status == "NEGATIVO")
    with_degrees = [c for c in citizens if c.degrees]
    assert len(with_degrees) > 100
    assert any(len(c.degrees) > 1 for c in with_degrees)
    for citizen in with_degrees:
        for degree in citizen.degrees:
            assert len(degree.code) == 7 and degree.code.isdigit()
            assert degree.completion_date > citizen.birth_date
    codes = {code for code, _, _ in MUNICIPALITIES}
    households = [c.padro.household for c in citizens if c.padro]
    assert any(len(h) > 1 for h in households)
    for citizen in citizens:
        if citizen.padro:
            assert citizen.padro.municipality_code in codes
            assert citizen.identifier in citizen.padro.household
            members = population.household(citizen)
            assert all(m.padro and m.padro.municipality_code == citizen.padro.municipality_code for m in members)
    assert sum(1 for c in citizens if c.working_life) > 300


def test_fixed_demo_citizens() -> None:
    population = generate_population(99, 1200)
    first = [c.identifier for c in population.citizens[:5]]
    assert first == [DEMO_EVERYTHING, DEMO_TAX_NEGATIVE, DEMO_NO_DEGREE, DEMO_PENDING, DEMO_NOT_FOUND]
    everything = population.get(DEMO_EVERYTHING.lower())
    assert everything is not None and everything.full_name == "Montserrat Puig Ferrer"
    assert everything.products == ("ECOT103", "TITOLS_UNIVERSITARIS", "RESIDENT", "VIDA_LABORAL")
    assert [m.identifier for m in population.household(everything)] == [DEMO_EVERYTHING, DEMO_TAX_NEGATIVE]
    negative = population.get(DEMO_TAX_NEGATIVE)
    assert negative.tax.status == "NEGATIVO" and negative.tax.tipo_negativo == "01"
    assert population.get(DEMO_NO_DEGREE).degrees == ()
    assert set(population.get(DEMO_PENDING).pending) == {"ECOT103", "TITOLS_UNIVERSITARIS", "RESIDENT", "VIDA_LABORAL"}
    nobody = population.get(DEMO_NOT_FOUND)
    assert nobody.identifier_type == "NIE" and nobody.products == () and nobody.surnames == "Benali"
    assert population.get("00000000T") is None


def test_working_life_period() -> None:
    record = generate_population().get(DEMO_EVERYTHING).working_life
    start, end, situations = record.last_12_months(date(2026, 3, 15))
    assert (start, end) == (date(2025, 3, 16), date(2026, 3, 15))
    assert [(s.employer, days) for s, days in situations] == [("Generalitat de Catalunya", 365)]
