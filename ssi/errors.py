"""Typed errors with stable, machine-readable codes.

Every parser in ``ssi`` raises a subclass of :class:`SSIError` for bad input, never a bare
``KeyError``/``ValueError``/``IndexError``. Callers (services, CLI) map ``code`` to their own
protocol errors; ``code`` values are part of the public contract and must not change.
"""

from __future__ import annotations


class SSIError(Exception):
    """Base of every error raised by ``ssi`` for input it refuses.

    ``code`` is a stable dotted identifier such as ``"sd_jwt.unreferenced_disclosure"``;
    ``detail`` is a human-readable sentence that never contains secrets or claim values.
    """

    area = "ssi"

    def __init__(self, code: str, detail: str = "") -> None:
        if "." not in code:
            code = f"{self.area}.{code}"
        self.code = code
        self.detail = detail or code
        super().__init__(f"{code}: {self.detail}")


class EncodingError(SSIError):
    area = "encoding"


class JOSEError(SSIError):
    area = "jose"


class X509Error(SSIError):
    area = "x509"


class DIDError(SSIError):
    area = "did"


class SDJWTError(SSIError):
    area = "sd_jwt"


class SDJWTVCError(SSIError):
    area = "sd_jwt_vc"


class StatusListError(SSIError):
    area = "status_list"


class DCQLError(SSIError):
    area = "dcql"


class MessageError(SSIError):
    area = "message"


class QRError(SSIError):
    area = "qr"


class DisplayNameError(SSIError):
    area = "name"
