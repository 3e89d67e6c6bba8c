"""The app itself: what it serves, the progressive web app, accessibility, and the management screens."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, expect

from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, execute_sql, fresh_citizens, query_sql
from tests.wallet_api.test_e2e import receive
from tests.web_wallet.conftest import ARTIFACTS, PHONE, make_offer, new_request, wait_status

WEB = Path(__file__).resolve().parents[2] / "wallet_api" / "web"
CITIZENS = fresh_citizens(7)[4:]


def test_shell_headers_and_only_own_resources(system: System) -> None:
    with httpx.Client(base_url=system.wallet, timeout=10) as http:
        page = http.get("/app/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
        assert "camera=(self)" in page.headers["permissions-policy"]
        assert http.get("/app/callback?code=x&state=y").text == page.text
        assert http.get("/app", follow_redirects=False).headers["location"] == "/app/"
        for name in ("app.js", "app.css", "sw.js", "manifest.json", "icon.svg", "icon-192.png", "icon-512.png",
                     "vendor/jsQR.js", "vendor/jsQR.LICENSE.txt"):
            assert http.get(f"/app/{name}").status_code == 200, name
        assert http.get("/app/sw.js").headers["service-worker-allowed"] == "/app/"
        for bad in ("/app/index.htm", "/app/../app.py", "/app/%2e%2e/app.py", "/app/vendor/", "/app/web.py"):
            r = http.get(bad)
            assert r.status_code == 404 and r.json()["error"] == "not_found", bad
        manifest = http.get("/app/manifest.json").json()
        assert manifest["start_url"] == "/app/" and manifest["scope"] == "/app/"
        for icon in manifest["icons"]:
            assert http.get(icon["src"]).status_code == 200
    # Every file the page loads comes from the service itself: no URL to anywhere else, except the
    # SVG namespace and a comment in the vendored decoder.
    allowed = {"http://www.w3.org/2000/svg", "http://en.wikipedia.org/wiki/Bresenham"}
    for path in WEB.rglob("*"):
        if path.suffix in (".html", ".js", ".css", ".json", ".svg"):
            found = set(re.findall(r"https?://[^\s\"')]+", path.read_text(encoding="utf-8")))
            assert found <= allowed, (path, found - allowed)
    html = (WEB / "index.html").read_text(encoding="utf-8")
    assert set(re.findall(r'(?:src|href)="(/[^"]*)"', html)) <= {
        "/app/manifest.json", "/app/icon.svg", "/app/icon-192.png", "/app/app.css", "/app/vendor/jsQR.js",
        "/app/app.js"}
    assert "style=" not in html and "<script>" not in html and "onclick" not in html


def test_progressive_web_app_opens_offline(browser: Browser, system: System) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(f"{system.wallet}/app/")
        page.wait_for_function("navigator.serviceWorker && navigator.serviceWorker.controller !== null "
                               "|| navigator.serviceWorker.ready.then(() => true)")
        cached = page.evaluate("""async () => {
            await navigator.serviceWorker.ready;
            const cache = await caches.open('cartera-shell-v2');
            for (let i = 0; i < 50 && (await cache.keys()).length < 8; i++) { await new Promise(r => setTimeout(r, 100)); }
            return (await cache.keys()).map(r => new URL(r.url).pathname);
        }""")
        assert "/app/" in cached and "/app/vendor/jsQR.js" in cached
        assert not [p for p in cached if p.startswith("/v1/")]
        page.reload()  # now controlled by the worker
        page.wait_for_function("navigator.serviceWorker.controller !== null")
        context.set_offline(True)
        page.reload()
        expect(page.locator("#login-title")).to_be_visible()
        expect(page.locator("#error")).to_be_visible()  # the providers cannot be listed offline: said so
    finally:
        context.close()


def _luminance(rgb: tuple[float, ...]) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


CONTRAST_JS = """() => {
  const parse = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const background = el => {
    for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) { return c.slice(0, 3); }
    }
    return [255, 255, 255];
  };
  const out = [];
  document.querySelectorAll('body *').forEach(el => {
    if (!el.offsetParent && getComputedStyle(el).position !== 'fixed') { return; }
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own) { return; }
    const style = getComputedStyle(el);
    out.push({text: el.textContent.trim().slice(0, 40), fg: parse(style.color).slice(0, 3), bg: background(el),
              size: parseFloat(style.fontSize), bold: Number(style.fontWeight) >= 700});
  });
  return out;
}"""


def test_accessibility_labels_keyboard_and_contrast(system: System, phone) -> None:
    citizen = phone()
    citizen.login(CITIZENS[0])
    page = citizen.page
    offer = make_offer(system, "aoc-tax", "working-life", CITIZENS[0], tx_code=False)
    citizen.scan(offer["offer_uri"])
    expect(page.locator("#offer-accept")).to_be_visible(timeout=15_000)
    # Keyboard only: the accept button is reachable with Tab and works with Enter.
    page.locator("#offer-title").focus()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "offer-accept":
            break
    assert page.evaluate("document.activeElement.id") == "offer-accept"
    page.keyboard.press("Enter")
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=30_000)
    page.locator("#nav a[data-route=cards]").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#cards li.card")).to_have_count(1)
    # The skip link is the first stop and leads to the content.
    page.reload()
    expect(page.locator("#cards li.card")).to_have_count(1)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Every form control of every screen has a label.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.id)""")
    assert unlabelled == []
    # WCAG 2.1 AA contrast for every visible text on the main screens (4.5:1, 3:1 for large text).
    failures = []
    loaded = {"cards": "#cards li", "scan": "#link", "history": "#history li", "alerts": "#alerts li",
              "settings": "#logins li"}
    for route, selector in loaded.items():
        page.locator(f"#nav a[data-route={route}]").click()
        expect(page.locator(f"#view-{route}")).to_be_visible()
        expect(page.locator(selector).first).to_be_visible()
        for item in page.evaluate(CONTRAST_JS):
            ratio = _contrast(tuple(item["fg"]), tuple(item["bg"]))
            large = item["size"] >= 24 or (item["bold"] and item["size"] >= 18.66)
            if ratio < (3 if large else 4.5):
                failures.append((route, item["text"], round(ratio, 2)))
    assert failures == []


def test_delete_backup_history_and_logins(system: System, phone, tmp_path: Path) -> None:
    citizen = phone()
    citizen.login(CITIZENS[1])
    page = citizen.page
    offer = make_offer(system, "ajuntament-girona", "padro", CITIZENS[1], tx_code=False)
    citizen.scan(offer["offer_uri"])
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=30_000)

    page.locator("#nav a[data-route=settings]").click()
    expect(page.locator("#logins li").first).to_contain_text("idcatmobil")
    expect(page.locator("#logins li").first).to_contain_text("this session")
    expect(page.locator("#me")).to_contain_text(CITIZENS[1])
    citizen.shot("16-me")
    page.fill("#export-pass", "correct horse battery")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export a backup").click()
    saved = tmp_path / "backup.json"
    download.value.save_as(saved)
    backup = json.loads(saved.read_text())
    assert backup["format"] == "cartera-wallet-backup" and CITIZENS[1] not in saved.read_text()
    expect(page.locator("#status")).to_have_text("Backup exported.")

    page.locator("#nav a[data-route=cards]").click()
    page.locator("#cards li.card h3 a").click()
    expect(page.locator("#card-status")).to_have_text("Valid")
    page.get_by_role("button", name="Delete this credential").click()
    page.get_by_role("button", name="Yes, delete it for good").click()
    expect(page.locator("#cards-empty")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Credential deleted.")
    page.locator("#nav a[data-route=history]").click()
    expect(page.locator("#history li.deletion")).to_have_count(1)
    expect(page.locator("#history li.receipt")).to_have_count(1)
    citizen.shot("17-history")

    page.locator("#nav a[data-route=settings]").click()
    page.set_input_files("#import-file", str(saved))
    page.fill("#import-pass", "wrong passphrase!")
    page.get_by_role("button", name="Import a backup").click()
    expect(page.locator("#error")).to_have_text("The passphrase or the file is not correct.", timeout=30_000)
    page.fill("#import-pass", "correct horse battery")
    page.get_by_role("button", name="Import a backup").click()
    expect(page.locator("#status")).to_have_text(re.compile(r"Backup imported: [1-9]"), timeout=30_000)
    page.locator("#nav a[data-route=cards]").click()
    expect(page.locator("#cards li.card")).to_have_count(1)
    # The restore is in the history; the receipt the wallet kept is not imported a second time.
    page.locator("#nav a[data-route=history]").click()
    expect(page.locator("#history li.restore")).to_contain_text("Backup restored")
    expect(page.locator("#history li.restore")).to_contain_text("1 credentials restored")
    expect(page.locator("#history li.receipt")).to_have_count(1)
    expect(page.locator("#history li.imported")).to_have_count(0)

    page.locator("#nav a[data-route=settings]").click()
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-title")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('cartera.tokens')") is None


def test_desktop_layout(browser: Browser, system: System) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="ca-ES")
    try:
        page = context.new_page()
        page.goto(f"{system.wallet}/app/")
        expect(page.locator("#login-title")).to_have_text("Les teves credencials, al mòbil")
        box = page.locator("#view-login").bounding_box()
        assert box is not None and box["width"] <= 760  # a readable column, centred, not stretched
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "18-desktop-login.png"))
    finally:
        context.close()


def test_pin_history_search_and_ending_another_session(system: System, phone) -> None:
    citizen, other = phone(), phone()
    citizen.login(CITIZENS[2])
    other.login(CITIZENS[2])  # the same citizen on a second device
    page = citizen.page
    offer = make_offer(system, "ajuntament-girona", "padro", CITIZENS[2], tx_code=False)
    citizen.scan(offer["offer_uri"])
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#offer-result")).to_contain_text("Added to your wallet", timeout=30_000)

    page.locator("#nav a[data-route=settings]").click()
    expect(page.locator("#pin-state")).to_have_text("Sharing asks for no PIN.")
    page.fill("#new-pin", "12ab")
    page.get_by_role("button", name="Save the PIN").click()  # the browser itself refuses it (pattern)
    assert page.eval_on_selector("#new-pin", "el => el.validity.patternMismatch")
    expect(page.locator("#pin-state")).to_have_text("Sharing asks for no PIN.")
    page.fill("#new-pin", "2468")
    page.get_by_role("button", name="Save the PIN").click()
    expect(page.locator("#status")).to_have_text("PIN saved.")
    expect(page.locator("#pin-state")).to_have_text("Sharing asks for the PIN.")
    expect(page.locator("#current-pin")).to_be_visible()

    request = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(request["uri"])
    expect(page.locator("#pin")).to_be_visible(timeout=15_000)
    page.fill("#pin", "1111")
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#error")).to_have_text("The PIN is not correct.")
    assert wait_status(system, "ajuntament-barcelona", request, timeout=0.5)["status"] == "pending"
    page.fill("#pin", "2468")
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#request-result")).to_have_text("Shared with Ajuntament de Barcelona.", timeout=30_000)
    assert wait_status(system, "ajuntament-barcelona", request)["status"] == "verified"

    # Exporting hands out the holder keys: with a PIN set it asks for it, as sharing does.
    page.locator("#nav a[data-route=settings]").click()
    page.fill("#export-pass", "correct horse battery")
    page.fill("#export-pin", "1111")
    page.get_by_role("button", name="Export a backup").click()
    expect(page.locator("#error")).to_have_text("The PIN is not correct.")
    page.fill("#export-pass", "correct horse battery")
    page.fill("#export-pin", "2468")
    with page.expect_download():
        page.get_by_role("button", name="Export a backup").click()
    expect(page.locator("#status")).to_have_text("Backup exported.")

    page.locator("#nav a[data-route=history]").click()
    page.fill("#history-q", "Barcelona")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#history li.share")).to_have_count(1)
    expect(page.locator("#history li.receipt")).to_have_count(0)
    page.fill("#history-q", "no such text anywhere")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#history li")).to_have_text(["Nothing yet."])

    # End the other device's session from this one: the other device is back at the login screen.
    page.locator("#nav a[data-route=settings]").click()
    page.get_by_role("button", name="End this session").click()
    expect(page.locator("#status")).to_have_text("Session ended.")
    expect(page.get_by_role("button", name="End this session")).to_have_count(0)
    other.page.locator("#nav a[data-route=history]").click()
    expect(other.page.locator("#login-title")).to_be_visible()


def test_calls_that_meet_a_stale_token_together_refresh_it_once(system: System, phone) -> None:
    """A refresh token is good for one use, and the server ends the session at a second (a stolen
    token's sign): the settings page loads two things at once, and both share one refresh."""
    citizen = phone(service_workers="block")  # the route below must see the app's own requests
    citizen.login(CITIZENS[0])
    page = citizen.page
    page.locator("#nav a[data-route=settings]").click()
    expect(page.locator("#me")).to_contain_text(CITIZENS[0])
    page.evaluate("""() => {
        const t = JSON.parse(sessionStorage.getItem("cartera.tokens"));
        t.access = "no-longer-valid";
        sessionStorage.setItem("cartera.tokens", JSON.stringify(t));
    }""")
    refreshes: list[str] = []

    def slow_refresh(route: Any) -> None:
        # Held back a little, so that both calls meet their 401 before the first refresh is done.
        refreshes.append(route.request.url)
        time.sleep(0.5)
        route.continue_()

    page.route("**/v1/auth/token", slow_refresh)
    page.locator("#nav a[data-route=history]").click()
    page.locator("#nav a[data-route=settings]").click()
    # Until the refresh is through (the page still shows what it loaded before).
    read_tokens = "() => JSON.parse(sessionStorage.getItem('cartera.tokens'))"
    for _ in range(150):
        tokens = page.evaluate(read_tokens)
        if tokens is None or tokens["access"] != "no-longer-valid":
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(1000)  # a second refresh, if any, would be out by now
    tokens = page.evaluate(read_tokens)
    assert len(refreshes) == 1
    # The session lives: a second use of the refresh token would have ended it.
    assert tokens is not None
    me = httpx.get(f"{system.wallet}/v1/me", headers={"Authorization": f"Bearer {tokens['access']}"})
    assert me.status_code == 200, me.text
    page.locator("#nav a[data-route=cards]").click()
    expect(page.locator("#login-title")).to_be_hidden()


def test_switching_language_while_the_login_loads_lists_each_provider_once(system: System, phone) -> None:
    providers = httpx.get(f"{system.wallet}/v1/auth/providers").json()
    citizen = phone(service_workers="block")  # the route below must see the app's own requests
    page = citizen.page
    held: list[Any] = []
    page.route("**/v1/auth/providers", lambda route: held.append(route))  # answered below, once both renders asked
    citizen.open()
    page.select_option("#lang", "ca")
    for _ in range(100):
        if len(held) == 2:
            break
        page.wait_for_timeout(50)
    assert len(held) == 2
    held[1].continue_()  # the Catalan render's answer, then the earlier one, late
    expect(page.get_by_role("button", name="Inicia la sessió amb VÀLid")).to_have_count(1)
    held[0].continue_()
    page.wait_for_timeout(1000)
    expect(page.locator("#providers button")).to_have_count(len(providers))
    expect(page.get_by_role("button", name="Inicia la sessió amb VÀLid")).to_have_count(1)


def _tab_copied_from(context, stored: str):
    """A new tab starting with a copy of another's sessionStorage (``stored``, its JSON), as the browser's
    "Duplicate tab" and a restored session make it."""
    page = context.new_page()
    page.add_init_script(f"""(() => {{
        const copied = {stored};
        if (!sessionStorage.getItem("cartera.tab")) {{
            for (const key in copied) sessionStorage.setItem(key, copied[key]);
        }}
    }})()""")
    return page


def test_a_tab_and_its_copy_restored_at_once_leave_exactly_one_logged_in(system: System, phone) -> None:
    """A browser restoring a tab and its duplicate loads both at once, with one sessionStorage copied:
    neither has settled its id when the other asks. Exactly one keeps the session; the other is the copy."""
    citizen = phone()
    citizen.login(CITIZENS[2])
    stored = citizen.page.evaluate("() => JSON.stringify(Object.assign({}, sessionStorage))")
    citizen.page.close()
    restored = []
    for _ in range(2):
        restored.append(_tab_copied_from(citizen.context, stored))
    for page in restored:  # both navigations under way before either page has loaded
        page.goto(f"{system.wallet}/app/#/cards", wait_until="commit")
    for page in restored:
        page.wait_for_function("() => document.querySelector('#view-login:not([hidden])') || "
                               "document.querySelector('#view-cards:not([hidden])')")
    time.sleep(0.5)  # past both tabs' question: nothing changes any more
    kept = [p.evaluate("() => sessionStorage.getItem('cartera.tokens')") is not None for p in restored]
    assert sorted(kept) == [False, True], kept
    copy = restored[kept.index(False)]
    expect(copy.locator("#error")).to_contain_text("copy of another")
    ids = {p.evaluate("() => sessionStorage.getItem('cartera.tab')") for p in restored}
    assert len(ids) == 2


def test_a_duplicated_tab_logs_in_afresh_and_leaves_the_first_one_logged_in(system: System, phone) -> None:
    """Duplicating a tab copies its sessionStorage, refresh token included; whichever copy refreshed
    second would end the session for both. The copy finds its tab id taken and forgets the tokens; the
    first tab goes on, refreshes and keeps its session; a reload is no copy."""
    citizen = phone()
    citizen.login(CITIZENS[1])
    first = citizen.page
    stored = first.evaluate("() => JSON.stringify(Object.assign({}, sessionStorage))")
    copy = _tab_copied_from(citizen.context, stored)
    copy.goto(f"{system.wallet}/app/#/cards")
    expect(copy.locator("#view-login")).to_be_visible()
    expect(copy.locator("#error")).to_contain_text("copy of another")
    assert copy.evaluate("() => sessionStorage.getItem('cartera.tokens')") is None
    # The first tab refreshes (its access token made stale) and its session lives on.
    first.evaluate("""() => {
        const t = JSON.parse(sessionStorage.getItem("cartera.tokens"));
        t.access = "no-longer-valid";
        sessionStorage.setItem("cartera.tokens", JSON.stringify(t));
    }""")
    first.locator("#nav a[data-route=settings]").click()
    expect(first.locator("#me")).to_contain_text(CITIZENS[1])
    tokens = first.evaluate("() => JSON.parse(sessionStorage.getItem('cartera.tokens'))")
    me = httpx.get(f"{system.wallet}/v1/me", headers={"Authorization": f"Bearer {tokens['access']}"})
    assert me.status_code == 200, me.text
    # A reload is the same tab: it keeps its tokens.
    first.reload()
    first.locator("#nav a[data-route=settings]").click()
    expect(first.locator("#me")).to_contain_text(CITIZENS[1])


UNREADABLE_CITIZEN = fresh_citizens(18)[17]  # the web wallet's other tests use the first 17


def test_a_history_entry_that_does_not_open_shows_as_unreadable(system: System, phone) -> None:
    tokens = login(system.wallet, UNREADABLE_CITIZEN)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", UNREADABLE_CITIZEN))
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", UNREADABLE_CITIZEN))
    history = httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens), timeout=30).json()
    broken = history[-1]["id"]  # the padró's receipt, the oldest
    [(sealed,)] = query_sql(system, "SELECT sealed FROM history WHERE id = ?", broken)
    execute_sql(system, "UPDATE history SET sealed = ? WHERE id = ?", sealed[:-1] + bytes([sealed[-1] ^ 1]), broken)

    citizen = phone()
    citizen.login(UNREADABLE_CITIZEN)
    page = citizen.page
    page.locator("#nav a[data-route=history]").click()
    expect(page.locator("#history li.receipt")).to_have_count(2)
    unreadable = page.locator("#history li.unreadable")
    expect(unreadable).to_have_count(1)
    expect(unreadable).to_contain_text("Received")
    expect(unreadable.locator(".meta")).to_have_text("This entry cannot be read.")
    expect(page.locator("#history li.receipt").first).not_to_contain_text("cannot be read")
    expect(page.locator("#error")).to_be_hidden()
    assert citizen.errors == []


UNREADABLE_CARD_CITIZEN = fresh_citizens(20)[19]  # 17 and 18 are taken by the tests above and beside


def test_a_credential_that_does_not_open_is_shown_as_such_and_can_be_deleted(system: System, phone) -> None:
    tokens = login(system.wallet, UNREADABLE_CARD_CITIZEN)
    padro = receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", UNREADABLE_CARD_CITIZEN))
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", UNREADABLE_CARD_CITIZEN))
    broken = padro["credential_ids"][0]
    [(sealed,)] = query_sql(system, "SELECT sealed FROM credentials WHERE id = ?", broken)
    execute_sql(system, "UPDATE credentials SET sealed = ? WHERE id = ?", sealed[:-1] + bytes([sealed[-1] ^ 1]), broken)

    citizen = phone()
    citizen.login(UNREADABLE_CARD_CITIZEN)
    page = citizen.page
    expect(page.locator("#cards li.card")).to_have_count(2)
    card = page.locator(f"#cards li.card[data-id='{broken}']")
    expect(card).to_have_class(re.compile(r"\bunreadable\b"))
    expect(card.locator(".unreadable-note")).to_have_text(
        "This credential's data cannot be read. Delete it and receive it again.")
    expect(card.locator("a")).to_have_count(0)  # no detail screen that could only fail
    expect(page.locator("#cards li.card:not(.unreadable) a")).to_have_count(1)
    card.locator("button").click()
    card.locator("button").click()  # the second step confirms
    expect(page.locator("#cards li.card")).to_have_count(1)
    expect(page.locator("#cards li.unreadable")).to_have_count(0)
    expect(page.locator("#error")).to_be_hidden()
    assert citizen.errors == []
    left = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens), timeout=30).json()
    assert len(left) == 1 and left[0]["id"] != broken
