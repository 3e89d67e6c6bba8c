"""Fuzz tests: a summary of every schemathesis run at the end of the session (``make fuzz`` shows it)."""

from __future__ import annotations

import pytest

from tests.fuzz.engine import FuzzReport

REPORTS: list[FuzzReport] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section("schemathesis fuzzing summary")
    for report in sorted(REPORTS, key=lambda r: r.service):
        terminalreporter.write_line(report.summary())
        for finding in report.findings:
            terminalreporter.write_line(f"    {finding.operation}: {finding.title} [{finding.check}]")
