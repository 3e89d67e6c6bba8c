"""SDJWT.revealed_claims: everything a chosen set of disclosures shows, not only what was asked.

A disclosure goes whole: the plain members of a disclosable object leave with it. What the holder
approves must be computed from the disclosures presented, and must equal what the verifier reads.
"""

from __future__ import annotations

from typing import Any

import pytest

from ssi.errors import SDJWTError
from ssi.jose import Key
from ssi.sd_jwt import SDJWT, issue_sd_jwt, make_disclosure, verify_sd_jwt

NOW = 1_800_000_000
ISSUER = Key.generate("ES256")
HOLDER = Key.generate("ES256")

# Shaped like the built-in padró type: ``address`` is disclosable, its members are not (sd: never);
# ``age_equal_or_over`` is disclosable and so are its members; household members one by one.
PADRO = {
    "iss": "https://issuer.example.cat", "iat": NOW - 60, "vct": "urn:padro", "cnf": {"jwk": HOLDER.public_jwk()},
    "name": "Anna Puig",
    "address": {"street": "Carrer Major 1", "floorDoor": "3r 2a", "postalCode": "08001"},
    "municipality": {"code": "17079", "name": "Girona"},
    "householdMembers": [{"givenName": "Jordi", "familyName": "Puig"}, {"givenName": "Marta", "familyName": "Vila"}],
    "age_equal_or_over": {"18": True, "65": False},
}
DISCLOSABLE = [("name",), ("address",), ("municipality",), ("householdMembers",), ("householdMembers", None),
               ("age_equal_or_over",), ("age_equal_or_over", "18"), ("age_equal_or_over", "65")]


def parsed(decoys: int | None = 0) -> SDJWT:
    return SDJWT.parse(issue_sd_jwt(PADRO, key=ISSUER, disclosable=DISCLOSABLE, decoys=decoys))


def revealed(sd: SDJWT, *paths: tuple) -> list[tuple[tuple, Any]]:
    return sd.revealed_claims(sd.disclosures_for(paths), paths)


def received(sd: SDJWT, *paths: tuple) -> dict[str, Any]:
    """What a verifier reads from the presentation of ``paths``, the always-plain claims left out."""
    claims = verify_sd_jwt(sd.present(paths), issuer_key=ISSUER.public(), now=NOW).claims
    return {k: v for k, v in claims.items() if k not in ("iss", "iat", "vct", "cnf")}


def rebuild(pairs: list[tuple[tuple, Any]]) -> dict[str, Any]:
    """Nested claims from (path, value) pairs whose paths name object members only."""
    out: dict[str, Any] = {}
    for path, value in pairs:
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return out


def test_a_member_asked_for_reveals_its_plain_siblings_in_the_same_disclosure() -> None:
    sd = parsed()
    assert revealed(sd, ("address", "postalCode")) == [
        (("address", "postalCode"), "08001"),  # what was asked first
        (("address", "street"), "Carrer Major 1"), (("address", "floorDoor"), "3r 2a")]
    # ... and that is exactly what the verifier reads
    assert rebuild(revealed(sd, ("address", "postalCode"))) == received(sd, ("address", "postalCode"))


def test_a_whole_claim_asked_for_is_one_pair_with_its_value_as_shown() -> None:
    sd = parsed()
    assert revealed(sd, ("address",)) == [
        (("address",), {"street": "Carrer Major 1", "floorDoor": "3r 2a", "postalCode": "08001"})]
    assert revealed(sd, ("municipality",), ("name",)) == [
        (("municipality",), {"code": "17079", "name": "Girona"}), (("name",), "Anna Puig")]


def test_disclosable_members_not_chosen_stay_hidden() -> None:
    sd = parsed(decoys=2)
    assert revealed(sd, ("age_equal_or_over", "18")) == [(("age_equal_or_over", "18"), True)]
    assert received(sd, ("age_equal_or_over", "18")) == {"age_equal_or_over": {"18": True}}
    # asked whole: the value is what the verifier reads, every member disclosure included
    assert revealed(sd, ("age_equal_or_over",)) == [(("age_equal_or_over",), {"18": True, "65": False})]


def test_array_elements_keep_the_indices_of_claims_and_decoys_do_not_count() -> None:
    sd = parsed(decoys=3)
    assert sd.claims["householdMembers"][1]["givenName"] == "Marta"
    assert revealed(sd, ("householdMembers", 1, "givenName")) == [
        (("householdMembers", 1, "givenName"), "Marta"), (("householdMembers", 1, "familyName"), "Vila")]
    assert received(sd, ("householdMembers", 1, "givenName")) == {
        "householdMembers": [{"givenName": "Marta", "familyName": "Vila"}]}
    assert revealed(sd, ("householdMembers", None, "familyName")) == [
        (("householdMembers", 0, "familyName"), "Puig"), (("householdMembers", 1, "familyName"), "Vila"),
        (("householdMembers", 0, "givenName"), "Jordi"), (("householdMembers", 1, "givenName"), "Marta")]


def test_plain_claims_are_listed_only_when_asked_for() -> None:
    sd = parsed()
    assert revealed(sd, ("iss",)) == [(("iss",), "https://issuer.example.cat")]
    assert sd.revealed_claims([], ()) == []
    assert revealed(sd, ("nowhere",)) == []


def test_with_plain_except_every_plain_personal_claim_is_listed() -> None:
    """A claim the issuer did not make disclosable leaves in every presentation: a consent screen
    must list it, technical claims apart. Plain members of a partly disclosable object are listed
    one by one; what is asked keeps its place first."""
    payload = {**PADRO, "birthdate": "1990-05-01", "nif": "12345678Z",
               "household": {"size": 2, "head": "Anna Puig"}}
    sd = SDJWT.parse(issue_sd_jwt(payload, key=ISSUER, disclosable=[*DISCLOSABLE, ("household", "head")], decoys=0))
    technical = {"iss", "iat", "vct", "cnf", "_sd_alg"}
    chosen = sd.disclosures_for([("name",)])
    assert sd.revealed_claims(chosen, [("name",)], plain_except=technical) == [
        (("name",), "Anna Puig"), (("birthdate",), "1990-05-01"), (("nif",), "12345678Z"),
        (("household", "size"), 2)]
    # Asked for, a plain claim is listed once, in its place.
    assert sd.revealed_claims([], [("nif",)], plain_except=technical) == [
        (("nif",), "12345678Z"), (("birthdate",), "1990-05-01"), (("household", "size"), 2)]


def test_a_disclosure_without_its_enclosing_one_is_not_shown() -> None:
    sd = parsed()
    eighteen = [d for d in sd.disclosures if d.name == "18"]
    assert sd.revealed_claims(eighteen, [("age_equal_or_over", "18")]) == []


def test_a_foreign_disclosure_is_refused() -> None:
    sd = parsed()
    with pytest.raises(SDJWTError) as info:
        sd.revealed_claims([make_disclosure("name", "Somebody Else")], [("name",)])
    assert info.value.code.endswith("unknown_disclosure")
