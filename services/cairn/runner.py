"""The one door to external commands. Nothing else in Cairn imports subprocess.

Argument lists only (never a shell), a timeout on every call, and the outcome captured as data:
exit code, stdout, stderr and duration. `run(..., check=True)` raises CommandFailed on a non-zero
exit; callers that decode exit codes themselves (smartctl's health bits) pass check=False.
Secrets go on stdin (`input`), never in argv (any process can read another's command line in
/proc); `input_file=True` gives the input as an in-memory file rather than a pipe, for a tool that
opens /dev/stdin more than once (pdbedit's smbpasswd import reads its file twice).
Long-running daemons (etcd, gunicorn under the dev stack) are started with `spawn`.

A Runner is passed to the code that needs it, so tests can hand in a fake that records calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from cairn.errors import CommandFailed, CommandTimeout

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("argv must be a non-empty list of strings, never a shell string")
    items = [os.fspath(a) for a in argv]
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"argv items must be strings, got {type(item).__name__}")
    return items


def _memory_file(text: str) -> int:
    """A file descriptor of an anonymous in-memory file holding `text`, at offset 0 (never on disk)."""
    fd = os.memfd_create("cairn-input", os.MFD_CLOEXEC)
    try:
        view = memoryview(text.encode())
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Runner:
    """Runs commands for real."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        input: str | None = None,
        input_file: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> Result:
        items = _check_argv(argv)
        started = time.monotonic()
        memfd = _memory_file(input) if input is not None and input_file else None
        # Only one of stdin and input is passed: gevent's subprocess.run (cairn-web's workers) refuses
        # both, even with stdin=None.
        feed = {"stdin": memfd} if memfd is not None else \
            {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        try:
            proc = subprocess.run(
                items,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=None if env is None else {**os.environ, **env},
                cwd=cwd,
                **feed,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise CommandTimeout(items, timeout, stderr) from None
        except FileNotFoundError:
            raise CommandFailed(items, 127, f"{items[0]}: command not found") from None
        finally:
            if memfd is not None:
                os.close(memfd)
        result = Result(tuple(items), proc.returncode, proc.stdout, proc.stderr,
                        time.monotonic() - started)
        if check and proc.returncode != 0:
            raise CommandFailed(items, proc.returncode, proc.stderr)
        return result

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: str | Path,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> "Daemon":
        """Start a long-running process with stdout and stderr appended to log_path."""
        items = _check_argv(argv)
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen(
                items, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=None if env is None else {**os.environ, **env}, cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise CommandFailed(items, 127, f"{items[0]}: command not found") from None
        finally:
            log.close()
        return Daemon(proc, items, Path(log_path))


class Daemon:
    """A process started by Runner.spawn: in its own session, so stop() reaches its children."""

    def __init__(self, proc: "subprocess.Popen[bytes]", argv: list[str], log_path: Path) -> None:
        self._proc = proc
        self.argv = argv
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def returncode(self) -> int | None:
        return self._proc.poll()

    def signal(self, signum: int) -> None:
        if self.alive():
            os.killpg(self._proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the process group, then SIGKILL after `timeout`. Returns the exit code."""
        if self.alive():
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                return self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
        return self._proc.wait()

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, not a shutdown."""
        if self.alive():
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc.wait()

    def wait(self, timeout: float | None = None) -> int:
        return self._proc.wait(timeout)
