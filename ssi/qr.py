"""QR codes for offer and request URIs: PNG, self-contained SVG, and terminal text.

Error correction level M (15 % of codewords recoverable): a good balance for screen-to-camera
scanning of URIs of a few hundred characters. Data too long for a version-40 code is refused with
``qr.too_long`` rather than producing an unscannable image.
"""

from __future__ import annotations

import io

import qrcode
import qrcode.image.svg
from qrcode.exceptions import DataOverflowError

from .errors import QRError

#: Upper bound checked before encoding, so absurd inputs are refused without work (version 40-M
#: holds at most 2,331 bytes).
MAX_QR_BYTES = 2331


def _build(data: str, *, box_size: int = 8, border: int = 4) -> qrcode.QRCode:
    if not isinstance(data, str) or not data:
        raise QRError("bad_data", "QR data must be a non-empty string")
    if isinstance(box_size, bool) or not isinstance(box_size, int) or not 1 <= box_size <= 100:
        raise QRError("bad_size", "box_size must be an integer from 1 to 100")
    if isinstance(border, bool) or not isinstance(border, int) or not 0 <= border <= 50:
        raise QRError("bad_size", "border must be an integer from 0 to 50")
    if len(data.encode("utf-8")) > MAX_QR_BYTES:
        raise QRError("too_long", "the data does not fit in a QR code")
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_size, border=border)
    code.add_data(data)
    try:
        code.make(fit=True)
    except (DataOverflowError, ValueError) as exc:
        raise QRError("too_long", "the data does not fit in a QR code") from exc
    return code


def qr_png(data: str, *, box_size: int = 8, border: int = 4) -> bytes:
    """A PNG image (black on white) of the QR code for ``data``."""
    code = _build(data, box_size=box_size, border=border)
    image = code.make_image(fill_color="black", back_color="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def qr_svg(data: str, *, box_size: int = 8, border: int = 4) -> str:
    """A standalone SVG document (one path, white background, no external references)."""
    code = _build(data, box_size=box_size, border=border)
    image = code.make_image(image_factory=qrcode.image.svg.SvgPathFillImage)
    svg = image.to_string(encoding="unicode")
    return svg if svg.startswith("<?xml") else '<?xml version="1.0" encoding="UTF-8"?>\n' + svg


def qr_terminal(data: str, *, border: int = 2, light_background: bool = False) -> str:
    """The QR code as Unicode half blocks, two modules per character cell vertically.

    Terminals usually draw light text on a dark background, so by default the *light* modules are
    drawn as blocks (the code then reads correctly, dark on light); pass ``light_background=True``
    for terminals with dark text on light paper.
    """
    code = _build(data, box_size=1, border=border)
    matrix = code.get_matrix()
    ink = [[cell if light_background else not cell for cell in row] for row in matrix]
    if len(ink) % 2:
        # pad with a quiet-zone (light) row
        ink.append([not light_background] * len(ink[0]))
    glyphs = {(True, True): "\u2588", (True, False): "\u2580", (False, True): "\u2584", (False, False): " "}
    lines = []
    for top, bottom in zip(ink[0::2], ink[1::2], strict=True):
        lines.append("".join(glyphs[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return "\n".join(lines) + "\n"
