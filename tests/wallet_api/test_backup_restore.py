"""Backup restore with genuine credentials from the real issuer, and forged ones claiming that issuer.

The security review imported a credential signed with a random key that claimed a real issuer's URL:
it was listed as valid from the name the file gave, and a ``share`` from the file went into the audit
chain. Now every copy is verified as a received credential is, the issuer's name is the one its
metadata gives, and history comes back as ``imported``. Over real HTTP: the whole embedded system
(``system`` fixture: real issuer, wallet trusting its CA).
"""

from __future__ import annotations

import httpx

from sandbox.population import generate_population
from ssi.jose import Key
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from tests.wallet_api.conftest import bearer, bound_backup, login
from tests.wallet_api.system import System, open_copies
from tests.wallet_api.test_e2e import make_offer, receive
from wallet_api.backup import open_backup

#: Citizens with a padró that no other test of this system logs in (``fresh_citizens`` hands out others).
RESTORE_CITIZEN, FORGED_CITIZEN = [generate_population(size=50).citizens[i].identifier for i in (35, 36)]
PASSPHRASE = "correct horse battery"


def _export(system: System, tokens: dict) -> dict:
    r = httpx.post(f"{system.wallet}/v1/backup/export", json={"passphrase": PASSPHRASE}, headers=bearer(tokens),
                   timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _import(system: System, tokens: dict, backup: dict) -> httpx.Response:
    return httpx.post(f"{system.wallet}/v1/backup/import", json={"passphrase": PASSPHRASE, "backup": backup},
                      headers={**bearer(tokens), "Accept-Language": "ca"}, timeout=60)


def _bound(system: System, tokens: dict, content: dict) -> dict:
    wallet_id = httpx.get(f"{system.wallet}/v1/me", headers=bearer(tokens)).json()["wallet_id"]
    return bound_backup(system.wallet_app.state.wallet.settings, wallet_id, content, PASSPHRASE)


def test_a_deleted_credential_comes_back_from_the_backup_as_it_was_received(system: System) -> None:
    tokens = login(system.wallet, RESTORE_CITIZEN)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", RESTORE_CITIZEN))
    [received] = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()
    backup = _export(system, tokens)
    assert httpx.delete(f"{system.wallet}/v1/credentials/{received['id']}", headers=bearer(tokens)).status_code == 204

    r = _import(system, tokens, backup)
    assert r.status_code == 200, r.text
    # The receipt in the file is this wallet's own history entry, still there: not imported twice.
    assert r.json() == {"credentials_added": 1, "credentials_expired": 0, "history_imported": 0,
                        "skipped_at_export": 0}
    [restored] = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()
    same = ("vct", "name", "issuer", "issuer_name", "issued_at", "expires_at", "status", "copies")
    assert {k: restored[k] for k in same} == {k: received[k] for k in same}
    history = httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens)).json()
    assert sorted(h["kind"] for h in history) == ["deletion", "receipt", "restore"]
    restore = next(h for h in history if h["kind"] == "restore")["details"]
    assert restore["credentials"] == [{"credential_id": restored["id"], "issuer": received["issuer"],
                                       "issuer_name": received["issuer_name"], "vct": received["vct"],
                                       "credential_name": received["name"]}]
    assert httpx.get(f"{system.wallet}/v1/audit/check", headers=bearer(tokens)).json()["ok"] is True


def test_a_credential_forged_in_the_issuers_name_is_refused(system: System) -> None:
    tokens = login(system.wallet, FORGED_CITIZEN)
    receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", FORGED_CITIZEN))
    [genuine] = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()
    content = open_backup(_export(system, tokens), PASSPHRASE)
    entry = content["credentials"][0]
    issuer = entry["issuer"]
    assert issuer == genuine["issuer"] and issuer.startswith(system.issuer)

    # The same credential, signed by a random key in the real issuer's name (with and without its x5c).
    token = open_copies(system, genuine["id"])[0]["token"]
    parsed = SDJWT.parse(token)
    holder = Key.generate("ES256")
    claims = {k: v for k, v in parsed.payload.items() if k in ("given_name", "family_name")} or {"name": "x"}
    for x5c in (parsed.header.get("x5c"), None):
        forged = issue_sd_jwt_vc(claims, vct=entry["vct"], issuer=issuer, key=Key.generate("ES256"),
                                 holder_jwk=holder.public_jwk(), disclosable=[], x5c=x5c)
        fake = {**entry, "status": "valid", "details": {**entry["details"], "statuses": []},
                "copies": [{"token": forged, "holder_jwk": holder.private_jwk()}]}
        r = _import(system, tokens, _bound(system, tokens, {"credentials": [fake], "history": [
            {"kind": "share", "created_at": "2020-01-01T00:00:00Z", "details": {"verifier": {"name": "Policia"}}}]}))
        assert r.status_code == 400 and r.json()["error"] == "invalid_backup", r.text
        assert r.json()["error_description"].startswith("credentials[0]: copies[0].token did not verify ("), r.text
    assert len(httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()) == 1
    assert "imported" not in {h["kind"] for h in httpx.get(f"{system.wallet}/v1/history", headers=bearer(tokens)).json()}

    # The genuine credential with another issuer's name in the file: the name is the issuer's metadata's.
    assert httpx.delete(f"{system.wallet}/v1/credentials/{genuine['id']}", headers=bearer(tokens)).status_code == 204
    entry["details"]["issuer_display"]["name"] = "Agència Tributària de Catalunya"
    r = _import(system, tokens, _bound(system, tokens, {"credentials": [entry], "history": []}))
    assert r.status_code == 200 and r.json()["credentials_added"] == 1, r.text
    [restored] = httpx.get(f"{system.wallet}/v1/credentials", headers=bearer(tokens)).json()
    assert restored["issuer_name"] == genuine["issuer_name"] != "Agència Tributària de Catalunya"
