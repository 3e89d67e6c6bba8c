"""Encrypted wallet backups: export and import with a passphrase.

File format (JSON)::

    {"format": "cartera-wallet-backup", "version": 1,
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<b64url>"},
     "enc": "A256GCM", "nonce": "<b64url>", "ciphertext": "<b64url>"}

The key is scrypt(passphrase) — scrypt rather than Argon2 because it is in Python's standard library
(no extra dependency) and memory-hard; N=2^17, r=8 costs about 128 MiB and a fraction of a second,
slowing offline guessing. The plaintext is the JSON of every credential (tokens, holder private keys,
display data) and the history; the header members are the AES-GCM associated data, so they cannot be
changed unnoticed.

The file chooses its KDF parameters, so an import accepts only what an export costs at most (r=8,
p=1, N a power of two up to 2^17), checked before scrypt runs; scrypt runs in a small thread pool of
its own, never on the event loop. An export needs the wallet PIN when one is set (the file holds the
holder keys). Every imported credential is checked as a received one is — the SD-JWT VC parses, is
bound to the entry's holder key, the display data, status references and times have the shapes the
wallet relies on — and one bad entry refuses the whole file (400 ``invalid_backup`` naming the entry,
never a value): nothing is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from sqlalchemy import select

from service_kit.errors import APIError
from ssi.encoding import b64url_decode, b64url_encode, json_loads
from ssi.errors import EncodingError, SSIError
from ssi.jose import Key
from ssi.sd_jwt import SDJWT, import_holder_jwk

from .context import WalletContext
from .deps import Principal
from .models import HistoryEntry
from .pin import check_pin
from .store import STORED, add_credential, add_history, load_credentials

FORMAT = "cartera-wallet-backup"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
#: The smallest N an import accepts (exports always use ``SCRYPT_N``; tests seal cheaper files).
MIN_SCRYPT_N = 2**10
MIN_PASSPHRASE = 10
#: Backup KDFs cost ~128 MiB each: at most two at once per worker, off the event loop.
_KDF_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="backup-kdf")
#: The latest time a backup may carry (9999-12-31, the end of what a datetime holds).
_MAX_TIMESTAMP = 253402214400
_STATUSES = ("valid", "suspended", "revoked")
_HISTORY_KIND = re.compile(r"[a-z_]{1,20}")
_T = TypeVar("_T")


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=256 * 1024 * 1024)


async def _off_loop(function: Callable[..., _T], *args: Any) -> _T:
    """Run a KDF-bound ``function`` in the backup pool, so the event loop keeps serving."""
    return await asyncio.get_running_loop().run_in_executor(_KDF_POOL, function, *args)


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def seal_backup(content: dict[str, Any], passphrase: str, *, n: int = SCRYPT_N) -> dict[str, Any]:
    """Encrypt ``content`` under a key derived from ``passphrase`` (blocking: scrypt)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise APIError(400, "weak_passphrase", f"the passphrase needs at least {MIN_PASSPHRASE} characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {"format": FORMAT, "version": 1,
              "kdf": {"name": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64url_encode(salt)},
              "enc": "A256GCM"}
    key = _derive(passphrase, salt, n, SCRYPT_R, SCRYPT_P)
    ciphertext = AESGCM(key).encrypt(nonce, json.dumps(content, ensure_ascii=False).encode(), _aad(header))
    return {**header, "nonce": b64url_encode(nonce), "ciphertext": b64url_encode(ciphertext)}


def _exact_int(value: Any) -> int:
    if type(value) is not int:
        raise ValueError("not an integer")
    return value


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):  # bytes(<a number>) would allocate that many bytes
        raise ValueError("not a string")
    return b64url_decode(value)


def _check_header(backup: Any) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """``(header, salt, nonce, ciphertext)`` of a backup file whose KDF costs no more than an export's.

    Cheap, and done before any scrypt: the file chooses the parameters, so they are bounded here."""
    try:
        if not isinstance(backup, dict) or backup.get("format") != FORMAT or backup.get("version") != 1 \
                or backup.get("enc") != "A256GCM" or not isinstance(backup.get("kdf"), dict):
            raise ValueError("not a backup")
        kdf = backup["kdf"]
        n, r, p = _exact_int(kdf["n"]), _exact_int(kdf["r"]), _exact_int(kdf["p"])
        salt, nonce, ciphertext = _b64(kdf["salt"]), _b64(backup["nonce"]), _b64(backup["ciphertext"])
        if not 16 <= len(salt) <= 64 or len(nonce) != 12:
            raise ValueError("bad salt or nonce")
        header = {k: backup[k] for k in ("format", "version", "kdf", "enc")}
    except (KeyError, TypeError, ValueError, EncodingError) as exc:
        raise APIError(400, "invalid_backup", "the file is not a Cartera wallet backup") from exc
    if kdf.get("name") != "scrypt" or r != SCRYPT_R or p != SCRYPT_P or n & (n - 1) \
            or not MIN_SCRYPT_N <= n <= SCRYPT_N:
        raise APIError(400, "invalid_backup", f"unsupported key derivation: scrypt with r={SCRYPT_R}, p={SCRYPT_P} "
                                              f"and N a power of two up to {SCRYPT_N} is accepted")
    return header, salt, nonce, ciphertext


def _decrypt(header: dict[str, Any], salt: bytes, nonce: bytes, ciphertext: bytes, passphrase: str
             ) -> dict[str, Any]:
    kdf = header["kdf"]
    key = _derive(passphrase, salt, kdf["n"], kdf["r"], kdf["p"])
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _aad(header))
    except InvalidTag as exc:
        raise APIError(400, "invalid_backup", "wrong passphrase or damaged backup") from exc
    try:
        content = json_loads(plaintext)  # strict: no NaN/Infinity, no duplicate names
    except EncodingError as exc:
        raise APIError(400, "invalid_backup", "the backup content is not valid JSON") from exc
    if not isinstance(content, dict) or not isinstance(content.get("credentials"), list) \
            or not isinstance(content.get("history", []), list):
        raise APIError(400, "invalid_backup", "the backup content is not recognised")
    return content


def open_backup(backup: Any, passphrase: str) -> dict[str, Any]:
    """Decrypt a backup file (blocking: scrypt); 400 ``invalid_backup`` for a bad file or a wrong passphrase."""
    return _decrypt(*_check_header(backup), passphrase)


# -- checking imported entries -----------------------------------------------------------------

class _Bad(Exception):
    """One entry of a backup is unusable; the message names the member, never a value."""


def _text(value: Any, what: str, *, optional: bool = True, limit: int = 2000) -> str | None:
    """A string of at most ``limit`` characters; non-empty unless ``optional`` (which also allows null)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit or not (value or optional):
        raise _Bad(f"{what} must be a string of at most {limit} characters" + ("" if optional else ", not empty"))
    return value


def _object(value: Any, what: str, *, optional: bool = True) -> dict[str, Any] | None:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad(f"{what} must be an array")
    return value


def _timestamp(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value < _MAX_TIMESTAMP:
        raise _Bad(f"{what} must be a time in seconds since 1970 (or null)")
    return value


def _claim_labels(value: Any, what: str, *, name_needed: bool) -> None:
    for index, claim in enumerate(_list(value, what)):
        claim = _object(claim, f"{what}[{index}]", optional=False)
        assert claim is not None
        path = claim.get("path") if name_needed or "path" in claim else []
        if not isinstance(path, list) or not all(p is None or isinstance(p, str | int) and not isinstance(p, bool)
                                                 for p in path):
            raise _Bad(f"{what}[{index}].path must be an array of names, indices and nulls")
        if name_needed:
            _text(claim.get("name"), f"{what}[{index}].name", optional=False)


def _check_details(details: Any) -> dict[str, Any]:
    """The sealed details of a credential, in the shapes receiving gives them (docs: wallet-api.md)."""
    details = _object(details, "details", optional=False)
    assert details is not None
    for name in ("configuration_id", "key_source"):
        _text(details.get(name), f"details.{name}")
    if "display" in details:
        display = _object(details["display"], "details.display", optional=False)
        assert display is not None
        for name in ("name", "description", "background_color", "text_color", "configuration_id", "format", "vct"):
            _text(display.get(name), f"details.display.{name}")
        _object(display.get("logo"), "details.display.logo")
        _claim_labels(display.get("claims"), "details.display.claims", name_needed=True)
    if "issuer_display" in details:
        issuer = _object(details["issuer_display"], "details.issuer_display", optional=False)
        assert issuer is not None
        for name in ("id", "name"):
            _text(issuer.get(name), f"details.issuer_display.{name}")
        _object(issuer.get("logo"), "details.issuer_display.logo")
    type_metadata = _object(details.get("type_metadata"), "details.type_metadata")
    if type_metadata is not None:
        _claim_labels(type_metadata.get("claims"), "details.type_metadata.claims", name_needed=False)
    for index, ref in enumerate(_list(details.get("statuses"), "details.statuses")):
        what = f"details.statuses[{index}]"
        ref = _object(ref, what, optional=False)
        assert ref is not None
        uri = _text(ref.get("uri"), f"{what}.uri", optional=False)
        idx = ref.get("idx")
        try:
            scheme = urlsplit(uri).scheme
        except ValueError:  # e.g. an unbalanced '[' in the host
            scheme = ""
        if scheme not in ("https", "http"):
            raise _Bad(f"{what}.uri must be an http(s) URL")
        if type(idx) is not int or not 0 <= idx < 2**32:
            raise _Bad(f"{what}.idx must be a non-negative integer")
    _check_notification(details.get("notification"))
    return details


def _check_notification(value: Any) -> None:
    """What deleting the credential later needs to tell its issuer: usable, or absent."""
    from ssi.oid4vci import AuthorizationServerMetadata, CredentialIssuerMetadata

    note = _object(value, "details.notification")
    if note is None:
        return
    _text(note.get("notification_id"), "details.notification.notification_id")
    token = _object(note.get("token"), "details.notification.token")
    if token is not None:
        for name in ("access_token", "token_type"):
            _text(token.get(name), f"details.notification.token.{name}", limit=10000)
        _list(token.get("authorization_details"), "details.notification.token.authorization_details")
        if token.get("dpop_jwk") is not None:
            _private_key(token["dpop_jwk"], "details.notification.token.dpop_jwk")
    if note.get("notification_id") and note.get("metadata"):
        try:
            CredentialIssuerMetadata.model_validate(note["metadata"], context=STORED)
            AuthorizationServerMetadata.model_validate(note.get("as_metadata"), context=STORED)
        except (ValidationError, SSIError, ValueError, TypeError) as exc:
            raise _Bad("details.notification holds issuer metadata that is not valid") from exc


def _private_key(jwk: Any, what: str) -> Key:
    try:
        key = Key.from_jwk(jwk)
        if not key.is_private:
            raise _Bad(f"{what} is not a private key")
        key.sign(b"cartera backup check")
    except (SSIError, ValueError, TypeError) as exc:
        raise _Bad(f"{what} is not a usable private key") from exc
    return key


def _check_copy(copy: Any, what: str, vct: str, issuer: str) -> tuple[str, dict[str, Any]]:
    copy = _object(copy, what, optional=False)
    assert copy is not None
    token = copy.get("token")
    try:
        parsed = SDJWT.parse(token)
    except SSIError as exc:
        raise _Bad(f"{what}.token is not an SD-JWT VC") from exc
    if parsed.kb_jwt is not None:
        raise _Bad(f"{what}.token carries a key binding JWT")
    if parsed.payload.get("vct") != vct or parsed.payload.get("iss") != issuer:
        raise _Bad(f"{what}.token is of another type or issuer than the entry")
    cnf = parsed.payload.get("cnf")
    if not isinstance(cnf, dict) or cnf.get("jwk") is None:
        raise _Bad(f"{what}.token is not bound to a holder key")
    try:
        bound = import_holder_jwk(cnf["jwk"])
    except (SSIError, ValueError, TypeError) as exc:
        raise _Bad(f"{what}.token has an unusable holder key (cnf)") from exc
    holder = _private_key(copy.get("holder_jwk"), f"{what}.holder_jwk")
    if holder.thumbprint() != bound.thumbprint():
        raise _Bad(f"{what}.holder_jwk is not the key the token is bound to")
    return token, holder.private_jwk()


def _check_credential(item: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`add_credential` for one backup entry, or :class:`_Bad`."""
    item = _object(item, "the entry", optional=False)
    assert item is not None
    vct = _text(item.get("vct"), "vct", optional=False, limit=500)
    issuer = _text(item.get("issuer"), "issuer", optional=False, limit=500)
    assert vct is not None and issuer is not None
    status = item.get("status", "valid")
    if status not in _STATUSES:
        raise _Bad(f"status must be one of {', '.join(_STATUSES)}")
    copies = _list(item.get("copies"), "copies")
    if not copies:
        raise _Bad("copies must hold at least one copy")
    return {"vct": vct, "issuer": issuer, "details": _check_details(item.get("details")),
            "iat": _timestamp(item.get("iat"), "iat"), "exp": _timestamp(item.get("exp"), "exp"),
            "status": status,
            "copies": [_check_copy(copy, f"copies[{index}]", vct, issuer) for index, copy in enumerate(copies)]}


def _check_history(entry: Any) -> tuple[str, dict[str, Any]]:
    entry = _object(entry, "the entry", optional=False)
    assert entry is not None
    kind = entry.get("kind", "imported")
    if not isinstance(kind, str) or not _HISTORY_KIND.fullmatch(kind):
        raise _Bad("kind must be a lowercase word of at most 20 letters")
    details = _object(entry.get("details"), "details", optional=False)
    assert details is not None
    return kind, {**details, "imported_from_backup": True,
                  "original_time": _text(entry.get("created_at"), "created_at", limit=64)}


def check_content(content: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """Every credential and history entry of a decrypted backup, checked; 400 at the first bad one."""
    credentials, history = [], []
    for section, items, check in (("credentials", content["credentials"], _check_credential),
                                  ("history", content.get("history", []), _check_history)):
        for index, item in enumerate(items):
            try:
                checked = check(item)
            except _Bad as exc:
                raise APIError(400, "invalid_backup", f"{section}[{index}]: {exc}") from exc
            (credentials if section == "credentials" else history).append(checked)
    return credentials, history


# -- export and import ---------------------------------------------------------------------------

async def export_wallet(ctx: WalletContext, me: Principal, passphrase: str, pin: str | None = None
                        ) -> dict[str, Any]:
    """Every credential (with its copies and keys) and the history, encrypted; needs the PIN when set."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise APIError(400, "weak_passphrase", f"the passphrase needs at least {MIN_PASSPHRASE} characters")
    await check_pin(ctx, me, pin)
    async with ctx.db.read_session() as session:
        credentials = await load_credentials(session, me.key)
        history = (await session.execute(select(HistoryEntry).where(HistoryEntry.wallet_id == me.wallet_id)
                                         .order_by(HistoryEntry.created_at))).scalars().all()
        content = {
            "credentials": [{"vct": c.row.vct, "issuer": c.row.issuer, "details": c.details,
                             "iat": c.row.issued_at.timestamp() if c.row.issued_at else None,
                             "exp": c.row.expires_at.timestamp() if c.row.expires_at else None,
                             "status": c.row.status,
                             "copies": [{"token": cp.token, "holder_jwk": cp.holder_key.private_jwk()}
                                        for cp in c.copies]} for c in credentials],
            "history": [{"kind": h.kind, "created_at": h.created_at.isoformat(),
                         "details": me.key.open("history", h.id, h.sealed)} for h in history],
        }
    return await _off_loop(seal_backup, content, passphrase)


async def import_wallet(ctx: WalletContext, me: Principal, backup: Any, passphrase: str) -> dict[str, int]:
    """Add a backup's credentials (skipping ones already present) and history to this wallet.

    All or nothing: every entry is checked before anything is stored."""
    header = _check_header(backup)  # before scrypt: the file may not choose a costlier KDF
    content = await _off_loop(_decrypt, *header, passphrase)
    credentials, history = check_content(content)
    async with ctx.db.read_session() as session:
        present = {cp.token for c in await load_credentials(session, me.key) for cp in c.copies}
    added = 0
    async with ctx.db.session() as session:
        for entry in credentials:
            tokens = [token for token, _ in entry["copies"]]
            if any(token in present for token in tokens):
                continue
            present.update(tokens)
            await add_credential(session, me.key, **entry)
            added += 1
        for kind, details in history:
            await add_history(session, me.key, kind, details)
    return {"credentials_added": added}
