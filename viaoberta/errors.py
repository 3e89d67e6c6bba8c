"""Typed errors of the Via Oberta client, with stable machine-readable codes.

Codes (part of the public contract): ``viaoberta.xml_forbidden`` (DOCTYPE, entities),
``viaoberta.too_large``, ``viaoberta.malformed`` (not well-formed XML or not SCSP),
``viaoberta.wrong_namespace``, ``viaoberta.missing_element``, ``viaoberta.unsigned``,
``viaoberta.bad_signature``, ``viaoberta.untrusted_signer``, ``viaoberta.bad_request`` (a
:class:`~viaoberta.messages.QueryRequest` that cannot be sent), ``viaoberta.unknown_product``,
``viaoberta.http_status`` (an HTTP status that is neither success nor transient), and for
:class:`ViaObertaUnavailable`: ``viaoberta.unavailable`` and ``viaoberta.timeout``.
"""

from __future__ import annotations

from ssi.errors import SSIError


class ViaObertaError(SSIError):
    """Via Oberta refused, or answered something Cartera cannot trust or understand.

    ``detail`` never contains source data (claim values, identifiers of the subject).
    """

    area = "viaoberta"


class ViaObertaUnavailable(ViaObertaError):
    """The platform could not be reached (or kept failing transiently) after the bounded retries."""
