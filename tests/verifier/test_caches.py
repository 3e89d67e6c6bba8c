"""Per-process caches of the verifier: agency signing keys unsealed once, bounded in time and size."""

from __future__ import annotations

from types import SimpleNamespace

from service_kit.crypto import SecretBox
from ssi.encoding import json_dumps
from ssi.jose import Key
from verifier.agencies import SigningKeys


class CountingBox(SecretBox):
    opened = 0

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        CountingBox.opened += 1
        return super().open(sealed, aad)


def _agency(box: SecretBox, agency_id: str, key: Key) -> SimpleNamespace:
    sealed = box.seal(json_dumps(key.private_jwk()).encode(), f"agency:{agency_id}:key".encode())
    return SimpleNamespace(id=agency_id, signing_key=sealed)


def test_signing_keys_are_unsealed_once_then_again_after_ttl_rotation_or_eviction(monkeypatch) -> None:
    box = CountingBox(b"\x01" * 32)
    keys = SigningKeys(box, maxsize=2, ttl=60)
    key = Key.generate("ES256")
    agency = _agency(box, "a1", key)
    CountingBox.opened = 0
    first = keys.key_for(agency)
    assert first.public_jwk() == key.public_jwk()
    assert keys.key_for(agency) is first and CountingBox.opened == 1

    # A rotated key (a new sealed value) is never served from the old entry.
    rotated = Key.generate("ES256")
    assert keys.key_for(_agency(box, "a1", rotated)).public_jwk() == rotated.public_jwk()
    assert CountingBox.opened == 2

    # After the TTL the key is unsealed again.
    import verifier.agencies as agencies

    real = agencies.time.monotonic
    monkeypatch.setattr(agencies.time, "monotonic", lambda: real() + 61)
    assert keys.key_for(agency).public_jwk() == key.public_jwk()
    assert CountingBox.opened == 3

    # Bounded: a third agency evicts the least recently used entry.
    keys.key_for(_agency(box, "a2", Key.generate("ES256")))
    keys.key_for(_agency(box, "a3", Key.generate("ES256")))
    assert len(keys._keys) == 2


def test_a_key_sealed_for_another_agency_is_refused() -> None:
    box = SecretBox(b"\x02" * 32)
    sealed = _agency(box, "a1", Key.generate("ES256")).signing_key
    keys = SigningKeys(box)
    try:
        keys.key_for(SimpleNamespace(id="a2", signing_key=sealed))
    except Exception as exc:  # noqa: BLE001 - SecretBox's typed error; the point is that it refuses
        assert "a2" not in str(exc)
    else:
        raise AssertionError("a key sealed under another agency's AAD was opened")
