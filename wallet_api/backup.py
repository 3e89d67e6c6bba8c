"""Encrypted wallet backups: export and import with a passphrase.

File format (JSON)::

    {"format": "cartera-wallet-backup", "version": 1,
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<b64url>"},
     "enc": "A256GCM", "nonce": "<b64url>", "ciphertext": "<b64url>"}

The key is scrypt(passphrase) — scrypt rather than Argon2 because it is in Python's standard library
(no extra dependency) and memory-hard; N=2^17, r=8 costs about 128 MiB and a fraction of a second,
slowing offline guessing. The plaintext is the JSON of every credential (tokens, holder private keys,
display data) and the history; the header members are the AES-GCM associated data, so they cannot be
changed unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from service_kit.errors import APIError
from ssi.encoding import b64url_decode, b64url_encode
from ssi.errors import EncodingError

from .context import WalletContext
from .deps import Principal
from .models import HistoryEntry
from .store import add_credential, add_history, load_credentials

FORMAT = "cartera-wallet-backup"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
MIN_PASSPHRASE = 10


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=256 * 1024 * 1024)


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def seal_backup(content: dict[str, Any], passphrase: str, *, n: int = SCRYPT_N) -> dict[str, Any]:
    """Encrypt ``content`` under a key derived from ``passphrase``."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise APIError(400, "weak_passphrase", f"the passphrase needs at least {MIN_PASSPHRASE} characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {"format": FORMAT, "version": 1,
              "kdf": {"name": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64url_encode(salt)},
              "enc": "A256GCM"}
    key = _derive(passphrase, salt, n, SCRYPT_R, SCRYPT_P)
    ciphertext = AESGCM(key).encrypt(nonce, json.dumps(content, ensure_ascii=False).encode(), _aad(header))
    return {**header, "nonce": b64url_encode(nonce), "ciphertext": b64url_encode(ciphertext)}


def open_backup(backup: Any, passphrase: str) -> dict[str, Any]:
    """Decrypt a backup file; 400 ``invalid_backup`` for a bad file or a wrong passphrase."""
    try:
        if not isinstance(backup, dict) or backup.get("format") != FORMAT or backup.get("version") != 1 \
                or backup.get("enc") != "A256GCM":
            raise ValueError("not a backup")
        kdf = backup["kdf"]
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if kdf.get("name") != "scrypt" or not (2**10 <= n <= 2**18 and 1 <= r <= 16 and 1 <= p <= 4):
            raise ValueError("unsupported kdf")
        header = {k: backup[k] for k in ("format", "version", "kdf", "enc")}
        key = _derive(passphrase, b64url_decode(kdf["salt"]), n, r, p)
        plaintext = AESGCM(key).decrypt(b64url_decode(backup["nonce"]), b64url_decode(backup["ciphertext"]),
                                        _aad(header))
        content = json.loads(plaintext)
    except InvalidTag as exc:
        raise APIError(400, "invalid_backup", "wrong passphrase or damaged backup") from exc
    except (KeyError, TypeError, ValueError, EncodingError) as exc:
        raise APIError(400, "invalid_backup", "the file is not a Cartera wallet backup") from exc
    if not isinstance(content, dict) or not isinstance(content.get("credentials"), list):
        raise APIError(400, "invalid_backup", "the backup content is not recognised")
    return content


async def export_wallet(ctx: WalletContext, me: Principal, passphrase: str) -> dict[str, Any]:
    """Every credential (with its copies and keys) and the history, encrypted."""
    async with ctx.db.read_session() as session:
        credentials = await load_credentials(session, me.key)
        history = (await session.execute(select(HistoryEntry).where(HistoryEntry.wallet_id == me.wallet_id)
                                         .order_by(HistoryEntry.created_at))).scalars().all()
        content = {
            "credentials": [{"vct": c.row.vct, "issuer": c.row.issuer, "details": c.details,
                             "iat": c.row.issued_at.timestamp() if c.row.issued_at else None,
                             "exp": c.row.expires_at.timestamp() if c.row.expires_at else None,
                             "status": c.row.status,
                             "copies": [{"token": cp.token, "holder_jwk": cp.holder_key.private_jwk()}
                                        for cp in c.copies]} for c in credentials],
            "history": [{"kind": h.kind, "created_at": h.created_at.isoformat(),
                         "details": me.key.open("history", h.id, h.sealed)} for h in history],
        }
    return seal_backup(content, passphrase)


async def import_wallet(ctx: WalletContext, me: Principal, backup: Any, passphrase: str) -> dict[str, int]:
    """Add a backup's credentials (skipping ones already present) and history to this wallet."""
    content = open_backup(backup, passphrase)
    async with ctx.db.read_session() as session:
        present = {cp.token for c in await load_credentials(session, me.key) for cp in c.copies}
    added = 0
    async with ctx.db.session() as session:
        for item in content["credentials"]:
            try:
                copies = [(str(cp["token"]), dict(cp["holder_jwk"])) for cp in item["copies"]]
                if not copies or any(token in present for token, _ in copies):
                    continue
                await add_credential(session, me.key, vct=str(item["vct"]), issuer=str(item["issuer"]),
                                     details=dict(item["details"]), copies=copies, iat=item.get("iat"),
                                     exp=item.get("exp"), status=str(item.get("status", "valid")))
            except (KeyError, TypeError, ValueError) as exc:
                raise APIError(400, "invalid_backup", "a credential in the backup is malformed") from exc
            added += 1
        for entry in content.get("history", []):
            if isinstance(entry, dict) and isinstance(entry.get("details"), dict):
                await add_history(session, me.key, str(entry.get("kind", "imported"))[:20],
                                  {**entry["details"], "imported_from_backup": True,
                                   "original_time": entry.get("created_at")})
    return {"credentials_added": added}
