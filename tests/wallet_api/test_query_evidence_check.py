"""The wallet's check of the ``query_evidence`` member an issuer sends with a credential: only known
members, strings of bounded length; anything malformed is dropped (the credential is stored all the
same, see test_query_evidence.py), never an error."""

from __future__ import annotations

from typing import Any

import pytest

from wallet_api.receiving import checked_evidence

GOOD: dict[str, Any] = {
    "purpose": "Certificat d'estar al corrent d'obligacions tributàries", "procedure": "ECOT-SUBVENCIONS",
    "legal_basis": "consent", "official": {"name": "Oficina de Cartera (demo)"},
    "source": {"name": "viaoberta", "product": "AEAT_DADES/ECOT103"},
    "queried_at": "2025-03-01T10:00:00.000+01:00", "request_id": "a1b2c3d4e5f6a1b2c3d4e5f6a1"}


def test_a_well_formed_member_is_kept_as_sent() -> None:
    assert checked_evidence(GOOD) == GOOD
    assert checked_evidence({"purpose": "  Volant d'empadronament "}) == {"purpose": "Volant d'empadronament"}


def test_only_known_members_are_kept() -> None:
    sent = {**GOOD, "official": {"name": "Joan Puig", "nif": "12345678Z"}, "subject": "12345678Z",
            "source": {"name": "viaoberta", "endpoint": "https://internal.example/scsp"}, "extra": {"a": [1, 2]}}
    kept = checked_evidence(sent)
    assert kept is not None
    assert kept["official"] == {"name": "Joan Puig"} and kept["source"] == {"name": "viaoberta"}
    assert set(kept) == set(GOOD) and "12345678Z" not in repr(kept)


def test_an_unknown_legal_basis_is_left_out_and_the_rest_kept() -> None:
    kept = checked_evidence({**GOOD, "legal_basis": "Si"})
    assert kept is not None and "legal_basis" not in kept and kept["purpose"] == GOOD["purpose"]


@pytest.mark.parametrize("sent", [
    "Finalitat", ["purpose"], 42, True, {},
    {"procedure": "ECOT-SUBVENCIONS"},  # no purpose
    {**GOOD, "purpose": ""}, {**GOOD, "purpose": "   "},
    {**GOOD, "purpose": 7}, {**GOOD, "purpose": ["a"]}, {**GOOD, "purpose": {"ca": "x"}},
    {**GOOD, "purpose": "x" * 501}, {**GOOD, "request_id": "r" * 129}, {**GOOD, "queried_at": "2" * 65},
    {**GOOD, "procedure": "line\nbreak"}, {**GOOD, "purpose": "bell\x07"}, {**GOOD, "purpose": "nul\x00"},
    {**GOOD, "purpose": "lone \ud800 surrogate"},
    {**GOOD, "legal_basis": 1}, {**GOOD, "legal_basis": "l" * 41},
    {**GOOD, "official": "Joan Puig"}, {**GOOD, "official": ["Joan Puig"]}, {**GOOD, "official": {"name": 5}},
    {**GOOD, "official": {"name": "n" * 201}},
    {**GOOD, "source": "viaoberta"}, {**GOOD, "source": {"product": ["x"]}},
    {**GOOD, "source": {"name": "n" * 101}},
])
def test_a_malformed_member_is_dropped(sent: Any) -> None:
    assert checked_evidence(sent) is None


def test_absent_is_none_and_empty_parts_are_left_out() -> None:
    assert checked_evidence(None) is None
    kept = checked_evidence({"purpose": "P", "official": {"name": " "}, "source": {}, "procedure": None})
    assert kept == {"purpose": "P"}
