"""The wallet PIN's attempt limit under concurrency, the PIN on backup export, and what a backup import
accepts (KDF cost, every entry checked, all or nothing) — against a real wallet on 127.0.0.1."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sandbox.population import generate_population
from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from tests.wallet_api.conftest import WalletHandle, bearer, login
from wallet_api.backup import seal_backup

#: Citizens of the wallet fixture's population (50) that no other test of that wallet logs in.
(RACE_CITIZEN, EXPORT_CITIZEN, KDF_CITIZEN, COST_CITIZEN, BAD_CITIZEN, GOOD_CITIZEN, THIEF_CITIZEN) = [
    c.identifier for c in generate_population(size=50).citizens[40:47]]
PASSPHRASE = "long enough passphrase"
PIN = "4821"
SECRET = "Zoë-Backup-Claim-Value"
VCT, ISSUER = "urn:cartera:test:backup", "https://issuer.test.example"
_ISSUER_KEY = Key.generate("ES256")


def _pin_set(wallet: WalletHandle, headers: dict[str, str]) -> bool:
    return bool(httpx.get(f"{wallet.url}/v1/me", headers=headers).json()["pin_set"])


def _export(wallet: WalletHandle, headers: dict[str, str], **body: Any) -> httpx.Response:
    return httpx.post(f"{wallet.url}/v1/backup/export", json={"passphrase": PASSPHRASE, **body}, headers=headers,
                      timeout=60)


def _import(wallet: WalletHandle, headers: dict[str, str], backup: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{wallet.url}/v1/backup/import", json={"passphrase": PASSPHRASE, "backup": backup},
                      headers=headers, timeout=60)


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

def _entry(holder: Key | None = None, **changes: Any) -> dict[str, Any]:
    """One credential as an export writes it: an SD-JWT VC bound to ``holder``, with receiving's details."""
    holder = holder or Key.generate("ES256")
    token = issue_sd_jwt_vc({"given_name": SECRET}, vct=VCT, issuer=ISSUER, key=_ISSUER_KEY,
                            holder_jwk=holder.public_jwk(), disclosable=[("given_name",)],
                            status={"status_list": {"uri": "https://issuer.test.example/status/1", "idx": 7}})
    entry: dict[str, Any] = {
        "vct": VCT, "issuer": ISSUER, "iat": time.time() - 60, "exp": time.time() + 86400 * 365, "status": "valid",
        "details": {"configuration_id": "test", "key_source": "x5c",
                    "display": {"configuration_id": "test", "format": "dc+sd-jwt", "vct": VCT, "name": "Test card",
                                "description": None, "logo": None, "background_color": "#123456",
                                "text_color": None, "claims": [{"path": ["given_name"], "name": "Given name",
                                                                "mandatory": False}]},
                    "issuer_display": {"id": ISSUER, "name": "Test issuer", "logo": None},
                    "type_metadata": None,
                    "statuses": [{"uri": "https://issuer.test.example/status/1", "idx": 7}],
                    "notification": {"notification_id": None, "token": None, "metadata": None, "as_metadata": None}},
        "copies": [{"token": token, "holder_jwk": holder.private_jwk()}]}
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
                                                  holder_jwk=None, disclosable=[("given_name",)])
    return entry


def _other_type() -> dict[str, Any]:
    entry = _entry()
    entry["vct"] = "urn:cartera:test:another-type"
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
}


@pytest.mark.parametrize("bad", list(BAD_ENTRIES))
def test_import_checks_every_entry_and_stores_nothing_when_one_is_bad(wallet: WalletHandle, bad: str) -> None:
    headers = bearer(login(wallet.url, BAD_CITIZEN))
    backup = seal_backup({"credentials": [_entry(), BAD_ENTRIES[bad]()],
                          "history": [{"kind": "receipt", "created_at": "2026-01-01T00:00:00+00:00",
                                       "details": {"vct": VCT}}]}, PASSPHRASE, n=2**10)
    r = _import(wallet, headers, backup)
    assert r.status_code == 400 and r.json()["error"] == "invalid_backup", r.text
    assert r.json()["error_description"].startswith("credentials[1]: "), r.text
    assert SECRET not in r.text
    # Nothing was stored (not even the good first entry or the history), and the wallet still works.
    listed = httpx.get(f"{wallet.url}/v1/credentials", headers=headers)
    assert listed.status_code == 200 and listed.json() == []
    history = httpx.get(f"{wallet.url}/v1/history", headers=headers)
    assert history.status_code == 200 and not [h for h in history.json() if h["details"].get("imported_from_backup")]


@pytest.mark.parametrize("content", [
    {"credentials": [], "history": [{"kind": "receipt", "details": "x"}]},
    {"credentials": [], "history": [{"kind": "<script>", "details": {}}]},
    {"credentials": [], "history": "x"},
    {"credentials": "x"},
    {"credentials": [{"vct": VCT, "issuer": ISSUER, "details": {}, "exp": float("inf"), "copies": []}]},
    {"credentials": [], "history": [{"kind": "receipt", "details": {"n": float("nan")}}]},
])
def test_import_refuses_bad_content_with_a_400(wallet: WalletHandle, content: dict[str, Any]) -> None:
    headers = bearer(login(wallet.url, BAD_CITIZEN))
    r = _import(wallet, headers, seal_backup(content, PASSPHRASE, n=2**10))
    assert r.status_code == 400 and r.json()["error"] == "invalid_backup", r.text
    assert httpx.get(f"{wallet.url}/v1/credentials", headers=headers).json() == []


def test_a_good_backup_imports_and_its_credentials_work(wallet: WalletHandle) -> None:
    headers = bearer(login(wallet.url, GOOD_CITIZEN))
    entries = [_entry(), _entry(exp=None, iat=None, details={}),
               _with_details(type_metadata={"vct": VCT, "claims": [{"path": ["given_name"], "display": []}]})]
    backup = seal_backup({"credentials": entries, "history": []}, PASSPHRASE, n=2**10)
    r = _import(wallet, headers, backup)
    assert r.status_code == 200 and r.json() == {"credentials_added": 3}, r.text
    assert _import(wallet, headers, copy.deepcopy(backup)).json() == {"credentials_added": 0}  # already there
    listed = httpx.get(f"{wallet.url}/v1/credentials", headers=headers)
    assert listed.status_code == 200 and len(listed.json()) == 3
    for credential in listed.json():
        shown = httpx.get(f"{wallet.url}/v1/credentials/{credential['id']}", headers=headers)
        assert shown.status_code == 200 and shown.json()["claims"]["given_name"] == SECRET
    assert httpx.delete(f"{wallet.url}/v1/credentials/{listed.json()[0]['id']}", headers=headers).status_code == 204


def test_a_pin_protected_export_cannot_be_taken_without_the_pin(wallet: WalletHandle) -> None:
    owner = bearer(login(wallet.url, THIEF_CITIZEN))
    backup = seal_backup({"credentials": [_entry()]}, PASSPHRASE, n=2**10)
    assert _import(wallet, owner, backup).status_code == 200
    assert httpx.put(f"{wallet.url}/v1/pin", json={"pin": PIN}, headers=owner).status_code == 204
    # Whoever holds the session but not the PIN gets no file (and so no holder keys).
    taken = _export(wallet, owner, passphrase="the thief's own passphrase")
    assert taken.status_code == 403 and "ciphertext" not in taken.text
