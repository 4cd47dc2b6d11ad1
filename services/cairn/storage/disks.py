"""Block devices as the node sees them (lsblk -J), identified by serial, never by /dev name.

`LSBLK_ARGV` is what the agent runs; `parse_lsblk` turns its JSON into flat Device records (pure,
tested on captured output); `disks` keeps whole disks only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

LSBLK_COLUMNS = "NAME,PATH,SIZE,TYPE,MODEL,SERIAL,TRAN,ROTA,MOUNTPOINT"
LSBLK_ARGV = ["lsblk", "-J", "-b", "-o", LSBLK_COLUMNS]


@dataclass(frozen=True)
class Device:
    name: str
    path: str | None
    size: int                 # bytes
    type: str                 # disk, part, raid1, loop, rom, ...
    model: str | None
    serial: str | None
    transport: str | None     # sata, nvme, usb, ... (None for virtio)
    rotational: bool | None
    mountpoint: str | None
    parent: str | None        # name of the device this one sits on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _rota(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip() in ("1", "true")


def parse_lsblk(text: str) -> list[Device]:
    """Every device in lsblk's tree, parents before children."""
    found: list[Device] = []

    def walk(devices: list[dict[str, Any]], parent: str | None) -> None:
        for dev in devices:
            found.append(Device(
                name=dev["name"], path=_text(dev.get("path")), size=int(dev.get("size") or 0),
                type=dev.get("type") or "unknown", model=_text(dev.get("model")),
                serial=_text(dev.get("serial")), transport=_text(dev.get("tran")),
                rotational=_rota(dev.get("rota")), mountpoint=_text(dev.get("mountpoint")),
                parent=parent))
            walk(dev.get("children", []), dev["name"])

    walk(json.loads(text).get("blockdevices", []), None)
    return found


def disks(devices: list[Device]) -> list[Device]:
    """Whole disks that could hold data: not loop, zram, optical or RAM devices."""
    return [d for d in devices if d.type == "disk" and d.parent is None
            and not d.name.startswith(("zram", "ram", "loop"))]
