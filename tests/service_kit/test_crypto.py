"""SecretBox (secrets at rest), master key loading and admin API key hashing."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from service_kit.crypto import (
    SecretBox,
    SecretBoxError,
    generate_api_key,
    hash_api_key,
    key_id_for,
    load_master_key,
    parse_master_key,
    verify_api_key,
)
from service_kit.settings import ServiceSettings

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


@given(plaintext=st.binary(max_size=2000), aad=st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    box = SecretBox(KEY)
    sealed = box.seal(plaintext, aad)
    assert box.open(sealed, aad) == plaintext
    assert plaintext not in sealed or len(plaintext) < 4


def test_nonces_are_random() -> None:
    box = SecretBox(KEY)
    assert box.seal(b"same", b"ctx") != box.seal(b"same", b"ctx")


def test_every_flipped_byte_is_detected() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(b"holder private key", b"wallet:1")
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(SecretBoxError) as err:
            box.open(bytes(tampered), b"wallet:1")
        assert err.value.code in {"secretbox.decrypt_failed", "secretbox.unknown_key", "secretbox.bad_format"}


def test_wrong_aad_wrong_key_and_garbage_are_refused() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(b"claims", b"wallet:1:credential:7")
    with pytest.raises(SecretBoxError) as err:
        box.open(sealed, b"wallet:2:credential:7")
    assert err.value.code == "secretbox.decrypt_failed"
    with pytest.raises(SecretBoxError) as err:
        SecretBox(OTHER).open(sealed, b"wallet:1:credential:7")
    assert err.value.code == "secretbox.unknown_key"
    for garbage in [b"", b"\x01", b"\x02" + sealed[1:], sealed[:20]]:
        with pytest.raises(SecretBoxError) as err:
            box.open(garbage)
        assert err.value.code == "secretbox.bad_format"
    with pytest.raises(SecretBoxError):
        SecretBox(b"short")


def test_format_names_the_key_and_version() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(b"x")
    assert sealed[0] == 1
    assert box.key_id_of(sealed) == key_id_for(KEY) == box.key_id
    assert KEY.hex() not in sealed.hex()


def test_rotation_rewraps_to_the_new_key() -> None:
    old_box = SecretBox(KEY)
    sealed_old = old_box.seal(b"vault key", b"w1")
    rotated = SecretBox(OTHER, previous_keys=[KEY])
    assert rotated.open(sealed_old, b"w1") == b"vault key"
    assert rotated.needs_rewrap(sealed_old)
    rewrapped = rotated.rewrap(sealed_old, b"w1")
    assert not rotated.needs_rewrap(rewrapped)
    assert rotated.key_id_of(rewrapped) == key_id_for(OTHER)
    assert rotated.rewrap(rewrapped, b"w1") is rewrapped
    # After rotation the new key alone opens it; the old key no longer does.
    assert SecretBox(OTHER).open(rewrapped, b"w1") == b"vault key"
    with pytest.raises(SecretBoxError):
        old_box.open(rewrapped, b"w1")
    with pytest.raises(SecretBoxError):
        rotated.rewrap(sealed_old, b"wrong-aad")


def test_parse_master_key_formats() -> None:
    b64 = base64.urlsafe_b64encode(KEY).rstrip(b"=").decode()
    assert parse_master_key(b64) == KEY
    assert parse_master_key(KEY.hex()) == KEY
    assert parse_master_key(KEY) == KEY
    assert parse_master_key(f"  {b64}\n".encode()) == KEY
    for bad in ["", "abc", "zz" * 32, base64.urlsafe_b64encode(b"x" * 16).decode()]:
        with pytest.raises(SecretBoxError) as err:
            parse_master_key(bad)
        assert err.value.code == "secretbox.bad_key"


def test_a_passphrase_or_a_key_with_stray_characters_is_not_a_master_key() -> None:
    b64 = base64.urlsafe_b64encode(KEY).rstrip(b"=").decode()
    # 32 printable bytes in a key file are a passphrase, not 32 random bytes
    for bad in [b"correct horse battery staple 123", b"0123456789abcdef0123456789abcdef",
                # the decoder would skip the stray characters and still find 32 bytes
                b64[:20] + "!!" + b64[20:], b64[:10] + "\n" + b64[10:], b64[:-2] + "-+"]:
        with pytest.raises(SecretBoxError) as err:
            parse_master_key(bad)
        assert err.value.code == "secretbox.bad_key"
    assert parse_master_key(b64 + "=") == KEY  # padded base64url is still fine
    # standard base64, as `openssl rand -base64 32` writes it (with + and /), was accepted and still is
    both = bytes([0xFB, 0xFF] * 16)
    assert "+" in base64.b64encode(both).decode() and "/" in base64.b64encode(both).decode()
    assert parse_master_key(base64.b64encode(both).decode() + "\n") == both


def test_load_master_key_from_env_value_and_file(tmp_path: Path) -> None:
    s = ServiceSettings(data_dir=tmp_path, master_key=SecretStr(KEY.hex()))
    assert load_master_key(s) == KEY
    assert KEY.hex() not in repr(s) and KEY.hex() not in str(s.model_dump())
    key_file = tmp_path / "mk"
    key_file.write_text(base64.urlsafe_b64encode(OTHER).decode())
    os.chmod(key_file, 0o600)
    assert load_master_key(ServiceSettings(data_dir=tmp_path, master_key_file=key_file)) == OTHER


def test_missing_master_key_is_an_error_outside_dev_mode(tmp_path: Path) -> None:
    with pytest.raises(SecretBoxError) as err:
        load_master_key(ServiceSettings(data_dir=tmp_path))
    assert err.value.code == "secretbox.missing_key"
    with pytest.raises(SecretBoxError):
        load_master_key(ServiceSettings(data_dir=tmp_path, master_key_file=tmp_path / "absent"))
    assert not (tmp_path / "absent").exists()


def test_dev_mode_generates_a_private_key_file_once(tmp_path: Path) -> None:
    s = ServiceSettings(data_dir=tmp_path / "var", dev_mode=True)
    first = load_master_key(s)
    path = tmp_path / "var" / "master.key"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert load_master_key(s) == first



def test_two_workers_creating_the_dev_key_at_once_agree_on_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A is stopped between creating its key file and writing it (threads and events, no
    timing); worker B, starting then, must get a whole key, and A must end up with the same one."""
    import threading

    settings = ServiceSettings(data_dir=tmp_path / "var", dev_mode=True)
    in_window, release = threading.Event(), threading.Event()
    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "worker-a":
            in_window.set()
            release.wait(30)
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    results: dict[str, object] = {}

    def start(name: str) -> None:
        try:
            results[name] = load_master_key(settings)
        except Exception as exc:  # noqa: BLE001 - the assertion below says which
            results[name] = exc

    worker_a = threading.Thread(target=start, args=("a",), name="worker-a")
    worker_a.start()
    assert in_window.wait(30)
    start("b")
    release.set()
    worker_a.join(30)
    assert isinstance(results["b"], bytes), results["b"]
    assert results["a"] == results["b"] == parse_master_key((tmp_path / "var" / "master.key").read_bytes())
    assert stat.S_IMODE((tmp_path / "var" / "master.key").stat().st_mode) == 0o600
    assert os.listdir(tmp_path / "var") == ["master.key"]  # no temporary file left behind


def test_api_keys() -> None:
    key = generate_api_key()
    assert key.startswith("ck_") and len(key) > 40
    stored = hash_api_key(key)
    assert stored.startswith("sha256$") and key not in stored
    assert verify_api_key(key, stored)
    assert not verify_api_key(key + "x", stored)
    assert not verify_api_key(generate_api_key(), stored)
    assert not verify_api_key(key, "")
