"""A fake runner that records calls and answers from a script (for code paths that would run
commands this host cannot, or should not, run)."""

from __future__ import annotations

from cairn.errors import CommandFailed
from cairn.runner import Result


class RecordingRunner:
    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, *, timeout=60.0, check=True, input=None, input_file=False, env=None, cwd=None) -> Result:
        key = tuple(argv)
        self.calls.append(key)
        code, out, err = self.answers.get(key, (0, "", ""))
        if check and code != 0:
            raise CommandFailed(list(key), code, err)
        return Result(key, code, out, err, 0.0)
