"""Typed errors of the Aries channel, with stable codes (``aries.<reason>``)."""

from __future__ import annotations

from ssi.errors import SSIError


class AriesError(SSIError):
    """Anything the Aries channel refuses or cannot do; ``code`` is stable, ``detail`` never holds claims."""

    area = "aries"


class AgentUnavailable(AriesError):
    """The ACA-Py agent is not running, not reachable, or did not answer in time.

    ``maybe_done``: the call reached the agent before the answer was lost (a read timeout, a dropped
    connection), so the agent may have done what it was asked — sent a message, say. False when the
    call certainly never left (no connection could be made)."""

    def __init__(self, detail: str, *, maybe_done: bool = False) -> None:
        self.maybe_done = maybe_done
        super().__init__("agent_unavailable", detail)


class AgentRequestFailed(AriesError):
    """The agent answered an admin API call with an error status."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        super().__init__("agent_request_failed", detail)


class AgentCrashed(AriesError):
    """The agent process exited while it was expected to run (``detail`` names the log file)."""

    def __init__(self, detail: str, returncode: int | None = None) -> None:
        self.returncode = returncode
        super().__init__("agent_crashed", detail)


class WebhookRefused(AriesError):
    """A webhook call without the right key, or with a payload we cannot read."""


class VerificationFailed(AriesError):
    """A DIDComm presentation that our policies refuse (code names the policy)."""


def transient(exc: AriesError) -> bool:
    """Whether an agent error says nothing about what was asked: the agent not running or not answering
    (``aries.agent_unavailable``, ``aries.agent_crashed``), or answering 5xx, 408 or 429. The same
    call may succeed later; any other answer (a 404, a 400) is the agent's definite one."""
    if isinstance(exc, AgentRequestFailed):
        return exc.status >= 500 or exc.status in (408, 429)
    return exc.code in ("aries.agent_unavailable", "aries.agent_crashed")
