"""The agent of a service (issuer or verifier): its own ACA-Py process, or one run elsewhere.

A service with the Aries channel enabled either

- starts its own agent with :mod:`aries.runner` (the embedded default): loopback admin API with a
  fresh random API key per start, webhooks to the service's own loopback address with a fresh random
  webhook key per start, a persistent askar wallet under the service's data directory whose key is
  derived from the service's master key (so its DIDs survive restarts and nothing new must be kept);
- or talks to an agent run elsewhere (docker-compose), whose admin URL, admin API key and webhook key
  come from configuration.

Either way the service stores only the *hash* of the webhook key (its database, so that every worker
can authenticate deliveries) and never logs a payload.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service_kit.errors import APIError

from .client import AdminClient
from .errors import AriesError
from .runner import AgentConfig, AgentProcess

LOG = logging.getLogger("cartera.aries.service")


def derive_wallet_key(master_key: bytes, name: str) -> str:
    """The askar wallet key of the agent ``name``: HMAC-SHA256 of the service master key (base64url)."""
    digest = hmac.new(master_key, f"cartera/aries/wallet-key/{name}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def webhook_key_hash(key: str) -> str:
    """What a service stores of a webhook key (256-bit random values: SHA-256 suffices)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def loopback_base(host: str, port: int) -> str:
    """The service's own base URL as a local agent reaches it."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - mapping a bind address
    return f"http://{reach}:{port}"


@dataclass
class AgentRuntime:
    """The agent a service uses: its admin client, its process when the service started it, its webhook key."""

    client: AdminClient
    webhook_key: str | None = field(default=None, repr=False)
    process: AgentProcess | None = None

    def check(self) -> None:
        """Raise :class:`~aries.errors.AgentCrashed` when a managed agent exited unexpectedly."""
        if self.process is not None:
            self.process.check()

    async def stop(self) -> None:
        """Close the client and stop a managed agent."""
        await self.client.aclose()
        if self.process is not None:
            await asyncio.to_thread(self.process.stop)


async def start_runtime(*, name: str, label: str, admin_url: str, admin_api_key: str | None,
                        webhook_key: str | None, data_dir: Path, inbound_port: int, admin_port: int,
                        endpoint: str, webhook_url: str, master_key: bytes,
                        contexts: dict[str, Any] | None = None, extra_args: Iterable[str] = (),
                        timeout: float = 60.0) -> AgentRuntime:
    """Connect to the configured agent, or start one (``admin_url`` empty) and wait until it is ready."""
    if admin_url:
        if not admin_api_key:
            raise AriesError("agent_misconfigured", "an external agent needs its admin API key")
        return AgentRuntime(AdminClient(admin_url, admin_api_key), webhook_key)
    data_dir.mkdir(parents=True, exist_ok=True)
    contexts_file = None
    if contexts:
        contexts_file = data_dir / "contexts.json"
        contexts_file.write_text(json.dumps(contexts), encoding="utf-8")
    hook_key = secrets.token_urlsafe(32)
    config = AgentConfig(name=name, label=label, data_dir=data_dir, inbound_port=inbound_port,
                         admin_port=admin_port, endpoint=endpoint,
                         wallet_key=derive_wallet_key(master_key, name), webhook_url=webhook_url,
                         webhook_api_key=hook_key, contexts_file=contexts_file, extra_args=list(extra_args))
    process = AgentProcess(config)
    await asyncio.to_thread(process.start, timeout)
    return AgentRuntime(AdminClient(config.admin_url, config.admin_api_key), hook_key, process)


def unavailable_error(exc: AriesError) -> APIError:
    """The HTTP answer when the agent cannot serve: 503 with the Aries code and a retry hint."""
    return APIError(503, "temporarily_unavailable", f"the Aries agent is unavailable: {exc.detail}",
                    {"Retry-After": "30"}, extra={"code": exc.code})


def agent_client(runtime: AgentRuntime | None, *, enabled: bool, owner: str) -> AdminClient:
    """The running agent's admin client, or 404 (channel off on ``owner``) / 503 (agent gone)."""
    if not enabled:
        raise APIError(404, "not_found", f"the Aries channel is not enabled on this {owner}")
    if runtime is None:
        raise APIError(503, "temporarily_unavailable", "the Aries agent is not running", {"Retry-After": "30"},
                       extra={"code": "aries.agent_unavailable"})
    try:
        runtime.check()
    except AriesError as exc:
        raise unavailable_error(exc) from exc
    return runtime.client
