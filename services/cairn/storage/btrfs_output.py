"""What btrfs-progs prints, as data: the frozen dataclasses the btrfs verbs return, and the
parsers (pure) from btrfs-progs text to them. Split from btrfs.py (argv builders and verbs), which
re-exports every public name here, so callers import `cairn.storage.btrfs` only.

Parsers go by the labels btrfs prints, never by line position (btrfs-progs 6.2 and 6.14 differ);
output that lacks what a parser needs raises CairnError naming the command.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from cairn.errors import CairnError

PROFILES = ("single", "dup", "raid0", "raid1", "raid1c3", "raid1c4", "raid10", "raid5", "raid6")


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


_SHOW_HEADER = re.compile(r"^Label:\s+(?:'(?P<label>.*)'|none)\s+uuid:\s+(?P<uuid>[0-9a-fA-F-]{36})\s*\Z")
_SHOW_TOTAL = re.compile(r"^\s*Total devices\s+(\d+)\s+FS bytes used\s+(\S+)\s*\Z")
_SHOW_DEVICE = re.compile(r"^\s*devid\s+(\d+)\s+size\s+(\S+)\s+used\s+(\S+)\s+path(.*)\Z")
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


_DEVICE_HEADER = re.compile(r"^(?P<path>\S.*), ID: (?P<devid>\d+)\s*\Z")
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


def parse_subvolume_list(text: str, readonly_text: str = "", strict: bool = True) -> list[Subvolume]:
    """`btrfs subvolume list -u -q`, read-only flags from the same list run with -r. The two runs
    are not atomic: a subvolume deleted between them is in the second only. `strict` refuses
    that (the caller runs both again); otherwise such ids are ignored."""
    command = "btrfs subvolume list"
    rows, readonly = _subvolume_rows(text, command), set(_subvolume_rows(readonly_text, command))
    if strict and readonly - set(rows):
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


