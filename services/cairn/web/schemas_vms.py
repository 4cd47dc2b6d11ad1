"""Request and response schemas of the /api/v1 VM routes (every field described, as in schemas.py).
Inputs are loose on purpose where compute.model checks them: it reports every problem at once,
by field path, with the node's capacity in the message."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Dict, Float, Integer, List, Nested, Raw, String

from cairn.web.schemas import d


class VmCreateIn(Schema):
    name = Raw(required=True, metadata=d("VM name: 1-63 of a-z, 0-9 and '-' (unique in the cluster)"))
    pool = Raw(required=True, metadata=d("Pool that holds the VM's disks; the VM runs on the pool's node"))
    node = Raw(metadata=d("Optional: must be the pool's node (VMs run where their disks are, for now)"))
    vcpus = Raw(metadata=d("Virtual CPUs (default 1; at most the node's CPU count)"))
    memory_mib = Raw(metadata=d("Memory in MiB (default 1024; the node keeps 1024 MiB for itself)"))
    firmware = Raw(metadata=d("uefi (default) or bios"))
    cpu_model = Raw(metadata=d("Named CPU model (default Nehalem), so the VM can run on any node"))
    disks = Raw(metadata=d("Disks: a list of {size: bytes or '20G', import: path of a disk image on the node "
                           "(raw, qcow2, vmdk, vdi, vhdx, vpc), converted to a thin raw disk} — either or both "
                           "(default one empty disk of 20G)"))
    nics = Raw(metadata=d("NICs: a list of {mac?: 52:54:00:..., bridge?: br0} (default one on br0; "
                          "a MAC is chosen when not given)"))
    cdrom = Raw(allow_none=True, metadata=d("Absolute path of an ISO image on the node to boot from, or null"))
    autostart = Raw(metadata=d("Start the VM when its node boots"))
    cloud_init = Raw(allow_none=True, metadata=d(
        "For cloud images: {user (default cairn), password and/or ssh_keys (OpenSSH public keys), hostname "
        "(default: the VM's name)}: a NoCloud seed attached read-only; the password is kept only as a hash"))
    description = Raw(metadata=d("Free text, up to 256 characters"))


class VmDiskOut(Schema):
    name = String(metadata=d("disk0, disk1, ...: the file <pool>/vms/<vm>/<name>.raw"))
    size = Integer(metadata=d("Size in bytes (thin: space is taken as the guest writes; 0 while an "
                              "imported disk is being made)"))
    imported_from = String(allow_none=True, metadata=d("The disk image it was made from, or null"))


class VmNicOut(Schema):
    mac = String(metadata=d("MAC address, fixed for the VM's life"))
    bridge = String(metadata=d("The node's bridge the NIC is on"))


class VmOut(Schema):
    name = String(metadata=d("VM name"))
    uuid = String(metadata=d("libvirt UUID, fixed for the VM's life (a clone gets its own)"))
    node = String(metadata=d("The node the VM runs on"))
    pool = String(metadata=d("The pool holding its disks"))
    vcpus = Integer(metadata=d("Virtual CPUs"))
    memory_mib = Integer(metadata=d("Memory in MiB"))
    firmware = String(metadata=d("uefi or bios"))
    cpu_model = String(metadata=d("Named CPU model"))
    disks = List(Nested(VmDiskOut), metadata=d("Disks"))
    nics = List(Nested(VmNicOut), metadata=d("NICs"))
    cdrom = String(allow_none=True, metadata=d("ISO image attached, or null"))
    autostart = Boolean(metadata=d("Started when its node boots"))
    description = String(metadata=d("Free text"))
    origin = Dict(metadata=d("{clone_of: vm} or {restored_from: vm@snapshot} for copies, else {}"))
    created_at = Float(metadata=d("When it was created (Unix time)"))
    cloud_init = Dict(allow_none=True, metadata=d(
        "cloud-init settings: hostname, user, password_hash (SHA-512 crypt), ssh_keys; null when none"))
    space = Dict(allow_none=True, metadata=d(
        "Space on the pool, as its node last measured: referenced (bytes of all the VM's data) and "
        "exclusive (bytes only it holds: what deleting it frees; ~0 for a fresh clone); null until measured"))
    status = Dict(allow_none=True, metadata=d(
        "What its node last observed: state (running, shutoff, paused, undefined...), accel (kvm or tcg), "
        "vnc_port, snapshots, files; null until the node reported"))


class VmListOut(Schema):
    vms = List(Nested(VmOut), metadata=d("Every VM of the cluster"))


class VmDeleteQuery(Schema):
    keep_disks = Boolean(load_default=False, metadata=d("Keep the disks (moved to <pool>/vms/.kept/)"))
    force = Boolean(load_default=False, metadata=d("Power the VM off first if it is running"))


class VmStopIn(Schema):
    timeout = Raw(metadata=d("stop: seconds to wait for the guest to shut down (default 120)"))
    force = Raw(metadata=d("stop: power off when the guest does not shut down in time"))


class VmCloneIn(Schema):
    names = Raw(metadata=d("Names of the new VMs (one clone each)"))
    count = Raw(metadata=d("Or: how many clones, named <base>-1, <base>-2, ..."))
    base = Raw(metadata=d("Base of the numbered names (default: the VM's name)"))


class VmSnapshotIn(Schema):
    name = Raw(metadata=d("Snapshot name (default: the UTC time, like 20261130T120000Z)"))


class VmRestoreIn(Schema):
    name = Raw(required=True, metadata=d("Name of the new VM made from the snapshot"))


class VmSnapshotListOut(Schema):
    snapshots = List(String(metadata=d("Snapshot name")), metadata=d("The VM's snapshots, oldest name first"))


class VmSerialOut(Schema):
    vm = String(metadata=d("VM name"))
    size = Integer(metadata=d("The whole log's size in bytes"))
    text = String(metadata=d("Its last 64 KiB, as UTF-8 (undecodable bytes replaced)"))


class VmPatchIn(Schema):
    vcpus = Raw(metadata=d("Virtual CPUs (VM stopped)"))
    memory_mib = Raw(metadata=d("Memory in MiB (VM stopped)"))
    cdrom = Raw(allow_none=True, metadata=d("ISO image path on the node, or null to eject it (VM stopped)"))
    description = Raw(metadata=d("Free text, up to 256 characters"))
    autostart = Raw(metadata=d("Start the VM when its node boots"))
