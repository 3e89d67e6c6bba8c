"""ssi.urls: the shared "https, or http only to loopback" rule, and the three callers' own codes."""

from __future__ import annotations

import pytest

from ssi import oid4vci, urls
from ssi.errors import SDJWTVCError, StatusListError
from ssi.sd_jwt_vc import _check_https
from ssi.status_list import check_status_uri
from ssi.urls import UnsafeURL, is_loopback_host, split_secure_url


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "127.255.255.254", "::1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["example.org", "0.0.0.0", "10.0.0.1", "127.0.0.1.nip.io", "::", "[::1]",
                                  "localhost.example.org", "", None, 127])
def test_not_loopback_hosts(host: object) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize("url", ["https://example.org", "https://example.org:8443/a/b?c=d#e", "https://[::1]/x",
                                 "https://xn--bcher-kva.example/%C3%9F?q=%20"])
def test_https_accepted(url: str) -> None:
    parts = split_secure_url(url)
    assert parts.scheme == "https" and parts.hostname


@pytest.mark.parametrize("url", ["http://localhost:8001/x", "http://127.0.0.1/x", "http://127.0.0.2:9/x",
                                 "http://[::1]:8000/"])
def test_http_loopback_only_when_allowed(url: str) -> None:
    assert split_secure_url(url, allow_http_loopback=True).scheme == "http"
    with pytest.raises(UnsafeURL) as err:
        split_secure_url(url)
    assert err.value.reason == "insecure"


@pytest.mark.parametrize(("url", "kwargs", "reason"), [
    (None, {}, "not_a_url"),
    ("", {}, "not_a_url"),
    (42, {}, "not_a_url"),
    ("https://[::1/x", {}, "not_a_url"),
    ("/relative/path", {}, "no_host"),
    ("https:///path", {}, "no_host"),
    ("https://user:pw@example.org/", {}, "credentials"),
    ("https://user@example.org/", {}, "credentials"),
    ("https://example.org/#frag", {"allow_fragment": False}, "fragment"),
    ("https://example.org/?q=1", {"allow_query": False}, "query"),
    ("http://example.org/", {"allow_http_loopback": True}, "insecure"),
    ("http://10.0.0.1/", {"allow_http_loopback": True}, "insecure"),
    ("ftp://localhost/", {"allow_http_loopback": True}, "insecure"),
    ("HTTPS-ish://example.org/", {}, "insecure"),
    # urlsplit drops TAB/CR/LF and leading controls, so these passed as other URLs than the string
    ("https://st.exa\tmple/l", {}, "not_a_url"),
    ("https://a.example\n/x", {}, "not_a_url"),
    ("https://a.example/x\r\n", {}, "not_a_url"),
    (" https://a.example/x", {}, "not_a_url"),
    ("\x00https://a.example/", {}, "not_a_url"),
    ("https://a.example/a b", {}, "not_a_url"),
    ("https://a.example/\x7f", {}, "not_a_url"),
    # IDNA hosts are given punycoded: nothing is converted, so the checked host is the one fetched
    ("https://bücher.example/", {}, "not_a_url"),
    ("https://a.example/ß", {}, "not_a_url"),
])
def test_refusals_carry_their_reason(url: object, kwargs: dict[str, bool], reason: str) -> None:
    with pytest.raises(UnsafeURL) as err:
        split_secure_url(url, **kwargs)
    assert err.value.reason == reason
    assert isinstance(err.value, ValueError)  # callers such as pydantic validators rely on it


def test_oid4vci_keeps_its_names() -> None:
    assert oid4vci.is_loopback_host is urls.is_loopback_host
    assert oid4vci.check_url("https://issuer.example.org/x?y=1") == "https://issuer.example.org/x?y=1"
    assert oid4vci.check_url("http://127.0.0.2:8001/", allow_http_loopback=True) == "http://127.0.0.2:8001/"
    with pytest.raises(ValueError, match="fragment"):
        oid4vci.check_url("https://issuer.example.org/#f")
    with pytest.raises(ValueError, match="query"):
        oid4vci.check_url("https://issuer.example.org/?a=b", allow_query=False)
    with pytest.raises(ValueError, match="https"):
        oid4vci.check_url("http://issuer.example.org/")


@pytest.mark.parametrize(("uri", "code"), [
    ("http://example.org/l/1", "status_list.insecure_uri"),
    ("https://u:p@example.org/l/1", "status_list.bad_uri"),
    ("/l/1", "status_list.bad_uri"),
    (None, "status_list.bad_uri"),
])
def test_status_list_codes(uri: object, code: str) -> None:
    with pytest.raises(StatusListError) as err:
        check_status_uri(uri, allow_http_loopback=True)
    assert err.value.code == code


def test_status_list_loopback() -> None:
    assert check_status_uri("http://127.0.0.2:8001/l/1", allow_http_loopback=True) == "http://127.0.0.2:8001/l/1"
    assert check_status_uri("https://example.org/l/1#x") == "https://example.org/l/1#x"


@pytest.mark.parametrize(("url", "allow", "code"), [
    ("http://issuer.example.org", True, "sd_jwt_vc.insecure_iss"),
    ("http://127.0.0.1:8001", False, "sd_jwt_vc.insecure_iss"),
    ("https://u@issuer.example.org", True, "sd_jwt_vc.bad_iss"),
    ("https://[::1/x", True, "sd_jwt_vc.bad_iss"),
])
def test_sd_jwt_vc_codes(url: str, allow: bool, code: str) -> None:
    with pytest.raises(SDJWTVCError) as err:
        _check_https(url, "iss", allow)
    assert err.value.code == code


def test_sd_jwt_vc_admits_every_loopback_address_when_allowed() -> None:
    # Before the shared rule this module only knew localhost, 127.0.0.1 and ::1.
    for url in ("http://127.0.0.2:8001", "http://localhost:8001", "http://[::1]:8001"):
        _check_https(url, "jwks_uri", True)


def test_issuer_metadata_url_refuses_what_urlsplit_would_drop() -> None:
    from ssi.sd_jwt_vc import jwt_vc_issuer_metadata_url

    for iss in ["https://i.exam\nple/t/a", "https://i.example/t/a\t", "https://i.example/t a"]:
        with pytest.raises(SDJWTVCError) as err:
            jwt_vc_issuer_metadata_url(iss)
        assert err.value.code == "sd_jwt_vc.bad_iss"
    with pytest.raises(StatusListError) as err:
        check_status_uri("https://st.example/l\n")
    assert err.value.code == "status_list.bad_uri"
    assert urls.is_url_text("https://a.example/") and not urls.is_url_text("https://a.example/\n")
