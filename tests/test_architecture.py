"""The dependency rule of docs/architecture.md, checked on the source of every package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FRAMEWORKS = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "aiosqlite", "asyncpg", "psycopg",
              "psycopg2", "flask", "django"}
SERVICES = {"issuer", "verifier", "wallet_api"}
OUR_PACKAGES = {"ssi", "credential_schemas", "viaoberta", "service_kit", "sandbox", "aries", "cartera"} | SERVICES

# package -> the packages of ours it may import (besides itself)
ALLOWED_OURS: dict[str, set[str]] = {
    "ssi": set(),
    "credential_schemas": {"ssi"},
    "viaoberta": {"ssi"},
    "service_kit": {"ssi"},
    "sandbox": {"ssi", "viaoberta", "service_kit"},
    "issuer": {"ssi", "credential_schemas", "viaoberta", "service_kit", "aries"},
    "verifier": {"ssi", "credential_schemas", "service_kit", "aries"},
    "wallet_api": {"ssi", "credential_schemas", "service_kit"},
    "aries": {"ssi", "credential_schemas", "service_kit"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _package_imports(package: str) -> dict[Path, set[str]]:
    return {path: _imports(path) for path in (ROOT / package).rglob("*.py")}


@pytest.mark.parametrize("package", sorted(ALLOWED_OURS))
def test_package_imports_only_what_the_rule_allows(package: str) -> None:
    if not (ROOT / package).is_dir():  # packages come into being issue by issue
        return
    for path, names in _package_imports(package).items():
        ours = (names & OUR_PACKAGES) - {package}
        assert ours <= ALLOWED_OURS[package], f"{path.relative_to(ROOT)} imports {sorted(ours - ALLOWED_OURS[package])}"


def test_ssi_imports_no_web_framework_or_database() -> None:
    for path, names in _package_imports("ssi").items():
        assert not names & FRAMEWORKS, f"{path.relative_to(ROOT)} imports {sorted(names & FRAMEWORKS)}"


def test_credential_schemas_and_viaoberta_stay_framework_free() -> None:
    for package in ("credential_schemas", "viaoberta"):
        if (ROOT / package).is_dir():
            for path, names in _package_imports(package).items():
                assert not names & FRAMEWORKS, f"{path.relative_to(ROOT)} imports {sorted(names & FRAMEWORKS)}"
