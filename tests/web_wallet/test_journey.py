"""The citizen's journey in the web wallet on a 360-px phone: log in through VÀLid, receive a diploma by
pointing the camera at the offer QR, share it with the verifier's desk page by its QR, see the verified
claims appear on the desk."""

from __future__ import annotations

import io

import httpx
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, expect

from sandbox.population import DEMO_EVERYTHING
from tests.wallet_api.system import System
from tests.web_wallet.conftest import ARTIFACTS, make_offer, offer_qr_png, write_y4m


def test_full_journey_offer_qr_to_desk_verified(browser: Browser, system: System, phone, camera_file) -> None:
    citizen = phone()
    citizen.open()
    expect(citizen.page.locator("#login-title")).to_have_text("Your credentials, on your phone")
    citizen.shot("01-login")
    citizen.login(DEMO_EVERYTHING)
    citizen.shot("02-cards")

    # The university shows an offer QR; the phone's camera sees it.
    offer = make_offer(system, "uni-barcelona", "university-diploma", DEMO_EVERYTHING)
    write_y4m(camera_file, offer_qr_png(offer))
    page = citizen.page
    page.locator("#nav").get_by_role("link", name="Scan", exact=True).click()
    expect(page.locator("#scan-title")).to_be_visible()
    citizen.shot("03-scan")
    page.get_by_role("button", name="Use the camera").click()
    expect(page.locator("#offer-title")).to_be_visible(timeout=15_000)
    expect(page.locator("#offer-issuer")).not_to_be_empty()
    expect(page.locator("#tx-code")).to_be_visible()
    citizen.shot("04-offer")
    page.fill("#tx-code", offer["tx_code"])
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=30_000)
    page.get_by_role("link", name="Show the credential").click()
    expect(page.locator("#card-status")).to_have_text("Valid")
    expect(page.locator("#card-claims")).not_to_be_empty()
    citizen.shot("05-card")
    detail_title = page.locator("#card-title").inner_text()
    page.locator("#nav").get_by_role("link", name="Cards", exact=True).click()
    expect(page.locator("#cards li.card").first).to_contain_text(detail_title)
    expect(page.locator("#cards .badge").first).to_have_text("Valid")

    # The agency's desk page, in another window, shows the request QR.
    desk = browser.new_page(viewport={"width": 1000, "height": 900})
    desk.goto(f"{system.verifier}/desk?lang=en")
    desk.fill("#api-key", system.agencies["uni-admissions"]["api_key"])
    desk.click("#connect")
    expect(desk.locator("#template")).to_contain_text("job-application")
    desk.select_option("#template", "job-application")
    desk.click("#show")
    expect(desk.locator("#qr svg")).to_be_visible()
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(desk.locator("#qr").screenshot())))
    texts = {b.text for b in found if b.format == zxingcpp.BarcodeFormat.QRCode}
    assert len(texts) == 1, texts  # one request (the desk may briefly draw its code twice while it swaps)
    request_uri = texts.pop()
    assert request_uri.startswith("openid4vp://")

    # The phone's scanner hands the decoded text to the app; the consent screen says who and why.
    citizen.scan(request_uri)
    expect(page.locator("#request-title")).to_be_visible(timeout=15_000)
    expect(page.locator("#verifier-name")).to_have_text("University Admissions Office (verified identity)")
    expect(page.locator("#verifier-warning")).to_be_hidden()
    expect(page.locator("#request-purpose")).to_have_text("Job application: university degree")
    queries = page.locator("#request-queries")
    expect(queries.locator("dt")).to_have_count(2)
    shown_values = queries.locator("dd").all_inner_texts()
    assert all(v.strip() and v != "—" for v in shown_values)
    citizen.shot("06-consent")
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#request-result")).to_contain_text("Shared with University Admissions Office", timeout=30_000)
    citizen.shot("07-shared")

    # The desk shows the verified claims: the very values the citizen saw on the consent screen.
    expect(desk.locator("#status")).to_have_text("Verified", timeout=15_000)
    for value in shown_values:
        expect(desk.locator("#outcome")).to_contain_text(value)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    desk.screenshot(path=str(ARTIFACTS / "08-desk-verified.png"), full_page=True)

    page.locator("#nav").get_by_role("link", name="History", exact=True).click()
    expect(page.locator("#history li.share").first).to_contain_text("University Admissions Office")
    expect(page.locator("#history li.receipt").first).to_be_visible()
    citizen.shot("09-history")
    assert not citizen.csp_errors(), citizen.errors
    desk.close()

    # Nothing that the page did bypassed the API: the credential is there for any other client too.
    assert httpx.get(f"{system.wallet}/app/app.js").status_code == 200
