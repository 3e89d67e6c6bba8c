"""The other paths a citizen meets: declining, a revoked credential, a wrong transaction code, the language."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import httpx
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from sandbox.population import DEMO_PENDING
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, fresh_citizens
from tests.web_wallet.conftest import make_offer, new_request, offer_qr_png, wait_status

CITIZENS = fresh_citizens(4)


def _receive_by_link(citizen, offer: dict) -> None:
    page = citizen.page
    page.locator("#nav").get_by_role("link", name="Scan", exact=True).click()
    page.fill("#link", offer["offer_uri"])
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#offer-title")).to_be_visible(timeout=15_000)
    if offer.get("tx_code"):
        page.fill("#tx-code", offer["tx_code"])
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=30_000)


def test_decline_sends_nothing(system: System, phone) -> None:
    citizen = phone()
    citizen.login(CITIZENS[0])
    offer = make_offer(system, "ajuntament-girona", "padro", CITIZENS[0], tx_code=False)
    _receive_by_link(citizen, offer)
    expect(citizen.page.locator("#tx-box")).to_be_hidden()

    request = new_request(system, "ajuntament-barcelona", "residence")
    page = citizen.page
    page.locator("#nav").get_by_role("link", name="Scan", exact=True).click()
    page.fill("#link", request["uri"])
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#verifier-name")).to_have_text("Ajuntament de Barcelona (verified identity)", timeout=15_000)
    expect(page.locator("#request-purpose")).to_have_text("Proof of residence in the municipality")
    page.get_by_role("button", name="Decline").click()
    expect(page.locator("#request-result")).to_have_text("You declined the request: nothing was shared.")
    expect(page.get_by_role("button", name="Share")).to_be_disabled()
    citizen.shot("10-declined")
    result = wait_status(system, "ajuntament-barcelona", request)
    assert result["status"] == "declined", result
    assert not result.get("claims")
    page.locator("#nav").get_by_role("link", name="History", exact=True).click()
    expect(page.locator("#history li.decline").first).to_contain_text("Ajuntament de Barcelona")
    expect(page.locator("#history li.decline dd")).to_have_count(0)


def test_revoked_credential_is_marked_and_cannot_be_shared(system: System, phone) -> None:
    from wallet_api.background import check_statuses

    citizen = phone()
    citizen.login(CITIZENS[1])
    page = citizen.page
    offer = make_offer(system, "ajuntament-girona", "padro", CITIZENS[1], tx_code=False)
    # A photo of the offer QR, read by the app's decoder (jsQR) in the page.
    page.locator("#nav").get_by_role("link", name="Scan", exact=True).click()
    page.set_input_files("#photo", files=[{"name": "offer.png", "mimeType": "image/png", "buffer": offer_qr_png(offer)}])
    expect(page.locator("#offer-title")).to_be_visible(timeout=15_000)
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=30_000)
    page.locator("#nav").get_by_role("link", name="Cards", exact=True).click()
    expect(page.locator("#cards .badge")).to_have_text("Valid")

    issuer_id = offer["credential_ids"]["padro"]
    r = httpx.post(f"{system.issuer}/v1/credentials/{issuer_id}/revoke", headers=system.issuer_headers("ajuntament-girona"))
    assert r.status_code == 200, r.text
    # The wallet's status sweep runs now instead of at its interval: in a thread of its own (Playwright's
    # sync API owns this thread's event loop) with its own database engine (the server's is bound to the
    # server's loop).
    outcome: list[object] = []

    async def sweep() -> int:
        from service_kit.db import Database

        ctx = system.wallet_app.state.wallet
        db = Database(ctx.settings.database_url)
        try:
            return await check_statuses(dataclasses.replace(ctx, db=db), force=True)
        finally:
            await db.dispose()

    def run() -> None:
        try:
            outcome.append(asyncio.run(sweep()))
        except Exception as exc:  # noqa: BLE001 - reported below, in the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    assert outcome and not isinstance(outcome[0], Exception), outcome
    # The alert arrives over the SSE stream and the open screen refreshes by itself.
    expect(page.locator("#cards .badge")).to_have_text("Revoked", timeout=15_000)
    expect(page.locator("#alert-count")).to_be_visible()
    citizen.shot("11-revoked-card")
    page.locator("#nav a[data-route=alerts]").click()
    expect(page.locator("#alerts li.alert-revoked")).to_contain_text("Credential revoked")
    citizen.shot("12-alerts")

    request = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(request["uri"])
    expect(page.locator("#request-queries")).to_contain_text("You have no valid credential", timeout=15_000)
    expect(page.get_by_role("button", name="Share")).to_be_disabled()
    citizen.shot("13-consent-revoked")
    page.get_by_role("button", name="Decline").click()
    expect(page.locator("#request-result")).to_contain_text("nothing was shared")
    assert wait_status(system, "ajuntament-barcelona", request)["status"] == "declined"


def test_wrong_transaction_code_then_right_one(system: System, phone) -> None:
    citizen = phone()
    citizen.login(CITIZENS[2])
    page = citizen.page
    offer = make_offer(system, "aoc-tax", "tax-compliance", CITIZENS[2])
    wrong = "".join("1" if c != "1" else "2" for c in offer["tx_code"])
    citizen.scan(offer["offer_uri"])
    expect(page.locator("#tx-box")).to_be_visible(timeout=15_000)
    page.fill("#tx-code", wrong)
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#error")).to_have_text("The transaction code is not correct.", timeout=15_000)
    expect(page.locator("#tx-code")).to_be_focused()
    expect(page.locator("#offer-result")).to_be_hidden()
    citizen.shot("14-wrong-tx-code")
    assert httpx.get(f"{system.wallet}/v1/credentials", headers={
        "Authorization": "Bearer " + page.evaluate("JSON.parse(sessionStorage.getItem('cartera.tokens')).access")}
    ).json() == []
    page.fill("#tx-code", offer["tx_code"])
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=30_000)
    expect(page.locator("#error")).to_be_hidden()


def test_language_follows_the_browser_and_switches(system: System, phone) -> None:
    citizen = phone(locale="es-ES")
    page = citizen.page
    citizen.open()
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.locator("#login-title")).to_have_text("Tus credenciales, en el móvil")
    page.select_option("#lang", "ca")
    expect(page.locator("html")).to_have_attribute("lang", "ca")
    expect(page.locator("#login-title")).to_have_text("Les teves credencials, al mòbil")
    expect(page.get_by_role("button", name="Inicia la sessió amb VÀLid")).to_be_visible()
    citizen.login(CITIZENS[3], button="VÀLid")
    expect(page.locator("#cards-title")).to_have_text("Les meves credencials")  # kept across the login
    request = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(request["uri"])
    expect(page.locator("#request-purpose")).to_have_text("Acreditar la residència al municipi", timeout=15_000)
    expect(page.get_by_role("button", name="Rebutja")).to_be_visible()
    citizen.shot("15-consent-ca")
    page.select_option("#lang", "en")
    expect(page.get_by_role("button", name="Decline")).to_be_visible()
    expect(page.locator("#request-title")).to_have_text("Share your data?")
    # The purpose and claim names were chosen by the wallet API when the request was scanned (in Catalan).
    expect(page.locator("#request-purpose")).to_have_text("Acreditar la residència al municipi")
    page.get_by_role("button", name="Decline").click()
    expect(page.locator("#request-result")).to_contain_text("nothing was shared")


def test_ask_an_issuer_from_the_catalogue(system: System, phone) -> None:
    citizen = phone()
    identifier = fresh_citizens(8)[7]
    citizen.login(identifier)
    page = citizen.page
    page.get_by_role("link", name="Ask an issuer").click()
    entry = page.locator("#catalogue li").filter(has_text=system.tenants["aoc-tax"]["name"])
    expect(entry.get_by_role("button").first).to_be_visible(timeout=15_000)
    citizen.shot("19-catalogue")
    entry.get_by_role("button").first.click()
    # The issuer sends the browser to VÀLid (its own client), then back through the wallet API to the app.
    page.fill("#q", identifier)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Log in as this citizen").press("Enter")
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=30_000)
    page.locator("#nav a[data-route=cards]").click()
    expect(page.locator("#cards li.card")).to_have_count(1)
    expect(page.locator("#cards li.card")).to_contain_text(system.tenants["aoc-tax"]["name"])


def test_an_issuer_link_someone_else_started_delivers_nobody_the_credential(system: System, phone) -> None:
    """An attacker starts an issuance in their own wallet and sends the issuer's authorization link to a
    victim, who follows it on their phone (logged in to their own wallet) and logs in at the issuer: the
    victim's app does not complete someone else's issuance (nor would the API), and the attacker's
    wallet never receives the victim's credential."""
    attacker_id, victim_id = fresh_citizens(11)[9:11]
    attacker = login(system.wallet, attacker_id)
    r = httpx.post(f"{system.wallet}/v1/issuance/authorize", headers=bearer(attacker), timeout=30, json={
        "credential_issuer": f"{system.issuer}/t/aoc-tax", "credential_configuration_id": "tax-compliance",
        "redirect_uri": f"{system.wallet}/app/"})
    assert r.status_code == 200, r.text
    started = r.json()

    victim = phone()
    victim.login(victim_id)
    page = victim.page
    page.goto(started["authorization_url"])
    page.fill("#q", victim_id)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Log in as this citizen").press("Enter")
    expect(page.locator("#error")).to_be_visible(timeout=30_000)  # back in the victim's app
    mine = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(attacker), timeout=30)
    assert mine.status_code == 200 and mine.json() == [], mine.text
    offer = httpx.get(f"{system.wallet}/v1/offers/{started['offer_id']}", headers=bearer(attacker), timeout=30)
    assert offer.json()["state"] == "authorizing" and offer.json()["credential_ids"] == [], offer.text

    expect(page.locator("#error")).to_have_text("The issuer did not deliver the credential.")
    assert "completion=" not in page.url
    expect(page.locator("#cards li.card")).to_have_count(0)


def test_cancelled_or_forged_login_is_refused(system: System, phone) -> None:
    citizen = phone()
    page = citizen.page
    citizen.open()
    page.get_by_role("button", name="Log in with VÀLid").click()
    page.get_by_role("button", name="Cancel").press("Enter")
    expect(page.locator("#error")).to_have_text("The login did not succeed.")
    expect(page.locator("#login-title")).to_be_visible()
    # A callback the app did not start (no matching state) is not redeemed.
    page.goto(f"{system.wallet}/app/callback?code=forged&state=forged")
    expect(page.locator("#error")).to_have_text("The login did not succeed.")
    assert page.evaluate("sessionStorage.getItem('cartera.tokens')") is None
    assert page.url == f"{system.wallet}/app/"


def test_deferred_issuance_checked_from_the_offer_screen(system: System, phone) -> None:
    citizen = phone()
    citizen.login(DEMO_PENDING)
    page = citizen.page
    offer = make_offer(system, "uni-barcelona", "university-diploma", DEMO_PENDING, tx_code=False)
    citizen.scan(offer["offer_uri"])
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#offer-result")).to_contain_text("The issuer will deliver it later", timeout=30_000)
    citizen.shot("20-offer-pending")
    # The sandbox registry answers after a poll or two. The background sweep may deliver first, and then
    # the alert redraws the screen (the button goes away between a look and a click): both are fine.
    for _ in range(20):
        if "Added to your wallet" in page.locator("#offer-result").inner_text():
            break
        check = page.get_by_role("button", name="Check now")
        try:
            # Short timeouts throughout: the button may vanish between any two of these calls.
            if check.is_visible() and check.is_enabled(timeout=1_000):
                check.click(timeout=2_000)
        except PlaywrightTimeoutError:
            pass
        page.wait_for_timeout(500)
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=15_000)
    page.locator("#nav a[data-route=cards]").click()
    expect(page.locator("#cards li.card")).to_have_count(1)


def test_unauthenticated_verifier_is_clearly_flagged(system: System, phone) -> None:
    from urllib.parse import quote

    from ssi.oid4vp import unsigned_request_object

    citizen = phone()
    citizen.login(CITIZENS[3])
    page = citizen.page
    # A development request (unsigned, `redirect_uri:` prefix) that claims to be a city hall.
    client_id = "redirect_uri:http://127.0.0.1:9/cb"
    token = unsigned_request_object({
        "client_id": client_id, "response_uri": "http://127.0.0.1:9/cb", "response_type": "vp_token",
        "response_mode": "direct_post", "nonce": "n-web", "state": "s-web",
        "client_metadata": {"client_name": "Ajuntament de Barcelona"},
        "dcql_query": {"credentials": [{"id": "q", "format": "dc+sd-jwt", "meta": {"vct_values": ["urn:x"]}}]}})
    citizen.scan(f"openid4vp://?client_id={quote(client_id)}&request={token}")
    expect(page.locator("#verifier-name")).to_have_text("Unverified verifier", timeout=15_000)
    expect(page.locator("#verifier-warning")).to_be_visible()
    expect(page.locator("#verifier-warning")).to_contain_text("could not be confirmed")
    expect(page.locator("#verifier-box")).not_to_contain_text("Ajuntament de Barcelona")
    citizen.shot("21-consent-unverified")
    page.get_by_role("button", name="Decline").click()
    expect(page.locator("#request-result")).to_contain_text("nothing was shared")


def test_optional_part_is_shared_only_when_ticked(system: System, phone) -> None:
    identifier = fresh_citizens(9)[8]
    citizen = phone()
    citizen.login(identifier)
    for slug, type_id in (("ajuntament-girona", "padro"), ("aoc-tax", "tax-compliance")):
        _receive_by_link(citizen, make_offer(system, slug, type_id, identifier, tx_code=False))
    headers = system.verifier_headers("ajuntament-barcelona")
    templates = {t["name"]: t for t in httpx.get(f"{system.verifier}/v1/templates", headers=headers).json()}
    residence, grant = templates["residence"], templates["grant-application"]
    tax_query = {**grant["dcql_query"]["credentials"][0], "claims": [{"path": ["nif"]}]}
    r = httpx.post(f"{system.verifier}/v1/requests", headers=headers, timeout=30, json={
        "dcql_query": {"credentials": [residence["dcql_query"]["credentials"][0], tax_query],
                       "credential_sets": [{"options": [["padro"]]}, {"options": [["tax"]], "required": False}]},
        "purpose": {"en": "Residence, and tax status if you wish"},
        "trusted_issuers": residence["trusted_issuers"] + grant["trusted_issuers"],
        "anchors_pem": residence["anchors_pem"]})
    assert r.status_code == 201, r.text
    request = r.json()
    page = citizen.page
    citizen.scan(request["uri"])
    optional = page.get_by_label("Share this too (optional)")
    expect(optional).to_be_visible(timeout=15_000)
    expect(optional).not_to_be_checked()
    citizen.shot("22-consent-optional")
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#request-result")).to_contain_text("Shared with Ajuntament de Barcelona", timeout=30_000)
    result = wait_status(system, "ajuntament-barcelona", request)
    assert result["status"] == "verified", result
    assert set(result["claims"]) == {"padro"}  # the unticked optional part was not sent
