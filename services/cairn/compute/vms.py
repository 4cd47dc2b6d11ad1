"""The VM backend of a node: a VM's subvolume and disks on its pool, its libvirt domain, clones,
snapshots and restores. Called by the VM jobs (compute/jobs.py) on the VM's node, one job per VM
at a time (lock vm:<name>).

Who writes what: the API writes a new VM's record and claims its MACs (compute/service.py); the
jobs here write the records of clones and restored VMs (with their MAC claims) in one transaction
once their files are in place, and delete records when a VM is deleted or its creation failed.
Only this node's agent writes vm-status/<name>.

Clones and restores are reflink copies (FICLONE: the new file shares every extent with the source,
so the copy costs metadata only, whatever the disk's size) into a new subvolume; the new VM gets a
new UUID, new MACs and a new NVRAM copy, and nothing of it exists until it is complete: a failed or
aborted clone removes the subvolumes it made and writes no record. Subvolumes and snapshots on the
hot paths (create, clone, snapshot, revert) are made by ioctl (storage/btrfs_ioctl.py): starting
btrfs-progs took most of a snapshot's time.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable

from cairn.cluster.store import Delete, Put, Store, absent
from cairn.compute import cloudinit, domain, images, model
from cairn.compute.hypervisor import Hypervisor
from cairn.errors import CairnError, Conflict, ExecutionError, NotFound, PreconditionFailed, ValidationError
from cairn.storage import btrfs, btrfs_ioctl
from cairn.storage.pools import get_pool

log = logging.getLogger(__name__)

VMS = "vms/"
VM_STATUS = "vm-status/"
MACS = "vm-macs/"
FICLONE = 0x40049409            # _IOW(0x94, 9, int): reflink a whole file (linux/fs.h)
RECORD_FILE = "vm.json"
RUNNING = {"running", "paused", "blocked", "pmsuspended"}


def reflink(source: str, dest: str) -> None:
    """Copy `source` to `dest` sharing all extents (btrfs, XFS): metadata only, O(extents)."""
    with open(source, "rb") as src, open(dest, "wb") as dst:
        fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
    os.chmod(dest, os.stat(source).st_mode & 0o777)


def inspect_image(runner, path: str) -> images.ImageInfo:
    """What the image file at `path` is (qemu-img info + a look at its bytes); ValidationError
    naming the problem when it is missing or not a disk image Cairn imports."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            handle.seek(images.ISO_MAGIC_OFFSET)
            probe = handle.read(len(images.ISO_MAGIC))
    except FileNotFoundError:
        raise ValidationError({"import": f"{path} does not exist on this node"}) from None
    except IsADirectoryError:
        raise ValidationError({"import": f"{path} is a directory, not a disk image"}) from None
    result = runner.run(images.info_argv(path), check=False, timeout=120)
    if not result.ok:
        raise ValidationError({"import": f"{path} is not a disk image qemu-img can read: "
                                         f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}"})
    try:
        return images.check_image(result.stdout, size, probe, path)
    except ValueError as exc:
        raise ValidationError({"import": str(exc)}) from None


def get_vm(store: Store, name: str) -> model.Vm:
    data = store.get(VMS + name)
    if data is None:
        raise NotFound(f"no VM named {name!r}", vm=name)
    return model.Vm.from_dict(data)


def list_vms(store: Store) -> list[model.Vm]:
    return [model.Vm.from_dict(e.value) for e in store.list(VMS)]


class Compute:
    def __init__(self, runner, store: Store, node: str, pools_root: str, hypervisor: Hypervisor,
                 accel: str, log_dir: str = "/var/log/cairn/vms", clock: Callable[[], float] = time.time) -> None:
        self.runner = runner
        self.store = store
        self.node = node
        self.pools_root = pools_root
        self.hv = hypervisor
        self.accel = accel
        self.log_dir = log_dir
        self.clock = clock

    # --- paths -------------------------------------------------------------------------------
    def vm_dir(self, vm: model.Vm) -> str:
        return model.vm_dir(self.pools_root, vm.pool, vm.name)

    def disk_path(self, vm: model.Vm, disk: model.Disk) -> str:
        return model.disk_path(self.pools_root, vm.pool, vm.name, disk.name)

    def snapshot_path(self, vm: model.Vm, snapshot: str) -> str:
        return model.snapshot_path(self.pools_root, vm.pool, vm.name, snapshot)

    def serial_log(self, name: str) -> str:
        return f"{self.log_dir}/{name}.log"

    def xml(self, vm: model.Vm) -> str:
        return domain.domain_xml(vm, pools_root=self.pools_root, accel=self.accel,
                                 serial_log=self.serial_log(vm.name))

    def _require_here(self, vm: model.Vm) -> None:
        pool = get_pool(self.store, vm.pool)
        if pool.node != self.node:
            raise PreconditionFailed(f"pool {vm.pool} of VM {vm.name} is on node {pool.node}, not {self.node}")
        if not os.path.isdir(f"{self.pools_root.rstrip('/')}/{vm.pool}"):
            raise PreconditionFailed(f"pool {vm.pool} is not mounted on {self.node}")

    def _vms_parent(self, pool: str) -> str:
        parent = f"{self.pools_root.rstrip('/')}/{pool}/{model.VMS_DIR}"
        os.makedirs(parent, exist_ok=True)
        os.chmod(parent, 0o711)        # QEMU (user libvirt-qemu) passes through; nobody lists the VMs
        return parent

    def write_seed(self, vm: model.Vm, hostname: str) -> None:
        """The VM's cloud-init NoCloud seed (instance-id = its UUID), replacing any older one."""
        target = Path(self.vm_dir(vm))
        seed = target / cloudinit.SEED_FILE
        with tempfile.TemporaryDirectory(prefix="cairn-seed-") as tmp:
            meta, user = Path(tmp) / "meta-data", Path(tmp) / "user-data"
            meta.write_text(cloudinit.meta_data(vm.uuid, hostname))
            user.write_text(cloudinit.user_data(vm.cloud_init, hostname))
            os.chmod(user, 0o600)
            fresh = Path(tmp) / cloudinit.SEED_FILE
            for argv in cloudinit.seed_argvs(str(fresh), str(meta), str(user)):
                self.runner.run(argv, env={"MTOOLS_SKIP_CHECK": "1"})
            shutil.move(fresh, seed)

    def _write_record(self, vm: model.Vm) -> None:
        path = Path(self.vm_dir(vm)) / RECORD_FILE
        path.write_text(json.dumps(vm.to_dict(), indent=2, sort_keys=True) + "\n")

    # --- create / define / delete -----------------------------------------------------------------
    def create(self, vm: model.Vm, progress=lambda fraction, message: None) -> None:
        """Subvolume, sparse disks and the libvirt domain of a VM whose record the API wrote.
        On failure everything made here is removed, and so is the record (with its MAC claims)."""
        self._require_here(vm)
        self._vms_parent(vm.pool)
        target = self.vm_dir(vm)
        if os.path.lexists(target):
            raise Conflict(f"{target} exists already (the files of an earlier VM named {vm.name}?)")
        os.makedirs(self.log_dir, exist_ok=True)
        try:
            btrfs_ioctl.subvolume_create(target)
            disks = []
            for index, disk in enumerate(vm.disks):
                path = self.disk_path(vm, disk)
                if disk.imported_from:
                    info = inspect_image(self.runner, disk.imported_from)
                    try:
                        size = images.disk_size(info, disk.size)
                    except ValueError as exc:
                        raise ValidationError({f"disks[{index}].size": str(exc)}) from None
                    progress(index / (len(vm.disks) + 1), f"disk {disk.name}: converting {disk.imported_from} "
                             f"({info.format}, {info.virtual_size >> 20} MiB) to a thin raw disk")
                    self.runner.run(images.convert_argv(disk.imported_from, info.format, path), timeout=6 * 3600)
                    disk = replace(disk, size=size)
                with open(path, "ab") as handle:
                    if os.fstat(handle.fileno()).st_size < disk.size:
                        os.ftruncate(handle.fileno(), disk.size)      # sparse: no block allocated yet
                disks.append(disk)
                progress((index + 1) / (len(vm.disks) + 1), f"disk {disk.name} ({disk.size >> 20} MiB, thin)")
            if tuple(disks) != vm.disks:
                # Imported disks' sizes are known now: only they change, on the current record.
                sizes = {disk.name: disk.size for disk in disks}
                entry = self.store.update(VMS + vm.name, lambda record: {
                    **record, "disks": [{**d, "size": sizes.get(d["name"], d["size"])} for d in record["disks"]]})
                vm = model.Vm.from_dict(entry.value)
            if vm.cloud_init:
                self.write_seed(vm, cloudinit.hostname_for(vm.cloud_init, vm.name))
            self._write_record(vm)
            self.hv.define(self.xml(vm))
            self.hv.set_autostart(vm.name, vm.autostart)
        except BaseException as exc:
            self._undo(vm, target)
            self.forget(vm)
            if isinstance(exc, CairnError):
                raise ExecutionError(f"creating VM {vm.name} failed and was undone: {exc.message}") from None
            raise

    def _undo(self, vm: model.Vm, target: str) -> None:
        try:
            self.hv.undefine(vm.name)
        except CairnError as exc:
            log.warning("undo %s: %s", vm.name, exc.message)
        if os.path.lexists(target):
            btrfs.subvolume_delete(self.runner, target)

    def forget(self, vm: model.Vm) -> None:
        """Delete the VM's record, status and MAC claims (one transaction)."""
        self.store.txn([], [Delete(VMS + vm.name), Delete(VM_STATUS + vm.name)]
                       + [Delete(MACS + nic.mac) for nic in vm.nics])

    def redefine(self, vm: model.Vm) -> None:
        """Make libvirt's definition match the record (after an edit; the VM is stopped)."""
        self._write_record(vm)
        self.hv.define(self.xml(vm))
        self.hv.set_autostart(vm.name, vm.autostart)

    def delete(self, vm: model.Vm, keep_disks: bool, force: bool) -> str | None:
        """Undefine the VM and delete its subvolume and snapshots, or move its subvolume aside
        (returns where) when the disks are kept."""
        self._require_here(vm)
        if self.hv.exists(vm.name) and self.hv.state(vm.name) in RUNNING:
            if not force:
                raise Conflict(f"VM {vm.name} is running: shut it down first, or force the deletion")
            self.hv.poweroff(vm.name)
        self.hv.undefine(vm.name)
        target = self.vm_dir(vm)
        kept = None
        if os.path.lexists(target):
            if keep_disks:
                kept_dir = f"{self.pools_root.rstrip('/')}/{vm.pool}/{model.VMS_DIR}/.kept"
                os.makedirs(kept_dir, mode=0o700, exist_ok=True)
                kept = f"{kept_dir}/{vm.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(self.clock()))}"
                os.rename(target, kept)
            else:
                btrfs.subvolume_delete(self.runner, target)
        for snap in self.snapshot_names(vm):
            btrfs.subvolume_delete(self.runner, self.snapshot_path(vm, snap))
        self.forget(vm)
        return kept

    # --- lifecycle -----------------------------------------------------------------------------
    def state(self, vm: model.Vm) -> str:
        return self.hv.state(vm.name) if self.hv.exists(vm.name) else "undefined"

    def start(self, vm: model.Vm) -> None:
        if self.state(vm) == "running":
            return
        self.hv.start(vm.name)

    def stop(self, vm: model.Vm, timeout: float, force_after: bool, should_stop=lambda: False) -> str:
        """ACPI shutdown, waiting up to `timeout`; then power off if `force_after`."""
        if self.state(vm) not in RUNNING:
            return "shutoff"
        self.hv.shutdown(vm.name)
        state = self.hv.wait_state(vm.name, {"shutoff"}, timeout, should_stop)
        if state != "shutoff":
            if not force_after:
                raise ExecutionError(f"VM {vm.name} did not shut down within {timeout:g} s "
                                     "(the guest ignored the power button); power it off instead")
            self.hv.poweroff(vm.name)
            state = "shutoff"
        return state

    # --- snapshots -----------------------------------------------------------------------------
    def snapshot_names(self, vm: model.Vm) -> list[str]:
        try:
            return sorted(os.listdir(model.snapshots_dir(self.pools_root, vm.pool, vm.name)))
        except FileNotFoundError:
            return []

    def snapshot(self, vm: model.Vm, name: str) -> dict:
        """A read-only snapshot of the VM's subvolume (disks, NVRAM, vm.json): quiesced through
        the guest agent when one answers, crash-consistent otherwise."""
        self._require_here(vm)
        target = self.snapshot_path(vm, name)
        if os.path.lexists(target):
            raise Conflict(f"VM {vm.name} has a snapshot named {name!r} already")
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        running = self.state(vm) in RUNNING
        frozen = running and self.hv.freeze(vm.name)
        try:
            btrfs_ioctl.snapshot(self.vm_dir(vm), target, readonly=True)
        finally:
            if frozen:
                self.hv.thaw(vm.name)
        return {"name": name, "quiesced": frozen, "running": running}

    def delete_snapshot(self, vm: model.Vm, name: str) -> None:
        target = self.snapshot_path(vm, name)
        if not os.path.lexists(target):
            raise NotFound(f"VM {vm.name} has no snapshot named {name!r}")
        btrfs.subvolume_delete(self.runner, target)

    def revert(self, vm: model.Vm, name: str) -> None:
        """Put the VM's disks back as they were in the snapshot (the VM must be stopped)."""
        source = self.snapshot_path(vm, name)
        if not os.path.lexists(source):
            raise NotFound(f"VM {vm.name} has no snapshot named {name!r}")
        if self.state(vm) in RUNNING:
            raise Conflict(f"VM {vm.name} is running: shut it down before reverting it")
        current = self.vm_dir(vm)
        aside = f"{current}.reverting"
        if os.path.lexists(aside):
            btrfs.subvolume_delete(self.runner, aside)
        os.rename(current, aside)
        try:
            btrfs_ioctl.snapshot(source, current, readonly=False)
        except BaseException:
            os.rename(aside, current)
            raise
        btrfs.subvolume_delete(self.runner, aside)
        self.redefine(vm)          # the record stays the current one; disks come from the snapshot

    # --- clones and restores -------------------------------------------------------------------
    def copy_as(self, source: model.Vm, source_dir: str, names: list[str], origin_key: str,
                origin_value: str, random_bytes=os.urandom, should_stop=lambda: False,
                progress=lambda fraction, message: None) -> list[model.Vm]:
        """New VMs `names`, each a reflink copy of the files in `source_dir` (the VM's subvolume or
        one of its snapshots) with a new identity; records and MAC claims written in one
        transaction at the end. All or nothing."""
        self._require_here(source)
        self._vms_parent(source.pool)
        taken_macs = {e.key[len(MACS):] for e in self.store.list(MACS)}
        made: list[str] = []
        vms: list[model.Vm] = []
        try:
            for index, name in enumerate(names):
                if should_stop():
                    raise ExecutionError("aborted; the clones made so far were removed")
                macs = []
                for _ in source.nics:
                    mac = model.new_mac(random_bytes, taken_macs)
                    taken_macs.add(mac)
                    macs.append(mac)
                vm = model.cloned(source, name, new_uuid=lambda: str(uuid.uuid4()), macs=macs,
                                  now=self.clock(), origin={origin_key: origin_value})
                target = self.vm_dir(vm)
                if os.path.lexists(target):
                    raise Conflict(f"{target} exists already")
                btrfs_ioctl.subvolume_create(target)
                made.append(target)
                for disk in source.disks:
                    reflink(f"{source_dir}/{disk.name}.raw", self.disk_path(vm, disk))
                nvram = f"{source_dir}/{domain.NVRAM_FILE}"
                if os.path.exists(nvram):
                    reflink(nvram, f"{target}/{domain.NVRAM_FILE}")
                if vm.cloud_init:            # a new instance-id: cloud-init runs again and names the copy
                    self.write_seed(vm, cloudinit.hostname_for(vm.cloud_init, vm.name, source.name))
                self._write_record(vm)
                vms.append(vm)
                progress((index + 1) / len(names), f"{name}: disks copied (reflink)")
            compares = [absent(VMS + vm.name) for vm in vms] + \
                [absent(MACS + nic.mac) for vm in vms for nic in vm.nics]
            puts = [Put(VMS + vm.name, vm.to_dict()) for vm in vms] + \
                [Put(MACS + nic.mac, {"vm": vm.name}) for vm in vms for nic in vm.nics]
            if not self.store.txn(compares, puts):
                raise Conflict("a VM name or MAC address was taken meanwhile; nothing was made")
            try:
                for vm in vms:
                    self.hv.define(self.xml(vm))
            except BaseException:
                for vm in vms:
                    self.hv.undefine(vm.name)
                    self.forget(vm)
                raise
            return vms
        except BaseException:
            for target in made:
                if os.path.lexists(target):
                    btrfs.subvolume_delete(self.runner, target)
            raise

    def clone(self, source: model.Vm, names: list[str], **kwargs) -> list[model.Vm]:
        if self.state(source) in RUNNING:
            raise Conflict(f"VM {source.name} is running: a running VM is cloned from one of its "
                           "snapshots (take a snapshot, then restore it as new VMs), or shut it down first")
        return self.copy_as(source, self.vm_dir(source), names, "clone_of", source.name, **kwargs)

    def restore_as_new(self, source: model.Vm, snapshot: str, name: str, **kwargs) -> model.Vm:
        path = self.snapshot_path(source, snapshot)
        if not os.path.lexists(path):
            raise NotFound(f"VM {source.name} has no snapshot named {snapshot!r}")
        # The snapshot's own record says what hardware the disks had then.
        recorded = Path(path) / RECORD_FILE
        base = model.Vm.from_dict(json.loads(recorded.read_text())) if recorded.exists() else source
        base = replace(base, node=source.node, pool=source.pool)
        return self.copy_as(base, path, [name], "restored_from", f"{source.name}@{snapshot}", **kwargs)[0]

    # --- status --------------------------------------------------------------------------------
    def observe(self) -> dict[str, dict]:
        """Publish vm-status/<name> for this node's VMs (state, accelerator, snapshots, VNC port),
        written only when it changed. Returns the statuses by VM name."""
        return {vm.name: self.publish_status(vm) for vm in list_vms(self.store) if vm.node == self.node}

    def publish_status(self, vm: model.Vm) -> dict:
        """What this node sees of one VM, written to vm-status/<name> when it changed. Lifecycle
        jobs call it before they end, so a client that saw the job done sees the new state too."""
        state = self.state(vm)
        vnc = None
        if state in RUNNING:
            try:
                vnc = domain.parse_vnc_port(self.hv.xml(vm.name))
            except (CairnError, ValueError):
                vnc = None
        status = {"node": self.node, "state": state, "accel": self.accel, "vnc_port": vnc,
                  "snapshots": self.snapshot_names(vm),
                  "files": os.path.isdir(self.vm_dir(vm))}
        self.store.put_if_changed(VM_STATUS + vm.name, status)
        return status
