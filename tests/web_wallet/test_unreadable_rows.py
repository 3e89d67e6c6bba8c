"""Rows that stopped opening, as the app meets them: a credential chosen on the consent screen that
no longer opens when Share is pressed, and a backup that had to leave rows out.

The API answers the first with 409 ``credential_unreadable`` (nothing sent, the request still pending):
the app says so in the citizen's language, no longer offers that credential, and lets them choose
another or decline. The second is the export's ``skipped_count``: told to the citizen, while the file
holds nothing in clear of which rows they were.

Real issuer, verifier and wallet (the ``system`` fixture), headless Chromium, the sealed columns damaged
in the wallet's SQLite file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from sandbox.population import generate_population
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, execute_sql, query_sql
from tests.wallet_api.test_e2e import make_offer, receive
from tests.web_wallet.conftest import new_request, wait_status
from wallet_api.backup import open_backup

#: Citizens of the population with a padró record that no other test of this system logs in
#: (fresh_citizens has no 21st: the population is too small; test_consent takes 43, 46 and 47 of these).
_POPULATION = generate_population(size=50).citizens
DECLINE_CITIZEN, OTHER_CHOICE_CITIZEN, BACKUP_CITIZEN = (_POPULATION[i].identifier for i in (44, 49, 41))
PASSPHRASE = "correct horse battery"
UNREADABLE_MESSAGE = ("The chosen credential's data cannot be read: nothing was sent. Choose another one, "
                      "if there is one, or decline the request.")


def _damage(system: System, table: str, row_id: str) -> None:
    """One bit of the row's sealed value flipped, in the database."""
    [(sealed,)] = query_sql(system, f"SELECT sealed FROM {table} WHERE id = ?", row_id)  # noqa: S608 - fixed names
    execute_sql(system, f"UPDATE {table} SET sealed = ? WHERE id = ?",  # noqa: S608
                sealed[:-1] + bytes([sealed[-1] ^ 1]), row_id)


def _tokens(page: Page) -> dict[str, str]:
    return {"access_token": page.evaluate("JSON.parse(sessionStorage.getItem('cartera.tokens')).access")}


def _history(system: System, tokens: dict[str, str]) -> list[dict[str, Any]]:
    r = httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _page_errors(errors: list[str]) -> list[str]:
    """The page's errors but the browser's own line for each answer of status 4xx (the 409 is one)."""
    return [e for e in errors if "Failed to load resource" not in e]


def test_a_chosen_credential_that_stopped_opening_is_said_and_the_request_can_be_declined(
        system: System, phone) -> None:
    citizen = phone()
    citizen.login(DECLINE_CITIZEN)
    page = citizen.page
    tokens = _tokens(page)
    padro = receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", DECLINE_CITIZEN))["credential_ids"][0]
    request = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(request["uri"])
    share, decline = page.get_by_role("button", name="Share"), page.get_by_role("button", name="Decline")
    expect(share).to_be_enabled(timeout=15_000)

    _damage(system, "credentials", padro)  # after the preview, before Share
    share.click()
    expect(page.locator("#error")).to_have_text(UNREADABLE_MESSAGE)
    # The preview again, without the credential: nothing else answers, so only Decline is possible.
    expect(page.locator("#request-queries .warning")).to_have_text(
        ["You have no valid credential that answers this request."])
    expect(page.locator("#request-queries dd")).to_have_count(0)
    expect(decline).to_be_enabled()
    expect(share).to_be_disabled()
    expect(page.locator("#error")).to_have_text(UNREADABLE_MESSAGE)  # still said once the screen is redrawn
    assert wait_status(system, "ajuntament-barcelona", request, timeout=0.5)["status"] == "pending"

    decline.click()
    expect(page.locator("#request-result")).to_contain_text("nothing was shared", timeout=30_000)
    assert wait_status(system, "ajuntament-barcelona", request)["status"] == "declined"
    assert [h["kind"] for h in _history(system, tokens)] == ["decline", "receipt"]  # nothing shared
    assert _page_errors(citizen.errors) == []


def test_after_a_chosen_credential_stopped_opening_another_one_can_be_shared(system: System, phone) -> None:
    citizen = phone()
    citizen.login(OTHER_CHOICE_CITIZEN)
    page = citizen.page
    tokens = _tokens(page)
    first, second = (receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", OTHER_CHOICE_CITIZEN)
                             )["credential_ids"][0] for _ in range(2))
    request = new_request(system, "ajuntament-barcelona", "residence")
    citizen.scan(request["uri"])
    radios = page.locator("#request-queries input[type=radio]")
    expect(radios).to_have_count(2, timeout=15_000)
    page.locator(f"#request-queries input[type=radio][value='{first}']").check()

    _damage(system, "credentials", first)
    page.get_by_role("button", name="Share").click()
    expect(page.locator("#error")).to_have_text(UNREADABLE_MESSAGE)
    # Offered again with the one credential that still opens, nothing to choose between.
    expect(radios).to_have_count(0)
    expect(page.locator("#request-queries fieldset")).to_have_attribute("data-credential", second)
    expect(page.locator("#request-queries dd").first).to_be_visible()
    expect(page.get_by_role("button", name="Decline")).to_be_enabled()
    assert wait_status(system, "ajuntament-barcelona", request, timeout=0.5)["status"] == "pending"

    page.get_by_role("button", name="Share").click()
    expect(page.locator("#request-result")).to_have_text("Shared with Ajuntament de Barcelona.", timeout=30_000)
    expect(page.locator("#error")).to_be_hidden()
    assert wait_status(system, "ajuntament-barcelona", request)["status"] == "verified"
    shares = [h for h in _history(system, tokens) if h["kind"] == "share"]
    assert [[d["credential_id"] for d in h["details"]["disclosed"]] for h in shares] == [[second]]
    assert _page_errors(citizen.errors) == []


def _export(page: Page, tmp_path: Path, name: str) -> tuple[str, dict[str, Any]]:
    page.fill("#export-pass", PASSPHRASE)
    with page.expect_download() as download:
        page.locator("#export-form button[type=submit]").click()
    saved = tmp_path / name
    download.value.save_as(saved)
    return saved.read_text(), json.loads(saved.read_text())


def test_the_export_says_how_many_rows_it_left_out_and_the_file_does_not_say_which(
        system: System, phone, tmp_path: Path) -> None:
    tokens = login(system.wallet, BACKUP_CITIZEN)
    first, second = (receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", BACKUP_CITIZEN)
                             )["credential_ids"][0] for _ in range(2))
    receipt = next(h["id"] for h in _history(system, tokens) if h["details"].get("credential_id") == first)
    citizen = phone()
    citizen.login(BACKUP_CITIZEN)
    page = citizen.page
    page.locator("#nav a[data-route=settings]").click()
    status = page.locator("#status")
    header = {"format", "version", "kdf", "enc", "nonce", "ciphertext"}

    _text, clean = _export(page, tmp_path, "clean.json")
    expect(status).to_have_text("Backup exported.")
    assert set(clean) == header

    _damage(system, "history", receipt)  # a history entry: it cannot be deleted
    text, one = _export(page, tmp_path, "one.json")
    expect(status).to_have_text("Backup exported. 1 item could not be read and is not in this backup.")
    assert set(one) == header and receipt not in text

    _damage(system, "credentials", first)
    text, two = _export(page, tmp_path, "two.json")
    expect(status).to_have_text("Backup exported. 2 items could not be read and are not in this backup.")
    # Nothing in clear of which rows: ids, kinds and times are inside the encrypted content only.
    assert set(two) == header and receipt not in text and first not in text and "receipt" not in text
    assert [s["id"] for s in open_backup(two, PASSPHRASE)["skipped"]] == [first, receipt]

    page.select_option("#lang", "ca")
    _export(page, tmp_path, "ca.json")
    expect(status).to_have_text("Còpia exportada. 2 elements no s'han pogut llegir i no són en aquesta còpia.")
    page.select_option("#lang", "es")
    _export(page, tmp_path, "es.json")
    expect(status).to_have_text(
        "Copia exportada. 2 elementos no se han podido leer y no están en esta copia.")

    # The file imports (the second padró, deleted meanwhile, comes back).
    assert httpx.delete(f"{system.wallet}/v1/credentials/{second}", headers=bearer(tokens)).status_code == 204
    page.select_option("#lang", "en")
    page.set_input_files("#import-file", str(tmp_path / "two.json"))
    page.fill("#import-pass", PASSPHRASE)
    page.get_by_role("button", name="Import a backup").click()
    expect(status).to_have_text("Backup imported: 1 credentials added.", timeout=30_000)
    assert _page_errors(citizen.errors) == []
