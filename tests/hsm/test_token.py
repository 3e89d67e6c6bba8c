"""Keys in a SoftHSM2 token: signatures verify (ours and ``cryptography``'s check), errors are typed,
the private key stays in the token."""

from __future__ import annotations

import threading
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from service_kit.pkcs11 import PKCS11Config, PKCS11Error, TokenKeyRef, open_token, read_pin
from ssi.errors import JOSEError
from ssi.jose import Key, parse_jws, sign_jws, verify_jws
from tests.hsm.conftest import SoftHSM


def test_es256_token_signature_verifies_with_the_public_key(token) -> None:
    key, ref = token.generate_key(alg="ES256")
    assert ref.alg == "ES256" and ref.token == token.label and len(ref.key_id) == 32
    assert key.alg == "ES256" and key.is_private and key.is_external
    data = b"header.payload"
    signature = key.sign(data)
    assert len(signature) == 64  # raw r || s, not DER
    assert key.verify(signature, data)
    assert key.public().verify(signature, data)
    # cryptography directly, on the DER form of the same (r, s)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    public = key.public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    assert not key.verify(signature, data + b"x")


def test_compact_jws_signed_in_the_token(token) -> None:
    key, _ref = token.generate_key()
    jws = sign_jws({"typ": "JWT"}, {"sub": "x"}, key)
    verified = verify_jws(jws, Key.from_jwk(key.public_jwk()))
    assert verified.json_payload() == {"sub": "x"} and parse_jws(jws).header["alg"] == "ES256"


@pytest.mark.parametrize(("alg", "length"), [("ES384", 96), ("EdDSA", 64)])
def test_other_algorithms(token, alg: str, length: int) -> None:
    key, ref = token.generate_key(alg=alg)
    assert ref.alg == alg and key.alg == alg
    signature = key.sign(b"data")
    assert len(signature) == length and Key.from_jwk(key.public_jwk()).verify(signature, b"data")


def test_key_by_reference_and_by_label_is_the_same_key(token) -> None:
    key, ref = token.generate_key(label="tenant-a-2026")
    again = token.key(TokenKeyRef.decode(ref.encode()), kid="k1")
    assert again.thumbprint() == key.thumbprint() and again.kid == "k1"
    found, found_ref = token.find_key("tenant-a-2026")
    assert found.thumbprint() == key.thumbprint() and found_ref == ref
    assert any(info.label == "tenant-a-2026" and info.sensitive and not info.extractable for info in token.list_keys())


def test_reference_is_readable_and_holds_no_material(token) -> None:
    key, ref = token.generate_key(label="ref-check")
    blob = ref.encode()
    assert blob.startswith(b"pkcs11:") and b"ref-check" in blob and TokenKeyRef.is_ref(blob)
    assert not TokenKeyRef.is_ref(b"\x01\x10sealed")
    for bad in (b"pkcs11:{", b"pkcs11:[]", b'pkcs11:{"backend":"pkcs11","token":"t","label":"l","id":"","alg":"HS256"}'):
        with pytest.raises(PKCS11Error) as info:
            TokenKeyRef.decode(bad)
        assert info.value.code == "pkcs11.bad_reference"


def test_private_part_cannot_be_exported(token, softhsm: SoftHSM) -> None:
    key, ref = token.generate_key(label="no-export")
    for action in (lambda: key.private_jwk(), lambda: key.private_pem(), lambda: key.private_key):
        with pytest.raises(JOSEError) as info:
            action()
        assert info.value.code == "jose.not_extractable"
    assert "no-export" not in repr(key) and "external-signer" in repr(key)
    # Ask the token itself for the value: it refuses (CKA_SENSITIVE), and the key was never extractable.
    lib = pkcs11.lib(str(softhsm.module))
    with lib.get_token(token_label=softhsm.token).open() as session:
        private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label="no-export")
        with pytest.raises(pkcs11.AttributeSensitive):
            private[pkcs11.Attribute.VALUE]
        assert private[pkcs11.Attribute.SENSITIVE] and private[pkcs11.Attribute.ALWAYS_SENSITIVE]
        assert not private[pkcs11.Attribute.EXTRACTABLE] and private[pkcs11.Attribute.NEVER_EXTRACTABLE]
        with pytest.raises(pkcs11.PKCS11Error):
            private[pkcs11.Attribute.EXTRACTABLE] = True
        with pytest.raises(pkcs11.PKCS11Error):
            private[pkcs11.Attribute.SENSITIVE] = False


def test_wrong_pin_is_a_typed_error(softhsm: SoftHSM) -> None:
    with pytest.raises(PKCS11Error) as info:
        open_token(softhsm.config(pin="0000", token=softhsm.pin_token))
    assert info.value.code == "pkcs11.pin_incorrect" and "0000" not in str(info.value)


def test_missing_token_and_module_are_typed_errors(softhsm: SoftHSM, tmp_path: Path) -> None:
    with pytest.raises(PKCS11Error) as info:
        open_token(softhsm.config(token="no-such-token"))
    assert info.value.code == "pkcs11.token_not_found"
    with pytest.raises(PKCS11Error) as info:
        open_token(PKCS11Config(module=tmp_path / "nope.so", token_label="x", pin="1"))
    assert info.value.code == "pkcs11.module_not_found"


def test_missing_key_and_duplicate_label_are_typed_errors(token) -> None:
    with pytest.raises(PKCS11Error) as info:
        token.find_key("never-made")
    assert info.value.code == "pkcs11.key_not_found" and info.value.http_status == 400
    token.generate_key(label="dup")
    with pytest.raises(PKCS11Error) as info:
        token.generate_key(label="dup")
    assert info.value.code == "pkcs11.key_exists" and info.value.http_status == 409
    with pytest.raises(PKCS11Error) as info:
        token.key(TokenKeyRef(token="other-token", label="dup", key_id="", alg="ES256"))
    assert info.value.code == "pkcs11.token_mismatch"


def test_deleted_key_fails_signing_with_a_typed_error(token) -> None:
    key, ref = token.generate_key(label="to-delete")
    key.sign(b"warm the handle cache")
    token.delete_key(ref)
    with pytest.raises(PKCS11Error) as info:
        key.sign(b"after deletion")
    assert info.value.code in ("pkcs11.key_not_found", "pkcs11.sign_failed") and info.value.http_status == 503


def test_concurrent_signing_from_threads(token) -> None:
    key, _ref = token.generate_key(label="threads")
    public = key.public()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(50):
                data = f"message {i}".encode()
                assert public.verify(key.sign(data), data)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_shared_token_and_pin_sources(softhsm: SoftHSM, token, tmp_path: Path, monkeypatch) -> None:
    again = open_token(softhsm.config())
    assert again is token  # one login per process and token
    again.close()
    with pytest.raises(PKCS11Error) as info:
        open_token(softhsm.config(pin="another"))
    assert info.value.code == "pkcs11.pin_incorrect"
    pin_file = tmp_path / "pin"
    pin_file.write_text("1234\n")
    assert read_pin(None, pin_file) == "1234"
    with pytest.raises(PKCS11Error) as info:
        read_pin(None, tmp_path / "missing")
    assert info.value.code == "pkcs11.pin_file_unreadable"
    with pytest.raises(PKCS11Error) as info:
        read_pin(None, None)
    assert info.value.code == "pkcs11.pin_missing"
    assert softhsm.pin not in repr(softhsm.config())


def test_from_signer_checks() -> None:
    software = Key.generate("ES256")
    external = Key.from_signer(software.public(), software.sign, kid="k")
    assert external.kid == "k" and external.verify(external.sign(b"d"), b"d")
    with pytest.raises(JOSEError):
        Key.from_signer(software.public_key, "not callable")  # type: ignore[arg-type]
    with pytest.raises(JOSEError) as info:
        Key.from_signer(software.public_key, lambda data: b"\x30" * 70).sign(b"d")
    assert info.value.code == "jose.bad_signer"
    with pytest.raises(JOSEError) as info:
        Key.from_signer(software.public_key, software.sign, alg="RS256")
    assert info.value.code == "jose.alg_not_allowed"
