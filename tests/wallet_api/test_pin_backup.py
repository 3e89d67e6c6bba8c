"""The wallet PIN's attempt limit under concurrency, the PIN on backup export, and what a backup import
accepts (KDF cost, the file bound to the citizen, every entry checked and verified as a received
credential is, all or nothing, history restored as imported) — against a real wallet on 127.0.0.1
that trusts the test issuer CA (``ISSUER_CA``)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sandbox.population import generate_population
from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.x509 import create_ca, issue_certificate, x5c_from_chain
from tests.wallet_api.conftest import ISSUER_CA, WalletHandle, bearer, bound_backup, login
from wallet_api.backup import open_backup, seal_backup

#: Citizens of the wallet fixture's population (50) that no other test of that wallet logs in.
(RACE_CITIZEN, EXPORT_CITIZEN, KDF_CITIZEN, COST_CITIZEN, BAD_CITIZEN, GOOD_CITIZEN, THIEF_CITIZEN,
 FORGED_CITIZEN, EXPIRED_CITIZEN, HISTORY_CITIZEN, OWNER_CITIZEN, OTHER_CITIZEN) = [
    c.identifier for c in generate_population(size=50).citizens[38:50]]
PASSPHRASE = "long enough passphrase"
PIN = "4821"
SECRET = "Zoë-Backup-Claim-Value"
#: The issuer's host does not resolve: its metadata cannot be fetched, so its name is the host.
VCT, ISSUER = "urn:cartera:test:backup", "https://issuer.test.example"
STATUS_URI = "https://issuer.test.example/status/1"
_ISSUER_KEY = Key.generate("ES256")
_X5C = x5c_from_chain([issue_certificate(ISSUER_CA[0], ISSUER_CA[1], _ISSUER_KEY, "Test issuer",
                                         san_uris=[ISSUER])])


def _pin_set(wallet: WalletHandle, headers: dict[str, str]) -> bool:
    return bool(httpx.get(f"{wallet.url}/v1/me", headers=headers).json()["pin_set"])


def _export(wallet: WalletHandle, headers: dict[str, str], **body: Any) -> httpx.Response:
    return httpx.post(f"{wallet.url}/v1/backup/export", json={"passphrase": PASSPHRASE, **body}, headers=headers,
                      timeout=60)


def _import(wallet: WalletHandle, headers: dict[str, str], backup: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{wallet.url}/v1/backup/import", json={"passphrase": PASSPHRASE, "backup": backup},
                      headers=headers, timeout=60)


def _bound(wallet: WalletHandle, headers: dict[str, str], content: dict[str, Any]) -> dict[str, Any]:
    """A file of ``content`` bound to the wallet of ``headers`` (as its own export would be)."""
    wallet_id = httpx.get(f"{wallet.url}/v1/me", headers=headers).json()["wallet_id"]
    return bound_backup(wallet.settings, wallet_id, content, PASSPHRASE)


def _holdings(wallet: WalletHandle, headers: dict[str, str]) -> tuple[set[str], set[str]]:
    """The ids of the credentials and of the history entries the wallet of ``headers`` holds."""
    credentials = httpx.get(f"{wallet.url}/v1/credentials", headers=headers)
    history = httpx.get(f"{wallet.url}/v1/history", params={"limit": 500}, headers=headers)
    assert credentials.status_code == 200 and history.status_code == 200, (credentials.text, history.text)
    return {c["id"] for c in credentials.json()}, {h["id"] for h in history.json()}


@contextlib.contextmanager
def _refused_import(wallet: WalletHandle) -> Iterator[dict[str, str]]:
    """``BAD_CITIZEN``'s headers, for a case whose import must store nothing: asserts that the case
    added no credential and no history entry to the wallet, and deletes any credential it did add, so
    that one case importing what it should not fails alone (not every later case of the shared wallet)."""
    headers = bearer(login(wallet.url, BAD_CITIZEN))
    credentials, history = _holdings(wallet, headers)
    try:
        yield headers
        after = _holdings(wallet, headers)
        assert after == (credentials, history), "the refused import stored something"
    finally:
        for added in _holdings(wallet, headers)[0] - credentials:
            httpx.delete(f"{wallet.url}/v1/credentials/{added}", headers=headers)


# -- the PIN ------------------------------------------------------------------------------------

def test_concurrent_wrong_pins_test_no_more_than_the_allowed_attempts(wallet: WalletHandle) -> None:
    headers = bearer(login(wallet.url, RACE_CITIZEN))
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": PIN}, headers=headers).status_code == 204
    guesses = [f"{i:04d}" for i in range(5000, 5040)]  # 40 wrong PINs

    async def guess_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as client:
            return await asyncio.gather(*(client.put(f"{wallet.url}/v1/pin", json={"pin": None, "current_pin": g},
                                                     headers=headers) for g in guesses))

    answers = asyncio.run(guess_all())
    tested = [r for r in answers if r.status_code != 423]
    assert len(tested) <= wallet.settings.pin_max_attempts, [r.status_code for r in answers]
    assert {r.status_code for r in tested} <= {403}
    assert all(r.json()["error"] == "pin_locked" and int(r.headers["retry-after"]) >= 1
               for r in answers if r.status_code == 423)
    # Locked now: the right PIN is refused too, on every route that asks for it, and the PIN stays.
    right = httpx.put(f"{wallet.url}/v1/pin", json={"pin": None, "current_pin": PIN}, headers=headers)
    assert right.status_code == 423 and right.json()["error"] == "pin_locked"
    assert _export(wallet, headers, pin=PIN).status_code == 423
    assert _pin_set(wallet, headers)


def test_export_needs_the_pin_and_counts_its_attempts_with_presenting(wallet: WalletHandle) -> None:
    headers = bearer(login(wallet.url, EXPORT_CITIZEN))
    limit = wallet.settings.pin_max_attempts
    assert limit >= 3
    assert _export(wallet, headers).status_code == 200  # no PIN set: no PIN needed
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": PIN}, headers=headers).status_code == 204

    # No PIN sent (a client that did not know one was set): asked for, and no attempt is counted.
    for _ in range(limit + 1):
        missing = _export(wallet, headers)
        assert missing.status_code == 403 and missing.json()["error"] == "pin_required", missing.text
        assert "attempts_left" not in missing.json()
    assert _export(wallet, headers, pin="").json()["error"] == "pin_required"
    wrong = _export(wallet, headers, pin="0000")
    assert wrong.status_code == 403 and wrong.json()["error"] == "invalid_pin"
    assert wrong.json()["attempts_left"] == limit - 1
    second = _export(wallet, headers, pin="0000")
    assert second.status_code == 403 and second.json()["attempts_left"] == limit - 2
    assert "ciphertext" not in missing.text + wrong.text
    # A weak passphrase is refused before the PIN is looked at: it costs no attempt.
    weak = httpx.post(f"{wallet.url}/v1/backup/export", json={"passphrase": "short", "pin": "0000"},
                      headers=headers, timeout=60)
    assert weak.status_code == 400 and weak.json()["error"] == "weak_passphrase"
    # The same counter as presenting and changing the PIN: a wrong change attempt counts here too.
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": "1357", "current_pin": "0000"},
                     headers=headers).json()["attempts_left"] == limit - 3
    ok = _export(wallet, headers, pin=PIN)
    assert ok.status_code == 200 and ok.json()["format"] == "cartera-wallet-backup"
    assert _export(wallet, headers, pin="0000").json()["attempts_left"] == limit - 1  # the right PIN reset it
    for _ in range(limit - 2):
        assert _export(wallet, headers, pin="0000").status_code == 403
    locked = _export(wallet, headers, pin="0000")
    assert locked.status_code == 423 and locked.json()["error"] == "pin_locked"
    assert int(locked.headers["retry-after"]) >= 1
    # While locked, no PIN is answered as locked too (not as "send the PIN").
    without = _export(wallet, headers)
    assert without.status_code == 423 and int(without.headers["retry-after"]) >= 1
    still = _export(wallet, headers, pin=PIN)
    assert still.status_code == 423 and "ciphertext" not in still.text


# -- the KDFs -----------------------------------------------------------------------------------

@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int, bool]]:
    """Every scrypt run while the test lasts: ``(n, r, p, on an event loop)``."""
    calls: list[tuple[int, int, int, bool]] = []
    real = hashlib.scrypt

    def recording(password: bytes, *, salt: bytes, n: int, r: int, p: int, **kwargs: Any) -> bytes:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        calls.append((n, r, p, on_loop))
        return real(password, salt=salt, n=n, r=r, p=p, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", recording)
    return calls


def test_pin_and_backup_kdfs_never_run_on_the_event_loop(wallet: WalletHandle,
                                                          scrypt_calls: list[tuple[int, int, int, bool]]) -> None:
    headers = bearer(login(wallet.url, KDF_CITIZEN))
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": PIN}, headers=headers).status_code == 204  # hash
    backup = _export(wallet, headers, pin=PIN)  # PIN check, then the backup key
    assert backup.status_code == 200
    assert _import(wallet, headers, backup.json()).status_code == 200  # the backup key again
    assert not [call for call in scrypt_calls if call[3]], scrypt_calls
    assert len(scrypt_calls) >= 3


@pytest.mark.parametrize("kdf", [
    {"n": 2**18}, {"n": 2**20}, {"r": 16}, {"p": 4}, {"n": 2**17, "r": 8, "p": 4}, {"n": 3 * 2**15},
    {"n": 2**17 + 1}, {"n": "131072"}, {"n": 131072.0}, {"n": float("inf")}, {"name": "argon2id"},
    {"salt": 12345}, {"salt": None},
])
def test_import_refuses_a_costlier_or_odd_kdf_before_running_it(
        wallet: WalletHandle, scrypt_calls: list[tuple[int, int, int, bool]], kdf: dict[str, Any]) -> None:
    headers = bearer(login(wallet.url, COST_CITIZEN))
    backup = seal_backup({"credentials": []}, PASSPHRASE, n=2**10)
    scrypt_calls.clear()
    backup["kdf"].update(kdf)
    started = time.monotonic()
    body = json.dumps({"passphrase": "another passphrase", "backup": backup})  # Infinity included
    r = httpx.post(f"{wallet.url}/v1/backup/import", content=body,
                   headers={**headers, "Content-Type": "application/json"}, timeout=120)
    assert r.status_code == 400 and r.json()["error"] == "invalid_backup", r.text
    assert scrypt_calls == [] and time.monotonic() - started < 5


# -- what an import accepts ------------------------------------------------------------------------

def _token(holder: Key, *, key: Key = _ISSUER_KEY, x5c: list[str] | None = _X5C, issuer: str = ISSUER,
           vct: str = VCT, status: bool = True, **times: Any) -> str:
    """An SD-JWT VC bound to ``holder``, signed by ``key`` with ``x5c`` (the test issuer's by default)."""
    return issue_sd_jwt_vc({"given_name": SECRET}, vct=vct, issuer=issuer, key=key, holder_jwk=holder.public_jwk(),
                           disclosable=[("given_name",)], x5c=x5c,
                           status={"status_list": {"uri": STATUS_URI, "idx": 7}} if status else None, **times)


def _entry(holder: Key | None = None, token: str | None = None, **changes: Any) -> dict[str, Any]:
    """One credential as an export writes it: an SD-JWT VC bound to ``holder``, with receiving's details."""
    holder = holder or Key.generate("ES256")
    entry: dict[str, Any] = {
        "vct": VCT, "issuer": ISSUER, "iat": time.time() - 60, "exp": time.time() + 86400 * 365, "status": "valid",
        "details": {"configuration_id": "test", "key_source": "x5c",
                    "display": {"configuration_id": "test", "format": "dc+sd-jwt", "vct": VCT, "name": "Test card",
                                "description": None, "logo": None, "background_color": "#123456",
                                "text_color": None, "claims": [{"path": ["given_name"], "name": "Given name",
                                                                "mandatory": False}]},
                    "issuer_display": {"id": ISSUER, "name": "Test issuer", "logo": None},
                    "type_metadata": None,
                    "statuses": [{"uri": STATUS_URI, "idx": 7}],
                    "notification": {"notification_id": None, "token": None, "metadata": None, "as_metadata": None}},
        "copies": [{"token": token or _token(holder), "holder_jwk": holder.private_jwk()}]}
    entry.update(changes)
    return entry


def _with_details(**changes: Any) -> dict[str, Any]:
    entry = _entry()
    entry["details"].update(changes)
    return entry


def _with_copy(**changes: Any) -> dict[str, Any]:
    entry = _entry()
    entry["copies"][0].update(changes)
    return entry


def _bound_to_another_key() -> dict[str, Any]:
    entry = _entry()
    entry["copies"][0]["holder_jwk"] = Key.generate("ES256").private_jwk()
    return entry


def _public_holder_key() -> dict[str, Any]:
    holder = Key.generate("ES256")
    entry = _entry(holder)
    entry["copies"][0]["holder_jwk"] = holder.public_jwk()
    return entry


def _unbound() -> dict[str, Any]:
    entry = _entry()
    entry["copies"][0]["token"] = issue_sd_jwt_vc({"given_name": SECRET}, vct=VCT, issuer=ISSUER, key=_ISSUER_KEY,
                                                  holder_jwk=None, disclosable=[("given_name",)], x5c=_X5C)
    return entry


def _other_type() -> dict[str, Any]:
    entry = _entry()
    entry["vct"] = "urn:cartera:test:another-type"
    return entry


def _forged(**kwargs: Any) -> Callable[[], dict[str, Any]]:
    """An entry whose token is signed by a key of no anchored issuer (``kwargs``: how it pretends)."""
    def make() -> dict[str, Any]:
        holder = Key.generate("ES256")
        return _entry(holder, _token(holder, **{"key": Key.generate("ES256"), **kwargs}))
    return make


def _under_another_ca() -> dict[str, Any]:
    ca_key, ca = create_ca("Somebody else's CA")
    signer, holder = Key.generate("ES256"), Key.generate("ES256")
    leaf = issue_certificate(ca_key, ca, signer, "Test issuer", san_uris=[ISSUER])
    return _entry(holder, _token(holder, key=signer, x5c=x5c_from_chain([leaf])))


def _naming_another_issuer() -> dict[str, Any]:
    """Signed by the test issuer, claiming (``iss``) another issuer its certificate does not name."""
    holder = Key.generate("ES256")
    entry = _entry(holder, _token(holder, issuer="https://tributs.gencat.example"))
    entry["issuer"] = "https://tributs.gencat.example"
    return entry


BAD_ENTRIES: dict[str, Callable[[], dict[str, Any]]] = {
    "holder key of no known type": lambda: _with_copy(holder_jwk={"kty": "nope"}),
    "public holder key": _public_holder_key,
    "holder key not the bound one": _bound_to_another_key,
    "token not an SD-JWT": lambda: _with_copy(token="not a token"),
    "token missing": lambda: _with_copy(token=None),
    "token of another type": _other_type,
    "token bound to no key": _unbound,
    "no copies": lambda: _entry(copies=[]),
    "copies not a list": lambda: _entry(copies="x"),
    "display not an object": lambda: _with_details(display="oops"),
    "display name not a string": lambda: _with_details(display={"name": 5}),
    "display claim without a name": lambda: _with_details(display={"name": "x", "claims": [{"path": ["a"]}]}),
    "issuer display null": lambda: _with_details(issuer_display=None),
    "type metadata claims not a list": lambda: _with_details(type_metadata={"claims": {"path": 1}}),
    "statuses not a list": lambda: _with_details(statuses="x"),
    "status reference not an object": lambda: _with_details(statuses=["x"]),
    "status index negative": lambda: _with_details(statuses=[{"uri": "https://s.example/1", "idx": -1}]),
    "status uri not a URL": lambda: _with_details(statuses=[{"uri": "file:///etc/passwd", "idx": 1}]),
    "status uri that does not parse": lambda: _with_details(statuses=[{"uri": "http://[::1", "idx": 1}]),
    "notification issuer metadata invalid": lambda: _with_details(notification={
        "notification_id": "n-1", "token": None, "metadata": {"credential_issuer": 5}, "as_metadata": {}}),
    "details not an object": lambda: _entry(details=[]),
    "expiry out of range": lambda: _entry(exp=1e300),
    "expiry before 1970": lambda: _entry(exp=-5),
    "issued-at a string": lambda: _entry(iat="yesterday"),
    "expiry a boolean": lambda: _entry(exp=True),
    "unknown status": lambda: _entry(status="fine"),
    "vct too long": lambda: _entry(vct="u" * 600),
    "entry not an object": lambda: "x",  # type: ignore[return-value,dict-item]
    # Verified as a received credential is: signature, chain to the anchors, iss in the certificate.
    "signed by a random key, no x5c": _forged(x5c=None),
    "signed by a random key, the issuer's x5c": _forged(),
    "chain to no anchor": _under_another_ca,
    "iss another issuer than the certificate names": _naming_another_issuer,
    "status references not the token's": lambda: _with_details(statuses=[{"uri": STATUS_URI, "idx": 8}]),
    "status references missing": lambda: _with_details(statuses=[]),
    "notification metadata of another issuer": lambda: _with_details(notification={
        "notification_id": "n-1", "token": None, "as_metadata": {"issuer": "https://tributs.gencat.example",
                                                                  "token_endpoint": "https://tributs.gencat.example/t"},
        "metadata": {"credential_issuer": "https://tributs.gencat.example",
                     "credential_endpoint": "https://tributs.gencat.example/c",
                     "credential_configurations_supported": {}}}),
}


@pytest.mark.parametrize("bad", list(BAD_ENTRIES))
def test_import_checks_every_entry_and_stores_nothing_when_one_is_bad(wallet: WalletHandle, bad: str) -> None:
    # Nothing is stored (not even the good first entry or the history), and the wallet still works.
    with _refused_import(wallet) as headers:
        backup = _bound(wallet, headers, {"credentials": [_entry(), BAD_ENTRIES[bad]()],
                                          "history": [{"kind": "receipt", "created_at": "2026-01-01T00:00:00+00:00",
                                                       "details": {"vct": VCT}}]})
        r = _import(wallet, headers, backup)
        assert r.status_code == 400 and r.json()["error"] == "invalid_backup", r.text
        assert r.json()["error_description"].startswith("credentials[1]: "), r.text
        assert SECRET not in r.text and "gencat" not in r.text


def test_forged_credentials_are_refused_with_the_reason(wallet: WalletHandle) -> None:
    """The review's file: a credential signed with a random key claiming a real issuer's URL, listed as
    that issuer's by the file, and a share in the history. Refused, with why, and nothing stored."""
    headers = bearer(login(wallet.url, FORGED_CITIZEN))
    # Without x5c the key would be the issuer's metadata's: none is published (its host does not resolve).
    for forged, reason in ((_forged(x5c=None)(), "sd_jwt_vc.metadata_unavailable"),
                           (_forged()(), "jose.bad_signature"),
                           (_under_another_ca(), "x509.untrusted_chain"),
                           (_naming_another_issuer(), "sd_jwt_vc.iss_san_mismatch")):
        forged["details"]["issuer_display"]["name"] = "Agència Tributària de Catalunya"
        backup = _bound(wallet, headers, {"credentials": [forged], "history": [
            {"kind": "share", "created_at": "2020-01-01T00:00:00Z",
             "details": {"verifier": {"name": "Policia"}, "disclosed": []}}]})
        r = _import(wallet, headers, backup)
        assert r.status_code == 400 and r.json()["error"] == "invalid_backup", r.text
        assert r.json()["error_description"] == f"credentials[0]: copies[0].token did not verify ({reason})"
    assert httpx.get(f"{wallet.url}/v1/credentials", headers=headers).json() == []
    assert httpx.get(f"{wallet.url}/v1/history", headers=headers).json() == []


@pytest.mark.parametrize("content", [
    {"credentials": [], "history": [{"kind": "receipt", "details": "x"}]},
    {"credentials": [], "history": [{"kind": "<script>", "details": {}}]},
    {"credentials": [], "history": [{"kind": "login", "details": {}}]},
    {"credentials": [], "history": [{"kind": "alert", "details": {}}]},
    {"credentials": [{"vct": VCT, "issuer": ISSUER, "details": {}, "exp": 1e300, "copies": []}]},
])
def test_import_refuses_bad_content_with_a_400(wallet: WalletHandle, content: dict[str, Any]) -> None:
    with _refused_import(wallet) as headers:
        r = _import(wallet, headers, _bound(wallet, headers, content))
        assert r.status_code == 400 and r.json()["error"] == "invalid_backup", r.text
        assert "not bound" not in r.text


@pytest.mark.parametrize("content", [
    {"credentials": [], "history": "x"},
    {"credentials": "x"},
    {"credentials": [], "history": [{"kind": "receipt", "details": {"n": float("nan")}}]},
])
def test_import_refuses_content_that_is_no_backup(wallet: WalletHandle, content: dict[str, Any]) -> None:
    with _refused_import(wallet) as headers:
        r = _import(wallet, headers, seal_backup(content, PASSPHRASE, n=2**10))
        assert r.status_code == 400 and r.json()["error"] == "invalid_backup", r.text


def test_a_good_backup_imports_and_its_credentials_work(wallet: WalletHandle) -> None:
    headers = bearer(login(wallet.url, GOOD_CITIZEN))
    holder = Key.generate("ES256")
    bare = _entry(holder, _token(holder, status=False), exp=None, iat=None, details={}, status="revoked")
    entries = [_entry(), bare,
               _with_details(type_metadata={"vct": VCT, "claims": [{"path": ["given_name"], "display": []}]}),
               _entry(status="revoked")]
    entries[0]["details"]["issuer_display"]["name"] = "Agència Tributària de Catalunya"
    backup = _bound(wallet, headers, {"credentials": entries, "history": []})
    r = _import(wallet, headers, backup)
    assert r.status_code == 200, r.text
    assert r.json() == {"credentials_added": 4, "credentials_expired": 0, "history_imported": 0,
                        "skipped_at_export": 0}
    assert _import(wallet, headers, copy.deepcopy(backup)).json()["credentials_added"] == 0  # already there
    listed = httpx.get(f"{wallet.url}/v1/credentials", headers=headers)
    assert listed.status_code == 200 and len(listed.json()) == 4
    # The issuer's name is never the file's: its metadata's, or (unreachable here) its host.
    assert {c["issuer_name"] for c in listed.json()} == {"issuer.test.example"}
    # A status from the file is kept only when worse, and only with a status reference to check it by.
    assert [c["status"] for c in listed.json()] == ["valid", "valid", "valid", "revoked"]
    for credential in listed.json():
        shown = httpx.get(f"{wallet.url}/v1/credentials/{credential['id']}", headers=headers)
        assert shown.status_code == 200 and shown.json()["claims"]["given_name"] == SECRET
    assert httpx.delete(f"{wallet.url}/v1/credentials/{listed.json()[0]['id']}", headers=headers).status_code == 204


def test_times_come_from_the_token_and_what_expired_since_is_restored_expired(wallet: WalletHandle) -> None:
    headers = bearer(login(wallet.url, EXPIRED_CITIZEN))
    now = int(time.time())
    holder_a, holder_b, holder_c = Key.generate("ES256"), Key.generate("ES256"), Key.generate("ES256")
    # The file says the credential is good for a year: the token says it expired yesterday (its issuer
    # certificate is still valid).
    key = Key.generate("ES256")
    leaf = issue_certificate(ISSUER_CA[0], ISSUER_CA[1], key, "Test issuer", san_uris=[ISSUER], days=365,
                             not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=60))
    expired = _entry(holder_a, _token(holder_a, key=key, x5c=x5c_from_chain([leaf]), iat=now - 30 * 86400,
                                      exp=now - 86400))
    # The issuer certificate expired since the credential was issued (the token itself runs for a year).
    old_key = Key.generate("ES256")
    old_leaf = issue_certificate(ISSUER_CA[0], ISSUER_CA[1], old_key, "Test issuer", san_uris=[ISSUER], days=10,
                                 not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=20))
    cert_expired = _entry(holder_b, _token(holder_b, key=old_key, x5c=x5c_from_chain([old_leaf]),
                                           iat=now - 15 * 86400, exp=now + 365 * 86400))
    # The file claims a long life for a credential whose token ends in a week.
    short = _entry(holder_c, _token(holder_c, exp=now + 7 * 86400), exp=now + 86400 * 3650)
    r = _import(wallet, headers, _bound(wallet, headers, {"credentials": [expired, cert_expired, short]}))
    assert r.status_code == 200, r.text
    assert r.json() == {"credentials_added": 3, "credentials_expired": 2, "history_imported": 0,
                        "skipped_at_export": 0}
    listed = httpx.get(f"{wallet.url}/v1/credentials", headers=headers).json()
    assert [c["status"] for c in listed] == ["expired", "expired", "valid"]
    ends = [dt.datetime.fromisoformat(c["expires_at"]).timestamp() for c in listed]
    assert abs(ends[0] - (now - 86400)) < 2
    assert abs(ends[1] - old_leaf.not_valid_after_utc.timestamp()) < 2  # usable until the certificate ended
    assert abs(ends[2] - (now + 7 * 86400)) < 2
    # Expired is not forged: another key's signature over an expired token, or under an expired
    # certificate (checked at the token's issuance then), is still refused.
    for x5c, after in ((x5c_from_chain([leaf]), ""), (x5c_from_chain([old_leaf]), " at its issuance")):
        holder = Key.generate("ES256")
        bad = _entry(holder, _token(holder, key=Key.generate("ES256"), x5c=x5c, iat=now - 15 * 86400,
                                    exp=now - 86400))
        refused = _import(wallet, headers, _bound(wallet, headers, {"credentials": [bad]}))
        assert refused.status_code == 400, refused.text
        assert refused.json()["error_description"] == \
            f"credentials[0]: copies[0].token did not verify{after} (jose.bad_signature)"
    assert len(httpx.get(f"{wallet.url}/v1/credentials", headers=headers).json()) == 3


def test_history_comes_back_as_imported_never_as_events_of_this_wallet(wallet: WalletHandle) -> None:
    headers = bearer(login(wallet.url, HISTORY_CITIZEN))
    share = {"id": "hist_original-share", "kind": "share", "created_at": "2020-01-01T00:00:00+00:00",
             "details": {"verifier": {"name": "Policia", "verified": True}, "disclosed": [], "outcome": "sent"}}
    backup = _bound(wallet, headers, {"credentials": [_entry()], "history": [share]})
    r = _import(wallet, headers, backup)
    assert r.status_code == 200 and r.json()["history_imported"] == 1, r.text
    history = httpx.get(f"{wallet.url}/v1/history", headers=headers).json()
    assert sorted(h["kind"] for h in history) == ["imported", "restore"]
    imported = next(h for h in history if h["kind"] == "imported")["details"]
    assert imported["original_kind"] == "share" and imported["original_time"] == share["created_at"]
    assert imported["imported_from_backup"] is True and imported["original_id"] == share["id"]
    restore = next(h for h in history if h["kind"] == "restore")["details"]
    assert restore["credentials_added"] == 1 and restore["history_imported"] == 1
    assert restore["credentials"][0]["issuer"] == ISSUER and SECRET not in json.dumps(restore)
    # The audit chain records an import and a restore, no share; and it checks out.
    chain = httpx.get(f"{wallet.url}/v1/audit/export", headers=headers).json()
    assert sorted(e["kind"] for e in chain["entries"] if e["kind"] != "login") == ["imported", "restore"]
    assert httpx.get(f"{wallet.url}/v1/audit/check", headers=headers).json()["ok"] is True
    # The wallet's own export, imported again: nothing twice.
    exported = _export(wallet, headers)
    assert exported.status_code == 200
    again = _import(wallet, headers, exported.json())
    assert again.status_code == 200, again.text
    assert again.json() == {"credentials_added": 0, "credentials_expired": 0, "history_imported": 0,
                            "skipped_at_export": 0}
    kinds = [h["kind"] for h in httpx.get(f"{wallet.url}/v1/history", headers=headers).json()]
    assert sorted(kinds) == ["imported", "restore", "restore"]


def test_a_backup_restores_only_into_the_wallet_it_was_exported_from(wallet: WalletHandle) -> None:
    owner = bearer(login(wallet.url, OWNER_CITIZEN))
    other = bearer(login(wallet.url, OTHER_CITIZEN))
    assert _import(wallet, owner, _bound(wallet, owner, {"credentials": [_entry()]})).status_code == 200
    exported = _export(wallet, owner)
    assert exported.status_code == 200 and OWNER_CITIZEN not in exported.text
    # Another citizen, with the file and its passphrase: refused, nothing stored.
    foreign = _import(wallet, other, exported.json())
    assert foreign.status_code == 403 and foreign.json()["error"] == "foreign_backup", foreign.text
    assert httpx.get(f"{wallet.url}/v1/credentials", headers=other).json() == []
    # The file changed after its export (reopened with the passphrase, resealed with its binding).
    content = open_backup(exported.json(), PASSPHRASE)
    content["credentials"][0]["status"] = "suspended"
    changed = _import(wallet, owner, seal_backup(content, PASSPHRASE, n=2**10))
    assert changed.status_code == 403 and changed.json()["error"] == "foreign_backup", changed.text
    # The binding moved onto another citizen's content: refused too.
    content = open_backup(_bound(wallet, other, {"credentials": []}), PASSPHRASE)
    content["credentials"] = open_backup(exported.json(), PASSPHRASE)["credentials"]
    assert _import(wallet, other, seal_backup(content, PASSPHRASE, n=2**10)).json()["error"] == "foreign_backup"
    for odd in ("é" * 43, "", 5, ["x"]):
        content["subject"] = odd
        r = _import(wallet, other, seal_backup(content, PASSPHRASE, n=2**10))
        assert r.status_code == 403 and r.json()["error"] == "foreign_backup", r.text
    # A file with no binding (as exported before backups were bound): refused.
    content = open_backup(exported.json(), PASSPHRASE)
    del content["subject"]
    unbound = _import(wallet, other, seal_backup(content, PASSPHRASE, n=2**10))
    assert unbound.status_code == 400 and unbound.json()["error"] == "invalid_backup", unbound.text
    assert "not bound" in unbound.json()["error_description"]
    assert httpx.get(f"{wallet.url}/v1/credentials", headers=other).json() == []


def test_a_pin_protected_export_cannot_be_taken_without_the_pin(wallet: WalletHandle) -> None:
    owner = bearer(login(wallet.url, THIEF_CITIZEN))
    backup = _bound(wallet, owner, {"credentials": [_entry()]})
    assert _import(wallet, owner, backup).status_code == 200
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": PIN}, headers=owner).status_code == 204
    # Whoever holds the session but not the PIN gets no file (and so no holder keys).
    taken = _export(wallet, owner, passphrase="the thief's own passphrase")
    assert taken.status_code == 403 and "ciphertext" not in taken.text
