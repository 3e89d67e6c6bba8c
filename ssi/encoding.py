"""base64url without padding (RFC 7515 §2) and strict JSON, the two encodings every token uses."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from .errors import EncodingError

# To the standard alphabet, and '+', '/' and '=' (not base64url, or padding) to '*', which the
# strict decoder refuses: one translate both converts and rejects.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/***")
_PADDING = (b"", b"", b"==", b"=")
# The value of each base64url character, to check the bits a short last group leaves unused: they
# must be zero (RFC 4648 §3.5), or "AB" and "AC" would both spell the byte 0x00 and a token could be
# re-spelt without its signature changing.
_VALUES = bytearray(256)
for _index, _char in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
    _VALUES[_char] = _index
_UNUSED_BITS = (0, 0, 0x0F, 0x03)


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode unpadded base64url, refusing padding, other alphabets and impossible lengths."""
    # binascii's strict mode rejects every character outside the standard alphabet; the
    # url-safe one is translated first, so '+', '/' and '=' in the input must be refused here.
    try:
        raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    except (UnicodeEncodeError, TypeError) as exc:
        raise EncodingError("bad_base64url", "not ASCII") from exc
    rest = len(raw) % 4
    if rest == 1:
        raise EncodingError("bad_base64url", "not unpadded base64url")
    if rest and _VALUES[raw[-1]] & _UNUSED_BITS[rest]:
        raise EncodingError("bad_base64url", "not canonical base64url (unused bits set)")
    try:
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + _PADDING[rest], strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise EncodingError("bad_base64url", "not unpadded base64url") from exc


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    # Fewer members than pairs means a repeated name (dict keeps the last one silently).
    if len(out) != len(pairs):
        raise EncodingError("duplicate_json_member", "a JSON object repeats a member name")
    return out


def _no_constants(name: str) -> Any:
    raise EncodingError("bad_json", f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    # '1e400' is valid JSON that float() turns into inf: the NaN/Infinity rule would be got round
    # (an 'exp' that never comes, and json_dumps would write the non-JSON 'Infinity').
    value = float(text)
    if not math.isfinite(value):
        raise EncodingError("bad_json", "a JSON number is too large for a double")
    return value


# One decoder for every call (json.loads with hooks builds a new one each time).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants,
                            parse_float=_finite_float)
_scan_once = _DECODER.scan_once


def json_loads(data: str | bytes) -> Any:
    """Parse JSON strictly: UTF-8 only, no duplicate member names, no NaN/Infinity, and no number
    that overflows a double (``1e400``): all refused with ``encoding.bad_json``."""
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        if type(data) is not str:
            return json.loads(data, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants,
                              parse_float=_finite_float)
        # The C scanner straight away; a document with surrounding whitespace, trailing data or
        # nothing at all goes through JSONDecoder.decode, which then decides as json.loads would.
        try:
            value, end = _scan_once(data, 0)
        except StopIteration:
            return _DECODER.decode(data)
        if end != len(data):
            return _DECODER.decode(data)
        return value
    except EncodingError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EncodingError("bad_json", "not valid JSON") from exc


def json_dumps(value: Any) -> str:
    """Compact JSON as sent on the wire (no spaces, non-ASCII kept as UTF-8). NaN and infinities,
    which JSON cannot express, are refused (``encoding.bad_json``) rather than written as ``NaN``."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # NaN or an infinity (or a circular reference): nothing JSON can say
        raise EncodingError("bad_json", "the value cannot be written as JSON") from exc


def b64url_json(value: Any) -> str:
    return b64url_encode(json_dumps(value).encode("utf-8"))


def json_from_b64url(text: str) -> Any:
    return json_loads(b64url_decode(text))
