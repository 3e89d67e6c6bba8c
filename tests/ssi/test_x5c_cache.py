"""The x5c chain validation cache of X5CKeyResolver: hits, validity re-checks, anchors in the key, bound."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from ssi import sd_jwt_vc
from ssi import x509 as ssi_x509
from ssi.errors import X509Error
from ssi.jose import Key
from ssi.sd_jwt_vc import X5CKeyResolver, X5CValidationCache

ISS = "https://issuer.example.org"


@pytest.fixture(scope="module")
def pki():
    ca_key, ca_cert = ssi_x509.create_ca("Test CA")
    other_key, other_ca = ssi_x509.create_ca("Other CA")
    leaf_key = Key.generate("ES256")
    leaf = ssi_x509.issue_certificate(ca_key, ca_cert, leaf_key, "Issuer", san_uris=[ISS], days=2)
    return ca_cert, other_ca, ssi_x509.x5c_from_chain([leaf])


def _counting(monkeypatch):
    calls = []
    real = ssi_x509.verify_x5c

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sd_jwt_vc.ssi_x509, "verify_x5c", counted)
    return calls


def test_second_resolution_is_a_cache_hit(pki, monkeypatch):
    ca_cert, _other, x5c = pki
    calls = _counting(monkeypatch)
    resolver = X5CKeyResolver([ca_cert], cache=X5CValidationCache())
    first = resolver.resolve({"x5c": x5c}, {"iss": ISS}, now=time.time())
    second = resolver.resolve({"x5c": x5c}, {"iss": ISS}, now=time.time())
    assert len(calls) == 1
    assert first.key.public_jwk() == second.key.public_jwk()
    assert second.source == "x5c"


def test_hit_still_checks_validity_dates_and_san(pki):
    ca_cert, _other, x5c = pki
    cache = X5CValidationCache()
    resolver = X5CKeyResolver([ca_cert], cache=cache)
    resolver.resolve({"x5c": x5c}, {"iss": ISS}, now=time.time())
    later = (datetime.now(UTC) + timedelta(days=30)).timestamp()
    with pytest.raises(X509Error) as info:
        resolver.resolve({"x5c": x5c}, {"iss": ISS}, now=later)
    assert info.value.code == "x509.expired"
    with pytest.raises(sd_jwt_vc.SDJWTVCError) as info2:
        resolver.resolve({"x5c": x5c}, {"iss": "https://someone-else.example"}, now=time.time())
    assert info2.value.code == "sd_jwt_vc.iss_san_mismatch"


def test_other_anchors_are_not_served_from_the_cache(pki):
    ca_cert, other_ca, x5c = pki
    cache = X5CValidationCache()
    X5CKeyResolver([ca_cert], cache=cache).resolve({"x5c": x5c}, {"iss": ISS}, now=time.time())
    with pytest.raises(X509Error) as info:
        X5CKeyResolver([other_ca], cache=cache).resolve({"x5c": x5c}, {"iss": ISS}, now=time.time())
    assert info.value.code == "x509.untrusted_chain"


def test_failures_are_not_cached_and_size_is_bounded(pki):
    ca_cert, other_ca, x5c = pki
    cache = X5CValidationCache(maxsize=1)
    with pytest.raises(X509Error):
        X5CKeyResolver([other_ca], cache=cache).resolve({"x5c": x5c}, {"iss": ISS}, now=time.time())
    assert len(cache) == 0
    X5CKeyResolver([ca_cert], cache=cache).resolve({"x5c": x5c}, {"iss": ISS}, now=time.time())
    X5CKeyResolver([ca_cert, other_ca], cache=cache).resolve({"x5c": x5c}, {"iss": ISS}, now=time.time())
    assert len(cache) == 1
