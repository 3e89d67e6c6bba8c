"""Provisioning for the composition root (``cartera run``): configure the wallet for the embedded system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service_kit.db import Database
from service_kit.migrations import run_migrations_async

from .app import MIGRATIONS
from .context import master_box
from .settings import CatalogueEntry, WalletSettings
from .vault import Vault


async def provision_demo(settings: WalletSettings, *, issuer_anchor_pems: list[bytes], rp_anchor_pems: list[bytes],
                         idp_url: str, idp_client_secret: str | None = None,
                         catalogue: list[dict[str, Any]] | None = None,
                         app_redirect_uris: list[str] | None = None) -> tuple[WalletSettings, dict[str, Any]]:
    """Write the anchor PEM files under ``data_dir``, migrate the database, create the subject index key,
    and return ``(settings to run the wallet with, what to print)``. Idempotent.

    The returned dict: ``{"wallet_url", "login_url", "openapi_url", "issuer_anchor_file", "rp_anchor_file"}``.
    The identity provider must register ``<wallet public_url>/v1/auth/callback`` for the wallet's client id.
    """
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    issuer_file = data_dir / "wallet-issuer-anchors.pem"
    rp_file = data_dir / "wallet-rp-anchors.pem"
    issuer_file.write_bytes(b"".join(issuer_anchor_pems))
    rp_file.write_bytes(b"".join(rp_anchor_pems))
    update: dict[str, Any] = {"issuer_anchor_files": [issuer_file], "rp_anchor_files": [rp_file],
                              "idp_url": idp_url.rstrip("/")}
    if idp_client_secret is not None:
        from pydantic import SecretStr

        update["idp_client_secret"] = SecretStr(idp_client_secret)
    if catalogue is not None:
        update["issuer_catalogue"] = [CatalogueEntry.model_validate(c) for c in catalogue]
    if app_redirect_uris is not None:
        update["app_redirect_uris"] = list(app_redirect_uris)
    configured = settings.model_copy(update=update)
    await run_migrations_async(MIGRATIONS, configured.database_url)
    db = Database(configured.database_url)
    try:
        await Vault(master_box(configured)).ensure_index_key(db)
    finally:
        await db.dispose()
    return configured, {
        "wallet_url": configured.public_url,
        # What an app opens to log a citizen in: its redirect URI and the S256 hash of its own PKCE
        # verifier, which /v1/auth/token asks for with the one-time code.
        "login_url": f"{configured.public_url}/v1/auth/login?provider=valid&redirect_uri=<app redirect>"
                     "&code_challenge=<S256 of the app's code_verifier>&code_challenge_method=S256",
        "openapi_url": f"{configured.public_url}/openapi.json",
        "issuer_anchor_file": str(issuer_file), "rp_anchor_file": str(rp_file),
    }


async def rotate_master_key(settings: WalletSettings, new_key: bytes) -> int:
    """Rewrap every data key and service key under ``new_key``; return how many were rewrapped
    (:func:`wallet_api.vault.rewrap_all`: in batches, each committed, so an interrupted run is run again).

    ``settings`` holds the current master key (and any previous ones). Zero-downtime procedure:
    (1) configure the running services with the new key as ``master_key`` and the old one in
    ``previous_master_keys``/``previous_master_key_files`` and restart them one by one — they open values
    sealed under either key; (2) run this (``cartera wallet rotate-master-key``); (3) drop the old key.
    """
    from service_kit.crypto import SecretBox, load_master_key

    from .context import previous_master_keys
    from .vault import rewrap_all

    # The new key seals; the configured current key and any older ones still open (a value sealed
    # under a key from an earlier, unfinished rotation is rewrapped too).
    box = SecretBox(new_key, previous_keys=[load_master_key(settings), *previous_master_keys(settings)])
    db = Database(settings.database_url)
    try:
        return await rewrap_all(db, box)
    finally:
        await db.dispose()
