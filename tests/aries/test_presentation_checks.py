"""The verifier's policies on REAL signed presentations (tests/aries/data/presentations.json).

The fixture is made by tests/aries/make_presentations.py with ACA-Py 0.12's own code: an issuer signs a
diploma (BBS+ and Ed25519Signature2020), an honest holder answers through ACA-Py's DIF handler, and
crafted holders hide the credential's status or swap claim values through a JSON-LD context. ACA-Py's
verifier accepts every one of them (signatures and DIF constraints, asserted below): only
:func:`aries.presentation.check_presentation` stands between them and the agency's result.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aries.errors import VerificationFailed
from aries.presentation import ProofRequest, VerifiedPresentation, check_presentation, precheck_presentation

FIXTURE = json.loads((Path(__file__).parent / "data" / "presentations.json").read_text(encoding="utf-8"))
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ASKED = {"title": "Grau en Dret", "awardingBody": "Universitat de Barcelona"}
# How the verifier names the issuers it trusts: DIDs with the https identifier each was published
# under, or the DIDs alone (then the context is bound to the status list's issuer base).
TRUST = ["did-to-identifier", "dids-only"]


def _request(case: str, **changes: Any) -> ProofRequest:
    stored = FIXTURE["cases"][case]["request"]
    known = {f.name for f in dataclasses.fields(ProofRequest)}
    request = ProofRequest(**{k: tuple(v) if k == "claims" else v for k, v in stored.items() if k in known})
    return dataclasses.replace(request, **{k: v for k, v in changes.items() if k in known})


def _vp(case: str, label: str) -> dict[str, Any]:
    return copy.deepcopy(FIXTURE["cases"][case]["presentations"][label]["vp"])


def _record(vp: dict[str, Any]) -> dict[str, Any]:
    return {"state": "done", "verified": "true", "by_format": {"pres": {"dif": vp}}}


def _trusted(case: str, trust: str) -> Any:
    did = FIXTURE["cases"][case]["issuer"]
    return {did: FIXTURE["base"]} if trust == "did-to-identifier" else {did}


class Lookup:
    """The status list lookup; says ``revoked`` for every entry it is asked about."""

    def __init__(self, revoked: bool = False) -> None:
        self.revoked = revoked
        self.asked: list[dict[str, Any]] = []

    async def __call__(self, entry: dict[str, Any], issuer: str) -> bool:
        self.asked.append(entry)
        return self.revoked


def _check(case: str, vp: dict[str, Any], *, trust: str = TRUST[0], lookup: Lookup | None = None,
           request: ProofRequest | None = None) -> VerifiedPresentation:
    return asyncio.run(check_presentation(_record(vp), request or _request(case),
                                          trusted_issuers=_trusted(case, trust),
                                          status_lookup=lookup or Lookup(), now=NOW))


def _refused(case: str, vp: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(VerificationFailed) as err:
        _check(case, vp, **kwargs)
    return err.value.code


def _acapy_accepts(case: str, label: str) -> None:
    verdict = FIXTURE["cases"][case]["presentations"][label]
    assert verdict["acapy_verified"] is True and verdict["acapy_dif_check"] == "passed", verdict["errors"]


# -- 1. the credential's status cannot be hidden --------------------------------------------------

def _edit_submission(vp: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    edit(vp["presentation_submission"])
    return vp


@pytest.mark.parametrize("edit", [
    lambda s: s.update(descriptor_map=[]),
    lambda s: s.pop("descriptor_map"),
    lambda s: s.update(definition_id="another-definition"),
    lambda s: s["descriptor_map"][0].update(id="another-descriptor"),
    lambda s: s["descriptor_map"].append({**s["descriptor_map"][0], "id": "another-descriptor"}),
    lambda s: s["descriptor_map"][0].update(path="$.verifiableCredential[1]"),
    lambda s: s.clear(),
], ids=["empty-map", "no-map", "other-definition", "other-descriptor", "extra-descriptor", "other-path",
        "empty-submission"])
def test_a_submission_that_skips_our_input_descriptor_is_refused(edit: Callable[[dict[str, Any]], None]) -> None:
    # ACA-Py applies the definition's constraints only to the descriptor_map entries the holder sent.
    _acapy_accepts("bbs", "honest")
    assert _check("bbs", _vp("bbs", "honest")).claims == ASKED
    assert _refused("bbs", _edit_submission(_vp("bbs", "honest"), edit)) == "aries.submission_mismatch"
    vp = _vp("bbs", "honest")
    vp.pop("presentation_submission")
    assert _refused("bbs", vp) == "aries.submission_mismatch"


@pytest.mark.parametrize("trust", TRUST)
def test_a_revoked_credential_cannot_hide_its_status(trust: str) -> None:
    # The reviewer's attack as ACA-Py accepts it: status left out, and an empty descriptor map.
    _acapy_accepts("bbs", "hidden_status")
    revoked = Lookup(revoked=True)
    assert _refused("bbs", _vp("bbs", "hidden_status"), trust=trust, lookup=revoked) == "aries.submission_mismatch"
    # The same credential mapped to our descriptor: the status we asked for is still missing.
    hidden = _vp("bbs", "hidden_status")
    hidden["presentation_submission"]["descriptor_map"] = _vp("bbs", "honest")["presentation_submission"]["descriptor_map"]
    assert _refused("bbs", hidden, trust=trust, lookup=revoked) == "aries.status_missing"
    # A null is no status either (JSON-LD drops it: the signatures still verify).
    nulled = _vp("bbs", "honest")
    _credential(nulled)["credentialStatus"] = None
    assert _refused("bbs", nulled, trust=trust, lookup=revoked) == "aries.status_missing"
    assert revoked.asked == []
    # The honest presentation discloses it, and the lookup finds the credential revoked.
    assert _refused("bbs", _vp("bbs", "honest"), trust=trust, lookup=revoked) == "aries.revoked"
    assert len(revoked.asked) == 1


def test_a_credential_without_status_is_judged_by_the_request() -> None:
    """A request built ``with_status=False`` accepts no status; given the DIDs alone, the verifier then
    has no issuer base to check the context against and refuses rather than guess."""
    request = _request("bbs")
    definition = copy.deepcopy(request.presentation_definition)
    fields = definition["input_descriptors"][0]["constraints"]["fields"]
    fields[:] = [f for f in fields if f["path"] != ["$.credentialStatus"]]
    no_status = dataclasses.replace(request, presentation_definition=definition)
    hidden = _vp("bbs", "hidden_status")
    hidden["presentation_submission"]["descriptor_map"] = _vp("bbs", "honest")["presentation_submission"]["descriptor_map"]
    assert _check("bbs", hidden, trust="did-to-identifier", request=no_status).claims == ASKED
    assert _refused("bbs", hidden, trust="dids-only", request=no_status) == "aries.context_mismatch"


# -- 2. the claims cannot be renamed by a context of the holder's -----------------------------------

@pytest.mark.parametrize("trust", TRUST)
@pytest.mark.parametrize("label", ["swapped_inline", "swapped_url"])
def test_claims_swapped_through_a_json_ld_context_are_refused(label: str, trust: str) -> None:
    _acapy_accepts("bbs", label)
    honest = _check("bbs", _vp("bbs", "honest"), trust=trust)
    assert honest.claims == ASKED
    # The signed statements are the honest ones; the JSON names say the opposite.
    swapped = _vp("bbs", label)["verifiableCredential"][0]["credentialSubject"]
    assert (swapped["title"], swapped["awardingBody"]) == (ASKED["awardingBody"], ASKED["title"])
    assert _refused("bbs", _vp("bbs", label), trust=trust) == "aries.context_mismatch"


def test_a_request_stored_before_the_type_version_was_kept_still_pins_the_issuer() -> None:
    legacy = _request("bbs", type_version=None)
    assert _check("bbs", _vp("bbs", "honest"), request=legacy, trust="dids-only").claims == ASKED
    for label in ("swapped_inline", "swapped_url"):
        assert _refused("bbs", _vp("bbs", label), request=legacy, trust="dids-only") == "aries.context_mismatch"


def _credential(vp: dict[str, Any]) -> dict[str, Any]:
    return vp["verifiableCredential"][0]


@pytest.mark.parametrize("edit", [
    lambda vp: _credential(vp)["@context"].append("https://example.org/more-terms"),
    lambda vp: _credential(vp)["@context"].insert(1, {"title": "https://example.org/x"}),
    lambda vp: _credential(vp)["@context"].reverse(),
    lambda vp: _credential(vp).update({"@context": _credential(vp)["@context"][:2]}),
    lambda vp: _credential(vp).update({"@context": "https://www.w3.org/2018/credentials/v1"}),
    lambda vp: _credential(vp)["@context"].__setitem__(
        1, "https://issuer.example/t/other/v1/aries/contexts/university-diploma/1.0"),
    lambda vp: _credential(vp)["@context"].__setitem__(
        1, "https://issuer.example/t/ub/v1/aries/contexts/university-diploma/0.9"),
    lambda vp: _credential(vp)["@context"].__setitem__(2, "https://w3id.org/security/suites/ed25519-2020/v1"),
    lambda vp: vp["@context"].append({"challenge": "https://example.org/x"}),
    lambda vp: vp["@context"].append("https://example.org/more-terms"),
    lambda vp: vp.update({"@context": list(reversed(vp["@context"]))}),
    lambda vp: _credential(vp)["credentialSubject"].update({"@context": {"title": "https://example.org/x"}}),
    lambda vp: _credential(vp)["credentialStatus"].update({"@context": [None]}),
    lambda vp: vp["proof"].update({"@context": "https://example.org/more-terms"}),
], ids=["extra", "inline-object", "reordered", "missing", "string", "other-issuer", "other-version",
        "other-suite", "vp-inline", "vp-extra", "vp-reordered", "embedded-subject", "embedded-status",
        "embedded-vp-proof"])
def test_any_other_context_list_is_refused(edit: Callable[[dict[str, Any]], None]) -> None:
    vp = _vp("bbs", "honest")
    edit(vp)
    assert _refused("bbs", vp) == "aries.context_mismatch"


@pytest.mark.parametrize("types", [
    "VerifiableCredentialUniversityDiplomaCredentialForged",  # a substring is no type
    "UniversityDiplomaCredentialX",
    {"UniversityDiplomaCredential": True},
])
def test_the_credential_type_is_a_list_member_or_equal(types: Any) -> None:
    vp = _vp("bbs", "honest")
    _credential(vp)["type"] = types
    assert _refused("bbs", vp) == "aries.wrong_type"
    for honest in ("UniversityDiplomaCredential", ["UniversityDiplomaCredential", "VerifiableCredential"]):
        _credential(vp)["type"] = honest
        assert _check("bbs", vp).claims == ASKED


# -- 3. Ed25519Signature2020 discloses every claim: accepted, only the requested ones reported -----

@pytest.mark.parametrize("trust", TRUST)
def test_an_honest_ed25519_presentation_reports_only_the_requested_claims(trust: str) -> None:
    _acapy_accepts("ed25519", "honest")
    vp = _vp("ed25519", "honest")
    subject = _credential(vp)["credentialSubject"]
    assert set(subject) - {"id"} > set(ASKED)  # the credential carries every claim
    lookup = Lookup()
    result = _check("ed25519", vp, trust=trust, lookup=lookup)
    assert result.claims == ASKED and len(lookup.asked) == 1
    assert result.holder == FIXTURE["cases"]["ed25519"]["holder"]
    # No value the verifier did not ask for reaches the result, in any field.
    reported = json.dumps(dataclasses.asdict(result), default=str)
    unasked = {name: value for name, value in subject.items() if name not in ASKED and name != "id"}
    assert not set(unasked) & set(result.claims)
    assert [name for name, value in unasked.items() if isinstance(value, str) and value in reported] == []


def test_ed25519_still_needs_every_requested_claim_and_bbs_still_exactly_them() -> None:
    vp = _vp("ed25519", "honest")
    del _credential(vp)["credentialSubject"]["awardingBody"]
    assert _refused("ed25519", vp) == "aries.disclosure_mismatch"
    # Full disclosure is accepted from Ed25519 only: a BBS+ answer must reveal exactly the request.
    assert _check("ed25519", _vp("ed25519", "honest")).claims == ASKED
    vp = _vp("bbs", "honest")
    _credential(vp)["credentialSubject"]["name"] = "Anna Puig i Soler"
    assert _refused("bbs", vp) == "aries.disclosure_mismatch"


@pytest.mark.parametrize("trust", TRUST)
def test_the_precheck_refuses_the_crafted_presentations_before_any_signature_is_verified(trust: str) -> None:
    """The verifier asks its agent to verify a presentation only once it passed the precheck: a context
    URL the holder wrote (``swapped_url``: the agent would fetch it) never reaches the agent's loader."""
    for label, code in (("swapped_url", "aries.context_mismatch"), ("swapped_inline", "aries.context_mismatch"),
                        ("hidden_status", "aries.submission_mismatch")):
        received = {"state": "presentation-received", "by_format": {"pres": {"dif": _vp("bbs", label)}}}
        with pytest.raises(VerificationFailed) as refused:
            precheck_presentation(received, _request("bbs"), trusted_issuers=_trusted("bbs", trust))
        assert refused.value.code == code, label
    for case in ("bbs", "ed25519"):
        received = {"state": "presentation-received", "by_format": {"pres": {"dif": _vp(case, "honest")}}}
        precheck_presentation(received, _request(case), trusted_issuers=_trusted(case, trust))
