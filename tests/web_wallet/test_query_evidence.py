"""The credential screen says why the issuer consulted the registry (purpose, legal basis, official,
registry, when), in the citizen's language, as the issuer recorded it; the receipt in the history
names the purpose; logging out leaves none of it in the page."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, fresh_citizens
from tests.wallet_api.test_e2e import receive
from tests.web_wallet.conftest import make_offer

CITIZEN = fresh_citizens(19)[18]  # the web wallet's other tests use the first 18
TITLES = {"en": "Why the issuer consulted the registry", "ca": "Per què l'emissor ha consultat el registre",
          "es": "Por qué el emisor ha consultado el registro"}
CONSENT = {"en": "Your consent", "ca": "El teu consentiment", "es": "Tu consentimiento"}


def test_the_card_shows_why_the_registry_was_consulted(system: System, phone) -> None:
    tokens = login(system.wallet, CITIZEN)
    credential_id = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", CITIZEN))["credential_ids"][0]
    shown = httpx.get(f"{system.wallet}/v1/credentials/{credential_id}", headers=bearer(tokens), timeout=30).json()
    evidence = shown["query_evidence"]
    records = httpx.get(f"{system.issuer}/v1/credentials", params={"subject": CITIZEN},
                        headers=system.issuer_headers("aoc-tax"), timeout=30).json()["items"]
    [record] = [r for r in records if r["evidence"]["request_id"] == evidence["request_id"]]

    citizen = phone()
    citizen.login(CITIZEN)
    page = citizen.page
    page.locator("#cards li.card h3 a").click()
    box = page.locator("#card-evidence")
    expect(box).to_be_visible(timeout=15_000)
    expect(page.locator("#card-evidence-title")).to_have_text(TITLES["en"])
    values = page.locator("#card-evidence-list dd")
    expect(values.nth(0)).to_have_text(record["evidence"]["purpose"])
    expect(page.locator("#card-evidence-list dd[data-evidence=evidenceProcedure]")).to_have_text(
        record["evidence"]["procedure"])
    expect(page.locator("#card-evidence-list dd[data-evidence=evidenceBasis]")).to_have_text(CONSENT["en"])
    expect(page.locator("#card-evidence-list dd[data-evidence=evidenceOfficial]")).to_have_text(
        "Oficina de Cartera (demo)")
    expect(page.locator("#card-evidence-list dd[data-evidence=evidenceSource]")).to_have_text(
        f"{record['evidence']['product']} · {record['evidence']['source']}")
    expect(page.locator("#card-evidence-list dd[data-evidence=evidenceWhen]")).not_to_be_empty()
    expect(page.locator("#card-evidence-list dd[data-evidence=evidenceReference]")).to_have_text(
        record["evidence"]["request_id"])
    assert "00000000T" not in box.inner_text()  # the official's NIF stays in the issuer's record
    citizen.shot("card-query-evidence")

    for lang in ("ca", "es"):
        page.select_option("#lang", lang)
        expect(page.locator("#card-evidence-title")).to_have_text(TITLES[lang])
        expect(page.locator("#card-evidence-list dd[data-evidence=evidenceBasis]")).to_have_text(CONSENT[lang])
    page.select_option("#lang", "en")

    page.locator("#nav a[data-route=history]").click()
    expect(page.locator("#history li.receipt")).to_contain_text(f"Purpose: {record['evidence']['purpose']}")

    page.locator("#nav a[data-route=settings]").click()
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-title")).to_be_visible()
    assert page.locator("#card-evidence-list").text_content() == ""
    assert page.locator("#card-evidence").is_hidden()
    assert citizen.errors == []
