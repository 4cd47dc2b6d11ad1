#!/usr/bin/env python3
"""`make test`'s phases, timed, and the report printed at its end (stdlib only: the first phase
makes the virtualenv).

    tests/phases.py begin                          forget the previous run's phases
    tests/phases.py run NAME -- COMMAND...         run COMMAND as phase NAME; on failure print the
                                                   report and exit with COMMAND's status
    tests/phases.py run --last NAME -- COMMAND...  the same, and print the report in any case
    tests/phases.py report

The report lists each phase's wall time (apt + venv, image, guest, pytest), what the image and guest
builds did in this run (from their manifests: base rootfs and guest kernel cached or built), the
pytest time by suite and the slowest modules (from tests/timing.py's file), and ends with one line
of counts ("suite: N passed, N failed, N skipped").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"
PHASES = ARTIFACTS / "phases.json"
PYTEST_TIMES = ARTIFACTS / "pytest-times.json"
IMAGE_MANIFESTS = ROOT / "build"
GUEST_MANIFEST = ROOT / "build" / "guest" / "cairn-testguest.json"
SLOWEST = 10


def load() -> dict:
    try:
        return json.loads(PHASES.read_text())
    except (OSError, ValueError):
        return {"began": time.time(), "phases": []}


def save(data: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    PHASES.write_text(json.dumps(data, indent=2) + "\n")


def begin() -> None:
    PYTEST_TIMES.unlink(missing_ok=True)
    save({"began": time.time(), "phases": []})


def run(name: str, argv: list[str], last: bool) -> int:
    data = load()
    started = time.monotonic()
    environment = dict(os.environ, CAIRN_PYTEST_TIMES=str(PYTEST_TIMES))
    try:
        code = subprocess.run(argv, env=environment).returncode
    except KeyboardInterrupt:
        code = 130
    data["phases"].append({"name": name, "seconds": round(time.monotonic() - started, 1), "status": code})
    save(data)
    if code != 0 or last:
        report()
    return code


def built_this_run(manifest: Path, began: float) -> dict | None:
    try:
        return json.loads(manifest.read_text()) if manifest.stat().st_mtime >= began else None
    except (OSError, ValueError):
        return None


def minutes(seconds: float) -> str:
    return f"{seconds:7.0f} s  ({seconds / 60:4.1f} min)"


def report() -> None:
    data = load()
    began = data.get("began", 0)
    lines = ["", "=" * 30 + " make test: time by phase " + "=" * 30]
    total = 0.0
    for phase in data["phases"]:
        total += phase["seconds"]
        failed = "" if phase["status"] == 0 else f"   FAILED (exit {phase['status']})"
        lines.append(f"{phase['name']:<14}{minutes(phase['seconds'])}{failed}")
        if "image" in phase["name"]:
            for manifest_path in sorted(IMAGE_MANIFESTS.glob("cairn-*-amd64.json")):
                if (manifest := built_this_run(manifest_path, began)):
                    steps = ", ".join(f"{k} {v:.0f} s" for k, v in manifest.get("steps_seconds", {}).items())
                    lines.append(f"{'':14}image built: base rootfs {'from the cache' if manifest.get('base_cached') else 'BUILT'}"
                                 f"; {steps}")
        if "guest" in phase["name"] and (manifest := built_this_run(GUEST_MANIFEST, began)):
            steps = ", ".join(f"{k} {v:.0f} s" for k, v in manifest.get("steps_s", {}).items())
            kernel = "from the cache" if manifest.get("kernel_cached") else "COMPILED"
            lines.append(f"{'':14}guest built: kernel {kernel}; {steps}")
    lines.append(f"{'total':<14}{minutes(total)}")
    try:
        times = json.loads(PYTEST_TIMES.read_text())
    except (OSError, ValueError):
        times = None
    if times:
        lines.append("pytest by suite: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times["suites"].items()))
        for name, seconds in times.get("phases", {}).items():
            lines.append(f"{'':14}{seconds:7.0f} s  {name}")
        lines.append("slowest modules:")
        for name, seconds in list(times["modules"].items())[:SLOWEST]:
            lines.append(f"{'':14}{seconds:7.0f} s  {name}")
        counts = times.get("outcomes", {})
        failed = counts.get("failed", 0) + counts.get("error", 0)
        lines.append(f"suite: {counts.get('passed', 0)} passed, {failed} failed, {counts.get('skipped', 0)} skipped")
    print("\n".join(lines), flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["begin"]:
        begin()
        return 0
    if argv[:1] == ["report"]:
        report()
        return 0
    if argv[:1] == ["run"] and "--" in argv:
        options, command = argv[1:argv.index("--")], argv[argv.index("--") + 1:]
        last = "--last" in options
        names = [o for o in options if o != "--last"]
        if len(names) == 1 and command:
            return run(names[0], command, last)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
