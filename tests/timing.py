"""Where the suite's time goes (a pytest plugin, loaded by tests/conftest.py).

Adds up each test's setup + call + teardown by module and by suite (unit, meta, host, browser, e2e),
prints the slowest modules at the end of the run, and writes it all, with the outcome counts, to the
file named by CAIRN_PYTEST_TIMES (`make test` sets it; its phase report, tests/phases.py, reads it).
A module-scoped fixture's set-up (an appliance booting) counts in its module; a session-scoped one
counts in the first module that asks for it, and is also listed on its own (see `record_phase`).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

SLOWEST = 12

_modules: dict[str, float] = defaultdict(float)
_outcomes: Counter = Counter()
_phases: dict[str, float] = {}
_started = time.monotonic()


def record_phase(name: str, seconds: float) -> None:
    """A named piece of work inside the run (e.g. the shared testbed's boot), listed on its own."""
    _phases[name] = _phases.get(name, 0.0) + seconds


def suite_of(module: str) -> str:
    parts = Path(module).parts
    return parts[0] if len(parts) > 1 else "."


def pytest_sessionstart(session):
    global _started
    _started = time.monotonic()


def pytest_runtest_logreport(report):
    module = report.nodeid.split("::", 1)[0]
    _modules[module] += report.duration
    if report.when == "call":
        _outcomes["xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome] += 1
    elif report.outcome == "failed":
        _outcomes["error"] += 1
    elif report.skipped:
        _outcomes["skipped"] += 1


def summary() -> dict:
    suites: dict[str, float] = defaultdict(float)
    for module, seconds in _modules.items():
        suites[suite_of(module)] += seconds
    return {
        "total_seconds": round(time.monotonic() - _started, 1),
        "suites": {name: round(seconds, 1) for name, seconds in sorted(suites.items(), key=lambda kv: -kv[1])},
        "modules": {name: round(seconds, 1) for name, seconds in sorted(_modules.items(), key=lambda kv: -kv[1])},
        "phases": {name: round(seconds, 1) for name, seconds in _phases.items()},
        "outcomes": dict(_outcomes),
    }


def pytest_terminal_summary(terminalreporter):
    if not _modules:
        return
    data = summary()
    terminalreporter.section("time by suite and slowest modules")
    terminalreporter.write_line("  ".join(f"{name} {seconds:.0f} s" for name, seconds in data["suites"].items()))
    for name, seconds in data["phases"].items():
        terminalreporter.write_line(f"{seconds:8.1f} s  {name}")
    for name, seconds in list(data["modules"].items())[:SLOWEST]:
        terminalreporter.write_line(f"{seconds:8.1f} s  {name}")


def pytest_sessionfinish(session):
    target = os.environ.get("CAIRN_PYTEST_TIMES")
    if not target or not _modules:
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(json.dumps(summary(), indent=2) + "\n")
