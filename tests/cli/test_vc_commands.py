"""`cartera vc verify|decode` and `cartera demo-credential`, driven as an operator would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from cartera.cli import app
from ssi import x509 as ssi_x509
from ssi.jose import Key
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.status_list import StatusList, sign_status_list_token, status_claim
from tests.support.servers import serve

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    result = runner.invoke(app, ["demo-credential", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_demo_credential_discloses_only_what_was_asked(demo_files: tuple[Path, dict]) -> None:
    out, summary = demo_files
    assert summary["valid"] is True
    assert summary["disclosed"] == {"title": "Grau en Enginyeria Informàtica", "awardingBody": "Universitat de Barcelona"}
    assert summary["disclosures_presented"] == 2 < summary["disclosures_total"]
    assert summary["request_uri"].startswith("openid4vp://?client_id=x509_san_dns")
    for name in ("credential.sd-jwt", "presentation.sd-jwt", "trust-anchor.pem", "issuer.jwk.json", "request-qr.png",
                 "request-qr.svg"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "read-only"])
def test_demo_credential_out_it_cannot_write_is_a_readable_error(tmp_path: Path, where: str) -> None:
    """An --out that is a file (or under one) is refused before the demo runs; one that cannot be
    written for another reason (sysfs takes no new folder, not even from root) is one line too."""
    (tmp_path / "taken").write_text("a file")
    if where == "read-only":
        if not Path("/sys/kernel").is_dir():
            pytest.skip("needs Linux's /sys")
        out = Path("/sys/cartera-demo")
    else:
        out = tmp_path / "taken" if where == "a-file" else tmp_path / "taken" / "demo"
    result = runner.invoke(app, ["demo-credential", "--out", str(out), "--no-qr"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    errors = "".join(result.stderr.split())
    assert f"error:cannotwriteto{out}:".replace(" ", "") in errors, result.stderr
    if where != "read-only":
        assert f"{tmp_path / 'taken'}isafile,notafolder" in errors
        assert "Issued a diploma" not in result.stdout  # refused before the work
    assert (tmp_path / "taken").read_text() == "a file"


def _verify(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["vc", "verify", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_verify_presentation_with_trust_anchor(demo_files: tuple[Path, dict]) -> None:
    out, summary = demo_files
    code, report = _verify(str(out / "presentation.sd-jwt"), "--trust-anchor", str(out / "trust-anchor.pem"),
                           "--aud", summary["client_id"], "--nonce", summary["nonce"])
    assert code == 0 and report["valid"] is True
    assert report["claims"]["title"] == "Grau en Enginyeria Informàtica"
    assert "name" not in report["claims"]  # never disclosed, never shown
    assert [c["name"] for c in report["checks"] if c["ok"]] == [
        "structure", "algorithm", "credential_type", "issuer_key", "issuer_signature", "validity", "key_binding",
        "credential_rules"]


@pytest.mark.parametrize(("change", "failed_check", "code"), [
    ({"--nonce": "another"}, "key_binding", "sd_jwt.kb_wrong_nonce"),
    ({"--aud": "x509_san_dns:evil.example"}, "key_binding", "sd_jwt.kb_wrong_aud"),
    ({"--vct": "https://types.cartera.example/tax-compliance/v1"}, "credential_type", "sd_jwt_vc.unexpected_vct"),
])
def test_verify_reports_the_failing_check(demo_files: tuple[Path, dict], change: dict, failed_check: str,
                                          code: str) -> None:
    out, summary = demo_files
    options = {"--aud": summary["client_id"], "--nonce": summary["nonce"], **change}
    args = [str(out / "presentation.sd-jwt"), "--trust-anchor", str(out / "trust-anchor.pem")]
    for name, value in options.items():
        args += [name, value]
    exit_code, report = _verify(*args)
    assert exit_code == 1 and report["valid"] is False and report["claims"] == {}
    failed = [c for c in report["checks"] if c["ok"] is False]
    assert failed == [{"name": failed_check, "ok": False, "code": code}]


def test_verify_with_an_untrusted_anchor_or_wrong_key(demo_files: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = demo_files
    _, other_ca = ssi_x509.create_ca("another CA")
    (tmp_path / "other.pem").write_bytes(ssi_x509.cert_to_pem(other_ca))
    code, report = _verify(str(out / "credential.sd-jwt"), "--trust-anchor", str(tmp_path / "other.pem"))
    assert code == 1 and {"name": "issuer_key", "ok": False, "code": "x509.untrusted_chain"} in report["checks"]
    (tmp_path / "k.json").write_text(json.dumps(Key.generate().public_jwk()))
    code, report = _verify(str(out / "credential.sd-jwt"), "--issuer-jwk", str(tmp_path / "k.json"))
    assert code == 1 and {"name": "issuer_signature", "ok": False, "code": "jose.bad_signature"} in report["checks"]


def test_verify_from_stdin_and_tampering(demo_files: tuple[Path, dict]) -> None:
    out, _ = demo_files
    token = (out / "credential.sd-jwt").read_text().strip()
    result = runner.invoke(app, ["vc", "verify", "-", "--issuer-jwk", str(out / "issuer.jwk.json"), "--json"],
                           input=token)
    assert result.exit_code == 0 and json.loads(result.stdout)["claims"]["name"] == "Núria Puig i Ferrer"
    tampered = token.replace(token.split("~")[1], token.split("~")[1][:-2] + "AA")
    result = runner.invoke(app, ["vc", "verify", "-", "--issuer-jwk", str(out / "issuer.jwk.json"), "--json"],
                           input=tampered)
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["checks"][0]["ok"] is False


def test_readable_errors_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("not-a-token")
    result = runner.invoke(app, ["vc", "verify", str(tmp_path / "t")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--issuer-jwk" in result.output  # says how to give a key
    result = runner.invoke(app, ["vc", "decode", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "cannot read" in result.output
    result = runner.invoke(app, ["vc", "decode", str(tmp_path / "t")])
    assert result.exit_code == 1 and "not a decodable SD-JWT" in result.output


def test_decode_shows_parts_without_verifying(demo_files: tuple[Path, dict]) -> None:
    out, _ = demo_files
    result = runner.invoke(app, ["vc", "decode", str(out / "presentation.sd-jwt"), "--json"])
    parts = json.loads(result.stdout)
    assert result.exit_code == 0
    assert parts["header"]["typ"] == "dc+sd-jwt" and parts["kb_jwt"]["header"]["typ"] == "kb+jwt"
    assert sorted(d["name"] for d in parts["disclosures"]) == ["awardingBody", "title"]
    text = runner.invoke(app, ["vc", "decode", str(out / "presentation.sd-jwt")]).output
    assert "Not verified" in text


def test_check_status_against_a_live_status_list(tmp_path: Path) -> None:
    """A revoked credential fails --check-status; the status list is fetched over real HTTP."""
    ca_key, ca_cert = ssi_x509.create_ca("status test CA")
    issuer_key = Key.generate()
    status_list = StatusList(1000, bits=2)
    status_list.set(7, 1)
    holder = Key.generate()
    tokens: dict[str, str] = {}

    async def status_endpoint(_request):  # noqa: ANN202
        return Response(tokens["list"], media_type="application/statuslist+jwt")

    with serve(Starlette(routes=[Route("/status/1", status_endpoint)])) as base:
        issuer = base + "/t/test"
        cert = ssi_x509.issue_certificate(ca_key, ca_cert, issuer_key, "issuer", san_uris=[issuer])
        x5c = ssi_x509.x5c_from_chain([cert])
        tokens["list"] = sign_status_list_token(status_list, uri=base + "/status/1", key=issuer_key, ttl=60, x5c=x5c)
        (tmp_path / "ca.pem").write_bytes(ssi_x509.cert_to_pem(ca_cert))
        for idx, expected in ((3, 0), (7, 1)):
            credential = issue_sd_jwt_vc({"a": 1}, vct="https://t.example/v", issuer=issuer, key=issuer_key,
                                         holder_jwk=holder.public_jwk(), disclosable=[("a",)], x5c=x5c,
                                         status=status_claim(idx, base + "/status/1"), exp=int(time.time()) + 60)
            assert SDJWT.parse(credential).claims["a"] == 1
            (tmp_path / "c").write_text(credential)
            code, report = _verify(str(tmp_path / "c"), "--trust-anchor", str(tmp_path / "ca.pem"), "--check-status",
                                   "--allow-http-loopback")
            status_check = report["checks"][-1]
            if expected == 0:
                assert code == 0 and status_check == {"name": "status", "ok": True, "code": "ok"}
            else:
                assert code == 1 and status_check == {"name": "status", "ok": False, "code": "status_list.revoked"}


def test_help_explains_the_commands() -> None:
    result = runner.invoke(app, ["vc", "verify", "--help"])
    assert result.exit_code == 0 and "--trust-anchor" in result.output and "Exit status 0" in result.output
    assert "demo-credential" in runner.invoke(app, ["--help"]).output


def _err(result: object) -> str:
    """Standard error with rich's line wrapping undone."""
    return " ".join(result.stderr.split())  # type: ignore[attr-defined]


def test_decode_shows_claim_names_as_they_are(tmp_path: Path) -> None:
    """Claim names come from whoever made the token: `[/]` in a disclosure path is text, not markup."""
    credential = issue_sd_jwt_vc({"a[/]b": {"[conceal]x": 1}}, vct="https://t.example/v", issuer="https://i.example",
                                 key=Key.generate(), holder_jwk=None, disclosable=[("a[/]b",), ("a[/]b", "[conceal]x")])
    (tmp_path / "c").write_text(credential)
    result = runner.invoke(app, ["vc", "decode", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "a[/]b/[conceal]x: " in result.stdout


def test_binary_input_is_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(bytes(range(256)))
    for args in (["vc", "decode", str(tmp_path / "bin")],
                 ["vc", "verify", str(tmp_path / "bin"), "--issuer-jwk", str(tmp_path / "bin")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
        assert "is not a text file" in _err(result)
    result = runner.invoke(app, ["vc", "decode", "-"], input=bytes(range(128, 256)))
    assert result.exit_code == 1 and "standard input is not UTF-8 text" in _err(result)


def _metadata_issuer(tmp_path: Path, base: str, key: Key, status: dict | None = None) -> Path:
    credential = issue_sd_jwt_vc({"a": 1}, vct="https://t.example/v", issuer=base + "/t/x", key=key,
                                 holder_jwk=None, disclosable=[("a",)], status=status, exp=int(time.time()) + 60)
    (tmp_path / "c").write_text(credential)
    return tmp_path / "c"


def test_verify_with_metadata_needs_the_issuers_to_trust(tmp_path: Path) -> None:
    """--metadata fetches the key of the iss the (unverified) credential names: only from --issuer."""
    key = Key.generate()
    fetched: list[str] = []

    async def metadata(request):  # noqa: ANN001, ANN202
        fetched.append(request.url.path)
        return JSONResponse({"issuer": str(request.base_url).rstrip("/") + "/t/x", "jwks": {"keys": [key.public_jwk()]}})

    with serve(Starlette(routes=[Route("/.well-known/jwt-vc-issuer/t/x", metadata)])) as base:
        credential = str(_metadata_issuer(tmp_path, base, key))
        result = runner.invoke(app, ["vc", "verify", credential, "--metadata", "--allow-http-loopback"])
        assert result.exit_code == 1 and "--metadata needs the issuers to trust" in _err(result)
        assert "--issuer URL" in _err(result)
        result = runner.invoke(app, ["vc", "verify", credential, "--issuer", base + "/t/x"])
        assert result.exit_code == 1 and "give --metadata too" in _err(result)
        code, report = _verify(credential, "--metadata", "--issuer", "https://other.example/t/x",
                               "--allow-http-loopback")
        assert code == 1 and {"name": "issuer_key", "ok": False, "code": "sd_jwt_vc.untrusted_issuer"} in report["checks"]
        assert fetched == []  # an issuer not listed is never contacted
        # A loopback http issuer (`cartera run`) with --allow-http-loopback.
        code, report = _verify(credential, "--metadata", "--issuer", "https://other.example", "--issuer",
                               base + "/t/x", "--allow-http-loopback")
        assert code == 0 and report["claims"]["a"] == 1, report
        assert fetched == ["/.well-known/jwt-vc-issuer/t/x"]
        code, report = _verify(credential, "--metadata", "--issuer", base + "/t/x")
        assert code == 1 and {"name": "issuer_key", "ok": False, "code": "sd_jwt_vc.insecure_iss"} in report["checks"]


def test_check_status_without_a_status_reference_is_not_applicable(demo_files: tuple[Path, dict],
                                                                   tmp_path: Path) -> None:
    key = Key.generate()
    credential = issue_sd_jwt_vc({"a": 1}, vct="https://t.example/v", issuer="https://i.example", key=key,
                                 holder_jwk=None, disclosable=[("a",)], exp=int(time.time()) + 60)
    (tmp_path / "c").write_text(credential)
    (tmp_path / "k.json").write_text(json.dumps(key.public_jwk()))
    code, report = _verify(str(tmp_path / "c"), "--issuer-jwk", str(tmp_path / "k.json"), "--check-status")
    assert code == 0 and report["valid"] is True
    assert report["checks"][-1] == {"name": "status", "ok": True, "code": "not_applicable"}
    code, report = _verify(str(tmp_path / "c"), "--issuer-jwk", str(tmp_path / "k.json"))
    assert report["checks"][-1] == {"name": "status", "ok": None, "code": "not_requested"}
