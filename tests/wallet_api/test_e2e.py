"""End to end over real HTTP: the wallet receives from the real issuer and shares with the real verifier."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING, DEMO_NO_DEGREE
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, execute_sql, query_sql


def make_offer(system: System, slug: str, type_id: str, identifier: str, *, tx_code: bool = True,
               by_reference: bool = True) -> dict:
    r = httpx.post(f"{system.issuer}/v1/offers", headers=system.issuer_headers(slug), timeout=30, json={
        "credential_configuration_ids": [type_id], "subject": {"identifier": identifier, "name": "Montserrat Puig"},
        "tx_code": tx_code, "by_reference": by_reference})
    assert r.status_code == 201, r.text
    return r.json()


def receive(system: System, tokens: dict, offer: dict) -> dict:
    headers = {**bearer(tokens), "Accept-Language": "ca"}
    preview = httpx.post(f"{system.wallet}/v1/offers", json={"offer_uri": offer["offer_uri"]}, headers=headers,
                         timeout=30)
    assert preview.status_code == 201, preview.text
    body = preview.json()
    assert body["tx_code_required"] == (offer["tx_code"] is not None)
    accepted = httpx.post(f"{system.wallet}/v1/offers/{body['offer_id']}/accept", json={"tx_code": offer["tx_code"]},
                          headers=headers, timeout=60)
    assert accepted.status_code == 200, accepted.text
    return accepted.json()


@pytest.mark.parametrize(("slug", "type_id"), [("aoc-tax", "tax-compliance"), ("uni-barcelona", "university-diploma"),
                                                ("ajuntament-girona", "padro"), ("aoc-tax", "working-life")])
def test_receive_each_builtin_type(system: System, slug: str, type_id: str) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    result = receive(system, tokens, make_offer(system, slug, type_id, DEMO_EVERYTHING))
    assert result["state"] == "issued" and len(result["credential_ids"]) == 1
    assert result["issuer"]["name"]
    cid = result["credential_ids"][0]
    detail = httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).json()
    assert detail["status"] == "valid" and detail["claims"]
    # The built-in types' vct names no server: the Type Metadata comes from the issuer's own copy,
    # taken because it matches the credential's vct#integrity.
    metadata = detail["type_metadata"]
    assert metadata is not None and metadata["vct"].endswith(f"/{type_id}/v1"), metadata
    assert {d["locale"] for d in metadata["display"]} >= {"ca", "es", "en"}
    assert detail["copies"] >= 1
    history = httpx.get(f"{system.wallet}/v1/history", params={"kind": "receipt"}, headers=bearer(tokens)).json()
    assert any(h["details"]["credential_id"] == cid for h in history)


def test_share_subset_verifier_confirms(system: System) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", DEMO_EVERYTHING))
    request = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers("ajuntament-barcelona"),
                         json={"template": "grant-application"}).json()
    preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                         headers={**bearer(tokens), "Accept-Language": "en"}, timeout=30)
    assert preview.status_code == 201, preview.text
    body = preview.json()
    assert body["verifier"]["verified"] and body["verifier"]["name"] == "Ajuntament de Barcelona"
    assert body["purpose"].startswith("Grant application")
    assert body["satisfiable"]
    claims = body["queries"][0]["options"][0]["claims"]
    shown = {tuple(c["path"]) for c in claims}
    assert {tuple(c["path"]) for c in claims if c["requested"]} == {("nif",), ("name",), ("complianceStatus",)}
    # The type's plain claims (not selectively disclosable) leave in every presentation: the consent
    # screen lists them too, as not asked for.
    assert {tuple(c["path"]) for c in claims if not c["requested"]} == {("purpose",), ("issuedAt",), ("validUntil",)}
    # before approval, nothing reached the verifier
    status = httpx.get(request["status_url"], headers=system.verifier_headers("ajuntament-barcelona")).json()
    assert status["status"] == "pending"
    sent = httpx.post(f"{system.wallet}/v1/presentations/{body['presentation_id']}/approve", json={},
                      headers=bearer(tokens), timeout=30)
    assert sent.status_code == 200, sent.text
    assert sent.json()["state"] == "sent"
    deadline = time.monotonic() + 10
    while True:
        result = httpx.get(request["status_url"], headers=system.verifier_headers("ajuntament-barcelona")).json()
        if result["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result["status"] == "verified", result
    disclosed = result["claims"]["tax"][0] if isinstance(result["claims"]["tax"], list) else result["claims"]["tax"]
    flat = str(disclosed)
    assert DEMO_EVERYTHING in flat
    # exactly the previewed claims were disclosed: no birth date, no aeatReference
    assert "aeatReference" not in flat
    shares = httpx.get(f"{system.wallet}/v1/history", params={"kind": "share"}, headers=bearer(tokens)).json()
    assert shares[0]["details"]["outcome"] == "sent"
    assert {tuple(c["path"]) for c in shares[0]["details"]["disclosed"][0]["claims"]} == shown


def test_decline_sends_access_denied(system: System) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    request = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers("ajuntament-barcelona"),
                         json={"template": "residence"}).json()
    preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                         headers=bearer(tokens), timeout=30).json()
    r = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/decline", headers=bearer(tokens))
    assert r.status_code == 200 and r.json()["state"] == "declined"
    deadline = time.monotonic() + 10
    while True:
        result = httpx.get(request["status_url"], headers=system.verifier_headers("ajuntament-barcelona")).json()
        if result["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result["status"] in ("declined", "rejected"), result


def test_unsatisfiable_query_cannot_be_approved(system: System) -> None:
    tokens = login(system.wallet, DEMO_NO_DEGREE)  # an empty wallet
    request = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers("uni-admissions"),
                         json={"template": "job-application"}).json()
    preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                         headers=bearer(tokens), timeout=30).json()
    assert preview["satisfiable"] is False
    assert preview["queries"][0]["reason"]
    r = httpx.post(f"{system.wallet}/v1/presentations/{preview['presentation_id']}/approve", json={},
                   headers=bearer(tokens))
    assert r.status_code == 400 and r.json()["error"] == "unsatisfiable"
    result = httpx.get(request["status_url"], headers=system.verifier_headers("uni-admissions")).json()
    assert result["status"] == "pending"


def test_sqlite_copy_reveals_no_claim_value_or_key(system: System) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    receive(system, tokens, make_offer(system, "uni-barcelona", "university-diploma", DEMO_EVERYTHING))
    creds = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()
    values: set[str] = {DEMO_EVERYTHING}
    # The validity times (iat/exp) are stored in clear to schedule expiry alerts (docs/wallet-api.md);
    # a claim that merely repeats them (tax compliance's validUntil) is therefore not counted.
    clear_dates = {c[k][:10] for c in creds for k in ("issued_at", "expires_at") if c.get(k)}
    for cred in creds:
        detail = httpx.get(f"{system.wallet}/v1/credentials/{cred['id']}", headers=bearer(tokens)).json()
        for value in detail["claims"].values():
            if isinstance(value, str) and len(value) >= 6 and value[:10] not in clear_dates:
                values.add(value)
    # the holder keys: read through the service's own vault (the test's only way to know them)
    from wallet_api.store import load_credentials

    ctx = system.wallet_app.state.wallet

    async def keys() -> list[str]:
        from sqlalchemy import select

        from wallet_api.models import Wallet
        async with ctx.db.read_session() as session:
            out = []
            for wallet in (await session.execute(select(Wallet))).scalars():
                # Other tests damage rows of their own wallets in this shared system: those are left out.
                for cred in await load_credentials(session, ctx.vault.data_key(wallet), unreadable=[]):
                    for copy in cred.copies:
                        out.append(copy.holder_key.private_jwk()["d"])
                        out.append(copy.token.split("~")[0])
            return out

    secrets_ = asyncio.run(keys())
    assert secrets_
    data = b""
    for suffix in ("", "-wal"):
        path = Path(str(system.wallet_db) + suffix)
        if path.exists():
            data += path.read_bytes()
    assert len(data) > 10_000
    for needle in values | set(secrets_):
        assert needle.encode() not in data, "found a claim value or key material in the database file"


def test_citizens_are_isolated(system: System) -> None:
    a = login(system.wallet, DEMO_EVERYTHING)
    b = login(system.wallet, DEMO_NO_DEGREE)
    cid = receive(system, a, make_offer(system, "ajuntament-girona", "padro", DEMO_EVERYTHING))["credential_ids"][0]
    assert httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(b)).status_code == 404
    assert httpx.delete(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(b)).status_code == 404
    assert all(c["id"] != cid for c in httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(b)).json())
    assert all(h["details"].get("credential_id") != cid
               for h in httpx.get(f"{system.wallet}/v1/history", headers=bearer(b)).json())
    assert all(al["credential_id"] != cid for al in httpx.get(f"{system.wallet}/v1/alerts", headers=bearer(b)).json())
    assert httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(a)).status_code == 200


def test_revocation_alert_and_delete(system: System) -> None:
    tokens = login(system.wallet, DEMO_EVERYTHING)
    offer = make_offer(system, "aoc-tax", "working-life", DEMO_EVERYTHING)
    cid = receive(system, tokens, offer)["credential_ids"][0]
    issuer_id = offer["credential_ids"]["working-life"]
    r = httpx.post(f"{system.issuer}/v1/credentials/{issuer_id}/revoke", headers=system.issuer_headers("aoc-tax"))
    assert r.status_code == 200, r.text
    # the next status check is due now (instead of after the list's ttl): the background sweep runs it
    execute_sql(system, "UPDATE credentials SET next_status_check = '2000-01-01 00:00:00.000000' WHERE id = ?", cid)

    def revoked() -> dict | None:
        body = httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).json()
        return body if body["status"] == "revoked" else None

    deadline = time.monotonic() + 15
    while not revoked() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert revoked(), "the background status check did not see the revocation"
    # Revocation is final: the credential is never checked again and leaves the sweep's index.
    assert query_sql(system, "SELECT next_status_check FROM credentials WHERE id = ?", cid) == [(None,)]
    alerts = httpx.get(f"{system.wallet}/v1/alerts", params={"unread": True}, headers=bearer(tokens)).json()
    assert any(al["kind"] == "revoked" and al["credential_id"] == cid for al in alerts)
    assert httpx.post(f"{system.wallet}/v1/alerts/read", json={"ids": None}, headers=bearer(tokens)).status_code == 204
    assert httpx.get(f"{system.wallet}/v1/alerts", params={"unread": True}, headers=bearer(tokens)).json() == []
    assert httpx.delete(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).status_code == 204
    assert httpx.get(f"{system.wallet}/v1/credentials/{cid}", headers=bearer(tokens)).status_code == 404


def test_backup_round_trip(system: System) -> None:
    a = login(system.wallet, DEMO_EVERYTHING)
    receive(system, a, make_offer(system, "ajuntament-girona", "padro", DEMO_EVERYTHING))
    backup = httpx.post(f"{system.wallet}/v1/backup/export", json={"passphrase": "correct horse battery"},
                        headers=bearer(a), timeout=30).json()
    assert backup["kdf"]["name"] == "scrypt" and DEMO_EVERYTHING not in str(backup)
    b = login(system.wallet, "Y1234567X")
    wrong = httpx.post(f"{system.wallet}/v1/backup/import", json={"passphrase": "wrong passphrase!", "backup": backup},
                       headers=bearer(b), timeout=30)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_backup"
    # A's file (holder keys and all) does not restore into B's wallet, passphrase or not.
    foreign = httpx.post(f"{system.wallet}/v1/backup/import",
                         json={"passphrase": "correct horse battery", "backup": backup}, headers=bearer(b), timeout=30)
    assert foreign.status_code == 403 and foreign.json()["error"] == "foreign_backup", foreign.text
    assert httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(b)).json() == []
    ok = httpx.post(f"{system.wallet}/v1/backup/import", json={"passphrase": "correct horse battery", "backup": backup},
                    headers=bearer(a), timeout=30)
    assert ok.status_code == 200 and ok.json()["credentials_added"] == 0  # A holds them already
    assert len(httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(a)).json()) >= 1


def test_bad_request_objects_are_refused_and_nothing_sent(system: System) -> None:
    from urllib.parse import quote

    from ssi import x509 as ssi_x509
    from ssi.jose import Key
    from ssi.oid4vp import sign_request_object, unsigned_request_object

    tokens = login(system.wallet, DEMO_EVERYTHING)
    base = {"response_type": "vp_token", "response_mode": "direct_post", "nonce": "n-1", "state": "s-1",
            "dcql_query": {"credentials": [{"id": "q", "format": "dc+sd-jwt", "meta": {"vct_values": ["x"]}}]}}
    # redirect_uri: prefix whose response_uri differs from the client id
    client_id = "redirect_uri:http://127.0.0.1:1/cb"
    token = unsigned_request_object({**base, "client_id": client_id, "response_uri": "http://127.0.0.1:2/other"})
    uri = f"openid4vp://?client_id={quote(client_id)}&request={token}"
    r = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": uri}, headers=bearer(tokens))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request_object"
    # x509_san_dns signed by a key other than the certificate's
    ca_key, ca = ssi_x509.create_ca("Somebody")
    cert_key, signer = Key.generate("ES256"), Key.generate("ES256")
    cert = ssi_x509.issue_certificate(ca_key, ca, cert_key, "Agency", san_dns=["127.0.0.1"])
    client_id = "x509_san_dns:127.0.0.1"
    token = sign_request_object({**base, "client_id": client_id, "response_uri": "http://127.0.0.1:2/r"}, signer,
                                ssi_x509.x5c_from_chain([cert]))
    uri = f"openid4vp://?client_id={quote(client_id)}&request={token}"
    r = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": uri}, headers=bearer(tokens))
    assert r.status_code == 400 and "bad_request_signature" in r.json()["error_description"]
    # signed correctly, but by a certificate from an unknown CA: refused by default (test_trust.py
    # covers the opt-in preview)
    token = sign_request_object({**base, "client_id": client_id, "response_uri": "http://127.0.0.1:2/r"}, cert_key,
                                ssi_x509.x5c_from_chain([cert]))
    uri = f"openid4vp://?client_id={quote(client_id)}&request={token}"
    r = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": uri}, headers=bearer(tokens))
    assert r.status_code == 400 and r.json()["error"] == "untrusted_verifier"
