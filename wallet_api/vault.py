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

Rotating the master key only rewraps the data keys and the service keys (:func:`rewrap_all`, a batch of
rows per transaction); the rows sealed under data keys are untouched, so rotation is quick and runs
beside live traffic.

**What a start-up pass left** (:class:`LeftOvers`). The passes that bring rows of earlier versions into
the current form (PIN hashes sealed, PINs recorded in profiles: :mod:`wallet_api.pin`; credential copies
bound to their credential: :mod:`wallet_api.store`) need each wallet's data key. The first run of such a
pass goes over every row; the rows whose data key did not open are recorded, each in its own
``service_keys`` row ``left/<pass>/<row id>`` holding the SHA-256 of the value the row had, sealed under
the master key with associated data naming the pass and the row, and ``left/<pass>`` (sealed) records
that the first run is over. Every later run goes over those rows only, and takes a row only while it
still holds that value: a row written into the database afterwards (another wallet's PIN hash, a copy
planted or moved) is never taken for one of an earlier version, and a database writer can neither add
a row to the set nor record another value (they do not have the master key). Dropping one record
leaves its row refused; deleting ``left/<pass>`` (or the marker of a complete pass) makes the next
start-up run the first run again over every row, as at the upgrade — telling that from a database never
upgraded needs an anchor outside it (docs/security.md). Once no row is left, the pass's marker row says
it is complete.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.crypto import SecretBox, SecretBoxError
from service_kit.db import Database, dialect_insert

from .models import ServiceKey, Wallet, utcnow

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

    def __init__(self, wallet_id: str, key: bytes, *, legacy_copies: bool | LeftOvers = False) -> None:
        if len(key) != 32:
            raise VaultError("bad_key", "a data key is 32 bytes")
        self.wallet_id = wallet_id
        self._aead = AESGCM(key)
        #: Whether a credential copy sealed as earlier versions did still opens
        #: (:func:`wallet_api.store.open_copy`): ``True`` any, :class:`LeftOvers` those its set holds.
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
        #: This start-up created the subject index key (:meth:`ensure_index_key`): that it opens says
        #: nothing of whether the master key is the one the wallets' data keys are under.
        self.index_key_created = False
        #: Set at start-up while the pass binding credential copies to their credentials has not completed
        #: (:func:`wallet_api.store.bind_legacy_copies`), cleared when it has: the data keys handed out
        #: meanwhile still open copies sealed the earlier way — any (``True``) until its first run is
        #: over, then only those its first run left (its :class:`LeftOvers`). Off by default: only
        #: bound copies open.
        self.legacy_copies: bool | LeftOvers = False

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
                    self.index_key_created = True
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

    async def keys_open(self, db: Database) -> bool:
        """Whether the master keys configured open the service's own subject index key: a start-up
        with a wrong master key (or a rotation's previous key missing while that key is still under
        it) does not, and must not record anything as "left" by a pass under keys that are wrong; and
        a record of a pass that does not open while this key does is not the keys' fault."""
        try:
            async with db.read_session() as session:
                await self.index_key(session)
        except (VaultError, SecretBoxError):
            return False
        return True

    async def subject_index(self, session: AsyncSession, provider: str, identifier: str) -> str:
        """The lookup key of a citizen: HMAC of the provider kind and the asserted identifier."""
        key = await self.index_key(session)
        return hmac.new(key, f"{provider}|{identifier}".encode(), hashlib.sha256).hexdigest()


#: What :meth:`LeftOvers.state` finds: the pass never ran (or never with keys that were right); its
#: first run is over and left rows; it is complete; its record of what it left does not open though the
#: keys are right (forged or altered: refused, the pass completes with nothing left); or neither opens
#: (the keys configured are wrong: nothing is done this start-up).
FIRST_RUN, LEFT, COMPLETE, REFUSED, CLOSED = "first-run", "left", "complete", "refused", "closed"
_LEFT = "left/"


def left_digest(*parts: bytes | str) -> bytes:
    """The SHA-256 of a row's value as a pass saw it (each part length-prefixed: no two splits collide)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else bytes(part)
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


class LeftOvers:
    """A start-up pass's marker and the rows its first run left (module docstring, "What a start-up pass
    left"). ``marker``: the ``service_keys`` row recording that the pass is complete; ``tag``: the pass in
    the names of its left rows, ``left/<tag>`` and ``left/<tag>/<row id>`` (64 characters at most, with
    ids of 40)."""

    def __init__(self, vault: Vault, marker: str, tag: str) -> None:
        self.vault = vault
        self.marker = marker
        self.tag = tag
        self.state_name = _LEFT + tag
        self.prefix = self.state_name + "/"

    def entry(self, row_id: str, digest: bytes) -> dict[str, Any]:
        """The ``service_keys`` row recording that the pass left ``row_id`` holding the value of ``digest``."""
        name = self.prefix + row_id
        return {"name": name, "sealed": self.vault.box.seal(digest, service_key_aad(name)), "created_at": utcnow()}

    def opened(self, name: str, sealed: bytes) -> bytes | None:
        """The digest a left row records, or ``None``: it does not open (forged, altered, or moved from
        another row or pass)."""
        try:
            digest = self.vault.box.open(sealed, service_key_aad(name))
        except SecretBoxError:
            return None
        return digest if len(digest) == hashlib.sha256().digest_size else None

    async def state(self, db: Database) -> str:
        """:data:`FIRST_RUN`, :data:`LEFT`, :data:`COMPLETE`, :data:`REFUSED` or :data:`CLOSED`."""
        async with db.read_session() as session:
            rows = dict((await session.execute(select(ServiceKey.name, ServiceKey.sealed).where(
                ServiceKey.name.in_([self.marker, self.state_name])))).all())
        if self.marker in rows:
            return COMPLETE
        if self.state_name not in rows:
            return FIRST_RUN
        try:
            if self.vault.box.open(rows[self.state_name], service_key_aad(self.state_name)) == self.tag.encode():
                return LEFT
        except SecretBoxError:
            pass
        return REFUSED if await self.vault.keys_open(db) else CLOSED

    async def record(self, session: AsyncSession, entries: Sequence[dict[str, Any]]) -> None:
        """Record rows as left (:meth:`entry`), in ``session``'s transaction; one recorded already (by a
        first run cut short, or another worker's at the same moment) gets the value now seen."""
        if not entries:
            return
        insert = dialect_insert(session, ServiceKey)
        await session.execute(insert.values(list(entries)).on_conflict_do_update(
            index_elements=[ServiceKey.name],
            set_={"sealed": insert.excluded.sealed, "created_at": insert.excluded.created_at}))

    async def first_run_over(self, db: Database, *, opened_any: bool) -> bool:
        """Record that the first run is over, so that from now on the pass goes over the rows it left
        only; ``opened_any``: it opened a wallet's data key. True when recorded.

        Only with keys that are right: the subject index key must open (checked before the run, so
        that nothing is recorded as left under a wrong master key), and, when this start-up created it
        (a database whose wallets came without it), a wallet's key too. Otherwise what the run recorded
        is dropped, and the next start-up runs it whole again."""
        if not opened_any and self.vault.index_key_created:
            async with db.session() as session:
                await session.execute(delete(ServiceKey).where(
                    ServiceKey.name.startswith(self.prefix, autoescape=True)))
            return False
        async with db.session() as session:
            insert = dialect_insert(session, ServiceKey)
            await session.execute(insert.values(
                name=self.state_name, sealed=self.vault.box.seal(self.tag.encode(), service_key_aad(self.state_name)),
                created_at=utcnow()).on_conflict_do_nothing())
        return True

    async def complete(self, db: Database) -> None:
        """Record the marker and drop what the first run left: the pass is complete."""
        async with db.session() as session:
            insert = dialect_insert(session, ServiceKey)
            await session.execute(insert.values(
                name=self.marker, sealed=self.vault.box.seal(self.marker.encode(), service_key_aad(self.marker)),
                created_at=utcnow()).on_conflict_do_nothing())
            await session.execute(delete(ServiceKey).where(
                (ServiceKey.name == self.state_name) | ServiceKey.name.startswith(self.prefix, autoescape=True)))

    async def page(self, db: Database, after: str | None, limit: int) -> list[tuple[str, bytes | None]]:
        """Up to ``limit`` of the rows left, in name order after row id ``after``: ``(row id, the digest
        recorded, or None when its record does not open)``."""
        query = select(ServiceKey.name, ServiceKey.sealed).where(ServiceKey.name.startswith(self.prefix, autoescape=True))
        if after is not None:
            query = query.where(ServiceKey.name > self.prefix + after)
        async with db.read_session() as session:
            rows = (await session.execute(query.order_by(ServiceKey.name).limit(limit))).all()
        return [(name[len(self.prefix):], self.opened(name, sealed)) for name, sealed in rows]

    async def drop(self, session: AsyncSession, row_ids: Iterable[str]) -> None:
        """Drop rows from the set (done, gone, or refused), in ``session``'s transaction."""
        names = [self.prefix + row_id for row_id in row_ids]
        for start in range(0, len(names), 500):
            await session.execute(delete(ServiceKey).where(ServiceKey.name.in_(names[start:start + 500])))

    async def matching(self, session: AsyncSession, digests: dict[str, bytes]) -> set[str]:
        """Of ``digests`` (row id: the digest of the value it holds now), the rows the set holds with that
        very value."""
        names = {self.prefix + row_id: row_id for row_id in digests}
        rows = (await session.execute(select(ServiceKey.name, ServiceKey.sealed).where(
            ServiceKey.name.in_(list(names))))).all()
        found = set()
        for name, sealed in rows:
            recorded = self.opened(name, sealed)
            if recorded is not None and hmac.compare_digest(recorded, digests[names[name]]):
                found.add(names[name])
        return found


#: Rows read (and rewrapped, and written back in one transaction) per round of :func:`rewrap_all`.
REWRAP_BATCH = 200


async def rewrap_all(db: Database, box: SecretBox, *, batch: int = REWRAP_BATCH) -> int:
    """Rewrap every service key and data key not sealed under ``box``'s current key; return how many.

    ``box`` must hold the new key as current and the old ones as previous keys. Each row is opened and
    sealed again with the same associated data. The ``service_keys`` rows, then the wallets, are read
    ``batch`` at a time in name (id) order, and each batch's rewrapped rows are written in a transaction
    of their own, each only where the row still holds the value read: a value a running service wrote
    meanwhile (under the new key: it runs with it as current) is never overwritten with an older one.
    So an interrupted run keeps every batch written before it, each row opens under the old key or the
    new one, never neither, and a run again skips the rows already under the current key.

    A row that does not open under any of ``box``'s keys (damaged, or sealed under a key not configured)
    stops the run with a :class:`~service_kit.crypto.SecretBoxError` naming it (its name or wallet id
    only), the rows before it rewrapped and written, those after it untouched."""
    count = 0
    for table, key_column, value_column, aad, what in (
            (ServiceKey.__table__, "name", "sealed", service_key_aad, "the service key"),
            (Wallet.__table__, "id", "data_key", Vault._wallet_aad, "the data key of wallet")):
        ids, values = table.c[key_column], table.c[value_column]
        after: str | None = None
        while True:
            query = select(ids, values).order_by(ids).limit(batch)
            if after is not None:
                query = query.where(ids > after)
            async with db.read_session() as session:
                rows = (await session.execute(query)).all()
            changes: list[dict[str, Any]] = []
            failed: tuple[str, SecretBoxError] | None = None
            for row_id, sealed in rows:
                try:
                    if box.needs_rewrap(sealed):
                        changes.append({"id": row_id, "old": sealed, "new": box.rewrap(sealed, aad(row_id))})
                except SecretBoxError as exc:
                    failed = (row_id, exc)
                    break
            if changes:
                async with db.session() as session:
                    for change in changes:
                        written = await session.execute(
                            table.update().where(ids == change["id"], values == change["old"])
                            .values({value_column: change["new"]}))
                        count += written.rowcount  # type: ignore[attr-defined]
            if failed is not None:
                row_id, exc = failed
                raise SecretBoxError(exc.code.removeprefix("secretbox."), (
                    f"{what} {row_id} does not open under the configured master keys ({exc.code}): the rotation "
                    f"stopped there, {count} key(s) rewrapped before it are kept; running it again goes on "
                    "from there"))
            if len(rows) < batch:
                break
            after = rows[-1][0]
    return count
