"""`cartera hsm` and `cartera issuer rotate-key --token-key-label`: readable output and errors, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartera.cli import app
from service_kit.pkcs11 import Token
from tests.hsm.conftest import SoftHSM
from tests.issuer.conftest import IssuerEnv


@pytest.fixture
def env(softhsm: SoftHSM, token: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    monkeypatch.setenv("CARTERA_ISSUER_PKCS11_MODULE", str(softhsm.module))
    monkeypatch.setenv("CARTERA_ISSUER_PKCS11_TOKEN_LABEL", softhsm.token)
    monkeypatch.setenv("CARTERA_ISSUER_PKCS11_PIN_FILE", str(pin_file))
    return pin_file


def test_generate_list_and_check(env: Path, softhsm: SoftHSM) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["hsm", "generate", "--label", "cli-made", "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["label"] == "cli-made" and made["alg"] == "ES256" and "d" not in made["public_jwk"]
    result = runner.invoke(app, ["hsm", "keys", "--json"])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.output) if r["label"] == "cli-made")
    assert row["sensitive"] is True and row["extractable"] is False and row["id"] == made["id"]
    result = runner.invoke(app, ["hsm", "check"])
    assert result.exit_code == 0 and "login ok" in result.output
    result = runner.invoke(app, ["hsm", "generate", "--label", "cli-made"])
    assert result.exit_code == 1 and "pkcs11.key_exists" in result.output and "Traceback" not in result.output


def test_cli_errors_are_readable(env: Path, softhsm: SoftHSM, tmp_path: Path) -> None:
    runner = CliRunner()
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000\n")
    result = runner.invoke(app, ["hsm", "check", "--token-label", softhsm.pin_token, "--pin-file", str(wrong)])
    assert result.exit_code == 1 and "pkcs11.pin_incorrect" in result.output and "0000" not in result.output
    result = runner.invoke(app, ["hsm", "check", "--token-label", "absent-token"])
    assert result.exit_code == 1 and "pkcs11.token_not_found" in result.output
    result = runner.invoke(app, ["hsm", "keys", "--service", "verifier"])
    assert result.exit_code == 1 and "no PKCS#11 token is configured" in result.output
    assert runner.invoke(app, ["hsm", "--help"]).exit_code == 0


def test_rotate_key_registers_a_token_key(hsm_issuer: IssuerEnv, token: Token) -> None:
    key, _ref = token.generate_key(label="cli-rotate")
    runner = CliRunner()
    result = runner.invoke(app, ["issuer", "rotate-key", "--url", hsm_issuer.url, "--api-key",
                                 hsm_issuer.api_keys["uni-barcelona"], "--token-key-label", "cli-rotate", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["kid"] == key.thumbprint() and info["backend"] == "pkcs11"
    result = runner.invoke(app, ["issuer", "rotate-key", "--url", hsm_issuer.url, "--api-key",
                                 hsm_issuer.api_keys["uni-barcelona"], "--backend", "nope"])
    assert result.exit_code == 1 and "software or pkcs11" in result.output
