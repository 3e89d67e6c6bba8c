"""Start, watch and stop ACA-Py agent processes (the sidecar of the Aries channel).

ACA-Py pins Pydantic 1, so it runs from its own virtual environment (``.venv-acapy``, built by
``make acapy``) as a separate process. Each agent gets:

- an askar wallet (SQLite under its data directory by default, PostgreSQL when a URL is given),
  opened with the ``kdf:argon2i:int`` key derivation (about 2.6 s to start against 4 s with the
  default ``argon2i:mod``; the wallet key itself is a random 256-bit secret, so the weaker stretch
  costs nothing);
- ``--no-ledger``: the channel uses did:key only;
- an inbound DIDComm HTTP endpoint and an admin API, both on loopback, the admin API behind an API
  key; secrets travel by environment variables, never on the command line (visible in ``ps``);
- webhooks posted to the controlling service with their own API key (``url#key``, which ACA-Py sends
  as the ``x-api-key`` header);
- the ``cartera_contexts`` plugin that pre-caches the JSON-LD contexts of our credential types (and
  records a holder's problem report on a connectionless proof request, which ACA-Py 0.12.8 fails on);
- a log file kept in its data directory.

:meth:`AgentProcess.start` waits for ``/status/ready``; a process that exits while starting or
running is detected (a watcher thread) and reported as :class:`~aries.errors.AgentCrashed`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from .errors import AgentCrashed, AgentUnavailable, AriesError

LOG = logging.getLogger("cartera.aries.runner")

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGINS_DIR = Path(__file__).resolve().parent / "acapy_plugins"
KEY_DERIVATION = "kdf:argon2i:int"


def acapy_executable() -> Path:
    """The ``aca-py`` script: ``$CARTERA_ACAPY_BIN`` or ``.venv-acapy/bin/aca-py`` in the repository."""
    configured = os.environ.get("CARTERA_ACAPY_BIN")
    path = Path(configured) if configured else REPO_ROOT / ".venv-acapy" / "bin" / "aca-py"
    if not path.is_file():
        raise AriesError("acapy_missing", f"ACA-Py is not installed at {path}; run 'make acapy'")
    return path


@dataclass
class AgentConfig:
    """Everything needed to run one agent. Ports must be free; keys are generated when left empty."""

    name: str
    data_dir: Path
    inbound_port: int
    admin_port: int
    label: str = ""
    host: str = "127.0.0.1"
    endpoint: str = ""
    admin_api_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    wallet_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    webhook_url: str | None = None
    webhook_api_key: str | None = field(default=None, repr=False)
    postgres_url: str | None = field(default=None, repr=False)
    contexts_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    log_level: str = "warning"

    @property
    def admin_url(self) -> str:
        """Base URL of the admin API."""
        return f"http://{self.host}:{self.admin_port}"

    @property
    def public_endpoint(self) -> str:
        """The DIDComm endpoint published in invitations."""
        return self.endpoint or f"http://{self.host}:{self.inbound_port}"

    @property
    def log_file(self) -> Path:
        """Where the agent's output is kept."""
        return self.data_dir / "agent.log"


def postgres_storage(url: str) -> tuple[str, str]:
    """Translate ``postgresql://user:pw@host:port/db`` into askar's storage config and credentials JSON."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+asyncpg"} or not parts.hostname:
        raise AriesError("bad_storage_url", "wallet storage URL must be postgresql://user:password@host:port")
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    config = {"url": f"{parts.hostname}:{parts.port or 5432}", "max_connections": 5}
    creds = {"account": user, "password": password, "admin_account": user, "admin_password": password}
    return json.dumps(config), json.dumps(creds)


def build_command(config: AgentConfig) -> tuple[list[str], dict[str, str]]:
    """The ``aca-py start`` argument list and the extra environment (secrets) for ``config``."""
    args = [
        str(acapy_executable()), "start",
        "--label", config.label or config.name,
        "--inbound-transport", "http", config.host, str(config.inbound_port),
        "--outbound-transport", "http",
        "--endpoint", config.public_endpoint,
        "--admin", config.host, str(config.admin_port),
        "--no-ledger",
        "--wallet-type", "askar",
        "--wallet-name", config.name,
        "--wallet-key-derivation-method", KEY_DERIVATION,
        "--auto-provision",
        "--preserve-exchange-records",
        "--log-level", config.log_level,
        "--plugin", "cartera_contexts",
    ]
    env = {
        "ACAPY_ADMIN_API_KEY": config.admin_api_key,
        "ACAPY_WALLET_KEY": config.wallet_key,
        "ACAPY_HOME": str(config.data_dir),
        "PYTHONPATH": str(PLUGINS_DIR),
    }
    if config.postgres_url:
        storage_config, storage_creds = postgres_storage(config.postgres_url)
        args += ["--wallet-storage-type", "postgres_storage", "--wallet-storage-config", storage_config]
        env["ACAPY_WALLET_STORAGE_CREDS"] = storage_creds
    if config.webhook_url:
        hook = config.webhook_url
        if config.webhook_api_key:
            hook = f"{hook}#{config.webhook_api_key}"
        env["ACAPY_WEBHOOK_URL"] = hook
    if config.contexts_file:
        args += ["--plugin-config-value", f"cartera_contexts.file={config.contexts_file}"]
    args += config.extra_args
    return args, env


#: What the agent inherits of our environment (besides ``ACAPY_*`` settings an operator sets): the
#: locale, paths and TLS trust store a Python process needs, nothing of the service's own.
INHERITED_ENVIRONMENT = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "LD_LIBRARY_PATH", "SYSTEMROOT"})


def agent_environment(parent: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: an allow-list of ``parent`` and ``extra`` (its keys, ours).

    The agent faces the internet and runs another project's code; the service's environment holds its
    master key, database URL and API secrets (``CARTERA_*``), which the agent must never see. Our
    virtualenv (``VIRTUAL_ENV``, ``PYTHONPATH``) is left out too: the sidecar has its own interpreter.
    """
    env = {name: value for name, value in parent.items()
           if name in INHERITED_ENVIRONMENT or name.startswith("ACAPY_")}
    env.update(extra)
    return env


class AgentProcess:
    """One running ACA-Py agent. Use :meth:`start` / :meth:`stop`, or as a context manager."""

    def __init__(self, config: AgentConfig, on_crash: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.on_crash = on_crash
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self.crashed_with: int | None = None
        self.started_in: float | None = None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id, while running."""
        return self._process.pid if self._process else None

    def check(self) -> None:
        """Raise :class:`AgentCrashed` if the agent exited without being asked to."""
        if self.crashed_with is not None:
            raise AgentCrashed(f"agent {self.config.name!r} exited with code {self.crashed_with}; "
                               f"log: {self.config.log_file}", self.crashed_with)

    def start(self, timeout: float = 60.0) -> AgentProcess:
        """Start the agent and wait until its admin API says it is ready."""
        if self.running:
            return self
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        args, extra_env = build_command(self.config)
        env = agent_environment(os.environ, extra_env)
        began = time.monotonic()
        log = open(self.config.log_file, "ab")  # noqa: SIM115 - handed to the child, closed after spawn
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                args, stdout=log, stderr=subprocess.STDOUT, env=env,
                stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise AgentUnavailable(f"could not start ACA-Py: {exc.strerror}") from exc
        finally:
            log.close()
        self._stopping = False
        self.crashed_with = None
        threading.Thread(target=self._watch, name=f"acapy-{self.config.name}", daemon=True).start()
        self._await_ready(began + timeout)
        self.started_in = time.monotonic() - began
        LOG.info("agent %s ready in %.2fs (pid %s)", self.config.name, self.started_in, self.pid)
        return self

    def _watch(self) -> None:
        process = self._process
        if process is None:
            return
        code = process.wait()
        if not self._stopping:
            self.crashed_with = code
            LOG.error("agent %s exited unexpectedly with code %s; log kept at %s",
                      self.config.name, code, self.config.log_file)
            if self.on_crash is not None:
                self.on_crash(code)

    def _await_ready(self, deadline: float) -> None:
        headers = {"x-api-key": self.config.admin_api_key}
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self._process is not None and self._process.poll() is not None:
                    self.crashed_with = self._process.returncode
                    self.check()
                try:
                    answer = client.get(f"{self.config.admin_url}/status/ready", headers=headers)
                    if answer.status_code == 200 and answer.json().get("ready") is True:
                        return
                except (httpx.TransportError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise AgentUnavailable(f"agent {self.config.name!r} not ready in time; "
                                           f"log: {self.config.log_file}")
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the agent (SIGTERM, then SIGKILL after ``timeout``)."""
        process = self._process
        if process is None:
            return
        self._stopping = True
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._process = None

    def kill(self) -> None:
        """Kill the process without marking it as stopping (tests use this to simulate a crash)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
