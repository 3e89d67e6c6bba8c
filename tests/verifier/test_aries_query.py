"""Which DCQL Credential Queries the verifier can ask over DIDComm (``query_for_aries``), and which it
refuses with 400 rather than ask something it would not enforce."""

from __future__ import annotations

from typing import Any

import pytest

from service_kit.errors import APIError
from verifier.aries_channel import query_for_aries

VCT = "https://issuer.example.cat/credentials/padro"


def query(**extra: Any) -> dict[str, Any]:
    return {"credentials": [{"id": "padro", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT]},
                             "claims": [{"path": ["municipality"], "values": ["Girona"]}, {"path": ["nif"]}]} | extra]}


def test_a_plain_query_becomes_a_proof_request() -> None:
    assert query_for_aries(query(), None) == ("padro", VCT, ["municipality", "nif"], {"municipality": ["Girona"]})


@pytest.mark.parametrize(("extra", "detail"), [
    ({"trusted_authorities": [{"type": "aki", "values": ["s9tIpPmhxdiuNkHMEWNpYim8S8Y"]}]}, "trusted_authorities"),
    ({"claims": [{"id": "a", "path": ["nif"]}], "claim_sets": [["a"]]}, "claim_sets"),
    ({"claims": [{"path": ["address", "street"]}]}, "top-level claims"),
    ({"meta": {"vct_values": [VCT, VCT + "-2"]}}, "exactly one vct"),
])
def test_what_didcomm_cannot_ask_is_refused(extra: dict[str, Any], detail: str) -> None:
    with pytest.raises(APIError) as raised:
        query_for_aries(query(**extra), None)
    assert raised.value.status_code == 400 and detail in raised.value.error_description
