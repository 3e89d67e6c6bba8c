"""A checkpoint due after a one-statement issuance is signed after that issuance committed: whatever
fails there (the database, or an HSM's signer) is logged and never reaches the credential endpoint,
whose error path would release the claim of a credential already issued."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from issuer.audit import CHECKPOINT_EVERY, checkpoint_if_due
from service_kit.pkcs11 import PKCS11Error
from ssi.jose import Key

pytestmark = pytest.mark.anyio


class _TokenGone:
    """The part of the issuer context the checkpoint uses, its token gone as the checkpoint starts."""

    @contextlib.asynccontextmanager
    async def write_connection(self) -> AsyncIterator[Any]:
        raise PKCS11Error("token_unavailable", "the token was removed")
        yield  # pragma: no cover


async def test_a_failed_checkpoint_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="issuer.audit"):
        await checkpoint_if_due(_TokenGone(), "tenant", CHECKPOINT_EVERY, signer=Key.generate(),  # type: ignore[arg-type]
                                issuer="https://issuer.example/t/x")
    [record] = [r for r in caplog.records if r.getMessage() == "audit checkpoint not signed"]
    assert record.error == "PKCS11Error" and record.seq == CHECKPOINT_EVERY  # type: ignore[attr-defined]


class _Recording:
    """The part of the issuer context the checkpoint uses, recording each attempt to open a connection."""

    def __init__(self) -> None:
        self.attempts = 0

    @contextlib.asynccontextmanager
    async def write_connection(self) -> AsyncIterator[Any]:
        self.attempts += 1
        raise PKCS11Error("token_unavailable", "the token was removed")
        yield  # pragma: no cover


async def test_no_checkpoint_is_attempted_between_due_entries(caplog: pytest.LogCaptureFixture) -> None:
    ctx = _Recording()
    with caplog.at_level(logging.WARNING, logger="issuer.audit"):
        for seq in (1, CHECKPOINT_EVERY - 1, CHECKPOINT_EVERY + 1):
            await checkpoint_if_due(ctx, "tenant", seq, signer=Key.generate(),  # type: ignore[arg-type]
                                    issuer="https://issuer.example/t/x")
    assert ctx.attempts == 0
    assert not [r for r in caplog.records if r.getMessage() == "audit checkpoint not signed"]
    # the due entry itself is attempted (so the recording context does see an attempt)
    await checkpoint_if_due(ctx, "tenant", 2 * CHECKPOINT_EVERY, signer=Key.generate(),  # type: ignore[arg-type]
                            issuer="https://issuer.example/t/x")
    assert ctx.attempts == 1
