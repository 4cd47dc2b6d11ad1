"""What the agent does for storage on its own, without being asked:

- PoolMounts (a reconciler): every online pool of this node is mounted at its path — after a
  reboot, or if someone unmounted it. Desired (pure over the store) → diff (pure) → mount.
- observe_pools: runs snapshot schedules, submits scheduled scrubs and balances
  (pool-maintenance/<pool> remembers when), and publishes pool-status/<pool> for this node's pools.
- observe_arrays: this node's md arrays assembled (mdadm --assemble --scan if one is missing),
  mdadm.conf up to date, array-status/<name> published, events when one degrades or a disk fails.
- poll_smart: reads SMART from every disk, keeps the last report in disk-health/<node>/<disk>, and
  raises a disk.health event for each degradation (smart.degradations), once per change.
All three write only keys this node's agent owns.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cairn.cluster import events
from cairn.config import StorageConfig
from cairn.errors import CairnError
from cairn.jobs.service import JobService
from cairn.storage import disks, model, raid, smart
from cairn.storage.arrays import ARRAY_STATUS, Arrays, list_arrays, locate
from cairn.storage.pools import Storage, list_pools, pools_by_uuid

log = logging.getLogger(__name__)
HEALTH = "disk-health/"
MAINTENANCE = "pool-maintenance/"


class PoolMounts:
    name = "pool-mounts"

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def desired(self, store) -> list[Any]:
        return [p for p in list_pools(store) if p.node == self.storage.node and p.state == "online" and p.uuid]

    def actual(self) -> set[str]:
        return {p.name for p in list_pools(self.storage.store) if self.storage.mounted(p.name)}

    def diff(self, desired: list[Any], actual: set[str]) -> list[Any]:
        return [pool for pool in desired if pool.name not in actual]

    def apply(self, actions: list[Any]) -> None:
        for pool in actions:
            self.storage.mount(pool)
            log.info("mounted pool %s at %s", pool.name, self.storage.path(pool.name))


class StorageMonitor:
    def __init__(self, runner, store, node: str, settings: StorageConfig | None = None, clock=time.time) -> None:
        self.storage = Storage(runner, store, node, settings, clock)
        self.runner = runner
        self.store = store
        self.node = node
        self.clock = clock

    def observe_arrays(self) -> list[tuple[str, str]]:
        """Returns (array, new health) for each array whose health changed this pass."""
        mine = [a for a in list_arrays(self.store) if a.node == self.node]
        if not mine:
            return []
        handler = Arrays(self.storage)
        handler.write_conf()
        if any(locate(a) is None for a in mine):
            self.runner.run(raid.assemble_scan_argv(), timeout=120, check=False)
        raised = []
        for array in mine:
            old = self.store.get(ARRAY_STATUS + array.name)
            if locate(array) is None:
                if (old or {}).get("health") != "missing":
                    message = f"array {array.name} on {self.node} is not assembled (its disks are missing?)"
                    events.emit(self.store, severity="critical", node=self.node, source=f"array:{array.name}",
                                message=message, clock=self.clock)
                    raised.append(("critical", message))
                self.store.put_if_changed(ARRAY_STATUS + array.name,
                                          {"health": "missing", "state": "not assembled", "node": self.node},
                                          stamp={"observed_at": self.clock()})
                continue
            status = handler.publish(array.name)
            if status["health"] != (old or {}).get("health"):
                raised.append((array.name, status["health"]))
        return raised

    def observe_pools(self) -> None:
        try:
            self.observe_arrays()
        except CairnError as exc:
            log.warning("arrays: %s", exc.message)
        for did in self.storage.run_schedules():
            log.info("schedule: %s", did)
        self.schedule_maintenance()
        for pool in list_pools(self.store):
            if pool.node != self.node or pool.state != "online":
                continue
            try:
                self.storage.publish_status(pool)
            except CairnError as exc:
                log.warning("status of pool %s: %s", pool.name, exc.message)

    def schedule_maintenance(self, now: float | None = None) -> list[str]:
        """Submit pool.scrub / pool.balance jobs for this node's pools whose schedule is due."""
        now = self.clock() if now is None else now
        submitted = []
        for pool in list_pools(self.store):
            if pool.node != self.node or pool.state != "online":
                continue
            record = self.store.get(MAINTENANCE + pool.name) or {}
            for kind in model.MAINTENANCE:
                last = (record.get(kind) or {}).get("last_started")
                if model.scrub_due(getattr(pool, f"{kind}_schedule"), last, now):
                    job = JobService(self.store).submit(f"pool.{kind}", self.node, {"pool": pool.name})
                    record[kind] = {"last_started": now, "job": job.id}
                    self.store.put(MAINTENANCE + pool.name, record)
                    submitted.append(job.id)
                    log.info("scheduled %s of pool %s: job %s", kind, pool.name, job.id)
        return submitted

    def disks(self) -> list[disks.Disk]:
        return disks.scan(self.runner, pools_by_uuid(self.store), self.storage.settings.include_loop)

    def poll_smart(self) -> list[str]:
        """Read every disk's SMART; returns the degradation messages raised this round."""
        raised = []
        for disk in self.disks():
            if disk.id is None or disk.bus == "loop":
                continue
            report = smart.read(self.runner, disk.path)
            key = f"{HEALTH}{self.node}/{disk.id}"
            previous = self.store.get(key)
            old = smart.SmartReport.from_dict(previous["report"]) if previous else None
            verdict, reasons = smart.assess(report)
            self.store.put_if_changed(key, {"report": report.to_dict(), "verdict": verdict, "reasons": reasons},
                                      stamp={"at": self.clock()})
            for change in smart.degradations(old, report):
                message = f"disk {disk.id} on {self.node}: {change}"
                events.emit(self.store, severity="critical" if verdict == "failing" else "warning",
                            node=self.node, source=f"disk:{disk.id}", message=message, clock=self.clock)
                raised.append(message)
        return raised
