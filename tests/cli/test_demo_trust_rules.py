"""`cartera run` provisions demo templates that name their issuers, per credential type.

The development issuers CA certifies every demo tenant: a rule without an issuers list would accept
a tax certificate from the town council's tenant. Each demo template trusts exactly the demo
tenants that issue its type (what Aries requests need as well), with or without ``--aries``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from cartera.system import provision
from service_kit.db import Database
from tests.support.servers import worker_port_range
from verifier.models import Template
from verifier.provisioning import DEMO_VCTS


async def _templates(database_url: str) -> dict[str, list[dict]]:
    db = Database(database_url)
    try:
        async with db.read_session() as session:
            return {t.name: t.trusted_issuers for t in (await session.execute(select(Template))).scalars()}
    finally:
        await db.dispose()


@pytest.mark.parametrize("aries", [False, True], ids=["openid4vc", "aries"])
def test_each_demo_template_trusts_the_tenants_issuing_its_type(tmp_path: Path, aries: bool) -> None:
    low, _ = worker_port_range()
    plan = asyncio.run(provision(tmp_path, port_base=low, aries=aries))
    tenants = plan.info["issuer"]["tenants"]
    expected = {DEMO_VCTS["tax"]: [tenants["aoc-tax"]["issuer_url"]],
                DEMO_VCTS["diploma"]: [tenants["uni-barcelona"]["issuer_url"]],
                DEMO_VCTS["padro"]: [tenants["ajuntament-girona"]["issuer_url"]]}
    verifier_db = next(p for p in plan.processes if p.name == "verifier").env["CARTERA_VERIFIER_DATABASE_URL"]
    templates = asyncio.run(_templates(verifier_db))
    assert set(templates) == {"grant-application", "residence", "job-application"}
    for name, rules in templates.items():
        for rule in rules:
            assert rule["issuers"] == expected[rule["vct"]], (name, rule)


def test_the_demo_issuer_has_a_platform_admin_key_kept_across_runs(tmp_path: Path, monkeypatch) -> None:
    """`cartera issuer share-vct` (and new tenants) need the platform admin key: `cartera run` makes
    one, hands it to the issuer process and keeps it in the private development file, the same on
    every run; an operator's own CARTERA_ISSUER_ADMIN_API_KEY wins."""
    monkeypatch.delenv("CARTERA_ISSUER_ADMIN_API_KEY", raising=False)
    low, _ = worker_port_range()
    first = asyncio.run(provision(tmp_path, port_base=low))
    key = first.info["issuer"]["admin_api_key"]
    issuer_env = next(p for p in first.processes if p.name == "issuer").env
    assert key and len(key) >= 32 and issuer_env["CARTERA_ISSUER_ADMIN_API_KEY"] == key
    assert json.loads(first.dev_file.read_text())["issuer"]["admin_api_key"] == key
    assert first.dev_file.stat().st_mode & 0o077 == 0
    again = asyncio.run(provision(tmp_path, port_base=low))
    assert again.info["issuer"]["admin_api_key"] == key
    monkeypatch.setenv("CARTERA_ISSUER_ADMIN_API_KEY", "operator-chosen-" + "k" * 32)
    own = asyncio.run(provision(tmp_path, port_base=low))
    assert own.info["issuer"]["admin_api_key"] == "operator-chosen-" + "k" * 32
