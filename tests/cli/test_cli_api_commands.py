"""The API-calling commands (`wallet`, `issuer`, `verifier`) against a stand-in API over real HTTP.

The stand-in answers what a compromised or merely odd service (or a verifier's request, relayed by
the wallet API) could: rich markup and terminal sequences in names and purposes, bodies that are not
JSON, ids that would change the URL. The commands must show such text as it is, never crash or
call another endpoint, and keep standard output for the JSON of --json.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from cartera.cli import app
from tests.support.servers import serve

runner = CliRunner()


class FakeAPI:
    """Answers ``(method, path)`` from ``routes``; 404 JSON otherwise. Records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.seen: list[tuple[str, str, Any]] = []

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append((request.method, request.url.path, json.loads(body) if body else None))
        status, answer = self.routes.get((request.method, request.url.path),
                                         (404, {"error": "not_found", "error_description": request.url.path}))
        if callable(answer):  # an answer that depends on the request body
            status, answer = answer(json.loads(body) if body else None)
        if isinstance(answer, str):
            return Response(answer, status_code=status, media_type="text/html")
        return JSONResponse(answer, status_code=status)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAPI, str]]:
    fake = FakeAPI()
    routes = [Route("/{path:path}", fake.handle, methods=["GET", "POST", "PUT", "DELETE"])]
    with serve(Starlette(routes=routes)) as base:
        yield fake, base


@pytest.fixture
def api(served: tuple[FakeAPI, str]) -> tuple[FakeAPI, str]:
    fake, base = served
    fake.routes.clear()
    fake.seen.clear()
    return fake, base


def _err(result: Any) -> str:
    """Standard error with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


def _preview(purpose: str, client_id: str) -> dict[str, Any]:
    return {"presentation_id": "p_1", "satisfiable": True, "purpose": purpose,
            "verifier": {"name": None, "client_id": client_id, "verified": False, "warning": "UNVERIFIED VERIFIER"},
            "queries": [{"query_id": "q", "required": True, "optional": False, "shared": True,
                         "options": [{"credential_name": "Tax [b]x[/b]", "claims": [
                             {"name": "nif[/]", "value": "[red]12345678Z"}]}]}]}


def _present(base: str, *extra: str) -> Any:
    return runner.invoke(app, ["wallet", "present", "openid4vp://?request_uri=x", "--url", base, "--token", "t",
                               *extra])


def test_present_shows_untrusted_text_as_it_is(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/presentations")] = (201, _preview("Grant [/] 2026", "x509_san_dns:evil[conceal]\x1b[8m"))
    fake.routes[("POST", "/v1/presentations/p_1/approve")] = (200, {"state": "sent"})
    result = _present(base, "--yes")
    assert result.exit_code == 0, result.output
    out = result.stdout
    # A markup tag in the purpose neither crashes the command before consent nor disappears.
    assert "Purpose: Grant [/] 2026" in out
    # A tag in the client id cannot hide the warning; a terminal sequence is shown, not sent.
    assert "x509_san_dns:evil[conceal]\\x1b[8m  UNVERIFIED VERIFIER" in out
    assert "\x1b" not in out
    assert "Tax [b]x[/b]: nif[/] = [red]12345678Z" in out
    assert ("POST", "/v1/presentations/p_1/approve", {}) in fake.seen


def test_present_shows_values_only_of_what_the_approval_sends(api: tuple[FakeAPI, str]) -> None:
    """An alternative of a credential set that another option answers, and an optional query (the
    command ticks none), are not sent: named, without their values."""
    fake, base = api
    preview = _preview("Grant", "x509_san_dns:desk.example")
    option = {"credential_name": "Diploma", "claims": [{"name": "title", "value": "Grau en Dret"}]}
    preview["queries"] += [
        {"query_id": "alternative", "required": False, "optional": False, "shared": False, "options": [option]},
        {"query_id": "extra", "required": False, "optional": True, "shared": True, "options": [option]}]
    fake.routes[("POST", "/v1/presentations")] = (201, preview)
    fake.routes[("POST", "/v1/presentations/p_1/approve")] = (200, {"state": "sent"})
    result = _present(base, "--yes")
    assert result.exit_code == 0, result.output
    assert "not shared: alternative" in result.stdout and "not shared: extra" in result.stdout
    assert "Grau en Dret" not in result.stdout
    assert "12345678Z" in result.stdout


def test_present_json_keeps_standard_output_for_the_json(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/presentations")] = (201, _preview("Grant", "x509_san_dns:desk.example"))
    fake.routes[("POST", "/v1/presentations/p_1/approve")] = (200, {"state": "sent"})
    fake.routes[("POST", "/v1/presentations/p_1/decline")] = (200, {"state": "declined"})
    result = _present(base, "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"state": "sent"}
    assert "Purpose: Grant" in _err(result) and "UNVERIFIED VERIFIER" in _err(result)
    # Without --yes the question goes to standard error too.
    result = runner.invoke(app, ["wallet", "present", "openid4vp://?request_uri=x", "--url", base, "--token", "t",
                                 "--json"], input="n\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"state": "declined"}
    assert "Send these claims?" in _err(result)


def _approve_with_pin(body: Any) -> tuple[int, Any]:
    """The wallet API's approval when the wallet has PIN 4321."""
    pin = (body or {}).get("pin")
    if not pin:
        return 403, {"error": "pin_required", "error_description": "this wallet needs its PIN"}
    if pin != "4321":
        return 403, {"error": "invalid_pin", "error_description": "wrong PIN", "attempts_left": 4}
    return 200, {"state": "sent"}


def test_present_asks_for_the_pin_when_the_wallet_has_one(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/presentations")] = (201, _preview("Grant", "x509_san_dns:desk.example"))
    fake.routes[("POST", "/v1/presentations/p_1/approve")] = (0, _approve_with_pin)
    # Standard input is not a terminal here: the answer, then the PIN, one line each.
    result = runner.invoke(app, ["wallet", "present", "openid4vp://?request_uri=x", "--url", base, "--token", "t",
                                 "--json"], input="y\n4321\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"state": "sent"}
    assert [body for method, path, body in fake.seen if path.endswith("/approve")] == [{}, {"pin": "4321"}]
    # From the environment, and a wrong one is the API's readable error.
    fake.seen.clear()
    result = runner.invoke(app, ["wallet", "present", "openid4vp://?request_uri=x", "--url", base, "--token", "t",
                                 "--yes"], env={"CARTERA_WALLET_PIN": "0000"})
    assert result.exit_code == 1 and "invalid_pin: wrong PIN" in _err(result)
    assert "0000" not in result.output
    # No PIN given: nothing is sent and the error says how to give it.
    result = runner.invoke(app, ["wallet", "present", "openid4vp://?request_uri=x", "--url", base, "--token", "t",
                                 "--yes"], input="")
    assert result.exit_code == 1 and "CARTERA_WALLET_PIN" in _err(result)


def test_api_error_text_is_not_markup(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("GET", "/v1/credentials")] = (400, {"error": "bad [/]", "error_description": "[bold red]FAKE[/] x"})
    result = runner.invoke(app, ["wallet", "credentials", "--url", base, "--token", "t"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "bad [/]: [bold red]FAKE[/] x" in _err(result)


def test_table_cells_are_not_markup(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("GET", "/v1/credentials")] = (200, [{"id": "w_1", "name": "Diploma [/]", "issuer_name": "[conceal]Uni",
                                                      "status": "valid", "expires_at": None}])
    result = runner.invoke(app, ["wallet", "credentials", "--url", base, "--token", "t"])
    assert result.exit_code == 0, result.output
    assert "Diploma [/]" in result.stdout and "[conceal]Uni" in result.stdout


def test_a_success_that_is_not_json_is_a_readable_error(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("GET", "/v1/credentials")] = (200, "<html>a login page</html>")
    result = runner.invoke(app, ["wallet", "credentials", "--url", base, "--token", "t"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "not JSON" in _err(result)


@pytest.mark.parametrize("args", [
    ["issuer", "revoke", ".."], ["issuer", "suspend", "."], ["issuer", "show", "../types"],
    ["issuer", "reinstate", "c_1?x=1"], ["issuer", "show", "c_1#x"], ["verifier", "result", ".."],
    ["verifier", "result", "r/../../v1/templates"], ["verifier", "result", "r?x"],
])
def test_ids_cannot_reach_another_endpoint(api: tuple[FakeAPI, str], args: list[str]) -> None:
    fake, base = api
    result = runner.invoke(app, [*args, "--url", base, "--api-key", "k"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "not a valid" in _err(result)
    assert fake.seen == []


def test_ids_from_the_api_are_checked_too(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/presentations")] = (201, {**_preview("p", "c"), "presentation_id": "../credentials"})
    result = _present(base, "--yes")
    assert result.exit_code == 1 and "not a valid presentation id" in _err(result)
    assert [path for _, path, _ in fake.seen] == ["/v1/presentations"]


def test_good_ids_are_used(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/credentials/c_Ab-9.x/revoke")] = (200, {"credential_id": "c_Ab-9.x", "status": "revoked",
                                                                      "copies": 1})
    result = runner.invoke(app, ["issuer", "revoke", "c_Ab-9.x", "--url", base, "--api-key", "k"])
    assert result.exit_code == 0, result.output
    assert "c_Ab-9.x: revoked" in result.stdout


# -- wallet receive: the transaction code ----------------------------------------------------------

def _offer_routes(fake: FakeAPI, required: bool = True) -> None:
    fake.routes[("POST", "/v1/offers")] = (201, {"offer_id": "o_1", "tx_code_required": required,
                                                 "tx_code": {"input_mode": "numeric", "length": 6,
                                                             "description": "Sent by [b]mail[/b]"}})
    fake.routes[("POST", "/v1/offers/o_1/accept")] = (200, {"state": "issued", "credential_ids": ["w_1"]})


def _receive(base: str, *extra: str, **kwargs: Any) -> Any:
    return runner.invoke(app, ["wallet", "receive", "openid-credential-offer://?x", "--url", base, "--token", "t",
                               *extra], **kwargs)


def test_receive_reads_the_transaction_code_from_standard_input(api: tuple[FakeAPI, str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTERA_TX_CODE", raising=False)
    fake, base = api
    _offer_routes(fake)
    result = _receive(base, "--json", input="482913\n")
    assert result.exit_code == 0, result.output
    assert fake.seen[-1] == ("POST", "/v1/offers/o_1/accept", {"tx_code": "482913"})
    assert json.loads(result.stdout) == {"state": "issued", "credential_ids": ["w_1"]}  # nothing else on stdout
    assert "482913" not in result.output  # not echoed
    assert "Sent by [b]mail[/b]" in _err(result)
    fake.seen.clear()
    result = _receive(base, input="")
    assert result.exit_code == 1 and "needs a transaction code" in _err(result)
    assert [path for _, path, _ in fake.seen] == ["/v1/offers"]  # nothing accepted


def test_receive_asks_for_the_transaction_code_on_the_terminal_without_echo(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    _offer_routes(fake)
    controller, terminal = pty.openpty()
    env = {key: value for key, value in os.environ.items() if key != "CARTERA_TX_CODE"}
    # A session of its own: the pseudo-terminal is the only terminal the command can ask on.
    process = subprocess.Popen([sys.executable, "-m", "cartera.cli", "wallet", "receive", "openid-credential-offer://?x",
                                "--url", base, "--token", "t", "--json"], stdin=terminal, stderr=terminal,
                               stdout=subprocess.PIPE, env=env, start_new_session=True)
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"Transaction code" not in seen and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                seen += os.read(controller, 1024)
        assert b"Transaction code" in seen, seen
        while termios.tcgetattr(controller)[3] & termios.ECHO and time.monotonic() < deadline:
            time.sleep(0.05)  # typing before the command turned echo off would show the code
        os.write(controller, b"482913\n")
        stdout, _ = process.communicate(timeout=60)
        while select.select([controller], [], [], 0.2)[0]:
            try:
                seen += os.read(controller, 1024)
            except OSError:
                break
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    assert process.returncode == 0, (stdout, seen)
    assert json.loads(stdout) == {"state": "issued", "credential_ids": ["w_1"]}
    assert fake.seen[-1] == ("POST", "/v1/offers/o_1/accept", {"tx_code": "482913"})
    assert b"482913" not in seen  # the terminal did not echo it


def test_receive_takes_the_transaction_code_from_the_environment(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    _offer_routes(fake)
    result = _receive(base, env={"CARTERA_TX_CODE": "111222"})
    assert result.exit_code == 0, result.output
    assert fake.seen[-1] == ("POST", "/v1/offers/o_1/accept", {"tx_code": "111222"})
    assert "issued: w_1" in result.stdout


def test_receive_asks_nothing_when_the_offer_needs_no_code(api: tuple[FakeAPI, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTERA_TX_CODE", raising=False)
    fake, base = api
    _offer_routes(fake, required=False)
    result = _receive(base)
    assert result.exit_code == 0, result.output
    assert fake.seen[-1] == ("POST", "/v1/offers/o_1/accept", {"tx_code": None})
    assert "Transaction code" not in result.output


# -- issuer offer --png/--svg ------------------------------------------------------------------------

OFFER = {"offer_uri": "openid-credential-offer://?credential_offer_uri=x", "tx_code": "123456",
         "credential_ids": {"tax-compliance": "c_1"}, "offer_id": "o_1", "credential_offer_uri": "x",
         "expires_at": "2030-01-01T00:00:00Z"}


def _offer(base: str, *extra: str) -> Any:
    return runner.invoke(app, ["issuer", "offer", "--type", "tax-compliance", "--subject", "12345678Z",
                               "--url", base, "--api-key", "k", *extra])


def test_offer_checks_its_output_files_before_making_the_offer(api: tuple[FakeAPI, str], tmp_path: Path) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/offers")] = (201, OFFER)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "link.png").symlink_to(victim)
    (tmp_path / "old.svg").write_text("old")
    cases = [
        (["--png", str(tmp_path / "missing-dir" / "qr.png")], "cannot write"),
        (["--png", str(tmp_path)], "already exists"),
        (["--png", str(tmp_path), "--force"], "cannot write"),
        (["--png", str(tmp_path / "link.png")], "symbolic link"),
        (["--png", str(tmp_path / "link.png"), "--force"], "symbolic link"),
        (["--svg", str(tmp_path / "old.svg")], "already exists"),
        (["--png", str(tmp_path / "new.png"), "--svg", str(tmp_path / "old.svg")], "already exists"),
    ]
    for extra, message in cases:
        result = _offer(base, *extra)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (extra, result.output)
        assert message in _err(result), (extra, result.stderr)
    assert fake.seen == []  # no offer was made, so none was lost
    assert victim.read_text() == "keep me" and (tmp_path / "old.svg").read_text() == "old"
    assert not (tmp_path / "new.png").exists()  # opened for the failed attempt, then removed


def test_offer_writes_new_files_and_overwrites_with_force(api: tuple[FakeAPI, str], tmp_path: Path) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/offers")] = (201, OFFER)
    (tmp_path / "old.svg").write_text("old")
    result = _offer(base, "--png", str(tmp_path / "qr.png"), "--svg", str(tmp_path / "old.svg"), "--force", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tx_code"] == "123456"
    assert (tmp_path / "qr.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "old.svg").read_text().lstrip().startswith("<")


def test_offer_keeps_no_file_when_the_api_refuses(api: tuple[FakeAPI, str], tmp_path: Path) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/offers")] = (400, {"error": "invalid_request", "error_description": "no"})
    result = _offer(base, "--png", str(tmp_path / "qr.png"))
    assert result.exit_code == 1 and "invalid_request: no" in _err(result)
    assert not (tmp_path / "qr.png").exists()


def test_offer_prints_server_text_as_it_is(api: tuple[FakeAPI, str]) -> None:
    fake, base = api
    fake.routes[("POST", "/v1/offers")] = (201, {**OFFER, "offer_uri": "openid-credential-offer://?x=[/]"})
    result = _offer(base)
    assert result.exit_code == 0, result.output
    assert "openid-credential-offer://?x=[/]" in result.stdout


# -- issuer register-type --file ----------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    (b"id: x\nname: \xff\xfe\n", "is not a text file (UTF-8)"),
    (b"id: [unclosed\n", "not valid YAML or JSON"),
])
def test_register_type_file_it_cannot_read_is_a_readable_error(api: tuple[FakeAPI, str], tmp_path: Path,
                                                                 content: bytes, message: str) -> None:
    fake, base = api
    definition = tmp_path / "type.yaml"
    definition.write_bytes(content)
    result = runner.invoke(app, ["issuer", "register-type", "--file", str(definition), "--url", base, "--api-key", "k"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert message in _err(result)
    assert fake.seen == []  # nothing sent
