"""The consent screen says exactly what the approval sends, shows nothing of a previous request while a
new one loads, asks for a PIN set from another device without burning attempts, and shows names with
"$'" or "{1}" in them as they are (real services, headless Chromium)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from playwright.sync_api import Page, Route, expect

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, query_sql
from tests.wallet_api.test_credential_sets import AGENCY, alternatives_request, verifier_result
from tests.wallet_api.test_e2e import make_offer, receive
from tests.web_wallet.conftest import new_request, wait_status

#: Citizens of the population (padró and degrees) that no other test of this system logs in.
_POPULATION = generate_population(size=50).citizens
SETS_CITIZEN, PIN_CITIZEN, STALE_CITIZEN = (_POPULATION[i].identifier for i in (43, 46, 47))


def _tokens(page: Page) -> dict[str, str]:
    """The tab's access token, for the API calls that stand for what happens elsewhere."""
    return {"access_token": page.evaluate("JSON.parse(sessionStorage.getItem('cartera.tokens')).access")}


def test_the_consent_screen_shows_as_shared_exactly_what_the_verifier_receives(system: System, phone) -> None:
    citizen = phone()
    citizen.login(SETS_CITIZEN)
    page = citizen.page
    tokens = _tokens(page)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", SETS_CITIZEN))
    receive(system, tokens, make_offer(system, "uni-barcelona", "university-diploma", SETS_CITIZEN))
    # Either a tax certificate (none in this wallet), the padró or a diploma: the padró is sent.
    request = alternatives_request(system)
    citizen.scan(request["uri"])
    blocks = page.locator("#request-queries fieldset")
    expect(blocks).to_have_count(3, timeout=15_000)
    citizen.shot("23-consent-alternatives")
    # An alternative nothing answers is no problem while another option is answered.
    expect(page.locator("#request-queries")).not_to_contain_text("You have no valid credential")
    expect(page.locator("#request-queries .warning")).to_have_count(0)
    expect(page.get_by_role("button", name="Share")).to_be_enabled()
    said_shared = [block.get_attribute("data-query") for block in blocks.all()
                   if "this will be shared" in block.inner_text()]
    assert said_shared == ["padro"], page.locator("#request-queries").inner_text()
    for query_id in ("tax", "diploma"):
        block = page.locator(f"#request-queries fieldset[data-query={query_id}]")
        expect(block).to_contain_text("This will not be shared.")
        expect(block.locator("dd")).to_have_count(0)  # none of its values is on screen
    expect(page.locator("#request-queries input")).to_have_count(0)  # nothing to choose between
    shown = page.locator("#request-queries fieldset[data-query=padro] dd:not(:has(dl))").all_inner_texts()
    assert shown

    page.get_by_role("button", name="Share").click()
    expect(page.locator("#request-result")).to_contain_text("Shared with University Admissions Office", timeout=30_000)
    result = verifier_result(system, request)
    assert result["status"] == "verified", result
    assert set(result["claims"]) == set(said_shared)
    received = json.dumps(result["claims"], ensure_ascii=False)
    for value in shown:
        assert value in received, (value, received)


PREVIEW_READ = re.compile(r".*/v1/presentations/[^/?]+$")


def _held_previews(page: Page) -> list[Route]:
    """Hold back the app's reads of a request's preview (``GET /v1/presentations/{id}``)."""
    held: list[Route] = []

    def hold(route: Route) -> None:
        if route.request.method == "GET":
            held.append(route)
        else:
            route.continue_()

    page.route(PREVIEW_READ, hold)
    return held


def test_a_new_request_shows_nothing_of_the_previous_one_and_names_are_shown_as_they_are(
        system: System, phone) -> None:
    citizen = phone(service_workers="block")  # the routes below must see the app's own requests
    citizen.login(STALE_CITIZEN)
    page = citizen.page
    receive(system, _tokens(page), make_offer(system, "ajuntament-girona", "padro", STALE_CITIZEN))
    first = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(first["uri"])
    expect(page.locator("#verifier-name")).to_have_text("Ajuntament de Barcelona (verified identity)", timeout=15_000)
    expect(page.get_by_role("button", name="Decline")).to_be_enabled()

    held = _held_previews(page)
    second = new_request(system, AGENCY, "residence")
    citizen.scan(second["uri"])
    for _ in range(300):
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    # While the second request loads: nothing of the first, and nothing can be answered.
    expect(page.locator("#verifier-name")).to_have_text("")
    expect(page.locator("#request-purpose")).to_have_text("")
    expect(page.locator("#request-queries")).to_be_empty()
    expect(page.get_by_role("button", name="Decline")).to_be_disabled()
    expect(page.get_by_role("button", name="Share")).to_be_disabled()

    # The preview arrives, with names that hold replacement patterns and placeholders.
    answer = held[0].fetch()
    preview = answer.json()
    for query in preview["queries"]:
        for option in query["options"]:
            option["credential_name"] = "Padró {1} $& {0}"
            option["issuer_name"] = "Ajuntament $' de $$ Girona"
    held[0].fulfill(response=answer, json=preview)
    expect(page.locator("#verifier-name")).to_have_text("University Admissions Office (verified identity)")
    expect(page.locator("#request-queries .option p").first).to_have_text(
        "From “Padró {1} $& {0}” (Ajuntament $' de $$ Girona), this will be shared:")
    expect(page.get_by_role("button", name="Decline")).to_be_enabled()
    page.unroute(PREVIEW_READ)
    page.get_by_role("button", name="Decline").click()
    expect(page.locator("#request-result")).to_contain_text("nothing was shared")
    assert wait_status(system, AGENCY, second)["status"] == "declined"
    assert wait_status(system, "ajuntament-barcelona", first, timeout=0.5)["status"] == "pending"  # never answered


def _pin_failures(system: System, tokens: dict[str, Any]) -> int:
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens), timeout=10).json()["wallet_id"]
    return query_sql(system, "SELECT pin_failures FROM wallets WHERE id = ?", wallet_id)[0][0]


def test_a_pin_set_from_another_device_is_asked_for_and_trying_without_costs_nothing(
        system: System, phone) -> None:
    citizen = phone()
    citizen.login(PIN_CITIZEN)
    page = citizen.page
    receive(system, _tokens(page), make_offer(system, "ajuntament-girona", "padro", PIN_CITIZEN))
    other = login(system.wallet, PIN_CITIZEN)  # the same citizen's other device

    def set_pin(pin: str | None, current: str | None = None) -> None:
        r = httpx.put(f"{system.wallet}/v1/pin", json={"pin": pin, "current_pin": current}, headers=bearer(other))
        assert r.status_code == 204, r.text

    # This tab has seen "no PIN"; then the other device sets one: the consent screen asks for it.
    page.locator("#nav a[data-route=settings]").click()
    expect(page.locator("#pin-state")).to_have_text("Sharing asks for no PIN.")
    set_pin("1357")
    first = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(first["uri"])
    expect(page.locator("#pin")).to_be_visible(timeout=15_000)
    page.get_by_role("button", name="Decline").click()
    expect(page.locator("#request-result")).to_contain_text("nothing was shared")

    # A PIN set while the consent screen is open: Share is answered "PIN required", the field appears,
    # and no attempt was used.
    set_pin(None, "1357")
    second = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(second["uri"])
    expect(page.locator("#request-queries fieldset")).to_have_count(1, timeout=15_000)
    expect(page.locator("#pin")).to_be_hidden()
    set_pin("2468")
    for _ in range(3):
        page.get_by_role("button", name="Share").click()
        expect(page.locator("#error")).to_have_text("Enter your wallet PIN.")
        expect(page.locator("#pin")).to_be_visible()
        expect(page.get_by_role("button", name="Share")).to_be_enabled()
    assert _pin_failures(system, other) == 0
    assert wait_status(system, "ajuntament-barcelona", second, timeout=0.5)["status"] == "pending"
    page.fill("#pin", "2468")
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#request-result")).to_have_text("Shared with Ajuntament de Barcelona.", timeout=30_000)
    assert wait_status(system, "ajuntament-barcelona", second)["status"] == "verified"

    # The same for a backup export from a settings screen drawn before the PIN was set.
    set_pin(None, "2468")
    page.locator("#nav a[data-route=settings]").click()
    expect(page.locator("#pin-state")).to_have_text("Sharing asks for no PIN.")
    expect(page.locator("#export-pin")).to_be_hidden()
    set_pin("8642")
    page.fill("#export-pass", "correct horse battery")
    page.get_by_role("button", name="Export a backup").click()
    expect(page.locator("#error")).to_have_text("Enter your wallet PIN.")
    expect(page.locator("#export-pin")).to_be_visible()
    assert _pin_failures(system, other) == 0
    page.fill("#export-pass", "correct horse battery")
    page.fill("#export-pin", "8642")
    with page.expect_download():
        page.get_by_role("button", name="Export a backup").click()
    expect(page.locator("#status")).to_have_text("Backup exported.")
