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

import pytest

from tests.fuzz import services
from tests.fuzz.conftest import REPORTS
from tests.fuzz.engine import Profile, load_schema, run

TARGETS: dict[str, Callable[[Path], contextlib.AbstractContextManager[services.Target]]] = {
    "issuer": services.issuer_target,
    "verifier": services.verifier_target,
    "wallet": services.wallet_target,
    "idp": services.idp_target,
    "viaoberta": services.viaoberta_target,
}


@pytest.fixture
def loopback_only() -> Iterator[None]:
    with services.loopback_only():
        yield


@pytest.mark.parametrize("service", sorted(TARGETS))
def test_service_conforms_to_its_openapi(service: str, tmp_path: Path, loopback_only: None) -> None:
    profile = Profile.current()
    with TARGETS[service](tmp_path) as target:
        started = time.monotonic()
        schema = load_schema(target.url, headers=target.headers, profile=profile, exclude_paths=target.exclude_paths,
                             protocol_server_errors=target.protocol_server_errors)
        report = run(service, schema, profile, target.accepted)
        report.elapsed = time.monotonic() - started
    REPORTS.append(report)
    assert report.requests > 0 and report.operations > 0, report.explain()
    assert not report.findings and not report.errors, report.explain()
