"""An issuer's display data is kept as bounded text only, so that one credential cannot break a wallet.

Names, descriptions, colours, logos and claim labels come from the issuer's metadata and the Type Metadata
at the ``vct``, any JSON. They were kept whatever their types: an issuer named ``123`` made
``GET /v1/credentials`` answer 500 for good; a claim label ``42`` or a Type Metadata claim whose ``path`` is
a string exported fine and made the import refuse the backup; Type Metadata ``claims: 5`` made the scan
of any request for that type answer 500; a description that is an object made ``POST /v1/offers`` answer
500 after the offer and its alert were written (the wallet review's ``t6``, ``t7``, ``t8``). Now receipt,
the credential routes and both ends of a backup keep one set of checks
(``wallet_api.receiving.shown_display``, ``checked_type_metadata``...), which the backup import's shape
checks accept, and a credential stored before them reads, exports and imports too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from sandbox.population import generate_population
from service_kit.db import Database
from ssi.oid4vp import unsigned_request_object
from tests.wallet_api.conftest import _WALLET_PORTS, WalletHandle, bearer, login
from tests.wallet_api.standin_issuer import StandInIssuer, own_wallet, standin_issuer
from wallet_api.context import master_box
from wallet_api.models import Credential, Wallet
from wallet_api.vault import Vault

CITIZENS = [c.identifier for c in generate_population(size=50).citizens[6:13]]
PASSPHRASE = "correct horse battery staple"
BIDI_NAME = "Banc \u202egpj.exe"


@pytest.fixture(scope="module")
def issuer() -> Iterator[StandInIssuer]:
    with standin_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def own(idp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletHandle]:
    with own_wallet(idp_url, tmp_path_factory.mktemp("display-data"), _WALLET_PORTS[1]) as running:
        yield running


def _receive(wallet: WalletHandle, headers: dict[str, str], issuer: StandInIssuer) -> tuple[dict[str, Any], str]:
    scanned = httpx.post(f"{wallet.url}/v1/offers", json={"offer_uri": issuer.offer_uri()}, headers=headers,
                         timeout=30)
    assert scanned.status_code == 201, scanned.text
    accepted = httpx.post(f"{wallet.url}/v1/offers/{scanned.json()['offer_id']}/accept", json={}, headers=headers,
                          timeout=30)
    assert accepted.status_code == 200 and accepted.json()["state"] == "issued", accepted.text
    return scanned.json(), accepted.json()["credential_ids"][0]


def _listed(wallet: WalletHandle, headers: dict[str, str]) -> list[dict[str, Any]]:
    listed = httpx.get(f"{wallet.url}/v1/credentials", headers=headers, timeout=30)
    assert listed.status_code == 200, listed.text
    return listed.json()  # type: ignore[no-any-return]


def _detail(wallet: WalletHandle, headers: dict[str, str], credential_id: str) -> dict[str, Any]:
    shown = httpx.get(f"{wallet.url}/v1/credentials/{credential_id}", headers=headers, timeout=30)
    assert shown.status_code == 200, shown.text
    return shown.json()  # type: ignore[no-any-return]


def _backup_round_trip(wallet: WalletHandle, headers: dict[str, str], credential_ids: list[str]) -> None:
    """Export, delete the credentials, import: every one comes back."""
    exported = httpx.post(f"{wallet.url}/v1/backup/export", json={"passphrase": PASSPHRASE}, headers=headers,
                          timeout=120)
    assert exported.status_code == 200, exported.text
    for credential_id in credential_ids:
        assert httpx.delete(f"{wallet.url}/v1/credentials/{credential_id}", headers=headers).status_code == 204
    imported = httpx.post(f"{wallet.url}/v1/backup/import", json={"passphrase": PASSPHRASE, "backup": exported.json()},
                          headers=headers, timeout=120)
    assert imported.status_code == 200, imported.text
    assert imported.json()["credentials_added"] == len(credential_ids)
    assert len(_listed(wallet, headers)) == len(credential_ids)


def _scan(wallet: WalletHandle, headers: dict[str, str], vct: str) -> httpx.Response:
    """Scan a (development, unsigned) request for the given_name of a credential of type ``vct``."""
    response_uri = "http://127.0.0.1:9/response"
    client_id = f"redirect_uri:{response_uri}"
    token = unsigned_request_object({
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post",
        "response_uri": response_uri, "nonce": "n-display", "state": "s-display", "iat": int(time.time()),
        "dcql_query": {"credentials": [{"id": "card", "format": "dc+sd-jwt", "meta": {"vct_values": [vct]},
                                        "claims": [{"path": ["given_name"]}]}]}})
    return httpx.post(f"{wallet.url}/v1/presentations",
                      json={"request_uri": f"openid4vp://?client_id={quote(client_id)}&request={token}"},
                      headers=headers, timeout=30)


@pytest.mark.parametrize("name", [123, ["Emissor"], {"ca": "Emissor"}, None, "", "   ", "x" * 501,
                                  BIDI_NAME, "Emissor\nForged log line", "\u200b"])
def test_an_issuer_name_that_is_no_text_is_named_by_its_host(own: WalletHandle, issuer: StandInIssuer,
                                                              name: Any) -> None:
    headers = bearer(login(own.url, CITIZENS[0]))
    issuer.reset()
    issuer.metadata = {"display": [{"name": name, "locale": "en"}, {"logo": {"uri": "https://x.example/l.png"}}]}
    preview, credential_id = _receive(own, headers, issuer)
    assert preview["issuer"]["name"] == "127.0.0.1", preview
    [listed] = [c for c in _listed(own, headers) if c["id"] == credential_id]
    assert listed["issuer_name"] == "127.0.0.1"
    assert _detail(own, headers, credential_id)["issuer_name"] == "127.0.0.1"
    alerts = httpx.get(f"{own.url}/v1/alerts", headers=headers, params={"limit": 2}).json()
    assert {"New credential offer from 127.0.0.1"} <= {a["message"] for a in alerts}
    assert _scan(own, headers, issuer.vct).status_code == 201
    assert httpx.delete(f"{own.url}/v1/credentials/{credential_id}", headers=headers).status_code == 204


def test_a_usable_name_in_another_language_is_taken(own: WalletHandle, issuer: StandInIssuer) -> None:
    headers = {**bearer(login(own.url, CITIZENS[1])), "Accept-Language": "en"}
    issuer.reset()
    issuer.metadata = {"display": [{"name": 123, "locale": "en"}, {"name": "  Emissor de proves ", "locale": "ca"}]}
    preview, credential_id = _receive(own, headers, issuer)
    assert preview["issuer"]["name"] == "Emissor de proves"
    assert _detail(own, headers, credential_id)["issuer_name"] == "Emissor de proves"
    assert httpx.delete(f"{own.url}/v1/credentials/{credential_id}", headers=headers).status_code == 204


def test_credential_display_and_claim_labels_that_are_no_text_are_left_out(
        own: WalletHandle, issuer: StandInIssuer) -> None:
    headers = bearer(login(own.url, CITIZENS[2]))
    issuer.reset()
    issuer.configuration = {"credential_metadata": {
        "display": [{"name": 42, "description": {"text": "x"}, "background_color": 5, "text_color": ["#fff"],
                     "logo": {"uri": "javascript:alert(1)", "alt_text": 7}}],
        "claims": [{"path": ["given_name"], "display": [{"name": 42}]},
                   {"path": ["family_name"], "display": [{"name": "Cognoms\u2028"}, {"name": "Family name"}]}]}}
    preview, credential_id = _receive(own, headers, issuer)
    [offered] = preview["credentials"]
    assert offered["name"] == issuer.vct  # named by its type
    assert (offered["description"], offered["logo"], offered["background_color"], offered["text_color"]) == \
        (None, None, None, None)
    assert offered["claims"] == [{"path": ["given_name"], "name": "given_name", "mandatory": False},
                                 {"path": ["family_name"], "name": "Family name", "mandatory": False}]
    detail = _detail(own, headers, credential_id)
    assert detail["name"] == issuer.vct
    assert detail["display"] == dict.fromkeys(("description", "logo", "background_color", "text_color"))
    assert detail["claim_labels"] == [{"path": ["given_name"], "name": "given_name"},
                                      {"path": ["family_name"], "name": "Family name"}]
    _backup_round_trip(own, headers, [credential_id])


@pytest.mark.parametrize("configuration", [{"vct": "urn:x:" + "t" * 600}])
def test_a_type_longer_than_the_wallet_stores_is_refused_at_the_scan(
        own: WalletHandle, issuer: StandInIssuer, configuration: dict[str, Any]) -> None:
    headers = bearer(login(own.url, CITIZENS[3]))
    issuer.reset()
    issuer.configuration = configuration
    alerts = httpx.get(f"{own.url}/v1/alerts", headers=headers).json()
    scanned = httpx.post(f"{own.url}/v1/offers", json={"offer_uri": issuer.offer_uri()}, headers=headers, timeout=30)
    assert scanned.status_code == 400 and scanned.json()["error"] == "invalid_offer", scanned.text
    assert httpx.get(f"{own.url}/v1/alerts", headers=headers).json() == alerts  # nothing kept


def test_good_display_data_is_kept(own: WalletHandle, issuer: StandInIssuer) -> None:
    headers = bearer(login(own.url, CITIZENS[3]))
    issuer.reset()
    logo = {"uri": "https://issuer.example/logo.png", "alt_text": "Logo"}
    issuer.configuration = {"credential_metadata": {
        "display": [{"name": " Targeta ", "description": "Una targeta", "background_color": "#12345a",
                     "text_color": "#FFFFFF", "logo": {**logo, "extra": {"x": 1}}}],
        "claims": [{"path": ["given_name"], "mandatory": True, "display": [{"name": "Nom"}]}]}}
    issuer.type_metadata = {"vct": issuer.vct, "name": "Targeta", "extends": "urn:x",
                            "claims": [{"path": ["given_name"], "sd": "always",
                                        "display": [{"lang": "ca", "label": "Nom", "description": "El nom"}]}]}
    preview, credential_id = _receive(own, headers, issuer)
    [offered] = preview["credentials"]
    assert (offered["name"], offered["description"], offered["background_color"], offered["text_color"],
            offered["logo"]) == ("Targeta", "Una targeta", "#12345a", "#FFFFFF", logo)
    assert offered["claims"] == [{"path": ["given_name"], "name": "Nom", "mandatory": True}]
    detail = _detail(own, headers, credential_id)
    assert detail["type_metadata"] == issuer.type_metadata
    assert detail["display"]["logo"] == logo
    _backup_round_trip(own, headers, [credential_id])


NO_LABELS: list[Any] = [{"path": ["given_name"], "display": []}]


@pytest.mark.parametrize(("claims", "kept"), [
    (5, []), ("given_name", []), ({"path": ["given_name"]}, []),
    ([{"path": "given_name", "display": [{"lang": "en", "label": "x"}]}], []),
    ([{"path": ["given_name", True]}, 7, None, [1], {"display": []}], []),
    ([{"path": ["given_name"], "display": [{"lang": 5, "label": 42}, "x"], "name": {"a": 1}}], NO_LABELS),
    ([{"path": ["given_name"], "display": {"lang": "en", "label": "Nom"}}], NO_LABELS),
    ([{"path": ["given_name"], "display": [{"lang": "en", "label": "Nom\x1b[2J", "description": 5}]}], NO_LABELS),
])
def test_type_metadata_keeps_only_claim_labels_a_backup_takes(own: WalletHandle, issuer: StandInIssuer,
                                                              claims: Any, kept: list[Any]) -> None:
    headers = bearer(login(own.url, CITIZENS[4]))
    issuer.reset()
    issuer.type_metadata = {"vct": issuer.vct, "name": "Card", "claims": claims}
    _preview, credential_id = _receive(own, headers, issuer)
    assert _detail(own, headers, credential_id)["type_metadata"] == {"vct": issuer.vct, "name": "Card", "claims": kept}
    # A request for that type is previewed (the label: the claim's path), and the backup restores it.
    scanned = _scan(own, headers, issuer.vct)
    assert scanned.status_code == 201, scanned.text
    [option] = scanned.json()["queries"][0]["options"]
    assert [c["name"] for c in option["claims"] if c["path"] == ["given_name"]] == ["given_name"]
    _backup_round_trip(own, headers, [credential_id])
    assert httpx.delete(f"{own.url}/v1/credentials/{_listed(own, headers)[0]['id']}",
                        headers=headers).status_code == 204


# -- credentials stored before these checks --------------------------------------------------------

def _rewrite_details(wallet: WalletHandle, credential_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Reseal a stored credential's details changed by ``change``: a row an earlier version stored."""
    settings = wallet.settings

    async def rewrite() -> None:
        db = Database(settings.database_url)
        try:
            async with db.session() as session:
                row = await session.get(Credential, credential_id)
                assert row is not None
                owner = (await session.execute(select(Wallet).where(Wallet.id == row.wallet_id))).scalar_one()
                key = Vault(master_box(settings)).data_key(owner)
                details = key.open("credential", credential_id, row.sealed)
                change(details)
                row.sealed = key.seal("credential", credential_id, details)
        finally:
            await db.dispose()

    asyncio.run(rewrite())


def _as_stored_before(details: dict[str, Any]) -> None:
    details["display"].update(name=123, description={"x": 1}, background_color=5, logo="x",
                              claims=[{"path": "given_name", "name": 42}, {"path": ["family_name"], "name": 42},
                                      {"path": ["given_name"], "name": "Nom"}])
    details["issuer_display"].update(name=123, logo=[1])
    details["type_metadata"] = {"vct": "urn:x", "claims": [{"path": "given_name"}, 5]}


def test_a_credential_stored_before_the_checks_is_listed_shown_and_backed_up(
        own: WalletHandle, issuer: StandInIssuer) -> None:
    headers = bearer(login(own.url, CITIZENS[5]))
    issuer.reset()
    _preview, credential_id = _receive(own, headers, issuer)
    _rewrite_details(own, credential_id, _as_stored_before)
    [listed] = _listed(own, headers)
    assert (listed["name"], listed["issuer_name"]) == (issuer.vct, issuer.url)  # the row's type and issuer
    assert listed["display"] == dict.fromkeys(("description", "logo", "background_color", "text_color"))
    detail = _detail(own, headers, credential_id)
    assert detail["claim_labels"] == [{"path": ["given_name"], "name": "Nom"}]
    assert detail["type_metadata"] == {"vct": "urn:x", "claims": []}
    _backup_round_trip(own, headers, [credential_id])
    [restored] = _listed(own, headers)
    # Restored with the display of the issuer's metadata now (it describes the type), as an import does.
    assert _detail(own, headers, restored["id"])["name"] == issuer.vct


def test_a_request_for_a_credential_stored_before_the_checks_is_previewed(
        own: WalletHandle, issuer: StandInIssuer) -> None:
    """The consent preview reads the stored display data as the credential routes do: an issuer named
    ``123`` or Type Metadata ``claims: 5`` stored by an earlier version answered 500 at every scan."""
    headers = bearer(login(own.url, CITIZENS[6]))
    issuer.reset()
    _preview, credential_id = _receive(own, headers, issuer)
    _rewrite_details(own, credential_id, _as_stored_before)
    _rewrite_details(own, credential_id, lambda details: details.update(type_metadata={"vct": "urn:x", "claims": 5}))
    scanned = _scan(own, headers, issuer.vct)
    assert scanned.status_code == 201, scanned.text
    [option] = scanned.json()["queries"][0]["options"]
    assert (option["credential_name"], option["issuer_name"]) == (issuer.vct, issuer.url)
    assert [claim["name"] for claim in option["claims"]] == ["Nom"]  # the one label that is text


# -- one set of checks: what receipt keeps, a backup import takes -------------------------------------

NASTY: list[Any] = [None, 5, -1, True, 1.5, "", " ", "x" * 3000, "a\x00b", BIDI_NAME, [], [1], {}, {"a": 1},
                    [{"path": "x"}], [{"path": ["x", True]}], [{"path": ["x"], "name": 5}], [None, 5, "x"]]


@pytest.mark.parametrize("value", NASTY)
def test_whatever_the_stored_details_hold_the_backup_import_takes_what_is_shown(value: Any) -> None:
    from wallet_api.backup import _check_details
    from wallet_api.receiving import shown_details

    for member in ("display", "issuer_display", "type_metadata"):
        for inner in ("name", "description", "background_color", "text_color", "logo", "claims", "id", "vct"):
            details = {"display": {"name": "Card", "claims": []}, "issuer_display": {"id": "https://i.example",
                                                                                     "name": "Issuer"},
                       "type_metadata": {"vct": "urn:x", "claims": []}, "statuses": []}
            details[member] = {**details[member], inner: value}
            _check_details(shown_details(details))
            assert shown_details(shown_details(details)) == shown_details(details)
        _check_details(shown_details({"statuses": [], member: value}))
