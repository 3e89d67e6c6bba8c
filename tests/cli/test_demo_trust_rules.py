"""`cartera run` provisions demo templates that name their issuers, per credential type.

The development issuers CA certifies every demo tenant: a rule without an issuers list would accept
a tax certificate from the town council's tenant. Each demo template trusts exactly the demo
tenants that issue its type (what Aries requests need as well), with or without ``--aries``.
"""

from __future__ import annotations

import asyncio
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
