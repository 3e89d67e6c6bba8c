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


async def test_no_checkpoint_is_attempted_between_due_entries() -> None:
    await checkpoint_if_due(_TokenGone(), "tenant", CHECKPOINT_EVERY + 1, signer=Key.generate(),  # type: ignore[arg-type]
                            issuer="https://issuer.example/t/x")
