"""A share or decline answered 409 ``conflict`` no longer leaves the consent screen stuck.

Share and Decline were both left disabled with "That did not work (conflict)": the citizen could do
nothing with the request. The API answers 409 ``conflict`` (nothing sent) when a chosen credential was
deleted meanwhile — the request stays pending, to answer with another credential or decline — and when
the request was already answered (from another session) or has expired — nothing can be done with it
any more. Now the app reads the request again and says which it was: it shows the request as it is now
(without the deleted credential: another one can be shared, or the request declined), or says it was
answered or has expired and offers the way back; should the request not load, it offers to load it
again. The consent screen also says how many credentials of the type asked for cannot be read, and an
expired request is shown as such when it is opened.

Real issuer, verifier and wallet (the ``system`` fixture), headless Chromium; what happens "on another
device" goes through the API with the same citizen's other session.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx
from playwright.sync_api import Page, Route, expect

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, execute_sql, query_sql
from tests.wallet_api.test_e2e import make_offer, receive
from tests.web_wallet.conftest import new_request, wait_status

#: Citizens of the population with a padró record that no other test of this system logs in.
_POPULATION = generate_population(size=50).citizens
DELETED_CITIZEN, ONLY_ONE_CITIZEN, ANSWERED_CITIZEN, EXPIRED_CITIZEN, UNREADABLE_CITIZEN, CHANGED_CITIZEN = (
    _POPULATION[i].identifier for i in (42, 36, 35, 32, 31, 25))
AGENCY = "ajuntament-barcelona"
DELETED = ("The chosen credential is no longer in your wallet: nothing was sent. Choose another one, if there is "
           "one, or decline the request.")
ANSWERED = "This request was already answered, perhaps from another device: nothing more was sent."
EXPIRED_WHILE_OPEN = "This request expired while it was open: nothing was sent. Ask the verifier for a new one."
EXPIRED = "This request has expired: it can no longer be answered. Ask the verifier for a new one."
CHANGED = ("The chosen credential would now share other data than shown: nothing was sent. Decline, and ask the "
           "verifier for a new request.")
PREVIEW_READ = re.compile(r".*/v1/presentations/[^/?]+$")
APPROVE = re.compile(r".*/v1/presentations/[^/?]+/approve$")


def _tokens(page: Page) -> dict[str, str]:
    return {"access_token": page.evaluate("JSON.parse(sessionStorage.getItem('cartera.tokens')).access")}


def _padro(system: System, tokens: dict[str, str], citizen: str) -> str:
    return receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", citizen))["credential_ids"][0]


def _delete(system: System, tokens: dict[str, str], credential_id: str) -> None:
    r = httpx.delete(f"{system.wallet}/v1/credentials/{credential_id}", headers=bearer(tokens), timeout=30)
    assert r.status_code == 204, r.text


def _page_errors(errors: list[str]) -> list[str]:
    """The page's errors but the browser's own line for each answer of status 4xx (the 409s)."""
    return [e for e in errors if "Failed to load resource" not in e]


def _buttons(page: Page) -> tuple[Any, Any]:
    return page.get_by_role("button", name="Share"), page.get_by_role("button", name="Decline")


def test_a_chosen_credential_deleted_meanwhile_is_said_and_another_one_can_be_shared(
        system: System, phone) -> None:
    citizen = phone()
    citizen.login(DELETED_CITIZEN)
    page = citizen.page
    first, second = (_padro(system, _tokens(page), DELETED_CITIZEN) for _ in range(2))
    request = new_request(system, AGENCY, "residence")
    citizen.scan(request["uri"])
    radios = page.locator("#request-queries input[type=radio]")
    expect(radios).to_have_count(2, timeout=15_000)
    page.locator(f"#request-queries input[type=radio][value='{first}']").check()

    _delete(system, login(system.wallet, DELETED_CITIZEN), first)  # from the citizen's other device
    share, decline = _buttons(page)
    share.click()
    expect(page.locator("#error")).to_have_text(DELETED)
    # Shown again as it is now: the one credential left, named, and both buttons usable.
    expect(radios).to_have_count(0)
    expect(page.locator("#request-queries fieldset")).to_have_attribute("data-credential", second)
    expect(share).to_be_enabled()
    expect(decline).to_be_enabled()
    assert wait_status(system, AGENCY, request, timeout=0.5)["status"] == "pending"
    citizen.shot("40-consent-credential-deleted")

    share.click()
    expect(page.locator("#request-result")).to_have_text("Shared with Ajuntament de Barcelona.", timeout=30_000)
    expect(page.locator("#error")).to_be_hidden()
    result = wait_status(system, AGENCY, request)
    assert result["status"] == "verified", result
    assert _page_errors(citizen.errors) == []


def _hold_next_read(page: Page) -> list[Route]:
    """Make the app's next read of a request's preview fail as a dropped connection would."""
    failed: list[Route] = []

    def fail(route: Route) -> None:
        if route.request.method == "GET" and not failed:
            failed.append(route)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(PREVIEW_READ, fail)
    return failed


def test_the_only_credential_deleted_meanwhile_leaves_decline_and_a_failed_reload_can_be_retried(
        system: System, phone) -> None:
    citizen = phone(service_workers="block")  # the route below must see the app's own requests
    citizen.login(ONLY_ONE_CITIZEN)
    page = citizen.page
    only = _padro(system, _tokens(page), ONLY_ONE_CITIZEN)
    request = new_request(system, AGENCY, "residence")
    citizen.scan(request["uri"])
    share, decline = _buttons(page)
    expect(share).to_be_enabled(timeout=15_000)

    _delete(system, login(system.wallet, ONLY_ONE_CITIZEN), only)
    failed = _hold_next_read(page)
    share.click()
    # The request could not be read again: the screen says so and offers to load it again, or to go back.
    expect(page.locator("#error")).to_have_text("The service cannot be reached.")
    assert len(failed) == 1
    expect(page.locator("#request-reload")).to_be_visible()
    expect(page.locator("#request-back")).to_have_attribute("href", "#/cards")
    expect(share).to_be_disabled()

    page.get_by_role("button", name="Load the request again").click()
    expect(page.locator("#error")).to_have_text(DELETED)
    # Nothing else answers: only Decline is possible.
    expect(page.locator("#request-queries .warning")).to_have_text(
        ["You have no valid credential that answers this request."])
    expect(page.locator("#request-reload")).to_have_count(0)
    expect(share).to_be_disabled()
    expect(decline).to_be_enabled()
    decline.click()
    expect(page.locator("#request-result")).to_contain_text("nothing was shared", timeout=30_000)
    assert wait_status(system, AGENCY, request)["status"] == "declined"
    page.unroute(PREVIEW_READ)
    assert _page_errors(citizen.errors) == []


def test_a_request_answered_from_another_device_is_said_and_offers_the_way_back(system: System, phone) -> None:
    citizen = phone()
    citizen.login(ANSWERED_CITIZEN)
    page = citizen.page
    _padro(system, _tokens(page), ANSWERED_CITIZEN)
    request = new_request(system, AGENCY, "residence")
    citizen.scan(request["uri"])
    share, decline = _buttons(page)
    expect(decline).to_be_enabled(timeout=15_000)
    presentation_id = page.locator("#view-request").get_attribute("data-id")

    other = login(system.wallet, ANSWERED_CITIZEN)
    r = httpx.post(f"{system.wallet}/v1/presentations/{presentation_id}/decline", headers=bearer(other), timeout=30)
    assert r.status_code == 200, r.text
    decline.click()
    expect(page.locator("#error")).to_have_text(ANSWERED)
    expect(page.locator("#request-result")).to_contain_text("You declined the request: nothing was shared.")
    expect(share).to_be_disabled()
    expect(decline).to_be_disabled()
    page.locator("#request-back").click()
    expect(page.locator("#view-cards")).to_be_visible()
    assert _page_errors(citizen.errors) == []


def test_a_request_that_expired_while_open_is_said_and_shown_expired_when_opened_again(
        system: System, phone) -> None:
    citizen = phone()
    citizen.login(EXPIRED_CITIZEN)
    page = citizen.page
    _padro(system, _tokens(page), EXPIRED_CITIZEN)
    request = new_request(system, AGENCY, "residence")
    citizen.scan(request["uri"])
    share, decline = _buttons(page)
    expect(share).to_be_enabled(timeout=15_000)
    presentation_id = page.locator("#view-request").get_attribute("data-id")
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S.%f")
    execute_sql(system, "UPDATE presentations SET expires_at = ? WHERE id = ?", past, presentation_id)

    share.click()
    expect(page.locator("#error")).to_have_text(EXPIRED_WHILE_OPEN)
    expect(page.locator("#request-result .warning")).to_have_text(EXPIRED)
    expect(page.locator("#request-back")).to_be_visible()
    expect(share).to_be_disabled()
    expect(decline).to_be_disabled()

    # Opened again later: said at once, nothing to press.
    page.reload()
    expect(page.locator("#request-result .warning")).to_have_text(EXPIRED, timeout=15_000)
    expect(page.locator("#request-queries fieldset")).to_have_count(1)
    expect(share).to_be_disabled()
    expect(decline).to_be_disabled()
    assert query_sql(system, "SELECT state FROM presentations WHERE id = ?", presentation_id) == [("pending",)]
    assert _page_errors(citizen.errors) == []


def test_credentials_of_the_type_asked_for_that_cannot_be_read_are_counted(system: System, phone) -> None:
    citizen = phone()
    citizen.login(UNREADABLE_CITIZEN)
    page = citizen.page
    first, second = (_padro(system, _tokens(page), UNREADABLE_CITIZEN) for _ in range(2))
    [(sealed,)] = query_sql(system, "SELECT sealed FROM credentials WHERE id = ?", first)
    execute_sql(system, "UPDATE credentials SET sealed = ? WHERE id = ?", sealed[:-1] + bytes([sealed[-1] ^ 1]), first)
    request = new_request(system, AGENCY, "residence")
    citizen.scan(request["uri"])
    note = page.locator("#request-queries .unreadable-note")
    expect(note).to_have_text("1 credential of this type in your wallet cannot be read, so it is not offered.",
                              timeout=15_000)
    expect(page.locator("#request-queries fieldset")).to_have_attribute("data-credential", second)
    page.select_option("#lang", "ca")
    expect(note).to_have_text("Una credencial d'aquest tipus de la cartera no es pot llegir i per això no s'ofereix.")
    page.select_option("#lang", "es")
    expect(note).to_have_text("Una credencial de este tipo de la cartera no se puede leer y por eso no se ofrece.")
    page.select_option("#lang", "en")
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#request-result")).to_have_text("Shared with Ajuntament de Barcelona.", timeout=30_000)
    assert wait_status(system, AGENCY, request)["status"] == "verified"
    assert _page_errors(citizen.errors) == []


def test_a_chosen_credential_that_would_now_disclose_other_claims_leaves_only_decline(
        system: System, phone) -> None:
    """The API's third 409 ``conflict`` of Share: the chosen credential is still there, but a copy of it
    would now show other claims than the preview did (only a credential altered in the vault does
    that, so the answer is the API's own words, given here by the browser's route)."""
    citizen = phone(service_workers="block")  # the route below must see the app's own requests
    citizen.login(CHANGED_CITIZEN)
    page = citizen.page
    _padro(system, _tokens(page), CHANGED_CITIZEN)
    request = new_request(system, AGENCY, "residence")
    citizen.scan(request["uri"])
    share, decline = _buttons(page)
    expect(share).to_be_enabled(timeout=15_000)
    page.route(APPROVE, lambda route: route.fulfill(status=409, json={
        "error": "conflict", "error_description": "the credential would disclose other claims than the preview "
                                                  "showed; decline, and ask the verifier for a new request"}))
    share.click()
    expect(page.locator("#error")).to_have_text(CHANGED)
    expect(page.locator("#request-queries dd").first).to_be_visible()  # the request, shown again
    expect(share).to_be_disabled()
    expect(decline).to_be_enabled()
    page.unroute(APPROVE)
    decline.click()
    expect(page.locator("#request-result")).to_contain_text("nothing was shared", timeout=30_000)
    assert wait_status(system, AGENCY, request)["status"] == "declined"
    assert _page_errors(citizen.errors) == []
