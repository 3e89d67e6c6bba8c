"""How the verifier's Aries channel asks and judges, with real ACA-Py agents (test_services.py's world:
the issuer and the verifier with their own agents, a third agent as the citizen's wallet).

The verifier's database is changed directly (sqlite3) only to set up what another worker or an earlier
delivery would have left: a template stored before a rule, a processed-event key.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import httpx

from aries.client import AdminClient

from . import test_services as services
from .test_services import World

world = services.world  # the module's own world (module scope)


def _verifier_db(world: World) -> sqlite3.Connection:
    url = world.verifier_app.state.aries.settings.database_url
    return sqlite3.connect(url.split(":///", 1)[1], timeout=30)


def _verifier_agent(world: World) -> AdminClient:
    agent = world.verifier_app.state.aries.runtime.client
    return AdminClient(agent.admin_url, agent._headers["x-api-key"])


def _agent_records(world: World) -> list[dict[str, Any]]:
    async def records() -> list[dict[str, Any]]:
        async with _verifier_agent(world) as client:
            return await client.pres_records()

    return asyncio.run(records())


def test_a_template_stored_with_a_purpose_now_refused_makes_no_aries_request(world: World) -> None:
    """A template stored before purpose texts were checked (here a U+202E, which makes a consent
    screen read otherwise than what the agency stored) made no OpenID4VP request, but its text went
    to the holder's wallet over DIDComm (the presentation definition's purpose). It is refused alike:
    400 naming the template and the language, never quoting the text, and the agent is not asked."""
    url, headers = f"{world.verifier_url}/v1/templates", world.agency_headers()
    model = httpx.get(f"{url}/job-application", headers=headers).json()
    name = f"legacy-purpose-{time.time_ns()}"
    template = {key: model[key] for key in ("dcql_query", "trusted_issuers", "anchors_pem", "retention_seconds",
                                                  "response_mode")}
    created = httpx.post(url, json={**template, "name": name, "purpose": {"en": "Job application"}}, headers=headers)
    assert created.status_code == 201, created.text
    reversed_text = "Job application \u202e(no data is kept)"
    with _verifier_db(world) as db:  # as stored before the rule
        assert db.execute("UPDATE templates SET purpose = ? WHERE name = ?",
                          (json.dumps({"ca": "Sol·licitud de feina", "en": reversed_text}), name)).rowcount == 1
    before = len(_agent_records(world))

    refused = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=headers, json={"template": name})
    assert refused.status_code == 400, refused.text
    description = refused.json()["error_description"]
    assert refused.json()["error"] == "invalid_request"
    assert name in description and "the en text" in description and "control character" in description
    assert reversed_text not in refused.text
    assert len(_agent_records(world)) == before  # no request was made on the agent

    replaced = httpx.put(f"{url}/{name}", json={**template, "name": name, "purpose": {"en": "Job application"}},
                         headers=headers)
    assert replaced.status_code == 200, replaced.text
    made = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=headers, json={"template": name})
    assert made.status_code == 201, made.text
    invitation = httpx.get(made.json()["short_url"], headers={"Accept": "application/json"}).json()
    descriptor = invitation["requests~attach"][0]["data"]["json"]["request_presentations~attach"][0]["data"]["json"]
    assert descriptor["presentation_definition"]["input_descriptors"][0]["purpose"] == "Job application"
