"""The web wallet in Debian's Chromium (Playwright, never `playwright install`) against the whole system.

One embedded system (sandbox IdP and Via Oberta, the real issuer, verifier and wallet services) and one
browser per xdist worker. The browser's camera is Chromium's fake capture device playing a Y4M file that
the tests rewrite with the QR code to "show" to the phone, so the app's real camera path (getUserMedia,
frames decoded by the vendored jsQR) is what reads offer codes.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from ssi.qr import qr_png
from tests.wallet_api.system import System, running_system

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CAMERA = (640, 480)
PHONE = {"width": 360, "height": 740}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web-wallet"


def write_y4m(path: Path, png: bytes | None) -> None:
    """A one-frame Y4M (4:2:0) video: the QR code centred on white, or a white frame."""
    frame = Image.new("RGB", CAMERA, "white")
    if png is not None:
        code = Image.open(io.BytesIO(png)).convert("RGB")
        side = min(CAMERA) - 40
        code = code.resize((side, side), Image.NEAREST)
        frame.paste(code, ((CAMERA[0] - side) // 2, (CAMERA[1] - side) // 2))
    y, cb, cr = frame.convert("YCbCr").split()
    half = (CAMERA[0] // 2, CAMERA[1] // 2)
    body = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(f"YUV4MPEG2 W{CAMERA[0]} H{CAMERA[1]} F10:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + body)
    tmp.replace(path)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("web-system")) as running:
        yield running


@pytest.fixture(scope="session")
def camera_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    write_y4m(path, None)
    return path


@pytest.fixture(scope="session")
def browser(camera_file: Path, system: System) -> Iterator[Browser]:
    # Depends on ``system`` so that its provisioning (asyncio.run) happens before Playwright's sync API
    # starts an event loop in this thread.
    args = ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   f"--use-file-for-fake-video-capture={camera_file}"]
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield launched
        launched.close()


class Phone:
    """One citizen's phone: a browser context at 360 px, its console errors, and screenshot helpers."""

    def __init__(self, context: BrowserContext, system: System) -> None:
        self.context = context
        self.system = system
        self.page: Page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, name: str) -> Path:
        """What the phone's screen shows (``name.png``) and the whole scrolled page (``name-full.png``,
        with the bottom navigation laid out in the flow so it does not cover the middle of the image)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        if self.page.evaluate("document.documentElement.scrollHeight > innerHeight"):
            # Through the CSSOM, which the page's CSP allows (a screenshot ``style`` is an inline style).
            self.page.evaluate("document.getElementById('nav').style.position = 'static'")
            self.page.screenshot(path=str(ARTIFACTS / f"{name}-full.png"), full_page=True)
            self.page.evaluate("document.getElementById('nav').style.position = ''")
        return path

    def open(self) -> None:
        self.page.goto(f"{self.system.wallet}/app/")

    def login(self, identifier: str, button: str = "VÀLid") -> None:
        """Log in through the sandbox VÀLid login page, as a person would."""
        self.open()
        self.page.get_by_role("button", name=button).click()
        self.at_idp(identifier)
        self.page.wait_for_url(f"{self.system.wallet}/app/#/cards")
        expect(self.page.locator("#view-cards")).to_be_visible()

    def at_idp(self, identifier: str) -> None:
        """Log in as ``identifier`` on the sandbox VÀLid page the app has sent the browser to."""
        self.page.fill("#q", identifier)
        self.page.get_by_role("button", name="Search").click()
        # The sandbox login page (a stand-in for VÀLid) overflows a 360-px screen, so it is used with the
        # keyboard: the searched citizen is the first and pre-selected row.
        expect(self.page.locator(f"input[name=identifier][value='{identifier}']")).to_be_checked()
        self.page.get_by_role("button", name="Log in as this citizen").press("Enter")

    def scan(self, text: str) -> None:
        """Hand a decoded QR text to the app exactly as its camera loop does."""
        self.page.evaluate("text => window.carteraScanned(text)", text)

    def csp_errors(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e or "Refused to" in e]


@pytest.fixture
def phone(browser: Browser, system: System) -> Iterator[Callable[..., Phone]]:
    contexts: list[BrowserContext] = []

    def make(locale: str = "en-GB", service_workers: str = "allow") -> Phone:
        # service_workers="block": Playwright's routes see no request a service worker handles.
        context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                      locale=locale, service_workers=service_workers)
        context.grant_permissions(["camera"], origin=system.wallet)
        contexts.append(context)
        return Phone(context, system)

    yield make
    for context in contexts:
        context.close()


def make_offer(system: System, slug: str, type_id: str, identifier: str, *, tx_code: bool = True) -> dict[str, Any]:
    r = httpx.post(f"{system.issuer}/v1/offers", headers=system.issuer_headers(slug), timeout=30, json={
        "credential_configuration_ids": [type_id], "subject": {"identifier": identifier, "name": "Montserrat Puig"}, "tx_code": tx_code,
        "by_reference": True})
    assert r.status_code == 201, r.text
    return r.json()


def new_request(system: System, agency: str, template: str) -> dict[str, Any]:
    r = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers(agency),
                   json={"template": template}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def wait_status(system: System, agency: str, request: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        result = httpx.get(request["status_url"], headers=system.verifier_headers(agency), timeout=10).json()
        if result["status"] != "pending" or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def offer_qr_png(offer: dict[str, Any]) -> bytes:
    return qr_png(offer["offer_uri"], box_size=6)
