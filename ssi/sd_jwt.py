"""Selective Disclosure for JWTs (SD-JWT, RFC 9901): issue, parse, present and verify.

Format-generic: SD-JWT VC rules (``vct``, forbidden disclosures, issuer key discovery) live in
:mod:`ssi.sd_jwt_vc`. Only the compact serialization ``<issuer-jwt>~<d1>~...~<dn>~[<kb-jwt>]`` and
the ``sha-256`` digest algorithm are supported (HAIP requires nothing else).

A claim is addressed by a :data:`ClaimPath`, a tuple of ``str`` (object member), ``int`` (array
index) or ``None`` (every element of an array), as in OpenID4VP's claims path pointers.

Why structure is checked in :meth:`SDJWT.parse` (before the signature): the holder needs the
processed claims without the issuer's key, and the verifier then reuses that single pass
(one hash per disclosure, one walk of the payload) instead of parsing twice. Every rule of
RFC 9901 §7.1 raises :class:`~ssi.errors.SDJWTError` with its own code; the signature is still
verified before any claim is returned to a verifier.

Error codes (stable): structure ``sd_jwt.malformed``, ``sd_jwt.too_deep``; disclosures
``sd_jwt.bad_disclosure``, ``sd_jwt.reserved_claim_name``, ``sd_jwt.unreferenced_disclosure``,
``sd_jwt.duplicate_disclosure``, ``sd_jwt.duplicate_digest``, ``sd_jwt.claim_name_collision``,
``sd_jwt.misplaced_array_disclosure``, ``sd_jwt.bad_sd_field``, ``sd_jwt.bad_array_digest``,
``sd_jwt.unsupported_sd_alg``; issuer JWT ``jose.alg_not_allowed``, ``jose.alg_key_mismatch``,
``jose.bad_signature``, ``sd_jwt.bad_typ``, ``sd_jwt.no_issuer_key``, ``sd_jwt.bad_cnf``; time
``sd_jwt.expired``, ``sd_jwt.not_yet_valid``, ``sd_jwt.iat_in_future``, ``sd_jwt.bad_exp`` /
``bad_nbf`` / ``bad_iat``; key binding ``sd_jwt.kb_missing``, ``sd_jwt.kb_unexpected``,
``sd_jwt.kb_expectation_missing``, ``sd_jwt.kb_malformed``, ``sd_jwt.kb_bad_typ``,
``sd_jwt.kb_no_cnf``, ``sd_jwt.kb_bad_signature``, ``sd_jwt.kb_bad_iat``, ``sd_jwt.kb_stale``,
``sd_jwt.kb_expired``, ``sd_jwt.kb_not_yet_valid``, ``sd_jwt.kb_bad_exp``, ``sd_jwt.kb_bad_nbf`` (an
``exp``/``nbf`` the KB-JWT carries, checked with the same leeway as the credential's),
``sd_jwt.kb_wrong_aud``, ``sd_jwt.kb_wrong_nonce``, ``sd_jwt.kb_bad_sd_hash``; issuing and
presenting ``sd_jwt.bad_payload``, ``sd_jwt.bad_path``, ``sd_jwt.bad_claim_name``,
``sd_jwt.bad_claim_value``, ``sd_jwt.bad_header``, ``sd_jwt.bad_decoys``, ``sd_jwt.kb_key_missing``,
``sd_jwt.kb_params_missing``, ``sd_jwt.unknown_disclosure``.

What a presentation shows is computed from the disclosures it carries (:meth:`SDJWT.revealed_claims`),
not from the paths asked for: a disclosure goes whole, plain members of a disclosed object included.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from .encoding import b64url_decode, b64url_encode, json_loads
from .errors import EncodingError, JOSEError, SDJWTError
from .jose import DEFAULT_ALGORITHMS, JWS, Key, check_algorithm, check_time_claims, is_numeric_date

__all__ = [
    "ClaimPath",
    "Disclosure",
    "SDJWT",
    "VerifiedSDJWT",
    "KB_JWT_TYP",
    "SD_ALG",
    "issue_sd_jwt",
    "make_disclosure",
    "verify_sd_jwt",
    "sd_hash",
    "import_holder_jwk",
]

ClaimPath = tuple[str | int | None, ...]

#: The only digest algorithm issued and accepted (``_sd_alg``).
SD_ALG = "sha-256"
#: ``typ`` of a Key Binding JWT.
KB_JWT_TYP = "kb+jwt"
#: Nesting deeper than this is refused: no credential needs it, and it bounds recursion.
MAX_DEPTH = 48

_SD = "_sd"
_SD_ALG = "_sd_alg"
_ELLIPSIS = "..."
_RESERVED_NAMES = frozenset({_SD, _ELLIPSIS})
# JWK members of private (or symmetric) keys, never acceptable in a 'cnf.jwk' (RFC 7518 §6).
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# One encoder instance: json.dumps with keyword arguments builds a new encoder on every call,
# which is a measurable share of issuing ten disclosures.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_sha256 = hashlib.sha256
_B64_TABLE = bytes.maketrans(b"+/", b"-_")
_b2a = binascii.b2a_base64


def _default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# The C encoder behind _ENCODER, built once: JSONEncoder.encode builds it again on every call.
# No circular-reference markers: the issuing walk bounds nesting (MAX_DEPTH) before any value is
# encoded, and RecursionError is caught as bad_claim_value all the same.
if c_make_encoder is not None:
    _c_encoder = c_make_encoder(None, _default, encode_basestring, None, ":", ",", False, False, False)

    def _encode_json(value: Any) -> str:
        return "".join(_c_encoder(value, 0))
else:  # pragma: no cover - CPython always has the C accelerator
    _encode_json = _ENCODER.encode
# ssi.encoding.json_loads: strict (no duplicate members, no NaN/Infinity), one shared decoder.
_loads = json_loads


# Decoded JWS headers by their exact base64url segment. An issuer puts the same header (alg, typ,
# kid and a ~1 KB x5c) on every credential, and a wallet the same one on every KB-JWT, so a verifier
# decodes the same few segments over and over. Only headers that passed every check below are
# stored, and only those whose values are strings, numbers or lists of strings, so that a copy of
# the dict and of its lists is a complete copy: a caller changing its header cannot change the
# cache. Bounded: emptied when full (an attacker sending new headers only costs the decoding).
_HEADER_CACHE: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {}
_HEADER_CACHE_MAX = 256
#: Longer segments are not kept (a header with a three-certificate x5c is about 5,000 characters).
_HEADER_CACHE_MAX_SEGMENT = 16_384


def _header_copy(entry: tuple[dict[str, Any], tuple[str, ...]]) -> dict[str, Any]:
    header, lists = entry
    header = header.copy()
    for name in lists:
        header[name] = header[name].copy()
    return header


def _remember_header(segment: str, header: dict[str, Any]) -> None:
    if len(segment) > _HEADER_CACHE_MAX_SEGMENT:
        return
    lists: list[str] = []
    for name, value in header.items():
        kind = type(value)
        if kind is list:
            if not all(type(item) is str for item in value):
                return
            lists.append(name)
        elif kind is not str and kind is not int and kind is not float and kind is not bool and value is not None:
            return
    if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[segment] = (_header_copy((header, tuple(lists))), tuple(lists))


def _parse_compact(token: str, code: str, what: str) -> tuple[JWS, dict[str, Any]]:
    """Split and decode a compact JWS whose payload is a JSON object (header checks as
    jose.parse_jws: an object with a string ``alg`` and no ``crit``)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise SDJWTError(code, f"the {what} is not a compact JWS")
    head, body, sig = parts
    cached = _HEADER_CACHE.get(head)
    try:
        header = _loads(b64url_decode(head)) if cached is None else _header_copy(cached)
        raw_payload = b64url_decode(body)
        payload = _loads(raw_payload)
        signature = b64url_decode(sig)
    except EncodingError as exc:
        raise SDJWTError(code, f"a part of the {what} is not base64url/JSON ({exc.code})") from exc
    if cached is None:
        if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
            raise SDJWTError(code, f"the {what} header is not an object with a string 'alg'")
        if "crit" in header:
            raise SDJWTError(code, f"the {what} has critical header parameters, which are not supported")
        _remember_header(head, header)
    if type(payload) is not dict:
        raise SDJWTError(code, f"the {what} payload is not a JSON object")
    signing_input = token[:len(head) + 1 + len(body)].encode("ascii")
    return JWS(header, raw_payload, signing_input, signature), payload


def _digest(encoded: str) -> str:
    # base64url of 32 octets is 43 characters and one '=' of padding: cut rather than stripped.
    return _b2a(_sha256(encoded.encode("ascii")).digest(), newline=False).translate(_B64_TABLE)[:43].decode("ascii")


def sd_hash(presentation_prefix: str) -> str:
    """``sd_hash`` of a KB-JWT: base64url SHA-256 over ``<issuer-jwt>~<d1>~...~<dn>~``."""
    return _digest(presentation_prefix)


# -- disclosures ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Disclosure:
    """One disclosure: ``[salt, name, value]`` for an object member, ``[salt, value]`` for an
    array element (``name`` is then ``None``). ``encoded`` is the base64url string as it travels,
    ``digest`` the base64url SHA-256 over its ASCII bytes."""

    salt: str
    name: str | None
    value: Any
    encoded: str
    digest: str

    @property
    def is_array_element(self) -> bool:
        return self.name is None

    @classmethod
    def decode(cls, encoded: str) -> Disclosure:
        """Decode one disclosure strictly (``sd_jwt.bad_disclosure`` / ``sd_jwt.reserved_claim_name``)."""
        try:
            raw = b64url_decode(encoded)
            array = _loads(raw)
        except EncodingError as exc:
            raise SDJWTError("bad_disclosure", "a disclosure is not base64url-encoded JSON") from exc
        if not isinstance(array, list) or len(array) not in (2, 3):
            raise SDJWTError("bad_disclosure", "a disclosure must be a JSON array of 2 or 3 elements")
        salt = array[0]
        if not isinstance(salt, str):
            raise SDJWTError("bad_disclosure", "a disclosure's salt must be a string")
        if len(array) == 2:
            return cls(salt, None, array[1], encoded, _digest(encoded))
        name = array[1]
        if not isinstance(name, str):
            raise SDJWTError("bad_disclosure", "a disclosure's claim name must be a string")
        if name in _RESERVED_NAMES:
            raise SDJWTError("reserved_claim_name", "a disclosure may not name '_sd' or '...'")
        return cls(salt, name, array[2], encoded, _digest(encoded))


def _new_salt() -> str:
    return b64url_encode(secrets.token_bytes(16))


def make_disclosure(name: str | None, value: Any, salt: str | None = None) -> Disclosure:
    """Create a disclosure for an object member (``name``) or an array element (``name=None``).

    The salt is 128 random bits unless given (only tests should give one).
    """
    if name is not None:
        if not isinstance(name, str):
            raise SDJWTError("bad_claim_name", "a claim name must be a string")
        if name in _RESERVED_NAMES:
            raise SDJWTError("reserved_claim_name", "'_sd' and '...' cannot be disclosed claim names")
    salt = _new_salt() if salt is None else salt
    array = [salt, value] if name is None else [salt, name, value]
    try:
        text = _ENCODER.encode(array)
    except (TypeError, ValueError) as exc:
        raise SDJWTError("bad_claim_value", "a claim value is not JSON-serialisable") from exc
    encoded = b64url_encode(text.encode("utf-8"))
    return Disclosure(salt, name, value, encoded, _digest(encoded))


# -- issuing -------------------------------------------------------------------------------------

class _Node:
    """A node of the trie of disclosable paths (built once per distinct path list, then shared)."""

    __slots__ = ("sd", "children", "has_members", "has_elements", "count", "member_json")

    def __init__(self) -> None:
        #: On the root only: how many paths the trie holds (sizes the salt pool of an issuance).
        self.count = 0
        self.sd = False
        self.children: dict[str | int | None, _Node] = {}
        self.has_members = False
        self.has_elements = False
        #: For an object member: its name as JSON and a comma, the middle of its disclosure.
        self.member_json = ""


def _merge(a: _Node, b: _Node) -> _Node:
    """The node for an array element addressed both by ``None`` and by its index."""
    merged = _Node()
    merged.sd = a.sd or b.sd
    merged.has_members = a.has_members or b.has_members
    merged.has_elements = a.has_elements or b.has_elements
    merged.children = dict(a.children)
    for key, child in b.children.items():
        merged.children[key] = _merge(merged.children[key], child) if key in merged.children else child
    return merged


def _build_trie(paths: tuple[ClaimPath, ...]) -> _Node:
    root = _Node()
    for path in paths:
        if not isinstance(path, tuple) or not path:
            raise SDJWTError("bad_path", "a claim path is a non-empty tuple")
        node = root
        for component in path:
            if isinstance(component, bool) or not (component is None or isinstance(component, str | int)):
                raise SDJWTError("bad_path", "claim path components are str, int or None")
            if isinstance(component, int) and component < 0:
                raise SDJWTError("bad_path", "array indices in a claim path are non-negative")
            if isinstance(component, str):
                node.has_members = True
            else:
                node.has_elements = True
            node = node.children.setdefault(component, _Node())
            if isinstance(component, str):
                node.member_json = _encode_str(component) + ","
        node.sd = True
    root.count = len(paths)
    return root


_TRIES: dict[tuple[ClaimPath, ...], _Node] = {}
_TRIES_MAX = 512


def _trie_for(disclosable: Iterable[ClaimPath]) -> _Node:
    # Issuers reuse one path list per credential type: building the trie once per list is pure
    # (no secret in it) and saves its cost on every issuance.
    key = tuple(disclosable)
    try:
        cached = _TRIES.get(key)
    except TypeError:  # unhashable paths (lists): normalise them
        key = tuple(tuple(p) if isinstance(p, list | tuple) else p for p in key)  # type: ignore[misc]
        try:
            cached = _TRIES.get(key)
        except TypeError as exc:
            raise SDJWTError("bad_path", "claim path components are str, int or None") from exc
    if cached is None:
        cached = _build_trie(key)
        if len(_TRIES) >= _TRIES_MAX:
            _TRIES.clear()
        _TRIES[key] = cached
    return cached


_encode_str = encode_basestring  # what JSONEncoder(ensure_ascii=False) uses for a str


def _b64e(data: bytes) -> bytes:
    return _b2a(data, newline=False).translate(_B64_TABLE).rstrip(b"=")


class _Issuer:
    """One issuance: walks the payload, creates the disclosures, keeps their encoded form.

    The work per disclosure is batched per object or array: the salts come from one CSPRNG call
    per issuance (or per 16 disclosures), and the digests of a container (decoys included) are
    translated to the base64url alphabet and decoded in one call instead of one per digest.
    """

    __slots__ = ("encoded", "decoys", "_salts", "_pos", "_random", "_rpos")

    def __init__(self, decoys: int | None, expected: int) -> None:
        self.encoded: list[bytes] = []
        self.decoys = decoys
        # Salts: 22 base64url characters cut from one uniformly random stream, i.e. 132 random
        # bits each (RFC 9901 §9.3 asks for 128); 17 random bytes encode to >= 22 characters.
        # The same CSPRNG call also provides the first container's decoys (count + 4 x 32 bytes).
        size = 17 * max(expected, 1)
        block = secrets.token_bytes(size + 129)
        self._salts = _b64e(block[:size]).decode("ascii")
        self._pos = 0
        self._random = block[size:]
        self._rpos = 0

    def _random_bytes(self, n: int) -> bytes:
        # Decoys and their counts are drawn from one CSPRNG call per 256 bytes.
        pos = self._rpos
        if pos + n > len(self._random):
            self._random = secrets.token_bytes(max(256, n))
            pos = 0
        self._rpos = pos + n
        return self._random[pos:pos + n]

    def decoy_count(self) -> int:
        if self.decoys is not None:
            return self.decoys
        # A uniformly random 1-4 per container hides how many claims are really disclosable.
        return 1 + (self._random_bytes(1)[0] & 3)

    def digests(self, bodies: list[str], decoys: int) -> list[str]:
        """Create one disclosure per body (``"name",value`` or ``value``, i.e. the JSON array
        without its salt) and return their digests, followed by ``decoys`` decoy digests."""
        pos = self._pos
        if pos + 22 * len(bodies) > len(self._salts):
            self._salts = b64url_encode(secrets.token_bytes(17 * max(16, len(bodies))))
            pos = 0
        salts = self._salts
        append_encoded = self.encoded.append
        table = _B64_TABLE
        b2a = _b2a
        sha256 = _sha256
        raw: list[bytes] = []
        append = raw.append
        for body in bodies:
            encoded = b2a(f'["{salts[pos:pos + 22]}",{body}]'.encode(), newline=False).translate(table).rstrip(b"=")
            pos += 22
            append_encoded(encoded)
            # Standard alphabet with its "=\n" tail: translated and split for all digests at once.
            append(b2a(sha256(encoded).digest()))
        self._pos = pos
        if decoys:
            # Indistinguishable from a real digest: 256 uniformly random bits, base64url.
            block = self._random_bytes(32 * decoys)
            for start in range(0, 32 * decoys, 32):
                append(b2a(block[start:start + 32]))
        if not raw:
            return []
        digests = b"".join(raw).translate(table).decode("ascii").split("=\n")
        digests.pop()  # the empty string after the last separator
        return digests

    def encode(self, value: Any, node: _Node | None, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise SDJWTError("too_deep", "the payload is nested too deeply")
        if isinstance(value, dict):
            return self._encode_object(value, node, depth)
        if isinstance(value, list):
            return self._encode_array(value, node, depth)
        return value

    def _encode_object(self, value: dict[str, Any], node: _Node | None, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        bodies: list[str] = []
        children = node.children if node is not None else None
        for name, member in value.items():
            if type(name) is not str:
                raise SDJWTError("bad_claim_name", "object member names must be strings")
            if name in _RESERVED_NAMES:
                raise SDJWTError("reserved_claim_name", "the payload may not contain '_sd' or '...' members")
            kind = type(member)
            child = children.get(name) if children else None
            if child is None:
                if kind is dict or kind is list:
                    _check_plain(member, depth + 1)
                out[name] = member
                continue
            if (kind is not str and kind is not int) or depth >= MAX_DEPTH:
                member = self.encode(member, child, depth + 1)
                kind = type(member)
            if not child.sd:
                out[name] = member
                continue
            # The hot loop of issuance (once per disclosable claim): kept inline on purpose.
            try:
                if kind is str:
                    value_json = _encode_str(member)
                elif kind is int:
                    value_json = int.__repr__(member)
                else:
                    value_json = _encode_json(member)
            except (TypeError, ValueError, RecursionError) as exc:
                raise SDJWTError("bad_claim_value", "a claim value is not JSON-serialisable") from exc
            bodies.append(child.member_json + value_json)
        if node is not None and node.has_members:
            digests = self.digests(bodies, self.decoy_count())
            if digests:
                digests.sort()
                out[_SD] = digests
        return out

    def _encode_array(self, value: list[Any], node: _Node | None, depth: int) -> list[Any]:
        out: list[Any] = []
        children = node.children if node is not None else None
        disclosed: list[int] = []
        bodies: list[str] = []
        for index, element in enumerate(value):
            child = None
            if children:
                every, this = children.get(None), children.get(index)
                child = _merge(every, this) if every is not None and this is not None else (every or this)
            if child is None:
                if depth >= MAX_DEPTH:
                    raise SDJWTError("too_deep", "the payload is nested too deeply")
                if type(element) is dict or type(element) is list:
                    _check_plain(element, depth + 1)
                out.append(element)
                continue
            encoded = self.encode(element, child, depth + 1)
            if child.sd:
                try:
                    bodies.append(_encode_json(encoded))
                except (TypeError, ValueError, RecursionError) as exc:
                    raise SDJWTError("bad_claim_value", "a claim value is not JSON-serialisable") from exc
                disclosed.append(len(out))
                out.append(None)
            else:
                out.append(encoded)
        if bodies:
            for position, digest in zip(disclosed, self.digests(bodies, 0), strict=True):
                out[position] = {_ELLIPSIS: digest}
        if node is not None and node.has_elements:
            # Decoys at random positions: trailing ones would stand out as decoys.
            for digest in self.digests([], self.decoy_count()):
                out.insert(secrets.randbelow(len(out) + 1), {_ELLIPSIS: digest})
        return out


_CONTAINERS = (dict, list)


def _check_plain(value: dict[str, Any] | list[Any], depth: int) -> None:
    """Validate a subtree with nothing disclosable in it (member names, nesting) without copying
    it: the issued payload shares it, since it is only serialised."""
    if depth > MAX_DEPTH:
        raise SDJWTError("too_deep", "the payload is nested too deeply")
    if type(value) is dict:
        for name, member in value.items():
            if type(name) is not str:
                raise SDJWTError("bad_claim_name", "object member names must be strings")
            if name in _RESERVED_NAMES:
                raise SDJWTError("reserved_claim_name", "the payload may not contain '_sd' or '...' members")
            if type(member) is dict or type(member) is list:
                _check_plain(member, depth + 1)
        return
    if value and depth >= MAX_DEPTH:
        raise SDJWTError("too_deep", "the payload is nested too deeply")
    for element in value:
        if type(element) is dict or type(element) is list:
            _check_plain(element, depth + 1)


_HEADERS: dict[tuple[Any, ...], bytes] = {}


def _header_cache_key(header: dict[str, Any], alg: str) -> tuple[Any, ...] | None:
    parts: list[Any] = [alg]
    for name, value in header.items():
        kind = type(value)
        if type(name) is not str:
            return None
        if kind is str:
            parts.append((name, value))
        elif kind is list and all(type(item) is str for item in value):
            parts.append((name, tuple(value)))
        else:
            return None
    return tuple(parts)


def _header_segment(header: dict[str, Any], alg: str) -> bytes:
    # An issuer sends the same header (alg, typ, kid, a long x5c) with every credential: its
    # encoding is cached by value. Only string and list-of-string values are cached, so that no
    # two different headers (1 and True compare equal) can share an entry.
    cache_key = _header_cache_key(header, alg)
    if cache_key is not None:
        cached = _HEADERS.get(cache_key)
        if cached is not None:
            return cached
    try:
        segment = _b64e(_ENCODER.encode({"alg": alg, **header}).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise SDJWTError("bad_header", "a header value is not JSON-serialisable") from exc
    if cache_key is not None:
        if len(_HEADERS) >= _TRIES_MAX:
            _HEADERS.clear()
        _HEADERS[cache_key] = segment
    return segment


def _sign_compact(header: dict[str, Any], payload: dict[str, Any], key: Key, tail: bytes = b"") -> str:
    # Same output as jose.sign_jws, with the shared encoder (the issuance hot path); ``tail`` (the
    # disclosures of an SD-JWT) is appended in the same copy.
    if header.get("alg", key.alg) != key.alg:
        raise JOSEError("alg_key_mismatch", "header alg does not match the signing key")
    header.pop("alg", None)
    try:
        body = _encode_json(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SDJWTError("bad_claim_value", "a claim value is not JSON-serialisable") from exc
    signing_input = _header_segment(header, key.alg) + b"." + _b64e(body.encode("utf-8"))
    return b"".join((signing_input, b".", _b64e(key.sign(signing_input)), tail)).decode("ascii")


def issue_sd_jwt(payload: dict[str, Any], *, key: Key, disclosable: Iterable[ClaimPath],
                 header: dict[str, Any] | None = None, decoys: int | None = None) -> str:
    """Issue an SD-JWT ``<issuer-jwt>~<d1>~...~<dn>~``.

    ``disclosable`` lists the claims that become selectively disclosable; a path and one of its
    prefixes may both be listed (recursive disclosure). Paths absent from ``payload`` are ignored,
    so one list can serve credentials whose optional claims vary. ``decoys`` is the number of decoy
    digests per ``_sd`` array or disclosable array (``None``: a random 1-4 each). ``alg`` comes from
    ``key``; ``header`` adds e.g. ``typ``, ``kid`` or ``x5c``.
    """
    if not isinstance(payload, dict):
        raise SDJWTError("bad_payload", "the payload must be a JSON object")
    if _SD_ALG in payload:
        raise SDJWTError("reserved_claim_name", "'_sd_alg' is set by the issuer library")
    if decoys is not None and (isinstance(decoys, bool) or not isinstance(decoys, int) or decoys < 0):
        raise SDJWTError("bad_decoys", "decoys must be a non-negative integer")
    trie = _trie_for(disclosable)
    issuer = _Issuer(decoys, trie.count)
    encoded = issuer.encode(payload, trie, 0)
    encoded[_SD_ALG] = SD_ALG
    # "~<d1>~...~<dn>~", or "~" alone when nothing is disclosable.
    return _sign_compact(dict(header or {}), encoded, key, b"~".join([b"", *issuer.encoded, b""]))


# -- parsing and processing (holder and verifier) ------------------------------------------------

class _Processor:
    """One walk over the payload replacing digests by disclosed values (RFC 9901 §7.1 step 3)."""

    __slots__ = ("by_digest", "seen", "paths", "disclosures")

    def __init__(self, by_digest: dict[str, int], disclosures: list[Disclosure]) -> None:
        self.by_digest = by_digest
        self.disclosures = disclosures
        self.seen: set[str] = set()
        self.paths: list[ClaimPath | None] = [None] * len(disclosures)

    def _value(self, value: Any, path: ClaimPath, depth: int) -> Any:
        # A disclosed value: any JSON value, walked when it is a container.
        kind = type(value)
        if kind is dict:
            return self._object(value, path, depth, None)
        if kind is list:
            return self._array(value, path, depth)
        return value

    def _object(self, value: dict[str, Any], path: ClaimPath, depth: int, skip: str | None) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise SDJWTError("too_deep", "the payload is nested too deeply")
        if _ELLIPSIS in value:
            raise SDJWTError("bad_array_digest", "'...' is only allowed as the sole member of an array element")
        out: dict[str, Any] = {}
        # Values come from JSON, so exact type tests suffice; scalars are copied without a call.
        for name, member in value.items():
            kind = type(member)
            if kind is dict:
                if name != _SD:
                    out[name] = self._object(member, (*path, name), depth + 1, None)
            elif kind is list:
                if name != _SD:
                    out[name] = self._array(member, (*path, name), depth + 1)
            else:
                out[name] = member
        if skip is not None:
            out.pop(skip, None)
        if _SD not in value:
            return out
        digests = value[_SD]
        if type(digests) is not list:
            raise SDJWTError("bad_sd_field", "'_sd' must be an array of strings")
        # The digests of one level as sets (C loops): every element a string (join refuses
        # anything else), none repeated within the level or seen at another level.
        try:
            "".join(digests)
        except TypeError as exc:
            raise SDJWTError("bad_sd_field", "'_sd' must be an array of strings") from exc
        level = set(digests)
        seen = self.seen
        if len(level) != len(digests) or not seen.isdisjoint(level):
            raise SDJWTError("duplicate_digest", "a digest appears more than once")
        seen.update(level)
        by_digest = self.by_digest
        hits = level.intersection(by_digest)
        if not hits:
            return out  # decoys and claims the holder did not disclose
        disclosures = self.disclosures
        # Disclosed members in the order of their digests, as a plain loop over the digests gives.
        for digest in [d for d in digests if d in hits] if len(hits) > 1 else hits:
            index = by_digest[digest]
            disclosure = disclosures[index]
            name = disclosure.name
            if name is None:
                raise SDJWTError("misplaced_array_disclosure", "an '_sd' digest refers to an array-element disclosure")
            if name in out:
                raise SDJWTError("claim_name_collision", "a disclosed claim name already exists at its level")
            child_path = (*path, name)
            self.paths[index] = child_path
            out[name] = self._value(disclosure.value, child_path, depth + 1)
        return out

    def _array(self, value: list[Any], path: ClaimPath, depth: int) -> list[Any]:
        if depth > MAX_DEPTH:
            raise SDJWTError("too_deep", "the payload is nested too deeply")
        out: list[Any] = []
        seen = self.seen
        for element in value:
            kind = type(element)
            if kind is dict:
                if _ELLIPSIS in element:
                    digest = element[_ELLIPSIS]
                    if len(element) != 1 or type(digest) is not str:
                        raise SDJWTError("bad_array_digest", "an array digest is an object with only a string '...'")
                    if digest in seen:
                        raise SDJWTError("duplicate_digest", "a digest appears more than once")
                    seen.add(digest)
                    index = self.by_digest.get(digest)
                    if index is None:
                        continue
                    disclosure = self.disclosures[index]
                    if disclosure.name is not None:
                        raise SDJWTError("misplaced_array_disclosure",
                                         "an array digest refers to an object-member disclosure")
                    child_path = (*path, len(out))
                    self.paths[index] = child_path
                    out.append(self._value(disclosure.value, child_path, depth + 1))
                else:
                    out.append(self._object(element, (*path, len(out)), depth + 1, None))
            elif kind is list:
                out.append(self._array(element, (*path, len(out)), depth + 1))
            else:
                out.append(element)
        return out


def _refers_to_disclosures(raw: Any) -> bool:
    """Whether a payload value holds digests of disclosures (``_sd``, or array elements ``{"...": d}``)."""
    if type(raw) is dict:
        return _SD in raw or _ELLIPSIS in raw or any(_refers_to_disclosures(v) for v in raw.values())
    if type(raw) is list:
        return any(_refers_to_disclosures(v) for v in raw)
    return False


def _path_matches(pattern: ClaimPath, path: ClaimPath) -> bool:
    """Whether the concrete ``path`` is ``pattern`` with ``None`` matching any array index."""
    if len(pattern) != len(path):
        return False
    for want, have in zip(pattern, path, strict=True):
        if want is None:
            if not isinstance(have, int):
                return False
        elif want != have or isinstance(want, bool) != isinstance(have, bool):
            return False
    return True


class SDJWT:
    """A parsed SD-JWT (or SD-JWT+KB) with its disclosures processed, **not verified**.

    Use :func:`verify_sd_jwt` to trust it. Attributes: ``issuer_jwt`` (compact JWS string),
    ``header``, ``payload`` (raw, with ``_sd``), ``disclosures``, ``kb_jwt`` (string or ``None``),
    ``claims`` (processed with every disclosure present), ``format`` and ``vct``.
    """

    __slots__ = ("token", "issuer_jwt", "jws", "header", "payload", "disclosures", "kb_jwt", "kb_jws",
                 "kb_payload", "claims", "disclosure_paths", "_prefix")

    token: str
    issuer_jwt: str
    jws: JWS
    header: dict[str, Any]
    payload: dict[str, Any]
    disclosures: list[Disclosure]
    kb_jwt: str | None
    kb_jws: JWS | None
    kb_payload: dict[str, Any] | None
    claims: dict[str, Any]
    #: For each disclosure (same order as ``disclosures``), the path it reveals in ``claims``.
    disclosure_paths: list[ClaimPath]

    @classmethod
    def parse(cls, token: Any) -> SDJWT:
        """Split and decode ``token`` and process its disclosures (RFC 9901 §4, §7.1 steps 2-5)."""
        if not isinstance(token, str):
            raise SDJWTError("malformed", "an SD-JWT must be a string")
        last = token.rfind("~")
        if last < 0:
            raise SDJWTError("malformed", "an SD-JWT contains at least one '~'")
        parts = token[:last].split("~")
        self = cls.__new__(cls)
        self.token = token
        self._prefix = token[:last + 1]
        self.issuer_jwt = parts[0]
        self.jws, payload = _parse_compact(parts[0], "malformed", "issuer-signed JWT")
        self.header = self.jws.header
        self.payload = payload
        kb = token[last + 1:]
        self.kb_jwt = kb or None
        self.kb_jws, self.kb_payload = _parse_compact(kb, "kb_malformed", "Key Binding JWT") if kb else (None, None)

        sd_alg = payload.get(_SD_ALG, SD_ALG)
        if sd_alg != SD_ALG:
            raise SDJWTError("unsupported_sd_alg", "only '_sd_alg' sha-256 is supported")

        disclosures: list[Disclosure] = []
        by_digest: dict[str, int] = {}
        for encoded in parts[1:]:
            if not encoded:
                raise SDJWTError("malformed", "an SD-JWT has an empty disclosure")
            disclosure = Disclosure.decode(encoded)
            if disclosure.digest in by_digest:
                raise SDJWTError("duplicate_disclosure", "the same disclosure is included twice")
            by_digest[disclosure.digest] = len(disclosures)
            disclosures.append(disclosure)
        self.disclosures = disclosures

        processor = _Processor(by_digest, disclosures)
        try:
            # '_sd_alg' is left out at the top level only, before the disclosures are placed.
            self.claims = processor._object(payload, (), 0, _SD_ALG)
        except RecursionError as exc:  # defence in depth: MAX_DEPTH should stop it first
            raise SDJWTError("too_deep", "the payload is nested too deeply") from exc
        paths = processor.paths
        if None in paths:
            raise SDJWTError("unreferenced_disclosure", "a disclosure is not referenced by any digest")
        self.disclosure_paths = paths  # type: ignore[assignment]
        return self

    # -- views ---------------------------------------------------------------------------------
    @property
    def format(self) -> str | None:
        """``"dc+sd-jwt"`` when the header ``typ`` says so, else the ``typ`` (or ``None``)."""
        typ = self.header.get("typ")
        return typ if isinstance(typ, str) else None

    @property
    def vct(self) -> str | None:
        vct = self.payload.get("vct")
        return vct if isinstance(vct, str) else None

    @property
    def presentation_prefix(self) -> str:
        """``<issuer-jwt>~<d1>~...~<dn>~`` as received: the input of ``sd_hash``."""
        return self._prefix

    def __repr__(self) -> str:  # never shows claim values
        return f"<SDJWT typ={self.format!r} disclosures={len(self.disclosures)} kb={self.kb_jwt is not None}>"

    # -- selection -----------------------------------------------------------------------------
    def disclosures_for(self, paths: Iterable[ClaimPath]) -> list[Disclosure]:
        """Every disclosure needed to reveal ``paths``: those of the claims themselves, of
        everything nested below them, and of the disclosable objects and array elements that
        enclose them. ``None`` in a path matches every array index. Token order is kept."""
        patterns = [tuple(p) for p in paths]
        chosen: list[Disclosure] = []
        for disclosure, path in zip(self.disclosures, self.disclosure_paths, strict=True):
            for pattern in patterns:
                # Enclosing (disclosure path is a prefix of the pattern) or enclosed (the pattern
                # is a prefix of the disclosure path): both are needed to show the claim.
                n = min(len(pattern), len(path))
                if _path_matches(pattern[:n], path[:n]):
                    chosen.append(disclosure)
                    break
        return chosen

    def revealed_claims(self, disclosures: Iterable[Disclosure], paths: Iterable[ClaimPath] = (), *,
                        plain_except: Collection[str] | None = None) -> list[tuple[ClaimPath, Any]]:
        """What a presentation of ``disclosures`` shows the verifier, as ``(path, value)`` pairs.

        A disclosure goes whole: its plain members and elements (the ``sd: never`` parts of a
        disclosable object), and those of ``disclosures`` nested in it, leave with it, whatever was
        asked. ``paths`` are the claims asked for (``None`` matches any index). The pairs are each
        claim at one of ``paths`` that is shown (in the order of ``paths``), then every other part of
        the disclosed values as the largest subtrees holding none of ``paths`` (in payload order).
        Values are as the verifier processes them: undisclosed members and decoys left out. Array
        indices are those of :attr:`claims`. Plain claims outside every disclosure (``iss``, ``cnf``...)
        travel in every presentation: they are listed when asked for, and with ``plain_except`` all of
        them but the top-level names it holds (the technical ones, for a holder's consent screen, which
        must show every personal claim that leaves). ``disclosures`` are some of
        this token's with the disclosures enclosing them (as :meth:`disclosures_for` gives them); one
        whose enclosing disclosure is missing is not shown, as a verifier cannot place it.
        """
        chosen = {d.digest: d for d in disclosures}
        held = {d.digest for d in self.disclosures}
        if not held.issuperset(chosen):
            raise SDJWTError("unknown_disclosure", "a disclosure is not one of this SD-JWT's")
        patterns = [tuple(p) for p in paths]
        chosen_list = list(chosen.values())
        by_digest = {d.digest: i for i, d in enumerate(chosen_list)}
        found: list[tuple[int, ClaimPath, Any]] = []

        def shown(raw: Any, path: ClaimPath) -> Any:
            # The raw value as a verifier processes it when only ``chosen`` are presented.
            return _Processor(by_digest, chosen_list)._value(raw, path, len(path))

        def visit(raw: Any, path: ClaimPath, inside: bool) -> None:
            asked = next((i for i, p in enumerate(patterns) if _path_matches(p, path)), None) if path else None
            if asked is not None:
                found.append((asked, path, shown(raw, path)))
                return
            container = type(raw) is dict or type(raw) is list
            deeper = container and any(len(p) > len(path) and _path_matches(p[:len(path)], path) for p in patterns)
            if inside and not deeper:
                found.append((len(patterns), path, shown(raw, path)))
                return
            if (not inside and path and plain_except is not None and path[0] not in plain_except and not deeper
                    and not _refers_to_disclosures(raw)):
                found.append((len(patterns), path, raw))  # plain through and through: it leaves as it is
                return
            if type(raw) is dict:
                for name, member in raw.items():
                    if name != _SD and (path or name != _SD_ALG):
                        visit(member, (*path, name), inside)
                digests = raw.get(_SD)
                for digest in digests if type(digests) is list else ():
                    disclosure = chosen.get(digest)
                    if disclosure is not None and disclosure.name is not None:
                        visit(disclosure.value, (*path, disclosure.name), True)
            elif type(raw) is list:
                index = 0  # as in ``claims``: plain elements and the held disclosures count, decoys not
                for element in raw:
                    if type(element) is dict and _ELLIPSIS in element:
                        digest = element[_ELLIPSIS]
                        if digest not in held:
                            continue
                        disclosure = chosen.get(digest)
                        if disclosure is not None and disclosure.name is None:
                            visit(disclosure.value, (*path, index), True)
                    else:
                        visit(element, (*path, index), inside)
                    index += 1

        visit(self.payload, (), False)
        found.sort(key=lambda item: item[0])  # stable: payload order within each rank
        return [(path, value) for _, path, value in found]

    def present(self, paths: Iterable[ClaimPath], *, holder_key: Key | None = None, aud: str | None = None,
                nonce: str | None = None, iat: int | None = None) -> str:
        """A presentation revealing ``paths`` (see :meth:`disclosures_for`), with a KB-JWT
        (``typ: kb+jwt``; ``iat``, ``aud``, ``nonce``, ``sd_hash``) when ``holder_key`` is given."""
        chosen = self.disclosures_for(paths)
        presented = self.issuer_jwt + "~" + "".join(d.encoded + "~" for d in chosen)
        if holder_key is None:
            if aud is not None or nonce is not None:
                raise SDJWTError("kb_key_missing", "aud and nonce need a holder key to sign a KB-JWT")
            return presented
        if not isinstance(aud, str) or not isinstance(nonce, str):
            raise SDJWTError("kb_params_missing", "a KB-JWT needs a string aud and nonce")
        kb_payload = {
            "iat": int(time.time()) if iat is None else iat,
            "aud": aud,
            "nonce": nonce,
            "sd_hash": sd_hash(presented),
        }
        return presented + _sign_compact({"typ": KB_JWT_TYP}, kb_payload, holder_key)


# -- verifying -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VerifiedSDJWT:
    """The outcome of :func:`verify_sd_jwt`: what the verifier may rely on."""

    header: dict[str, Any]
    #: Processed claims: ``_sd``, ``_sd_alg`` and array digests removed, only disclosed values.
    claims: dict[str, Any]
    #: The concrete path of every disclosure that was presented.
    disclosed_paths: list[ClaimPath]
    kb_header: dict[str, Any] | None = None
    kb_payload: dict[str, Any] | None = None
    #: The holder's key from ``cnf.jwk`` (``None`` when the credential has no ``cnf``).
    holder_key: Key | None = None
    #: The raw issuer-signed payload (digests included), for callers needing e.g. ``cnf`` as sent.
    payload: dict[str, Any] = field(default_factory=dict)
    issuer_key: Key | None = None


@functools.lru_cache(maxsize=512)
def _p256_point(x: str, y: str) -> ec.EllipticCurvePublicKey:
    """The P-256 public key at the base64url coordinates ``x``, ``y`` (43 characters each).

    Cached because a wallet presents the same credential, so the same ``cnf`` key, again and again,
    and a new key object costs twice: the import with its on-curve check (~10 µs) and OpenSSL's
    first verification with it (~15 µs more than with a key it has used). The cache is correct by
    construction: the entry is whatever these exact strings decode to, and only keys that passed
    the point check are stored (a failure raises and is not cached). Bounded (least recently used
    entries go first), so a stream of new keys only costs the import.
    """
    point = b"\x04" + b64url_decode(x) + b64url_decode(y)
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def import_holder_jwk(jwk: Any) -> Key:
    """Import a holder public JWK (``cnf.jwk``), with a fast path for P-256.

    The fast path decodes the point once through ``from_encoded_point`` (which checks that it is
    on the curve), about half the cost of the generic JWK import on the verification hot path, and
    reuses the key object of coordinates seen recently (:func:`_p256_point`). A JWK carrying private
    key members (``d``, ``p``, ``q``, ``dp``, ``dq``, ``qi``, ``oth``, ``k``) is refused
    (``jose.bad_jwk``): a credential whose ``cnf`` holds the holder's private key is no proof of
    possession by anyone.
    """
    if isinstance(jwk, dict) and not _PRIVATE_JWK_MEMBERS.isdisjoint(jwk):
        raise JOSEError("bad_jwk", "a holder JWK must not carry private key members")
    if isinstance(jwk, dict) and jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" \
            and jwk.get("alg") in (None, "ES256"):
        x, y = jwk.get("x"), jwk.get("y")
        # Exact str: the cache hashes and compares them, which a str subclass could redefine.
        if type(x) is str and type(y) is str and len(x) == 43 and len(y) == 43:
            try:
                public = _p256_point(x, y)
            except (EncodingError, ValueError) as exc:
                raise JOSEError("bad_jwk", "the JWK does not describe a valid P-256 key") from exc
            kid = jwk.get("kid")
            return Key._p256_public(public, kid if isinstance(kid, str) else None)
    return Key.from_jwk(jwk).public()


def _holder_key(payload: dict[str, Any]) -> Key | None:
    cnf = payload.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, dict) or "jwk" not in cnf:
        raise SDJWTError("bad_cnf", "'cnf' must be an object with a 'jwk'")
    try:
        return import_holder_jwk(cnf["jwk"])
    except JOSEError as exc:
        raise SDJWTError("bad_cnf", f"'cnf.jwk' is not a usable public key ({exc.code})") from exc


def _kb_time_error(code: str, detail: str) -> SDJWTError:
    """``check_time_claims`` codes for the KB-JWT: ``kb_expired``, ``kb_not_yet_valid``, ``kb_bad_exp``, ``kb_bad_nbf``."""
    return SDJWTError(f"kb_{code}", f"KB-JWT: {detail}")


def _verify_kb(sd: SDJWT, *, algorithms: Sequence[str], expected_aud: str | None, expected_nonce: str | None,
               kb_max_age: int, now: float, leeway: int) -> tuple[dict[str, Any], dict[str, Any], Key]:
    kb = sd.kb_jws
    assert kb is not None  # callers check; narrows the type
    if expected_aud is None or expected_nonce is None:
        raise SDJWTError("kb_expectation_missing", "verifying a KB-JWT needs the expected aud and nonce")
    if kb.header.get("typ") != KB_JWT_TYP:
        raise SDJWTError("kb_bad_typ", "the KB-JWT typ must be kb+jwt")
    if "cnf" not in sd.payload:
        raise SDJWTError("kb_no_cnf", "the SD-JWT has no 'cnf' to verify a KB-JWT with")
    holder_key = _holder_key(sd.payload)
    assert holder_key is not None  # 'cnf' is present, so a key or an error
    alg = kb.header["alg"]
    check_algorithm(alg, algorithms)  # type: ignore[arg-type]
    if not holder_key._alg_fits(alg) or not holder_key.verify(kb.signature, kb.signing_input, alg):
        raise SDJWTError("kb_bad_signature", "the KB-JWT signature does not verify with the cnf key")
    kb_payload = sd.kb_payload
    assert kb_payload is not None
    iat = kb_payload.get("iat")
    if not is_numeric_date(iat):
        raise SDJWTError("kb_bad_iat", "the KB-JWT needs a numeric 'iat'")
    if iat > now + leeway or iat < now - kb_max_age - leeway:
        raise SDJWTError("kb_stale", "the KB-JWT 'iat' is outside the accepted window")
    # The KB-JWT is a JWT (RFC 9901 §7.3): an 'exp' or 'nbf' it carries binds too. 'iat' was checked
    # above with its own codes, so only those two go through the common check.
    if "exp" in kb_payload or "nbf" in kb_payload:
        check_time_claims({name: kb_payload[name] for name in ("exp", "nbf") if name in kb_payload},
                          now=now, leeway=leeway, error=_kb_time_error)
    if kb_payload.get("aud") != expected_aud:
        raise SDJWTError("kb_wrong_aud", "the KB-JWT 'aud' is not this verifier")
    if kb_payload.get("nonce") != expected_nonce:
        raise SDJWTError("kb_wrong_nonce", "the KB-JWT 'nonce' is not the expected one")
    claimed = kb_payload.get("sd_hash")
    if not isinstance(claimed, str) or not secrets.compare_digest(claimed, sd_hash(sd.presentation_prefix)):
        raise SDJWTError("kb_bad_sd_hash", "the KB-JWT 'sd_hash' does not match the presentation")
    return kb.header, kb_payload, holder_key


def verify_sd_jwt(token: str, *, issuer_key: Key | Callable[[dict[str, Any], dict[str, Any]], Key],
                  algorithms: Sequence[str] = DEFAULT_ALGORITHMS, require_kb: bool = False,
                  expected_aud: str | None = None, expected_nonce: str | None = None, kb_max_age: int = 300,
                  now: float | None = None, leeway: int = 60, expected_typ: str | None = None) -> VerifiedSDJWT:
    """Verify an SD-JWT or SD-JWT+KB (RFC 9901 §7.1 and §7.3).

    ``issuer_key`` is the key, or a callable given (issuer JWS header, unverified payload) that
    returns it (how ``x5c`` and issuer metadata plug in); it runs only after the ``alg`` passed the
    allow-list. A KB-JWT is verified when present (with ``expected_aud`` and ``expected_nonce``);
    ``require_kb`` makes its absence an error. A KB-JWT that the caller gave no ``aud``/``nonce`` to
    check against is refused (``sd_jwt.kb_unexpected``) rather than accepted unchecked.
    """
    sd = SDJWT.parse(token)
    now = time.time() if now is None else now
    header = sd.header
    if expected_typ is not None and header.get("typ") != expected_typ:
        raise SDJWTError("bad_typ", "the issuer-signed JWT has an unexpected 'typ'")
    algorithms = tuple(algorithms)
    alg = header["alg"]
    check_algorithm(alg, algorithms)
    key = issuer_key if isinstance(issuer_key, Key) else issuer_key(header, sd.payload)
    if not isinstance(key, Key):
        raise SDJWTError("no_issuer_key", "no issuer key was found")
    if not key._alg_fits(alg):
        raise JOSEError("alg_key_mismatch", f"algorithm '{alg}' does not fit the issuer key")
    if not key.verify(sd.jws.signature, sd.jws.signing_input, alg):
        raise JOSEError("bad_signature", "the issuer signature does not verify")
    check_time_claims(sd.payload, now=now, leeway=leeway, error=SDJWTError)

    kb_header: dict[str, Any] | None = None
    kb_payload: dict[str, Any] | None = None
    if sd.kb_jws is None:
        if require_kb:
            raise SDJWTError("kb_missing", "a Key Binding JWT is required")
        holder_key = _holder_key(sd.payload)
    else:
        if not require_kb and expected_aud is None and expected_nonce is None:
            raise SDJWTError("kb_unexpected", "a KB-JWT was presented but no aud/nonce was given to check it")
        kb_header, kb_payload, holder_key = _verify_kb(
            sd, algorithms=algorithms, expected_aud=expected_aud, expected_nonce=expected_nonce,
            kb_max_age=kb_max_age, now=now, leeway=leeway)
    return VerifiedSDJWT(header=header, claims=sd.claims, disclosed_paths=list(sd.disclosure_paths),
                         kb_header=kb_header, kb_payload=kb_payload, holder_key=holder_key,
                         payload=sd.payload, issuer_key=key)
