"""issuer.nonces: a c_nonce is checked without being stored, and only for its tenant, key and lifetime."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from issuer.nonces import NONCE_CHARS, mint_nonce, nonce_expiry, nonce_key
from ssi.encoding import b64url_decode, b64url_encode

KEY = nonce_key(b"\x01" * 32)
NOW = dt.datetime(2026, 12, 6, 12, 0, 0, tzinfo=dt.UTC)


def test_a_nonce_is_good_for_its_tenant_until_it_expires() -> None:
    nonce = mint_nonce(KEY, "t_a", 300, NOW)
    assert len(nonce) == NONCE_CHARS
    assert nonce_expiry(KEY, "t_a", nonce, NOW) == NOW + dt.timedelta(seconds=300)
    assert nonce_expiry(KEY, "t_a", nonce, NOW + dt.timedelta(seconds=299)) is not None
    assert nonce_expiry(KEY, "t_a", nonce, NOW + dt.timedelta(seconds=300)) is None  # expired
    assert nonce_expiry(KEY, "t_b", nonce, NOW) is None  # another tenant's
    assert nonce_expiry(nonce_key(b"\x02" * 32), "t_a", nonce, NOW) is None  # another master key
    assert mint_nonce(KEY, "t_a", 300, NOW) != nonce  # 128 random bits each


def test_the_key_is_derived_not_the_master_key() -> None:
    assert nonce_key(b"\x01" * 32) != b"\x01" * 32 and len(KEY) == 32


def test_a_longer_lifetime_cannot_be_written_into_a_nonce() -> None:
    raw = bytearray(b64url_decode(mint_nonce(KEY, "t_a", 300, NOW)))
    raw[7] ^= 0x01  # the expiry's last octet
    assert nonce_expiry(KEY, "t_a", b64url_encode(bytes(raw)), NOW) is None


def test_another_spelling_of_the_same_octets_is_refused() -> None:
    # Used nonces are recorded by a hash of their text: a second spelling must not be a second nonce.
    nonce = mint_nonce(KEY, "t_a", 300, NOW)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(nonce[-1])
    respelled = nonce[:-1] + alphabet[last | 1]  # a padding bit set: the same 40 octets, leniently read
    assert respelled != nonce
    assert nonce_expiry(KEY, "t_a", respelled, NOW) is None


@given(st.text(max_size=80))
def test_anything_else_is_simply_not_a_nonce(text: str) -> None:
    assert nonce_expiry(KEY, "t_a", text, NOW) is None


@given(st.integers(min_value=0, max_value=NONCE_CHARS - 1), st.sampled_from("Aa0-_Zz9"))
def test_every_changed_character_is_refused(position: int, replacement: str) -> None:
    nonce = mint_nonce(KEY, "t_a", 300, NOW)
    changed = nonce[:position] + replacement + nonce[position + 1:]
    if changed != nonce:
        assert nonce_expiry(KEY, "t_a", changed, NOW) is None
