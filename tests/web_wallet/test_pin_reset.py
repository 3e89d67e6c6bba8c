"""A citizen who forgot the wallet PIN, or locked it, resets it in the web wallet: "Forgot your PIN?" where
the PIN is asked, a screen that says the reset needs a fresh login at the identity provider and ends the
other sessions, that login, the new PIN typed twice, the outcome. The API's own answers (a login no
longer fresh, a PIN against the rules) and a network failure are said clearly (real services, headless
Chromium)."""

from __future__ import annotations

import datetime as dt

import httpx
from playwright.sync_api import Page, expect

from tests.wallet_api.conftest import bearer
from tests.wallet_api.system import System, execute_sql, fresh_citizens
from tests.wallet_api.test_e2e import make_offer, receive
from tests.web_wallet.conftest import new_request, wait_status

CONSENT_CITIZEN, SETTINGS_CITIZEN, LOCKED_OUT_CITIZEN = fresh_citizens(16)[13:16]  # others use the first 13


def _tokens(page: Page) -> dict[str, str]:
    return {"access_token": page.evaluate("JSON.parse(sessionStorage.getItem('cartera.tokens')).access")}


def _set_pin(page: Page, pin: str) -> None:
    page.locator("#nav a[data-route=settings]").click()
    expect(page.locator("#pin-state")).to_have_text("Sharing asks for no PIN.")
    page.fill("#new-pin", pin)
    page.get_by_role("button", name="Save the PIN").click()
    expect(page.locator("#status")).to_have_text("PIN saved.")
    expect(page.locator("#current-pin")).to_be_visible()


def _age_logins(system: System, page: Page, minutes: int) -> None:
    """Make every login of this tab's wallet ``minutes`` old: the citizen waited that long."""
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(_tokens(page)), timeout=10).json()["wallet_id"]
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.%f")
    execute_sql(system, "UPDATE sessions SET created_at = ? WHERE wallet_id = ?", when, wallet_id)


def _nothing_secret_left(page: Page, pins: tuple[str, ...]) -> None:
    """No PIN in any field or in the page, and nothing in the tab's storage but its tokens and its id."""
    assert page.evaluate("[...document.querySelectorAll('input')].map(i => i.value).filter(Boolean)") == []
    html = page.content()
    assert not [pin for pin in pins if pin in html]
    assert page.evaluate("Object.keys(sessionStorage).sort()") == ["cartera.tab", "cartera.tokens"]
    assert set(page.evaluate("Object.keys(localStorage)")) <= {"cartera.lang"}


def test_a_pin_locked_on_the_consent_screen_is_reset_after_a_fresh_login_and_the_other_device_is_logged_out(
        system: System, phone) -> None:
    citizen, other = phone(), phone()
    citizen.login(CONSENT_CITIZEN)
    other.login(CONSENT_CITIZEN)  # the same citizen's other device
    page = citizen.page
    receive(system, _tokens(page), make_offer(system, "ajuntament-girona", "padro", CONSENT_CITIZEN))
    _set_pin(page, "2468")

    request = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(request["uri"])
    expect(page.locator("#pin")).to_be_visible(timeout=15_000)
    forgot = page.get_by_role("link", name="Forgot your PIN?")
    expect(forgot).to_be_visible()
    # The citizen does not remember the PIN: five wrong guesses lock it, and the screen offers the reset.
    for guess in ("1111", "1234", "0000", "1357", "9999"):
        page.fill("#pin", guess)
        page.get_by_role("button", name="Share").click()
        if guess != "9999":
            expect(page.locator("#error")).to_have_text("The PIN is not correct.")
    expect(page.locator("#error")).to_have_text(
        "Too many attempts: try again later, or reset your PIN (“Forgot your PIN?”).")
    expect(forgot).to_be_focused()
    expect(page.get_by_role("button", name="Decline")).to_be_enabled()
    citizen.shot("30-pin-locked")

    page.keyboard.press("Enter")  # follows the focused link
    expect(page.locator("#pin-reset-title")).to_have_text("Reset your PIN")
    screen = page.locator("#view-pin-reset")
    expect(screen).to_contain_text("First you log in again with your identity provider")
    expect(screen).to_contain_text("other devices and browsers will have to log in again")
    expect(page.locator("#reset-form")).to_be_hidden()
    citizen.shot("31-pin-reset-explained")
    page.get_by_role("button", name="Log in again with VÀLid").click()
    citizen.at_idp(CONSENT_CITIZEN)
    page.wait_for_url(f"{system.wallet}/app/#/pin-reset")
    expect(page.get_by_label("New PIN", exact=True)).to_be_focused()
    expect(page.locator("#reset-who")).to_contain_text(CONSENT_CITIZEN)
    page.get_by_label("New PIN", exact=True).fill("97531")
    page.get_by_label("Repeat the new PIN").fill("97531")
    citizen.shot("32-pin-reset-new-pin")
    page.get_by_role("button", name="Save the new PIN").click()
    done = page.locator("#reset-done")
    expect(done).to_have_text("Your new PIN is saved. Your wallet's other sessions were ended.")
    expect(done).to_be_focused()
    citizen.shot("33-pin-reset-done")
    _nothing_secret_left(page, ("97531", "2468"))
    assert citizen.csp_errors() == []

    # The other device's session was ended: its next step is the login screen.
    other.page.locator("#nav a[data-route=history]").click()
    expect(other.page.locator("#login-title")).to_be_visible()

    # Back at the request (still pending, the lock lifted): the old PIN no longer works, the new one does.
    assert wait_status(system, "ajuntament-barcelona", request, timeout=0.5)["status"] == "pending"
    page.get_by_role("link", name="Back to the request").click()
    expect(page.locator("#pin")).to_be_visible(timeout=15_000)
    page.fill("#pin", "2468")
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#error")).to_have_text("The PIN is not correct.")
    assert wait_status(system, "ajuntament-barcelona", request, timeout=0.5)["status"] == "pending"
    page.fill("#pin", "97531")
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#request-result")).to_have_text("Shared with Ajuntament de Barcelona.", timeout=30_000)
    assert wait_status(system, "ajuntament-barcelona", request)["status"] == "verified"
    expect(page.locator("#pin")).to_have_value("")
    page.locator("#nav a[data-route=alerts]").click()
    expect(page.locator("#alerts")).to_contain_text("PIN reset")


def test_a_reset_from_the_settings_says_when_the_login_is_not_fresh_the_rules_and_a_network_failure(
        system: System, phone) -> None:
    citizen = phone()
    citizen.login(SETTINGS_CITIZEN)
    page = citizen.page
    _set_pin(page, "2468")
    page.locator("#forgot-pin-settings").click()
    expect(page.locator("#pin-reset-title")).to_be_focused()
    expect(page.locator("#nav a[data-route=settings]")).to_have_attribute("aria-current", "page")
    # Said in each of the app's languages.
    for lang, title, button in (("ca", "Restableix el PIN", "Torna a iniciar la sessió amb VÀLid"),
                                ("es", "Restablecer el PIN", "Volver a iniciar sesión con VÀLid"),
                                ("en", "Reset your PIN", "Log in again with VÀLid")):
        page.select_option("#lang", lang)
        expect(page.locator("#pin-reset-title")).to_have_text(title)
        expect(page.get_by_role("button", name=button)).to_be_visible()
    page.get_by_role("button", name="Log in again with VÀLid").click()
    citizen.at_idp(SETTINGS_CITIZEN)
    page.wait_for_url(f"{system.wallet}/app/#/pin-reset")
    new, again, save = (page.get_by_label("New PIN", exact=True), page.get_by_label("Repeat the new PIN"),
                        page.get_by_role("button", name="Save the new PIN"))
    expect(new).to_be_focused()

    # The PIN rules, in the app's words, with the field marked and focused.
    for bad in ("12ab", "123", "12 345"):
        new.fill(bad)
        again.fill(bad)
        save.click()
        expect(page.locator("#error")).to_have_text("The PIN must have 4 to 12 digits (numbers only).")
        expect(new).to_be_focused()
        expect(new).to_have_attribute("aria-invalid", "true")
    new.fill("1357")
    again.fill("1375")
    save.click()
    expect(page.locator("#error")).to_have_text("The two PINs do not match: type them again.")
    expect(again).to_be_focused()
    expect(again).to_have_value("")
    expect(new).not_to_have_attribute("aria-invalid", "true")

    # The network fails: said so, nothing changed, the form stays for another try.
    again.fill("1357")
    citizen.context.set_offline(True)
    save.click()
    expect(page.locator("#error")).to_have_text(
        "The service cannot be reached: your PIN was not changed. Check the connection and try again.")
    citizen.context.set_offline(False)
    expect(save).to_be_enabled()

    # The citizen waited too long: the API answers that the login is not fresh; the screen says so and
    # offers the login again, keeping no PIN meanwhile.
    _age_logins(system, page, minutes=10)
    save.click()
    expect(page.locator("#error")).to_have_text(
        "Your login is no longer recent enough to reset the PIN (it must be from the last few minutes). "
        "Log in again, then save the new PIN right away.")
    login_again = page.get_by_role("button", name="Log in again with VÀLid")
    expect(login_again).to_be_focused()
    expect(page.locator("#reset-form")).to_be_hidden()
    expect(new).to_have_value("")
    citizen.shot("34-pin-reset-not-fresh")
    login_again.click()
    citizen.at_idp(SETTINGS_CITIZEN)
    page.wait_for_url(f"{system.wallet}/app/#/pin-reset")
    new.fill("1357")
    again.fill("1357")
    save.click()
    expect(page.locator("#reset-done")).to_have_text("Your new PIN is saved. Your wallet's other sessions were ended.")
    _nothing_secret_left(page, ("1357", "2468"))
    page.get_by_role("link", name="Continue").click()
    expect(page.locator("#pin-state")).to_have_text("Sharing asks for the PIN.")
    # The new PIN is the one the wallet asks for now: changing it with the old one is refused.
    page.fill("#current-pin", "2468")
    page.fill("#new-pin", "8642")
    page.get_by_role("button", name="Save the PIN").click()
    expect(page.locator("#error")).to_have_text("The PIN is not correct.")
    page.fill("#current-pin", "1357")
    page.fill("#new-pin", "8642")
    page.get_by_role("button", name="Save the PIN").click()
    expect(page.locator("#status")).to_have_text("PIN saved.")
    assert citizen.csp_errors() == []


def _one_lockout_from_ending_every_session(system: System, phone, identifier: str, failures: int) -> Page:
    """A logged-in citizen's page on Me, PIN 2468 set, with two lockouts in a row already (their locks
    over: the next lockout ends every session of the wallet) and ``failures`` wrong PINs counted."""
    citizen = phone()
    citizen.login(identifier)
    page = citizen.page
    _set_pin(page, "2468")
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(_tokens(page)), timeout=10).json()["wallet_id"]
    execute_sql(system, "UPDATE wallets SET pin_lockouts = 2, pin_failures = ? WHERE id = ?", failures, wallet_id)
    expect(page.locator("#forgot-pin-export")).to_be_visible()
    return page


def test_a_lockout_that_ends_every_session_sends_the_citizen_to_log_in_and_says_how_to_reset(
        system: System, phone) -> None:
    page = _one_lockout_from_ending_every_session(system, phone, LOCKED_OUT_CITIZEN, failures=0)
    for guess in ("1111", "1234", "0000", "1357", "9999"):
        page.fill("#export-pass", "correct horse battery")
        page.fill("#export-pin", guess)
        # One guess answered before the next: the error text of the one before is already on screen,
        # so waiting for it alone let the last two guesses cross (an answer arrived after the lockout's).
        with page.expect_response(lambda r: r.url.endswith("/v1/backup/export") and r.request.method == "POST") as answer:
            page.get_by_role("button", name="Export a backup").click()
        assert answer.value.status == (423 if guess == "9999" else 403)
        if guess != "9999":
            expect(page.locator("#error")).to_have_text("The PIN is not correct.")
    expect(page.locator("#login-title")).to_be_visible()
    expect(page.locator("#error")).to_have_text(
        "Too many wrong PINs: every session of your wallet was ended. Log in again; if you forgot your PIN, "
        "reset it right after, under “Me”.")
    assert page.evaluate("Object.keys(sessionStorage)") == ["cartera.tab"]
    assert page.locator("#export-pin").input_value() == "" and page.locator("#me").text_content() == ""


LATE_ANSWER_CITIZEN = fresh_citizens(17)[16]  # the web wallet's other tests use the first 16


def test_an_answer_that_arrives_after_the_lockout_ended_the_session_does_not_overwrite_the_login_screen(
        system: System, phone) -> None:
    # Three wrong PINs already: the fifth wrong one ends every session.
    page = _one_lockout_from_ending_every_session(system, phone, LATE_ANSWER_CITIZEN, failures=3)
    held = []

    def hold_the_first_answer(route) -> None:
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))  # the wallet answers now (the wrong PIN is counted) ...

    page.route("**/v1/backup/export", hold_the_first_answer)
    for guess in ("1111", "1234"):
        page.fill("#export-pass", "correct horse battery")
        page.fill("#export-pin", guess)
        page.get_by_role("button", name="Export a backup").click()
        if guess == "1111":
            while not held:
                page.wait_for_timeout(20)
            assert held[0][1].status == 403  # invalid_pin, not delivered to the page yet
    expect(page.locator("#login-title")).to_be_visible()
    lockout = ("Too many wrong PINs: every session of your wallet was ended. Log in again; if you forgot your PIN, "
               "reset it right after, under “Me”.")
    expect(page.locator("#error")).to_have_text(lockout)
    # ... and reaches the page only now, after the lockout's answer ended the session.
    route, answer = held[0]
    with page.expect_response(lambda r: r.url.endswith("/v1/backup/export")):
        route.fulfill(response=answer)
    page.wait_for_timeout(300)  # the app's handling of that answer, had it any, is done by now
    expect(page.locator("#error")).to_have_text(lockout)
    expect(page.locator("#login-title")).to_be_visible()
