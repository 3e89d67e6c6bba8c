"""Hardened XML parsing for messages that come from the network.

Every XML document Cartera receives from Via Oberta (or, in the sandbox, from a requesting body)
goes through :func:`parse_xml`: a size limit checked before parsing, no DTD at all (a DOCTYPE is
refused, so neither entity expansion bombs nor external entities can exist), no network access,
no huge-tree mode, and every failure as a typed :class:`~viaoberta.errors.ViaObertaError`.
"""

from __future__ import annotations

import re

from lxml import etree

from .errors import ViaObertaError

#: Default ceiling for one SOAP message. SCSP answers for one subject are a few kilobytes.
MAX_XML_BYTES = 512 * 1024

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
OPENURI_NS = "http://www.openuri.org/"

_FORBIDDEN_MARKERS = (b"<!doctype", b"<!entity")


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not safe to share between threads.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_pis=True, collect_ids=False,
    )


def parse_xml(data: bytes, *, max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    """Parse untrusted XML bytes into an element tree, refusing anything risky.

    Raises ``viaoberta.too_large`` beyond ``max_bytes``, ``viaoberta.xml_forbidden`` for any
    DOCTYPE or entity declaration, ``viaoberta.malformed`` for anything that is not well-formed.
    """
    if not isinstance(data, bytes | bytearray):
        raise ViaObertaError("malformed", "XML input must be bytes")
    if len(data) > max_bytes:
        raise ViaObertaError("too_large", f"XML message larger than {max_bytes} bytes")
    # A cheap early refusal; the docinfo check below also catches encodings this scan cannot see.
    lowered = bytes(data[:max_bytes]).lower()
    if any(marker in lowered for marker in _FORBIDDEN_MARKERS):
        raise ViaObertaError("xml_forbidden", "DOCTYPE and entity declarations are not accepted")
    try:
        root = etree.fromstring(bytes(data), parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise ViaObertaError("malformed", "not well-formed XML") from exc
    except (ValueError, TypeError) as exc:
        raise ViaObertaError("malformed", "not parseable XML") from exc
    if root is None:
        raise ViaObertaError("malformed", "empty XML document")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ViaObertaError("xml_forbidden", "DOCTYPE is not accepted")
    for node in root.iter(etree.Entity):
        raise ViaObertaError("xml_forbidden", f"entity reference {node.name!r} is not accepted")
    return root


def qname(ns: str, local: str) -> str:
    """Clark notation ``{ns}local``."""
    return f"{{{ns}}}{local}"


def local_name(element: etree._Element) -> str:
    """The local part of an element's tag (``""`` for comments and other non-elements)."""
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def namespace_of(element: etree._Element) -> str | None:
    tag = element.tag
    if isinstance(tag, str) and tag.startswith("{"):
        return tag[1:].split("}", 1)[0]
    return None


#: Characters XML 1.0 cannot carry (control characters but tab, LF, CR; lone surrogates; U+FFFE/FFFF).
_NOT_XML_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def is_xml_text(value: str) -> bool:
    """Whether ``value`` can be written as XML 1.0 character data (no control characters, no lone surrogates)."""
    return _NOT_XML_TEXT.search(value) is None
