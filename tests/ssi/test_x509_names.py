"""Certificate names fit X.509's bound (64; cryptography counts a commonName's UTF-8 bytes): a longer
agency or tenant name is cut at a character boundary and ended with "…", instead of failing the
certificate (which made the admin APIs answer 500 for names the APIs accept, up to 200 characters)."""

from __future__ import annotations

import pytest
from cryptography.x509.oid import NameOID

from ssi.jose import Key
from ssi.x509 import (
    DEVELOPMENT_ORGANIZATION,
    NAME_MAX_BYTES,
    certificate_subject_name,
    create_ca,
    fit_name,
    issue_certificate,
)

ACCENTED = "Consorci d'Administració Oberta de Catalunya, Oficina d'Atenció Ciutadana"  # > 64 bytes


def _subject(cert, oid) -> str:
    return cert.subject.get_attributes_for_oid(oid)[0].value


@pytest.mark.parametrize("name", ["Ajuntament de Girona", "x" * 64, "é" * 32, "Agència Oberta"])
def test_a_name_that_fits_is_kept_whole(name: str) -> None:
    assert fit_name(name) == name


@pytest.mark.parametrize("name", [
    "Ajuntament de Sant Joan de Vilatorrada i altres municipis del Bages (OAC)",
    "x" * 200, "é" * 40, ACCENTED, "x" * 63 + "é", "€" * 30, "𝔸" * 20,
])
def test_a_longer_name_is_cut_to_64_bytes_with_an_ellipsis(name: str) -> None:
    fitted = fit_name(name)
    assert len(fitted.encode("utf-8")) <= NAME_MAX_BYTES
    assert fitted.endswith("…")
    assert name.startswith(fitted[:-1])
    # nothing more of the name would have fitted
    assert len((fitted[:-1] + name[len(fitted) - 1] + "…").encode("utf-8")) > NAME_MAX_BYTES


def test_a_letter_keeps_its_combining_accent() -> None:
    # "e" + COMBINING ACUTE at the cut: both go, never the accent alone
    name = "x" * 60 + "e\u0301" + "y" * 10
    fitted = fit_name(name)
    assert fitted == "x" * 60 + "…"
    assert fit_name("x" * 59 + "e\u0301" + "y" * 10) == "x" * 59 + "…"  # 62 bytes + "…" would not fit
    assert fit_name("x" * 58 + "e\u0301" + "y" * 10) == "x" * 58 + "e\u0301" + "…"


def test_trailing_spaces_go_before_the_ellipsis() -> None:
    assert fit_name("a" * 59 + "     " + "b" * 10) == "a" * 59 + "…"


@pytest.mark.parametrize("name", [
    "Ajuntament de Sant Joan de Vilatorrada i altres municipis del Bages (OAC)", "é" * 40, "x" * 200,
])
def test_certificates_with_long_names_are_made(name: str) -> None:
    ca_key, ca = create_ca("Test CA")
    leaf = issue_certificate(ca_key, ca, Key.generate("ES256"), name, organization=name, san_dns=["example.cat"])
    assert _subject(leaf, NameOID.COMMON_NAME) == fit_name(name)
    assert _subject(leaf, NameOID.ORGANIZATION_NAME) == fit_name(name)
    assert certificate_subject_name(leaf) == fit_name(name)
    leaf.verify_directly_issued_by(ca)


def test_a_long_development_ca_name_keeps_its_marker() -> None:
    _, ca = create_ca("x" * 100, organization="Ajuntament de Sant Joan de Vilatorrada i altres municipis")
    organization = _subject(ca, NameOID.ORGANIZATION_NAME)
    assert organization.endswith(f" - {DEVELOPMENT_ORGANIZATION}")
    assert organization.startswith("Ajuntament") and "…" in organization
    assert len(organization.encode("utf-8")) <= NAME_MAX_BYTES
    assert _subject(ca, NameOID.COMMON_NAME) == fit_name("x" * 100)
