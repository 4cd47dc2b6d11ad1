"""Virtual machine data types and pure decisions: the VM record, its checks against the node's
capacity, MAC addresses, and where a VM's files live on its pool. No I/O here.

Store layout (under the cluster root; who writes what):

    vms/<name>            VM record (below). Written by the API (create, edit while stopped) in a
                          compare-and-swap, and by the VM jobs on the VM's node (clone and restore
                          write the new VM's record when its disks are in place).
    vm-status/<name>      What the VM's node observed (libvirt state, accelerator, space). Written
                          only by that node's agent.
    vm-macs/<mac>         {"vm": <name>}: claims a MAC in the transaction that creates the VM, so
                          two VMs of the cluster never share one.

On disk (the VM's pool, default /pools/<pool>):

    <pool>/vms/<name>/                     the VM's subvolume: its disks, sparse raw files
        disk<N>.raw
        vm.json                            the VM record as it was written with the disks
    <pool>/.snapshots/vms/<name>/<snap>/   read-only snapshots of that subvolume (disks + vm.json)

Invariants kept by the checks below:
- VM names are 1-63 of [a-z0-9-] (a host name: the console, libvirt and cloud-init use it) and
  unique in the cluster; a VM's libvirt UUID and its MACs are fixed at creation (clones get new ones).
- vCPUs and memory fit the node (at most its CPU count and its memory minus a reserve for the
  host); disks are whole MiB, 1 MiB to 64 TiB, on virtio-scsi with discard=unmap.
- MACs are locally administered unicast in QEMU's 52:54:00 range, unique in the cluster.
- The CPU is a named model (default Nehalem: any x86-64 since 2008, emulated by TCG too), never
  host-passthrough, so a VM can later run on any node.
- A disk is imported from, and the cdrom is, only an image the caller's `image_problem` allows
  (compute/images.py: an uploaded image on the VM's node, or a file under an allowed directory);
  without one, every path is refused.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from cairn.compute import cloudinit, images
from cairn.errors import ValidationError
from cairn.storage import model as storage_model
from cairn.storage.model import raise_problems

VM_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAC = re.compile(r"52:54:00(?::[0-9a-f]{2}){3}")
FIRMWARE = ("uefi", "bios")
CPU_MODELS = ("Nehalem", "Westmere", "SandyBridge", "IvyBridge", "Haswell-noTSX", "Broadwell-noTSX",
              "Skylake-Client-noTSX-IBRS", "EPYC", "qemu64")
DEFAULT_CPU_MODEL = "Nehalem"
MIB = 1 << 20
DISK_MIN, DISK_MAX = MIB, 64 << 40
MEMORY_MIN_MIB = 64
HOST_RESERVE_MIB = 1024            # kept for the node itself (etcd, Samba, Cairn, page cache)
MAX_DISKS = 16
MAX_NICS = 8
VMS_DIR = "vms"


@dataclass(frozen=True)
class Disk:
    name: str                      # disk0, disk1, ...: the file <pool>/vms/<vm>/<name>.raw
    size: int                      # bytes (0 until an imported disk's size is known)
    imported_from: str | None = None   # the image file it was made from (qemu-img convert), if any


@dataclass(frozen=True)
class Nic:
    mac: str
    bridge: str = "br0"


@dataclass(frozen=True)
class Vm:
    name: str
    uuid: str
    node: str
    pool: str
    vcpus: int
    memory_mib: int
    firmware: str = "uefi"
    cpu_model: str = DEFAULT_CPU_MODEL
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    cdrom: str | None = None       # an ISO's path on the node, or None
    autostart: bool = False
    description: str = ""
    origin: dict[str, str] = field(default_factory=dict)   # {"clone_of"|"restored_from": ...}
    created_at: float = 0.0
    cloud_init: dict[str, Any] | None = None   # {hostname, user, password_hash, ssh_keys}: a NoCloud seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Vm":
        data = dict(data)
        data["disks"] = tuple(Disk(**d) for d in data.get("disks") or ())
        data["nics"] = tuple(Nic(**n) for n in data.get("nics") or ())
        data["origin"] = dict(data.get("origin") or {})
        return cls(**data)


@dataclass(frozen=True)
class Capacity:
    """What a node can give VMs."""
    cpus: int
    memory_mib: int


# --- paths ------------------------------------------------------------------------------------
def vm_dir(pools_root: str, pool: str, name: str) -> str:
    return f"{storage_model.pool_path(pools_root, pool)}/{VMS_DIR}/{name}"


def disk_path(pools_root: str, pool: str, name: str, disk: str) -> str:
    return f"{vm_dir(pools_root, pool, name)}/{disk}.raw"


def snapshots_dir(pools_root: str, pool: str, name: str) -> str:
    return f"{storage_model.pool_path(pools_root, pool)}/{storage_model.SNAPSHOT_DIR}/{VMS_DIR}/{name}"


def snapshot_path(pools_root: str, pool: str, name: str, snapshot: str) -> str:
    return f"{snapshots_dir(pools_root, pool, name)}/{snapshot}"


# --- MACs and names -----------------------------------------------------------------------------
def new_mac(random_bytes: Callable[[int], bytes], taken: Iterable[str]) -> str:
    """A 52:54:00:xx:xx:xx address not in `taken` (random_bytes is os.urandom in production)."""
    used = set(taken)
    for _ in range(1000):
        tail = random_bytes(3)
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in tail)
        if mac not in used:
            return mac
    raise ValueError("could not find a free MAC address")


def clone_names(base: str, count: int, taken: Iterable[str]) -> list[str]:
    """`count` names for clones of `base`: base-1, base-2, ... skipping taken ones (a clone ×N)."""
    used = set(taken)
    names: list[str] = []
    number = 1
    while len(names) < count:
        candidate = f"{base}-{number}"
        if len(candidate) > 63:
            raise ValidationError({"name": f"{base!r} is too long to number its clones (63 characters at most)"})
        if candidate not in used:
            names.append(candidate)
        number += 1
    return names


# --- checks -------------------------------------------------------------------------------------
def name_problem(value: Any, taken: Iterable[str] = ()) -> str | None:
    if not isinstance(value, str) or not VM_NAME.fullmatch(value):
        return "VM name must be 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"
    if value in set(taken):
        return f"a VM named {value!r} exists already"
    return None


def check_size(value: Any, field_name: str, problems: dict[str, str]) -> int:
    if isinstance(value, str):
        try:
            value = storage_model.parse_size(value)
        except ValueError as exc:
            problems[field_name] = str(exc)
            return 0
    if isinstance(value, bool) or not isinstance(value, int):
        problems[field_name] = "must be a size in bytes or like 20G"
        return 0
    if value % MIB or not DISK_MIN <= value <= DISK_MAX:
        problems[field_name] = "must be whole MiB, from 1 MiB to 64 TiB"
        return 0
    return value


def check_resources(vcpus: Any, memory_mib: Any, capacity: Capacity, node: str,
                    problems: dict[str, str]) -> tuple[int, int]:
    """vCPUs and memory within what `node` has (said in the message when they are not)."""
    if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus < 1:
        problems["vcpus"] = "must be a whole number of at least 1"
    elif vcpus > capacity.cpus:
        problems["vcpus"] = f"node {node} has {capacity.cpus} CPUs; a VM can have at most {capacity.cpus} vCPUs"
    usable = max(capacity.memory_mib - HOST_RESERVE_MIB, 0)
    if isinstance(memory_mib, bool) or not isinstance(memory_mib, int) or memory_mib < MEMORY_MIN_MIB:
        problems["memory_mib"] = f"must be a whole number of MiB, at least {MEMORY_MIN_MIB}"
    elif memory_mib > usable:
        problems["memory_mib"] = (f"node {node} has {capacity.memory_mib} MiB of memory, {usable} MiB of it "
                                  f"available to VMs ({HOST_RESERVE_MIB} MiB stay with the node)")
    return (vcpus if isinstance(vcpus, int) else 0), (memory_mib if isinstance(memory_mib, int) else 0)


ImageProblem = Callable[[str, str], "str | None"]


def no_images(path: str, kind: str) -> str | None:
    """The image check when the caller knows of no image a VM may use: every path is refused."""
    return f"{path} is not an image a VM may use ({images.KIND_WORDS[kind]} must be uploaded first)"


def check_image_path(value: Any, kind: str, field_name: str, problems: dict[str, str],
                     image_problem: ImageProblem) -> str | None:
    """An image path (`kind` "disk": to import; "iso": the cdrom), as `image_problem` allows it."""
    problem = images.path_shape_problem(value) or image_problem(value, kind)
    if problem:
        problems[field_name] = problem
        return None
    return value


def check_vm(data: Any, *, node: str, capacity: Capacity, taken_names: Iterable[str],
             taken_macs: Iterable[str], new_uuid: Callable[[], str],
             random_bytes: Callable[[int], bytes], now: float,
             hash_password: Callable[[str], str] | None = None,
             image_problem: ImageProblem = no_images) -> Vm:
    """A new VM from API input: every problem at once (ValidationError keyed by field path).
    `image_problem(path, kind)` says why a disk's import ("disk") or the cdrom ("iso") may not
    use a path (compute/images.py: an uploaded image on the node, or under an allowed directory)."""
    if not isinstance(data, dict):
        raise ValidationError({"vm": "must be an object"})
    problems: dict[str, str] = {}
    known = {"name", "pool", "vcpus", "memory_mib", "firmware", "cpu_model", "disks", "nics", "cdrom",
             "autostart", "description", "node", "cloud_init"}
    for key in sorted(set(map(str, data)) - known):
        problems[key] = "unknown setting"
    name = data.get("name")
    problem = name_problem(name, taken_names)
    if problem:
        problems["name"] = problem
    pool = storage_model.check_name(data.get("pool"), "pool", problems, "pool name")
    vcpus, memory = check_resources(data.get("vcpus", 1), data.get("memory_mib", 1024), capacity, node, problems)
    firmware = data.get("firmware", "uefi")
    if firmware not in FIRMWARE:
        problems["firmware"] = "must be uefi or bios"
    cpu_model = data.get("cpu_model", DEFAULT_CPU_MODEL)
    if cpu_model not in CPU_MODELS:
        problems["cpu_model"] = f"must be one of {', '.join(CPU_MODELS)} (named models keep VMs movable)"
    disks: list[Disk] = []
    entries = data.get("disks", [{"size": "20G"}])
    if not isinstance(entries, list) or len(entries) > MAX_DISKS:
        problems["disks"] = f"must be a list of at most {MAX_DISKS} disks like {{\"size\": \"20G\"}}"
        entries = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - {"size", "import"} or not entry:
            problems[f"disks[{index}]"] = "must be an object with a size, an import (an image's path) or both"
            continue
        source = entry.get("import")
        if source is not None:
            source = check_image_path(source, "disk", f"disks[{index}].import", problems, image_problem)
        size = 0
        if entry.get("size") is not None or entry.get("import") is None:
            size = check_size(entry.get("size"), f"disks[{index}].size", problems)
        disks.append(Disk(f"disk{index}", size, source))
    macs: list[str] = []
    nics: list[Nic] = []
    entries = data.get("nics", [{}])
    if not isinstance(entries, list) or len(entries) > MAX_NICS:
        problems["nics"] = f"must be a list of at most {MAX_NICS} NICs"
        entries = []
    used = set(taken_macs)
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - {"mac", "bridge"}:
            problems[f"nics[{index}]"] = "must be an object with an optional mac and bridge"
            continue
        mac = entry.get("mac")
        if mac is None:
            mac = new_mac(random_bytes, used | set(macs))
        elif not isinstance(mac, str) or not MAC.fullmatch(mac.lower()):
            problems[f"nics[{index}].mac"] = "must be like 52:54:00:12:34:56 (QEMU's range)"
            continue
        mac = mac.lower()
        if mac in used or mac in macs:
            problems[f"nics[{index}].mac"] = f"{mac} is used by another VM"
            continue
        bridge = entry.get("bridge", "br0")
        if not isinstance(bridge, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", bridge):
            problems[f"nics[{index}].bridge"] = "must be a bridge's interface name"
            continue
        macs.append(mac)
        nics.append(Nic(mac, bridge))
    cdrom = data.get("cdrom")
    if cdrom is not None:
        cdrom = check_image_path(cdrom, "iso", "cdrom", problems, image_problem)
    autostart = data.get("autostart", False)
    if not isinstance(autostart, bool):
        problems["autostart"] = "must be true or false"
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 256:
        problems["description"] = "must be text of at most 256 characters"
    cloud_init = cloudinit.check(data.get("cloud_init"), problems,
                                 hash_password or (lambda password: ""))
    raise_problems(problems)
    return Vm(name, new_uuid(), node, pool, vcpus, memory, firmware, cpu_model, tuple(disks), tuple(nics),
              cdrom, autostart, description, {}, now, cloud_init)


def check_edit(data: dict[str, Any], capacity: Capacity, node: str,
               image_problem: ImageProblem = no_images) -> dict[str, Any]:
    """The settings an edit changes (vcpus, memory_mib, description, autostart, cdrom), checked
    like a new VM's; every problem at once."""
    problems: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if "vcpus" in data or "memory_mib" in data:
        vcpus, memory = check_resources(data.get("vcpus", 1), data.get("memory_mib", MEMORY_MIN_MIB),
                                        capacity, node, problems)
        changes.update({key: value for key, value in (("vcpus", vcpus), ("memory_mib", memory)) if key in data})
    if "description" in data:
        if not isinstance(data["description"], str) or len(data["description"]) > 256:
            problems["description"] = "must be text of at most 256 characters"
        changes["description"] = data["description"]
    if "autostart" in data:
        if not isinstance(data["autostart"], bool):
            problems["autostart"] = "must be true or false"
        changes["autostart"] = data["autostart"]
    if "cdrom" in data:
        cdrom = data["cdrom"]
        if cdrom is not None:
            check_image_path(cdrom, "iso", "cdrom", problems, image_problem)
        changes["cdrom"] = cdrom
    raise_problems(problems)
    return changes


def cloned(source: Vm, name: str, *, new_uuid: Callable[[], str], macs: list[str], now: float,
           origin: dict[str, str]) -> Vm:
    """The record of a copy of `source` named `name`: new identity (UUID, MACs), same hardware."""
    if len(macs) != len(source.nics):
        raise ValueError("one new MAC per NIC is needed")
    nics = tuple(Nic(mac, nic.bridge) for mac, nic in zip(macs, source.nics))
    return Vm(name, new_uuid(), source.node, source.pool, source.vcpus, source.memory_mib, source.firmware,
              source.cpu_model, source.disks, nics, None, False, source.description, origin, now,
              source.cloud_init)
