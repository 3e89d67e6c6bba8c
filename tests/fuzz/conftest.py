"""Fuzz tests: a summary of every schemathesis run at the end of the session (``make fuzz`` shows it).

Each test records its report's summary lines in ``user_properties``, which pytest-xdist carries from
the workers to the controller, so the summary appears with ``-n`` too.
"""

from __future__ import annotations

import pytest

SUMMARY_PROPERTY = "fuzz_summary"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines: list[str] = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            lines += [value for name, value in getattr(report, "user_properties", ()) if name == SUMMARY_PROPERTY]
    if lines:
        terminalreporter.section("schemathesis fuzzing summary")
        for line in sorted(lines):
            terminalreporter.write_line(line)
