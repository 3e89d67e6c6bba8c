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

Several worker processes of one service share ONE managed agent: an exclusive ``flock`` on
``<data_dir>/agent.lock`` decides which worker starts it (the owner, holding the lock for the agent's
life); the owner then writes ``<data_dir>/agent.json`` (admin URL and a per-start nonce, no secret) and
every other worker attaches to that admin URL with the admin API key derived from the master key and
the nonce. Webhooks go to the service's port, which any worker answers: the state they act on is in
the database. A worker that starts while no live worker holds the lock becomes the owner: it adopts the
agent a killed owner left running (stopping it at the end as its own), else starts a new one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service_kit.errors import APIError

from .client import AdminClient
from .errors import AgentUnavailable, AriesError, WebhookRefused
from .runner import AgentConfig, AgentProcess

LOG = logging.getLogger("cartera.aries.service")


def derive_wallet_key(master_key: bytes, name: str) -> str:
    """The askar wallet key of the agent ``name``: HMAC-SHA256 of the service master key (base64url)."""
    digest = hmac.new(master_key, f"cartera/aries/wallet-key/{name}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def derive_admin_key(master_key: bytes, name: str, start_id: str) -> str:
    """The admin API key of one start of the managed agent ``name`` (every worker can derive it)."""
    message = f"cartera/aries/admin-key/{name}/{start_id}".encode()
    digest = hmac.new(master_key, message, hashlib.sha256).digest()
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
    #: The open ``agent.lock`` of the worker that owns the managed agent (released at stop).
    lock: SharedAgentLock | None = field(default=None, repr=False)
    #: ``owner``, ``adopted`` (the agent of an owner that died), ``attached`` (another worker's) or ``external``.
    role: str = "external"
    #: Pid of an adopted agent, which the adopter stops at the end as if it had started it.
    agent_pid: int | None = None

    def check(self) -> None:
        """Raise :class:`~aries.errors.AgentCrashed` when a managed agent exited unexpectedly."""
        if self.process is not None:
            self.process.check()

    async def stop(self) -> None:
        """Close the client; the owner also stops the agent and gives up the lock."""
        await self.client.aclose()
        if self.process is not None:
            await asyncio.to_thread(self.process.stop)
        elif self.agent_pid is not None:
            await asyncio.to_thread(_stop_adopted, self.agent_pid)
        if self.lock is not None:
            self.lock.release()


def _stop_adopted(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM an adopted agent (only if that pid is still an ACA-Py process) and wait for it to go."""
    try:
        if b"aca-py" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # the pid was reused: not ours to stop
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


class SharedAgentLock:
    """``<data_dir>/agent.lock`` (who owns the managed agent) and ``agent.json`` (where to find it).

    ``flock`` locks belong to an open file description: the kernel releases them when the owning
    process dies however it dies, so a crashed owner never blocks a takeover.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "agent.lock"
        self.info_path = data_dir / "agent.json"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock without waiting; True when this process now owns the agent."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Forget the published agent and release the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.info_path.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def publish(self, admin_url: str, start_id: str, agent_pid: int | None) -> None:
        """Tell the other workers where the agent is (written whole, then renamed: never seen half-written)."""
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"admin_url": admin_url, "start_id": start_id, "owner_pid": os.getpid(),
                                   "agent_pid": agent_pid}), encoding="utf-8")
        os.replace(tmp, self.info_path)

    def unpublish(self) -> None:
        """Remove what a previous owner published (called by a new owner before it starts the agent)."""
        with contextlib.suppress(FileNotFoundError):
            self.info_path.unlink()

    def published(self) -> dict[str, Any] | None:
        """What the owner published (``admin_url``, ``start_id``, ``agent_pid``), or None."""
        try:
            data = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(data, dict) or not data.get("admin_url") or not data.get("start_id"):
            return None
        pid = data.get("agent_pid")
        return {"admin_url": str(data["admin_url"]), "start_id": str(data["start_id"]),
                "agent_pid": pid if isinstance(pid, int) else None}


async def start_runtime(*, name: str, label: str, admin_url: str, admin_api_key: str | None,
                        webhook_key: str | None, data_dir: Path, inbound_port: int, admin_port: int,
                        endpoint: str, webhook_url: str, master_key: bytes,
                        contexts: dict[str, Any] | None = None, extra_args: Iterable[str] = (),
                        timeout: float = 60.0, admin_timeout: float = 15.0) -> AgentRuntime:
    """Connect to the configured agent, or start one (``admin_url`` empty) and wait until it is ready.

    An agent run elsewhere needs both its admin API key and its webhook key, else
    ``aries.agent_misconfigured`` and the service does not start. ``timeout`` bounds the start-up;
    ``admin_timeout`` every later admin API call."""
    if admin_url:
        if not admin_api_key:
            raise AriesError("agent_misconfigured", "an external agent needs its admin API key")
        if not webhook_key:
            # Without it every webhook is refused (401): the service would run, its exchanges never move.
            raise AriesError("agent_misconfigured", "an external agent needs its webhook key (the x-api-key "
                                                    "its webhooks carry)")
        return AgentRuntime(AdminClient(admin_url, admin_api_key, timeout=admin_timeout), webhook_key)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = SharedAgentLock(data_dir)
    deadline = time.monotonic() + timeout
    while True:
        if lock.try_acquire():
            # An owner killed outright leaves its agent running (its own session): adopt it rather
            # than start a second one on the same ports.
            adopted = await _attach(lock, name, master_key, admin_timeout)
            if adopted is not None:
                adopted.lock, adopted.role, adopted.agent_pid = lock, "adopted", (lock.published() or {}).get("agent_pid")
                LOG.info("adopted the managed agent %s of a worker that is gone", name)
                return adopted
            return await _start_owned(lock, name=name, label=label, data_dir=data_dir, inbound_port=inbound_port,
                                      admin_port=admin_port, endpoint=endpoint, webhook_url=webhook_url,
                                      master_key=master_key, contexts=contexts, extra_args=extra_args,
                                      timeout=max(deadline - time.monotonic(), 5.0), admin_timeout=admin_timeout)
        attached = await _attach(lock, name, master_key, admin_timeout)
        if attached is not None:
            LOG.info("attached to the managed agent %s of another worker", name)
            return attached
        if time.monotonic() > deadline:
            raise AgentUnavailable(f"the agent started by another worker of {name!r} did not become ready in time")
        await asyncio.sleep(0.2)


async def _start_owned(lock: SharedAgentLock, *, name: str, label: str, data_dir: Path, inbound_port: int,
                       admin_port: int, endpoint: str, webhook_url: str, master_key: bytes,
                       contexts: dict[str, Any] | None, extra_args: Iterable[str], timeout: float,
                       admin_timeout: float) -> AgentRuntime:
    lock.unpublish()
    contexts_file = None
    if contexts:
        contexts_file = data_dir / "contexts.json"
        contexts_file.write_text(json.dumps(contexts), encoding="utf-8")
    start_id = secrets.token_urlsafe(16)
    hook_key = secrets.token_urlsafe(32)
    config = AgentConfig(name=name, label=label, data_dir=data_dir, inbound_port=inbound_port,
                         admin_port=admin_port, endpoint=endpoint,
                         admin_api_key=derive_admin_key(master_key, name, start_id),
                         wallet_key=derive_wallet_key(master_key, name), webhook_url=webhook_url,
                         webhook_api_key=hook_key, contexts_file=contexts_file, extra_args=list(extra_args))
    process = AgentProcess(config)
    try:
        await asyncio.to_thread(process.start, timeout)
    except BaseException:
        lock.release()
        raise
    lock.publish(config.admin_url, start_id, process.pid)
    LOG.info("managed agent %s started by this worker (pid %s)", name, os.getpid())
    return AgentRuntime(AdminClient(config.admin_url, config.admin_api_key, timeout=admin_timeout), hook_key,
                        process, lock, "owner")


async def _attach(lock: SharedAgentLock, name: str, master_key: bytes, admin_timeout: float) -> AgentRuntime | None:
    """The runtime of the agent another worker started, once it answers ready with the derived key."""
    info = lock.published()
    if info is None:
        return None
    # A short probe: a published agent that does not answer at once is treated as not there yet.
    client = AdminClient(info["admin_url"], derive_admin_key(master_key, name, info["start_id"]),
                         timeout=min(2.0, admin_timeout))
    try:
        ready = await client.ready()
    except AriesError:
        ready = False
    await client.aclose()
    if not ready:
        return None
    return AgentRuntime(AdminClient(info["admin_url"], derive_admin_key(master_key, name, info["start_id"]),
                                    timeout=admin_timeout), None, None, None, "attached")


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


def webhook_refused_error(exc: WebhookRefused) -> APIError:
    """The HTTP answer to a webhook delivery we refuse: 401 without the right key, 400 otherwise."""
    if exc.code == "aries.webhook_unauthorized":
        return APIError(401, "unauthorized", exc.detail, extra={"code": exc.code})
    return APIError(400, "invalid_request", exc.detail, extra={"code": exc.code})
