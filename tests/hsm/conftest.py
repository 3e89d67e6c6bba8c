"""A throwaway SoftHSM2 setup for the HSM key tests: its own config and token directory in a temp dir.

``SOFTHSM2_CONF`` is set before the PKCS#11 module is first loaded in this process (SoftHSM2 reads it,
and the list of tokens, at ``C_Initialize``), so every token the tests use is made here, up front:

- ``cartera-test``: the working token (user PIN :data:`PIN`);
- ``cartera-pin``: a token nobody logs in to, for the wrong-PIN test (a token already logged in by
  this process would not check a PIN again).

The package's own token directory (/var/lib/softhsm) is never touched. Without SoftHSM2 the tests
fail, saying to run ``scripts/ensure-test-deps.sh``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from issuer.settings import IssuerSettings
from service_kit.pkcs11 import PKCS11Config, Token, open_token
from tests.issuer.conftest import IssuerEnv, Sandbox, make_settings, sandbox, start_issuer  # noqa: F401 - fixture
from tests.support.servers import free_port

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "4711-cartera"
SO_PIN = "so-4711-cartera"
TOKEN = "cartera-test"
PIN_TOKEN = "cartera-pin"


@dataclass(frozen=True)
class SoftHSM:
    module: Path
    token: str
    pin: str
    pin_token: str
    conf: Path

    def config(self, *, pin: str | None = None, token: str | None = None) -> PKCS11Config:
        return PKCS11Config(module=self.module, token_label=token or self.token, pin=self.pin if pin is None else pin)


@pytest.fixture(scope="session")
def softhsm() -> Iterator[SoftHSM]:
    util = shutil.which("softhsm2-util")
    if util is None or not MODULE.is_file():
        pytest.fail("SoftHSM2 is not installed: run scripts/ensure-test-deps.sh (Debian package softhsm2)",
                    pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="cartera-softhsm-"))
    tokens = root / "tokens"
    tokens.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
                    "slots.removable = false\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for label in (TOKEN, PIN_TOKEN):
        subprocess.run([util, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN],
                       check=True, capture_output=True, env=env)
    try:
        yield SoftHSM(module=MODULE, token=TOKEN, pin=PIN, pin_token=PIN_TOKEN, conf=conf)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def token(softhsm: SoftHSM) -> Iterator[Token]:
    opened = open_token(softhsm.config())
    try:
        yield opened
    finally:
        opened.close()


def hsm_settings(base: IssuerSettings, softhsm: SoftHSM, **extra: object) -> IssuerSettings:
    """``base`` with tenant keys in the test token."""
    update = {"key_backend": "pkcs11", "pkcs11_module": softhsm.module, "pkcs11_token_label": softhsm.token,
              "pkcs11_pin": SecretStr(softhsm.pin), **extra}
    return base.model_copy(update=update)


@pytest.fixture(scope="session")
def hsm_issuer(sandbox: Sandbox, softhsm: SoftHSM, token: Token,  # noqa: F811 - the imported fixture
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    """An issuer (SQLite) provisioned with the demo tenants, every tenant key generated in the token."""
    folder = tmp_path_factory.mktemp("issuer-hsm")
    base = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", free_port(), folder, folder)
    yield from start_issuer(sandbox, hsm_settings(base, softhsm))
