"""cairn-agent: the node's hands.

Loops (threads):
  - heartbeat: keeps the node lease alive (node-alive/<node> is bound to it), in a thread of its own
    (a node busy enough to take seconds over a disk scan must not lose its lease over it: its jobs
    would be stopped, a join half-way among them);
  - inventory: republishes nodes/<node> when it changed;
  - jobs: watches this node's job queue (job-queue/<node>/) and runs its queued jobs
    (jobs.executor); locks: offers waiting jobs again when a lock is freed;
  - reconcile: runs the reconcile loop every RECONCILE_INTERVAL seconds (pools mounted, shares
    applied, ...);
  - share-watch, iscsi-watch: apply shares / iSCSI targets at once when their records change, so
    a new share or LUN is served within a second or so instead of at the next reconcile pass;
  - storage: publishes pool status and runs snapshot schedules every STORAGE_INTERVAL seconds;
  - vms: publishes the state of this node's VMs every VM_INTERVAL seconds, and right after each
    VM job (with the pools' status when the job changed the VMs' space);
  - smart: reads every disk's SMART each storage.smart_interval seconds, events on degradation;
  - history: prunes job and event history, defragments the local etcd member, warns before the
    store's quota (cluster.history).
  - lost nodes: a node whose lease is gone is said in an event and its jobs are failed instead of
    hanging (cluster.lost_nodes; one agent of the cluster per round).
Nothing is rewritten periodically: records are written when they change; liveness is the lease.
At start, jobs that were `running` on this node are marked failed: the agent that ran them is gone.
If the node lease is lost (the store was unreachable longer than its TTL), a new one is granted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from cairn import __version__, config as config_mod
from cairn.agent.reconcile import ReconcileLoop
from cairn.cluster import nodes
from cairn.cluster.formation import wait_for_store
from cairn.cluster.history import HistoryKeeper
from cairn.cluster.lost_nodes import ROUND_SECONDS as LOST_NODES_ROUND, LostNodes
from cairn.cluster.store import Store
from cairn.errors import CairnError
from cairn.jobs import registry
from cairn.jobs.model import Job
from cairn.jobs.executor import Executor
from cairn.jobs import service as job_service
from cairn.jobs.service import JobService
from cairn.runner import Runner
from cairn.compute import jobs as compute_jobs
from cairn.compute.vms import list_vms
from cairn.shares.apply import ShareApplier
from cairn.shares.lio import LioApplier
from cairn.storage import disks
from cairn.storage.monitor import PoolMounts, StorageMonitor
from cairn.storage.pools import list_pools, pools_by_uuid
from cairn.system.inventory import read_inventory

log = logging.getLogger("cairn.agent")

HEARTBEAT_INTERVAL = 2.0
DISK_REFRESH_INTERVAL = 30.0
RECONCILE_INTERVAL = 30.0
STORAGE_INTERVAL = 30.0
VM_INTERVAL = 5.0
SPACE_CHANGING = ("vm.create", "vm.clone", "vm.restore", "vm.delete", "vm.snapshot-delete")
ORPHAN_REASON = "cairn-agent stopped while the job was running (the job was interrupted)"


class Agent:
    def __init__(self, cfg: config_mod.Config, store: Store | None = None) -> None:
        self.cfg = cfg
        self.node = cfg.node_name
        self.store = store or config_mod.open_store(cfg)
        self.jobs = JobService(self.store)
        self.runner = Runner()
        self.stop = threading.Event()
        self._lease = 0
        self._lease_lock = threading.Lock()
        self._disks: list[dict] = []
        self._vm_refresh = threading.Event()
        self._pool_space_due = False
        self._disks_at = float("-inf")
        self.publisher = nodes.NodePublisher(self.store, self.node)
        self.history = HistoryKeeper(self.store, self.node, cfg.history)
        self.lost_nodes = LostNodes(self.store, self.node)
        self.restart_requested = False
        self.executor = Executor(self.jobs, self.node, self.runner, self.lease, config=cfg,
                                 after_job=self._after_job, node_hooks=self)
        self.monitor = StorageMonitor(self.runner, self.store, self.node, cfg.storage)
        storage = self.monitor.storage
        self.shares = ShareApplier(self.runner, self.store, self.node, cfg.shares, cfg.storage.pools_root,
                                   storage.mounted)
        self.iscsi = LioApplier(self.store, self.node, storage.mounted, pools_root=cfg.storage.pools_root)
        self.reconcile = ReconcileLoop(self.store, self.node, [PoolMounts(storage), self.shares, self.iscsi])

    # --- lease -------------------------------------------------------------------------------
    def lease(self) -> int:
        with self._lease_lock:
            if not self._lease:
                self._lease = self.store.grant_lease(nodes.NODE_LEASE_TTL)
                nodes.mark_alive(self.store, self.node, self._lease, time.time())
            return self._lease

    # --- hooks for cluster jobs (cairn.jobs.executor.JobContext.move_store) -------------------------
    def move_store(self, endpoints: list[str], tls) -> int:
        """The store moved (this node created or joined a cluster): talk to it from now on, under a
        new node lease there. Returns that lease."""
        with self._lease_lock:
            self.store.reconfigure(endpoints, tls)
            wait_for_store(self.store)
            self._lease = self.store.grant_lease(nodes.NODE_LEASE_TTL)
            nodes.mark_alive(self.store, self.node, self._lease, time.time())
            self.publisher.forget()
            return self._lease

    def restart(self) -> None:
        """Start this agent again from its settings file (after a cluster job changed them): its
        watches then follow the cluster's store from its beginning."""
        self.restart_requested = True
        self.stop.set()

    def heartbeat_once(self) -> None:
        self.keep_lease_once()
        self.publish_inventory_once()

    def keep_lease_once(self) -> None:
        """Keep the node lease alive: that is the heartbeat. It has a thread of its own, so nothing
        slow (a disk scan on a busy node) delays it past the lease's TTL."""
        lease = self.lease()
        if self.store.keepalive(lease) <= 0:
            log.warning("node lease %x expired; taking a new one", lease)
            with self._lease_lock:
                self._lease = 0
            self.lease()

    def publish_inventory_once(self) -> None:
        """Republish the inventory, only when it changed (nodes.NodePublisher)."""
        inventory = read_inventory().to_record()
        inventory["disks"] = self._disk_inventory()
        self.publisher.publish(inventory, __version__)

    def _disk_inventory(self) -> list[dict]:
        """Whole disks by serial, refreshed every DISK_REFRESH_INTERVAL seconds (lsblk is not free)."""
        if time.monotonic() - self._disks_at >= DISK_REFRESH_INTERVAL:
            try:
                found = disks.scan(self.runner, pools_by_uuid(self.store), self.cfg.storage.include_loop)
                self._disks = [d.to_dict() for d in found]
                self._disks_at = time.monotonic()
            except CairnError as exc:
                log.warning("disk inventory: %s", exc.message)
        return self._disks

    def _after_job(self, job) -> None:
        """A job may have changed what uses the disks, or a VM: publish before the job ends."""
        if job.kind.startswith(("pool.", "disk.", "raid.")):
            self._disks_at = float("-inf")
            self.heartbeat_once()
        if job.kind.startswith("vm."):
            # Not on the job's clock: the vms loop refreshes the VMs' status (and their space,
            # which costs a btrfs commit) right after, so a snapshot's job ends as soon as it exists.
            if job.kind in SPACE_CHANGING:
                self._pool_space_due = True
            self._vm_refresh.set()

    def observe_vms(self) -> None:
        """vm-status/<name> of this node's VMs (libvirt is only asked when the node has VMs), and
        the pools' status when a VM job changed what the VMs hold."""
        if any(vm.node == self.node for vm in list_vms(self.store)):
            compute_jobs.backend(self.runner, self.store, self.node, self.cfg).observe()
        if self._pool_space_due:
            self._pool_space_due = False
            for pool in list_pools(self.store):
                if pool.node == self.node and pool.state == "online":
                    self.monitor.storage.publish_status(pool)

    def _vm_loop(self) -> None:
        while not self.stop.is_set():
            self._vm_refresh.wait(VM_INTERVAL)
            self._vm_refresh.clear()
            if self.stop.is_set():
                return
            try:
                self.observe_vms()
            except CairnError as exc:
                log.warning("vms: %s", exc.message)
            except Exception:
                log.exception("vms crashed; continuing")

    # --- loops -------------------------------------------------------------------------------
    def _loop(self, name: str, interval: float, step) -> None:
        while not self.stop.is_set():
            try:
                step()
            except CairnError as exc:
                log.warning("%s: %s", name, exc.message)
            except Exception:
                log.exception("%s crashed; continuing", name)
            self.stop.wait(interval)

    def _follow(self, name: str, prefix: str, idle: float, on_event, on_start=lambda: None) -> None:
        """Watch `prefix` for as long as the agent runs, calling on_event(event) for each change
        (None after `idle` quiet seconds); on_start() runs before each (re)started watch. One
        long-lived watch: etcd delivers a watch that starts behind the current revision only at
        its next sync (every 100 ms), which a new watch per change would pay each time."""
        while not self.stop.is_set():
            try:
                revision = self.store.revision() + 1
                on_start()
                for event in self.store.watch(prefix, revision, idle_timeout=idle, stop=self.stop):
                    on_event(event)
            except CairnError as exc:
                log.warning("%s: %s", name, exc.message)
                self.stop.wait(1.0)
            except Exception:
                log.exception("%s crashed; continuing", name)
                self.stop.wait(1.0)

    def _job_loop(self) -> None:
        """Start this node's queued jobs as they arrive. The agent watches only its own queue
        (job-queue/<node>/): a job seen there is offered at once; an abort request for a queued
        job rewrites its queue entry, so it is seen too. Queued jobs waiting for a lock are
        offered again when a lock is freed (_lock_loop) and every 2 s."""
        def seen(event) -> None:
            if event is not None and event.kind == "put":
                entry = self.store.get_entry(job_service.JOBS + event.key.rsplit("/", 1)[1])
                if entry is not None:
                    self.executor.offer(Job.from_dict(entry.value), entry.mod_revision)
            elif event is None or event.kind == "compacted":
                self.executor.poll()
        self._follow("jobs", f"{job_service.QUEUE}{self.node}/", 2.0, seen, on_start=self.executor.poll)

    def _lock_loop(self) -> None:
        """Offer this node's queued jobs again as soon as any lock is freed (they may wait on it)."""
        def seen(event) -> None:
            if event is not None and event.kind in ("delete", "compacted"):
                self.executor.poll()
        self._follow("locks", job_service.LOCKS, 30.0, seen)

    def _watch_loop(self, prefix: str, areas: set[str]) -> None:
        """Run the reconcilers of `areas` whenever something under `prefix` changes. The revision
        is taken before each pass, so a change made during a pass brings another pass."""
        revision = 0
        while not self.stop.is_set():
            try:
                if not revision:
                    revision = self.store.revision() + 1
                changed = False
                for event in self.store.watch(prefix, revision, idle_timeout=30.0, stop=self.stop):
                    if event is not None:
                        changed = True
                        break
                if changed and not self.stop.is_set():
                    revision = self.store.revision() + 1
                    self.reconcile.run_once(only=areas)
            except CairnError as exc:
                log.warning("watch %s: %s", prefix, exc.message)
                revision = 0
                self.stop.wait(1.0)
            except Exception:
                log.exception("watch %s crashed; continuing", prefix)
                revision = 0
                self.stop.wait(1.0)

    def start(self) -> list[threading.Thread]:
        self._wait_for_store()
        self.store.ensure_schema()
        registry.load_all()
        self.heartbeat_once()
        for job in self.jobs.fail_orphans(self.node, ORPHAN_REASON):
            log.warning("job %s was running when the agent stopped: marked failed", job.id)
        threads = [
            threading.Thread(target=self._loop, args=("heartbeat", HEARTBEAT_INTERVAL, self.keep_lease_once),
                             name="heartbeat", daemon=True),
            threading.Thread(target=self._loop, args=("inventory", HEARTBEAT_INTERVAL, self.publish_inventory_once),
                             name="inventory", daemon=True),
            threading.Thread(target=self._job_loop, name="jobs", daemon=True),
            threading.Thread(target=self._lock_loop, name="locks", daemon=True),
            threading.Thread(target=self._loop, args=("reconcile", RECONCILE_INTERVAL, self.reconcile.run_once),
                             name="reconcile", daemon=True),
            threading.Thread(target=self._watch_loop, args=("share", {"shares"}), name="share-watch",
                             daemon=True),
            threading.Thread(target=self._watch_loop, args=("iscsi-t", {"iscsi"}), name="iscsi-watch",
                             daemon=True),
            threading.Thread(target=self._loop, args=("storage", STORAGE_INTERVAL, self.monitor.observe_pools),
                             name="storage", daemon=True),
            threading.Thread(target=self._vm_loop, name="vms", daemon=True),
            threading.Thread(target=self._loop, args=("history", self.history.settings.interval,
                                                      self.history.run_once), name="history", daemon=True),
            threading.Thread(target=self._loop, args=("lost-nodes", LOST_NODES_ROUND, self.lost_nodes.run_once),
                             name="lost-nodes", daemon=True),
            threading.Thread(target=self._loop, args=("smart", self.cfg.storage.smart_interval,
                                                      self.monitor.poll_smart), name="smart", daemon=True),
        ]
        for thread in threads:
            thread.start()
        log.info("cairn-agent %s running as node %s", __version__, self.node)
        return threads

    def _wait_for_store(self) -> None:
        delay = 0.5
        while not self.stop.is_set():
            try:
                self.store.revision()
                return
            except CairnError as exc:
                log.warning("waiting for the cluster store: %s", exc.message)
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def shutdown(self) -> None:
        self.stop.set()
        with self._lease_lock:
            lease, self._lease = self._lease, 0
        # Restarting, the lease is left to expire: the new process re-binds node-alive/<node> at
        # once, so the cluster never sees the node gone.
        if lease and not self.restart_requested:
            try:
                self.store.revoke_lease(lease)
            except CairnError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cairn-agent", description="Cairn node agent")
    parser.add_argument("--config", help="config file (default $CAIRN_CONFIG or /etc/cairn/cairn.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = Agent(config_mod.load(args.config))
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop.set())
    agent.start()
    agent.stop.wait()
    agent.shutdown()
    if agent.restart_requested:
        log.info("cairn-agent starting again with its new settings")
        os.execv(sys.executable, [sys.executable, "-m", "cairn.agent.main", *(sys.argv[1:] if argv is None else argv)])
    log.info("cairn-agent stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
