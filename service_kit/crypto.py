"""Secrets at rest: ``SecretBox`` (AES-256-GCM under a master key), master key loading, API key hashing.

Sealed format (version 1), all in one byte string::

    0x01 | len(key_id) (1 byte) | key_id (ASCII) | nonce (12 bytes) | ciphertext || GCM tag (16 bytes)

``key_id`` names the master key that sealed the value (a hash of the key, not the key), so after a
master-key rotation a box holding the new key and the old ones opens both and :meth:`SecretBox.rewrap`
moves values to the new key. The version byte and key id are authenticated together with the caller's
``aad`` (for example ``b"wallet:<id>:credential"``), so a value cannot be moved to another row or field
unnoticed. The AES key is derived from the master key with HKDF-SHA256, so the master key can serve other
purposes without key reuse.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

FORMAT_VERSION = 1
MASTER_KEY_BYTES = 32
NONCE_BYTES = 12
_HKDF_INFO = b"cartera secretbox v1"
_KID_PREFIX = b"cartera secretbox key id\x00"

log = logging.getLogger(__name__)


class SecretBoxError(Exception):
    """A sealed value could not be opened or a key is unusable; ``code`` is stable."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = f"secretbox.{code}"
        self.detail = detail or code
        super().__init__(f"{self.code}: {self.detail}")


def key_id_for(master_key: bytes) -> str:
    """The public identifier of a master key: 16 hex digits of a SHA-256 hash of it.

    Safe to store: recovering a 256-bit random key from its hash is infeasible.
    """
    return hashlib.sha256(_KID_PREFIX + master_key).hexdigest()[:16]


def _derive(master_key: bytes) -> AESGCM:
    if len(master_key) != MASTER_KEY_BYTES:
        raise SecretBoxError("bad_key", f"master key must be {MASTER_KEY_BYTES} bytes")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(master_key)
    return AESGCM(key)


class SecretBox:
    """Seal and open secrets with AES-256-GCM under a master key (plus older keys, for rotation)."""

    def __init__(self, master_key: bytes, *, previous_keys: Iterable[bytes] = ()) -> None:
        self.key_id = key_id_for(master_key)
        self._current = _derive(master_key)
        self._keys: dict[str, AESGCM] = {self.key_id: self._current}
        for old in previous_keys:
            self._keys.setdefault(key_id_for(old), _derive(old))

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit master key."""
        return secrets.token_bytes(MASTER_KEY_BYTES)

    def _header(self, key_id: str) -> bytes:
        kid = key_id.encode("ascii")
        return bytes([FORMAT_VERSION, len(kid)]) + kid

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` bound to ``aad`` under the current key."""
        header = self._header(self.key_id)
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + self._current.encrypt(nonce, plaintext, header + aad)

    def key_id_of(self, sealed: bytes) -> str:
        """The key id a sealed value names (whether or not this box holds that key)."""
        return self._split(sealed)[1]

    def _split(self, sealed: bytes) -> tuple[bytes, str, bytes, bytes]:
        if len(sealed) < 2 or sealed[0] != FORMAT_VERSION:
            raise SecretBoxError("bad_format", "not a sealed value of a known version")
        kid_len = sealed[1]
        header_len = 2 + kid_len
        if len(sealed) < header_len + NONCE_BYTES + 16:
            raise SecretBoxError("bad_format", "sealed value too short")
        try:
            kid = sealed[2:header_len].decode("ascii")
        except UnicodeDecodeError as exc:
            raise SecretBoxError("bad_format", "key id is not ASCII") from exc
        nonce = sealed[header_len : header_len + NONCE_BYTES]
        return sealed[:header_len], kid, nonce, sealed[header_len + NONCE_BYTES :]

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Decrypt a value sealed by :meth:`seal` with the same ``aad``; raise ``SecretBoxError`` if not."""
        header, kid, nonce, body = self._split(sealed)
        key = self._keys.get(kid)
        if key is None:
            raise SecretBoxError("unknown_key", "sealed under a master key this box does not hold")
        try:
            return key.decrypt(nonce, body, header + aad)
        except InvalidTag as exc:
            raise SecretBoxError("decrypt_failed", "tampered value, wrong key or wrong context") from exc

    def needs_rewrap(self, sealed: bytes) -> bool:
        """Whether ``sealed`` was sealed under a key other than the current one."""
        return self.key_id_of(sealed) != self.key_id

    def rewrap(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Re-seal a value under the current key (after a rotation); unchanged if already current."""
        if not self.needs_rewrap(sealed):
            return sealed
        return self.seal(self.open(sealed, aad), aad)


class MasterKeySettings(Protocol):
    """What :func:`load_master_key` reads from a service's settings."""

    master_key: SecretStr | None
    master_key_file: Path | None
    data_dir: Path
    dev_mode: bool


_BASE64URL_KEY = re.compile(r"[A-Za-z0-9_-]{43}=?")
_BASE64_KEY = re.compile(r"[A-Za-z0-9+/]{43}=?")


def parse_master_key(text: str | bytes) -> bytes:
    """Decode a master key written as base64url or standard base64 (43 chars and an optional ``=``), hex
    (64 chars) or 32 raw bytes (not all printable)."""
    if isinstance(text, bytes):
        # 32 raw random bytes are almost never all printable: 32 printable characters are a passphrase
        # (or a truncated key), which would give a weak key if taken as one.
        if len(text) == MASTER_KEY_BYTES and not all(0x20 <= byte < 0x7F for byte in text):
            return text
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SecretBoxError("bad_key", "master key must be 32 bytes, base64url or hex") from exc
    value = text.strip()
    candidates: list[bytes] = []
    if len(value) == 2 * MASTER_KEY_BYTES:
        try:
            candidates.append(bytes.fromhex(value))
        except ValueError:
            pass
    # Strictly one alphabet, base64url or standard base64 (`openssl rand -base64 32`): the decoders
    # would otherwise skip stray characters.
    if _BASE64URL_KEY.fullmatch(value):
        candidates.append(base64.urlsafe_b64decode(value.rstrip("=") + "="))
    elif _BASE64_KEY.fullmatch(value):
        candidates.append(base64.b64decode(value.rstrip("=") + "=", validate=True))
    for key in candidates:
        if len(key) == MASTER_KEY_BYTES:
            return key
    raise SecretBoxError("bad_key", "master key must be 32 bytes, base64url or hex")


def load_master_key(settings: MasterKeySettings) -> bytes:
    """The master key from ``master_key`` or ``master_key_file``.

    In ``dev_mode`` only, a missing key file (``master_key_file``, or ``<data_dir>/master.key``) is
    created with a new random key and mode 0600. Outside ``dev_mode`` a missing key is an error: silently
    generating one in production would make existing data unreadable after a redeploy.
    """
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value())
    path = settings.master_key_file
    if path is None:
        if not settings.dev_mode:
            raise SecretBoxError("missing_key", "set master_key_file (or master_key)")
        path = settings.data_dir / "master.key"
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("master key file is readable by other users; chmod 600 it", extra={"path": str(path)})
        return parse_master_key(path.read_bytes())
    if not settings.dev_mode:
        raise SecretBoxError("missing_key", "master key file does not exist")
    return _create_dev_key_file(path)


def _create_dev_key_file(path: Path) -> bytes:
    key = SecretBox.generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two workers starting together: each writes a whole key file of its own (mode 0600) beside the
    # target, and os.link puts one in place, which fails if another is there already. The file is
    # complete before it has its name, so the loser reads the winner's key, never a half-written file.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.urlsafe_b64encode(key).rstrip(b"=").decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return parse_master_key(path.read_bytes())
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    log.warning("generated a DEVELOPMENT master key file", extra={"path": str(path)})
    return key


API_KEY_PREFIX = "ck_"
_HASH_SCHEME = "sha256"


def generate_api_key() -> str:
    """A new admin API key: ``ck_`` followed by 256 random bits in base64url."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """The value to store for ``api_key``: ``sha256$<hex>``.

    A plain SHA-256 is enough here, unlike for passwords: the keys are 256-bit random values made by
    :func:`generate_api_key`, so there is nothing to guess and no dictionary to try; a slow password
    hash (scrypt, Argon2) would only add cost to every authenticated request.
    """
    digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()
    return f"{_HASH_SCHEME}${digest}"


def verify_api_key(api_key: str, stored_hash: str) -> bool:
    """Whether ``api_key`` matches ``stored_hash``, compared in constant time."""
    expected = hash_api_key(api_key)
    return hmac.compare_digest(expected.encode("utf-8"), stored_hash.encode("utf-8"))
