"""Run schemathesis (4.x) against one running service and collect what it found.

The schemathesis engine drives every phase the profile enables (documented examples, the coverage
phase's boundary and negative cases, random fuzzing and, in the long profile, stateful sequences
along OpenAPI links). This module turns its event stream into a :class:`FuzzReport`: the failures
(one per distinct check failure, with a curl line to reproduce it), the count of requests and the
status codes seen, so tests can assert on it and ``make fuzz`` can print a summary.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from schemathesis.engine import Status, from_schema
from schemathesis.engine import events as st_events

# Checks that state the contract of every Cartera service:
# - not_a_server_error: no 5xx, whatever the input;
# - status_code_conformance / content_type_conformance / response_schema_conformance /
#   response_headers_conformance: the answer is one the OpenAPI document describes;
# - negative_data_rejection: input that breaks the documented schema is refused with a 4xx;
# - unsupported_method: a method the path does not have gives 405 (not 500 or 200);
# - missing_required_header: a missing documented header gives a 4xx.
# positive_data_acceptance is off: a schema-valid request is routinely refused for business reasons
# (an unknown offer id, a wrong tx_code, a type that needs a name), which a schema cannot express.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "missing_required_header",
)


@dataclass(frozen=True)
class Profile:
    """How hard to fuzz: examples per operation and phase, which phases, the seed."""

    name: str
    max_examples: int
    phases: tuple[str, ...]
    seed: int = 20_260_101

    @classmethod
    def current(cls) -> Profile:
        """The profile named by ``CARTERA_FUZZ`` (``quick``, the default, or ``long``)."""
        name = os.environ.get("CARTERA_FUZZ", "quick").strip().lower() or "quick"
        if name == "long":
            examples = int(os.environ.get("CARTERA_FUZZ_EXAMPLES", "300"))
            return cls("long", examples, ("examples", "coverage", "fuzzing", "stateful"))
        if name != "quick":
            raise ValueError(f"CARTERA_FUZZ must be quick or long, not {name!r}")
        return cls("quick", int(os.environ.get("CARTERA_FUZZ_EXAMPLES", "6")), ("examples", "coverage", "fuzzing"))


@dataclass(frozen=True)
class Link:
    """An OpenAPI link the stateful phase follows: a value from one answer fills the next request.

    FastAPI documents no links; the harness adds them where a created resource has its own operations
    (a presentation request's id, a template's name), so sequences reach beyond 404s on random ids.
    """

    name: str
    source: tuple[str, str, str]            # (path, method, status) of the answer
    target: tuple[str, str]                 # (path, method) of the next request
    parameters: tuple[tuple[str, str], ...]  # (parameter, runtime expression or constant)

    def add_to(self, document: dict[str, Any]) -> None:
        """Add the link to ``document`` (skipped when an operation is not in it)."""
        path, method, status = self.source
        target_path, target_method = self.target
        paths = document.get("paths", {})
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None or target_method not in paths.get(target_path, {}):
            return
        pointer = target_path.replace("~", "~0").replace("/", "~1")
        response.setdefault("links", {})[self.name] = {
            "operationRef": f"#/paths/{pointer}/{target_method}", "parameters": dict(self.parameters)}


@dataclass
class Finding:
    """One failed check on one operation."""

    operation: str
    check: str
    title: str
    message: str
    reproduce: str

    def __str__(self) -> str:
        return f"{self.operation}: {self.title} [{self.check}]\n    {self.message}\n    {self.reproduce}"


@dataclass
class FuzzReport:
    """What one run found against one service."""

    service: str
    profile: str
    operations: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    # Failures of known, accepted (operation, check) pairs: counted, not reported as findings.
    accepted: int = 0
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    # Status of each phase that ran (examples, coverage, fuzzing, stateful).
    phases: dict[str, str] = field(default_factory=dict)
    # Seconds spent per operation, to find what makes a run slow.
    timings: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line per service for the ``make fuzz`` summary."""
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(self.statuses.items()))
        phases = ",".join(f"{name}={status}" for name, status in self.phases.items())
        return (f"{self.service:<10} {self.profile:<5} operations {self.operations:>3}  requests {self.requests:>6}  "
                f"findings {len(self.findings):>3} (accepted {self.accepted})  errors {len(self.errors):>2}  {self.elapsed:6.1f} s  statuses {{{codes}}}  phases {phases}")

    def explain(self) -> str:
        """Every finding and error, for an assertion message."""
        lines = [self.summary()]
        lines += [str(f) for f in self.findings]
        lines += [f"error: {e}" for e in self.errors]
        return "\n".join(lines)


def load_schema(base_url: str, *, headers: dict[str, str], profile: Profile,
                exclude_paths: tuple[str, ...] = (), protocol_server_errors: tuple[str, ...] = (),
                links: tuple[Link, ...] = ()) -> Any:
    """The service's OpenAPI document as served, with ``links`` added, configured for ``profile``."""
    config = schemathesis.Config.from_dict({
        "seed": profile.seed,
        "color": False,
        "base-url": base_url,
        "headers": headers,
        # Generous: a loaded CI machine must not turn a slow answer into a finding.
        "request-timeout": 60.0,
        "suppress-health-check": ["all"],
        "generation": {"max-examples": profile.max_examples, "deterministic": profile.name == "quick",
                       "database": "none"},
        "phases": {name: {"enabled": name in profile.phases}
                   for name in ("examples", "coverage", "fuzzing", "stateful")},
        "checks": {**{name: {"enabled": name in CHECKS} for name in (
            *CHECKS, "positive_data_acceptance", "use_after_free", "ensure_resource_availability",
            "ignored_auth", "object_level_authorization", "allow_header_conformance")},
                   # 502/503 say a dependency is unreachable (documented on every operation); 500 is a bug.
                   "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "502", "503",
                                                                *protocol_server_errors]}},
        "warnings": False,
    })
    document = httpx.get(f"{base_url}/openapi.json", headers=headers, timeout=30).json()
    for link in links:
        link.add_to(document)
    schema = schemathesis.openapi.from_dict(document, config=config)
    for path in exclude_paths:
        schema = schema.exclude(path_regex=path)
    return schema


def run(service: str, schema: Any, profile: Profile,
        accepted: dict[tuple[str, str], str] | None = None) -> FuzzReport:
    """Run the engine over ``schema`` and gather its findings, less the ``accepted`` ones
    (``(operation, check) -> reason``)."""
    accepted = accepted or {}
    report = FuzzReport(service, profile.name)
    seen: set[tuple[str, str, str]] = set()
    labels: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, st_events.ScenarioFinished):
            recorder = event.recorder
            if event.label:
                labels.add(event.label)
                report.timings[event.label] += event.elapsed_time
            for interaction in recorder.interactions.values():
                report.requests += 1
                if interaction.response is not None:
                    report.statuses[interaction.response.status_code] += 1
            for checks in recorder.checks.values():
                for check in checks:
                    if check.status != Status.FAILURE or check.failure_info is None:
                        continue
                    failure = check.failure_info.failure
                    if (recorder.label, check.name) in accepted:
                        report.accepted += 1
                        continue
                    key = (recorder.label, check.name, failure.title)
                    if key in seen:
                        continue
                    seen.add(key)
                    report.findings.append(Finding(recorder.label, check.name, failure.title,
                                                   (failure.message or "").strip(), check.failure_info.code_sample))
        elif isinstance(event, st_events.PhaseFinished):
            phase = event.phase
            if phase.is_enabled and phase.name.value in ("examples", "coverage", "fuzzing", "stateful"):
                skipped = f" ({phase.skip_reason.value})" if phase.skip_reason else ""
                report.phases[str(phase.name.value)] = f"{event.status.value}{skipped}"
        elif isinstance(event, st_events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.title}: {event.info.message}".strip())
        elif isinstance(event, st_events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
    report.operations = len(labels)
    return report
