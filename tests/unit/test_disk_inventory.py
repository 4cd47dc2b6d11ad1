"""Disk inventory: lsblk + blkid output captured on the appliance, and what uses each disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.errors import NotFound
from cairn.storage import disks

FIX = Path(__file__).parent.parent / "fixtures"


def appliance_devices() -> list[disks.Device]:
    devices = disks.parse_lsblk((FIX / "lsblk" / "appliance-plain.json").read_text())
    probed = disks.parse_blkid_export((FIX / "blkid" / "appliance-plain.txt").read_text())
    return disks.with_signatures(devices, probed)


def test_appliance_disks_by_serial_with_bus_media_and_usage():
    found = {d.id: d for d in disks.classify(appliance_devices())}
    assert sorted(found) == ["CAIRN-NVME1", "CAIRN-ROOT", "CAIRN-SATA1", "CAIRN-VD1", "CAIRN-VD2"]
    assert (found["CAIRN-NVME1"].bus, found["CAIRN-NVME1"].media) == ("nvme", "nvme")
    assert (found["CAIRN-SATA1"].bus, found["CAIRN-SATA1"].model) == ("sata", "CAIRN SATA DISK")
    assert found["CAIRN-VD1"].bus == "virtio"
    assert found["CAIRN-ROOT"].usage.kind == "system"
    assert [p["name"] for p in found["CAIRN-ROOT"].partitions] == ["vda1", "vda2"]
    assert {d.usage.kind for k, d in found.items() if k != "CAIRN-ROOT"} == {"free"}
    assert found["CAIRN-SATA1"].size == 8 * 1024**3


def test_blkid_export_blocks_are_keyed_by_device():
    probed = disks.parse_blkid_export((FIX / "blkid" / "appliance-plain.txt").read_text())
    assert probed["/dev/vda2"]["TYPE"] == "ext4"
    assert probed["/dev/vda1"]["LABEL"] == "CAIRN-ESP"


def dev(name, type_="disk", parent=None, fstype=None, uuid=None, mounts=(), serial=None):
    return disks.Device(name=name, path=f"/dev/{name}", size=1 << 30, type=type_, model=None,
                        serial=serial or (name.upper() if parent is None else None), transport="sata",
                        rotational=True, mountpoint=mounts[0] if mounts else None, parent=parent,
                        mountpoints=tuple(mounts), fstype=fstype, uuid=uuid)


def usage_of(devices, pools=None) -> dict[str, tuple[str, str]]:
    return {d.name: (d.usage.kind, d.usage.detail) for d in disks.classify(devices, pools)}


def test_what_uses_a_disk():
    devices = [
        dev("sda"), dev("sda1", "part", "sda", "ext4", mounts=("/srv",)),           # in use: mounted
        dev("sdb", fstype="linux_raid_member"), dev("md0", "raid1", "sdb", "btrfs", "U1"),
        dev("sdc", fstype="linux_raid_member"), dev("md1", "raid5", "sdc", "ext4"),
        dev("sdd", fstype="btrfs", uuid="U2"),                                         # pool member
        dev("sde", fstype="btrfs", uuid="U9"),                                         # foreign btrfs
        dev("sdf", fstype="linux_raid_member"),                                        # stopped array
        dev("sdg"),
        dev("sdh"), dev("sdh1", "part", "sdh", "swap", mounts=("[SWAP]",)),
    ]
    got = usage_of(devices, {"U1": "tank", "U2": "fast"})
    assert got == {
        "sda": ("in-use", "sda1 is mounted at /srv"),
        "sdb": ("pool", "pool tank"),
        "sdc": ("md", "member of /dev/md1"),
        "sdd": ("pool", "pool fast"),
        "sde": ("in-use", "holds a btrfs signature"),
        "sdf": ("md", "md RAID member (array not running)"),
        "sdg": ("free", "no partitions, signatures or holders"),
        "sdh": ("system", "sdh1 is mounted at [SWAP]"),
    }


def test_loop_devices_only_when_asked_and_named_loop_colon():
    devices = [dev("loop0", "loop", serial=""), dev("sda")]
    assert [d.name for d in disks.classify(devices)] == ["sda"]
    assert [d.id for d in disks.classify(devices, include_loop=True)] == ["loop:loop0", "SDA"]


def test_find_by_id_or_says_which_disk_and_node():
    found = disks.classify(appliance_devices())
    assert disks.find(found, "CAIRN-SATA1", "n1").name == "sda"
    with pytest.raises(NotFound, match="no disk 'NOPE' on node n1"):
        disks.find(found, "NOPE", "n1")


def test_old_lsblk_without_mountpoints_column_still_parses():
    text = json.dumps({"blockdevices": [{"name": "sda", "size": 5, "type": "disk", "mountpoint": "/x"}]})
    (sda,) = disks.parse_lsblk(text)
    assert sda.mountpoints == ("/x",) and sda.mountpoint == "/x"


def test_appliance_with_an_md_raid5_holding_btrfs():
    """Captured with a RAID5 over four virtio disks and a btrfs on the array."""
    devices = disks.parse_lsblk((FIX / "lsblk" / "appliance-md-btrfs.json").read_text())
    devices = disks.with_signatures(devices, disks.parse_blkid_export(
        (FIX / "blkid" / "appliance-md-btrfs.txt").read_text()))
    md = next(d for d in devices if d.name == "md127")
    assert (md.type, md.fstype) == ("raid5", "btrfs")
    members = {"vdd", "vdg", "vdh", "vdi"}
    plain = {d.name: d.usage for d in disks.classify(devices)}
    assert {plain[m].kind for m in members} == {"md"} and plain["vdg"].detail == "member of /dev/md127"
    as_pool = {d.name: d.usage for d in disks.classify(devices, {md.uuid: "vault"})}
    assert {as_pool[m].detail for m in members} == {"pool vault"}
    assert plain["vde"].kind == "free", "a disk whose md superblock was zeroed is free again"
