"""A presentation request opens only the credentials of the types it accepts.

``GET /v1/presentations/{id}`` (the consent screen of a pending request, which an app reads again and
again) and the scan itself (``POST /v1/presentations``) decrypted every credential of the wallet —
details and every batch copy — whatever the request's DCQL query asked for. Now only the credentials
whose clear ``vct`` is among the query's ``meta.vct_values`` are read and opened (a query of another
format, an mdoc's, opens none: every stored credential is an SD-JWT VC). What the preview says does not change: a query nothing answers gives the
reason it gave before (``vct_mismatch`` when the wallet holds other types, ``no_credentials`` when it
holds none).

Real issuer, verifier and wallet over HTTP, on a system of this module's own without the wallet's
background sweep (nothing but the test's requests opens a credential). The decryptions are counted at
the cipher the vault uses (``cryptography``'s AES-GCM, wrapped to record the associated data of each
value it opens, which names the wallet, the kind of row and the row): the wallet's own code runs as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import wallet_api.vault
from sandbox.population import DEMO_EVERYTHING, DEMO_NO_DEGREE
from ssi.dcql import CredentialQuery, DCQLQuery
from ssi.oid4vp import unsigned_request_object
from tests.wallet_api.conftest import Recorder, bearer, login
from tests.wallet_api.system import System, agency_request, open_presentation, running_system
from tests.wallet_api.test_e2e import make_offer, receive


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("preview-types"), background_interval=0) as running:
        yield running


class Opened:
    """The values the vault decrypted, by their associated data ``cartera-wallet|<wallet>|<kind>|<row>``."""

    def __init__(self) -> None:
        self.aad: list[str] = []

    def credentials(self, wallet_id: str) -> tuple[set[str], set[str], int]:
        """``(credentials whose details were opened, credentials one of whose copies was, copies opened)``
        of one wallet."""
        details: set[str] = set()
        copies: set[str] = set()
        count = 0
        for aad in self.aad:
            _, wallet, kind, row = aad.split("|", 3)
            if wallet != wallet_id:
                continue
            if kind == "credential":
                details.add(row)
            elif kind == "credential-copy":
                copies.add(row.split("|", 1)[0])
                count += 1
        return details, copies, count

    def clear(self) -> None:
        self.aad.clear()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    record = Opened()

    class CountingAESGCM:
        """AES-GCM as the vault uses it, recording what it decrypts."""

        def __init__(self, key: bytes) -> None:
            self._aead = AESGCM(key)

        def encrypt(self, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
            return self._aead.encrypt(nonce, data, aad)

        def decrypt(self, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
            record.aad.append((aad or b"").decode())
            return self._aead.decrypt(nonce, data, aad)

    monkeypatch.setattr(wallet_api.vault, "AESGCM", CountingAESGCM)
    return record


def _wallet_id(system: System, tokens: dict[str, str]) -> str:
    return httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens), timeout=30).json()["wallet_id"]


def _get(system: System, tokens: dict[str, str], presentation_id: str) -> dict[str, Any]:
    r = httpx.get(f"{system.wallet}/v1/presentations/{presentation_id}", headers=bearer(tokens), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _mdoc_request(recorder: Recorder) -> str:
    """An unsigned (development) request for an mdoc (a query naming a doctype, no ``vct_values``)."""
    client_id = f"redirect_uri:{recorder.url}/response"
    token = unsigned_request_object({
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post",
        "response_uri": f"{recorder.url}/response", "nonce": "n-mdoc", "state": "s-mdoc",
        "dcql_query": {"credentials": [{"id": "mdl", "format": "mso_mdoc",
                                        "meta": {"doctype_value": "org.iso.18013.5.1.mDL"},
                                        "claims": [{"path": ["org.iso.18013.5.1", "family_name"]}]}]}})
    return f"openid4vp://?client_id={quote(client_id)}&request={token}"


@pytest.fixture(scope="module")
def holder(own_system: System) -> tuple[dict[str, str], str, dict[str, str]]:
    """A citizen holding a tax certificate, a padró certificate and a working-life report."""
    tokens = login(own_system.wallet, DEMO_EVERYTHING)
    received = {type_id: receive(own_system, tokens, make_offer(own_system, slug, type_id, DEMO_EVERYTHING)
                                 )["credential_ids"][0]
                for slug, type_id in (("aoc-tax", "tax-compliance"), ("ajuntament-girona", "padro"),
                                      ("aoc-tax", "working-life"))}
    return tokens, _wallet_id(own_system, tokens), received


def test_a_request_for_one_type_opens_only_the_credentials_of_that_type(
        own_system: System, holder: tuple[dict[str, str], str, dict[str, str]], opened: Opened) -> None:
    tokens, wallet_id, received = holder
    tax = received["tax-compliance"]
    copies = httpx.get(f"{own_system.wallet}/v1/credentials/{tax}", headers=bearer(tokens)).json()["copies"]
    assert copies >= 1

    opened.clear()
    preview = open_presentation(own_system, tokens, agency_request(own_system))  # the tax certificate only
    assert [o["credential_id"] for o in preview["queries"][0]["options"]] == [tax]
    assert opened.credentials(wallet_id) == ({tax}, {tax}, copies)

    opened.clear()
    now = _get(own_system, tokens, preview["presentation_id"])
    assert [o["credential_id"] for o in now["queries"][0]["options"]] == [tax]
    assert now["satisfiable"] and now["queries"][0]["unreadable_count"] == 0
    # The padró certificate and the working-life report stay sealed: neither their details nor a copy.
    assert opened.credentials(wallet_id) == ({tax}, {tax}, copies)

    # Approving with the default choice opens what it sends, and nothing of the other types either.
    opened.clear()
    sent = httpx.post(f"{own_system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                      headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200 and sent.json()["state"] == "sent", sent.text
    details, copies_of, _ = opened.credentials(wallet_id)
    assert details == {tax} and copies_of == {tax}


def test_a_query_of_another_format_opens_nothing_and_keeps_its_reason(
        own_system: System, holder: tuple[dict[str, str], str, dict[str, str]], opened: Opened,
        recorder: Recorder) -> None:
    tokens, wallet_id, _ = holder
    opened.clear()
    r = httpx.post(f"{own_system.wallet}/v1/presentations", json={"request_uri": _mdoc_request(recorder)},
                   headers=bearer(tokens), timeout=30)
    assert r.status_code == 201, r.text
    [query] = r.json()["queries"]
    # Every stored credential is an SD-JWT VC: none answers an mdoc query, so none is opened for it,
    # and the query says why, as it did when every credential was opened to find that out.
    assert query["options"] == [] and query["reason"] == "format_mismatch"
    assert _get(own_system, tokens, r.json()["presentation_id"])["queries"][0]["reason"] == "format_mismatch"
    assert opened.credentials(wallet_id) == (set(), set(), 0)


def test_only_an_sd_jwt_vc_query_naming_no_type_would_open_every_credential() -> None:
    """The DCQL parser refuses an SD-JWT VC query without ``vct_values``; one let through (built
    directly here) makes the wallet open every credential, as it did for every query."""
    from wallet_api.sharing import query_types

    tax = CredentialQuery(id="tax", format="dc+sd-jwt", meta={"vct_values": ["urn:tax", "urn:tax:v2"]})
    padro = CredentialQuery(id="padro", format="dc+sd-jwt", meta={"vct_values": ["urn:padro"]})
    mdl = CredentialQuery(id="mdl", format="mso_mdoc", meta={"doctype_value": "org.iso.18013.5.1.mDL"})
    assert query_types(DCQLQuery(credentials=(tax, padro, mdl))) == {"urn:tax", "urn:tax:v2", "urn:padro"}
    assert query_types(DCQLQuery(credentials=(mdl,))) == frozenset()
    untyped = CredentialQuery(id="any", format="dc+sd-jwt", meta={})
    assert query_types(DCQLQuery(credentials=(tax, untyped))) is None


def test_a_query_nothing_answers_keeps_its_reason(
        own_system: System, holder: tuple[dict[str, str], str, dict[str, str]], opened: Opened) -> None:
    tokens, wallet_id, _ = holder
    # A diploma is asked for: the holder has credentials, of other types; none of them is opened.
    opened.clear()
    preview = open_presentation(own_system, tokens, agency_request(own_system, "job-application", "uni-admissions"))
    query = preview["queries"][0]
    assert not preview["satisfiable"] and query["options"] == []
    assert query["reason"] == "vct_mismatch"
    assert opened.credentials(wallet_id) == (set(), set(), 0)
    assert _get(own_system, tokens, preview["presentation_id"])["queries"][0]["reason"] == "vct_mismatch"

    # A citizen with no credential at all: no_credentials, as before.
    empty = login(own_system.wallet, DEMO_NO_DEGREE)
    preview = open_presentation(own_system, empty, agency_request(own_system))
    assert preview["queries"][0]["reason"] == "no_credentials"
