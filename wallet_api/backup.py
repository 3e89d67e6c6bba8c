"""Encrypted wallet backups: export and import with a passphrase.

File format (JSON)::

    {"format": "cartera-wallet-backup", "version": 1,
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<b64url>"},
     "enc": "A256GCM", "nonce": "<b64url>", "ciphertext": "<b64url>"}

The key is scrypt(passphrase) — scrypt rather than Argon2 because it is in Python's standard library
(no extra dependency) and memory-hard; N=2^17, r=8 costs about 128 MiB and a fraction of a second,
slowing offline guessing. The plaintext is the JSON of every credential (tokens, holder private keys,
display data), the history and ``subject``; the header members are the AES-GCM associated data, so
they cannot be changed unnoticed.

``subject`` binds the file to the citizen it was exported for: an HMAC, under a key derived from the
service's subject index key (which never leaves the database), of the wallet's subject index (itself
an HMAC of login provider and identifier: no identifier is in the file) and of the canonical JSON of
the credentials and history. An import recomputes it for the importing wallet: a file of another
citizen (or of the same person logged in with another provider, or exported by another wallet
service), a file changed after its export, and a file with no ``subject`` (exported before it existed)
are refused. Whoever knows the passphrase can open and reseal the file, but cannot compute ``subject``.

The file chooses its KDF parameters, so an import accepts only what an export costs at most (r=8,
p=1, N a power of two up to 2^17), checked before scrypt runs; scrypt runs in a small thread pool of
its own, never on the event loop. An export needs the wallet PIN when one is set (the file holds the
holder keys). Every imported copy is verified by :func:`wallet_api.receiving.verify_received`, as a
received credential is (issuer signature, x5c chain to the issuer anchors or the issuer's metadata,
``iss``, ``vct``, ``cnf`` = the copy's holder key); what the wallet stores (type, issuer, times, status
references) comes from the verified tokens, the issuer's name from its metadata fetched now. A
credential that has expired, or whose issuer certificate has, since it was received is verified at
its issuance time and restored expired. One entry that does not verify refuses the whole file (400
``invalid_backup`` naming the entry and a reason code, never a value): nothing is stored.

History entries are restored as kind ``imported`` (their kind, time and id kept in the details), and
the import itself is recorded as a ``restore`` event: the audit chain records that entries were
imported, when, never an event as if it happened in this wallet.

A stored credential or history entry that does not open (damaged, or sealed under a key the wallet no
longer has) cannot go into a backup, but must not keep the citizen from backing up everything else: a
history entry cannot even be deleted, so refusing the export would refuse it for good. The export
leaves it out and says so, never silently: ``skipped`` (each left-out row's ``id``, ``kind`` —
``credential`` or the history kind — and ``created_at``, what the row holds in clear) is in the
encrypted content, where an import reads it back (``skipped_at_export``). Beside the ciphertext is only
``skipped_count``, for the app to tell the citizen without opening the file: the file is kept on drives
and shared folders, and ids, kinds and times of a wallet's history are not for anyone who finds it.
Files without the list (exported before) are imported as before, and so are files that also carry it
beside the ciphertext (as exports did for a while): an import reads only the encrypted content.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.errors import APIError
from ssi import sd_jwt_vc
from ssi import x509 as ssi_x509
from ssi.audit_chain import canonical
from ssi.encoding import b64url_decode, b64url_encode, json_loads
from ssi.errors import EncodingError, SSIError
from ssi.jose import Key, is_numeric_date
from ssi.oid4vci import CredentialIssuerMetadata
from ssi.sd_jwt import SDJWT

from .context import WalletContext
from .deps import Principal
from .models import Credential, HistoryEntry
from .pin import check_pin
from .receiving import (
    IssuanceError,
    checked_type_metadata,
    claim_path_ok,
    describe_configuration,
    describe_issuer,
    fetch_issuer_metadata,
    shown_details,
    shown_display,
    verify_received,
)
from .store import STORED, accept_languages, add_credential, add_history, load_credentials, lock_wallet
from .vault import VaultError

log = logging.getLogger(__name__)

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
#: What a backup's history restores: the wallet's own events, and earlier restores.
RESTORED_KINDS = ("receipt", "share", "decline", "deletion", "imported", "restore")
#: The kind of a history entry taken from a backup, and of the import itself.
IMPORTED, RESTORE = "imported", "restore"
#: Verification failures of time alone (the credential or an issuer certificate expired since): the
#: copy is verified again at its issuance time.
_EXPIRED_SINCE = frozenset({"sd_jwt.expired", "x509.expired"})
_BINDING_LABEL = b"cartera-wallet-backup/v1/subject"
_B64URL = re.compile(r"[A-Za-z0-9_-]{1,100}")
#: The ``kind`` of a credential in a backup's ``skipped`` list (history entries give their own kind).
SKIPPED_CREDENTIAL = "credential"
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
        # The check receiving keeps claim labels by (wallet_api.receiving.claim_path_ok).
        if not claim_path_ok(claim.get("path") if name_needed or "path" in claim else []):
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


def _check_copy(copy: Any, what: str) -> tuple[str, Key]:
    """A copy's token (an SD-JWT without key binding) and its usable private holder key; what the token
    says is verified later (:func:`_verify_entry`)."""
    copy = _object(copy, what, optional=False)
    assert copy is not None
    token = copy.get("token")
    try:
        parsed = SDJWT.parse(token)
    except SSIError as exc:
        raise _Bad(f"{what}.token is not an SD-JWT VC") from exc
    if parsed.kb_jwt is not None:
        raise _Bad(f"{what}.token carries a key binding JWT")
    return token, _private_key(copy.get("holder_jwk"), f"{what}.holder_jwk")


def _check_credential(item: Any) -> dict[str, Any]:
    """One backup entry, its shapes checked: ``vct``, ``issuer``, ``details``, ``status`` and ``copies``
    (``(token, holder key)``); the tokens are verified by :func:`_verify_entry`."""
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
    # iat and exp are the verified token's; the file's must still be times (or null).
    _timestamp(item.get("iat"), "iat")
    _timestamp(item.get("exp"), "exp")
    return {"vct": vct, "issuer": issuer, "details": _check_details(item.get("details")), "status": status,
            "copies": [_check_copy(copy, f"copies[{index}]") for index, copy in enumerate(copies)]}


def _check_history(entry: Any) -> tuple[str | None, dict[str, Any]]:
    """``(the id of the event it records, its details as restored)`` of a backup's history entry.

    Only the kinds a wallet records are restored, and as kind :data:`IMPORTED`: the original kind,
    time and id go into the details (an entry imported before keeps the ones it has)."""
    entry = _object(entry, "the entry", optional=False)
    assert entry is not None
    kind = entry.get("kind")
    if not isinstance(kind, str) or not _HISTORY_KIND.fullmatch(kind) or kind not in RESTORED_KINDS:
        raise _Bad(f"kind must be one of {', '.join(RESTORED_KINDS)}")
    details = _object(entry.get("details"), "details", optional=False)
    assert details is not None
    created_at = _text(entry.get("created_at"), "created_at", limit=64)
    entry_id = _text(entry.get("id"), "id", limit=64)
    if kind == IMPORTED:
        original = _text(details.get("original_id"), "details.original_id", limit=64)
        return original, {**details, "imported_from_backup": True}
    return entry_id, {**details, "imported_from_backup": True, "original_kind": kind,
                      "original_time": created_at, "original_id": entry_id}


def _check_skipped(value: Any) -> list[dict[str, Any]]:
    """The rows the export could not include (optional: files exported before it have none)."""
    skipped = _list(value, "skipped")
    for index, item in enumerate(skipped):
        item = _object(item, f"skipped[{index}]", optional=False)
        assert item is not None
        _text(item.get("id"), f"skipped[{index}].id", optional=False, limit=64)
        _text(item.get("kind"), f"skipped[{index}].kind", optional=False, limit=20)
        _text(item.get("created_at"), f"skipped[{index}].created_at", limit=64)
    return skipped


def check_content(content: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[str | None, dict[str, Any]]]]:
    """Every credential and history entry of a decrypted backup, their shapes checked (and the
    optional ``skipped`` list's); 400 at the first bad one."""
    try:
        _check_skipped(content.get("skipped"))
    except _Bad as exc:
        raise APIError(400, "invalid_backup", str(exc)) from exc
    credentials: list[dict[str, Any]] = []
    history: list[tuple[str | None, dict[str, Any]]] = []
    for index, item in enumerate(content["credentials"]):
        try:
            credentials.append(_check_credential(item))
        except _Bad as exc:
            raise APIError(400, "invalid_backup", f"credentials[{index}]: {exc}") from exc
    for index, item in enumerate(content.get("history", [])):
        try:
            history.append(_check_history(item))
        except _Bad as exc:
            raise APIError(400, "invalid_backup", f"history[{index}]: {exc}") from exc
    return credentials, history


# -- the subject binding -----------------------------------------------------------------------

def subject_binding(index_key: bytes, subject_index: str, content: dict[str, Any]) -> str:
    """The ``subject`` member of a backup's content: HMAC-SHA256, under a key derived from the subject
    index key, of the wallet's subject index and the canonical JSON of the credentials and history."""
    body = canonical({"credentials": content["credentials"], "history": content.get("history", [])})
    key = hmac.new(index_key, _BINDING_LABEL, hashlib.sha256).digest()
    return b64url_encode(hmac.new(key, subject_index.encode() + b"\x00" + body, hashlib.sha256).digest())


def _check_binding(content: dict[str, Any], index_key: bytes, subject_index: str) -> None:
    bound = content.get("subject")
    if bound is None:
        raise APIError(400, "invalid_backup", "the backup is not bound to a citizen (it was exported before "
                                              "backups were); it cannot be restored")
    try:
        expected = subject_binding(index_key, subject_index, content)
    except SSIError as exc:
        raise APIError(400, "invalid_backup", "the backup content is not recognised") from exc
    if not isinstance(bound, str) or not _B64URL.fullmatch(bound) \
            or not hmac.compare_digest(bound.encode(), expected.encode()):
        raise APIError(403, "foreign_backup", "this backup was not exported from this wallet: it is another "
                                              "citizen's (or from a login with another identity provider, or "
                                              "another wallet service), or it was changed after its export")


# -- verifying imported credentials --------------------------------------------------------------

def _chain_end(verified: sd_jwt_vc.VerifiedCredential) -> float | None:
    """The end of the validity of the issuer's x5c chain (the earliest ``notAfter``), if it has one."""
    x5c = verified.header.get("x5c")
    if verified.key_source != "x5c" or not isinstance(x5c, list):
        return None
    certs = [ssi_x509.load_certificate(binascii.a2b_base64(item.encode("ascii"))) for item in x5c]
    return min(c.not_valid_after_utc for c in certs).timestamp()


async def _verify_copy(ctx: WalletContext, token: str, holder: Key, vct: str, issuer: str, what: str
                       ) -> tuple[sd_jwt_vc.VerifiedCredential, float | None]:
    """``(verified copy, the latest time it may be used)``: exactly as a received credential is verified;
    one that expired since (or whose issuer certificate did) is verified at its issuance time instead,
    and usable until then at most. Anything else that does not verify is :class:`_Bad` with its code."""
    try:
        return await verify_received(ctx, token, credential_issuer=issuer, expected_vct=vct, holder_key=holder), None
    except IssuanceError as exc:
        if exc.reason not in _EXPIRED_SINCE:
            raise _Bad(f"{what}.token did not verify ({exc.reason or exc.error})") from exc
    iat = SDJWT.parse(token).payload.get("iat")  # parsed by _check_copy already
    if not is_numeric_date(iat):
        raise _Bad(f"{what}.token did not verify (expired, and no iat to verify it at)")
    try:
        verified = await verify_received(ctx, token, credential_issuer=issuer, expected_vct=vct, holder_key=holder,
                                         now=float(iat))
    except IssuanceError as exc:
        raise _Bad(f"{what}.token did not verify at its issuance ({exc.reason or exc.error})") from exc
    ends = [t for t in (verified.exp, _chain_end(verified)) if t is not None]
    return verified, min(ends) if ends else float(iat)


async def _issuer_metadata(ctx: WalletContext, client: Any, issuer: str, cache: dict[str, Any]
                           ) -> CredentialIssuerMetadata | None:
    """The issuer's metadata fetched now (what receiving shows the issuer by), or ``None``."""
    if issuer not in cache:
        try:
            cache[issuer] = (await fetch_issuer_metadata(ctx, client, issuer))[0]
        except IssuanceError:
            cache[issuer] = None
    return cache[issuer]  # type: ignore[no-any-return]


def _display(metadata: CredentialIssuerMetadata | None, details: dict[str, Any], vct: str, languages: list[str]
             ) -> dict[str, Any] | None:
    """The credential's display from the issuer's metadata when it describes the type; else the file's
    (display only: type names and claim labels), kept as receipt keeps one (its bounded texts only)."""
    if metadata is not None:
        configs = metadata.credential_configurations_supported
        wanted = details.get("configuration_id")
        ids = ([wanted] if wanted in configs else []) + list(configs)
        for configuration_id in ids:
            config = configs[configuration_id]
            if config.format == "dc+sd-jwt" and config.vct == vct:
                return describe_configuration(metadata, configuration_id, languages)
    display = details.get("display")
    return shown_display(display) if isinstance(display, dict) else None


async def _verify_entry(ctx: WalletContext, client: Any, entry: dict[str, Any], languages: list[str],
                        metadata_cache: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`add_credential` for one checked entry: every copy verified, and
    what the wallet stores taken from the verified tokens (or re-derived), not from the file."""
    vct, issuer, details = entry["vct"], entry["issuer"], entry["details"]
    copies, statuses = [], []
    first: sd_jwt_vc.VerifiedCredential | None = None
    usable_until: list[float] = []
    for index, (token, holder) in enumerate(entry["copies"]):
        verified, until = await _verify_copy(ctx, token, holder, vct, issuer, f"copies[{index}]")
        first = first or verified
        if until is not None:
            usable_until.append(until)
        if verified.status is not None:
            statuses.append({"uri": verified.status.uri, "idx": verified.status.idx})
        copies.append((token, holder.private_jwk()))
    assert first is not None
    if (details.get("statuses") or []) != statuses:
        raise _Bad("details.statuses are not the status references of the copies")
    note = details.get("notification") or {}
    metadata_issuer = (note.get("metadata") or {}).get("credential_issuer")
    if metadata_issuer is not None and metadata_issuer != first.issuer:
        raise _Bad("details.notification names another issuer than the credential's")
    type_metadata = details.get("type_metadata")
    metadata = await _issuer_metadata(ctx, client, first.issuer, metadata_cache)
    display = _display(metadata, details, first.vct, languages)
    stored = {
        "configuration_id": details.get("configuration_id"),
        **({"display": display} if display is not None else {}),
        # Never the file's name: the issuer's metadata now, or (unreachable) its host, as receiving falls back.
        "issuer_display": describe_issuer(metadata, languages) if metadata is not None else
        {"id": first.issuer, "name": urlsplit(first.issuer).hostname or first.issuer, "logo": None},
        "type_metadata": checked_type_metadata(type_metadata, first.vct),
        "statuses": statuses, "notification": details.get("notification"), "key_source": first.key_source}
    exp = first.exp
    if usable_until:
        exp = min(usable_until + ([exp] if exp is not None else []))
    # The file's status may only be worse than "valid" (a restore never lifts a suspension or a
    # revocation); the status list is checked at once either way (add_credential schedules it).
    status = entry["status"] if statuses and entry["status"] in ("suspended", "revoked") else "valid"
    return {"vct": first.vct, "issuer": first.issuer, "details": stored, "iat": first.iat, "exp": exp,
            "status": status, "copies": copies}


async def verify_content(ctx: WalletContext, credentials: list[dict[str, Any]], languages: list[str]
                         ) -> list[dict[str, Any]]:
    """Every checked entry verified (:func:`_verify_entry`); 400 ``invalid_backup`` at the first that is not."""
    verified: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    async with ctx.client() as client:
        for index, entry in enumerate(credentials):
            try:
                verified.append(await _verify_entry(ctx, client, entry, languages, cache))
            except _Bad as exc:
                raise APIError(400, "invalid_backup", f"credentials[{index}]: {exc}") from exc
    return verified


# -- export and import ---------------------------------------------------------------------------

def _skipped(row: Credential | HistoryEntry, kind: str) -> dict[str, Any]:
    """What a backup says of a row it leaves out: what the row holds in clear, never a sealed value."""
    return {"id": row.id, "kind": kind, "created_at": row.created_at.isoformat()}


async def export_wallet(ctx: WalletContext, me: Principal, passphrase: str, pin: str | None = None
                        ) -> dict[str, Any]:
    """Every credential (with its copies and keys) and the history, bound to the citizen and encrypted;
    needs the PIN when set. A row that does not open is left out and listed in ``skipped``, in the
    content; beside the ciphertext, ``skipped_count`` only."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise APIError(400, "weak_passphrase", f"the passphrase needs at least {MIN_PASSPHRASE} characters")
    await check_pin(ctx, me, pin)
    unreadable: list[Credential] = []  # load_credentials logs each, with its id
    history: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    async with ctx.db.read_session() as session:
        credentials = await load_credentials(session, me.key, unreadable=unreadable)
        skipped.extend(_skipped(row, SKIPPED_CREDENTIAL) for row in unreadable)
        rows = (await session.execute(select(HistoryEntry).where(HistoryEntry.wallet_id == me.wallet_id)
                                      .order_by(HistoryEntry.created_at, HistoryEntry.id))).scalars().all()
        for h in rows:
            try:
                details = me.key.open("history", h.id, h.sealed)
            except VaultError:
                # The entry id only: nothing of its content is known, and the wallet is known from it.
                log.warning("a history entry does not open; left out of the backup", extra={"entry": h.id})
                skipped.append(_skipped(h, h.kind))
                continue
            history.append({"id": h.id, "kind": h.kind, "created_at": h.created_at.isoformat(), "details": details})
        content: dict[str, Any] = {
            # Display data as receipt keeps it now, also of credentials stored before: what an import takes.
            "credentials": [{"vct": c.row.vct, "issuer": c.row.issuer, "details": shown_details(c.details),
                             "iat": c.row.issued_at.timestamp() if c.row.issued_at else None,
                             "exp": c.row.expires_at.timestamp() if c.row.expires_at else None,
                             "status": c.row.status,
                             "copies": [{"token": cp.token, "holder_jwk": cp.holder_key.private_jwk()}
                                        for cp in c.copies]} for c in credentials],
            "history": history,
        }
        # Bound as before (credentials and history only): files of earlier versions keep their binding.
        content["subject"] = subject_binding(await ctx.vault.index_key(session), me.wallet.subject_index, content)
    content["skipped"] = skipped
    sealed = await _off_loop(seal_backup, content, passphrase)
    # The count only, beside the ciphertext: enough for the app to tell the citizen, while the list
    # (ids, kinds and times of the history) stays encrypted, as the file is kept where others may read
    # it. Not authenticated; an import ignores it.
    return {**sealed, "skipped_count": len(skipped)}


async def _restored_before(session: AsyncSession, me: Principal) -> set[str]:
    """The ids of the events this wallet has: its history rows, and the originals of entries it imported.

    An imported entry that does not open names no original: it is passed over (logged by its id), and
    the file's entry for that event, if any, is imported again rather than the whole import refused."""
    rows = (await session.execute(select(HistoryEntry).where(HistoryEntry.wallet_id == me.wallet_id))).scalars().all()
    known = {row.id for row in rows}
    for row in rows:
        if row.kind == IMPORTED:
            try:
                details = me.key.open("history", row.id, row.sealed)
            except VaultError:
                log.warning("an imported history entry does not open; not compared with the backup",
                            extra={"entry": row.id})
                continue
            original = details.get("original_id") if isinstance(details, dict) else None
            if isinstance(original, str):
                known.add(original)
    return known


async def import_wallet(ctx: WalletContext, me: Principal, backup: Any, passphrase: str,
                        accept_language: str | None = None) -> dict[str, int]:
    """Add a backup's credentials (skipping ones already present) and history to this wallet.

    All or nothing: the file must be this citizen's, unchanged since its export, and every entry is
    checked and verified before anything is stored.

    Serialised per wallet (:func:`wallet_api.store.lock_wallet`, as credential deletions are): what is
    already present is read inside the transaction that stores, after the lock, so two imports of the
    same file at once store each credential and history entry once — the second finds the first's.
    A stored credential that does not open is not compared (the file's copy is restored beside it)."""
    header = _check_header(backup)  # before scrypt: the file may not choose a costlier KDF
    content = await _off_loop(_decrypt, *header, passphrase)
    async with ctx.db.read_session() as session:
        index_key = await ctx.vault.index_key(session)
    _check_binding(content, index_key, me.wallet.subject_index)
    checked, history = check_content(content)
    skipped_at_export = len(content.get("skipped") or [])
    credentials = await verify_content(ctx, checked, accept_languages(accept_language))
    now = time.time()
    added, expired, restored, imported = 0, 0, [], 0
    async with ctx.db.session() as session:
        await lock_wallet(session, me.wallet_id)
        present = {cp.token for c in await load_credentials(session, me.key, unreadable=[]) for cp in c.copies}
        known = await _restored_before(session, me)
        for entry in credentials:
            tokens = [token for token, _ in entry["copies"]]
            if any(token in present for token in tokens):
                continue
            present.update(tokens)
            credential_id = await add_credential(session, me.key, **entry)
            added += 1
            expired += entry["exp"] is not None and entry["exp"] <= now
            restored.append({"credential_id": credential_id, "issuer": entry["issuer"],
                             "issuer_name": entry["details"]["issuer_display"]["name"], "vct": entry["vct"],
                             "credential_name": entry["details"].get("display", {}).get("name") or entry["vct"]})
        for original_id, details in history:
            if original_id is not None and original_id in known:
                continue  # this wallet has that event already (or imported it before)
            if original_id is not None:
                known.add(original_id)
            await add_history(session, me.key, IMPORTED, details)
            imported += 1
        await add_history(session, me.key, RESTORE, {"credentials_added": added, "credentials": restored,
                                                     "history_imported": imported,
                                                     "skipped_at_export": skipped_at_export})
    return {"credentials_added": added, "credentials_expired": expired, "history_imported": imported,
            "skipped_at_export": skipped_at_export}
