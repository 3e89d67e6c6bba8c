"""The encrypted vault: per-wallet data keys wrapped by the master key, rows sealed under them.

Layers:

* the **master key** (configuration) seals, through :class:`service_kit.crypto.SecretBox`, each
  wallet's random 256-bit **data key** and the service's **subject index key**;
* a wallet's data key seals (AES-256-GCM) every sensitive row of that wallet. The associated data is
  ``cartera-wallet|<wallet id>|<kind>|<row id>``, so a sealed value copied onto another row, another
  wallet or another field fails to open. A row that belongs to another row names it too, in its row
  id: a credential copy is ``credential-copy|<credential id>|<copy id>`` (:mod:`wallet_api.store`), so
  re-pointing its clear ``credential_id`` column at another credential makes it fail to open;
* citizens are looked up by ``HMAC-SHA256(index key, provider | identifier)``: the database never holds
  the identifier (which is itself a claim value of many credentials);
* the login's secrets (access and refresh tokens, one-time app codes, login states) and the states and
  completion codes of wallet-initiated issuances (:mod:`wallet_api.receiving`) are stored as
  ``HMAC-SHA256(token key, kind | value)`` (:func:`token_mac`), under a random **token key** the master
  key seals: whoever can write the database but lacks the master key cannot store the digest of a token
  of their own and log in with it, as they could when a plain SHA-256 was stored.

Rotating the master key only rewraps the data keys and the index key (:func:`rewrap_all`); the rows
sealed under data keys are untouched, so rotation is quick and runs beside live traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.crypto import SecretBox
from service_kit.db import Database

from .models import ServiceKey, Wallet

_VERSION = 1
_NONCE = 12
SUBJECT_INDEX_KEY = "subject_index"
_INDEX_AAD = b"cartera-wallet|service|subject-index"
TOKEN_KEY = "token_mac"  # noqa: S105 - the name of a service_keys row, not a secret


def service_key_aad(name: str) -> bytes:
    """The associated data a service key row (``service_keys.name``) is sealed with."""
    return _INDEX_AAD if name == SUBJECT_INDEX_KEY else f"cartera-wallet|service|{name}".encode()


class VaultError(Exception):
    """A sealed value could not be opened (tampered, wrong wallet/row, or unknown key); ``wallet_id``: the
    wallet whose row it was, when known. Escaping a request, the wallet app answers it as 500
    ``server_error`` "stored data of this wallet could not be opened" (:mod:`wallet_api.app`)."""

    def __init__(self, code: str, detail: str = "", *, wallet_id: str | None = None) -> None:
        self.code = f"vault.{code}"
        self.detail = detail or code
        self.wallet_id = wallet_id
        super().__init__(f"{self.code}: {self.detail}")


def new_id(prefix: str) -> str:
    """A random public identifier such as ``cred_3xV...`` (128 bits)."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def token_hash(value: str) -> str:
    """SHA-256 hex of a random value. Not for anything that grants access: a database writer can
    compute it (login secrets use :func:`token_mac`)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def token_mac(key: bytes, kind: str, value: str) -> str:
    """What the database stores of a login secret: HMAC-SHA256 hex under the token key
    (:meth:`Vault.token_key`), domain-separated by ``kind`` (``access``, ``refresh``, ``app-code``...)."""
    return hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


class DataKey:
    """A wallet's data key: seals and opens that wallet's rows."""

    def __init__(self, wallet_id: str, key: bytes, *, legacy_copies: bool = False) -> None:
        if len(key) != 32:
            raise VaultError("bad_key", "a data key is 32 bytes")
        self.wallet_id = wallet_id
        self._aead = AESGCM(key)
        #: A credential copy sealed as earlier versions did still opens (:func:`wallet_api.store.open_copy`).
        self.legacy_copies = legacy_copies

    def _aad(self, kind: str, row_id: str) -> bytes:
        return f"cartera-wallet|{self.wallet_id}|{kind}|{row_id}".encode()

    def seal(self, kind: str, row_id: str, value: Any) -> bytes:
        """Encrypt the JSON value bound to this wallet, ``kind`` and ``row_id``."""
        nonce = os.urandom(_NONCE)
        plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return bytes([_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, self._aad(kind, row_id))

    def open(self, kind: str, row_id: str, sealed: bytes) -> Any:
        """Decrypt a value sealed by :meth:`seal` for the same wallet, kind and row."""
        if len(sealed) < 1 + _NONCE + 16 or sealed[0] != _VERSION:
            raise VaultError("bad_format", "not a sealed vault value", wallet_id=self.wallet_id)
        try:
            plaintext = self._aead.decrypt(sealed[1:1 + _NONCE], sealed[1 + _NONCE:], self._aad(kind, row_id))
        except InvalidTag as exc:
            raise VaultError("decrypt_failed", "tampered value or wrong wallet/row", wallet_id=self.wallet_id) from exc
        return json.loads(plaintext)


class Vault:
    """Master-key operations: data keys of wallets, the subject index."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box
        self._index_key: bytes | None = None
        self._token_key: bytes | None = None
        #: Set at start-up while the pass binding credential copies to their credentials has not completed
        #: (:func:`wallet_api.store.bind_legacy_copies`), cleared when it has: the data keys handed out
        #: meanwhile still open copies sealed the earlier way. Off by default: only bound copies open.
        self.legacy_copies = False

    @staticmethod
    def _wallet_aad(wallet_id: str) -> bytes:
        return f"cartera-wallet|{wallet_id}|data-key".encode()

    def new_data_key(self, wallet_id: str) -> tuple[bytes, DataKey]:
        """A fresh data key for a new wallet: ``(sealed under the master key, DataKey)``."""
        raw = secrets.token_bytes(32)
        return self.box.seal(raw, self._wallet_aad(wallet_id)), DataKey(wallet_id, raw)

    def data_key(self, wallet: Wallet) -> DataKey:
        """Unwrap a wallet's data key."""
        return DataKey(wallet.id, self.box.open(wallet.data_key, self._wallet_aad(wallet.id)),
                       legacy_copies=self.legacy_copies)

    async def ensure_index_key(self, db: Database) -> None:
        """Create the subject index key if missing (start-up; safe with several workers starting)."""
        try:
            async with db.session() as session:
                if await session.get(ServiceKey, SUBJECT_INDEX_KEY) is None:
                    session.add(ServiceKey(name=SUBJECT_INDEX_KEY,
                                           sealed=self.box.seal(secrets.token_bytes(32), _INDEX_AAD)))
        except IntegrityError:
            pass  # another worker created it at the same moment: theirs is used

    async def index_key(self, session: AsyncSession) -> bytes:
        """The subject index key (cached: it never changes, only its wrapping does)."""
        if self._index_key is None:
            row = await session.get(ServiceKey, SUBJECT_INDEX_KEY)
            if row is None:
                raise VaultError("no_index_key", "the subject index key is missing (start-up did not run)")
            self._index_key = self.box.open(row.sealed, _INDEX_AAD)
        return self._index_key

    async def token_key(self, db: Database) -> bytes:
        """The key of :func:`token_mac`, created on first use (sealed under the master key, so it
        survives a master-key rotation: :func:`rewrap_all` rewraps it); cached, as it never changes."""
        if self._token_key is None:
            async with db.read_session() as session:
                row = await session.get(ServiceKey, TOKEN_KEY)
            if row is None:
                try:
                    async with db.session() as session:
                        session.add(ServiceKey(name=TOKEN_KEY, sealed=self.box.seal(
                            secrets.token_bytes(32), service_key_aad(TOKEN_KEY))))
                except IntegrityError:
                    pass  # another worker created it at the same moment: theirs is used
                async with db.session() as session:
                    row = await session.get(ServiceKey, TOKEN_KEY)
                if row is None:
                    raise VaultError("no_token_key", "the token key could not be created")
            self._token_key = self.box.open(row.sealed, service_key_aad(TOKEN_KEY))
        return self._token_key

    async def subject_index(self, session: AsyncSession, provider: str, identifier: str) -> str:
        """The lookup key of a citizen: HMAC of the provider kind and the asserted identifier."""
        key = await self.index_key(session)
        return hmac.new(key, f"{provider}|{identifier}".encode(), hashlib.sha256).hexdigest()


async def rewrap_all(session: AsyncSession, box: SecretBox, *, batch: int = 200) -> int:
    """Rewrap every data key and service key not sealed under ``box``'s current key; return how many.

    ``box`` must hold the new key as current and the old ones as previous keys. Each row is opened and
    sealed again with the same associated data; rows already current are skipped, so the command can
    be interrupted and run again.
    """
    count = 0
    for row in (await session.execute(select(ServiceKey))).scalars():
        if box.needs_rewrap(row.sealed):
            row.sealed = box.rewrap(row.sealed, service_key_aad(row.name))
            count += 1
    last = ""
    while True:
        rows = (await session.execute(
            select(Wallet).where(Wallet.id > last).order_by(Wallet.id).limit(batch))).scalars().all()
        if not rows:
            break
        for wallet in rows:
            if box.needs_rewrap(wallet.data_key):
                wallet.data_key = box.rewrap(wallet.data_key, Vault._wallet_aad(wallet.id))
                count += 1
        last = rows[-1].id
        await session.flush()
    return count
