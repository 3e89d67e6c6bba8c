"""SD-JWT-based Verifiable Credentials (draft-ietf-oauth-sd-jwt-vc): issue, verify, find the issuer key.

An SD-JWT VC is an SD-JWT (:mod:`ssi.sd_jwt`) whose header ``typ`` is ``dc+sd-jwt`` and whose payload
carries ``vct`` (the credential type), ``iss``, optionally ``iat``/``nbf``/``exp``, ``cnf`` (the holder
key) and ``status`` (a Token Status List reference). ``iss``, ``nbf``, ``exp``, ``cnf``, ``vct``,
``vct#integrity`` and ``status`` are never selectively disclosable.

The issuer key is found by a resolver (sans-IO where IO is needed; the HTTP fetch is injected):

* :class:`X5CKeyResolver`: the ``x5c`` header chain must lead to a configured trust anchor and the
  leaf certificate must name ``iss`` in its subjectAltName (HAIP);
* :class:`IssuerMetadataKeyResolver`: JWT VC Issuer Metadata at ``/.well-known/jwt-vc-issuer``
  (``issuer`` equal to ``iss``; keys in ``jwks`` or at ``jwks_uri``), cached per issuer;
* :class:`PinnedKeyResolver`: keys configured per issuer;
* :class:`ChainedKeyResolver`: ``x5c`` when the header has it, metadata otherwise.

Checking the status list itself is the caller's job (:mod:`ssi.status_list`); this module only
returns the parsed reference.
"""

from __future__ import annotations

import binascii
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509 as cx509
from cryptography.hazmat.primitives.serialization import Encoding

from . import x509 as ssi_x509
from .errors import SDJWTVCError, SSIError, StatusListError
from .jose import DEFAULT_ALGORITHMS, Key, check_time_claims
from .sd_jwt import ClaimPath, _trie_for, issue_sd_jwt, verify_sd_jwt
from .status_list import StatusReference, parse_status_claim
from .urls import UnsafeURL, is_url_text, split_secure_url

__all__ = [
    "SD_JWT_VC_TYP",
    "LEGACY_SD_JWT_VC_TYP",
    "NON_DISCLOSABLE_CLAIMS",
    "ResolvedIssuerKey",
    "IssuerKeyResolver",
    "X5CKeyResolver",
    "X5CValidationCache",
    "DEFAULT_X5C_CACHE",
    "IssuerMetadataKeyResolver",
    "PinnedKeyResolver",
    "ChainedKeyResolver",
    "VerifiedCredential",
    "issue_sd_jwt_vc",
    "verify_sd_jwt_vc",
    "jwt_vc_issuer_metadata_url",
]

SD_JWT_VC_TYP = "dc+sd-jwt"
#: The ``typ`` of earlier drafts; accepted on verification only with ``accept_legacy_typ=True``.
LEGACY_SD_JWT_VC_TYP = "vc+sd-jwt"
#: Claims the draft says MUST NOT be selectively disclosed.
NON_DISCLOSABLE_CLAIMS = frozenset({"iss", "nbf", "exp", "cnf", "vct", "vct#integrity", "status"})
# Set by issue_sd_jwt_vc from its own arguments, so refused inside ``claims``.
_ISSUER_SET_CLAIMS = NON_DISCLOSABLE_CLAIMS | {"iat", "_sd", "_sd_alg"}
WELL_KNOWN_JWT_VC_ISSUER = "/.well-known/jwt-vc-issuer"


# -- issuing -------------------------------------------------------------------------------------

def issue_sd_jwt_vc(claims: dict[str, Any], *, vct: str, issuer: str, key: Key, holder_jwk: dict[str, Any] | None,
                    disclosable: Iterable[ClaimPath], x5c: list[str] | None = None, kid: str | None = None,
                    status: dict[str, Any] | None = None, iat: int | None = None, nbf: int | None = None,
                    exp: int | None = None, vct_integrity: str | None = None, decoys: int | None = None) -> str:
    """Issue an SD-JWT VC (header ``typ: dc+sd-jwt``, ``alg`` from ``key``).

    ``claims`` are the credential's own claims; ``iss``, ``vct``, ``iat`` (default: now), ``nbf``,
    ``exp``, ``cnf`` (from ``holder_jwk``), ``status`` and ``vct#integrity`` come from the keyword
    arguments and are always plain. A disclosable path starting with a non-disclosable claim is
    refused (``sd_jwt_vc.not_disclosable``).
    """
    if not isinstance(vct, str) or not vct:
        raise SDJWTVCError("bad_vct", "vct must be a non-empty string")
    if not isinstance(issuer, str) or not issuer:
        raise SDJWTVCError("bad_iss", "iss must be a non-empty string")
    if not isinstance(claims, dict):
        raise SDJWTVCError("bad_claims", "claims must be a JSON object")
    reserved = _ISSUER_SET_CLAIMS.intersection(claims)
    if reserved:
        raise SDJWTVCError("reserved_claim", f"claims may not set {sorted(reserved)}; use the keyword arguments")
    paths = disclosable if isinstance(disclosable, list | tuple) else list(disclosable)
    # The first components of all paths are the root's children in the (cached) path trie.
    forbidden = NON_DISCLOSABLE_CLAIMS.intersection(_trie_for(paths).children)
    if forbidden:
        raise SDJWTVCError("not_disclosable", f"'{min(forbidden)}' must not be selectively disclosable")
    payload: dict[str, Any] = {"iss": issuer, "vct": vct, "iat": int(time.time()) if iat is None else iat}
    if nbf is not None:
        payload["nbf"] = nbf
    if exp is not None:
        payload["exp"] = exp
    if vct_integrity is not None:
        payload["vct#integrity"] = vct_integrity
    if holder_jwk is not None:
        if not isinstance(holder_jwk, dict) or "d" in holder_jwk:
            raise SDJWTVCError("bad_holder_jwk", "holder_jwk must be a public JWK")
        payload["cnf"] = {"jwk": holder_jwk}
    if status is not None:
        payload["status"] = status
    payload.update(claims)
    header: dict[str, Any] = {"typ": SD_JWT_VC_TYP}
    if kid is not None:
        header["kid"] = kid
    if x5c is not None:
        header["x5c"] = list(x5c)
    return issue_sd_jwt(payload, key=key, disclosable=paths, header=header, decoys=decoys)


# -- issuer key resolution -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ResolvedIssuerKey:
    """The key that verifies an issuer's signature and where it came from."""

    key: Key
    #: ``"x5c"``, ``"metadata"`` or ``"pinned"``.
    source: str
    #: The leaf certificate when the key came from ``x5c``.
    certificate: cx509.Certificate | None = None


class IssuerKeyResolver(Protocol):
    """Finds the issuer key for a credential from its (unverified) header and payload."""

    def resolve(self, header: dict[str, Any], payload: dict[str, Any], *, now: float) -> ResolvedIssuerKey:
        """Return the key or raise an :class:`~ssi.errors.SSIError`."""
        ...


class X5CValidationCache:
    """A bounded cache of successful ``x5c`` chain validations, shared by resolvers.

    Validating a chain costs about a millisecond, more than the rest of a presentation check; a
    verifier sees the same few issuer chains over and over. Entries are keyed by the exact ``x5c``
    strings and the trust anchors, so a different chain or anchor set is validated afresh; a hit
    still re-checks the validity window of every certificate of the chain (kept as the latest
    ``notBefore`` and the earliest ``notAfter``). Only successes are cached. Safe to lose.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[Any, ...], tuple[cx509.Certificate, Key, datetime, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry (for instance after the trust configuration changed)."""
        with self._lock:
            self._entries.clear()

    def validate(self, x5c: Any, trust_anchors: Sequence[cx509.Certificate], anchors_id: tuple[bytes, ...],
                 now: datetime) -> tuple[cx509.Certificate, Key]:
        """The validated leaf certificate and its key; raises what :func:`ssi.x509.verify_x5c` raises."""
        cache_key: tuple[Any, ...] | None = None
        if isinstance(x5c, list) and x5c and all(isinstance(item, str) for item in x5c):
            cache_key = (tuple(x5c), anchors_id)
            with self._lock:
                entry = self._entries.get(cache_key)
                if entry is not None:
                    self._entries.move_to_end(cache_key)
            if entry is not None and entry[2] <= now <= entry[3]:
                return entry[0], entry[1]
        leaf = ssi_x509.verify_x5c(x5c, trust_anchors, now=now)
        key = ssi_x509.certificate_key(leaf)
        if cache_key is not None:
            certs = [ssi_x509.load_certificate(binascii.a2b_base64(item.encode("ascii"))) for item in x5c]
            not_before = max(c.not_valid_before_utc for c in certs)
            not_after = min(c.not_valid_after_utc for c in certs)
            with self._lock:
                self._entries[cache_key] = (leaf, key, not_before, not_after)
                self._entries.move_to_end(cache_key)
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
        return leaf, key


#: The cache :class:`X5CKeyResolver` uses unless given another (``None`` there turns caching off).
DEFAULT_X5C_CACHE = X5CValidationCache()
_DEFAULT = object()


class X5CKeyResolver:
    """Issuer key from the ``x5c`` header: chain to a trust anchor, SAN matching ``iss``.

    Successful chain validations are remembered in ``cache`` (:data:`DEFAULT_X5C_CACHE` unless
    another cache, or ``None`` for none, is given); see :class:`X5CValidationCache`.
    """

    def __init__(self, trust_anchors: Sequence[cx509.Certificate], *, cache: Any = _DEFAULT) -> None:
        self.trust_anchors = list(trust_anchors)
        self.cache: X5CValidationCache | None = DEFAULT_X5C_CACHE if cache is _DEFAULT else cache
        self._anchors_id = tuple(hashlib.sha256(a.public_bytes(Encoding.DER)).digest() for a in self.trust_anchors)

    def resolve(self, header: dict[str, Any], payload: dict[str, Any], *, now: float) -> ResolvedIssuerKey:
        x5c = header.get("x5c")
        if x5c is None:
            raise SDJWTVCError("no_x5c", "the credential header has no x5c")
        moment = datetime.fromtimestamp(now, UTC)
        if self.cache is None:
            leaf = ssi_x509.verify_x5c(x5c, self.trust_anchors, now=moment)
            key = ssi_x509.certificate_key(leaf)
        else:
            leaf, key = self.cache.validate(x5c, self.trust_anchors, self._anchors_id, moment)
        if not ssi_x509.san_matches(leaf, payload.get("iss")):  # type: ignore[arg-type]
            raise SDJWTVCError("iss_san_mismatch", "the x5c leaf certificate does not name the issuer")
        return ResolvedIssuerKey(key, "x5c", leaf)


def _check_https(url: str, what: str, allow_http_loopback: bool) -> None:
    try:
        split_secure_url(url, allow_http_loopback=allow_http_loopback)
    except UnsafeURL as exc:
        prefix = "insecure" if exc.reason == "insecure" else "bad"
        raise SDJWTVCError(f"{prefix}_{what}", f"the {what} {exc}") from exc


def jwt_vc_issuer_metadata_url(iss: str) -> str:
    """The JWT VC Issuer Metadata URL of ``iss``: ``/.well-known/jwt-vc-issuer`` inserted between
    the host and the path, a terminating ``/`` of the path removed (``https://ex.com/tenant/1`` ->
    ``https://ex.com/.well-known/jwt-vc-issuer/tenant/1``)."""
    if not isinstance(iss, str):
        raise SDJWTVCError("bad_iss", "iss must be a string")
    if not is_url_text(iss):  # urlsplit would drop a TAB/CR/LF that the caller's string keeps
        raise SDJWTVCError("bad_iss", "iss must be printable ASCII without spaces")
    try:
        parts = urlsplit(iss)
    except ValueError as exc:
        raise SDJWTVCError("bad_iss", "iss is not a URL") from exc
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise SDJWTVCError("bad_iss", "iss must be an http(s) URL without query or fragment")
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN_JWT_VC_ISSUER + path, "", ""))


def _select_key(keys: Sequence[Key], header: dict[str, Any]) -> Key:
    kid = header.get("kid")
    alg = header.get("alg")
    if kid is not None:
        matching = [k for k in keys if k.kid == kid]
        if not matching:
            raise SDJWTVCError("unknown_kid", "no issuer key has the header's kid")
    else:
        matching = [k for k in keys if k.alg == alg] or list(keys)
    if len(matching) != 1:
        raise SDJWTVCError("ambiguous_key", "several issuer keys fit; the header needs a kid")
    return matching[0]


class IssuerMetadataKeyResolver:
    """Issuer key from JWT VC Issuer Metadata (``/.well-known/jwt-vc-issuer``).

    ``fetch_json(url)`` performs the GET and returns the parsed JSON (the caller owns HTTP:
    timeouts, size limits). Because ``iss`` comes from an unverified token, give
    ``allowed_issuers`` to avoid fetching attacker-chosen URLs. Keys are cached per issuer for
    ``ttl`` seconds; an unknown ``kid`` refetches at most every ``min_refresh`` seconds (rotation).
    """

    def __init__(self, fetch_json: Callable[[str], Any], *, allowed_issuers: Collection[str] | None = None,
                 ttl: float = 300.0, min_refresh: float = 30.0, allow_http_loopback: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch_json = fetch_json
        self.allowed_issuers = None if allowed_issuers is None else frozenset(allowed_issuers)
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.allow_http_loopback = allow_http_loopback
        self.clock = clock
        self._cache: dict[str, tuple[float, list[Key]]] = {}
        self._lock = threading.Lock()

    def _fetch(self, url: str, what: str) -> Any:
        try:
            return self.fetch_json(url)
        except SSIError:
            raise
        except Exception as exc:  # noqa: BLE001 - the fetcher is injected: any failure is "unavailable"
            raise SDJWTVCError("metadata_unavailable", f"the issuer {what} could not be fetched") from exc

    def _load_keys(self, iss: str) -> list[Key]:
        metadata = self._fetch(jwt_vc_issuer_metadata_url(iss), "metadata")
        if not isinstance(metadata, dict):
            raise SDJWTVCError("bad_metadata", "the issuer metadata is not a JSON object")
        if metadata.get("issuer") != iss:
            raise SDJWTVCError("metadata_issuer_mismatch", "the metadata 'issuer' is not the credential's iss")
        has_jwks, has_uri = "jwks" in metadata, "jwks_uri" in metadata
        if has_jwks == has_uri:
            raise SDJWTVCError("bad_metadata", "the issuer metadata needs exactly one of jwks and jwks_uri")
        if has_uri:
            uri = metadata["jwks_uri"]
            if not isinstance(uri, str):
                raise SDJWTVCError("bad_metadata", "jwks_uri must be a string")
            _check_https(uri, "jwks_uri", self.allow_http_loopback)
            jwks = self._fetch(uri, "JWKS")
        else:
            jwks = metadata["jwks"]
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise SDJWTVCError("bad_metadata", "the JWKS is not an object with a 'keys' array")
        keys: list[Key] = []
        for jwk in jwks["keys"]:
            if isinstance(jwk, dict) and jwk.get("use", "sig") != "sig":
                continue
            try:
                keys.append(Key.from_jwk(jwk).public())
            except SSIError:
                continue  # a key type we cannot use must not hide the usable ones
        if not keys:
            raise SDJWTVCError("no_usable_key", "the issuer publishes no usable signing key")
        return keys

    def resolve(self, header: dict[str, Any], payload: dict[str, Any], *, now: float) -> ResolvedIssuerKey:
        iss = payload.get("iss")
        if not isinstance(iss, str):
            raise SDJWTVCError("missing_iss", "the credential has no iss")
        if self.allowed_issuers is not None and iss not in self.allowed_issuers:
            raise SDJWTVCError("untrusted_issuer", "the issuer is not trusted")
        _check_https(iss, "iss", self.allow_http_loopback)
        tick = self.clock()
        with self._lock:
            cached = self._cache.get(iss)
        keys: list[Key] | None = None
        if cached is not None and tick - cached[0] < self.ttl:
            keys = cached[1]
            kid = header.get("kid")
            if kid is not None and all(k.kid != kid for k in keys) and tick - cached[0] >= self.min_refresh:
                keys = None
        if keys is None:
            keys = self._load_keys(iss)
            with self._lock:
                self._cache[iss] = (tick, keys)
        return ResolvedIssuerKey(_select_key(keys, header), "metadata")


class PinnedKeyResolver:
    """Issuer keys configured per ``iss`` (selected by ``kid`` when there are several)."""

    def __init__(self, keys: Mapping[str, Sequence[Key]]) -> None:
        self.keys = {iss: [k.public() if k.is_private else k for k in ks] for iss, ks in keys.items()}

    def resolve(self, header: dict[str, Any], payload: dict[str, Any], *, now: float) -> ResolvedIssuerKey:
        keys = self.keys.get(payload.get("iss"))  # type: ignore[arg-type]
        if not keys:
            raise SDJWTVCError("untrusted_issuer", "no key is pinned for this issuer")
        return ResolvedIssuerKey(_select_key(keys, header), "pinned")


class ChainedKeyResolver:
    """``x5c`` resolution when the header carries ``x5c``, issuer metadata otherwise."""

    def __init__(self, x5c_resolver: IssuerKeyResolver | None, metadata_resolver: IssuerKeyResolver | None) -> None:
        self.x5c_resolver = x5c_resolver
        self.metadata_resolver = metadata_resolver

    def resolve(self, header: dict[str, Any], payload: dict[str, Any], *, now: float) -> ResolvedIssuerKey:
        resolver = self.x5c_resolver if "x5c" in header else self.metadata_resolver
        if resolver is None:
            raise SDJWTVCError("no_key_resolution", "no way to find this issuer's key is configured")
        return resolver.resolve(header, payload, now=now)


# -- verifying -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VerifiedCredential:
    """A verified SD-JWT VC: what a verifier may rely on."""

    issuer: str
    vct: str
    #: Processed claims (plain and disclosed), including ``iss``, ``vct``, ``iat``, ``cnf``...
    claims: dict[str, Any]
    disclosed_paths: list[ClaimPath]
    holder_key: Key | None
    #: The Token Status List reference, or ``None`` when the credential has none.
    status: StatusReference | None
    issuer_key: Key
    #: The x5c leaf certificate when the key came from ``x5c``.
    issuer_certificate: cx509.Certificate | None
    #: ``"x5c"``, ``"metadata"`` or ``"pinned"``.
    key_source: str
    iat: int | float | None
    nbf: int | float | None
    exp: int | float | None
    vct_integrity: str | None
    header: dict[str, Any]
    kb_payload: dict[str, Any] | None


def verify_sd_jwt_vc(token: str, *, key_resolver: IssuerKeyResolver, expected_vcts: Collection[str] | None = None,
                     require_kb: bool = False, expected_aud: str | None = None, expected_nonce: str | None = None,
                     now: float | None = None, leeway: int = 60, kb_max_age: int = 300,
                     algorithms: Sequence[str] = DEFAULT_ALGORITHMS, accept_legacy_typ: bool = False,
                     allow_http_loopback: bool = False) -> VerifiedCredential:
    """Verify an SD-JWT VC presentation (or issuance) with every SD-JWT rule and the VC rules.

    Before any key is looked up: ``typ`` (``sd_jwt_vc.bad_typ``), ``iss`` (``sd_jwt_vc.missing_iss``),
    ``vct`` (``sd_jwt_vc.missing_vct``, ``sd_jwt_vc.unexpected_vct``). After the signature:
    time, KB-JWT (see :func:`ssi.sd_jwt.verify_sd_jwt`), no disclosure of a non-disclosable claim
    (``sd_jwt_vc.forbidden_disclosure``), a selectively disclosed ``iat`` (which the draft allows) that
    is a NumericDate not in the future (``sd_jwt_vc.bad_iat``, ``sd_jwt_vc.iat_in_future``) and a
    well-formed ``status`` (``sd_jwt_vc.bad_status``).
    Does not fetch the status list. ``allow_http_loopback`` admits http status URIs to loopback
    (development only).
    """
    now = time.time() if now is None else now
    allowed_typs = (SD_JWT_VC_TYP, LEGACY_SD_JWT_VC_TYP) if accept_legacy_typ else (SD_JWT_VC_TYP,)
    resolved: list[ResolvedIssuerKey] = []

    def issuer_key(header: dict[str, Any], payload: dict[str, Any]) -> Key:
        if header.get("typ") not in allowed_typs:
            raise SDJWTVCError("bad_typ", "the credential typ must be dc+sd-jwt")
        if not isinstance(payload.get("iss"), str) or not payload["iss"]:
            raise SDJWTVCError("missing_iss", "the credential has no iss")
        vct = payload.get("vct")
        if not isinstance(vct, str) or not vct:
            raise SDJWTVCError("missing_vct", "the credential has no string vct")
        if expected_vcts is not None and vct not in expected_vcts:
            raise SDJWTVCError("unexpected_vct", "the credential type is not one the verifier accepts")
        result = key_resolver.resolve(header, payload, now=now)
        resolved.append(result)
        return result.key

    verified = verify_sd_jwt(token, issuer_key=issuer_key, algorithms=algorithms, require_kb=require_kb,
                             expected_aud=expected_aud, expected_nonce=expected_nonce, kb_max_age=kb_max_age,
                             now=now, leeway=leeway)
    for path in verified.disclosed_paths:
        if len(path) == 1 and path[0] in NON_DISCLOSABLE_CLAIMS:
            raise SDJWTVCError("forbidden_disclosure", f"'{path[0]}' must not be selectively disclosed")
    payload = verified.payload
    # 'iat' MAY be selectively disclosed (SD-JWT VC, "Registered JWT Claims", unlike iss, nbf, exp,
    # cnf, vct, vct#integrity and status), so it comes from the processed claims. verify_sd_jwt
    # checked an issuer-signed one in the payload; a disclosed one is checked here the same way.
    iat = verified.claims.get("iat")
    if "iat" in verified.claims and "iat" not in payload:
        check_time_claims({"iat": iat}, now=now, leeway=leeway, error=SDJWTVCError)
    status: StatusReference | None = None
    if "status" in payload:
        value = payload["status"]
        if not isinstance(value, dict):
            raise SDJWTVCError("bad_status", "status must be a JSON object")
        if "status_list" in value:
            try:
                status = parse_status_claim(value, allow_http_loopback=allow_http_loopback)
            except StatusListError as exc:
                raise SDJWTVCError("bad_status", f"the status reference is invalid ({exc.code})") from exc
    vct_integrity = payload.get("vct#integrity")
    if vct_integrity is not None and not isinstance(vct_integrity, str):
        raise SDJWTVCError("bad_vct_integrity", "vct#integrity must be a string")
    source = resolved[0]
    return VerifiedCredential(
        issuer=payload["iss"], vct=payload["vct"], claims=verified.claims,
        disclosed_paths=verified.disclosed_paths, holder_key=verified.holder_key, status=status,
        issuer_key=source.key, issuer_certificate=source.certificate, key_source=source.source,
        iat=iat, nbf=payload.get("nbf"), exp=payload.get("exp"),
        vct_integrity=vct_integrity, header=verified.header, kb_payload=verified.kb_payload)
