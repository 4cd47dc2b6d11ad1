"""What a test needs from this machine, and what happens when it is not there (a pytest plugin,
loaded by tests/conftest.py, and the two markers every skip in tests/ is made with).

There are two kinds of skip, and only two:

    missing(...)   a tool, daemon, package file or build product that `make test` installs or
                   builds (samba, libvirtd, testparm, the test guest, ...). Run by hand, the test is
                   skipped with what is missing and how to get it. Under CI (CI=true) or `make test`
                   (CAIRN_STRICT_SKIPS=1) the skip becomes a failure naming what is missing: there
                   everything is installed, so a skip would hide a part of the product.
    cannot(...)    something this machine truly cannot do (no root, a kernel without btrfs or loop
                   devices). Always a skip; the reason is listed at the end of the run. What the host
                   kernel lacks (md, LIO, nfsd) is tested inside appliances (tests/e2e), not skipped.

tests/meta/test_skip_policy.py keeps it so: every skip in tests/ goes through these two, and a
missing-tool skip fails a strict run.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

MISSING = "missing: "
CANNOT = "this machine cannot: "
STRICT_VARIABLES = ("CI", "CAIRN_STRICT_SKIPS")


def strict() -> bool:
    """True under CI or `make test`: a missing-tool skip fails the run."""
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in STRICT_VARIABLES)


def absent(tools: dict[str, str] | None = None, files: dict[str | Path, str] | None = None) -> list[str]:
    """What of tools (name -> how to get it) and files (path -> how to get it) is not here, as
    "name (how to get it)" strings."""
    gone = [f"{name} ({how})" for name, how in (tools or {}).items() if shutil.which(name) is None]
    gone += [f"{path} ({how})" for path, how in (files or {}).items() if not Path(path).exists()]
    return gone


def missing(tools: dict[str, str] | None = None, files: dict[str | Path, str] | None = None) -> pytest.MarkDecorator:
    """Skip (fail under CI / `make test`) when one of these tools or files is not here."""
    gone = absent(tools, files)
    return pytest.mark.skipif(bool(gone), reason=MISSING + ", ".join(gone))


def cannot(condition: bool, reason: str) -> pytest.MarkDecorator:
    """Skip when condition holds: something this machine cannot do, named in reason."""
    return pytest.mark.skipif(condition, reason=CANNOT + reason)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


# --- the plugin -------------------------------------------------------------------------------
_missing_seen: Counter = Counter()
_cannot_seen: Counter = Counter()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if reason.startswith(MISSING):
        _missing_seen[reason.removeprefix(MISSING)] += 1
        if strict():
            report.outcome = "failed"
            report.longrepr = (f"{reason} — a skip here would hide a part of the product: `make test` "
                               "installs and builds everything (CI=true / CAIRN_STRICT_SKIPS=1 make this a failure)")
    elif reason.startswith(CANNOT):
        _cannot_seen[reason.removeprefix(CANNOT)] += 1


def pytest_terminal_summary(terminalreporter):
    if not (_missing_seen or _cannot_seen):
        return
    terminalreporter.section("what this machine lacks")
    for what, count in sorted(_missing_seen.items()):
        verdict = "FAILED" if strict() else "skipped"
        terminalreporter.write_line(f"{verdict} ({count} tests), missing: {what}")
    for what, count in sorted(_cannot_seen.items()):
        terminalreporter.write_line(f"skipped ({count} tests), this machine cannot: {what}")
