"""What stays in the browser: after logout, no screen holds the citizen's data and the HTTP cache holds
none of the API's answers; the service worker keeps no address that carries a one-time secret (real
services, headless Chromium)."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.wallet_api.system import System, fresh_citizens
from tests.wallet_api.test_e2e import make_offer, receive
from tests.web_wallet.conftest import PHONE, new_request

LOGOUT_CITIZEN = fresh_citizens(12)[11]  # the others' tests use the first eleven

#: Each URL as the browser's HTTP cache alone would answer it (``only-if-cached``: no network).
PROBE = """async (urls) => {
  const out = {};
  for (const u of urls) {
    try {
      const r = await fetch(u, {cache: 'only-if-cached', mode: 'same-origin'});
      out[u] = 'cached: ' + r.status + ' ' + (await r.text()).slice(0, 80);
    } catch (e) { out[u] = 'not cached'; }
  }
  return out;
}"""
CACHES = """async () => {
  const out = [];
  for (const name of await caches.keys()) {
    for (const r of await (await caches.open(name)).keys()) { out.push(r.url); }
  }
  return out;
}"""


def test_logout_leaves_no_citizen_data_in_the_page_or_the_http_cache(system: System, phone) -> None:
    citizen = phone()
    citizen.login(LOGOUT_CITIZEN)
    page = citizen.page
    tokens = {"access_token": page.evaluate("JSON.parse(sessionStorage.getItem('cartera.tokens')).access")}
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", LOGOUT_CITIZEN))
    # The citizen looks at everything: a card, the history, a consent screen, their logins.
    page.locator("#nav a[data-route=cards]").click()
    page.locator("#cards li.card h3 a").click()
    expect(page.locator("#card-claims dt").first).to_be_visible(timeout=15_000)
    credential_id = page.evaluate("location.hash").split("/")[-1]
    page.locator("#nav a[data-route=history]").click()
    expect(page.locator("#history li.receipt")).to_have_count(1)
    citizen.scan(new_request(system, "ajuntament-barcelona", "residence")["uri"])
    expect(page.locator("#request-queries dd").first).to_be_visible(timeout=15_000)
    page.locator("#nav a[data-route=settings]").click()
    expect(page.locator("#me")).to_contain_text(LOGOUT_CITIZEN)
    expect(page.locator("#logins li").first).to_be_visible()
    urls = [f"/v1/credentials/{credential_id}", "/v1/credentials", "/v1/me", "/v1/history",
            "/v1/me/logins?limit=20", "/v1/alerts?unread=true"]

    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-title")).to_be_visible()
    # Nothing in the page: the Back button would show the hidden screens' content again.
    for selector in ("#cards", "#card-title", "#card-claims", "#history", "#me", "#logins", "#verifier-name",
                     "#request-purpose", "#request-queries", "#offer-credentials", "#alerts"):
        assert page.locator(selector).text_content() == "", selector
    page.go_back()
    expect(page.locator("#login-title")).to_be_visible()
    assert page.locator("#card-claims").text_content() == ""
    # Nothing in the HTTP cache either.
    probed = page.evaluate(PROBE, urls)
    assert probed == {u: "not cached" for u in urls}, probed


def test_the_service_worker_keeps_no_address_with_a_secret(browser: Browser, system: System) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="en-GB")
    try:
        page = context.new_page()
        page.goto(f"{system.wallet}/app/")
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        page.reload()  # now controlled by the worker
        page.wait_for_function("navigator.serviceWorker.controller !== null")
        # The issuer's return to the app (an issuance this tab did not start: refused) and a login
        # callback (a forged one): both addresses carry one-time secrets.
        page.goto(f"{system.wallet}/app/?offer_id=offer-secret&completion=completion-secret")
        expect(page.locator("#error")).to_have_text("The issuer did not deliver the credential.")
        page.goto(f"{system.wallet}/app/callback?code=code-secret&state=state-secret")
        expect(page.locator("#error")).to_have_text("The login did not succeed.")
        page.wait_for_timeout(1500)  # the worker stores its copies after answering
        cached = page.evaluate(CACHES)
        assert f"{system.wallet}/app/" in cached
        assert not [u for u in cached if "?" in u or "secret" in u], cached
    finally:
        context.close()
