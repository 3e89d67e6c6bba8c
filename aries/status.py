"""W3C Bitstring Status List for the JSON-LD credentials of the Aries channel.

A credential carries a ``BitstringStatusListEntry`` (:func:`aries.jsonld.status_entry`) pointing at a
status list credential served by the issuer. That credential's ``credentialSubject.encodedList`` is the
Multibase base64url (``u`` prefix, no padding) of the GZIP-compressed bitstring, at least 16 KB
uncompressed (131,072 entries) for group privacy; bit 0 is the most significant bit of the first byte.
The list credential is signed by the issuer's agent (``/vc/credentials/issue``) with the same DID as
the credentials it covers, and a verifier checks it through its own agent before reading a bit.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from typing import Any

from service_kit.outbound import IDENTITY, ResponseBodyRefused, read_capped

from .errors import AriesError
from .jsonld import embeds_context, status_list_contexts

MIN_ENTRIES = 131_072
STATUS_CONTEXT_ID = "status"
#: Where an issuer serves its status lists: ``<issuer base>/v1/aries/status/<list>[/<suite>]``.
STATUS_LIST_PATH = "/v1/aries/status/"


def encode_list(bits: bytes) -> str:
    """``encodedList`` of a raw bitstring (``bits`` as bytes, MSB first)."""
    compressed = gzip.compress(bits, compresslevel=9, mtime=0)
    return "u" + base64.urlsafe_b64encode(compressed).decode("ascii").rstrip("=")


def decode_list(encoded: Any) -> bytes:
    """The raw bitstring of an ``encodedList``; typed error on anything malformed."""
    if not isinstance(encoded, str) or not encoded.startswith("u"):
        raise AriesError("bad_status_list", "encodedList must be a multibase base64url string ('u' prefix)")
    body = encoded[1:]
    try:
        compressed = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        # Bound the inflated size: a list is a few KB compressed and 16 KB-2 MB raw.
        inflater = zlib.decompressobj(wbits=31)
        raw = inflater.decompress(compressed, 16 * 1024 * 1024)
    except (binascii.Error, ValueError, zlib.error) as exc:
        raise AriesError("bad_status_list", "encodedList is not base64url GZIP data") from exc
    if inflater.unconsumed_tail:
        raise AriesError("bad_status_list", "encodedList inflates beyond the allowed size")
    if not inflater.eof or not raw:
        raise AriesError("bad_status_list", "encodedList is not a complete GZIP stream")
    return raw


def set_bit(bits: bytearray, index: int, value: bool) -> None:
    """Set or clear bit ``index``."""
    if not 0 <= index < len(bits) * 8:
        raise AriesError("bad_status_index", "status index outside the list")
    mask = 0x80 >> (index % 8)
    if value:
        bits[index // 8] |= mask
    else:
        bits[index // 8] &= ~mask & 0xFF


def get_bit(bits: bytes, index: int) -> bool:
    """Whether bit ``index`` is set."""
    if not 0 <= index < len(bits) * 8:
        raise AriesError("bad_status_index", "status index outside the list")
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


def status_context() -> dict[str, Any]:
    """JSON-LD context defining the terms of a status list credential (VC data model 1.1 signing)."""
    vocab = "https://www.w3.org/ns/credentials/status#"
    return {"@context": {
        "@version": 1.1, "@protected": True, "id": "@id", "type": "@type",
        "BitstringStatusListCredential": {"@id": f"{vocab}BitstringStatusListCredential"},
        "BitstringStatusList": {"@id": f"{vocab}BitstringStatusList", "@context": {
            "@protected": True, "id": "@id", "type": "@type",
            "encodedList": f"{vocab}encodedList",
            "statusPurpose": f"{vocab}statusPurpose",
        }},
    }}


def status_list_credential(*, list_url: str, issuer_did: str, bits: bytes, context_url: str,
                           purpose: str = "revocation", issued_at: str, suite_context: str) -> dict[str, Any]:
    """The unsigned status list credential for ``bits`` (sign it with the issuer's agent)."""
    return {
        "@context": ["https://www.w3.org/2018/credentials/v1", context_url, suite_context],
        "id": list_url,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": issuer_did,
        "issuanceDate": issued_at,
        "credentialSubject": {"id": f"{list_url}#list", "type": "BitstringStatusList",
                              "statusPurpose": purpose, "encodedList": encode_list(bits)},
    }


def read_status(list_credential: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether the entry's bit is set in an (already verified) list credential.

    Raises a typed error when the entry and the list do not belong together (URL, purpose).
    """
    if not isinstance(entry, dict) or entry.get("type") != "BitstringStatusListEntry":
        raise AriesError("bad_status_entry", "credentialStatus is not a BitstringStatusListEntry")
    subject = list_credential.get("credentialSubject")
    if not isinstance(subject, dict):
        raise AriesError("bad_status_list", "status list credential has no credentialSubject")
    if list_credential.get("id") != entry.get("statusListCredential"):
        raise AriesError("status_list_mismatch", "status list credential is not the one the entry names")
    if subject.get("statusPurpose") != entry.get("statusPurpose"):
        raise AriesError("status_list_mismatch", "status purpose differs between entry and list")
    try:
        index = int(str(entry.get("statusListIndex")))
    except ValueError as exc:
        raise AriesError("bad_status_entry", "statusListIndex is not an integer") from exc
    return get_bit(decode_list(subject.get("encodedList")), index)


async def sign_list(agent: Any, credential: dict[str, Any], proof_type: str) -> dict[str, Any]:
    """Sign a status list credential with the issuer's agent (``/vc/credentials/issue``)."""
    answer = await agent.request("POST", "/vc/credentials/issue",
                                 json={"credential": credential, "options": {"proofType": proof_type}})
    signed = answer.get("verifiableCredential") if isinstance(answer, dict) else None
    if not isinstance(signed, dict):
        raise AriesError("status_list_unsigned", "the agent returned no signed status list")
    return signed


def check_list_contexts(document: dict[str, Any], list_url: str) -> None:
    """Refuse (``aries.status_list_invalid``) a fetched status list whose ``@context`` is not exactly
    one its issuer signs with (:func:`aries.jsonld.status_list_contexts`, the issuer being the base its
    URL is served under), or that embeds an ``@context`` anywhere else.

    Verifying its signature makes the agent load every context the document names: ACA-Py fetches an
    unknown one with no timeout, following redirects, outside the outbound policy. As for a
    presentation (:func:`aries.presentation.precheck_presentation`), only the contexts we issue with
    reach the agent."""
    if STATUS_LIST_PATH not in list_url:
        raise AriesError("status_list_invalid", "the status list is not served where an issuer serves its lists")
    base = list_url.split(STATUS_LIST_PATH, 1)[0]
    if document.get("@context") not in status_list_contexts(base):
        raise AriesError("status_list_invalid", "the status list's @context is not its issuer's")
    if embeds_context([value for key, value in document.items() if key != "@context"]):
        raise AriesError("status_list_invalid", "an @context is embedded inside the status list")


def status_lookup(agent: Any, http: Any, *, allowed_prefixes: tuple[str, ...] = (),
                  max_bytes: int = 2_000_000) -> Any:
    """A :data:`aries.presentation.StatusLookup` fetching the list over HTTP, verified by ``agent``.

    ``http`` is an ``httpx.AsyncClient``; ``allowed_prefixes`` (when given) restricts the list URLs a
    credential may make us fetch, so a hostile credential cannot point the verifier anywhere; the
    answer is read up to ``max_bytes``, and its contexts checked (:func:`check_list_contexts`) before
    the agent is asked to verify it.
    """
    async def lookup(entry: dict[str, Any], issuer: str) -> bool:
        url = entry.get("statusListCredential") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise AriesError("bad_status_entry", "statusListCredential must be an http(s) URL")
        if allowed_prefixes and not url.startswith(allowed_prefixes):
            raise AriesError("status_list_not_allowed", "status list URL outside the allowed origins")
        try:
            # Read bounded and never inflated past the bound, as the verifier's other fetches.
            async with http.stream("GET", url, headers=IDENTITY, timeout=5.0) as answer:
                document = (json.loads(await read_capped(answer, max_bytes))
                            if answer.status_code == 200 else None)
        except ResponseBodyRefused as exc:
            raise AriesError("status_unavailable", "status list too large or unreadable") from exc
        except (ValueError, OSError) as exc:
            raise AriesError("status_unavailable", "status list could not be fetched") from exc
        except Exception as exc:  # httpx errors; kept generic so this module needs no httpx import
            raise AriesError("status_unavailable", "status list could not be fetched") from exc
        if not isinstance(document, dict):
            raise AriesError("status_unavailable", "status list could not be fetched")
        check_list_contexts(document, url)
        checked = await agent.request("POST", "/vc/credentials/verify",
                                      json={"verifiableCredential": document, "options": {}})
        if not (isinstance(checked, dict) and checked.get("verified") is True):
            raise AriesError("status_list_invalid", "the status list's signature does not verify")
        list_issuer = document.get("issuer")
        list_issuer = list_issuer.get("id") if isinstance(list_issuer, dict) else list_issuer
        if list_issuer != issuer:
            raise AriesError("status_list_invalid", "the status list is not signed by the credential's issuer")
        return read_status(document, entry)

    return lookup
