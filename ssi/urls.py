"""The one rule for URLs the library fetches or hands out: https, or http only to a loopback host.

``http`` is admitted only when the caller passes ``allow_http_loopback=True`` (local development
and tests) and the host is ``localhost`` or a loopback IP literal (any of 127.0.0.0/8, ``::1``).
Callers turn :class:`UnsafeURL` into their own typed error; its ``reason`` says which rule failed:

* ``not_a_url``: not a non-empty string, not parseable as a URL, or holding a character outside
  printable ASCII (``\x21``-``\x7e``): a space, a control character (``urlsplit`` silently drops
  TAB, CR and LF and strips leading controls, so the URL checked would not be the string the caller
  keeps and sends) or any non-ASCII character. An internationalized host must be given punycoded
  (``xn--…``) and other characters percent-encoded; nothing is converted here;
* ``no_host``: no host (relative URL, ``https:///path``);
* ``credentials``: user information (``https://user:pw@host``), never sent anywhere;
* ``fragment`` / ``query``: present where the caller refuses it;
* ``insecure``: neither https nor http to a loopback host when that is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

__all__ = ["UnsafeURL", "is_loopback_host", "is_url_text", "split_secure_url"]

_LOOPBACK_NAMES = frozenset({"localhost"})
# What a URL may hold as given (RFC 3986 characters are a subset): checked on the raw string,
# before urlsplit, which removes TAB/CR/LF and leading control characters.
_URL_CHARACTERS = re.compile(r"[\x21-\x7e]+")


class UnsafeURL(ValueError):  # noqa: N818 - reads as "unsafe URL" at the raise site, like ValueError
    """A URL refused by :func:`split_secure_url`; ``reason`` is one of the codes in the module doc."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def is_loopback_host(host: Any) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ``::1``), as a URL's
    ``hostname`` gives them (lower case, IPv6 without brackets)."""
    if not isinstance(host, str):
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_url_text(text: Any) -> bool:
    """True for a non-empty string of printable ASCII without spaces (``\x21``-``\x7e``), the only
    characters a URL is accepted with (see ``not_a_url`` above)."""
    return isinstance(text, str) and _URL_CHARACTERS.fullmatch(text) is not None


def split_secure_url(url: Any, *, allow_http_loopback: bool = False, allow_query: bool = True,
                     allow_fragment: bool = True) -> SplitResult:
    """Split ``url`` after checking it is absolute, has a host and no user information, and is
    https (or http to a loopback host when ``allow_http_loopback``). Raises :class:`UnsafeURL`."""
    if not isinstance(url, str) or not url:
        raise UnsafeURL("not_a_url", "must be a non-empty URL string")
    if not is_url_text(url):
        raise UnsafeURL("not_a_url", "must be printable ASCII without spaces (a punycoded host, "
                                     "other characters percent-encoded)")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # e.g. an unbalanced '[' in the netloc
        raise UnsafeURL("not_a_url", "is not a URL") from exc
    if not host:
        raise UnsafeURL("no_host", "needs a host and no user information")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("credentials", "needs a host and no user information")
    if parts.fragment and not allow_fragment:
        raise UnsafeURL("fragment", "must not carry a fragment (or, here, a query)")
    if parts.query and not allow_query:
        raise UnsafeURL("query", "must not carry a fragment (or, here, a query)")
    if parts.scheme == "https" or (parts.scheme == "http" and allow_http_loopback and is_loopback_host(host)):
        return parts
    raise UnsafeURL("insecure", "must use https")
