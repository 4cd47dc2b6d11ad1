"""The btrfs wrapper for real, on loop devices: raid1 that grows, converts and swaps a disk, scrubs
clean and scrubs a corrupted mirror back, subvolumes and snapshots, quotas that refuse writes, the
compression mount option, wipe, and a raid1 missing a device.

Everything is mounted in a mount namespace of this process's own (made private), so mounts cannot
be copied into namespaces other programs on the host create meanwhile; the `lab` fixture undoes
every mount, loop device and scrub record, also when a test fails.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from cairn.errors import Busy, CairnError, Conflict, NotFound
from cairn.runner import Runner
from cairn.storage import btrfs, btrfs_ioctl
from environment import cannot, missing
from support import wait_until

pytestmark = [
    cannot(os.geteuid() != 0 or not Path("/dev/loop-control").exists()
           or "btrfs" not in Path("/proc/filesystems").read_text(),
           "btrfs on loop devices (needs root, /dev/loop-control and btrfs in the kernel)"),
    missing(tools={"mkfs.btrfs": "Debian package btrfs-progs"}),
]

CLONE_NEWNS = 0x00020000
MIB = 1 << 20
run = Runner()


@pytest.fixture(scope="module")
def own_mounts():
    """Run this module in a private mount namespace, and return to the original one after."""
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        try:
            run.run(["mount", "--make-rprivate", "/"])
            yield
        finally:
            if libc.setns(original, CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original mount namespace")
    finally:
        os.close(original)


class Lab:
    """Loop devices and the filesystems made on them. close() undoes it all, in order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loops: list[str] = []
        self.uuids: list[str] = []

    def devices(self, count: int, size_mib: int = 400) -> list[str]:
        made = []
        for _ in range(count):
            image = self.root / f"disk{len(self.loops)}.img"
            with open(image, "wb") as handle:
                handle.truncate(size_mib * MIB)
            loop = run.run(["losetup", "-f", "--show", str(image)]).stdout.strip()
            self.loops.append(loop)
            made.append(loop)
        return made

    def mkfs(self, devices: list[str], data: str, metadata: str, label: str = "lab") -> str:
        uuid = btrfs.mkfs(run, devices, data, metadata, label)
        self.uuids.append(uuid)
        return uuid

    def mountpoint(self, name: str = "pool") -> str:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return str(path)

    def detach(self, loop: str) -> None:
        run.run(["btrfs", "device", "scan", "--forget", loop], check=False)
        run.run(["losetup", "-d", loop])
        self.loops.remove(loop)

    def mounted(self) -> list[str]:
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        return [p for p in points if p.startswith(str(self.root) + "/")]

    def close(self) -> None:
        """Every step is tried whatever failed before it; the first failure is raised at the end."""
        failures: list[BaseException] = []

        def attempt(step, *args) -> None:
            try:
                step(*args)
            except BaseException as exc:      # keep cleaning up, report afterwards
                failures.append(exc)

        if os.getcwd().startswith(str(self.root) + "/"):
            os.chdir("/")                     # a test that changed into a mount must not pin it
        for point in sorted(self.mounted(), key=len, reverse=True):
            for cancel in (btrfs.scrub_cancel, btrfs.balance_cancel, btrfs.replace_cancel):
                attempt(cancel, run, point)
            attempt(wait_until, lambda: run.run(["umount", point], check=False).ok, 10,
                    f"umount {point}", 0.5)
            if point in self.mounted():       # lazily then: it goes when its last user does
                attempt(run.run, ["umount", "-l", point])
        for loop in self.loops:
            run.run(["btrfs", "device", "scan", "--forget", loop], check=False)
            attempt(run.run, ["losetup", "-d", loop])    # busy: detached once the fs lets go
        for uuid in self.uuids:
            for record in ("scrub.status", "scrub.progress"):
                attempt(Path(f"/var/lib/btrfs/{record}.{uuid}").unlink, True)
        if failures:
            raise failures[0]


@pytest.fixture
def lab(own_mounts, tmp_path):
    made = Lab(tmp_path)
    try:
        yield made
    finally:
        made.close()
        assert made.mounted() == []


def write(path: str, mib: int) -> None:
    """mib MiB of random (incompressible) data, on disk when this returns."""
    with open(path, "wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(MIB))
        handle.flush()
        os.fsync(handle.fileno())


def balanced(mountpoint: str) -> bool:
    status = btrfs.balance_status(run, mountpoint)
    return not (status.running or status.paused)


def profiles(usage: btrfs.Usage) -> tuple[str, str, str]:
    return usage.data_profile, usage.metadata_profile, usage.system_profile


def test_raid1_grows_to_three_devices_and_converts_to_raid1c3(lab):
    # Room matters: with 160 MiB of data on 512 MiB devices the conversion ran out of space on the
    # third device and Linux 6.18 aborted the transaction (filesystem forced read-only).
    devices = lab.devices(3, 640)
    uuid = lab.mkfs(devices[:2], "raid1", "raid1")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    usage = btrfs.usage(run, mnt)
    assert (profiles(usage), [d.path for d in usage.devices]) == (("raid1",) * 3, devices[:2])
    assert btrfs.show(run, mnt).uuid == uuid
    write(f"{mnt}/data", 64)

    btrfs.device_add(run, mnt, devices[2])
    btrfs.balance_start(run, mnt)
    wait_until(lambda: balanced(mnt), 60, "the full balance to end")
    assert [d.allocated > 0 for d in btrfs.usage(run, mnt).devices] == [True, True, True]

    btrfs.balance_start(run, mnt, "raid1c3", "raid1c3")
    wait_until(lambda: balanced(mnt), 60, "the conversion to raid1c3 to end")
    usage = btrfs.usage(run, mnt)
    assert (profiles(usage), usage.multiple_profiles) == (("raid1c3",) * 3, False)
    assert usage.data_used >= 64 * MIB


def test_replace_swaps_in_a_new_device_and_the_old_one_is_gone(lab):
    devices = lab.devices(3)
    lab.mkfs(devices[:2], "raid1", "raid1")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    write(f"{mnt}/data", 64)
    assert btrfs.replace_status(run, mnt).state == "never"

    btrfs.replace_start(run, mnt, 2, devices[2])
    seen = set()

    def finished() -> bool:
        status = btrfs.replace_status(run, mnt)
        seen.add(status.state)
        return status.state == "finished"
    wait_until(finished, 60, "the replace to finish")
    assert seen <= {"running", "finished"}
    assert [d.path for d in btrfs.show(run, mnt).devices] == [devices[0], devices[2]]
    with pytest.raises(NotFound):
        btrfs.show(run, devices[1])


def test_scrub_runs_to_finished_without_errors(lab):
    devices = lab.devices(2)
    lab.mkfs(devices, "raid1", "raid1")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    write(f"{mnt}/data", 100)
    assert btrfs.scrub_status(run, mnt).state == "never"
    btrfs.scrub_start(run, mnt)
    wait_until(lambda: btrfs.scrub_status(run, mnt).state == "finished", 60, "the scrub to finish")
    status = btrfs.scrub_status(run, mnt)
    assert (status.corrected_errors, status.uncorrectable_errors, status.percent) == (0, 0, 100.0)
    assert status.bytes_scrubbed >= 2 * 100 * MIB      # both copies of the data are read


def test_scrub_repairs_a_corrupted_mirror_and_device_stats_count_it(lab):
    devices = lab.devices(2, 300)
    lab.mkfs(devices, "raid1", "raid1")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    write(f"{mnt}/data", 150)
    btrfs.umount(run, mnt)
    # garbage over 70..250 MiB of the second device: data chunks, not the super block copy at 64 MiB
    run.run(["dd", "if=/dev/urandom", f"of={devices[1]}", "bs=1M", "seek=70", "count=180",
             "oflag=direct", "status=none"])
    btrfs.mount(run, devices[0], mnt)
    btrfs.scrub_start(run, mnt)
    wait_until(lambda: btrfs.scrub_status(run, mnt).state == "finished", 60, "the scrub to finish")
    status = btrfs.scrub_status(run, mnt)
    assert status.corrected_errors > 0 and status.uncorrectable_errors == 0
    stats = {s.devid: s for s in btrfs.device_stats(run, mnt)}
    assert (stats[1].errors, stats[2].corruption_errs > 0) == (0, True)


def test_scrub_started_twice_is_busy_and_cancel_says_whether_anything_ran(lab):
    devices = lab.devices(1, 300)
    uuid = lab.mkfs(devices, "single", "dup")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    write(f"{mnt}/data", 64)
    Path(f"/sys/fs/btrfs/{uuid}/devinfo/1/scrub_speed_max").write_text(str(4 * MIB))  # keep it running
    btrfs.scrub_start(run, mnt)
    assert btrfs.scrub_status(run, mnt).state == "running"
    with pytest.raises(Busy):
        btrfs.scrub_start(run, mnt)
    assert btrfs.scrub_cancel(run, mnt) is True
    wait_until(lambda: btrfs.scrub_status(run, mnt).state == "aborted", 30, "the scrub to stop")
    assert (btrfs.scrub_cancel(run, mnt), btrfs.balance_cancel(run, mnt),
            btrfs.replace_cancel(run, mnt)) == (False, False, False)
    assert btrfs.balance_status(run, mnt) == btrfs.BalanceStatus(False, False, None, None, None)


def test_subvolumes_snapshots_and_the_readonly_flag(lab):
    devices = lab.devices(1, 300)
    lab.mkfs(devices, "single", "dup")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    btrfs.subvolume_create(run, f"{mnt}/share")
    write(f"{mnt}/share/file", 1)
    btrfs.snapshot(run, f"{mnt}/share", f"{mnt}/share@monday")
    btrfs.snapshot(run, f"{mnt}/share", f"{mnt}/share-copy", readonly=False)

    listed = {s.path: s for s in btrfs.subvolume_list(run, mnt)}
    assert {p: s.readonly for p, s in listed.items()} == {
        "share": False, "share@monday": True, "share-copy": False}
    assert listed["share@monday"].parent_uuid == listed["share-copy"].parent_uuid == listed["share"].uuid
    with pytest.raises(OSError) as caught:
        write(f"{mnt}/share@monday/new", 1)
    assert caught.value.errno == errno.EROFS

    btrfs.set_readonly(run, f"{mnt}/share@monday", False)
    btrfs.set_readonly(run, f"{mnt}/share", True)
    write(f"{mnt}/share@monday/new", 1)
    btrfs.subvolume_delete(run, f"{mnt}/share-copy")
    assert {s.path: s.readonly for s in btrfs.subvolume_list(run, mnt)} == {
        "share": True, "share@monday": False}


def test_subvolumes_and_snapshots_made_by_ioctl_are_what_btrfs_progs_sees(lab):
    devices = lab.devices(1, 300)
    lab.mkfs(devices, "single", "dup")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    btrfs.quota_enable(run, mnt)
    btrfs_ioctl.subvolume_create(f"{mnt}/vm")
    write(f"{mnt}/vm/disk0.raw", 2)
    btrfs_ioctl.snapshot(f"{mnt}/vm", f"{mnt}/vm@before")
    btrfs_ioctl.snapshot(f"{mnt}/vm", f"{mnt}/vm-copy", readonly=False)
    listed = {s.path: s for s in btrfs.subvolume_list(run, mnt)}
    assert {p: s.readonly for p, s in listed.items()} == {"vm": False, "vm@before": True, "vm-copy": False}
    assert listed["vm@before"].parent_uuid == listed["vm-copy"].parent_uuid == listed["vm"].uuid
    assert Path(f"{mnt}/vm@before/disk0.raw").read_bytes() == Path(f"{mnt}/vm/disk0.raw").read_bytes()
    with pytest.raises(OSError) as caught:
        write(f"{mnt}/vm@before/new", 1)
    assert caught.value.errno == errno.EROFS
    # The kernel made each one's level-0 qgroup, as for btrfs-progs: the space figures see them.
    btrfs.filesystem_sync(run, mnt)
    groups = {q.qgroupid for q in btrfs.qgroup_show(run, mnt)}
    assert {f"0/{listed[p].id}" for p in ("vm", "vm@before", "vm-copy")} <= groups
    with pytest.raises(Conflict, match="exists already"):
        btrfs_ioctl.snapshot(f"{mnt}/vm", f"{mnt}/vm@before")
    with pytest.raises(Conflict, match="exists already"):
        btrfs_ioctl.subvolume_create(f"{mnt}/vm")
    with pytest.raises(CairnError, match="cannot open subvolume"):
        btrfs_ioctl.snapshot(f"{mnt}/nothing", f"{mnt}/x")


def test_quota_limit_refuses_writes_and_snapshots_share_their_data(lab):
    devices = lab.devices(1, 400)
    lab.mkfs(devices, "single", "dup")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    btrfs.quota_enable(run, mnt)
    btrfs.subvolume_create(run, f"{mnt}/capped")
    btrfs.qgroup_limit(run, f"{mnt}/capped", 32 * MIB)
    with pytest.raises(OSError) as caught:
        write(f"{mnt}/capped/big", 48)
    assert caught.value.errno == errno.EDQUOT

    btrfs.subvolume_create(run, f"{mnt}/data")
    write(f"{mnt}/data/file", 24)
    btrfs.snapshot(run, f"{mnt}/data", f"{mnt}/data@snap")
    btrfs.qgroup_limit(run, f"{mnt}/capped", None)
    ids = {s.path: f"0/{s.id}" for s in btrfs.subvolume_list(run, mnt)}

    def accounted() -> dict[str, btrfs.Qgroup] | None:
        os.sync()      # qgroups are brought up to date when a transaction commits
        groups = {g.qgroupid: g for g in btrfs.qgroup_show(run, mnt)}
        return groups if groups[ids["data@snap"]].referenced >= 24 * MIB else None
    groups = wait_until(accounted, 30, "the snapshot's qgroup to be accounted")
    for path in ("data", "data@snap"):       # both reference the 24 MiB, neither owns it alone
        assert groups[ids[path]].referenced >= 24 * MIB
        assert groups[ids[path]].exclusive < 1 * MIB
    assert groups[ids["capped"]].max_referenced is None


@pytest.mark.parametrize("compression", ["zstd:3", "lzo"])
def test_compression_mount_option_is_in_proc_mounts(lab, compression):
    devices = lab.devices(1, 300)
    lab.mkfs(devices, "single", "dup")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt, compression)
    with open("/proc/self/mounts") as mounts:
        options = next(line.split()[3] for line in mounts if line.split()[1] == mnt)
    assert f"compress={compression}" in options.split(",")


def blkid_type(device: str) -> str:
    result = run.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], check=False)
    return result.stdout.strip()


def test_wipe_leaves_no_filesystem_for_blkid(lab):
    devices = lab.devices(2, 300)
    lab.mkfs(devices, "raid1", "raid1")
    assert [blkid_type(d) for d in devices] == ["btrfs", "btrfs"]
    for device in devices:
        btrfs.wipe(run, device)
    assert [blkid_type(d) for d in devices] == ["", ""]
    with pytest.raises(NotFound):
        btrfs.show(run, devices[0])


def test_raid1_mounted_degraded_shows_the_missing_device(lab):
    devices = lab.devices(2, 300)
    lab.mkfs(devices, "raid1", "raid1")
    mnt = lab.mountpoint()
    btrfs.mount(run, devices[0], mnt)
    write(f"{mnt}/data", 8)
    btrfs.umount(run, mnt)
    lab.detach(devices[1])
    btrfs.mount(run, devices[0], mnt, degraded=True)
    filesystem = btrfs.show(run, mnt)
    assert (filesystem.missing_devices, [(d.devid, d.path) for d in filesystem.devices]) == \
        (True, [(1, devices[0]), (2, None)])
    missing = btrfs.usage(run, mnt).devices[1]
    assert (missing.missing, missing.size, missing.allocated > 0) == (True, 0, True)
