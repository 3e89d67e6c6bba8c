"""Signing keys held in a PKCS#11 token (an HSM, a smart card, SoftHSM2 for development and tests).

A token key never leaves the token: it is generated there as sensitive and non-extractable, and
:meth:`Token.key` returns an :class:`ssi.jose.Key` built with :meth:`~ssi.jose.Key.from_signer`, whose
``sign`` asks the token. The database keeps only a :class:`TokenKeyRef` (token label, key label, key
id, algorithm), never key material; the caller checks that the token key's public key still has the
thumbprint it recorded, so a reference edited in the database cannot swap keys unnoticed.

Mechanisms: ES256/ES384 are ``CKM_ECDSA`` over the SHA-256/SHA-384 digest computed here (``CKM_ECDSA``
returns ``r || s``, each the size of the curve order: exactly the JWS form, so no DER step);
EdDSA is ``CKM_EDDSA`` over the message (SoftHSM2 2.6 with OpenSSL 1.1.1+ supports it).

Concurrency: python-pkcs11 calls ``C_Initialize`` without ``CKF_OS_LOCKING_OK``, which tells the module
the application will not call it from several threads at once (SoftHSM2 then runs without its own
mutexes, and concurrent calls failed with ``CKR_GENERAL_ERROR`` in our tests). So every call into one
module holds that module's lock, and a token needs only one session (which keeps the key handles it
found). Signing costs ~0.1 ms on SoftHSM2 (see bench/hsm.py), so the async services call it inline,
without a thread hop; a slow network HSM would call for ``asyncio.to_thread`` around issuance instead. PKCS#11 login is per application and token, not per session, so one
:class:`Token` per (module, token label) is shared by the whole process (:func:`open_token`).

The PIN comes from a setting or a file (``pkcs11_pin_file``); it is never logged, never put in an error
message, and not kept after login.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ssi.encoding import json_dumps, json_loads
from ssi.errors import EncodingError, SSIError
from ssi.jose import Key

log = logging.getLogger(__name__)

KeyBackend = Literal["software", "pkcs11"]
#: Algorithms a token key can have here (HAIP's ES256 first).
TOKEN_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "EdDSA")
#: Prefix of a stored :class:`TokenKeyRef`. A sealed ``SecretBox`` value starts with its version octet
#: 0x01, so a stored blob is unambiguously one or the other.
REF_PREFIX = b"pkcs11:"

# DER of the curve parameters (CKA_EC_PARAMS): a named-curve OID, or for Ed25519 also the
# PrintableString "edwards25519" that PKCS#11 3.0 allows.
_P256_OID = bytes.fromhex("06082a8648ce3d030107")
_P384_OID = bytes.fromhex("06052b81040022")
_ED25519_OID = bytes.fromhex("06032b6570")
_ED25519_NAME = b"\x13\x0cedwards25519"
_CURVES: dict[str, tuple[bytes, int]] = {"ES256": (_P256_OID, 65), "ES384": (_P384_OID, 97), "EdDSA": (_ED25519_OID, 32)}


class PKCS11Error(SSIError):
    """The token, its PIN or a key in it is unusable; ``code`` is stable (``pkcs11.*``).

    ``http_status`` says how an API answers it: 503 when the token itself fails (the client is not at
    fault), 400/409 when the request named a key that does not exist or already exists.
    """

    area = "pkcs11"

    def __init__(self, code: str, detail: str = "", *, http_status: int = 503) -> None:
        super().__init__(code, detail)
        self.http_status = http_status


@dataclass(frozen=True)
class PKCS11Config:
    """Where the token is and how to log in. ``pin`` is excluded from ``repr``."""

    module: Path
    token_label: str
    pin: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> PKCS11Config | None:
        """The token configuration of a service's settings (``pkcs11_*`` fields), or ``None`` when
        neither ``key_backend = "pkcs11"`` nor a module is configured."""
        module = getattr(settings, "pkcs11_module", None)
        backend = getattr(settings, "key_backend", "software")
        if module is None and backend != "pkcs11":
            return None
        if module is None:
            raise PKCS11Error("not_configured", "key_backend is pkcs11 but no pkcs11_module is set")
        label = getattr(settings, "pkcs11_token_label", "") or ""
        if not label:
            raise PKCS11Error("not_configured", "pkcs11_token_label is not set")
        pin = read_pin(getattr(settings, "pkcs11_pin", None), getattr(settings, "pkcs11_pin_file", None))
        return cls(module=Path(module), token_label=label, pin=pin)


def read_pin(pin: Any, pin_file: Path | None) -> str:
    """The user PIN from a ``SecretStr``/``str`` setting, else from ``pin_file`` (one line, trailing
    newline ignored). Raises :class:`PKCS11Error` ``pkcs11.pin_missing``/``pkcs11.pin_file_unreadable``."""
    if pin is not None:
        value = pin.get_secret_value() if hasattr(pin, "get_secret_value") else str(pin)
        if value:
            return str(value)
    if pin_file is not None:
        try:
            text = Path(pin_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PKCS11Error("pin_file_unreadable", f"cannot read the PIN file {pin_file}") from exc
        value = text.rstrip("\r\n")
        if value:
            return value
    raise PKCS11Error("pin_missing", "no PKCS#11 user PIN is configured (pkcs11_pin or pkcs11_pin_file)")


@dataclass(frozen=True)
class TokenKeyRef:
    """What the database stores for a token key: where to find it, never the key itself."""

    token: str
    label: str
    key_id: str  # CKA_ID, hex ("" when the key has none)
    alg: str

    def encode(self) -> bytes:
        """The stored form: ``pkcs11:`` then compact JSON (readable in a database dump, no secret)."""
        return REF_PREFIX + json_dumps({"backend": "pkcs11", "token": self.token, "label": self.label,
                                        "id": self.key_id, "alg": self.alg}).encode("utf-8")

    def as_dict(self) -> dict[str, str]:
        """The reference as the admin APIs show it."""
        return {"backend": "pkcs11", "token": self.token, "label": self.label, "id": self.key_id, "alg": self.alg}

    @staticmethod
    def is_ref(blob: bytes) -> bool:
        """True when a stored key blob is a token reference rather than a sealed software key."""
        return bytes(blob[: len(REF_PREFIX)]) == REF_PREFIX

    @classmethod
    def decode(cls, blob: bytes) -> TokenKeyRef:
        """Parse :meth:`encode`'s output; :class:`PKCS11Error` ``pkcs11.bad_reference`` otherwise."""
        if not cls.is_ref(blob):
            raise PKCS11Error("bad_reference", "not a PKCS#11 key reference", http_status=500)
        try:
            value = json_loads(bytes(blob[len(REF_PREFIX):]))
        except EncodingError as exc:
            raise PKCS11Error("bad_reference", "the PKCS#11 key reference is not JSON", http_status=500) from exc
        if not isinstance(value, dict) or value.get("backend") != "pkcs11" or \
                not all(isinstance(value.get(name), str) for name in ("token", "label", "id", "alg")) or \
                value["alg"] not in TOKEN_ALGORITHMS:
            raise PKCS11Error("bad_reference", "the PKCS#11 key reference is incomplete", http_status=500)
        return cls(token=value["token"], label=value["label"], key_id=value["id"], alg=value["alg"])


@dataclass(frozen=True)
class TokenKeyInfo:
    """A signing key found in the token (public facts only)."""

    label: str
    key_id: str
    alg: str
    sensitive: bool
    extractable: bool


def _pkcs11() -> Any:
    try:
        import pkcs11  # noqa: PLC0415 - optional native binding, loaded only when a token is configured
    except ImportError as exc:  # pragma: no cover - the dependency is pinned
        raise PKCS11Error("unavailable", "python-pkcs11 is not installed") from exc
    return pkcs11


_LIBS: dict[str, Any] = {}
#: One lock per loaded module: the module was initialised without OS locking (see the module docstring).
_MODULE_LOCKS: dict[str, threading.Lock] = {}
_TOKENS: dict[tuple[str, str], Token] = {}
_REGISTRY_LOCK = threading.Lock()


def _load_module(module: Path) -> Any:
    """The process's one ``pkcs11.lib`` per module: ``C_Initialize`` once, never finalized under a user."""
    path = str(module)
    lib = _LIBS.get(path)
    if lib is None:
        if not module.is_file():
            raise PKCS11Error("module_not_found", f"no PKCS#11 module at {module}")
        pkcs11 = _pkcs11()
        try:
            lib = pkcs11.lib(path)
        except pkcs11.PKCS11Error as exc:
            raise PKCS11Error("module_unusable", f"the PKCS#11 module {module} cannot be loaded") from exc
        _LIBS[path] = lib
        _MODULE_LOCKS[path] = threading.Lock()
    return lib


def _pin_digest(pin: str) -> bytes:
    # Compared only in memory, to tell whether a second opener of a shared token brings the same PIN.
    return hashlib.sha256(b"cartera pkcs11 pin\x00" + pin.encode("utf-8")).digest()


def open_token(config: PKCS11Config) -> Token:
    """Open (or share) the token ``config`` names and log in. Release it with :meth:`Token.close`.

    Errors: ``pkcs11.module_not_found``, ``pkcs11.module_unusable``, ``pkcs11.token_not_found``,
    ``pkcs11.pin_incorrect``, ``pkcs11.pin_locked``, ``pkcs11.login_failed``.
    """
    with _REGISTRY_LOCK:
        key = (str(config.module), config.token_label)
        token = _TOKENS.get(key)
        if token is not None and token._open:
            if token._pin_digest != _pin_digest(config.pin):
                # The login is shared process-wide, so a different PIN cannot be checked without logging
                # the other user out: refuse rather than accept an unverified PIN.
                raise PKCS11Error("pin_incorrect", "the token is already open in this process with another PIN")
            token._users += 1
            return token
        token = Token(config)
        _TOKENS[key] = token
        return token


class _Slot:
    """The open session and the private-key objects already found in it."""

    __slots__ = ("session", "keys")

    def __init__(self, session: Any) -> None:
        self.session = session
        self.keys: dict[tuple[str, str], Any] = {}


class Token:
    """A logged-in PKCS#11 token and its session. Build with :func:`open_token`."""

    def __init__(self, config: PKCS11Config) -> None:
        lib = _load_module(config.module)
        self.label = config.token_label
        self.module = config.module
        self._lock = _MODULE_LOCKS[str(config.module)]
        self._pin_digest = _pin_digest(config.pin)
        self._users = 1
        self._slots: list[_Slot] = []
        with self._lock:
            self._login(lib, config)
        self._open = True
        log.info("pkcs11 token opened", extra={"token": self.label})

    def _login(self, lib: Any, config: PKCS11Config) -> None:
        pkcs11 = _pkcs11()
        try:
            self._token = lib.get_token(token_label=config.token_label)
        except (pkcs11.NoSuchToken, pkcs11.MultipleTokensReturned) as exc:
            raise PKCS11Error("token_not_found", f"no single token labelled '{config.token_label}' in {config.module}"
                              ) from exc
        except pkcs11.PKCS11Error as exc:
            raise PKCS11Error("token_unavailable", "the PKCS#11 module lists no usable token") from exc
        try:
            first = self._token.open(rw=True, user_pin=config.pin)
        except pkcs11.PinIncorrect as exc:
            raise PKCS11Error("pin_incorrect", f"the PIN of token '{self.label}' is not correct") from exc
        except pkcs11.PinLocked as exc:
            raise PKCS11Error("pin_locked", f"the PIN of token '{self.label}' is locked") from exc
        except pkcs11.UserAlreadyLoggedIn:
            # Someone else in this process (outside open_token) logged in: share that login.
            first = self._token.open(rw=True)
        except pkcs11.PKCS11Error as exc:
            raise PKCS11Error("login_failed", f"cannot log in to token '{self.label}'") from exc
        self._slots.append(_Slot(first))

    # -- sessions -------------------------------------------------------------------------------------
    @contextmanager
    def _session(self) -> Iterator[_Slot]:
        if not getattr(self, "_open", False) or not self._slots:
            raise PKCS11Error("token_closed", f"token '{self.label}' is closed")
        if not self._lock.acquire(timeout=30):
            raise PKCS11Error("token_busy", f"the PKCS#11 module of token '{self.label}' stayed busy for 30 s")
        try:
            yield self._slots[0]
        finally:
            self._lock.release()

    def close(self) -> None:
        """Release this user of the token; the last one closes the sessions (and so logs out)."""
        with _REGISTRY_LOCK:
            self._users -= 1
            if self._users > 0 or not getattr(self, "_open", False):
                return
            self._open = False
            _TOKENS.pop((str(self.module), self.label), None)
        with self._lock:
            for slot in self._slots:
                try:
                    slot.session.close()
                except Exception:  # noqa: BLE001 - closing is best effort; the module may already be gone
                    log.debug("pkcs11 session close failed", extra={"token": self.label})
            self._slots.clear()

    # -- keys -----------------------------------------------------------------------------------------
    def _find_private(self, slot: _Slot, label: str, key_id: str) -> Any:
        pkcs11 = _pkcs11()
        cached = slot.keys.get((label, key_id))
        if cached is not None:
            return cached
        attrs: dict[Any, Any] = {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}
        if label:
            attrs[pkcs11.Attribute.LABEL] = label
        if key_id:
            attrs[pkcs11.Attribute.ID] = bytes.fromhex(key_id)
        found = list(slot.session.get_objects(attrs))
        if not found:
            raise PKCS11Error("key_not_found", f"no private key labelled '{label}' in token '{self.label}'",
                              http_status=400)
        if len(found) > 1:
            raise PKCS11Error("key_ambiguous", f"several private keys labelled '{label}' in token '{self.label}'",
                              http_status=400)
        slot.keys[(label, key_id)] = found[0]
        return found[0]

    def _public_of(self, slot: _Slot, private: Any, label: str, key_id: str) -> tuple[str, Any]:
        """The algorithm and ``cryptography`` public key of a token key pair."""
        pkcs11 = _pkcs11()
        attr = pkcs11.Attribute
        try:
            params = bytes(private[attr.EC_PARAMS])
        except pkcs11.PKCS11Error as exc:
            raise PKCS11Error("unsupported_key", f"key '{label}' is not an EC or Edwards key", http_status=400) from exc
        alg = _alg_for_params(params)
        if alg is None:
            raise PKCS11Error("unsupported_key", f"key '{label}' is on a curve Cartera does not sign with",
                              http_status=400)
        query: dict[Any, Any] = {attr.CLASS: pkcs11.ObjectClass.PUBLIC_KEY}
        if key_id:
            query[attr.ID] = bytes.fromhex(key_id)
        else:
            query[attr.LABEL] = label
        publics = list(slot.session.get_objects(query))
        if len(publics) != 1:
            raise PKCS11Error("public_key_not_found", f"no single public key beside '{label}' in the token",
                              http_status=400)
        point = _ec_point(bytes(publics[0][attr.EC_POINT]), alg)
        try:
            if alg == "EdDSA":
                public: Any = ed25519.Ed25519PublicKey.from_public_bytes(point)
            else:
                curve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
                public = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        except ValueError as exc:
            raise PKCS11Error("unsupported_key", f"the public key of '{label}' is not a valid point",
                              http_status=400) from exc
        return alg, public

    def key(self, ref: TokenKeyRef, kid: str | None = None) -> Key:
        """The :class:`Key` for a stored reference: public part read from the token, signing in it."""
        if ref.token != self.label:
            raise PKCS11Error("token_mismatch", f"the key is in token '{ref.token}', the configured one is "
                                                f"'{self.label}'")
        return self._key(ref.label, ref.key_id, expect_alg=ref.alg, kid=kid)[0]

    def find_key(self, label: str, kid: str | None = None) -> tuple[Key, TokenKeyRef]:
        """An existing token key by label (to register a key made by the token's own tools)."""
        if not label:
            raise PKCS11Error("key_not_found", "a key label is needed", http_status=400)
        return self._key(label, "", expect_alg=None, kid=kid)

    def _key(self, label: str, key_id: str, *, expect_alg: str | None, kid: str | None) -> tuple[Key, TokenKeyRef]:
        pkcs11 = _pkcs11()
        try:
            with self._session() as slot:
                private = self._find_private(slot, label, key_id)
                if not key_id:
                    key_id = bytes(private[pkcs11.Attribute.ID] or b"").hex()
                alg, public = self._public_of(slot, private, label, key_id)
        except PKCS11Error:
            raise
        except pkcs11.PKCS11Error as exc:
            raise PKCS11Error("token_unavailable", f"token '{self.label}' did not answer a key lookup") from exc
        if expect_alg is not None and alg != expect_alg:
            raise PKCS11Error("alg_mismatch", f"key '{label}' is {alg}, {expect_alg} was recorded")
        ref = TokenKeyRef(token=self.label, label=label, key_id=key_id, alg=alg)
        return Key.from_signer(public, self._signer(ref), alg=alg, kid=kid), ref

    def generate_key(self, label: str | None = None, alg: str = "ES256") -> tuple[Key, TokenKeyRef]:
        """Generate a key pair in the token: private part sensitive, non-extractable, sign-only.

        ``label`` defaults to a random ``cartera-...`` one; an existing label is refused
        (``pkcs11.key_exists``) so a reference always names one key.
        """
        if alg not in TOKEN_ALGORITHMS:
            raise PKCS11Error("alg_not_supported", f"cannot generate {alg} keys in a token", http_status=400)
        label = label or f"cartera-{secrets.token_hex(6)}"
        if not (0 < len(label) <= 64) or not label.isprintable():
            raise PKCS11Error("bad_label", "a key label is 1-64 printable characters", http_status=400)
        pkcs11 = _pkcs11()
        from pkcs11.util.ec import encode_named_curve_parameters  # noqa: PLC0415 - with the binding

        attr = pkcs11.Attribute
        key_id = secrets.token_bytes(16)
        private_template = {attr.TOKEN: True, attr.PRIVATE: True, attr.SENSITIVE: True, attr.EXTRACTABLE: False,
                            attr.SIGN: True, attr.DERIVE: False, attr.DECRYPT: False, attr.UNWRAP: False}
        public_template = {attr.TOKEN: True, attr.VERIFY: True, attr.ENCRYPT: False, attr.WRAP: False}
        try:
            with self._session() as slot:
                existing = list(slot.session.get_objects({attr.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
                                                          attr.LABEL: label}))
                if existing:
                    raise PKCS11Error("key_exists", f"token '{self.label}' already holds a key labelled '{label}'",
                                      http_status=409)
                if alg == "EdDSA":
                    params = slot.session.create_domain_parameters(
                        pkcs11.KeyType.EC_EDWARDS, {attr.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")},
                        local=True)
                    mechanism = pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN
                else:
                    curve = "secp256r1" if alg == "ES256" else "secp384r1"
                    params = slot.session.create_domain_parameters(
                        pkcs11.KeyType.EC, {attr.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True)
                    mechanism = pkcs11.Mechanism.EC_KEY_PAIR_GEN
                params.generate_keypair(id=key_id, label=label, store=True, mechanism=mechanism,
                                        capabilities=pkcs11.MechanismFlag.SIGN | pkcs11.MechanismFlag.VERIFY,
                                        public_template=public_template, private_template=private_template)
        except PKCS11Error:
            raise
        except pkcs11.PKCS11Error as exc:
            raise PKCS11Error("generate_failed", f"token '{self.label}' could not generate a {alg} key") from exc
        log.info("pkcs11 key generated", extra={"token": self.label, "key_label": label, "alg": alg})
        return self._key(label, key_id.hex(), expect_alg=alg, kid=None)

    def list_keys(self) -> list[TokenKeyInfo]:
        """The token's private keys Cartera could sign with (labels and attributes, no material)."""
        pkcs11 = _pkcs11()
        attr = pkcs11.Attribute
        out: list[TokenKeyInfo] = []
        try:
            with self._session() as slot:
                for obj in slot.session.get_objects({attr.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}):
                    try:
                        alg = _alg_for_params(bytes(obj[attr.EC_PARAMS]))
                    except pkcs11.PKCS11Error:
                        alg = None
                    if alg is None:
                        continue
                    out.append(TokenKeyInfo(label=str(obj[attr.LABEL] or ""), key_id=bytes(obj[attr.ID] or b"").hex(),
                                            alg=alg, sensitive=bool(obj[attr.SENSITIVE]),
                                            extractable=bool(obj[attr.EXTRACTABLE])))
        except pkcs11.PKCS11Error as exc:
            raise PKCS11Error("token_unavailable", f"token '{self.label}' did not list its keys") from exc
        return sorted(out, key=lambda info: info.label)

    def delete_key(self, ref: TokenKeyRef) -> None:
        """Destroy a key pair in the token (for tests and operators; a retired key is normally kept)."""
        pkcs11 = _pkcs11()
        attr = pkcs11.Attribute
        try:
            with self._session() as slot:
                for cls in (pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.ObjectClass.PUBLIC_KEY):
                    query: dict[Any, Any] = {attr.CLASS: cls, attr.LABEL: ref.label}
                    if ref.key_id:
                        query[attr.ID] = bytes.fromhex(ref.key_id)
                    for obj in list(slot.session.get_objects(query)):
                        obj.destroy()
        except pkcs11.PKCS11Error as exc:
            raise PKCS11Error("token_unavailable", f"token '{self.label}' did not delete the key") from exc
        for slot in self._slots:
            slot.keys.pop((ref.label, ref.key_id), None)

    # -- signing --------------------------------------------------------------------------------------
    def _signer(self, ref: TokenKeyRef) -> Any:
        pkcs11 = _pkcs11()
        if ref.alg == "EdDSA":
            mechanism = pkcs11.Mechanism.EDDSA

            def prepare(data: bytes) -> bytes:
                return data
        else:
            mechanism = pkcs11.Mechanism.ECDSA
            digest = hashlib.sha256 if ref.alg == "ES256" else hashlib.sha384

            def prepare(data: bytes) -> bytes:
                return digest(data).digest()

        def sign(data: bytes) -> bytes:
            message = prepare(data)
            for attempt in (0, 1):
                with self._session() as slot:
                    try:
                        private = self._find_private(slot, ref.label, ref.key_id)
                        return bytes(private.sign(message, mechanism=mechanism))
                    except PKCS11Error as exc:
                        # The key was deleted from the token: the service cannot sign, the client is not at fault.
                        raise PKCS11Error(exc.code, exc.detail, http_status=503) from exc
                    except pkcs11.ObjectHandleInvalid as exc:
                        # The handle went stale (the key was re-created): look it up again once.
                        slot.keys.pop((ref.label, ref.key_id), None)
                        if attempt:
                            raise PKCS11Error("sign_failed", f"token '{self.label}' lost key '{ref.label}'") from exc
                    except pkcs11.PKCS11Error as exc:
                        log.warning("pkcs11 signing failed", extra={"token": self.label, "key_label": ref.label,
                                                                    "error": type(exc).__name__})
                        raise PKCS11Error("sign_failed", f"token '{self.label}' refused to sign") from exc
            raise PKCS11Error("sign_failed", f"token '{self.label}' refused to sign")

        return sign


def _alg_for_params(params: bytes) -> str | None:
    if params == _P256_OID:
        return "ES256"
    if params == _P384_OID:
        return "ES384"
    if params in (_ED25519_OID, _ED25519_NAME):
        return "EdDSA"
    return None


def _ec_point(value: bytes, alg: str) -> bytes:
    """The raw public point from CKA_EC_POINT, which tokens give DER-wrapped (an OCTET STRING) or raw."""
    size = _CURVES[alg][1]
    if len(value) == size + 2 and value[0] == 0x04 and value[1] == size:
        return value[2:]
    if len(value) == size:
        return value
    raise PKCS11Error("unsupported_key", "the token's public point has an unexpected encoding", http_status=400)
