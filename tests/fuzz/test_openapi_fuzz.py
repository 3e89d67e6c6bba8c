"""Schemathesis against the OpenAPI document of every service, over real HTTP on loopback.

Quick profile (``make test``): a few examples per operation and phase, deterministic seed.
Long profile (``make fuzz``, ``CARTERA_FUZZ=long``): many examples and the stateful phase.
A failure lists each finding with the check that failed and a curl line that reproduces it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fuzz import services
from tests.fuzz.conftest import SUMMARY_PROPERTY
from tests.fuzz.engine import Profile, load_schema, run

TARGETS: dict[str, Callable[[Path], contextlib.AbstractContextManager[services.Target]]] = {
    "issuer": services.issuer_target,
    "verifier": services.verifier_target,
    "wallet": services.wallet_target,
    "idp": services.idp_target,
    "viaoberta": services.viaoberta_target,
}
_METHODS = ("post", "put", "patch")


@pytest.fixture
def loopback_only() -> Iterator[None]:
    with services.loopback_only():
        yield


def wrong_content_type_answers(target: services.Target) -> list[str]:
    """Send a body of a media type no operation takes (XML where JSON or a form is expected) to every
    operation with a request body; return the operations that did not answer a 4xx in the error shape."""
    doc = httpx.get(f"{target.url}/openapi.json").json()
    wrong: list[str] = []
    with httpx.Client(base_url=target.url, headers=target.headers, timeout=20) as client:
        for path, item in doc["paths"].items():
            for method in _METHODS:
                operation = item.get(method)
                if not operation or "requestBody" not in operation:
                    continue
                media = set(operation["requestBody"].get("content", {}))
                if not media or media & {"text/xml", "application/xml", "*/*"}:
                    continue
                # Path parameters get a plausible value: the check is about the body, not the path.
                url = path
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path":
                        url = url.replace("{" + parameter["name"] + "}", "x")
                answer = client.request(method.upper(), url, content=b"<a>1</a>",
                                        headers={"Content-Type": "application/xml"})
                ok = 400 <= answer.status_code < 500 and (
                    answer.status_code in (401, 404) or _error_shaped(answer))
                if not ok:
                    wrong.append(f"{method.upper()} {path}: {answer.status_code} {answer.text[:120]}")
    return wrong


def _error_shaped(answer: httpx.Response) -> bool:
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str)


@pytest.mark.parametrize("service", sorted(TARGETS))
def test_service_conforms_to_its_openapi(service: str, tmp_path: Path, loopback_only: None,
                                         record_property: Callable[[str, object], None]) -> None:
    profile = Profile.current()
    with TARGETS[service](tmp_path) as target:
        started = time.monotonic()
        schema = load_schema(target.url, headers=target.headers, profile=profile, exclude_paths=target.exclude_paths,
                             protocol_server_errors=target.protocol_server_errors, links=target.links)
        report = run(service, schema, profile, target.accepted)
        report.elapsed = time.monotonic() - started
        wrong_media = wrong_content_type_answers(target)
    record_property(SUMMARY_PROPERTY, report.summary())
    assert report.requests > 0 and report.operations > 0, report.explain()
    assert not report.findings and not report.errors, report.explain()
    assert not wrong_media, "a wrong Content-Type did not get a clear 4xx:\n" + "\n".join(wrong_media)
