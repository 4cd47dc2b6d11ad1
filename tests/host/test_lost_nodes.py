"""Real agents on one etcd: when node-b's agent dies, the cluster says so in an event, fails the
job it was running (not left "running" until it returns) and, after the grace, the job queued for
it; when it comes back, an event says so and its jobs stay ended. A node cut off past its lease
cannot overwrite the cluster's decision when it returns (fencing by its lease)."""

from __future__ import annotations

import signal
import time

from cairn import config as config_mod
from cairn.cluster import events
from cairn.cluster.lost_nodes import LostNodes
from cairn.cluster.store import Store
from cairn.devstack import EtcdCluster, share_sandbox, start_agent, write_config
from cairn.jobs.model import JobState
from cairn.jobs.service import JobService
from support import wait_until


def agent(etcd: EtcdCluster, tmp_path, name: str):
    cfg = config_mod.Config(node_name=name, etcd_endpoints=tuple(etcd.endpoints), state_dir=tmp_path / name,
                            store_root="/cairn", shares=share_sandbox(tmp_path / name / "shares"))
    path = write_config(tmp_path / name / "cairn.toml", cfg)
    return lambda: start_agent(path, tmp_path / name / "agent.log")


def test_a_dead_nodes_jobs_are_failed_by_the_cluster_and_its_return_is_seen(tmp_path):
    etcd = EtcdCluster.create(tmp_path / "etcd", 1).start()
    start_a, start_b = agent(etcd, tmp_path, "node-a"), agent(etcd, tmp_path, "node-b")
    a, b = start_a(), start_b()
    try:
        store = Store(etcd.endpoints, "/cairn", timeout=3)
        jobs = JobService(store)
        wait_until(lambda: all(store.get(f"{key}/{node}") for key in ("node-alive", "nodes")
                               for node in ("node-a", "node-b")), 30, "both agents")

        long = jobs.submit("node.diagnostics", "node-b", {"samples": 100_000})
        wait_until(lambda: jobs.get(long.id).state is JobState.RUNNING, 30, "node-b to start the job")
        b.kill()            # the node dies: no lease revoke, nothing written on the way out

        # node-a's agent sees the lease expire and fails the running job, saying why.
        failed = wait_until(lambda: (j := jobs.get(long.id)).state.terminal and j, 60, "the job to be failed")
        assert failed.state is JobState.FAILED
        assert failed.error.startswith("node node-b stopped answering while the job ran")
        assert jobs.lock_holder("node-diagnostics:node-b") is None
        messages = [e["message"] for e in events.recent(store, 20)]
        assert "node node-b stopped answering (its lease expired)" in messages

        # A job queued for the dead node is failed once it has been down for the grace.
        queued = jobs.submit("node.diagnostics", "node-b", {"samples": 5})
        reaper = LostNodes(store, "test", queued_grace=0.0)
        wait_until(lambda: reaper.run_once() is not None and jobs.get(queued.id).state.terminal, 30,
                   "a round that fails the queued job")
        assert jobs.get(queued.id).error.startswith("node node-b has been down for over 0 s; the job was not started")

        b = start_b()       # it comes back: said once, and its jobs stay as the cluster ended them
        wait_until(lambda: "node node-b is back" in [e["message"] for e in events.recent(store, 20)], 60,
                   "the event that node-b is back")
        assert store.get("node-lost/node-b") is None
        assert jobs.get(long.id).state is JobState.FAILED and jobs.get(queued.id).state is JobState.FAILED
        again = jobs.submit("node.diagnostics", "node-b", {"samples": 5})
        assert wait_until(lambda: (j := jobs.get(again.id)).state.terminal and j, 60, "a new job").state \
            is JobState.SUCCESS
    finally:
        for daemon in (a, b):
            daemon.stop()
        etcd.stop()


def test_a_node_cut_off_longer_than_its_lease_cannot_overwrite_what_the_cluster_decided(tmp_path):
    """Fencing: node-b's agent is frozen (SIGSTOP: as cut off from the store) past its lease while
    its job runs; the cluster fails the job. Thawed, the agent's next write for that job carries the
    old lease in its compare and is refused: the job stays failed, nothing more is logged for it,
    and the agent goes on with a new lease."""
    etcd = EtcdCluster.create(tmp_path / "etcd", 1).start()
    b = agent(etcd, tmp_path, "node-b")()
    try:
        store = Store(etcd.endpoints, "/cairn", timeout=3)
        jobs = JobService(store)
        wait_until(lambda: store.get("node-alive/node-b") and store.get("nodes/node-b"), 30, "node-b's agent")
        long = jobs.submit("node.diagnostics", "node-b", {"samples": 100_000})
        wait_until(lambda: jobs.get(long.id).state is JobState.RUNNING, 30, "node-b to start the job")
        old_lease = store.get_entry("node-alive/node-b").lease

        b.signal(signal.SIGSTOP)
        reaper = LostNodes(store, "node-a")
        failed = wait_until(lambda: reaper.run_once() is not None and (j := jobs.get(long.id)).state.terminal
                            and j, 60, "the cluster to fail the frozen node's job")
        assert failed.error.startswith("node node-b stopped answering while the job ran")
        logged = failed.log_count
        b.signal(signal.SIGCONT)

        # The agent comes back under a new lease; the old job's writes are refused from now on.
        wait_until(lambda: (e := store.get_entry("node-alive/node-b")) and e.lease != old_lease, 60,
                   "node-b's new lease")
        time.sleep(3)          # progress is written every second: several writes were tried
        after = jobs.get(long.id)
        assert (after.state, after.error, after.log_count) == (JobState.FAILED, failed.error, logged)
        assert "stopped: this node no longer holds lease" in (tmp_path / "node-b" / "agent.log").read_text()
        again = jobs.submit("node.diagnostics", "node-b", {"samples": 5})
        assert wait_until(lambda: (j := jobs.get(again.id)).state.terminal and j, 60, "a new job").state \
            is JobState.SUCCESS
    finally:
        b.signal(signal.SIGCONT)
        b.stop()
        etcd.stop()
