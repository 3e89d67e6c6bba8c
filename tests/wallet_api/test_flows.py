"""Deferred, batch and wallet-initiated issuance end to end over real HTTP (real issuer, verifier, sandbox)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from sandbox.population import DEMO_EVERYTHING, DEMO_PENDING
from ssi.jose import Key
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import X5CKeyResolver, verify_sd_jwt_vc
from ssi.x509 import load_pem_certificates
from tests.wallet_api.conftest import APP_REDIRECT, bearer, login
from tests.wallet_api.system import System, execute_sql, open_copies, query_sql
from tests.wallet_api.test_e2e import make_offer, receive


def wait_for(predicate: Any, timeout: float = 15.0, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def verify_copy(system: System, token: str, holder_jwk: dict[str, Any]) -> dict[str, Any]:
    """Verify a stored copy independently of the wallet: x5c to the dev CA, cnf = the copy's key."""
    settings = system.wallet_app.state.wallet.settings
    anchors = load_pem_certificates(settings.issuer_anchor_files[0].read_bytes())
    verified = verify_sd_jwt_vc(token, key_resolver=X5CKeyResolver(anchors), allow_http_loopback=True)
    assert verified.holder_key is not None
    assert verified.holder_key.thumbprint() == Key.from_jwk(holder_jwk).thumbprint()
    return verified.claims


def test_a_deferred_poll_that_died_is_taken_over_once_its_lease_runs_out(system: System) -> None:
    tokens = login(system.wallet, DEMO_PENDING)
    pending = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", DEMO_PENDING))
    assert pending["state"] == "pending"
    offer_id = pending["offer_id"]

    def state() -> str:
        return httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(tokens)).json()["state"]

    [(sealed_while_pending,)] = query_sql(system, "SELECT sealed FROM offers WHERE id = ?", offer_id)
    # A poll in progress (its lease runs for two minutes): neither the citizen nor the sweep polls too.
    execute_sql(system, "UPDATE offers SET state = 'polling', next_poll_at = '2999-01-01 00:00:00.000000' "
                        "WHERE id = ?", offer_id)
    r = httpx.post(f"{system.wallet}/v1/offers/{offer_id}/poll", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200 and r.json()["state"] == "polling"
    # The process that polled stopped before it saved anything: once its lease has passed the
    # background sweep polls again (the source answers on its second query) and delivers.
    execute_sql(system, "UPDATE offers SET next_poll_at = '2000-01-01 00:00:00.000000' WHERE id = ?", offer_id)
    delivered = wait_for(lambda: state() == "issued")
    assert delivered, f"the offer stayed {state()!r}: nobody took over the dead poll"
    body = httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(tokens)).json()
    assert len(body["credential_ids"]) == 1

    # A poll that died later: after it stored the credential, before it saved the offer. The next poll
    # is sent the same credential again by the issuer, and finds it in the wallet already.
    def credentials() -> list[str]:
        return [c["id"] for c in httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()]

    held = credentials()
    execute_sql(system, "UPDATE offers SET state = 'polling', next_poll_at = '2000-01-01 00:00:00.000000', "
                        "sealed = ? WHERE id = ?", sealed_while_pending, offer_id)
    assert wait_for(lambda: state() == "issued"), f"the offer stayed {state()!r}"
    again = httpx.get(f"{system.wallet}/v1/offers/{offer_id}", headers=bearer(tokens)).json()
    assert again["credential_ids"] == body["credential_ids"]
    assert credentials() == held, "the credential sent again was stored twice"


def test_deferred_issuance_arrives_by_poll_and_by_the_background_sweep(system: System) -> None:
    tokens = login(system.wallet, DEMO_PENDING)
    first = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", DEMO_PENDING))
    second = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", DEMO_PENDING))
    for pending in (first, second):
        assert pending["state"] == "pending" and pending["credential_ids"] == []
    alerts = httpx.get(f"{system.wallet}/v1/alerts", headers=bearer(tokens)).json()
    assert any(a["kind"] == "issuance_pending" for a in alerts)

    # 1. The app polls: the issuer's source answers on its second query.
    def poll() -> dict[str, Any] | None:
        r = httpx.post(f"{system.wallet}/v1/offers/{first['offer_id']}/poll", headers=bearer(tokens), timeout=30)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["state"] == "issued" else None

    polled = wait_for(poll, timeout=10, step=0.3)
    assert polled and len(polled["credential_ids"]) == 1

    # 2. Nobody polls: the background sweep does, once the issuer's `interval` has passed (made to pass
    # here by moving the scheduled time, the interval being 30 s).
    row_state = httpx.get(f"{system.wallet}/v1/offers/{second['offer_id']}", headers=bearer(tokens)).json()["state"]
    assert row_state == "pending"
    execute_sql(system, "UPDATE offers SET next_poll_at = '2000-01-01 00:00:00.000000' WHERE id = ?",
                second["offer_id"])

    def swept() -> dict[str, Any] | None:
        body = httpx.get(f"{system.wallet}/v1/offers/{second['offer_id']}", headers=bearer(tokens)).json()
        return body if body["state"] == "issued" else None

    delivered = wait_for(swept)
    assert delivered, "the background sweep did not deliver the deferred credential"
    for cid in (polled["credential_ids"][0], delivered["credential_ids"][0]):
        detail = httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).json()
        assert detail["status"] == "valid" and detail["claims"]["nif"] == DEMO_PENDING
        copy = open_copies(system, cid)[0]
        assert verify_copy(system, copy["token"], copy["holder_jwk"])["nif"] == DEMO_PENDING
    kinds = [a["kind"] for a in httpx.get(f"{system.wallet}/v1/alerts", headers=bearer(tokens)).json()]
    assert kinds.count("credential_received") >= 2
    receipts = httpx.get(f"{system.wallet}/v1/history", params={"kind": "receipt"}, headers=bearer(tokens)).json()
    assert {h["details"]["credential_id"] for h in receipts} >= {polled["credential_ids"][0],
                                                                 delivered["credential_ids"][0]}


def _status_ref(token: str) -> tuple[str, int]:
    ref = SDJWT.parse(token).payload["status"]["status_list"]
    return ref["uri"], ref["idx"]


def test_batch_copies_have_own_keys_and_status_indexes_and_presentations_rotate_them(system: System) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    cid = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", DEMO_EVERYTHING))["credential_ids"][0]
    batch = httpx.get(f"{system.issuer}/t/aoc-tax/.well-known/openid-credential-issuer").json()
    if "batch_credential_issuance" not in batch:
        batch = httpx.get(f"{system.issuer}/.well-known/openid-credential-issuer/t/aoc-tax").json()
    size = batch["batch_credential_issuance"]["batch_size"]
    assert size >= 2
    copies = open_copies(system, cid)
    assert len(copies) == size
    assert httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).json()["copies"] == size
    assert len({Key.from_jwk(c["holder_jwk"]).thumbprint() for c in copies}) == size
    assert len({_status_ref(c["token"]) for c in copies}) == size
    assert len({c["token"].split("~")[0] for c in copies}) == size
    for copy in copies:
        verify_copy(system, copy["token"], copy["holder_jwk"])

    # two presentations of the same credential go out from two different copies
    for _ in range(2):
        request = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers("ajuntament-barcelona"),
                             json={"template": "grant-application"}).json()
        preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                             headers=bearer(tokens), timeout=30).json()
        sent = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve",
                          json={"selection": {"tax": cid}}, headers=bearer(tokens), timeout=30)
        assert sent.status_code == 200, sent.text

        def verified(status_url: str = request["status_url"]) -> dict[str, Any] | None:
            body = httpx.get(status_url, headers=system.verifier_headers("ajuntament-barcelona")).json()
            return body if body["status"] != "pending" else None

        assert (wait_for(verified) or {}).get("status") == "verified"
    uses = sorted((c["uses"] for c in open_copies(system, cid)), reverse=True)
    assert uses[:2] == [1, 1] and sum(uses) == 2


def test_wallet_initiated_issuance_through_the_issuer_and_valid(system: System) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    catalogue = httpx.get(f"{system.wallet}/v1/catalogue", headers={**bearer(tokens), "Accept-Language": "ca"},
                          timeout=30).json()
    uni = next(e for e in catalogue if e["issuer"]["id"].endswith("/t/uni-barcelona"))
    assert uni["available"] and uni["issuer"]["name"]
    assert any(c["configuration_id"] == "university-diploma" for c in uni["credentials"])
    r = httpx.post(f"{system.wallet}/v1/issuance/authorize", headers=bearer(tokens), timeout=30, json={
        "credential_issuer": uni["issuer"]["id"], "credential_configuration_id": "university-diploma",
        "redirect_uri": APP_REDIRECT, "login_hint": DEMO_EVERYTHING})
    assert r.status_code == 200, r.text
    started = r.json()
    url = started["authorization_url"]
    assert "request_uri=" in url  # the issuer has PAR: the parameters went by back channel
    assert httpx.get(f"{system.wallet}/v1/offers/{started['offer_id']}",
                     headers=bearer(tokens)).json()["state"] == "authorizing"
    # The browser: issuer → VÀLid (login_hint, non-interactive) → issuer → wallet callback → app.
    hops = []
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        for _ in range(8):
            response = browser.get(url)
            assert response.status_code in (302, 303), (response.status_code, response.text)
            url = response.headers["location"]
            hops.append(urlsplit(url).netloc + urlsplit(url).path)
            if url.startswith(APP_REDIRECT):
                break
    assert url.startswith(APP_REDIRECT), hops
    back = parse_qs(urlsplit(url).query)
    assert back["offer_id"] == [started["offer_id"]] and len(back["completion"]) == 1, back
    # The app, logged in as the wallet that started it, completes the issuance with the completion code.
    done = httpx.post(f"{system.wallet}/v1/issuance/complete", headers=bearer(tokens), timeout=60,
                      json={"offer_id": started["offer_id"], "completion": back["completion"][0]})
    assert done.status_code == 200 and done.json()["state"] == "issued", done.text
    offer = httpx.get(f"{system.wallet}/v1/offers/{started['offer_id']}", headers=bearer(tokens)).json()
    assert offer["state"] == "issued" and len(offer["credential_ids"]) == 1
    detail = httpx.get(f"{system.wallet}/v1/credentials/{offer['credential_ids'][0]}", headers=bearer(tokens)).json()
    # the issuer issued for the citizen VÀLid logged in, not for anything the wallet claimed
    assert detail["claims"]["personalIdentifier"] == DEMO_EVERYTHING
    copies = open_copies(system, detail["id"])
    assert len(copies) >= 2
    verify_copy(system, copies[0]["token"], copies[0]["holder_jwk"])
    # the callback's state is single-use: replaying the issuer's redirect changes nothing
    replay = httpx.get(f"{system.wallet}/v1/issuance/callback", params={"state": "x", "code": "y"})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_request"
