"""md RAID with mdadm: argv builders (pure), the parser for `mdadm --detail` (pure,
tested on output captured in the appliance); the effects live in arrays.py.

Arrays are named: /dev/md/<name> (mdadm --name; metadata 1.2). Cairn's arrays are listed in
/etc/mdadm/mdadm.conf (generated from the store, written atomically only when changed) so they
assemble with the same names after a reboot.

Growing an array adds the disk as an *active* member (`--add` then `--grow --raid-devices=N+1`),
never as a spare — adding only a spare is the OpenMediaVault trap where the user thinks the array
grew and it did not.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from cairn.errors import CommandFailed

LEVELS = {"raid0": 2, "raid1": 2, "raid5": 3, "raid6": 4, "raid10": 4}      # fewest disks each
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MDADM_CONF = "/etc/mdadm/mdadm.conf"


def device(name: str) -> str:
    return f"/dev/md/{name}"


def _dev(array: str) -> str:
    """Builders take the array's device path, or its name (→ /dev/md/<name>)."""
    return array if array.startswith("/") else device(array)


# --- argv builders (pure) --------------------------------------------------------------------
def create_argv(name: str, level: str, members: list[str]) -> list[str]:
    if level not in LEVELS:
        raise ValueError(f"RAID level must be one of {', '.join(LEVELS)}")
    return ["mdadm", "--create", device(name), "--run", "--metadata=1.2", f"--name={name}",
            f"--level={level.removeprefix('raid')}", f"--raid-devices={len(members)}", *members]


def detail_argv(name: str) -> list[str]:
    return ["mdadm", "--detail", _dev(name)]


def fail_argv(name: str, member: str) -> list[str]:
    return ["mdadm", _dev(name), "--fail", member]


def remove_argv(name: str, member: str) -> list[str]:
    return ["mdadm", _dev(name), "--remove", member]


def add_argv(name: str, member: str) -> list[str]:
    return ["mdadm", _dev(name), "--add", member]


def replace_argv(name: str, old: str, new: str) -> list[str]:
    return ["mdadm", _dev(name), "--replace", old, "--with", new]


def grow_argv(name: str, raid_devices: int) -> list[str]:
    return ["mdadm", "--grow", _dev(name), f"--raid-devices={raid_devices}"]


def stop_argv(name: str) -> list[str]:
    return ["mdadm", "--stop", _dev(name)]


def zero_argv(member: str) -> list[str]:
    return ["mdadm", "--zero-superblock", member]


def assemble_scan_argv() -> list[str]:
    return ["mdadm", "--assemble", "--scan"]


# --- parsed data -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    path: str | None                # None for a removed slot
    role: int | None                # RaidDevice number; None for spares/faulty outside the array
    state: str                      # e.g. "active sync", "spare rebuilding", "faulty", "removed"

    @property
    def active(self) -> bool:
        return "active" in self.state and "faulty" not in self.state

    @property
    def faulty(self) -> bool:
        return "faulty" in self.state


@dataclass(frozen=True)
class ArrayDetail:
    device: str
    level: str                      # raid1, raid5, ...
    raid_devices: int
    total_devices: int
    state: str                      # "clean", "clean, degraded, recovering", "active, resyncing", ...
    active_devices: int
    working_devices: int
    failed_devices: int
    spare_devices: int
    uuid: str | None
    name: str | None                # the name part of "host:name"
    size: int | None                # array size in bytes
    sync_action: str | None         # resync, recovery, reshape, check, or None when idle
    sync_percent: float | None
    members: tuple[Member, ...] = field(default_factory=tuple)

    @property
    def degraded(self) -> bool:
        return "degraded" in self.state or self.active_devices < self.raid_devices

    @property
    def health(self) -> str:
        if "FAILED" in self.state.upper() and "degraded" not in self.state:
            return "failed"
        if self.level == "raid0" and self.failed_devices:
            return "failed"
        if self.sync_action in ("recovery", "resync", "reshape"):
            return {"recovery": "rebuilding", "resync": "resyncing", "reshape": "reshaping"}[self.sync_action]
        if self.degraded:
            return "degraded"
        return "clean"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["degraded"] = self.degraded
        data["health"] = self.health
        return data


_SIZE = re.compile(r"^(\d+)")
_STATUS = re.compile(r"^(Rebuild|Resync|Reshape|Check|Recovery) Status\s*:\s*([\d.]+)%", re.IGNORECASE)
_ROW = re.compile(r"^\s*(\d+|-)\s+(\d+|-)\s+(\d+|-)\s+(\d+|-)\s+(.*?)\s*(/dev/\S+)?\s*\Z")


def parse_detail(text: str) -> ArrayDetail:
    """`mdadm --detail /dev/md/<name>` → ArrayDetail (key : value lines, then the device table)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().endswith(":"):
        raise CommandFailed(["mdadm", "--detail"], 0, f"unexpected output: {text[:200]!r}")
    values: dict[str, str] = {}
    sync_action, sync_percent = None, None
    members: list[Member] = []
    in_table = False
    for line in lines[1:]:
        if re.match(r"^\s*Number\s+Major\s+Minor\s+RaidDevice", line):
            in_table = True
            continue
        if in_table:
            row = _ROW.match(line)
            if row and line.strip():
                role = int(row.group(4)) if row.group(4).isdigit() else None
                state = row.group(5).strip()
                members.append(Member(row.group(6), role, state))
            continue
        status = _STATUS.match(line.strip())
        if status:
            sync_action = {"rebuild": "recovery"}.get(status.group(1).lower(), status.group(1).lower())
            sync_percent = float(status.group(2))
            continue
        key, sep, value = line.partition(" : ")
        if sep:
            values[key.strip()] = value.strip()

    def number(key: str) -> int:
        match = _SIZE.match(values.get(key, "0"))
        return int(match.group(1)) if match else 0

    name = values.get("Name", "").split()[0] if values.get("Name") else None
    if name and ":" in name:
        name = name.split(":", 1)[1]
    size_kib = _SIZE.match(values.get("Array Size", ""))
    state = values.get("State", "unknown")
    if sync_action is None:
        for word in ("recovering", "resyncing", "reshaping", "checking"):
            if word in state:
                sync_action = {"recovering": "recovery", "resyncing": "resync", "reshaping": "reshape",
                               "checking": "check"}[word]
    return ArrayDetail(
        device=lines[0].strip().rstrip(":"), level=values.get("Raid Level", "unknown"),
        raid_devices=number("Raid Devices"), total_devices=number("Total Devices"), state=state,
        active_devices=number("Active Devices"), working_devices=number("Working Devices"),
        failed_devices=number("Failed Devices"), spare_devices=number("Spare Devices"),
        uuid=values.get("UUID"), name=name, size=int(size_kib.group(1)) * 1024 if size_kib else None,
        sync_action=sync_action, sync_percent=sync_percent, members=tuple(members))


def mdadm_conf(arrays: list[tuple[str, str]]) -> str:
    """/etc/mdadm/mdadm.conf for Cairn's arrays: (name, uuid) pairs, sorted (pure)."""
    lines = ["# Generated by Cairn from the cluster store; changes here are overwritten.",
             "HOMEHOST <ignore>", "MAILADDR root", ""]
    for name, uuid in sorted(arrays):
        lines.append(f"ARRAY {device(name)} metadata=1.2 UUID={uuid} name={name}")
    return "\n".join(lines) + "\n"


# --- decisions (pure) ------------------------------------------------------------------------
def check_create(level: Any, count: int, problems: dict[str, str]) -> str:
    if level not in LEVELS:
        problems["level"] = f"must be one of {', '.join(LEVELS)}"
        return ""
    if count < LEVELS[level]:
        problems["disks"] = f"RAID {level.removeprefix('raid')} needs at least {LEVELS[level]} disks, {count} given"
    return level


def changes(old: dict[str, Any] | None, new: ArrayDetail) -> list[tuple[str, str]]:
    """(severity, message) for what got worse or recovered since the last observation."""
    found = []
    was = (old or {}).get("health", "clean")
    now = new.health
    name = new.name or new.device
    if now != was:
        if now == "failed":
            found.append(("critical", f"array {name} has FAILED ({new.state})"))
        elif now == "degraded":
            found.append(("critical", f"array {name} is degraded: {new.active_devices} of {new.raid_devices} "
                                      f"disks active ({new.state})"))
        elif now == "clean" and was in ("degraded", "rebuilding", "failed"):
            found.append(("info", f"array {name} is clean again"))
    old_faulty = {m["path"] for m in (old or {}).get("members", []) if "faulty" in m["state"]}
    for member in new.members:
        if member.faulty and member.path not in old_faulty:
            found.append(("critical", f"disk {member.path} of array {name} has failed"))
    return found
