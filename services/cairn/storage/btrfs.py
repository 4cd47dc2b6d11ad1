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

import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cairn.errors import (Busy, CairnError, CommandFailed, CommandTimeout, NotFound,
                          PreconditionFailed, ValidationError)

PROFILES = ("single", "dup", "raid0", "raid1", "raid1c3", "raid1c4", "raid10", "raid5", "raid6")
# algorithm -> accepted levels; zstd's negative levels need Linux 6.15, newer than trixie's 6.12
COMPRESSION: dict[str, range | None] = {"zstd": range(1, 16), "zlib": range(1, 10), "lzo": None}
LABEL_MAX = 255                    # bytes: BTRFS_LABEL_SIZE less the terminating NUL

QUICK = 60.0                       # seconds: status, properties, subvolume create
SLOW = 600.0                       # mkfs and device add (whole-device TRIM), mount, umount, cancel
DEVICE_REMOVE_TIMEOUT = 86400.0    # device remove relocates every chunk before it returns
SETTLE = 10.0                      # seconds a background operation may take to show in its status


def _unparseable(command: str, problem: str, text: str = "") -> CairnError:
    return CairnError(f"cannot understand the output of `{command}`: {problem}",
                      command=command, output=text[-2000:])


# --------------------------------------------------------------------------------------------
# data types

@dataclass(frozen=True)
class DeviceUsage:
    devid: int                     # 0 is the target of a running replace
    path: str | None               # None when the device is missing
    size: int                      # bytes btrfs may use on it (0 when missing)
    allocated: int                 # bytes of chunks on it
    missing: bool


@dataclass(frozen=True)
class Usage:
    device_size: int
    allocated: int
    unallocated: int               # negative on some degraded filesystems
    used: int                      # raw bytes, every copy counted
    free_estimated: int
    data_profile: str              # with several profiles (mid-conversion): the one with most bytes
    data_size: int                 # sizes and used bytes are summed over all profiles of a type
    data_used: int
    metadata_profile: str          # mixed "Data+Metadata" chunks count as data and as metadata
    metadata_size: int
    metadata_used: int
    system_profile: str
    system_size: int
    system_used: int
    devices: tuple[DeviceUsage, ...]
    multiple_profiles: bool = False   # a chunk type has more than one profile: conversion unfinished


@dataclass(frozen=True)
class Filesystem:
    uuid: str
    label: str | None
    total_devices: int             # as the superblock says, missing devices included
    used: int                      # "FS bytes used": logical bytes, one copy
    devices: tuple[DeviceUsage, ...]
    missing_devices: bool


SCRUB_STATES = ("never", "running", "finished", "aborted", "interrupted")


@dataclass(frozen=True)
class ScrubStatus:
    state: str                     # one of SCRUB_STATES
    bytes_scrubbed: int
    bytes_total: int | None        # what btrfs expects to read, all copies; None if not printed
    corrected_errors: int
    uncorrectable_errors: int
    duration_s: float

    @property
    def percent(self) -> float | None:
        if self.state == "finished":
            return 100.0
        if self.state == "never" or not self.bytes_total:
            return None
        return min(100.0, 100.0 * self.bytes_scrubbed / self.bytes_total)


@dataclass(frozen=True)
class BalanceStatus:
    running: bool
    paused: bool
    chunks_total: int | None       # btrfs' estimate ("about N chunks")
    chunks_done: int | None
    percent_left: float | None


REPLACE_STATES = ("never", "running", "finished", "canceled", "failed", "suspended")


@dataclass(frozen=True)
class ReplaceStatus:
    state: str                     # one of REPLACE_STATES
    percent: float | None
    write_errors: int = 0
    uncorrectable_read_errors: int = 0


@dataclass(frozen=True)
class Subvolume:
    id: int
    path: str                      # relative to the filesystem's top level (subvolume id 5)
    uuid: str | None
    parent_uuid: str | None        # on a snapshot: the uuid of its source
    readonly: bool


@dataclass(frozen=True)
class Qgroup:
    qgroupid: str                  # "0/<subvolume id>" for a subvolume's own group
    referenced: int
    exclusive: int
    max_referenced: int | None     # None: no limit


@dataclass(frozen=True)
class DeviceStats:
    path: str                      # as btrfs names it; "devid:N" for a missing device
    write_io_errs: int
    read_io_errs: int
    flush_io_errs: int
    corruption_errs: int
    generation_errs: int
    devid: int | None = None

    @property
    def errors(self) -> int:
        return (self.write_io_errs + self.read_io_errs + self.flush_io_errs
                + self.corruption_errs + self.generation_errs)


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
# Text rather than --format json: btrfs-progs 6.2 aborts in pretty_size_mode() on that.
qgroup_show_argv = _at_mountpoint("btrfs", "qgroup", "show", "--raw", "-re")
subvolume_create_argv = _at_path("btrfs", "subvolume", "create")
subvolume_delete_argv = _at_path("btrfs", "subvolume", "delete")


def wipe_argv(device: str) -> list[str]:
    return ["wipefs", "-a", _path(device, "device")]


# --------------------------------------------------------------------------------------------
# parsers (pure)

_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
          "PIB": 1 << 50, "EIB": 1 << 60, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9,
          "TB": 10 ** 12, "PB": 10 ** 15, "EB": 10 ** 18}
_SIZE = re.compile(r"(-?\d+(?:\.\d+)?)\s*([KMGTPE]?i?B)?", re.IGNORECASE)


def _bytes(token: str, command: str) -> int:
    """Bytes from "1073741824", "-16384" or, where a command prints units, "1.00GiB"."""
    match = _SIZE.fullmatch(token.strip())
    unit = (match.group(2) or "").upper() if match else ""
    if not match or unit not in _UNITS:
        raise _unparseable(command, f"{token!r} is not a size")
    if unit in ("", "B") and "." not in match.group(1):
        return int(match.group(1))
    return round(float(match.group(1)) * _UNITS[unit])


def _labelled(text: str) -> dict[str, str]:
    """'Key:   value' lines as {key in lower case: value}; the first occurrence wins."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            found.setdefault(key.strip().lower(), value.strip())
    return found


def parse_mkfs_uuid(text: str) -> str | None:
    """The new filesystem's UUID from mkfs.btrfs' summary, None if it printed none."""
    match = re.search(r"^UUID:\s+([0-9a-fA-F-]{36})\s*$", text, re.MULTILINE)
    return match.group(1).lower() if match else None


_SHOW_HEADER = re.compile(r"^Label:\s+(?:'(?P<label>.*)'|none)\s+uuid:\s+(?P<uuid>[0-9a-fA-F-]{36})\s*$")
_SHOW_TOTAL = re.compile(r"^\s*Total devices\s+(\d+)\s+FS bytes used\s+(\S+)\s*$")
_SHOW_DEVICE = re.compile(r"^\s*devid\s+(\d+)\s+size\s+(\S+)\s+used\s+(\S+)\s+path(.*)$")
_MISSING_MARKS = ("***MISSING***", "MISSING", "<missing disk>")


def parse_show(text: str) -> Filesystem:
    """One filesystem from `btrfs filesystem show --raw <target>`.

    A missing device of a mounted filesystem is a row "path  MISSING"; an unmounted one with
    missing devices lists the present ones and then "*** Some devices missing"."""
    command = "btrfs filesystem show"
    headers = [m for m in map(_SHOW_HEADER.match, text.splitlines()) if m]
    if len(headers) != 1:
        raise _unparseable(command, f"expected one filesystem, found {len(headers)}", text)
    total = next((m for m in map(_SHOW_TOTAL.match, text.splitlines()) if m), None)
    if total is None:
        raise _unparseable(command, "no 'Total devices' line", text)
    devices = []
    for match in filter(None, map(_SHOW_DEVICE.match, text.splitlines())):
        path = match.group(4)
        for mark in _MISSING_MARKS:
            path = path.replace(mark, "")
        devices.append(DeviceUsage(devid=int(match.group(1)), path=path.strip() or None,
                                   size=_bytes(match.group(2), command),
                                   allocated=_bytes(match.group(3), command),
                                   missing=path != match.group(4) or not path.strip()))
    missing = ("devices missing" in text.lower() or any(d.missing for d in devices)
               or len(devices) < int(total.group(1)))
    return Filesystem(uuid=headers[0].group("uuid").lower(), label=headers[0].group("label"),
                      total_devices=int(total.group(1)), used=_bytes(total.group(2), command),
                      devices=tuple(sorted(devices, key=lambda d: d.devid)),
                      missing_devices=missing)


_DEVICE_HEADER = re.compile(r"^(?P<path>\S.*), ID: (?P<devid>\d+)\s*$")
_CHUNK_KINDS = ("data", "metadata", "system", "data+metadata")


def parse_device_usage(text: str) -> tuple[DeviceUsage, ...]:
    """Per-device size and chunk allocation from `btrfs device usage -b` (a missing device is
    named "missing" and keeps its allocations, which `filesystem show` reports as 0)."""
    command = "btrfs device usage"
    blocks: list[dict[str, Any]] = []
    for line in text.splitlines():
        header = _DEVICE_HEADER.match(line)
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if header:
            path = header.group("path").strip()
            blocks.append({"devid": int(header.group("devid")),
                           "path": None if path == "missing" else path, "allocated": 0})
        elif blocks and sep and key == "device size":
            blocks[-1]["size"] = _bytes(value, command)
        elif blocks and sep and "," in key and key.split(",")[0] in _CHUNK_KINDS:
            blocks[-1]["allocated"] += _bytes(value, command)
    for block in blocks:
        if "size" not in block:
            raise _unparseable(command, f"no 'Device size' for devid {block['devid']}", text)
    return tuple(DeviceUsage(devid=b["devid"], path=b["path"], size=b["size"],
                             allocated=b["allocated"], missing=b["path"] is None)
                 for b in sorted(blocks, key=lambda b: b["devid"]))


_CHUNK_LINE = re.compile(r"^(?P<kind>Data\+Metadata|Data|Metadata|System),(?P<profile>[\w-]+):\s*"
                         r"Size:\s*(?P<size>[^,]+),\s*Used:\s*(?P<used>\S+)")
_OVERALL = {"device size": "device_size", "device allocated": "allocated",
            "device unallocated": "unallocated", "used": "used",
            "free (estimated)": "free_estimated"}


def parse_usage(text: str, device_text: str | None = None) -> Usage:
    """`btrfs filesystem usage -b`, with per-device rows from `btrfs device usage -b` if given."""
    command = "btrfs filesystem usage"
    # The summary is the block up to the first blank line; the sections below reuse "Used".
    overall = _labelled(text.split("\n\n", 1)[0]) if "Overall:" in text else {}
    values: dict[str, Any] = {}
    for label, field in _OVERALL.items():
        if label not in overall:
            raise _unparseable(command, f"no '{label}' line in the overall section", text)
        values[field] = _bytes(overall[label].split()[0], command)
    kinds: dict[str, dict[str, list[int]]] = {"data": {}, "metadata": {}, "system": {}}
    for match in filter(None, map(_CHUNK_LINE.match, text.splitlines())):
        kind = match.group("kind").lower()
        for target in (("data", "metadata") if kind == "data+metadata" else (kind,)):
            sums = kinds[target].setdefault(match.group("profile").lower(), [0, 0])
            sums[0] += _bytes(match.group("size"), command)
            sums[1] += _bytes(match.group("used"), command)
    for kind, profiles in kinds.items():
        if not profiles:
            raise _unparseable(command, f"no {kind.capitalize()} chunk line", text)
        values[f"{kind}_profile"] = max(profiles, key=lambda p: profiles[p][0])
        values[f"{kind}_size"] = sum(size for size, _ in profiles.values())
        values[f"{kind}_used"] = sum(used for _, used in profiles.values())
    return Usage(**values, devices=parse_device_usage(device_text) if device_text else (),
                 multiple_profiles=any(len(profiles) > 1 for profiles in kinds.values()))


def _duration(value: str, command: str) -> float:
    """Seconds from "H:MM:SS" (hours may pass 24)."""
    parts = value.split(":")
    if not all(part.strip().isdigit() for part in parts):
        raise _unparseable(command, f"{value!r} is not a duration")
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return float(seconds)


def parse_scrub_status(raw_text: str, summary_text: str | None = None) -> ScrubStatus:
    """`btrfs scrub status -R` (exact counters), with `btrfs scrub status --raw` if given.

    Only the summary tells whether the kernel is scrubbing right now ("Time left:") and the total:
    for the first seconds of a scrub no record exists yet, and -R prints "no stats available",
    no Status line and zeros."""
    command = "btrfs scrub status"
    if "UUID:" not in raw_text:
        raise _unparseable(command, "no UUID line", raw_text)
    raw, summary = _labelled(raw_text), _labelled(summary_text or "")
    states = [(part.get("status") or "").split(" ")[0] for part in (raw, summary)]
    for state in filter(None, states):
        if state not in SCRUB_STATES:
            raise _unparseable(command, f"unknown status {state!r}", raw_text)
    state = "running" if "running" in states or "time left" in summary else \
        (states[0] or states[1] or "never")
    counters = {key: int(value) for key, value in raw.items() if value.isdigit()}
    if "data_bytes_scrubbed" in counters:
        scrubbed = counters["data_bytes_scrubbed"] + counters.get("tree_bytes_scrubbed", 0)
        corrected = counters.get("corrected_errors", 0)
        uncorrectable = counters.get("uncorrectable_errors", 0)
    elif summary_text is not None:       # the summary alone: counters only when non-zero
        scrubbed = _bytes(summary["bytes scrubbed"].split()[0], command) \
            if "bytes scrubbed" in summary else 0
        corrected, uncorrectable = (int(summary.get(k, "0")) for k in ("corrected", "uncorrectable"))
    else:
        raise _unparseable(command, "no data_bytes_scrubbed counter (not run with -R?)", raw_text)
    duration = raw.get("duration") or summary.get("duration")
    return ScrubStatus(state=state, bytes_scrubbed=scrubbed,
                       bytes_total=_bytes(summary["total to scrub"], command)
                       if "total to scrub" in summary else None,
                       corrected_errors=corrected, uncorrectable_errors=uncorrectable,
                       duration_s=_duration(duration, command) if duration else 0.0)


_BALANCE_STATE = re.compile(r"^Balance on '.*' is (running|paused)")
_BALANCE_PROGRESS = re.compile(r"^(\d+) out of about (\d+) chunks balanced \(\d+ considered\),"
                               r"\s*(\S+)% left")


def parse_balance_status(text: str) -> BalanceStatus:
    """`btrfs balance status`: "No balance found on ..." or a running/paused one with progress."""
    if text.startswith("No balance found"):
        return BalanceStatus(False, False, None, None, None)
    lines = text.splitlines()
    state = next(filter(None, map(_BALANCE_STATE.match, lines)), None)
    progress = next(filter(None, map(_BALANCE_PROGRESS.match, lines)), None)
    if not state or not progress:
        raise _unparseable("btrfs balance status", "neither 'No balance found' nor a balance", text)
    try:
        left: float | None = float(progress.group(3))
    except ValueError:
        left = None
    return BalanceStatus(running=state.group(1) == "running", paused=state.group(1) == "paused",
                         chunks_total=int(progress.group(2)), chunks_done=int(progress.group(1)),
                         # "nan% left" until btrfs has counted the chunks
                         percent_left=left if left is not None and math.isfinite(left) else None)


_REPLACE_ERRORS = re.compile(r"(\d+) write errs, (\d+) uncorr\. read errs")


def parse_replace_status(text: str) -> ReplaceStatus:
    """`btrfs replace status -1`. The kernel records a replace that failed as canceled; it is
    called "failed" here when it counted write or uncorrectable read errors. "suspended": the
    filesystem was unmounted mid-replace; the kernel resumes it at the next mount."""
    command = "btrfs replace status"
    line = text.strip().splitlines()[-1].strip() if text.strip() else ""
    if line.startswith("Never started"):
        return ReplaceStatus("never", None)
    errors = _REPLACE_ERRORS.search(line)
    if not errors:
        raise _unparseable(command, "no error counters", text)
    write_errors, read_errors = int(errors.group(1)), int(errors.group(2))
    running = re.match(r"^(\d+(?:\.\d+)?)% done", line)
    at = re.search(r" at (\d+(?:\.\d+)?)%", line)          # "canceled on <time> at 41.1%"
    if running:
        state, percent = "running", float(running.group(1))
    elif ", finished on " in line:
        state, percent = "finished", 100.0
    elif ", canceled on " in line or ", suspended on " in line:
        state = "suspended" if ", suspended on " in line else \
            ("failed" if write_errors or read_errors else "canceled")
        percent = float(at.group(1)) if at else None
    else:
        raise _unparseable(command, "unknown replace state", text)
    return ReplaceStatus(state, percent, write_errors, read_errors)


def _subvolume_rows(text: str, command: str) -> dict[int, dict[str, str]]:
    """"ID 257 gen 9 top level 5 parent_uuid - uuid <u> path a b" -> {257: {key: value}}."""
    rows: dict[int, dict[str, str]] = {}
    for line in filter(str.strip, text.splitlines()):
        head, sep, path = line.partition(" path ")        # the path is last and may hold spaces
        tokens = head.replace("top level", "top_level").split()
        fields = dict(zip(tokens[::2], tokens[1::2]))
        if not sep or len(tokens) % 2 or not fields.get("ID", "").isdigit():
            raise _unparseable(command, f"unexpected line {line!r}", text)
        rows[int(fields["ID"])] = {**fields, "path": path}
    return rows


def parse_subvolume_list(text: str, readonly_text: str = "") -> list[Subvolume]:
    """`btrfs subvolume list -u -q`, read-only flags from the same list run with -r."""
    command = "btrfs subvolume list"
    rows, readonly = _subvolume_rows(text, command), set(_subvolume_rows(readonly_text, command))
    if readonly - set(rows):
        raise _unparseable(command, f"read-only ids {sorted(readonly - set(rows))} not in the list",
                           readonly_text)
    return [Subvolume(id=subvolume_id, path=row["path"],
                      uuid=None if row.get("uuid", "-") == "-" else row["uuid"],
                      parent_uuid=None if row.get("parent_uuid", "-") == "-" else row["parent_uuid"],
                      readonly=subvolume_id in readonly)
            for subvolume_id, row in sorted(rows.items())]


_QGROUP_COLUMNS = {"qgroupid": "qgroupid", "referenced": "referenced", "rfer": "referenced",
                   "exclusive": "exclusive", "excl": "exclusive",
                   "max referenced": "max_referenced", "max_rfer": "max_referenced",
                   "max exclusive": "max_exclusive", "max_excl": "max_exclusive", "path": "path"}


def parse_qgroup_show(text: str) -> list[Qgroup]:
    """`btrfs qgroup show --raw -re`: a table whose columns are found by their header names."""
    command = "btrfs qgroup show"
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise _unparseable(command, "no output", text)
    columns = [_QGROUP_COLUMNS.get(h.strip().lower())
               for h in re.split(r"\s{2,}|\t+", lines[0].strip())]
    for needed in ("qgroupid", "referenced", "exclusive", "max_referenced"):
        if needed not in columns:
            raise _unparseable(command, f"no {needed} column in {lines[0]!r}", text)
    groups = []
    for line in lines[1:]:
        if set(line.strip()) <= {"-", " "}:
            continue                                       # the rule under the header
        row = dict(zip(columns, line.split(None, len(columns) - 1)))   # the path may hold spaces
        if not re.fullmatch(r"\d+/\d+", row.get("qgroupid", "")) or "max_referenced" not in row:
            raise _unparseable(command, f"unexpected row {line!r}", text)
        limit = row["max_referenced"]
        groups.append(Qgroup(qgroupid=row["qgroupid"], referenced=_bytes(row["referenced"], command),
                             exclusive=_bytes(row["exclusive"], command),
                             max_referenced=None if limit == "none" else _bytes(limit, command)))
    return groups


_STAT_FIELDS = ("write_io_errs", "read_io_errs", "flush_io_errs", "corruption_errs",
                "generation_errs")


def parse_device_stats(text: str) -> list[DeviceStats]:
    """`btrfs --format json device stats` (btrfs-progs has printed JSON for it since 5.x)."""
    try:
        return [DeviceStats(path=entry["device"], devid=int(entry["devid"]),
                            **{field: int(entry[field]) for field in _STAT_FIELDS})
                for entry in json.loads(text)["device-stats"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise _unparseable("btrfs device stats", f"unexpected JSON ({exc!r})", text) from None


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


def _run(runner, argv: list[str], timeout: float = QUICK, ok: Iterable[int] = (0,)):
    """Run argv; exit codes in `ok` return the Result, others raise Busy or CommandFailed."""
    result = runner.run(argv, timeout=timeout, check=False)
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


def subvolume_list(runner, mountpoint: str) -> list[Subvolume]:
    everything = _run(runner, subvolume_list_argv(mountpoint)).stdout
    readonly = _run(runner, subvolume_list_argv(mountpoint, readonly_only=True)).stdout
    return parse_subvolume_list(everything, readonly)


def set_readonly(runner, path: str, readonly: bool) -> None:
    _run(runner, set_readonly_argv(path, readonly))


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
