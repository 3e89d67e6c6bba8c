"""What a share shows is what its disclosures carry, not only what was asked for.

The padró's ``address`` is selectively disclosable as a whole while its members are not (``sd:
never``): asked for the postcode alone, the wallet can only send the whole ``address`` disclosure. So
the consent preview, what the verifier receives, the ``disclosed`` answer and the history must all
list street, floor and door too. The answer is caught by a recording stand-in verifier (the real one
reports only the claims its query asked for); the wallet and the issuer are the real services.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import quote

import httpx

from credential_schemas.model import load_builtin_types
from sandbox.population import DEMO_TAX_NEGATIVE
from ssi.oid4vp import unsigned_request_object
from ssi.sd_jwt import SDJWT
from tests.wallet_api.conftest import Recorder, bearer, login
from tests.wallet_api.system import System
from tests.wallet_api.test_e2e import make_offer, receive

TECHNICAL = {"iss", "iat", "nbf", "exp", "cnf", "vct", "vct#integrity", "status"}


def _request_uri(recorder: Recorder, vct: str, state: str, purpose: str, claims: list[list[Any]]) -> str:
    """An unsigned (development) request for ``claims`` of a ``vct`` credential, answered to the recorder."""
    client_id = f"redirect_uri:{recorder.url}/response"
    token = unsigned_request_object({
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post",
        "response_uri": f"{recorder.url}/response", "nonce": "n-" + state, "state": state, "purpose": purpose,
        "dcql_query": {"credentials": [{"id": "padro", "format": "dc+sd-jwt", "meta": {"vct_values": [vct]},
                                        "claims": [{"path": p} for p in claims]}]}})
    return f"openid4vp://?client_id={quote(client_id)}&request={token}"


def _labels(path: tuple) -> set[str]:
    """The padró type's labels of the claim at ``path``, in every language it has."""
    [claim] = [c for c in load_builtin_types()["padro"].claims if tuple(c.path) == path]
    return {d["label"] for d in claim.display}


def _claims(items: list[dict[str, Any]]) -> dict[tuple, tuple]:
    """Path -> (value, requested), each claim named by its label."""
    assert all(c["name"] in _labels(tuple(c["path"])) for c in items), [c["name"] for c in items]
    return {tuple(c["path"]): (c["value"], c["requested"]) for c in items}


def test_a_postcode_asked_for_shares_the_whole_address_and_every_record_says_so(
        system: System, recorder: Recorder) -> None:
    tokens = login(system.wallet, DEMO_TAX_NEGATIVE)
    cid = receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", DEMO_TAX_NEGATIVE)
                  )["credential_ids"][0]
    credential = httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).json()
    address = credential["claims"]["address"]
    assert set(address) == {"street", "floorDoor", "postalCode"}
    expected = {("address", "postalCode"): (address["postalCode"], True),  # asked for
                ("address", "street"): (address["street"], False),  # leave with it
                ("address", "floorDoor"): (address["floorDoor"], False)}
    state, purpose = "s-" + secrets.token_hex(6), "Postcode check " + secrets.token_hex(6)
    uri = _request_uri(recorder, credential["vct"], state, purpose, [["address", "postalCode"]])

    preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": uri},
                         headers={**bearer(tokens), "Accept-Language": "en"}, timeout=30)
    assert preview.status_code == 201, preview.text
    body = preview.json()
    option = next(o for o in body["queries"][0]["options"] if o["credential_id"] == cid)
    # the citizen is shown everything that would leave, the postcode asked for first
    assert {tuple(c["path"]) for c in option["claims"]} == set(expected)
    assert _claims(option["claims"]) == expected
    assert option["claims"][0]["path"] == ["address", "postalCode"]
    assert not [p for p in recorder.posts if p.get("state") == state]  # a preview sends nothing

    sent = httpx.post(f"{system.wallet}/v1/presentations/{body['presentation_id']}/approve",
                      json={"selection": {"padro": cid}}, headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200, sent.text
    answer = sent.json()
    assert answer["state"] == "sent"
    assert [d["credential_id"] for d in answer["disclosed"]] == [cid]
    assert _claims(answer["disclosed"][0]["claims"]) == expected

    # what the verifier received: exactly the address, nothing else of the padró
    [post] = [p for p in recorder.posts if p.get("state") == state]
    [presentation] = json.loads(post["vp_token"])["padro"]
    received = SDJWT.parse(presentation).claims
    assert {k: v for k, v in received.items() if k not in TECHNICAL} == {"address": address}

    shares = httpx.get(f"{system.wallet}/v1/history", params={"kind": "share"}, headers=bearer(tokens)).json()
    [share] = [h["details"] for h in shares if h["details"].get("purpose") == purpose]
    assert share["outcome"] == "sent"
    assert [d["credential_id"] for d in share["disclosed"]] == [cid]
    assert _claims(share["disclosed"][0]["claims"]) == expected
