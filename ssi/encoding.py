"""base64url without padding (RFC 7515 §2) and strict JSON, the two encodings every token uses."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import EncodingError

_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


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
    if b"+" in raw or b"/" in raw or b"=" in raw or len(raw) % 4 == 1:
        raise EncodingError("bad_base64url", "not unpadded base64url")
    try:
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + b"=" * (-len(raw) % 4), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise EncodingError("bad_base64url", "not unpadded base64url") from exc


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise EncodingError("duplicate_json_member", "a JSON object repeats a member name")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise EncodingError("bad_json", f"non-standard JSON constant {name}")


def json_loads(data: str | bytes) -> Any:
    """Parse JSON strictly: UTF-8 only, no duplicate member names, no NaN/Infinity."""
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return json.loads(data, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except EncodingError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EncodingError("bad_json", "not valid JSON") from exc


def json_dumps(value: Any) -> str:
    """Compact JSON as sent on the wire (no spaces, non-ASCII kept as UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def b64url_json(value: Any) -> str:
    return b64url_encode(json_dumps(value).encode("utf-8"))


def json_from_b64url(text: str) -> Any:
    return json_loads(b64url_decode(text))
