"""Signed request objects kept per transaction, so that fetching one again signs nothing.

A wallet (or anyone holding the QR code) may fetch a transaction's ``request_uri`` any number of
times; signing a new object each time cost one signature per call, with a PKCS#11 key one token
operation (a loop on one transaction id made ~250 a second). A ``GET`` (and a ``POST`` without
``wallet_nonce``) asks for the same request every time — the transaction's parameters never change
while it is open — so the object signed for the first such fetch is answered to the later ones until
the transaction expires. A ``wallet_nonce`` must be echoed in a fresh object (OpenID4VP 1.0 §5.10),
so those are always signed anew. The transaction is still read on every fetch: an answered or expired
one is refused before the cache is consulted.

Per process, bounded in entries and bytes, safe to lose. An entry names the agency key and certificate
it was signed under, so an agency whose key or certificate changes gets objects signed with the new
ones (a client id without ``x5c`` has only its key to tell).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class RequestObjectCache:
    """Signed request objects per transaction id, each kept until its transaction expires."""

    def __init__(self, maxsize: int = 2048, max_bytes: int = 16 * 1024 * 1024, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.clock = clock
        self.signed = 0  #: objects signed through :meth:`get_or_sign` (for tests and metrics)
        self._bytes = 0
        # tx id -> (expires at, epoch seconds; the agency's key and leaf certificate; the object)
        self._entries: OrderedDict[str, tuple[float, str, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_sign(self, tx: Any, agency: Any, sign: Callable[[], str]) -> str:
        """The object kept for ``tx`` (a transaction row: ``id``, ``expires_at``) signed under
        ``agency``'s current key (``signing_key``) and certificate (``x5c``), or a new one from
        ``sign()``, then kept."""
        now = self.clock()
        leaf = _signer_of(agency)
        entry = self._entries.get(tx.id)
        if entry is not None:
            if entry[0] > now and entry[1] == leaf:
                self._entries.move_to_end(tx.id)
                return entry[2]
            self._drop(tx.id)
        token = sign()
        self.signed += 1
        self._put(tx.id, _epoch(tx.expires_at), leaf, token, now)
        return token

    def _put(self, tx_id: str, expires_at: float, leaf: str, token: str, now: float) -> None:
        size = len(token)
        if expires_at <= now or size > self.max_bytes // 8:
            return  # an expired transaction is refused anyway; a huge object would crowd out the others
        self._entries[tx_id] = (expires_at, leaf, token)
        self._bytes += size
        while len(self._entries) > self.maxsize or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        if len(self._entries) > self.maxsize // 2:
            for expired in [key for key, (until, _, _) in self._entries.items() if until <= now]:
                self._drop(expired)

    def _drop(self, tx_id: str) -> None:
        entry = self._entries.pop(tx_id, None)
        if entry is not None:
            self._bytes -= len(entry[2])

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


def _signer_of(agency: Any) -> str:
    """What the object was signed under: a digest of the stored key (sealed bytes or a token
    reference, never the key in clear) and the leaf certificate."""
    key = getattr(agency, "signing_key", None)
    digest = hashlib.sha256(bytes(key)).hexdigest() if key else ""
    return f"{digest}:{agency.x5c[0] if agency.x5c else ''}"


def _epoch(value: dt.datetime) -> float:
    if value.tzinfo is None:  # SQLite gives naive UTC datetimes
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()
