"""The one rule for URLs the library fetches or hands out: https, or http only to a loopback host.

``http`` is admitted only when the caller passes ``allow_http_loopback=True`` (local development
and tests) and the host is ``localhost`` or a loopback IP literal (any of 127.0.0.0/8, ``::1``).
Callers turn :class:`UnsafeURL` into their own typed error; its ``reason`` says which rule failed:

* ``not_a_url``: not a non-empty string, or not parseable as a URL;
* ``no_host``: no host (relative URL, ``https:///path``);
* ``credentials``: user information (``https://user:pw@host``), never sent anywhere;
* ``fragment`` / ``query``: present where the caller refuses it;
* ``insecure``: neither https nor http to a loopback host when that is allowed.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import SplitResult, urlsplit

__all__ = ["UnsafeURL", "is_loopback_host", "split_secure_url"]

_LOOPBACK_NAMES = frozenset({"localhost"})


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


def split_secure_url(url: Any, *, allow_http_loopback: bool = False, allow_query: bool = True,
                     allow_fragment: bool = True) -> SplitResult:
    """Split ``url`` after checking it is absolute, has a host and no user information, and is
    https (or http to a loopback host when ``allow_http_loopback``). Raises :class:`UnsafeURL`."""
    if not isinstance(url, str) or not url:
        raise UnsafeURL("not_a_url", "must be a non-empty URL string")
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
