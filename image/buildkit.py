"""What the appliance build (image/build.py) and the test-guest build (image/guest/build.py) share.

The one door to external commands for both (``run``: argv lists only, never a shell; raises
``CommandFailed``), their log line, step timings, host package checks, and the machine-wide build
cache. Standard library only: the builds run with the host's /usr/bin/python3 before any
virtualenv exists.

The build cache (``shared_cache()``, /var/cache/cairn-build unless CAIRN_BUILD_CACHE says
otherwise) holds what is slow to make and the same for every clone of the repository on this
machine: the base rootfs tarball and the test guest's kernel. Each entry's name carries a hash of
its inputs, so a changed input makes a new entry (built by the ordinary `make image` / `make guest`
on the way) and an unchanged one is found by every clone. Entries are written under a temporary
name and renamed, under a lock (``cache_lock``) so two builds at once make an entry only once;
``prune`` keeps the few most recently used of a kind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

PREFIX = "build"     # the guest build sets "guest"


class CommandFailed(RuntimeError):
    def __init__(self, argv: list[str], code: int, stderr: str):
        super().__init__(f"command failed ({code}): {shlex.join(argv)}\n{stderr}")
        self.argv, self.code, self.stderr = argv, code, stderr


def log(message: str) -> None:
    print(f"[{PREFIX} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(argv: list, *, input: str | None = None, capture: bool = False, check: bool = True,
        env: dict[str, str] | None = None, clean_env: bool = False,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run argv (never through a shell); stream output unless capture; raise CommandFailed.

    env adds to the host environment, or replaces it entirely when clean_env is set."""
    argv = [str(a) for a in argv]
    log("$ " + shlex.join(argv))
    started = time.monotonic()
    if clean_env:
        environment = dict(env or {})
    else:
        environment = None if env is None else {**os.environ, **env}
    result = subprocess.run(
        argv, input=input, text=True, cwd=cwd, env=environment,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    elapsed = time.monotonic() - started
    if elapsed > 5:
        log(f"  ({elapsed:.1f} s)")
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stderr or "")
    return result


class Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str):
        log(f"== {name}")
        started = time.monotonic()
        yield
        self.steps[name] = round(time.monotonic() - started, 1)
        log(f"== {name} done in {self.steps[name]} s")


def package_version(package: str) -> str:
    result = run(["dpkg-query", "-W", "-f=${Version}", package], capture=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else "missing"


def ensure_host_packages(packages: list[str]) -> None:
    """apt-get install whatever of packages is missing; nothing (and no apt) when all are there."""
    missing = []
    for package in packages:
        status = run(["dpkg-query", "-W", "-f=${Status}", package], capture=True, check=False)
        if "ok installed" not in status.stdout:
            missing.append(package)
    if not missing:
        log("host packages present: " + " ".join(packages))
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shared_cache() -> Path:
    """The machine-wide build cache (see the module docstring)."""
    return Path(os.environ.get("CAIRN_BUILD_CACHE") or "/var/cache/cairn-build")


@contextlib.contextmanager
def cache_lock(entry: Path):
    """Hold an exclusive lock for making one cache entry (another build waits, then finds it made)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / f".{entry.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build making {entry}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def touch(entry: Path) -> None:
    """Mark a cache entry used now (prune keeps the most recently used)."""
    with contextlib.suppress(OSError):
        os.utime(entry)


def prune(directory: Path, pattern: str, keep: int) -> None:
    """Remove all but the `keep` most recently used entries matching pattern in directory (names
    starting with a dot, locks and entries being made, are never touched)."""
    entries = sorted((p for p in directory.glob(pattern) if not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[keep:]:
        log(f"cache: removing the least recently used {stale}")
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
