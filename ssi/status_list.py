"""IETF Token Status List (draft-ietf-oauth-status-list): the list, its token, and the reference.

A Status List is a byte array in which every Referenced Token owns ``bits`` bits (1, 2, 4 or 8) at
position ``idx``; index 0 lives in the least significant bits of byte 0. On the wire the bytes are
compressed with DEFLATE in the ZLIB format (RFC 1950) and base64url-encoded into ``lst``. The Status
List Token is a JWT with ``typ: statuslist+jwt`` whose ``sub`` is the list's URI and whose
``status_list`` claim carries ``{bits, lst}``; a credential points into it with
``status: {"status_list": {"idx": ..., "uri": ...}}``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .encoding import b64url_decode, b64url_encode
from .errors import EncodingError, JOSEError, StatusListError
from .jose import DEFAULT_ALGORITHMS, Key, check_time_claims, parse_jws, sign_jws, verify_parsed
from .urls import UnsafeURL, split_secure_url

#: Status Type values registered by the draft.
VALID = 0x00
INVALID = 0x01
SUSPENDED = 0x02
APPLICATION_SPECIFIC = 0x03

ALLOWED_BITS: frozenset[int] = frozenset({1, 2, 4, 8})
STATUS_LIST_JWT_TYP = "statuslist+jwt"
STATUS_LIST_JWT_MEDIA_TYPE = "application/statuslist+jwt"
#: Refuse lists that inflate beyond this many bytes (a 1-bit list of 80 million entries): the
#: compressed form of a huge all-zero list is tiny, so the limit is what stops a decompression bomb.
DEFAULT_MAX_DECOMPRESSED = 10 * 1024 * 1024



def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in ALLOWED_BITS:
        raise StatusListError("bad_bits", "bits must be one of 1, 2, 4 or 8")
    return bits


class StatusList:
    """A mutable Status List of ``size`` entries of ``bits`` bits each, all initially VALID (0).

    ``get`` and ``set`` are O(1): one byte read (and write) and two shifts.
    """

    __slots__ = ("bits", "_data", "_size", "_mask", "_per_byte_shift")

    def __init__(self, size: int, bits: int = 1) -> None:
        self.bits = _check_bits(bits)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise StatusListError("bad_size", "the size must be a non-negative integer")
        self._size = size
        self._mask = (1 << bits) - 1
        # entries per byte is 8 // bits; idx >> shift gives the byte for power-of-two widths
        self._per_byte_shift = {1: 3, 2: 2, 4: 1, 8: 0}[bits]
        self._data = bytearray((size * bits + 7) // 8)

    @classmethod
    def _from_bytes(cls, raw: bytes | bytearray, bits: int) -> StatusList:
        obj = cls(0, bits)
        obj._data = bytearray(raw)
        obj._size = len(raw) * 8 // bits
        return obj

    def __len__(self) -> int:
        return self._size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatusList):
            return NotImplemented
        return self.bits == other.bits and self._size == other._size and self._data == other._data

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<StatusList size={self._size} bits={self.bits}>"

    def _check_index(self, idx: Any) -> int:
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0 or idx >= self._size:
            raise StatusListError("index_out_of_range", "the index is not in the status list")
        return idx

    def get(self, idx: int) -> int:
        """The status value at ``idx``; ``status_list.index_out_of_range`` when outside the list."""
        self._check_index(idx)
        shift = (idx & ((1 << self._per_byte_shift) - 1)) * self.bits
        return (self._data[idx >> self._per_byte_shift] >> shift) & self._mask

    def set(self, idx: int, status: int) -> None:
        """Set the status value at ``idx`` (must fit in ``bits`` bits)."""
        self._check_index(idx)
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= self._mask:
            raise StatusListError("bad_status", f"a status must be an integer from 0 to {self._mask}")
        byte = idx >> self._per_byte_shift
        shift = (idx & ((1 << self._per_byte_shift) - 1)) * self.bits
        self._data[byte] = (self._data[byte] & ~(self._mask << shift) & 0xFF) | (status << shift)

    def to_bytes(self) -> bytes:
        """The uncompressed byte array."""
        return bytes(self._data)

    def encode(self) -> str:
        """``lst``: base64url of the ZLIB-format DEFLATE of the bytes (highest compression)."""
        return b64url_encode(zlib.compress(bytes(self._data), 9))

    def to_json(self) -> dict[str, Any]:
        """The JSON Status List object ``{"bits": ..., "lst": ...}``."""
        return {"bits": self.bits, "lst": self.encode()}

    @classmethod
    def decode(cls, lst: Any, bits: Any, *, max_size: int = DEFAULT_MAX_DECOMPRESSED) -> StatusList:
        """Parse ``lst``; refuse bad base64url, bad or truncated zlib, trailing data, a decompressed
        size beyond ``max_size`` bytes, and ``bits`` outside {1, 2, 4, 8}."""
        bits = _check_bits(bits)
        if not isinstance(lst, str) or not lst:
            raise StatusListError("bad_lst", "lst must be a non-empty string")
        try:
            compressed = b64url_decode(lst)
        except EncodingError as exc:
            raise StatusListError("bad_lst", "lst is not base64url") from exc
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(compressed, max_size + 1)
        except zlib.error as exc:
            raise StatusListError("bad_compression", "lst is not a ZLIB DEFLATE stream") from exc
        if len(raw) > max_size or inflater.unconsumed_tail:
            raise StatusListError("too_large", "the status list inflates beyond the allowed size")
        if not inflater.eof:
            raise StatusListError("bad_compression", "the ZLIB stream is truncated")
        if inflater.unused_data:
            raise StatusListError("bad_compression", "data follows the ZLIB stream")
        return cls._from_bytes(raw, bits)

    @classmethod
    def from_json(cls, value: Any, *, max_size: int = DEFAULT_MAX_DECOMPRESSED) -> StatusList:
        """Parse the JSON Status List object (``bits``, ``lst``; ``aggregation_uri`` is ignored)."""
        if not isinstance(value, dict):
            raise StatusListError("bad_status_list", "status_list must be a JSON object")
        if "bits" not in value or "lst" not in value:
            raise StatusListError("bad_status_list", "status_list needs 'bits' and 'lst'")
        return cls.decode(value["lst"], value["bits"], max_size=max_size)


# -- the Status List Token (JWT) -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StatusListToken:
    """A verified Status List Token."""

    status_list: StatusList
    uri: str
    iat: int | float
    exp: int | float | None
    ttl: int | None

    def status(self, idx: int) -> int:
        return self.status_list.get(idx)


def sign_status_list_token(status_list: StatusList, *, uri: str, key: Key, iat: int | None = None,
                           exp: int | None = None, ttl: int | None = None, x5c: list[str] | None = None,
                           kid: str | None = None) -> str:
    """Sign a Status List Token (``typ: statuslist+jwt``) for the list published at ``uri``."""
    if not isinstance(uri, str) or not uri:
        raise StatusListError("bad_uri", "the status list URI must be a non-empty string")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise StatusListError("bad_ttl", "ttl must be a positive integer")
    issued = int(time.time()) if iat is None else iat
    if exp is not None and exp <= issued:
        raise StatusListError("bad_exp", "exp must be after iat")
    header: dict[str, Any] = {"typ": STATUS_LIST_JWT_TYP}
    if kid is not None or key.kid is not None:
        header["kid"] = kid if kid is not None else key.kid
    if x5c:
        header["x5c"] = list(x5c)
    payload: dict[str, Any] = {"sub": uri, "iat": issued}
    if exp is not None:
        payload["exp"] = exp
    if ttl is not None:
        payload["ttl"] = ttl
    payload["status_list"] = status_list.to_json()
    return sign_jws(header, payload, key)


def verify_status_list_token(token: Any, *, key: Key | Callable[[dict[str, Any], dict[str, Any]], Key],
                             expected_uri: str, now: float | None = None,
                             algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
                             max_size: int = DEFAULT_MAX_DECOMPRESSED, leeway: int = 60) -> StatusListToken:
    """Verify a Status List Token fetched from ``expected_uri``.

    ``key`` is the issuer's key, or a resolver called with (header, payload) before the signature
    check (for ``x5c`` or ``kid`` lookups). Checks, in order: structure, ``typ``, signature, ``sub``
    equal to the URI the list was fetched from, ``iat`` present, ``exp``, ``ttl``, the list itself.
    """
    try:
        jws = parse_jws(token)
        payload = jws.json_payload()
    except JOSEError as exc:
        raise StatusListError("malformed_token", "the status list token is not a compact JWS") from exc
    if jws.header.get("typ") != STATUS_LIST_JWT_TYP:
        raise StatusListError("bad_typ", "the status list token's typ is not statuslist+jwt")
    verification_key = key(jws.header, payload) if callable(key) and not isinstance(key, Key) else key
    if not isinstance(verification_key, Key):
        raise StatusListError("no_key", "no key to verify the status list token")
    try:
        verify_parsed(jws, verification_key, algorithms)
    except JOSEError as exc:
        raise StatusListError("bad_signature", f"the status list token does not verify ({exc.code})") from exc
    if payload.get("sub") != expected_uri:
        raise StatusListError("sub_mismatch", "the token's sub is not the URI it was fetched from")
    check_time_claims(payload, now=now, leeway=leeway, require=("iat",), error=StatusListError)
    ttl = payload.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise StatusListError("bad_ttl", "ttl must be a positive integer")
    status_list = StatusList.from_json(payload.get("status_list"), max_size=max_size)
    return StatusListToken(status_list=status_list, uri=expected_uri, iat=payload["iat"],
                           exp=payload.get("exp"), ttl=ttl)


# -- the reference inside a credential -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StatusReference:
    """``status.status_list`` of a Referenced Token: where to look and at which index."""

    idx: int
    uri: str


def status_claim(idx: int, uri: str) -> dict[str, Any]:
    """The value of a credential's ``status`` claim pointing at ``idx`` of the list at ``uri``."""
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise StatusListError("bad_idx", "idx must be a non-negative integer")
    return {"status_list": {"idx": idx, "uri": uri}}


def check_status_uri(uri: Any, *, allow_http_loopback: bool = False) -> str:
    """Refuse anything but an absolute https URI (http only to loopback, for development)."""
    try:
        split_secure_url(uri, allow_http_loopback=allow_http_loopback)
    except UnsafeURL as exc:
        code = "insecure_uri" if exc.reason == "insecure" else "bad_uri"
        raise StatusListError(code, f"the status list uri {exc}") from exc
    return uri


def parse_status_claim(value: Any, *, allow_http_loopback: bool = False) -> StatusReference:
    """Parse a credential's ``status`` claim value ``{"status_list": {"idx", "uri"}}`` strictly."""
    if not isinstance(value, dict) or not isinstance(value.get("status_list"), dict):
        raise StatusListError("bad_reference", "status must be an object with a status_list object")
    ref = value["status_list"]
    idx = ref.get("idx")
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise StatusListError("bad_idx", "status_list.idx must be a non-negative integer")
    uri = check_status_uri(ref.get("uri"), allow_http_loopback=allow_http_loopback)
    return StatusReference(idx=idx, uri=uri)
