"""QR rendering: every output decodes back (zxing-cpp) to the exact URI; limits are typed errors."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from ssi.errors import QRError, SSIError
from ssi.qr import qr_png, qr_svg, qr_terminal

OFFER = ("openid-credential-offer://?credential_offer_uri=https%3A%2F%2Fissuer.example.org%2Foffers%2F"
         "3f1c2a9e-77b1-4d0c-9f59-8a4e2f6b1c0d")
REQUEST = ("openid4vp://?client_id=x509_san_dns%3Averifier.example.org&request_uri=https%3A%2F%2F"
           "verifier.example.org%2Frequest%2Fvapof4ql2i7m41m68uep&request_uri_method=post")


def decode(image: Image.Image) -> list[str]:
    # QR codes only: with every format on, zxing can find a linear barcode in a QR's own modules.
    return [r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]


@pytest.mark.parametrize("data", [OFFER, REQUEST, "https://wallet.example.org/ñandú?x=1"])
def test_png_decodes_to_the_same_uri(data: str) -> None:
    png = qr_png(data)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    assert decode(image) == [data]


def test_png_size_follows_box_and_border() -> None:
    small = Image.open(io.BytesIO(qr_png("x", box_size=2, border=4)))
    big = Image.open(io.BytesIO(qr_png("x", box_size=10, border=4)))
    # version 1 is 21 modules; plus 2 * border
    assert small.size == (2 * 29, 2 * 29) and big.size == (10 * 29, 10 * 29)


def _rasterise_svg(svg: str, scale: int = 10) -> Image.Image:
    """Draw the SVG path's rectangles (the only shapes the renderer emits) into an image."""
    root = ET.fromstring(svg.encode("utf-8"))
    ns = {"svg": "http://www.w3.org/2000/svg"}
    _, _, width, height = (float(v) for v in root.attrib["viewBox"].split())
    image = Image.new("L", (int(width * scale), int(height * scale)), 255)
    draw = ImageDraw.Draw(image)
    for path in root.findall(".//svg:path", ns):
        for x, y, x2, y2 in re.findall(r"M([\d.]+),([\d.]+)H([\d.]+)V([\d.]+)H[\d.]+z", path.attrib["d"]):
            draw.rectangle([float(x) * scale, float(y) * scale, float(x2) * scale - 1, float(y2) * scale - 1], fill=0)
    return image


def test_svg_is_standalone_and_decodes() -> None:
    svg = qr_svg(REQUEST)
    assert svg.startswith("<?xml")
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    # no external references: no href, no xlink, no <image>, no <script>, no url()
    for element in root.iter():
        assert not element.tag.endswith(("image", "script", "use", "foreignObject"))
        for name, value in element.attrib.items():
            assert "href" not in name
            assert "url(" not in value
    assert "http://" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert decode(_rasterise_svg(svg)) == [REQUEST]


def _rasterise_terminal(text: str, light_background: bool, scale: int = 6) -> Image.Image:
    rows = text.rstrip("\n").split("\n")
    top = {"\u2588": (1, 1), "\u2580": (1, 0), "\u2584": (0, 1), " ": (0, 0)}
    width = len(rows[0])
    image = Image.new("L", (width * scale, len(rows) * 2 * scale), 255)
    draw = ImageDraw.Draw(image)
    for r, line in enumerate(rows):
        assert len(line) == width
        for c, ch in enumerate(line):
            for half, inked in enumerate(top[ch]):
                dark = bool(inked) if light_background else not inked
                if dark:
                    y = (2 * r + half) * scale
                    draw.rectangle([c * scale, y, (c + 1) * scale - 1, y + scale - 1], fill=0)
    # a light margin so the decoder sees a quiet zone in both modes
    framed = Image.new("L", (image.width + 8 * scale, image.height + 8 * scale), 255)
    framed.paste(image, (4 * scale, 4 * scale))
    return framed


@pytest.mark.parametrize("light_background", [False, True])
def test_terminal_text_decodes(light_background: bool) -> None:
    text = qr_terminal(OFFER, light_background=light_background)
    assert set(text) <= {"\u2588", "\u2580", "\u2584", " ", "\n"}
    assert decode(_rasterise_terminal(text, light_background)) == [OFFER]


def test_too_long_and_bad_input() -> None:
    for call in (qr_png, qr_svg, qr_terminal):
        with pytest.raises(QRError) as err:
            call("x" * 5000)
        assert err.value.code == "qr.too_long"
        with pytest.raises(QRError) as err:
            call("")
        assert err.value.code == "qr.bad_data"
        with pytest.raises(QRError):
            call(None)  # type: ignore[arg-type]
    # just over the byte-mode capacity of version 40-M (2,331 bytes): refused by the encoder itself
    with pytest.raises(QRError):
        qr_png("\u00e9" * 1200)
    assert decode(Image.open(io.BytesIO(qr_png("a" * 2000, box_size=2)))) == ["a" * 2000]
    with pytest.raises(QRError) as err:
        qr_png("x", box_size=0)
    assert err.value.code == "qr.bad_size"
    with pytest.raises(QRError):
        qr_png("x", border=-1)


@settings(max_examples=25, deadline=None)
@given(data=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_categories=("Cs",)),
                    min_size=1, max_size=120))
def test_random_uris_round_trip(data: str) -> None:
    uri = "openid4vp://?request_uri=" + data
    try:
        png = qr_png(uri, box_size=3)
    except SSIError:
        return
    assert decode(Image.open(io.BytesIO(png))) == [uri]
