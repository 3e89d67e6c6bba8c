"""Property-based tests: whatever bytes arrive, SD-JWT parsing and verification raise only typed
``SSIError``s; and issuing then presenting any claims round-trips."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssi.encoding import b64url_encode, json_dumps
from ssi.errors import SSIError
from ssi.jose import Key, sign_jws
from ssi.sd_jwt import SDJWT, issue_sd_jwt, verify_sd_jwt
from ssi.sd_jwt_vc import PinnedKeyResolver, issue_sd_jwt_vc, verify_sd_jwt_vc

NOW = 1_800_000_000
ISS = "https://issuer.example.cat"
ISSUER = Key.generate("ES256")
HOLDER = Key.generate("ES256")
PINNED = PinnedKeyResolver({ISS: [ISSUER]})
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CREDENTIAL = issue_sd_jwt_vc({"a": "x", "b": {"c": 1, "d": [1, 2]}, "e": ["p", "q"]}, vct="urn:vct", issuer=ISS,
                             key=ISSUER, holder_jwk=HOLDER.public_jwk(),
                             disclosable=[("a",), ("b",), ("b", "c"), ("b", "d", None), ("e", 0)], iat=NOW)
PRESENTATION = SDJWT.parse(CREDENTIAL).present([("a",), ("b", "d", 1)], holder_key=HOLDER, aud="v", nonce="n",
                                               iat=NOW)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["_sd", "...", "a", "b", "iss", "vct", "cnf", "status", "exp", "x"]), children, max_size=4),
    max_leaves=12,
)
alphabet = st.sampled_from(list("~.=-_+/AZaz09{}[]\"\\ é\x00"))


def all_three(token: Any) -> None:
    """Feed ``token`` to the three entry points; anything but an SSIError fails the test."""
    for call in (
        lambda: SDJWT.parse(token),
        lambda: verify_sd_jwt(token, issuer_key=ISSUER.public(), now=NOW, expected_aud="v", expected_nonce="n"),
        lambda: verify_sd_jwt_vc(token, key_resolver=PINNED, now=NOW, expected_aud="v", expected_nonce="n"),
    ):
        try:
            call()
        except SSIError as exc:
            assert "." in exc.code


@SETTINGS
@given(st.text(max_size=200) | st.binary(max_size=50) | st.integers() | st.none())
def test_random_inputs_yield_only_typed_errors(token: Any) -> None:
    all_three(token)


@SETTINGS
@given(st.sampled_from([CREDENTIAL, PRESENTATION]), st.data())
def test_mutated_tokens_yield_only_typed_errors(base: str, data: st.DataObject) -> None:
    token = base
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(token)))
        action = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        char = data.draw(alphabet)
        if action == "replace":
            token = token[:position] + char + token[position + 1:]
        elif action == "insert":
            token = token[:position] + char + token[position:]
        elif action == "delete":
            token = token[:position] + token[position + 1:]
        else:
            token = token[:position]
    all_three(token)


@SETTINGS
@given(st.lists(json_values, max_size=4))
def test_random_disclosures_yield_only_typed_errors(arrays: list[Any]) -> None:
    disclosures = [b64url_encode(json_dumps(value).encode()) for value in arrays]
    all_three(CREDENTIAL + "".join(d + "~" for d in disclosures))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["_sd", "_sd_alg", "iss", "vct", "cnf", "status", "exp", "nbf", "a", "..."]),
                       json_values, max_size=6),
       st.sampled_from(["dc+sd-jwt", "vc+sd-jwt", "kb+jwt", None]))
def test_signed_but_strange_payloads_yield_only_typed_errors(payload: dict[str, Any], typ: str | None) -> None:
    header = {"typ": typ} if typ else {}
    all_three(sign_jws(header, payload, ISSUER) + "~")


claim_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6).filter(
    lambda s: s not in ("_sd", "...", "_sd_alg", "exp", "nbf", "iat", "cnf"))
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(claim_names, children, max_size=3),
    max_leaves=8,
)


@SETTINGS
@given(st.dictionaries(claim_names, plain_values, min_size=1, max_size=6), st.data())
def test_issue_present_verify_round_trip(claims: dict[str, Any], data: st.DataObject) -> None:
    names = sorted(claims)
    disclosable = data.draw(st.lists(st.sampled_from(names), unique=True))
    shown = data.draw(st.lists(st.sampled_from(names), unique=True))
    token = issue_sd_jwt(claims, key=ISSUER, disclosable=[(n,) for n in disclosable])
    sd = SDJWT.parse(token)
    assert sd.claims == claims
    result = verify_sd_jwt(sd.present([(n,) for n in shown]), issuer_key=ISSUER.public(), now=NOW)
    expected = {n: v for n, v in claims.items() if n not in disclosable or n in shown}
    assert result.claims == expected
