"""HTTP clients for tests of the source adapters, built as the issuer builds its own."""

from __future__ import annotations

from typing import Any

import httpx

from service_kit.outbound import OutboundPolicy, guarded_transport


def guarded_client(policy: OutboundPolicy | None = None, **kwargs: Any) -> httpx.AsyncClient:
    """A client guarded by ``policy`` (default: loopback allowed, as in dev_mode, where the tests'
    servers run). No connection is kept alive, so a client a test does not close holds no socket."""
    transport = guarded_transport(policy or OutboundPolicy(allow_loopback=True),
                                  limits=httpx.Limits(max_keepalive_connections=0))
    return httpx.AsyncClient(transport=transport, follow_redirects=False, **kwargs)
