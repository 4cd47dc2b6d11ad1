"""btrfs pools: argument lists, running them through the one runner, and parsing what comes back.

Three rooms, as for every wrapped tool:

    *_argv(...)    pure: validated argument lists (ValidationError, all fields at once), no shell
    parse_*(text)  pure: btrfs-progs text (or JSON) -> frozen dataclasses
    verbs          mkfs, mount, show, usage, scrub_start, ...: runner first, one job each

Invariants
- Sizes come from byte output (`-b`, `--raw`), so nothing is rounded; `_bytes` still reads
  "1.00GiB" should a command print units.
- Parsers go by the labels btrfs prints ("Device size:", "Status:", "devid N size ..."), never by
  line position: btrfs-progs 6.2 (bookworm) and 6.14 (trixie) add, drop and reorder lines. Output
  that lacks what a parser needs raises CairnError naming the command, never ValueError/KeyError.
- Exit codes are decoded on purpose: `balance status` exits 1 while a balance runs or is paused;
  `scrub|balance|replace cancel` exit 2 when nothing runs (those verbs then return False);
  "another exclusive operation" / "already running" refusals raise Busy; any other failure raises
  CommandFailed with argv, exit code and stderr.
- Mount points and paths must be absolute: `balance start --bg` daemonizes, changes directory to /
  and then silently balances nothing if it was handed a relative path (btrfs-progs 6.2).
- Scrub, balance and replace run in the background (`--bg`, no `-B`). btrfs forks the work off and
  exits before the kernel has begun it, so a status read at once still shows nothing (or the last
  replace, "finished"); the *_start verbs therefore poll the status until it shows the new
  operation, for at most `settle` seconds (a tiny balance can end unseen). Callers then poll the
  *_status verbs. This module keeps no state: the kernel (and btrfs-progs'
  /var/lib/btrfs/scrub.status.<fsid>) is the only writer of progress.
- Profiles are btrfs' lower-case names (PROFILES); parsers lower-case what btrfs prints.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from cairn.errors import (Busy, CairnError, CommandFailed, CommandTimeout, NotFound,
                          PreconditionFailed, ValidationError)
from cairn.storage.btrfs_output import (  # re-exported: callers import btrfs only
    BalanceStatus, DeviceStats, DeviceUsage, Filesystem, PROFILES, Qgroup, REPLACE_STATES, ReplaceStatus,
    SCRUB_STATES, ScrubStatus, Subvolume, Usage, _labelled, _unparseable, parse_balance_status,
    parse_device_stats, parse_device_usage, parse_mkfs_uuid, parse_qgroup_show, parse_replace_status,
    parse_scrub_status, parse_show, parse_subvolume_list, parse_usage)

__all__ = [
    "BalanceStatus", "COMPRESSION", "DEVICE_REMOVE_TIMEOUT", "DeviceStats", "DeviceUsage", "Filesystem",
    "LABEL_MAX", "PROFILES", "QUICK", "Qgroup", "REPLACE_STATES", "ReplaceStatus", "SCRUB_STATES",
    "SETTLE", "SLOW", "ScrubStatus", "Subvolume", "Usage", "balance_cancel", "balance_start",
    "balance_start_argv", "balance_status", "device_add", "device_add_argv", "device_remove",
    "device_remove_argv", "device_stats", "filesystem_sync", "filesystem_sync_argv", "mkfs", "mkfs_argv", "mount", "mount_argv",
    "parse_balance_status", "parse_device_stats", "parse_device_usage", "parse_mkfs_uuid",
    "parse_qgroup_show", "parse_replace_status", "parse_scrub_status", "parse_show",
    "parse_subvolume_list", "parse_usage", "qgroup_limit", "qgroup_limit_argv", "qgroup_show",
    "quota_enable", "replace_cancel", "replace_start", "replace_start_argv", "replace_status",
    "scrub_cancel", "scrub_start", "scrub_status", "set_readonly", "set_readonly_argv", "show",
    "show_argv", "snapshot", "snapshot_argv", "subvolume_create", "subvolume_delete", "subvolume_list",
    "subvolume_list_argv", "umount", "usage", "wipe", "wipe_argv",
]

# algorithm -> accepted levels; zstd's negative levels need Linux 6.15, newer than trixie's 6.12
COMPRESSION: dict[str, range | None] = {"zstd": range(1, 16), "zlib": range(1, 10), "lzo": None}
LABEL_MAX = 255                    # bytes: BTRFS_LABEL_SIZE less the terminating NUL

QUICK = 60.0                       # seconds: status, properties, subvolume create
SLOW = 600.0                       # mkfs and device add (whole-device TRIM), mount, umount, cancel
DEVICE_REMOVE_TIMEOUT = 86400.0    # device remove relocates every chunk before it returns
SETTLE = 10.0                      # seconds a background operation may take to show in its status


# --------------------------------------------------------------------------------------------
# argument lists (pure)

def _check(problems: dict[str, str]) -> None:
    if problems:
        raise ValidationError(problems)


def _absolute(problems: dict[str, str], field: str, path: Any) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        problems[field] = "must be an absolute path"


def _profile(problems: dict[str, str], field: str, profile: Any) -> None:
    if profile is not None and profile not in PROFILES:
        problems[field] = "must be one of " + ", ".join(PROFILES)


def _path(path: Any, field: str = "mountpoint") -> str:
    problems: dict[str, str] = {}
    _absolute(problems, field, path)
    _check(problems)
    return path


def _device_ref(problems: dict[str, str], field: str, value: Any) -> str:
    """A devid (int), "missing", or an absolute device path, the ways btrfs names a device."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        problems[field] = "must be a devid, a device path or 'missing'"
    elif isinstance(value, int):
        if value < 1:
            problems[field] = "a devid is a positive number"
    elif value != "missing":
        _absolute(problems, field, value)
    return str(value)


def mkfs_argv(devices: list[str], data_profile: str, metadata_profile: str, label: str,
              force: bool = False) -> list[str]:
    problems: dict[str, str] = {}
    if not devices:
        problems["devices"] = "at least one device is needed"
    elif len(set(devices)) != len(devices):
        problems["devices"] = "a device is listed twice"
    for index, device in enumerate(devices):
        _absolute(problems, f"devices.{index}", device)
    for field, profile in (("data_profile", data_profile), ("metadata_profile", metadata_profile)):
        _profile(problems, field, profile if profile is not None else "")
    if not isinstance(label, str) or not label or len(label.encode()) > LABEL_MAX \
            or any(c in label for c in "\n\0"):
        problems["label"] = f"must be 1 to {LABEL_MAX} bytes on one line"
    _check(problems)
    return (["mkfs.btrfs", "-d", data_profile, "-m", metadata_profile, "-L", label]
            + (["-f"] if force else []) + list(devices))


def _compression_ok(compression: Any) -> bool:
    if not isinstance(compression, str):
        return False
    algorithm, _, level = compression.partition(":")
    if algorithm not in COMPRESSION:
        return False
    levels = COMPRESSION[algorithm]
    return not level or (levels is not None and re.fullmatch(r"\d+", level) is not None
                         and int(level) in levels)


def mount_argv(device: str, mountpoint: str, compression: str | None = None,
               degraded: bool = False) -> list[str]:
    problems: dict[str, str] = {}
    _absolute(problems, "device", device)
    _absolute(problems, "mountpoint", mountpoint)
    if compression is not None and not _compression_ok(compression):
        problems["compression"] = "must be zstd, zstd:<1..15>, zlib, zlib:<1..9> or lzo"
    _check(problems)
    options = ([f"compress={compression}"] if compression else []) + (["degraded"] if degraded else [])
    return (["mount", "-t", "btrfs"] + (["-o", ",".join(options)] if options else [])
            + [device, mountpoint])


def show_argv(target: str) -> list[str]:
    """target: a mount point, a device, a filesystem UUID or a label."""
    if not isinstance(target, str) or not target.strip() or target.startswith("-"):
        raise ValidationError({"target": "must be a mount point, device, UUID or label"})
    return ["btrfs", "filesystem", "show", "--raw", target]


def device_add_argv(mountpoint: str, device: str, force: bool = False) -> list[str]:
    _path(device, "device")
    return ["btrfs", "device", "add"] + (["-f"] if force else []) + [device, _path(mountpoint)]


def device_remove_argv(mountpoint: str, device_or_devid: int | str) -> list[str]:
    problems: dict[str, str] = {}
    _absolute(problems, "mountpoint", mountpoint)
    ref = _device_ref(problems, "device_or_devid", device_or_devid)
    _check(problems)
    return ["btrfs", "device", "remove", ref, mountpoint]


def replace_start_argv(mountpoint: str, source: int | str, target: str,
                       force: bool = False) -> list[str]:
    problems: dict[str, str] = {}
    _absolute(problems, "mountpoint", mountpoint)
    ref = _device_ref(problems, "source", source)
    if source == "missing":
        problems["source"] = "name a missing device by its devid"
    _absolute(problems, "target", target)
    _check(problems)
    return ["btrfs", "replace", "start"] + (["-f"] if force else []) + [ref, target, mountpoint]


def balance_start_argv(mountpoint: str, data_profile: str | None = None,
                       metadata_profile: str | None = None, force: bool = False) -> list[str]:
    """No profile: a full balance. A profile: convert, skipping chunks already converted (`soft`),
    so a cancelled or interrupted conversion resumes instead of starting over. Converting metadata
    converts system chunks too (btrfs does so when -s is not given). `force` is needed to lower
    metadata redundancy, e.g. raid1 -> single."""
    problems: dict[str, str] = {}
    _absolute(problems, "mountpoint", mountpoint)
    _profile(problems, "data_profile", data_profile)
    _profile(problems, "metadata_profile", metadata_profile)
    _check(problems)
    if data_profile is None and metadata_profile is None:
        return ["btrfs", "balance", "start", "--bg", "--full-balance", mountpoint]
    return (["btrfs", "balance", "start", "--bg"] + (["-f"] if force else [])
            + ([f"-dconvert={data_profile},soft"] if data_profile else [])
            + ([f"-mconvert={metadata_profile},soft"] if metadata_profile else []) + [mountpoint])


def snapshot_argv(source: str, dest: str, readonly: bool = True) -> list[str]:
    problems: dict[str, str] = {}
    _absolute(problems, "source", source)
    _absolute(problems, "dest", dest)
    _check(problems)
    return ["btrfs", "subvolume", "snapshot"] + (["-r"] if readonly else []) + [source, dest]


def subvolume_list_argv(mountpoint: str, readonly_only: bool = False) -> list[str]:
    """Every subvolume of the filesystem with uuid (-u) and parent uuid (-q); -r: read-only ones."""
    return (["btrfs", "subvolume", "list", "-u", "-q"] + (["-r"] if readonly_only else [])
            + [_path(mountpoint)])


def set_readonly_argv(path: str, readonly: bool) -> list[str]:
    return ["btrfs", "property", "set", "-ts", _path(path, "path"), "ro", str(bool(readonly)).lower()]


def qgroup_limit_argv(path: str, limit_bytes: int | None) -> list[str]:
    """Limit the referenced bytes of the subvolume at path (its 0/<id> group); None lifts it."""
    problems: dict[str, str] = {}
    _absolute(problems, "path", path)
    if limit_bytes is not None and (isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int)
                                    or limit_bytes < 1):
        problems["limit_bytes"] = "must be a positive number of bytes, or None for no limit"
    _check(problems)
    return ["btrfs", "qgroup", "limit", "none" if limit_bytes is None else str(limit_bytes), path]


def _at_mountpoint(*words: str):
    """The argv builder of a command whose only argument is the mount point."""
    def argv(mountpoint: str) -> list[str]:
        return [*words, _path(mountpoint)]
    return argv


def _at_path(*words: str):
    def argv(path: str) -> list[str]:
        return [*words, _path(path, "path")]
    return argv


umount_argv = _at_mountpoint("umount")
usage_argv = _at_mountpoint("btrfs", "filesystem", "usage", "-b")
device_usage_argv = _at_mountpoint("btrfs", "device", "usage", "-b")
device_stats_argv = _at_mountpoint("btrfs", "--format", "json", "device", "stats")
replace_status_argv = _at_mountpoint("btrfs", "replace", "status", "-1")
replace_cancel_argv = _at_mountpoint("btrfs", "replace", "cancel")
scrub_start_argv = _at_mountpoint("btrfs", "scrub", "start")
# Exact counters; whether a scrub runs right now, and the total, come from the summary.
scrub_status_argv = _at_mountpoint("btrfs", "scrub", "status", "-R")
scrub_summary_argv = _at_mountpoint("btrfs", "scrub", "status", "--raw")
scrub_cancel_argv = _at_mountpoint("btrfs", "scrub", "cancel")
balance_status_argv = _at_mountpoint("btrfs", "balance", "status")
balance_cancel_argv = _at_mountpoint("btrfs", "balance", "cancel")
quota_enable_argv = _at_mountpoint("btrfs", "quota", "enable")
filesystem_sync_argv = _at_mountpoint("btrfs", "filesystem", "sync")
# Text rather than --format json: btrfs-progs 6.2 aborts in pretty_size_mode() on that.
qgroup_show_argv = _at_mountpoint("btrfs", "qgroup", "show", "--raw", "-re")
subvolume_create_argv = _at_path("btrfs", "subvolume", "create")
subvolume_delete_argv = _at_path("btrfs", "subvolume", "delete")


def wipe_argv(device: str) -> list[str]:
    return ["wipefs", "-a", _path(device, "device")]


# --------------------------------------------------------------------------------------------
# verbs (through the runner)

_BUSY = ("another exclusive operation", "already running", "already started")


def _failure(argv: list[str], returncode: int, stderr: str) -> CairnError:
    if any(marker in stderr.lower() for marker in _BUSY):
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("ERROR")), lines[0])
        return Busy(f"{' '.join(argv[:3])} refused: {reason}", argv=list(argv),
                    returncode=returncode, stderr=stderr[-2000:])
    return CommandFailed(list(argv), returncode, stderr)


# `btrfs scrub status` (and start) lock the scrub's status file, which the running scrub rewrites
# as it goes: a read that lands on a rewrite fails with EAGAIN ("failed to open status file:
# Resource temporarily unavailable"). That is a moment's contention, not a failure: read again.
STATUS_FILE_BUSY = "Resource temporarily unavailable"
STATUS_FILE_TRIES = 20
STATUS_FILE_PAUSE = 0.05


def _run(runner, argv: list[str], timeout: float = QUICK, ok: Iterable[int] = (0,)):
    """Run argv; exit codes in `ok` return the Result, others raise Busy or CommandFailed."""
    for attempt in range(STATUS_FILE_TRIES):
        result = runner.run(argv, timeout=timeout, check=False)
        busy = "status file" in (result.stderr or "") and STATUS_FILE_BUSY in (result.stderr or "")
        if not busy or attempt == STATUS_FILE_TRIES - 1:
            break
        time.sleep(STATUS_FILE_PAUSE)
    if result.returncode not in ok:
        raise _failure(argv, result.returncode, result.stderr or "")
    return result


def _run_leaving_child(runner, argv: list[str], timeout: float = QUICK) -> None:
    """Run a command that leaves a child running with its stdout and stderr (`btrfs scrub start`
    forks without detaching): with captured pipes, run() would last as long as the child. It is
    spawned instead, output to a scratch file, and only the command itself is waited for.
    A runner without spawn (a recording fake) gets run()."""
    if not hasattr(runner, "spawn"):
        _run(runner, argv, timeout)
        return
    with tempfile.TemporaryDirectory(prefix="cairn-btrfs-") as scratch:
        output = Path(scratch) / "output"
        command = runner.spawn(argv, log_path=output)
        deadline = time.monotonic() + timeout
        while command.returncode() is None:
            if time.monotonic() > deadline:
                command.kill()
                raise CommandTimeout(argv, timeout, output.read_text(errors="replace"))
            time.sleep(0.02)
        if command.returncode() != 0:
            raise _failure(argv, command.returncode(), output.read_text(errors="replace"))


def mkfs(runner, devices: list[str], data_profile: str, metadata_profile: str, label: str,
         force: bool = False) -> str:
    """Make a filesystem and return its UUID. Without force, mkfs refuses a device that holds one."""
    result = _run(runner, mkfs_argv(devices, data_profile, metadata_profile, label, force), SLOW)
    return parse_mkfs_uuid(result.stdout) or show(runner, devices[0]).uuid


def mount(runner, device: str, mountpoint: str, compression: str | None = None,
          degraded: bool = False) -> None:
    _run(runner, mount_argv(device, mountpoint, compression, degraded), SLOW)


def umount(runner, mountpoint: str) -> None:
    _run(runner, umount_argv(mountpoint), SLOW)


def show(runner, target: str) -> Filesystem:
    """The filesystem mounted at target, on that device, or with that UUID or label; NotFound if
    none. btrfs-progs 6.2 answers a device holding no filesystem (a detached loop device) with
    some other filesystem, so a /dev target must be among the devices listed."""
    argv = show_argv(target)
    result = _run(runner, argv, ok=(0, 1))
    nothing = ("not a valid btrfs filesystem", "no btrfs on")    # for a path; for a device
    if result.returncode == 1 and not any(text in result.stderr for text in nothing):
        raise CommandFailed(argv, result.returncode, result.stderr)
    if result.returncode == 1 or not result.stdout.strip():
        raise NotFound(f"no btrfs filesystem at {target}")
    filesystem = parse_show(result.stdout)
    if target.startswith("/dev/"):
        listed = {d.path for d in filesystem.devices if d.path}
        if not {target, os.path.realpath(target)} & (listed | {os.path.realpath(p) for p in listed}):
            raise NotFound(f"no btrfs filesystem on {target}")
    return filesystem


def usage(runner, mountpoint: str) -> Usage:
    text = _run(runner, usage_argv(mountpoint)).stdout
    return parse_usage(text, _run(runner, device_usage_argv(mountpoint)).stdout)


def device_add(runner, mountpoint: str, device: str, force: bool = False) -> None:
    _run(runner, device_add_argv(mountpoint, device, force), SLOW)


def device_remove(runner, mountpoint: str, device_or_devid: int | str,
                  timeout: float = DEVICE_REMOVE_TIMEOUT) -> None:
    """Returns once every chunk has moved off the device: btrfs has no background mode for it."""
    _run(runner, device_remove_argv(mountpoint, device_or_devid), timeout)


def device_stats(runner, mountpoint: str) -> list[DeviceStats]:
    return parse_device_stats(_run(runner, device_stats_argv(mountpoint)).stdout)


def _until_started(runner, status_argv: list[str], started, settle: float) -> None:
    """Poll a status command until started(text) holds, for at most settle seconds. btrfs never
    prints an empty status, so empty output (a fake runner's default) ends the wait too."""
    deadline = time.monotonic() + settle
    while True:
        text = _run(runner, status_argv, ok=(0, 1)).stdout
        if not text.strip() or started(text) or time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def replace_start(runner, mountpoint: str, source: int | str, target: str,
                  force: bool = False, settle: float = SETTLE) -> None:
    """Start replacing source (devid or path) by target; returns once the kernel shows it."""
    status_argv = replace_status_argv(mountpoint)
    argv = replace_start_argv(mountpoint, source, target, force)
    before = _run(runner, status_argv).stdout
    _run(runner, argv, SLOW)
    _until_started(runner, status_argv, lambda text: text != before, settle)


def replace_status(runner, mountpoint: str) -> ReplaceStatus:
    return parse_replace_status(_run(runner, replace_status_argv(mountpoint)).stdout)


def replace_cancel(runner, mountpoint: str) -> bool:
    """True if a replace was cancelled, False if none was running (exit code 2)."""
    return _run(runner, replace_cancel_argv(mountpoint), SLOW, ok=(0, 2)).returncode == 0


def scrub_start(runner, mountpoint: str, settle: float = SETTLE) -> None:
    """Start a scrub; returns once the kernel shows it (running, or already with a new record).
    Busy if one runs."""
    summary_argv = scrub_summary_argv(mountpoint)
    argv = scrub_start_argv(mountpoint)
    before = _labelled(_run(runner, summary_argv).stdout)
    if "time left" in before:
        raise Busy(f"a scrub is already running on {mountpoint}")
    _run_leaving_child(runner, argv)
    _until_started(runner, summary_argv, lambda text: "time left" in _labelled(text)
                   or _labelled(text).get("scrub started") != before.get("scrub started"), settle)


def scrub_status(runner, mountpoint: str) -> ScrubStatus:
    raw = _run(runner, scrub_status_argv(mountpoint)).stdout
    return parse_scrub_status(raw, _run(runner, scrub_summary_argv(mountpoint)).stdout)


def scrub_cancel(runner, mountpoint: str) -> bool:
    """True if a scrub was cancelled, False if none was running (exit code 2)."""
    return _run(runner, scrub_cancel_argv(mountpoint), SLOW, ok=(0, 2)).returncode == 0


def balance_start(runner, mountpoint: str, data_profile: str | None = None,
                  metadata_profile: str | None = None, force: bool = False,
                  settle: float = SETTLE) -> None:
    """Start a balance; returns once the kernel shows it, or after settle seconds if it ended
    before it could be seen (nothing records a finished balance)."""
    _run(runner, balance_start_argv(mountpoint, data_profile, metadata_profile, force))
    _until_started(runner, balance_status_argv(mountpoint), lambda text: not text.startswith(
        "No balance found"), settle)


def balance_status(runner, mountpoint: str) -> BalanceStatus:
    """Exit code 0: no balance; 1: one is running or paused; anything else is a failure."""
    result = _run(runner, balance_status_argv(mountpoint), ok=(0, 1))
    status = parse_balance_status(result.stdout)
    if (result.returncode == 1) != (status.running or status.paused):
        raise _unparseable("btrfs balance status",
                           f"exit code {result.returncode} contradicts the text", result.stdout)
    return status


def balance_cancel(runner, mountpoint: str) -> bool:
    """True if a balance was cancelled (after the chunk in flight), False if none was running."""
    return _run(runner, balance_cancel_argv(mountpoint), SLOW, ok=(0, 2)).returncode == 0


def subvolume_create(runner, path: str) -> None:
    _run(runner, subvolume_create_argv(path))


def subvolume_delete(runner, path: str) -> None:
    """Unlinks at once; btrfs-cleaner frees the space later."""
    _run(runner, subvolume_delete_argv(path), SLOW)


def snapshot(runner, source: str, dest: str, readonly: bool = True) -> None:
    _run(runner, snapshot_argv(source, dest, readonly), SLOW)


def subvolume_list(runner, mountpoint: str, attempts: int = 3) -> list[Subvolume]:
    """Every subvolume with its read-only flag. The flags come from a second run (-r): when a
    snapshot was deleted between the two (its id only in the second), both run again; after
    `attempts` such tries, ids missing from the full list are ignored."""
    for attempt in range(attempts):
        everything = _run(runner, subvolume_list_argv(mountpoint)).stdout
        readonly = _run(runner, subvolume_list_argv(mountpoint, readonly_only=True)).stdout
        try:
            return parse_subvolume_list(everything, readonly, strict=attempt < attempts - 1)
        except CairnError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def set_readonly(runner, path: str, readonly: bool) -> None:
    _run(runner, set_readonly_argv(path, readonly))


def filesystem_sync(runner, mountpoint: str) -> None:
    """Commit the running transaction: quota group figures are only updated at a commit."""
    _run(runner, filesystem_sync_argv(mountpoint), SLOW)


def quota_enable(runner, mountpoint: str) -> None:
    """Turn on quota groups; btrfs accounts existing data by a rescan in the background."""
    _run(runner, quota_enable_argv(mountpoint), SLOW)


def qgroup_limit(runner, path: str, limit_bytes: int | None) -> None:
    _run(runner, qgroup_limit_argv(path, limit_bytes))


def qgroup_show(runner, mountpoint: str) -> list[Qgroup]:
    """PreconditionFailed when quotas are off (btrfs exits 1 saying so)."""
    argv = qgroup_show_argv(mountpoint)
    result = _run(runner, argv, ok=(0, 1))
    if result.returncode == 1:
        if "quotas not enabled" in result.stderr:
            raise PreconditionFailed(f"quotas are not enabled on {mountpoint}")
        raise CommandFailed(argv, result.returncode, result.stderr)
    return parse_qgroup_show(result.stdout)


def wipe(runner, device: str) -> None:
    """Erase every filesystem signature on device (destroying a pool)."""
    _run(runner, wipe_argv(device))
