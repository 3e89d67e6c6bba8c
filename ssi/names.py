"""Display names and texts that services keep and show: an agency's, a tenant's, an issuer display
entry's name (:func:`display_name`), and the longer texts beside them (:func:`display_text`): a
verifier's purpose, a credential type's display names, descriptions and claim labels.

Such a name reaches a citizen's consent screen, a certificate's commonName and organizationName
(:func:`ssi.x509.fit_name`), an Aries invitation's label and the logs. :func:`display_name` is the one
check of it, for every service and every path that creates one:

- control characters are refused: C0 (``\\t``, ``\\n``, ``\\r``, ESC...), DEL, C1 (U+0080-U+009F, NEL
  among them), the line and paragraph separators U+2028/U+2029 (line breaks in a log line or a
  screen), and the bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069),
  which reorder what is shown ("...gpj.exe" read backwards): the set ``cartera.console`` also
  escapes. An unpaired surrogate is refused too (no database can store it);
- spaces before and after are dropped, and a name left with nothing to read (only spaces and
  invisible format characters such as U+200B) is refused.

Errors are :class:`~ssi.errors.DisplayNameError` with stable codes ``name.control_character`` and
``name.empty``, whose descriptions never quote the name. :data:`DisplayName` is the same check as a
Pydantic type, for request models: its errors reach the caller's ``error_description``.

:func:`display_text` is the same check for free text shown beside a name, a sentence rather than a
label: the same characters are refused (line breaks too: no text Cartera shows is laid out in lines,
and a consent screen, a log line or a terminal must show one line as one), and so is a text with
nothing to read, with the same codes; the text is returned as given (the spaces inside and around it
are the author's), and its length is the caller's rule. Its descriptions name the text as the caller
says (``what``), never quote it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from .errors import DisplayNameError

_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

CONTROL_CHARACTER = ("holds a control character (a line break, tab, escape, C1 or bidirectional control), "
                     "which a name shown to citizens cannot hold")
TEXT_CONTROL_CHARACTER = ("holds a control character (a line break, tab, escape, C1 or bidirectional control), "
                          "which a text shown to citizens cannot hold")
EMPTY = "has nothing to read (it is empty, or only spaces and invisible characters)"
_REASONS = {"name.control_character": CONTROL_CHARACTER, "name.empty": EMPTY}


def _readable(text: str) -> bool:
    return any(not char.isspace() and unicodedata.category(char) != "Cf" for char in text)


def display_name(text: str) -> str:
    """``text`` without the spaces around it, or :class:`~ssi.errors.DisplayNameError` (see the module)."""
    if _REFUSED.search(text):
        raise DisplayNameError("control_character", f"the name {CONTROL_CHARACTER}")
    name = text.strip()
    if not _readable(name):
        raise DisplayNameError("empty", f"the name {EMPTY}")
    return name


def display_text(text: str, what: str = "the text") -> str:
    """``text`` as given, or :class:`~ssi.errors.DisplayNameError` (``name.control_character``,
    ``name.empty``) whose description starts with ``what`` (``"the ca text"``) and never quotes the
    text: :func:`display_name`'s check for a longer text shown to citizens (see the module)."""
    if _REFUSED.search(text):
        raise DisplayNameError("control_character", f"{what} {TEXT_CONTROL_CHARACTER}")
    if not _readable(text):
        raise DisplayNameError("empty", f"{what} {EMPTY}")
    return text


def checked_display_name(text: str, what: str = "") -> str:
    """:func:`display_name` for a Pydantic validator: a refusal is a custom error type, whose fixed
    text (``what`` first, e.g. ``"name "``) reaches the caller's ``error_description`` — a ValueError's
    would be replaced by "invalid value" in ``service_kit.errors`` — and never quotes the value."""
    try:
        return display_name(text)
    except DisplayNameError as exc:
        raise PydanticCustomError("display_name", f"{what}{_REASONS[exc.code]}") from None


#: A request model's display name: :func:`display_name` applied after the field's own constraints.
DisplayName = Annotated[str, AfterValidator(checked_display_name)]
