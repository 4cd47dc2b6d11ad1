"""Basic node inventory: hostname, CPUs, memory, uptime and boot time, kernel, boot id.

Parsers are pure functions of file text (tested on captured /proc files); `read_inventory` is the
only part that reads the machine, through an injectable root so tests can point it elsewhere.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Inventory:
    hostname: str
    cpus: int
    cpu_model: str
    memory_total: int        # bytes
    memory_available: int    # bytes
    uptime: float            # seconds
    booted_at: float         # Unix time of the boot (/proc/stat btime): fixed for the whole boot
    kernel: str
    boot_id: str
    load_1m: float

    def to_dict(self) -> dict:
        return asdict(self)

    def to_record(self) -> dict:
        """What a node publishes: without the uptime, which changes every second (readers
        compute it from booted_at)."""
        data = asdict(self)
        del data["uptime"]
        return data


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes by field name."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        number = int(parts[0])
        values[name.strip()] = number * 1024 if len(parts) > 1 and parts[1] == "kB" else number
    return values


def parse_cpuinfo(text: str) -> tuple[int, str]:
    """(logical CPU count, model name) from /proc/cpuinfo."""
    count = 0
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and not model:
            model = value.strip()
    return count, model


def parse_uptime(text: str) -> float:
    return float(text.split()[0])


def parse_btime(text: str) -> float:
    """Boot time (Unix seconds) from /proc/stat."""
    for line in text.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("/proc/stat has no btime line")


def parse_loadavg(text: str) -> float:
    return float(text.split()[0])


def read_inventory(proc: Path = Path("/proc")) -> Inventory:
    meminfo = parse_meminfo((proc / "meminfo").read_text())
    cpus, model = parse_cpuinfo((proc / "cpuinfo").read_text())
    return Inventory(
        hostname=socket.gethostname(),
        cpus=cpus or os.cpu_count() or 1,
        cpu_model=model,
        memory_total=meminfo.get("MemTotal", 0),
        memory_available=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
        uptime=parse_uptime((proc / "uptime").read_text()),
        booted_at=parse_btime((proc / "stat").read_text()),
        kernel=(proc / "sys/kernel/osrelease").read_text().strip(),
        boot_id=(proc / "sys/kernel/random/boot_id").read_text().strip(),
        load_1m=parse_loadavg((proc / "loadavg").read_text()),
    )
