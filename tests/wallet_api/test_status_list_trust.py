"""The wallet's status checks believe a status list only when the credential's own issuer signed it.

A credential received from the issuer ``<host>/t/uni`` points at a status list under that issuer. Every
issuer (every tenant of a shared host) holds a certificate under the same anchors, so a list whose
``x5c`` merely chains to them could be anyone's: one served at the list's URL by another tenant, or
signed by a certificate naming the issuer's host rather than the issuer, once revoked the citizen's
credential in the wallet for good. So did a list signed with a key of the issuer's metadata when the
operator turned ``trust_issuer_metadata`` off, and a status value the wallet does not know (0x03 is
application specific). Now such a check fails: the credential keeps its status and is checked again
soon; a list the issuer signed still revokes, and that revocation is final.

A stand-in issuer over real HTTP (pre-authorized offer, metadata, token, credential and status list
endpoints, JWT VC Issuer Metadata; credentials signed under the test CA the wallets trust, the
certificate naming the issuer) serves, per test, the status list that test chose; the wallets' own
background sweeps check it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from sandbox.population import generate_population
from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.status_list import StatusList, sign_status_list_token, status_claim
from ssi.x509 import cert_to_pem, issue_certificate, x5c_from_chain
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import (
    _WALLET_PORTS,
    ISSUER_CA,
    WalletHandle,
    bearer,
    login,
    offline_wallet,
    wallet_settings,
)
from wallet_api.app import create_app
from wallet_api.background import check_statuses
from wallet_api.models import Credential, Wallet
from wallet_api.store import add_credential

#: Citizens of the identity provider's population (each test logs in its own).
CITIZENS = [generate_population(size=50).citizens[i].identifier for i in (14, 15, 16, 17)]
VCT = "urn:cartera:test:status-trust"
CONFIGURATION = "status-trust-test"
META_KID = "status-meta-1"


@dataclass
class StatusListSpec:
    """What the stand-in serves at one list's URL: who signs it, the status of indexes 0 and 1, the
    list's ``bits``, and the URI its ``sub`` names (the list's own unless given)."""

    signer: str = "issuer"
    value: int = 0
    bits: int = 1
    sub: str | None = None


@dataclass
class StandInIssuer:
    root: str = ""
    keys: dict[str, tuple[Key, list[str] | None]] = field(default_factory=dict)
    lists: dict[str, StatusListSpec] = field(default_factory=dict)
    next_list: str = ""

    @property
    def iss(self) -> str:
        return f"{self.root}/t/uni"

    def list_uri(self, name: str) -> str:
        return f"{self.iss}/status/{name}"

    def offer_uri(self) -> str:
        offer = {"credential_issuer": self.iss, "credential_configuration_ids": [CONFIGURATION],
                 "grants": {"urn:ietf:params:oauth:grant-type:pre-authorized_code": {
                     "pre-authorized_code": secrets.token_urlsafe(16)}}}
        return "openid-credential-offer://?credential_offer=" + quote(json.dumps(offer))


def _proven_key(proof: str) -> Key:
    header = proof.split(".")[0]
    return Key.from_jwk(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["jwk"])


def _signer(ca: Any, *, san_uris: Sequence[str] = (), san_dns: Sequence[str] = ()) -> tuple[Key, list[str]]:
    key = Key.generate("ES256")
    cert = issue_certificate(ca[0], ca[1], key, "Stand-in signer", san_uris=san_uris, san_dns=san_dns)
    return key, x5c_from_chain([cert])


@pytest.fixture(scope="module")
def issuer() -> Iterator[StandInIssuer]:
    port = free_port()
    state = StandInIssuer(root=f"http://127.0.0.1:{port}")
    state.keys = {
        # The issuer's own certificate, as the one its credentials carry.
        "issuer": _signer(ISSUER_CA, san_uris=[state.iss]),
        # Another tenant of the same host, its certificate under the same anchor.
        "other-tenant": _signer(ISSUER_CA, san_uris=[f"{state.root}/t/tax"]),
        # A certificate under the same anchor naming the issuer's host, not the issuer.
        "issuer-host": _signer(ISSUER_CA, san_dns=["127.0.0.1"]),
        # A key the issuer publishes as JWT VC Issuer Metadata (no x5c).
        "metadata": (Key.generate("ES256", kid=META_KID), None),
    }
    app = FastAPI()

    @app.get("/.well-known/openid-credential-issuer/t/uni")
    async def metadata() -> dict[str, Any]:
        return {"credential_issuer": state.iss, "credential_endpoint": f"{state.iss}/credential",
                "credential_configurations_supported": {CONFIGURATION: {
                    "format": "dc+sd-jwt", "vct": VCT, "cryptographic_binding_methods_supported": ["jwk"],
                    "proof_types_supported": {"jwt": {"proof_signing_alg_values_supported": ["ES256"]}}}}}

    @app.get("/.well-known/oauth-authorization-server/t/uni")
    async def as_metadata() -> dict[str, Any]:
        return {"issuer": state.iss, "token_endpoint": f"{state.iss}/token",
                "pre-authorized_grant_anonymous_access_supported": True}

    @app.get("/.well-known/jwt-vc-issuer/t/uni")
    async def jwt_vc_issuer() -> dict[str, Any]:
        return {"issuer": state.iss, "jwks": {"keys": [state.keys["metadata"][0].public_jwk()]}}

    @app.post("/t/uni/token")
    async def token() -> dict[str, Any]:
        return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300}

    @app.post("/t/uni/credential")
    async def credential(request: Request) -> JSONResponse:
        proven = _proven_key((await request.json())["proofs"]["jwt"][0])
        key, x5c = state.keys["issuer"]
        token = issue_sd_jwt_vc({"given_name": "Laia"}, vct=VCT, issuer=state.iss, key=key,
                                holder_jwk=proven.public_jwk(), disclosable=[("given_name",)], x5c=x5c,
                                status=status_claim(0, state.list_uri(state.next_list)))
        return JSONResponse({"credentials": [{"credential": token}]})

    @app.get("/t/uni/status/{name}")
    async def status_list(name: str) -> Response:
        spec = state.lists.get(name)
        if spec is None:
            return Response(status_code=404)
        entries = StatusList(16, bits=spec.bits)
        for idx in (0, 1):
            entries.set(idx, spec.value)
        key, x5c = state.keys[spec.signer]
        token = sign_status_list_token(entries, uri=spec.sub or state.list_uri(name), key=key, x5c=x5c)
        return PlainTextResponse(token, media_type="application/statuslist+jwt")

    with serve(app, port=port):
        yield state


def _sweeping_wallet(idp_url: str, tmp: Path, port: int, **extra: Any) -> Iterator[WalletHandle]:
    """A wallet trusting the test CA whose background sweep runs (every 0.2 s)."""
    anchor = tmp / "issuer-anchor.pem"
    anchor.write_bytes(cert_to_pem(ISSUER_CA[1]))
    settings = wallet_settings(tmp, port, idp_url, issuer_anchor_files=[anchor], background_interval=0.2, **extra)
    with serve(create_app(settings), port=port) as url:
        yield WalletHandle(url, settings, None, idp_url)


@pytest.fixture(scope="module")
def wallet(idp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletHandle]:
    """Trusting issuers' metadata keys too (``trust_issuer_metadata``, the default)."""
    yield from _sweeping_wallet(idp_url, tmp_path_factory.mktemp("status-trust"), _WALLET_PORTS[2])


@pytest.fixture(scope="module")
def strict_wallet(idp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletHandle]:
    """Not trusting issuers' metadata keys (``trust_issuer_metadata`` off)."""
    yield from _sweeping_wallet(idp_url, tmp_path_factory.mktemp("strict-status"), _WALLET_PORTS[1],
                                trust_issuer_metadata=False)


def _database(wallet: WalletHandle) -> Path:
    return Path(wallet.settings.database_url.split(":///", 1)[1])


def _row(wallet: WalletHandle, credential_id: str) -> tuple[str, str | None, str | None]:
    """``(status, status_checked_at, next_status_check)`` of the credential, as stored."""
    with contextlib.closing(sqlite3.connect(_database(wallet))) as connection:
        return connection.execute("SELECT status, status_checked_at, next_status_check FROM credentials "
                                  "WHERE id = ?", (credential_id,)).fetchone()


def _checked(wallet: WalletHandle, credential_id: str, *, after: str | None = None) -> tuple[str, str | None]:
    """Wait for the sweep to check the credential (once more than ``after``, the last check's time);
    return its status and next check."""
    deadline = time.monotonic() + 15
    while True:
        status, checked_at, next_check = _row(wallet, credential_id)
        if checked_at is not None and checked_at != after:
            return status, next_check
        assert time.monotonic() < deadline, "the background sweep did not check the credential"
        time.sleep(0.1)


def _check_again(wallet: WalletHandle, credential_id: str) -> tuple[str, str | None]:
    """Make the credential's next check due now (instead of minutes later) and wait for it."""
    _status, checked_at, _next = _row(wallet, credential_id)
    with contextlib.closing(sqlite3.connect(_database(wallet))) as connection:
        connection.execute("UPDATE credentials SET next_status_check = '2000-01-01 00:00:00.000000' "
                           "WHERE id = ?", (credential_id,))
        connection.commit()
    return _checked(wallet, credential_id, after=checked_at)


def _receive(wallet: WalletHandle, headers: dict[str, str], issuer: StandInIssuer, list_name: str) -> str:
    """The id of a credential the wallet received from the stand-in, pointing at index 0 of ``list_name``."""
    issuer.next_list = list_name
    scanned = httpx.post(f"{wallet.url}/v1/offers", json={"offer_uri": issuer.offer_uri()}, headers=headers,
                         timeout=30)
    assert scanned.status_code == 201, scanned.text
    accepted = httpx.post(f"{wallet.url}/v1/offers/{scanned.json()['offer_id']}/accept", json={}, headers=headers,
                          timeout=60)
    assert accepted.status_code == 200 and accepted.json()["state"] == "issued", accepted.text
    (credential_id,) = accepted.json()["credential_ids"]
    return credential_id


def _alerts(wallet: WalletHandle, headers: dict[str, str], credential_id: str) -> list[str]:
    return [a["kind"] for a in httpx.get(f"{wallet.url}/v1/alerts", headers=headers).json()
            if a["credential_id"] == credential_id and a["kind"] != "credential_received"]


def _due_soon(next_check: str | None) -> bool:
    """Checked again within minutes, as after a list that could not be fetched."""
    if next_check is None:
        return False
    when = dt.datetime.fromisoformat(next_check).replace(tzinfo=dt.UTC)
    return when <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)


@pytest.mark.parametrize("forged", ["other-tenant", "issuer-host", "another-list"])
def test_a_list_the_issuer_did_not_sign_for_this_uri_does_not_revoke(
        wallet: WalletHandle, issuer: StandInIssuer, forged: str) -> None:
    headers = bearer(login(wallet.url, CITIZENS[0]))
    name = f"forged-{forged}-{secrets.token_hex(4)}"
    if forged == "another-list":  # the issuer's own list for another URI, replayed at this one
        issuer.lists[name] = StatusListSpec(signer="issuer", value=1, sub=issuer.list_uri("elsewhere"))
    else:
        issuer.lists[name] = StatusListSpec(signer=forged, value=1)
    credential_id = _receive(wallet, headers, issuer, name)

    status, next_check = _checked(wallet, credential_id)
    assert status == "valid", f"a list signed by {forged!r} revoked the credential"
    assert _due_soon(next_check), next_check  # a failed check: tried again soon, not after the interval
    assert _alerts(wallet, headers, credential_id) == []

    # The issuer itself revokes it: that list counts, and the revocation is final.
    issuer.lists[name] = StatusListSpec(signer="issuer", value=1)
    assert _check_again(wallet, credential_id) == ("revoked", None)
    assert _alerts(wallet, headers, credential_id) == ["revoked"]


def test_a_list_signed_with_a_metadata_key_counts_only_when_the_wallet_trusts_issuer_metadata(
        wallet: WalletHandle, strict_wallet: WalletHandle, issuer: StandInIssuer) -> None:
    assert strict_wallet.settings.trust_issuer_metadata is False and wallet.settings.trust_issuer_metadata
    name = f"metadata-{secrets.token_hex(4)}"
    issuer.lists[name] = StatusListSpec(signer="metadata", value=1)
    strict_headers = bearer(login(strict_wallet.url, CITIZENS[1]))
    strict_id = _receive(strict_wallet, strict_headers, issuer, name)

    status, next_check = _checked(strict_wallet, strict_id)
    assert status == "valid", "a list signed with a metadata key revoked the credential with metadata untrusted"
    assert _due_soon(next_check), next_check
    assert _alerts(strict_wallet, strict_headers, strict_id) == []

    # The wallet that trusts issuer metadata (the default) follows the same list.
    headers = bearer(login(wallet.url, CITIZENS[1]))
    credential_id = _receive(wallet, headers, issuer, name)
    assert _checked(wallet, credential_id) == ("revoked", None)

    # And the strict wallet follows the issuer's x5c-signed list.
    issuer.lists[name] = StatusListSpec(signer="issuer", value=1)
    assert _check_again(strict_wallet, strict_id) == ("revoked", None)
    assert _alerts(strict_wallet, strict_headers, strict_id) == ["revoked"]


def test_an_application_specific_status_keeps_the_credential_and_it_is_checked_again(
        wallet: WalletHandle, issuer: StandInIssuer) -> None:
    headers = bearer(login(wallet.url, CITIZENS[2]))
    name = f"app-specific-{secrets.token_hex(4)}"
    issuer.lists[name] = StatusListSpec(signer="issuer", value=0x03, bits=2)
    credential_id = _receive(wallet, headers, issuer, name)

    status, next_check = _checked(wallet, credential_id)
    assert status == "valid", "status 0x03 (application specific) revoked the credential"
    assert next_check is not None  # checked again, at the usual interval
    assert _alerts(wallet, headers, credential_id) == []

    issuer.lists[name] = StatusListSpec(signer="issuer", value=0x02, bits=2)
    assert _check_again(wallet, credential_id)[0] == "suspended"
    issuer.lists[name] = StatusListSpec(signer="issuer", value=0x0F, bits=4)
    assert _check_again(wallet, credential_id)[0] == "suspended"  # the last known status stays
    issuer.lists[name] = StatusListSpec(signer="issuer", value=0x01, bits=2)
    assert _check_again(wallet, credential_id) == ("revoked", None)
    assert _alerts(wallet, headers, credential_id) == ["revoked", "suspended"]  # newest first


@pytest.mark.anyio
async def test_a_list_verified_for_one_issuers_credential_is_not_reused_for_another_issuers(
        tmp_path: Path, issuer: StandInIssuer) -> None:
    """One sweep fetches a list once per URI and issuer: the other tenant's credential pointing at the
    issuer's list URL (checked first, the list signed by that tenant) must not lend its list to the
    issuer's own credential."""
    name = f"shared-{secrets.token_hex(4)}"
    issuer.lists[name] = StatusListSpec(signer="other-tenant", value=1)
    anchor = tmp_path / "issuer-anchor.pem"
    anchor.write_bytes(cert_to_pem(ISSUER_CA[1]))
    jwk = Key.generate("ES256").private_jwk()
    now = dt.datetime.now(dt.UTC)
    async with offline_wallet(tmp_path, issuer_anchor_files=[anchor]) as ctx:
        sealed, key = ctx.vault.new_data_key("w-shared")
        async with ctx.db.session() as session:
            session.add(Wallet(id="w-shared", subject_index="w-shared", data_key=sealed,
                               profile=key.seal("profile", "w-shared", {})))
        ids = {}
        for who, iss, idx, due in (("tenant", f"{issuer.root}/t/tax", 1, now - dt.timedelta(hours=2)),
                                   ("issuer", issuer.iss, 0, now - dt.timedelta(hours=1))):
            async with ctx.db.session() as session:
                ids[who] = await add_credential(session, key, vct=VCT, issuer=iss, details={
                    "statuses": [{"uri": issuer.list_uri(name), "idx": idx}]}, copies=[("token", jwk)],
                    iat=None, exp=None)
                (await session.get(Credential, ids[who])).next_status_check = due  # type: ignore[union-attr]
        assert await check_statuses(ctx) == 2
        async with ctx.db.read_session() as session:
            status = {who: (await session.get(Credential, cid)).status  # type: ignore[union-attr]
                      for who, cid in ids.items()}
    assert status == {"tenant": "revoked", "issuer": "valid"}
