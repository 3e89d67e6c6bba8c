"""`cartera config reference`: the services' environment variables, generated from their settings classes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cartera.cli import app
from cartera.commands.config import reference_markdown
from wallet_api.settings import WalletSettings

runner = CliRunner()


def test_json_lists_every_field_of_each_settings_class() -> None:
    result = runner.invoke(app, ["config", "reference", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert set(rows) == {"issuer", "verifier", "wallet"}
    wallet = {row["env"] for row in rows["wallet"]}
    assert wallet == {f"CARTERA_WALLET_{name.upper()}" for name in WalletSettings.model_fields}
    assert all(row["description"] for service in rows.values() for row in service)


def test_markdown_table_and_unknown_service() -> None:
    result = runner.invoke(app, ["config", "reference", "--service", "verifier"])
    assert result.exit_code == 0 and "| `CARTERA_VERIFIER_DATABASE_URL` |" in result.output
    bad = runner.invoke(app, ["config", "reference", "--service", "nope"])
    assert bad.exit_code == 1 and "unknown service" in bad.output


def test_update_doc_rewrites_only_the_marked_tables(tmp_path: Path) -> None:
    doc = tmp_path / "ops.md"
    doc.write_text("# Ops\n\n<!-- config:issuer:begin -->\nstale\n<!-- config:issuer:end -->\n\nkept\n")
    first = runner.invoke(app, ["config", "reference", "--update-doc", str(doc)])
    assert first.exit_code == 0 and "updated" in first.output
    text = doc.read_text()
    assert "stale" not in text and reference_markdown("issuer") in text and text.endswith("\n\nkept\n")
    again = runner.invoke(app, ["config", "reference", "--update-doc", str(doc)])
    assert "already up to date" in again.output and doc.read_text() == text


def test_update_doc_of_a_file_that_is_not_utf8_is_a_readable_error(tmp_path: Path) -> None:
    doc = tmp_path / "ops.md"
    doc.write_bytes(b"# Ops\n\xff\xfe not UTF-8\n<!-- config:issuer:begin -->\n<!-- config:issuer:end -->\n")
    result = runner.invoke(app, ["config", "reference", "--update-doc", str(doc)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "not a text file (UTF-8)" in " ".join(result.output.split())
    assert doc.read_bytes().startswith(b"# Ops\n\xff\xfe")  # left as it was
