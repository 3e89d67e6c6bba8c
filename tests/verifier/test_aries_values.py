"""The DIDComm channel checks a Credential Query's ``values`` as the OpenID4VP channel does
(``ssi.dcql.value_matches``): by type and value, so a claim ``1`` does not pass ``[true]``, ``0``
does not pass ``[false]``, and ``true`` or ``1.0`` does not pass ``[1]``."""

from __future__ import annotations

from typing import Any

import pytest

from aries.errors import VerificationFailed
from ssi.dcql import value_matches
from verifier.aries_channel import check_values


@pytest.mark.parametrize(("claim", "accepted"), [
    (1, [True]), (0, [False]), (True, [1]), (False, [0]), (1.0, [1]), ("1", [1]), (1, ["1"]), (None, [1]),
])
def test_a_value_of_another_type_is_refused(claim: Any, accepted: list[Any]) -> None:
    with pytest.raises(VerificationFailed) as raised:
        check_values({"over18": claim}, {"over18": accepted})
    assert raised.value.code == "aries.values_mismatch"
    # the OpenID4VP channel refuses it too
    assert not value_matches(claim, accepted)


@pytest.mark.parametrize(("claim", "accepted"), [
    (True, [True]), (False, [False, True]), (1, [1]), (0, [2, 0]), ("POSITIVE", ["POSITIVE"]),
])
def test_the_same_type_and_value_passes(claim: Any, accepted: list[Any]) -> None:
    check_values({"over18": claim, "other": "x"}, {"over18": accepted})
    assert value_matches(claim, accepted)


def test_a_missing_claim_is_refused() -> None:
    with pytest.raises(VerificationFailed) as raised:
        check_values({"other": True}, {"over18": [True]})
    assert raised.value.code == "aries.values_mismatch"
    check_values({"other": True}, {})
