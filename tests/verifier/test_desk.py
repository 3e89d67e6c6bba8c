"""The desk page in headless Chromium (Playwright with Debian's /usr/bin/chromium): QR shown → result shown."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def _open_desk(browser, verifier, lang):
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{verifier.url}/desk?lang={lang}")
    page.fill("#api-key", verifier.agencies["ajuntament-barcelona"]["api_key"])
    page.click("#connect")
    expect(page.locator("#template")).to_contain_text("grant-application")
    page.select_option("#template", "grant-application")
    page.click("#show")
    expect(page.locator("#qr svg")).to_be_visible()
    return page, errors


def test_desk_from_qr_to_verified_claims(browser, verifier, wallet, creds):
    page, errors = _open_desk(browser, verifier, "en")
    expect(page.locator("#status")).to_have_text("Waiting for the answer")
    uri = page.get_attribute("#same-device", "href")
    assert uri.startswith("openid4vp://")
    assert wallet.present(uri, [creds.tax()]).status_code == 200
    expect(page.locator("#status")).to_have_text("Verified", timeout=10_000)
    expect(page.locator("#outcome")).to_contain_text("12345678Z")
    expect(page.locator("#outcome")).to_contain_text("complianceStatus")
    assert not [e for e in errors if "Content Security Policy" in e]
    page.close()


def test_desk_shows_rejection_reasons_in_catalan(browser, verifier, wallet, creds, pki):
    page, errors = _open_desk(browser, verifier, "ca")
    uri = page.get_attribute("#same-device", "href")
    assert wallet.present(uri, [creds.tax(key=pki.rogue_key, x5c=pki.rogue_x5c)]).status_code == 400
    expect(page.locator("#status")).to_have_text("Rebutjat", timeout=10_000)
    expect(page.locator("#outcome")).to_contain_text("verifier.untrusted_issuer")
    assert page.locator("h1").inner_text() == "Taulell de verificació"
    page.close()


def test_desk_page_headers(http, verifier):
    response = http.get(f"{verifier.url}/desk", headers={"Accept-Language": "es-ES,es;q=0.9"})
    assert response.status_code == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert '<html lang="es">' in response.text
    assert "http" not in response.text.replace(verifier.url, "").split("<body>")[0].replace('http-equiv', '')
    assert http.get(f"{verifier.url}/desk/static/other.js").status_code == 404


def test_desk_makes_one_request_per_press_and_forgets_the_key_on_disconnect(browser, verifier):
    page = browser.new_page()
    created: list[str] = []
    page.on("request", lambda r: created.append(r.url) if r.method == "POST" and r.url.endswith("/v1/requests") else None)
    page.goto(f"{verifier.url}/desk?lang=en")
    # A key the service refuses is not kept in the tab.
    page.fill("#api-key", "not-an-agency-key")
    page.click("#connect")
    expect(page.locator("#message")).to_have_text("Invalid key")
    assert page.evaluate("sessionStorage.getItem('verifierKey')") is None
    expect(page.locator("#disconnect")).to_be_hidden()

    key = verifier.agencies["ajuntament-barcelona"]["api_key"]
    page.fill("#api-key", key)
    page.click("#connect")
    expect(page.locator("#template")).to_contain_text("grant-application")
    assert page.evaluate("sessionStorage.getItem('verifierKey')") == key
    # A double click creates one request, not two.
    page.dblclick("#show")
    expect(page.locator("#qr svg")).to_be_visible()
    page.wait_for_timeout(1000)  # a second request, if any, would be out by now
    assert len(created) == 1, created

    # Disconnect: the key leaves the tab; reloading the page does not connect again.
    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#request")).to_be_hidden()
    expect(page.locator("#ask")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('verifierKey')") is None
    page.reload()
    page.wait_for_timeout(500)
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#ask")).to_be_hidden()
    page.close()
