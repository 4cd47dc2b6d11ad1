"""The skip policy (tests/environment.py): a test skipped for a missing tool fails the run under CI
or `make test`, a skip for what this machine cannot do stays a skip with its reason in the summary,
and every skip in tests/ is one of the two."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

SAMPLE = '''
from environment import cannot, missing

@missing(tools={"cairn-no-such-tool": "Debian package cairn-nothing"})
def test_needs_a_tool_that_is_not_here():
    pass

@missing(tools={"sh": "Debian package dash"})
def test_needs_a_tool_that_is_here():
    pass

@cannot(True, "fly (no wings in this kernel)")
def test_needs_what_this_machine_cannot_do():
    pass
'''


def run_sample(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "CAIRN_STRICT_SKIPS", "CAIRN_PYTEST_TIMES")}
    environment.update(env, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "environment", "-p", "no:cacheprovider",
                           "-q", "-ra", "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=120)


def test_under_ci_a_missing_tool_fails_the_run_naming_it(tmp_path):
    result = run_sample(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 skipped, 1 error" in result.stdout
    assert "missing: cairn-no-such-tool (Debian package cairn-nothing)" in result.stdout
    assert "FAILED (1 tests), missing: cairn-no-such-tool" in result.stdout
    assert "skipped (1 tests), this machine cannot: fly (no wings in this kernel)" in result.stdout


def test_make_test_is_strict_too(tmp_path):
    result = run_sample(tmp_path, CAIRN_STRICT_SKIPS="1")
    assert (result.returncode, "1 passed, 1 skipped, 1 error" in result.stdout) == (1, True), result.stdout


def test_run_by_hand_a_missing_tool_is_a_skip_that_says_what_to_install(tmp_path):
    result = run_sample(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped" in result.stdout
    assert "missing: cairn-no-such-tool (Debian package cairn-nothing)" in result.stdout


def skip_calls(path: Path) -> list[str]:
    """Lines of path that skip without going through environment.missing / cannot."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("skip", "skipif", "importorskip"):
            found.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    return found


def test_every_skip_in_the_suite_goes_through_the_policy():
    sources = [p for p in TESTS.rglob("*.py") if p.name != "environment.py" and "fixtures" not in p.parts]
    assert len(sources) > 50
    assert [line for path in sorted(sources) for line in skip_calls(path)] == []
