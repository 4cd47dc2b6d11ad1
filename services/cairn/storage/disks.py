"""Block devices as the node sees them, identified by serial, never by /dev name.

Two commands feed the inventory: `lsblk -J` (the device tree, sizes, model, serial, bus, mounts)
and `blkid -c /dev/null -o export` (what signature is on each device: btrfs, linux_raid_member,
swap, ...; probed, so it works without a udev database). Both are parsed into plain records
(pure, tested on captured output); `classify` then decides, for every whole disk, what uses it:

    system       holds a mounted /, /boot, /boot/efi, /usr, swap, or anything under them
    pool         a member of a Cairn pool (btrfs UUID known to the store, directly or via md)
    md           a member of an md array that is not (yet) a pool
    in-use       anything else on it: partitions, a filesystem signature, a mount, holders
    free         nothing at all: Cairn may use it

Only `free` disks can be given to a new array or pool. Disks without a serial (and without a WWN)
cannot be named safely and are listed with `id = None`. Loop devices are ignored unless the node's
configuration says `storage.include_loop` (the host tests build pools on loop devices); they are
then named `loop:<name>`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from cairn.errors import NotFound

LSBLK_COLUMNS = "NAME,PATH,SIZE,TYPE,MODEL,SERIAL,WWN,TRAN,SUBSYSTEMS,ROTA,RM,RO,MOUNTPOINTS,FSTYPE,LABEL,UUID"
LSBLK_ARGV = ["lsblk", "-J", "-b", "-o", LSBLK_COLUMNS]
BLKID_ARGV = ["blkid", "-c", "/dev/null", "-o", "export"]

SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/efi", "/usr", "/var", "[SWAP]")


@dataclass(frozen=True)
class Device:
    name: str
    path: str | None
    size: int                 # bytes
    type: str                 # disk, part, raid1, loop, rom, ...
    model: str | None
    serial: str | None
    transport: str | None     # sata, nvme, usb, virtio, ...
    rotational: bool | None
    mountpoint: str | None    # the first mount point, if any
    parent: str | None        # name of the device this one sits on (lsblk shows md arrays under each member)
    wwn: str | None = None
    subsystems: str | None = None
    removable: bool = False
    readonly: bool = False
    mountpoints: tuple[str, ...] = ()
    fstype: str | None = None
    label: str | None = None
    uuid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Usage:
    kind: str                 # system, pool, md, in-use, free
    detail: str               # for a person: "pool tank", "member of /dev/md0", "partition sda1 (ext4)"


@dataclass(frozen=True)
class Disk:
    """A whole disk in the inventory (what the API lists)."""
    id: str | None            # serial, else wwn-<wwn>, else loop:<name> for allowed loop devices
    name: str
    path: str
    size: int
    model: str | None
    serial: str | None
    bus: str                  # sata, sas, nvme, virtio, usb, scsi, loop, unknown
    media: str                # hdd, ssd, nvme
    usage: Usage
    partitions: tuple[dict, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _flag(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip() in ("1", "true")


def parse_lsblk(text: str) -> list[Device]:
    """Every device in lsblk's tree, parents before children (an md array appears under each member)."""
    found: list[Device] = []

    def walk(devices: list[dict[str, Any]], parent: str | None) -> None:
        for dev in devices:
            mounts = dev.get("mountpoints")
            if mounts is None:
                mounts = [dev.get("mountpoint")]
            mounts = tuple(m for m in mounts if m)
            found.append(Device(
                name=dev["name"], path=_text(dev.get("path")), size=int(dev.get("size") or 0),
                type=dev.get("type") or "unknown", model=_text(dev.get("model")),
                serial=_text(dev.get("serial")), transport=_text(dev.get("tran")),
                rotational=_flag(dev.get("rota")), mountpoint=mounts[0] if mounts else None,
                parent=parent, wwn=_text(dev.get("wwn")), subsystems=_text(dev.get("subsystems")),
                removable=bool(_flag(dev.get("rm"))), readonly=bool(_flag(dev.get("ro"))),
                mountpoints=mounts, fstype=_text(dev.get("fstype")), label=_text(dev.get("label")),
                uuid=_text(dev.get("uuid"))))
            walk(dev.get("children", []), dev["name"])

    walk(json.loads(text).get("blockdevices", []), None)
    return found


def parse_blkid_export(text: str) -> dict[str, dict[str, str]]:
    """`blkid -o export`: blank-line separated KEY=value blocks → {DEVNAME: {TYPE, UUID, LABEL, ...}}."""
    found: dict[str, dict[str, str]] = {}
    block: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        line = line.strip()
        if not line:
            if "DEVNAME" in block:
                found[block["DEVNAME"]] = block
            block = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            block[key] = value
    return found


def with_signatures(devices: list[Device], probed: dict[str, dict[str, str]]) -> list[Device]:
    """Fill fstype/uuid/label from blkid where lsblk had none (no udev database on the host)."""
    merged = []
    for dev in devices:
        info = probed.get(dev.path or "", {})
        if info and not dev.fstype:
            dev = Device(**{**asdict(dev), "fstype": info.get("TYPE"), "uuid": info.get("UUID") or dev.uuid,
                            "label": info.get("LABEL") or dev.label})
        merged.append(dev)
    return merged


def disks(devices: list[Device], include_loop: bool = False) -> list[Device]:
    """Whole disks that could hold data: not zram, optical or RAM devices (loops only if asked)."""
    return [d for d in devices if d.parent is None and not d.name.startswith(("zram", "ram"))
            and (d.type == "disk" or (include_loop and d.type == "loop" and d.size > 0))]


def _bus(dev: Device) -> str:
    if dev.type == "loop":
        return "loop"
    if dev.transport in ("sata", "ata", "sas", "nvme", "usb", "virtio", "iscsi", "fc"):
        return "sata" if dev.transport == "ata" else dev.transport
    subsystems = (dev.subsystems or "").split(":")
    for bus in ("nvme", "virtio", "usb", "scsi"):
        if bus in subsystems:
            return bus
    return dev.transport or "unknown"


def _media(dev: Device, bus: str) -> str:
    if bus == "nvme":
        return "nvme"
    return "hdd" if dev.rotational else "ssd"


def disk_id(dev: Device) -> str | None:
    if dev.type == "loop":
        return f"loop:{dev.name}"
    if dev.serial:
        return dev.serial
    if dev.wwn:
        return f"wwn-{dev.wwn}"
    return None


def classify(devices: list[Device], pools_by_uuid: dict[str, str] | None = None,
             include_loop: bool = False) -> list[Disk]:
    """Every whole disk with what uses it (pure). pools_by_uuid maps btrfs UUIDs to Cairn pool names."""
    pools_by_uuid = pools_by_uuid or {}
    children: dict[str, list[Device]] = {}
    for dev in devices:
        if dev.parent:
            children.setdefault(dev.parent, []).append(dev)

    def below(name: str, seen: frozenset = frozenset()) -> Iterable[Device]:
        for child in children.get(name, []):
            if child.name in seen:
                continue
            yield child
            yield from below(child.name, seen | {child.name})

    result = []
    for disk in disks(devices, include_loop):
        tree = [disk, *below(disk.name)]
        usage = _usage(disk, tree, pools_by_uuid)
        bus = _bus(disk)
        partitions = tuple({"name": d.name, "size": d.size, "fstype": d.fstype, "mountpoints": list(d.mountpoints)}
                           for d in children.get(disk.name, []) if d.type == "part")
        result.append(Disk(id=disk_id(disk), name=disk.name, path=disk.path or f"/dev/{disk.name}",
                           size=disk.size, model=disk.model, serial=disk.serial, bus=bus,
                           media=_media(disk, bus), usage=usage, partitions=partitions))
    return result


def _usage(disk: Device, tree: list[Device], pools_by_uuid: dict[str, str]) -> Usage:
    for dev in tree:
        for mount in dev.mountpoints:
            if mount in SYSTEM_MOUNTS or mount.startswith(("/boot/", "/usr/")):
                return Usage("system", f"{dev.name} is mounted at {mount}")
    for dev in tree:
        if dev.fstype == "btrfs" and dev.uuid in pools_by_uuid:
            return Usage("pool", f"pool {pools_by_uuid[dev.uuid]}")
    for dev in tree[1:]:
        if dev.type.startswith("raid") or dev.type == "md":
            return Usage("md", f"member of /dev/{dev.name}")
    if disk.fstype == "linux_raid_member":
        return Usage("md", "md RAID member (array not running)")
    for dev in tree:
        if dev.mountpoints:
            return Usage("in-use", f"{dev.name} is mounted at {dev.mountpoints[0]}")
    if disk.fstype:
        return Usage("in-use", f"holds a {disk.fstype} signature")
    parts = [d for d in tree[1:] if d.type == "part"]
    if parts:
        return Usage("in-use", f"has {len(parts)} partition(s)")
    if len(tree) > 1:
        return Usage("in-use", f"used by {tree[1].name} ({tree[1].type})")
    if disk.readonly:
        return Usage("in-use", "read-only device")
    return Usage("free", "no partitions, signatures or holders")


# --- effects --------------------------------------------------------------------------------
def scan(runner, pools_by_uuid: dict[str, str] | None = None, include_loop: bool = False) -> list[Disk]:
    """This node's whole disks, classified (lsblk + a blkid probe)."""
    devices = parse_lsblk(runner.run(LSBLK_ARGV, timeout=20).stdout)
    probe = runner.run(BLKID_ARGV, timeout=20, check=False)   # exit 2: nothing found at all
    devices = with_signatures(devices, parse_blkid_export(probe.stdout))
    return classify(devices, pools_by_uuid, include_loop)


def find(found: list[Disk], disk_id: str, node: str) -> Disk:
    for disk in found:
        if disk.id == disk_id or (disk.serial and disk.serial == disk_id):
            return disk
    raise NotFound(f"no disk {disk_id!r} on node {node}", disk=disk_id, node=node)
