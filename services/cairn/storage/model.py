"""Storage data types and pure decisions: pool and volume records, profile rules, snapshot
names, schedules and retention. No I/O here (no commands, no store, no clock: `now` is passed in).

Store layout (under the cluster root; who writes what):

    pools/<pool>                 Pool record. Written by the pool jobs on the pool's node
                                 (create, expand, replace, destroy) and by the API for settings
                                 (compression, scrub schedule) in a compare-and-swap.
    pool-status/<pool>           What the owning node's agent observed (mounted, usage, devices,
                                 scrub/balance, volumes with space, snapshots). Written only by it.
    volumes/<pool>/<volume>      Volume record (quota, snapshot schedule). Written by volume jobs
                                 and by the API (schedule, in a compare-and-swap).
    disk-health/<node>/<disk>    Last SMART report per disk. Written only by that node's agent.

On disk, a pool is one btrfs filesystem at <pools_root>/<pool> (default /pools/<pool>):

    <pool>/<volume>                            a volume (subvolume), quota by its qgroup
    <pool>/.snapshots/<volume>/<snapshot>      read-only snapshots of it
    <pool>/vms/...                             reserved for virtual machines
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from cairn.errors import ValidationError

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_VOLUMES = {"vms", "snapshots", "lost+found"}
SNAPSHOT_DIR = ".snapshots"

# Profiles Cairn offers for data over whole disks, with the fewest disks each needs.
PROFILES = {"single": 1, "raid1": 2, "raid1c3": 3, "raid10": 4}
REFUSED_PROFILES = {
    "raid5": "btrfs RAID5 is not safe for production (its documentation warns of the write hole); "
             "make an md RAID5 array and a pool on it instead",
    "raid6": "btrfs RAID6 is not safe for production (its documentation warns of the write hole); "
             "make an md RAID6 array and a pool on it instead",
}
METADATA_PROFILES = ("dup", "single", "raid1", "raid1c3", "raid1c4")
COMPRESSION = ("none", "zstd", "lzo", "zlib")
AUTO_PREFIX = "auto-"
STAMP = "%Y%m%dT%H%M%SZ"
SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(i?B?)?", re.IGNORECASE)
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


@dataclass(frozen=True)
class Pool:
    name: str
    node: str
    data_profile: str
    metadata_profile: str
    compression: str                       # none, zstd, lzo, zlib
    disks: tuple[str, ...]                 # disk ids (serials) in the pool, or the md array's members
    array: str | None = None               # md array name when the pool sits on one
    uuid: str | None = None                # btrfs filesystem UUID, once made
    state: str = "creating"                # creating, online, destroying
    scrub_schedule: str | None = None      # None, "weekly", "monthly"
    balance_schedule: str | None = None    # None, "weekly", "monthly"
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Pool":
        data = dict(data)
        data["disks"] = tuple(data.get("disks") or ())
        return cls(**data)


@dataclass(frozen=True)
class Schedule:
    """Snapshot schedule of a volume: take one every `every` and keep a grandfather-father-son set."""
    every: str = "daily"                   # hourly, daily, weekly, or "<n>m" (every n minutes, n >= 5)
    keep_last: int = 7
    keep_hourly: int = 0
    keep_daily: int = 7
    keep_weekly: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Volume:
    pool: str
    name: str
    quota_bytes: int | None = None
    schedule: Schedule | None = None
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Volume":
        data = dict(data)
        if data.get("schedule"):
            data["schedule"] = Schedule(**data["schedule"])
        return cls(**data)


# --- validation (pure) ------------------------------------------------------------------------
def check_name(value: Any, field_name: str, problems: dict[str, str], what: str = "name") -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        problems[field_name] = f"{what} must be 1-32 of a-z, 0-9, '-' and '_', starting with a letter or digit"
        return ""
    return value


def default_metadata_profile(data_profile: str, device_count: int) -> str:
    if data_profile in ("raid1c3",):
        return "raid1c3"
    if device_count >= 2:
        return "raid1"
    return "dup"


def check_pool_layout(profile: Any, metadata_profile: Any, disk_count: int, on_array: bool,
                      problems: dict[str, str]) -> tuple[str, str]:
    """Checks a requested data/metadata profile against the number of disks; fills problems."""
    if on_array:
        if profile not in (None, "single"):
            problems["profile"] = "a pool on an md array uses the single profile (the array gives the redundancy)"
        return "single", metadata_profile if metadata_profile in METADATA_PROFILES else "dup"
    if profile in REFUSED_PROFILES:
        problems["profile"] = REFUSED_PROFILES[profile]
        return "", ""
    if profile not in PROFILES:
        problems["profile"] = f"must be one of {', '.join(PROFILES)}"
        return "", ""
    needed = PROFILES[profile]
    if disk_count < needed:
        problems["disks"] = f"profile {profile} needs at least {needed} disks, {disk_count} given"
    metadata = metadata_profile or default_metadata_profile(profile, disk_count)
    if metadata not in METADATA_PROFILES:
        problems["metadata_profile"] = f"must be one of {', '.join(METADATA_PROFILES)}"
    elif metadata == "raid1" and disk_count < 2 or metadata == "raid1c3" and disk_count < 3 \
            or metadata == "raid1c4" and disk_count < 4:
        problems["metadata_profile"] = f"metadata profile {metadata} needs more than {disk_count} disk(s)"
    return profile, metadata


def check_compression(value: Any, problems: dict[str, str]) -> str:
    value = "none" if value is None else value
    if value not in COMPRESSION:
        problems["compression"] = f"must be one of {', '.join(COMPRESSION)}"
    return value


def check_volume_name(value: Any, problems: dict[str, str]) -> str:
    name = check_name(value, "name", problems, "volume name")
    if name in RESERVED_VOLUMES:
        problems["name"] = f"{name!r} is reserved"
    return name


def check_quota(value: Any, problems: dict[str, str], field_name: str = "quota_bytes") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 << 20:
        problems[field_name] = "must be a whole number of bytes, at least 1 MiB, or null for no quota"
        return None
    return value


def check_schedule(value: Any, problems: dict[str, str]) -> Schedule | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems["schedule"] = "must be an object or null"
        return None
    unknown = set(value) - set(Schedule.__dataclass_fields__)
    for key in sorted(unknown):
        problems[f"schedule.{key}"] = "unknown setting"
    every = value.get("every", "daily")
    if interval(every) is None:
        problems["schedule.every"] = "must be hourly, daily, weekly or '<n>m' with n >= 5 minutes"
    counts = {}
    for key in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly"):
        count = value.get(key, getattr(Schedule, key))
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 1000:
            problems[f"schedule.{key}"] = "must be a whole number from 0 to 1000"
        counts[key] = count
    if not unknown and all(isinstance(c, int) for c in counts.values()) and not any(counts.values()):
        problems["schedule"] = "would keep no snapshots at all: set at least one keep_* above 0"
    if any(key.startswith("schedule") for key in problems):
        return None
    return Schedule(every=every, **counts)


def check_snapshot_name(value: Any, problems: dict[str, str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SNAPSHOT_NAME.fullmatch(value) or value.startswith(AUTO_PREFIX):
        problems["name"] = ("snapshot name must be 1-64 of letters, digits, '.', '-' and '_', "
                            f"and not start with {AUTO_PREFIX!r} (used by schedules)")
        return None
    return value


def parse_size(text: str) -> int:
    """'10G', '512M', '1.5T', '1048576' → bytes (binary units, as disks are sized in the console).
    Raises ValueError naming the text when it is not a size."""
    match = SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 500M, 10G, 2T)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


def raise_problems(problems: dict[str, str]) -> None:
    if problems:
        raise ValidationError(problems)


# --- snapshots, schedules and retention (pure) ------------------------------------------------
def snapshot_name(now: float, auto: bool, name: str | None = None) -> str:
    if name:
        return name
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime(STAMP)
    return f"{AUTO_PREFIX}{stamp}" if auto else f"manual-{stamp}"


def auto_time(name: str) -> float | None:
    """The time an automatic snapshot was taken, from its name (None if not automatic)."""
    if not name.startswith(AUTO_PREFIX):
        return None
    try:
        return datetime.strptime(name[len(AUTO_PREFIX):], STAMP).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def interval(every: Any) -> float | None:
    """Seconds between scheduled snapshots, or None if `every` is not understood."""
    if every == "hourly":
        return 3600.0
    if every == "daily":
        return 86400.0
    if every == "weekly":
        return 7 * 86400.0
    if isinstance(every, str) and re.fullmatch(r"[0-9]{1,6}m", every) and int(every[:-1]) >= 5:
        return int(every[:-1]) * 60.0
    return None


def snapshot_due(schedule: Schedule, auto_times: list[float], now: float) -> bool:
    """A scheduled snapshot is due when the newest automatic one is at least one interval old."""
    period = interval(schedule.every)
    if period is None:
        return False
    return not auto_times or now - max(auto_times) >= period - 30   # 30 s slack for loop jitter


def retention(schedule: Schedule, snapshots: dict[str, float]) -> set[str]:
    """Automatic snapshots to delete: everything not kept by keep_last or by being the newest
    snapshot of one of the last keep_hourly hours / keep_daily days / keep_weekly ISO weeks (UTC)."""
    ordered = sorted(snapshots.items(), key=lambda item: item[1], reverse=True)
    keep = {name for name, _ in ordered[:schedule.keep_last]}
    for count, bucket in ((schedule.keep_hourly, lambda t: t.strftime("%Y%m%d%H")),
                          (schedule.keep_daily, lambda t: t.strftime("%Y%m%d")),
                          (schedule.keep_weekly, lambda t: "%d-%02d" % t.isocalendar()[:2])):
        seen: list[str] = []
        for name, taken in ordered:
            key = bucket(datetime.fromtimestamp(taken, timezone.utc))
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            keep.add(name)
    return set(snapshots) - keep


@dataclass(frozen=True)
class ScheduleDecision:
    take: bool
    delete: tuple[str, ...] = field(default_factory=tuple)


def plan_schedule(schedule: Schedule, snapshot_names: list[str], now: float) -> ScheduleDecision:
    """What the scheduler does for one volume now: take a snapshot? which automatic ones to prune?
    (Pruning counts the snapshot about to be taken, so the set never grows past its limits.)"""
    autos = {name: t for name in snapshot_names if (t := auto_time(name)) is not None}
    take = snapshot_due(schedule, list(autos.values()), now)
    if take:
        autos[snapshot_name(now, auto=True)] = now
    doomed = retention(schedule, autos)
    doomed.discard(snapshot_name(now, auto=True))
    return ScheduleDecision(take, tuple(sorted(doomed)))


SCRUB_PERIODS = {"weekly": 7 * 86400.0, "monthly": 30 * 86400.0}


MAINTENANCE = ("scrub", "balance")       # what a pool can have on a schedule


def scrub_due(schedule: str | None, last_started: float | None, now: float) -> bool:
    """A scheduled scrub (or balance) is due when none was started by the schedule within its period."""
    period = SCRUB_PERIODS.get(schedule or "")
    if period is None:
        return False
    return last_started is None or now - last_started >= period


def pool_path(pools_root: str, pool: str) -> str:
    return f"{pools_root.rstrip('/')}/{pool}"


def snapshot_dir(pools_root: str, pool: str, volume: str) -> str:
    return f"{pool_path(pools_root, pool)}/{SNAPSHOT_DIR}/{volume}"

