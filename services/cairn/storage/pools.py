"""Pools, volumes and snapshots on this node: the side-effecting half (btrfs through the runner,
records through the store). Decisions live in model.py; job handlers in jobs.py call these.

`Storage` is built per job (or per agent loop) with the runner, the store, the node name and the
node's [storage] settings. Every operation first checks its preconditions read-only and raises
before changing anything; where an operation fails half-way it reverts what it can and says what
is left (ExecutionError with `done`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cairn.cluster.store import Store
from cairn.config import StorageConfig
from cairn.errors import CairnError, Conflict, ExecutionError, NotFound, PreconditionFailed
from cairn.storage import btrfs, disks, model

POOLS = "pools/"
POOL_STATUS = "pool-status/"
VOLUMES = "volumes/"
VMS_SUBDIR = "vms"                 # <pool>/vms/<vm>: VM subvolumes (cairn.compute.model.VMS_DIR)


def parse_mounts(text: str) -> dict[str, tuple[str, str, str]]:
    """/proc/self/mounts → {mountpoint: (source, fstype, options)} (octal escapes decoded)."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            point = parts[1].encode().decode("unicode_escape")
            found[point] = (parts[0], parts[2], parts[3])
    return found


def mounts() -> dict[str, tuple[str, str, str]]:
    return parse_mounts(Path("/proc/self/mounts").read_text())


# --- records ----------------------------------------------------------------------------------
def get_pool(store: Store, name: str) -> model.Pool:
    data = store.get(POOLS + name)
    if data is None:
        raise NotFound(f"no pool named {name!r}", pool=name)
    return model.Pool.from_dict(data)


def list_pools(store: Store) -> list[model.Pool]:
    return [model.Pool.from_dict(e.value) for e in store.list(POOLS)]


def get_volume(store: Store, pool: str, name: str) -> model.Volume:
    data = store.get(f"{VOLUMES}{pool}/{name}")
    if data is None:
        raise NotFound(f"no volume {name!r} in pool {pool!r}", pool=pool, volume=name)
    return model.Volume.from_dict(data)


def list_volumes(store: Store, pool: str) -> list[model.Volume]:
    return [model.Volume.from_dict(e.value) for e in store.list(f"{VOLUMES}{pool}/")]


def shares_using(store: Store, pool: str, volume: str) -> list[str]:
    """What uses a volume: its shares by name, then "iSCSI target <name>" for each target whose
    LUN files live in it (records at shares/ and iscsi-targets/, see cairn.shares), then "image
    <file>" for uploaded images when it is the pool's images volume (records at images/<pool>/)."""
    def on_volume(prefix: str) -> list[str]:
        return sorted(e.value["name"] for e in store.list(prefix)
                      if e.value.get("pool") == pool and e.value.get("volume") == volume)
    images = sorted(e.value.get("name", e.key.rsplit("/", 1)[-1]) for e in store.list(f"images/{pool}/")) \
        if volume == "images" else []
    return (on_volume("shares/") + [f"iSCSI target {name}" for name in on_volume("iscsi-targets/")]
            + [f"image {name}" for name in images])


def pools_by_uuid(store: Store) -> dict[str, str]:
    return {p.uuid: p.name for p in list_pools(store) if p.uuid}


class Storage:
    def __init__(self, runner, store: Store, node: str, settings: StorageConfig | None = None,
                 clock=time.time) -> None:
        self.runner = runner
        self.store = store
        self.node = node
        self.settings = settings or StorageConfig()
        self.clock = clock

    # --- paths and disks --------------------------------------------------------------------
    def path(self, pool: str) -> str:
        return model.pool_path(self.settings.pools_root, pool)

    def volume_path(self, pool: str, volume: str) -> str:
        return f"{self.path(pool)}/{volume}"

    def snapshot_path(self, pool: str, volume: str, snapshot: str) -> str:
        return f"{model.snapshot_dir(self.settings.pools_root, pool, volume)}/{snapshot}"

    def inventory(self) -> list[disks.Disk]:
        return disks.scan(self.runner, pools_by_uuid(self.store), self.settings.include_loop)

    def free_disks(self, disk_ids: list[str]) -> list[disks.Disk]:
        """The named disks, each present on this node and free; else PreconditionFailed naming it."""
        found = self.inventory()
        chosen = []
        for disk_id in disk_ids:
            disk = disks.find(found, disk_id, self.node)
            if disk.usage.kind != "free":
                raise PreconditionFailed(f"disk {disk_id} ({disk.path}) is not free: {disk.usage.kind}, "
                                         f"{disk.usage.detail}", disk=disk_id, usage=disk.usage.kind)
            chosen.append(disk)
        return chosen

    def owned_pool(self, name: str) -> model.Pool:
        pool = get_pool(self.store, name)
        if pool.node != self.node:
            raise PreconditionFailed(f"pool {name} lives on node {pool.node}, not {self.node}")
        return pool

    def mounted(self, pool: str) -> bool:
        entry = mounts().get(self.path(pool))
        return entry is not None and entry[1] == "btrfs"

    # --- pools ------------------------------------------------------------------------------
    def array_device(self, name: str) -> tuple[str, tuple[str, ...]]:
        """(device path, member disk ids) of an md array of this node that no pool uses yet."""
        # imported here: arrays.py builds on Storage (this module), so a module-level import would cycle
        from cairn.storage.arrays import get_array, locate
        array = get_array(self.store, name)
        if array.node != self.node:
            raise PreconditionFailed(f"array {name} lives on node {array.node}, not {self.node}")
        users = [p.name for p in list_pools(self.store) if p.array == name]
        if users:
            raise PreconditionFailed(f"array {name} already holds pool {users[0]}")
        path = locate(array)
        if path is None:
            raise PreconditionFailed(f"array {name} is not assembled on {self.node}")
        probed = disks.parse_blkid_export(self.runner.run(disks.BLKID_ARGV, timeout=20, check=False).stdout)
        if probed.get(path, {}).get("TYPE"):
            raise PreconditionFailed(f"array {name} ({path}) holds a {probed[path]['TYPE']} signature: not free")
        return path, array.disks

    def create_pool(self, pool: model.Pool, progress=lambda pct, text: None) -> model.Pool:
        if pool.array:
            device, members = self.array_device(pool.array)
            chosen = [disks.Disk(id=pool.array, name=os.path.basename(device), path=device, size=0, model=None,
                                 serial=None, bus="md", media="md", usage=disks.Usage("free", "md array"))]
            member_ids = members
        else:
            chosen = self.free_disks(list(pool.disks))
            member_ids = tuple(d.id for d in chosen)
        pool = model.Pool(**{**pool.to_dict(), "disks": member_ids, "state": "creating",
                             "created_at": self.clock(), "node": self.node})
        if not self.store.create(POOLS + pool.name, pool.to_dict()):
            raise Conflict(f"a pool named {pool.name!r} already exists", pool=pool.name)
        done: list[str] = []
        try:
            progress(20, "making the btrfs filesystem")
            uuid = btrfs.mkfs(self.runner, [d.path for d in chosen], pool.data_profile,
                              pool.metadata_profile, f"cairn-{pool.name}")
            done.append(f"btrfs made on {', '.join(d.id for d in chosen)}")
            pool = self.update_pool(pool.name, lambda record: {**record, "uuid": uuid})
            progress(60, "mounting")
            self.mount(pool)
            done.append(f"mounted at {self.path(pool.name)}")
            progress(75, "enabling quotas")
            btrfs.quota_enable(self.runner, self.path(pool.name))
            os.makedirs(f"{self.path(pool.name)}/{model.SNAPSHOT_DIR}", exist_ok=True)
        except CairnError as error:
            self._revert_create(pool, chosen)
            raise ExecutionError(f"creating pool {pool.name} failed and was undone: {error.message}",
                                 done=done) from error
        pool = self.update_pool(pool.name, lambda record: {**record, "state": "online"})
        progress(90, "reading status")
        self.publish_status(pool)
        return pool

    def _revert_create(self, pool: model.Pool, chosen: list[disks.Disk]) -> None:
        if self.mounted(pool.name):
            btrfs.umount(self.runner, self.path(pool.name))
        for disk in chosen:
            try:
                btrfs.wipe(self.runner, disk.path)
            except CairnError:
                pass
        self.store.delete(POOLS + pool.name)

    def mount(self, pool: model.Pool) -> bool:
        """Mount the pool at its path if it is not mounted; True if this call mounted it."""
        if self.mounted(pool.name):
            return False
        target = self.path(pool.name)
        os.makedirs(target, exist_ok=True)
        self.runner.run(["btrfs", "device", "scan"], timeout=60, check=False)   # no udev on some hosts
        probed = disks.parse_blkid_export(self.runner.run(disks.BLKID_ARGV, timeout=20, check=False).stdout)
        members = sorted(path for path, info in probed.items() if info.get("TYPE") == "btrfs"
                         and info.get("UUID") == pool.uuid)
        if not members:
            raise PreconditionFailed(f"no device of pool {pool.name} (btrfs {pool.uuid}) is present on {self.node}")
        btrfs.mount(self.runner, members[0], target, None if pool.compression == "none" else pool.compression)
        return True

    def destroy_pool(self, name: str, progress=lambda pct, text: None) -> None:
        pool = self.owned_pool(name)
        if pool.array:        # wipe the array's btrfs, never its members' md superblocks
            from cairn.storage.arrays import get_array, locate
            found_path = locate(get_array(self.store, pool.array))
            devices = [found_path] if found_path else []
        else:
            found = {d.id: d for d in self.inventory()}
            devices = [found[d].path for d in pool.disks if d in found]
        pool = self.update_pool(name, lambda record: {**record, "state": "destroying"})
        progress(30, "unmounting")
        if self.mounted(name):
            btrfs.umount(self.runner, self.path(name))
        progress(60, "wiping signatures")
        for device in devices:
            btrfs.wipe(self.runner, device)
        try:
            os.rmdir(self.path(name))
        except OSError:
            pass
        for leftover in (f"/var/lib/btrfs/scrub.status.{pool.uuid}", f"/var/lib/btrfs/scrub.progress.{pool.uuid}"):
            try:
                os.unlink(leftover)      # btrfs-progs' scrub records of the filesystem just wiped
            except OSError:
                pass
        self.store.delete_prefix(f"{VOLUMES}{name}/")
        self.store.delete(POOL_STATUS + name)
        self.store.delete(POOLS + name)

    def expand_pool(self, name: str, disk_ids: list[str], balance: bool, ctx=None) -> model.Pool:
        pool = self.owned_pool(name)
        self.require_mounted(pool)
        if pool.array:
            raise PreconditionFailed(f"pool {name} sits on md array {pool.array}: grow the array instead")
        chosen = self.free_disks(disk_ids)
        for disk in chosen:
            btrfs.device_add(self.runner, self.path(name), disk.path)
            pool = self.update_pool(name, lambda record, added=disk.id: {
                **record, "disks": [*record["disks"], added]})
            report(ctx, 10, f"added {disk.id}")
        if balance:
            self.run_balance(pool, ctx, start=20)
        self.publish_status(pool)
        return pool

    def replace_disk(self, name: str, old: str, new: str, ctx=None) -> model.Pool:
        """Replace a pool device (`old`: a disk id, or devid:<n> for a missing device) by a free disk."""
        pool = self.owned_pool(name)
        self.require_mounted(pool)
        if pool.array:
            raise PreconditionFailed(f"pool {name} sits on md array {pool.array}: replace the disk in the array")
        (target,) = self.free_disks([new])
        fs = btrfs.show(self.runner, self.path(name))
        found = {d.path: d for d in self.inventory()}
        source: int | None = None
        if old.startswith("devid:") and old[6:].isdigit():
            source = int(old[6:])
            if source not in {d.devid for d in fs.devices}:
                raise NotFound(f"pool {name} has no device with devid {source}", pool=name)
        else:
            for device in fs.devices:
                disk = found.get(device.path or "")
                if disk and (disk.id == old or disk.serial == old):
                    source = device.devid
            if source is None:
                raise NotFound(f"disk {old!r} is not a device of pool {name}", pool=name, disk=old)
        btrfs.replace_start(self.runner, self.path(name), source, target.path)
        report(ctx, 5, f"replacing devid {source} by {target.id}")
        while True:
            status = btrfs.replace_status(self.runner, self.path(name))
            if status.state != "running":
                break
            report(ctx, max(5, int(status.percent or 0)), f"copying to {target.id}: {status.percent or 0:.1f} %")
            time.sleep(1)
        if status.state != "finished":
            raise ExecutionError(f"replacing a device of pool {name} ended {status.state}", done=[])
        fs_after = btrfs.show(self.runner, self.path(name))
        paths = {d.path for d in fs_after.devices}
        present = [d.id for d in self.inventory() if d.path in paths]
        pool = self.update_pool(name, lambda record: {**record, "disks": present})
        self.publish_status(pool)
        return pool

    def update_pool(self, name: str, change) -> model.Pool:
        """Change pools/<name> by compare-and-swap: `change` gets the current record (never a copy
        read before a long step), so a setting changed meanwhile (a schedule, say) is kept."""
        return model.Pool.from_dict(self.store.update(POOLS + name, change).value)

    def require_mounted(self, pool: model.Pool) -> None:
        if not self.mounted(pool.name):
            raise PreconditionFailed(f"pool {pool.name} is not mounted on {self.node}")

    def run_scrub(self, name: str, ctx=None) -> dict[str, Any]:
        pool = self.owned_pool(name)
        self.require_mounted(pool)
        path = self.path(name)
        if btrfs.scrub_status(self.runner, path).state == "running":
            raise PreconditionFailed(f"a scrub is already running on pool {name}")
        btrfs.scrub_start(self.runner, path)
        status = self._follow(lambda: btrfs.scrub_status(self.runner, path), lambda s: s.state == "running",
                              lambda s: (s.percent or 0, f"scrubbed {s.bytes_scrubbed >> 20} MiB"),
                              ctx, cancel=lambda: btrfs.scrub_cancel(self.runner, path))
        # btrfs-progs' background scrub process writes its final record a moment after the kernel
        # finishes; a short scrub read at once shows zeros. Re-read briefly until the figures land.
        deadline = time.monotonic() + 10
        while status.state == "finished" and status.bytes_scrubbed == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = btrfs.scrub_status(self.runner, path)
        self.publish_status(pool)
        return asdict(status)

    def run_balance(self, pool: model.Pool, ctx=None, start: int = 0) -> dict[str, Any]:
        path = self.path(pool.name)
        current = btrfs.balance_status(self.runner, path)
        if current.running or current.paused:
            raise PreconditionFailed(f"a balance is already {'paused' if current.paused else 'running'} "
                                     f"on pool {pool.name}")
        btrfs.balance_start(self.runner, path)

        def percent(status: btrfs.BalanceStatus) -> tuple[float, str]:
            left = status.percent_left if status.percent_left is not None else 100
            return start + (100 - start) * (100 - left) / 100, f"balancing: {100 - left:.0f} % done"

        status = self._follow(lambda: btrfs.balance_status(self.runner, path), lambda s: s.running and not s.paused,
                              percent, ctx, cancel=lambda: btrfs.balance_cancel(self.runner, path))
        if status.paused:
            raise ExecutionError(f"the balance of pool {pool.name} was paused (by someone else?); "
                                 f"resume it with `btrfs balance resume {path}` or cancel it", done=[])
        return asdict(status)

    def _follow(self, read, running, describe, ctx, cancel, interval: float = 1.0):
        """Poll a background btrfs operation until it ends; cancel it if the job is aborted."""
        while True:
            status = read()
            if not running(status):
                return status
            if ctx is not None:
                try:
                    ctx.check_abort()
                except Exception:
                    cancel()
                    raise
                percent, text = describe(status)
                ctx.progress(min(99, int(percent)), text)
            time.sleep(interval)

    # --- volumes ----------------------------------------------------------------------------
    def create_volume(self, volume: model.Volume) -> model.Volume:
        pool = self.owned_pool(volume.pool)
        self.require_mounted(pool)
        key = f"{VOLUMES}{volume.pool}/{volume.name}"
        path = self.volume_path(volume.pool, volume.name)
        if os.path.lexists(path):
            raise Conflict(f"{path} already exists", volume=volume.name)
        volume = model.Volume(**{**asdict(volume), "created_at": self.clock()})
        if not self.store.create(key, volume.to_dict()):
            raise Conflict(f"a volume named {volume.name!r} already exists in pool {volume.pool}")
        try:
            btrfs.subvolume_create(self.runner, path)
            if volume.quota_bytes:
                btrfs.qgroup_limit(self.runner, path, volume.quota_bytes)
        except CairnError as error:
            if os.path.lexists(path):
                btrfs.subvolume_delete(self.runner, path)
            self.store.delete(key)
            raise ExecutionError(f"creating volume {volume.name} failed and was undone: {error.message}",
                                 done=[]) from error
        self.publish_status(pool)
        return volume

    def set_quota(self, pool_name: str, name: str, quota: int | None) -> model.Volume:
        volume = get_volume(self.store, pool_name, name)
        self.require_mounted(self.owned_pool(pool_name))
        btrfs.qgroup_limit(self.runner, self.volume_path(pool_name, name), quota)
        entry = self.store.update(f"{VOLUMES}{pool_name}/{name}", lambda record: {**record, "quota_bytes": quota})
        return model.Volume.from_dict(entry.value)

    def delete_volume(self, pool_name: str, name: str) -> None:
        get_volume(self.store, pool_name, name)
        sharing = shares_using(self.store, pool_name, name)
        if sharing:
            raise Conflict(f"volume {name} is in use by {', '.join(sharing)}: delete those first",
                           shares=sharing)
        pool = self.owned_pool(pool_name)
        self.require_mounted(pool)
        for snap in self.snapshot_names(pool_name, name):
            btrfs.subvolume_delete(self.runner, self.snapshot_path(pool_name, name, snap))
        path = self.volume_path(pool_name, name)
        if os.path.lexists(path):
            btrfs.subvolume_delete(self.runner, path)
        self.store.delete(f"{VOLUMES}{pool_name}/{name}")
        self.publish_status(pool)

    # --- snapshots --------------------------------------------------------------------------
    def snapshot_names(self, pool: str, volume: str) -> list[str]:
        directory = model.snapshot_dir(self.settings.pools_root, pool, volume)
        try:
            return sorted(os.listdir(directory))
        except FileNotFoundError:
            return []

    def create_snapshot(self, pool_name: str, volume: str, name: str | None, auto: bool = False) -> str:
        get_volume(self.store, pool_name, volume)
        self.require_mounted(self.owned_pool(pool_name))
        name = model.snapshot_name(self.clock(), auto, name)
        target = self.snapshot_path(pool_name, volume, name)
        if os.path.lexists(target):
            raise Conflict(f"volume {volume} already has a snapshot named {name!r}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        btrfs.snapshot(self.runner, self.volume_path(pool_name, volume), target, readonly=True)
        return name

    def delete_snapshot(self, pool_name: str, volume: str, name: str) -> None:
        path = self.require_snapshot(pool_name, volume, name)
        btrfs.subvolume_delete(self.runner, path)

    def require_snapshot(self, pool_name: str, volume: str, name: str) -> str:
        get_volume(self.store, pool_name, volume)
        self.require_mounted(self.owned_pool(pool_name))
        path = self.snapshot_path(pool_name, volume, name)
        if name not in self.snapshot_names(pool_name, volume):
            raise NotFound(f"volume {volume} has no snapshot named {name!r}", snapshot=name)
        return path

    def rollback(self, pool_name: str, volume: str, name: str) -> None:
        """Make the volume what the snapshot holds. The current content is discarded (take a
        snapshot first to keep it). Steps: writable copy of the snapshot beside the volume, swap
        the two by rename (atomic), delete the old one, put the quota back on the new qgroup."""
        snap = self.require_snapshot(pool_name, volume, name)
        record = get_volume(self.store, pool_name, volume)
        live = self.volume_path(pool_name, volume)
        staged = f"{self.path(pool_name)}/.rollback-{volume}"
        retired = f"{self.path(pool_name)}/.retired-{volume}"
        for leftover in (staged, retired):
            if os.path.lexists(leftover):
                btrfs.subvolume_delete(self.runner, leftover)
        btrfs.snapshot(self.runner, snap, staged, readonly=False)
        os.rename(live, retired)
        os.rename(staged, live)
        btrfs.subvolume_delete(self.runner, retired)
        if record.quota_bytes:
            btrfs.qgroup_limit(self.runner, live, record.quota_bytes)

    def clone(self, pool_name: str, volume: str, name: str, new_volume: str) -> model.Volume:
        snap = self.require_snapshot(pool_name, volume, name)
        key = f"{VOLUMES}{pool_name}/{new_volume}"
        target = self.volume_path(pool_name, new_volume)
        if os.path.lexists(target):
            raise Conflict(f"{target} already exists")
        record = model.Volume(pool_name, new_volume, created_at=self.clock())
        if not self.store.create(key, record.to_dict()):
            raise Conflict(f"a volume named {new_volume!r} already exists in pool {pool_name}")
        try:
            btrfs.snapshot(self.runner, snap, target, readonly=False)
        except CairnError:
            self.store.delete(key)
            raise
        return record

    def run_schedules(self, now: float | None = None) -> list[str]:
        """Take due scheduled snapshots and prune by retention, for every volume of this node's
        mounted pools. Returns what it did, in words (the agent logs it)."""
        now = self.clock() if now is None else now
        did = []
        for pool in list_pools(self.store):
            if pool.node != self.node or pool.state != "online" or not self.mounted(pool.name):
                continue
            for volume in list_volumes(self.store, pool.name):
                if not volume.schedule:
                    continue
                decision = model.plan_schedule(volume.schedule, self.snapshot_names(pool.name, volume.name), now)
                if decision.take:
                    name = model.snapshot_name(now, auto=True)
                    target = self.snapshot_path(pool.name, volume.name, name)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    btrfs.snapshot(self.runner, self.volume_path(pool.name, volume.name), target, readonly=True)
                    did.append(f"snapshot {pool.name}/{volume.name}@{name}")
                for name in decision.delete:
                    btrfs.subvolume_delete(self.runner, self.snapshot_path(pool.name, volume.name, name))
                    did.append(f"pruned {pool.name}/{volume.name}@{name}")
        return did

    # --- observation ------------------------------------------------------------------------
    def observe(self, pool: model.Pool) -> dict[str, Any]:
        """What the pool looks like now (for pool-status/<pool>)."""
        status: dict[str, Any] = {"node": self.node, "path": self.path(pool.name),
                                  "mounted": self.mounted(pool.name)}
        if not status["mounted"]:
            status["health"] = "unmounted"
            return status
        path = self.path(pool.name)
        usage = btrfs.usage(self.runner, path)
        fs = btrfs.show(self.runner, path)
        by_path = {d.path: d.id for d in self.inventory()}
        stats = {s.path: s for s in btrfs.device_stats(self.runner, path)}
        devices = []
        for device in usage.devices:
            errors = stats.get(device.path or "")
            devices.append({**asdict(device), "disk": by_path.get(device.path or ""),
                            "errors": (errors.write_io_errs + errors.read_io_errs + errors.flush_io_errs
                                       + errors.corruption_errs + errors.generation_errs) if errors else 0})
        status["usage"] = asdict(usage)
        status["devices"] = devices
        status["health"] = "degraded" if fs.missing_devices or any(d["missing"] for d in devices) else (
            "errors" if any(d["errors"] for d in devices) else "online")
        status["scrub"] = asdict(btrfs.scrub_status(self.runner, path))
        status["balance"] = asdict(btrfs.balance_status(self.runner, path))
        # Space of each VM's subvolume too: referenced (all its data) and exclusive (what only it
        # holds: a fresh clone shares everything with its source, so its exclusive space is ~0).
        status["volumes"], status["vms"] = self._observe_volumes(pool)
        return status

    def _observe_volumes(self, pool: model.Pool) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        path = self.path(pool.name)
        subvolumes = {s.path: s for s in btrfs.subvolume_list(self.runner, path)}
        try:
            btrfs.filesystem_sync(self.runner, path)      # qgroup figures as of now, not the last commit
            qgroups = {q.qgroupid: q for q in btrfs.qgroup_show(self.runner, path)}
        except CairnError:
            qgroups = {}

        def space(rel: str) -> dict[str, Any]:
            sub = subvolumes.get(rel)
            group = qgroups.get(f"0/{sub.id}") if sub else None
            return {"referenced": group.referenced if group else None,
                    "exclusive": group.exclusive if group else None}

        volumes = []
        for volume in list_volumes(self.store, pool.name):
            snapshots = []
            for name in self.snapshot_names(pool.name, volume.name):
                rel = f"{model.SNAPSHOT_DIR}/{volume.name}/{name}"
                full = self.snapshot_path(pool.name, volume.name, name)
                created = model.auto_time(name)
                if created is None:
                    try:
                        created = os.stat(full).st_ctime
                    except OSError:
                        created = 0.0
                snapshots.append({"name": name, "created_at": created, "auto": name.startswith(model.AUTO_PREFIX),
                                  **space(rel)})
            snapshots.sort(key=lambda s: s["created_at"])
            volumes.append({"name": volume.name, "quota_bytes": volume.quota_bytes,
                            "present": volume.name in subvolumes, **space(volume.name),
                            "snapshots": snapshots})
        vms = {rel.split("/", 1)[1]: space(rel) for rel in subvolumes
               if rel.startswith(f"{VMS_SUBDIR}/") and rel.count("/") == 1}
        return volumes, vms

    def publish_status(self, pool: model.Pool) -> dict[str, Any]:
        """Observe the pool and write pool-status/<pool> when it changed since this process last
        wrote it (observed_at says when this picture was first seen)."""
        status = self.observe(pool)
        stamp = {"observed_at": self.clock()}
        self.store.put_if_changed(POOL_STATUS + pool.name, status, stamp=stamp)
        return {**status, **stamp}


def report(ctx, percent: int, text: str) -> None:
    if ctx is not None:
        ctx.progress(percent, text)
