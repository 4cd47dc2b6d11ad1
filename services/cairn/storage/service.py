"""The storage requests the API and the console make, in one place: read what the agents
published, check a request against it (so bad input is refused at once, naming the problem),
and submit the job on the node that owns the disk or pool (which checks again, authoritatively).
No Flask here: web/api_storage.py and web/console_storage.py are thin layers over this.
"""

from __future__ import annotations

from typing import Any

from cairn.cluster import nodes
from cairn.cluster.store import Store
from cairn.errors import Conflict, NotFound, PreconditionFailed, ValidationError
from cairn.jobs.service import JobService
from cairn.storage import model
from cairn.storage.arrays import ARRAY_STATUS, ARRAYS, get_array, list_arrays
from cairn.storage.jobs import check_pool_create, check_raid_create
from cairn.storage.monitor import HEALTH
from cairn.storage.pools import (POOL_STATUS, POOLS, VOLUMES, get_pool, get_volume, list_pools,
                                 list_volumes, shares_using)


class StorageService:
    def __init__(self, store: Store, jobs: JobService) -> None:
        self.store = store
        self.jobs = jobs

    def submit(self, kind: str, node: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.jobs.submit(kind, node, params).to_dict()

    def node(self, name: str) -> dict[str, Any]:
        for node in nodes.list_nodes(self.store):
            if node["name"] == name:
                return node
        raise NotFound(f"no node named {name!r}", node=name)

    # --- disks ------------------------------------------------------------------------------
    def with_health(self, node: str, disk: dict[str, Any]) -> dict[str, Any]:
        health = self.store.get(f"{HEALTH}{node}/{disk.get('id')}") if disk.get("id") else None
        return {**disk, "node": node, "health": health}

    def disks(self, node: str | None = None, usage: str | None = None) -> list[dict[str, Any]]:
        found = []
        for record in nodes.list_nodes(self.store):
            if node and record["name"] != node:
                continue
            for disk in record.get("disks", []):
                if usage and disk.get("usage", {}).get("kind") != usage:
                    continue
                found.append(self.with_health(record["name"], disk))
        return found

    def disk(self, node: str, disk_id: str) -> dict[str, Any]:
        for disk in self.node(node).get("disks", []):
            if disk.get("id") == disk_id:
                return self.with_health(node, disk)
        raise NotFound(f"no disk {disk_id!r} on node {node}", node=node, disk=disk_id)

    def rescan(self, node: str) -> dict[str, Any]:
        self.node(node)
        return self.submit("disk.rescan", node, {})

    def selftest(self, node: str, disk_id: str, kind: str) -> dict[str, Any]:
        self.disk(node, disk_id)
        return self.submit("disk.selftest", node, {"disk": disk_id, "type": kind})

    def check_disks_free(self, node: dict[str, Any], ids: list[str], field: str = "disks") -> None:
        """Every id names a disk of the node (else 400) that is free (else 409 with what uses it)."""
        known = {d.get("id"): d for d in node.get("disks", [])}
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValidationError({field: f"no disk {', '.join(missing)} on node {node['name']} "
                                          f"(disks there: {', '.join(sorted(str(k) for k in known if k)) or 'none'})"})
        for disk_id in ids:
            usage = known[disk_id].get("usage", {})
            if usage.get("kind") != "free":
                what = "the system disk" if usage.get("kind") == "system" else f"in use ({usage.get('kind')})"
                raise PreconditionFailed(f"disk {disk_id} on node {node['name']} is {what}: {usage.get('detail')}",
                                         disk=disk_id, usage=usage.get("kind"))

    # --- pools ------------------------------------------------------------------------------
    def pool_view(self, pool: model.Pool) -> dict[str, Any]:
        return {**pool.to_dict(), "status": self.store.get(POOL_STATUS + pool.name)}

    def pools(self) -> list[dict[str, Any]]:
        return [self.pool_view(p) for p in list_pools(self.store)]

    def pool(self, name: str) -> dict[str, Any]:
        return self.pool_view(get_pool(self.store, name))

    def create_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        node = self.node(body.pop("node", None) or "")
        if not body.get("array"):
            body.pop("array", None)
        params = check_pool_create(body)
        if self.store.get(POOLS + params["name"]) is not None:
            raise Conflict(f"a pool named {params['name']!r} already exists", pool=params["name"])
        if params["array"]:
            array = get_array(self.store, params["array"])
            if array.node != node["name"]:
                raise ValidationError({"array": f"array {array.name} is on node {array.node}, not {node['name']}"})
            users = [p.name for p in list_pools(self.store) if p.array == array.name]
            if users:
                raise PreconditionFailed(f"array {array.name} already holds pool {users[0]}")
        else:
            self.check_disks_free(node, params["disks"])
        return self.submit("pool.create", node["name"], params)

    def set_schedules(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """changes: scrub_schedule and/or balance_schedule, each null, weekly or monthly."""
        entry = self.store.get_entry(POOLS + name)
        if entry is None:
            raise NotFound(f"no pool named {name!r}", pool=name)
        problems = {}
        for key, value in changes.items():
            if key not in ("scrub_schedule", "balance_schedule"):
                problems[key] = "unknown setting"
            elif value not in (None, "weekly", "monthly"):
                problems[key] = "must be null, weekly or monthly"
        model.raise_problems(problems)
        pool = model.Pool.from_dict({**entry.value, **changes})
        if not self.store.cas(POOLS + name, pool.to_dict(), entry.mod_revision):
            raise Conflict(f"pool {name} changed meanwhile; try again")
        return self.pool_view(pool)

    def destroy_pool(self, name: str, confirm: str | None) -> dict[str, Any]:
        pool = get_pool(self.store, name)
        sharing = [f"{volume.name}: {user}" for volume in list_volumes(self.store, name)
                   for user in shares_using(self.store, name, volume.name)]
        if sharing:
            raise Conflict(f"pool {name} is still in use ({'; '.join(sharing)}): delete those first",
                           shares=sharing)
        vms = sorted(e.value["name"] for e in self.store.list("vms/") if e.value.get("pool") == name)
        if vms:
            raise Conflict(f"pool {name} holds the disks of VM{'s' if len(vms) > 1 else ''} {', '.join(vms)}: "
                           "delete them first", vms=vms)
        return self.submit("pool.destroy", pool.node, {"pool": name, "confirm": confirm})

    def expand_pool(self, name: str, disk_ids: list[str], balance: bool = True) -> dict[str, Any]:
        pool = get_pool(self.store, name)
        if pool.array:
            raise PreconditionFailed(f"pool {name} sits on md array {pool.array}: grow the array instead")
        self.check_disks_free(self.node(pool.node), disk_ids)
        return self.submit("pool.expand", pool.node, {"pool": name, "disks": disk_ids, "balance": balance})

    def replace_disk(self, name: str, old: str, new: str) -> dict[str, Any]:
        pool = get_pool(self.store, name)
        if not old.startswith("devid:") and old not in pool.disks:
            raise ValidationError({"old": f"disk {old} is not in pool {name} ({', '.join(pool.disks)})"})
        self.check_disks_free(self.node(pool.node), [new], "new")
        return self.submit("pool.replace", pool.node, {"pool": name, "old": old, "new": new})

    def pool_job(self, name: str, action: str) -> dict[str, Any]:
        if action not in ("scrub", "balance"):
            raise ValidationError({"action": "must be scrub or balance"})
        return self.submit(f"pool.{action}", get_pool(self.store, name).node, {"pool": name})

    # --- md arrays --------------------------------------------------------------------------
    def array_view(self, array) -> dict[str, Any]:
        return {**array.to_dict(), "status": self.store.get(ARRAY_STATUS + array.name)}

    def arrays(self) -> list[dict[str, Any]]:
        return [self.array_view(a) for a in list_arrays(self.store)]

    def array(self, name: str) -> dict[str, Any]:
        return self.array_view(get_array(self.store, name))

    def create_array(self, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        node = self.node(body.pop("node", None) or "")
        params = check_raid_create(body)
        if self.store.get(ARRAYS + params["name"]) is not None:
            raise Conflict(f"a RAID array named {params['name']!r} already exists", array=params["name"])
        self.check_disks_free(node, params["disks"])
        return self.submit("raid.create", node["name"], params)

    def array_member_job(self, name: str, kind: str, disk: str) -> dict[str, Any]:
        array = get_array(self.store, name)
        if kind == "raid.fail":
            if disk not in array.disks:
                raise ValidationError({"disk": f"disk {disk} is not a member of array {name} ({', '.join(array.disks)})"})
        else:
            self.check_disks_free(self.node(array.node), [disk], "disk")
        return self.submit(kind, array.node, {"array": name, "disk": disk})

    def replace_array_disk(self, name: str, old: str, new: str) -> dict[str, Any]:
        array = get_array(self.store, name)
        if old not in array.disks:
            raise ValidationError({"old": f"disk {old} is not a member of array {name} ({', '.join(array.disks)})"})
        self.check_disks_free(self.node(array.node), [new], "new")
        return self.submit("raid.replace", array.node, {"array": name, "old": old, "new": new})

    def delete_array(self, name: str, confirm: str | None) -> dict[str, Any]:
        array = get_array(self.store, name)
        users = [p.name for p in list_pools(self.store) if p.array == name]
        if users:
            raise PreconditionFailed(f"array {name} holds pool {users[0]}: destroy the pool first")
        return self.submit("raid.delete", array.node, {"array": name, "confirm": confirm})

    # --- volumes ----------------------------------------------------------------------------
    def volume_view(self, volume: model.Volume) -> dict[str, Any]:
        status = self.store.get(POOL_STATUS + volume.pool) or {}
        seen = next((v for v in status.get("volumes", []) if v["name"] == volume.name), {})
        pools_root = status.get("path", f"/pools/{volume.pool}").rsplit("/", 1)[0]
        return {**volume.to_dict(), "path": f"{pools_root}/{volume.pool}/{volume.name}",
                "referenced": seen.get("referenced"), "exclusive": seen.get("exclusive"),
                "snapshots": seen.get("snapshots", [])}

    def volumes(self, pool: str) -> list[dict[str, Any]]:
        get_pool(self.store, pool)
        return [self.volume_view(model.Volume.from_dict(e.value)) for e in self.store.list(f"{VOLUMES}{pool}/")]

    def volume(self, pool: str, name: str) -> dict[str, Any]:
        return self.volume_view(get_volume(self.store, pool, name))

    def create_volume(self, pool_name: str, body: dict[str, Any]) -> dict[str, Any]:
        pool = get_pool(self.store, pool_name)
        if self.store.get(f"{VOLUMES}{pool_name}/{body.get('name')}") is not None:
            raise Conflict(f"a volume named {body['name']!r} already exists in pool {pool_name}")
        return self.submit("volume.create", pool.node, {"pool": pool_name, **body})

    def patch_volume(self, pool_name: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        key = f"{VOLUMES}{pool_name}/{name}"
        entry = self.store.get_entry(key)
        if entry is None:
            raise NotFound(f"no volume {name!r} in pool {pool_name!r}", pool=pool_name, volume=name)
        problems: dict[str, str] = {}
        record = model.Volume.from_dict(entry.value)
        if "schedule" in body:
            schedule = model.check_schedule(body["schedule"], problems)
            record = model.Volume(record.pool, record.name, record.quota_bytes, schedule, record.created_at)
        if "quota_bytes" in body:
            model.check_quota(body["quota_bytes"], problems)
        model.raise_problems(problems)
        if "schedule" in body and not self.store.cas(key, record.to_dict(), entry.mod_revision):
            raise Conflict(f"volume {name} changed meanwhile; try again")
        job = None
        if "quota_bytes" in body:
            job = self.submit("volume.quota", get_pool(self.store, pool_name).node,
                              {"pool": pool_name, "name": name, "quota_bytes": body["quota_bytes"]})
        return {"volume": self.volume_view(record), "job": job}

    def delete_volume(self, pool_name: str, name: str, confirm: str | None) -> dict[str, Any]:
        get_volume(self.store, pool_name, name)
        sharing = shares_using(self.store, pool_name, name)
        if sharing:
            raise Conflict(f"volume {name} is in use by {', '.join(sharing)}: delete those first",
                           shares=sharing)
        return self.submit("volume.delete", get_pool(self.store, pool_name).node,
                           {"pool": pool_name, "name": name, "confirm": confirm})

    # --- snapshots --------------------------------------------------------------------------
    def snapshots(self, pool: str, volume: str) -> list[dict[str, Any]]:
        return self.volume(pool, volume)["snapshots"]

    def known_snapshot(self, pool: str, volume: str, snapshot: str) -> None:
        if not any(s["name"] == snapshot for s in self.snapshots(pool, volume)):
            raise NotFound(f"volume {volume} has no snapshot named {snapshot!r}", snapshot=snapshot)

    def create_snapshot(self, pool: str, volume: str, name: str | None) -> dict[str, Any]:
        get_volume(self.store, pool, volume)
        return self.submit("snapshot.create", get_pool(self.store, pool).node,
                           {"pool": pool, "volume": volume, "name": name})

    def delete_snapshot(self, pool: str, volume: str, snapshot: str) -> dict[str, Any]:
        self.known_snapshot(pool, volume, snapshot)
        return self.submit("snapshot.delete", get_pool(self.store, pool).node,
                           {"pool": pool, "volume": volume, "snapshot": snapshot})

    def rollback(self, pool: str, volume: str, snapshot: str, confirm: str | None) -> dict[str, Any]:
        self.known_snapshot(pool, volume, snapshot)
        return self.submit("snapshot.rollback", get_pool(self.store, pool).node,
                           {"pool": pool, "volume": volume, "snapshot": snapshot, "confirm": confirm})

    def clone(self, pool: str, volume: str, snapshot: str, name: str) -> dict[str, Any]:
        self.known_snapshot(pool, volume, snapshot)
        if self.store.get(f"{VOLUMES}{pool}/{name}") is not None:
            raise Conflict(f"a volume named {name!r} already exists in pool {pool}")
        return self.submit("snapshot.clone", get_pool(self.store, pool).node,
                           {"pool": pool, "volume": volume, "snapshot": snapshot, "name": name})
