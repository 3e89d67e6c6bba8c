"""FastAPI dependencies: the wallet context and the authenticated citizen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service_kit.errors import APIError

from .auth import authenticate
from .context import WalletContext
from .models import Session, Wallet
from .vault import DataKey


async def get_ctx(request: Request) -> WalletContext:
    """The app's :class:`WalletContext` (async: FastAPI would run a plain ``def`` in its thread pool)."""
    return request.app.state.wallet


@dataclass
class Principal:
    """The citizen behind a request: their session, wallet and unwrapped data key."""

    session: Session
    wallet: Wallet
    key: DataKey

    @property
    def wallet_id(self) -> str:
        return self.wallet.id


async def get_principal(request: Request, ctx: Annotated[WalletContext, Depends(get_ctx)]) -> Principal:
    """Authenticate the bearer access token; every wallet route depends on this."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "invalid_token", "a Bearer access token is required",
                       {"WWW-Authenticate": 'Bearer realm="wallet"'})
    sess = await authenticate(ctx, token.strip())
    async with ctx.db.read_session() as session:
        wallet = await session.get(Wallet, sess.wallet_id)
    if wallet is None:
        raise APIError(401, "invalid_token", "the wallet no longer exists")
    request.state.wallet_id = wallet.id  # for the log of a stored row that does not open (wallet_api.app)
    return Principal(session=sess, wallet=wallet, key=ctx.vault.data_key(wallet))


Ctx = Annotated[WalletContext, Depends(get_ctx)]
Citizen = Annotated[Principal, Depends(get_principal)]
