"""md arrays on this node: the side-effecting half (mdadm through the runner, records in the store).

Store: `arrays/<name>` (the Array record: node, level, member disk ids, UUID; written by the raid
jobs on the owning node) and `array-status/<name>` (the last `mdadm --detail`, written only by the
owning node's agent). /etc/mdadm/mdadm.conf is generated from the records of this node.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from cairn.cluster import events
from cairn.cluster.store import Store
from cairn.errors import CairnError, Conflict, ExecutionError, NotFound, PreconditionFailed
from cairn.storage import disks, raid
from cairn.storage.pools import Storage, list_pools
from cairn.system.files import write_if_changed

ARRAYS = "arrays/"
ARRAY_STATUS = "array-status/"


@dataclass(frozen=True)
class Array:
    name: str
    node: str
    level: str
    disks: tuple[str, ...]          # member disk ids, in creation/replacement order
    uuid: str | None = None
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Array":
        data = dict(data)
        data["disks"] = tuple(data.get("disks") or ())
        return cls(**data)


def get_array(store: Store, name: str) -> Array:
    data = store.get(ARRAYS + name)
    if data is None:
        raise NotFound(f"no RAID array named {name!r}", array=name)
    return Array.from_dict(data)


def list_arrays(store: Store) -> list[Array]:
    return [Array.from_dict(e.value) for e in store.list(ARRAYS)]


def locate(array: Array) -> str | None:
    """The array's device now, found by its UUID (udev's md-uuid link): the name an array is
    assembled under at boot can differ from /dev/md/<name>. None when it is not assembled."""
    if array.uuid:
        link = f"/dev/disk/by-id/md-uuid-{array.uuid}"
        if os.path.exists(link):
            return os.path.realpath(link)
    named = raid.device(array.name)
    return os.path.realpath(named) if os.path.exists(named) else None


class Arrays:
    def __init__(self, storage: Storage, conf_path: str = raid.MDADM_CONF) -> None:
        self.storage = storage
        self.runner = storage.runner
        self.store = storage.store
        self.node = storage.node
        self.conf_path = conf_path

    def owned(self, name: str) -> Array:
        array = get_array(self.store, name)
        if array.node != self.node:
            raise PreconditionFailed(f"array {name} lives on node {array.node}, not {self.node}")
        return array

    def path(self, name: str) -> str:
        found = locate(get_array(self.store, name))
        if found is None:
            raise PreconditionFailed(f"array {name} is not assembled on {self.node} (are its disks there?)")
        return found

    def detail(self, name: str) -> raid.ArrayDetail:
        return raid.parse_detail(self.runner.run(raid.detail_argv(self.path(name)), timeout=30).stdout)

    def write_conf(self) -> bool:
        mine = [(a.name, a.uuid) for a in list_arrays(self.store) if a.node == self.node and a.uuid]
        return write_if_changed(self.conf_path, raid.mdadm_conf(mine))

    def publish(self, name: str) -> dict[str, Any]:
        """Observe the array, raise an event for each change for the worse (or recovery) since the
        last observation, and store the new one. Jobs and the agent's monitor both come here, so
        an event is raised exactly once whoever noticed first."""
        old = self.store.get(ARRAY_STATUS + name)
        detail = self.detail(name)
        status = {**detail.to_dict(), "node": self.node}
        for severity, message in raid.changes(old, detail):
            events.emit(self.store, severity=severity, node=self.node, source=f"array:{name}",
                        message=f"{message} (node {self.node})")
        stamp = {"observed_at": time.time()}
        self.store.put_if_changed(ARRAY_STATUS + name, status, stamp=stamp)
        return {**status, **stamp}

    def create(self, name: str, level: str, disk_ids: list[str], progress=lambda pct, text: None) -> Array:
        chosen = self.storage.free_disks(disk_ids)
        array = Array(name, self.node, level, tuple(d.id for d in chosen), created_at=time.time())
        if not self.store.create(ARRAYS + name, array.to_dict()):
            raise Conflict(f"a RAID array named {name!r} already exists", array=name)
        try:
            progress(20, f"creating RAID {level.removeprefix('raid')} over {', '.join(array.disks)}")
            self.runner.run(raid.create_argv(name, level, [d.path for d in chosen]), timeout=120)
        except CairnError as error:
            self.store.delete(ARRAYS + name)
            for disk in chosen:
                self.runner.run(raid.zero_argv(disk.path), timeout=60, check=False)
            raise ExecutionError(f"creating array {name} failed and was undone: {error.message}", done=[]) from error
        detail = self.detail(name)
        array = Array.from_dict(self.store.update(ARRAYS + name, lambda record: {**record, "uuid": detail.uuid}).value)
        progress(80, "writing mdadm.conf")
        self.write_conf()
        self.publish(name)
        return array

    def member_path(self, array: Array, disk_id: str) -> str | None:
        """The device path of a member disk, or None when the disk is gone from the node."""
        try:
            return disks.find(self.storage.inventory(), disk_id, self.node).path
        except NotFound:
            return None

    def mark_failed(self, name: str, disk_id: str) -> dict[str, Any]:
        array = self.owned(name)
        if disk_id not in array.disks:
            raise NotFound(f"disk {disk_id} is not a member of array {name}", array=name, disk=disk_id)
        path = self.member_path(array, disk_id)
        if path is None:
            raise PreconditionFailed(f"disk {disk_id} is not present on {self.node}")
        self.runner.run(raid.fail_argv(self.path(name), path), timeout=60)
        return self.publish(name)

    def wait_sync(self, name: str, ctx, start: int, what: str, interval: float = 2.0) -> raid.ArrayDetail:
        """Follow recovery/resync/reshape until the array is idle (progress scaled from `start`)."""
        idle_seen = 0
        while True:
            detail = self.detail(name)
            if detail.sync_action in (None, "check"):
                idle_seen += 1
                if idle_seen >= 2:        # mdadm may take a moment to begin recovery after --add
                    return detail
            else:
                idle_seen = 0
                percent = detail.sync_percent or 0.0
                if ctx is not None:
                    ctx.progress(min(99, int(start + (100 - start) * percent / 100)),
                                 f"{what}: {detail.sync_action} {percent:.1f} %")
            time.sleep(interval)

    def replace(self, name: str, old: str, new: str, ctx=None) -> Array:
        array = self.owned(name)
        if old not in array.disks:
            raise NotFound(f"disk {old} is not a member of array {name}", array=name, disk=old)
        (target,) = self.storage.free_disks([new])
        detail = self.detail(name)
        old_path = self.member_path(array, old)
        member = next((m for m in detail.members if m.path and old_path and os.path.realpath(m.path)
                       == os.path.realpath(old_path)), None)
        if member is not None and member.active and not detail.degraded:
            # Hot replace: the array keeps full redundancy while the new disk is filled.
            self.runner.run(raid.add_argv(self.path(name), target.path), timeout=60)
            self.runner.run(raid.replace_argv(self.path(name), old_path, target.path), timeout=60)
        else:
            if member is not None:       # faulty (or active in a degraded array): take it out first
                if not member.faulty:
                    self.runner.run(raid.fail_argv(self.path(name), old_path), timeout=60)
                self.runner.run(raid.remove_argv(self.path(name), old_path), timeout=60)
            self.runner.run(raid.add_argv(self.path(name), target.path), timeout=60)
        if ctx is not None:
            ctx.progress(5, f"rebuilding onto {target.id}")
        time.sleep(1)
        self.wait_sync(name, ctx, 5, f"rebuilding onto {target.id}")
        detail = self.detail(name)
        for leftover in detail.members:
            if leftover.faulty and leftover.path:
                self.runner.run(raid.remove_argv(self.path(name), leftover.path), timeout=60, check=False)
        if old_path:
            self.runner.run(raid.zero_argv(old_path), timeout=60, check=False)
        array = Array.from_dict(self.store.update(ARRAYS + name, lambda record: {
            **record, "disks": [d for d in record["disks"] if d != old] + [target.id]}).value)
        self.publish(name)
        return array

    def grow(self, name: str, new: str, ctx=None) -> Array:
        """Add a disk as an active member (not a spare) and reshape; a pool on the array grows too."""
        array = self.owned(name)
        if array.level == "raid0":
            raise PreconditionFailed("growing a RAID 0 array is not offered: it has no redundancy to reshape safely")
        (target,) = self.storage.free_disks([new])
        detail = self.detail(name)
        if detail.degraded or detail.sync_action:
            raise PreconditionFailed(f"array {name} is {detail.state}: grow it once it is clean")
        self.runner.run(raid.add_argv(self.path(name), target.path), timeout=60)
        self.runner.run(raid.grow_argv(self.path(name), detail.raid_devices + 1), timeout=120)
        time.sleep(1)
        self.wait_sync(name, ctx, 5, f"reshaping onto {target.id}")
        array = Array.from_dict(self.store.update(ARRAYS + name, lambda record: {
            **record, "disks": [*record["disks"], target.id]}).value)
        for pool in list_pools(self.store):
            if pool.array == name and self.storage.mounted(pool.name):
                self.runner.run(["btrfs", "filesystem", "resize", "max", self.storage.path(pool.name)], timeout=120)
        self.publish(name)
        return array

    def delete(self, name: str) -> None:
        array = self.owned(name)
        users = [p.name for p in list_pools(self.store) if p.array == name]
        if users:
            raise PreconditionFailed(f"array {name} holds pool {', '.join(users)}: destroy the pool first")
        members = [self.member_path(array, d) for d in array.disks]
        self.runner.run(raid.stop_argv(self.path(name)), timeout=60)
        for path in members:
            if path:
                self.runner.run(raid.zero_argv(path), timeout=60, check=False)
        self.store.delete(ARRAY_STATUS + name)
        self.store.delete(ARRAYS + name)
        self.write_conf()
