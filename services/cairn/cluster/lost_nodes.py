"""Nodes that stop answering: seen by the cluster, said in an event, and their jobs not left hanging.

A node is alive while its agent holds its lease (`node-alive/<node>`, TTL nodes.NODE_LEASE_TTL).
Every agent runs `LostNodes.run_once` every ROUND_SECONDS; one of them per round does the work (the
first to create `lost-nodes-round`, bound to a lease shorter than the round). It:
  - marks a known node (`nodes/<node>`) without a lease as lost (`node-lost/<node>` {"since": t})
    and raises an event ("node X stopped answering"); clears the mark and raises "node X is back"
    when its lease returns;
  - fails the jobs that were running on a lost node at once (its lease is gone, so it is no longer
    working for the cluster), saying so and freeing their locks;
  - fails the jobs queued for a node lost for QUEUED_GRACE seconds (an agent restart takes a few
    seconds; a job submitted meanwhile still runs when it is back).
A node that comes back finds its jobs already ended; its agent fails any it still lists as its own
at start (JobService.fail_orphans), as before.

`decide` is pure; `LostNodes` reads the indexes and applies what it returns. Writer of
`node-lost/`: the round's winner (only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from cairn.cluster import events
from cairn.cluster.store import Store
from cairn.errors import CairnError
from cairn.jobs import model
from cairn.jobs.service import QUEUE, RUNNING, JobService

log = logging.getLogger(__name__)

ROUND_KEY = "lost-nodes-round"
LOST = "node-lost/"
ROUND_SECONDS = 5.0
QUEUED_GRACE = 60.0


@dataclass(frozen=True)
class Decision:
    newly_lost: list[str] = field(default_factory=list)
    back: list[str] = field(default_factory=list)
    fail_running: list[tuple[str, str]] = field(default_factory=list)     # (node, job id)
    fail_queued: list[tuple[str, str]] = field(default_factory=list)


def decide(known: set[str], alive: set[str], lost_since: dict[str, float],
           running: dict[str, list[str]], queued: dict[str, list[str]], now: float,
           queued_grace: float = QUEUED_GRACE) -> Decision:
    """What to do this round (pure). `known`: nodes with a record; `alive`: nodes holding a lease;
    `lost_since`: the marks; `running`/`queued`: the job indexes, node → job ids."""
    down = (known | set(running) | set(queued)) - alive
    newly_lost = sorted(node for node in down if node not in lost_since)
    back = sorted(node for node in lost_since if node in alive)
    fail_running = sorted((node, job) for node in down for job in running.get(node, []))
    fail_queued = sorted((node, job) for node in down for job in queued.get(node, [])
                         if node in lost_since and now - lost_since[node] >= queued_grace)
    return Decision(newly_lost, back, fail_running, fail_queued)


class LostNodes:
    def __init__(self, store: Store, node: str, clock: Callable[[], float] = time.time,
                 queued_grace: float = QUEUED_GRACE) -> None:
        self.store = store
        self.node = node
        self.clock = clock
        self.queued_grace = queued_grace
        self.jobs = JobService(store, clock)

    def run_once(self) -> Decision | None:
        if not self._win_round():
            return None
        now = self.clock()
        decision = decide(
            known={e.key.removeprefix("nodes/") for e in self.store.list("nodes/", keys_only=True)},
            # This node is alive: it is running this round (its own lease may be a moment from
            # being written at its agent's start).
            alive={self.node} | {e.key.removeprefix("node-alive/")
                                 for e in self.store.list("node-alive/", keys_only=True)},
            lost_since={e.key.removeprefix(LOST): float(e.value.get("since", now)) for e in self.store.list(LOST)},
            running=self._index(RUNNING), queued=self._index(QUEUE), now=now, queued_grace=self.queued_grace)
        for node in decision.newly_lost:
            self.store.create(f"{LOST}{node}", {"since": now})
            events.emit(self.store, severity="warning", node=node, source="cluster",
                        message=f"node {node} stopped answering (its lease expired)", clock=self.clock)
        for node in decision.back:
            self.store.delete(f"{LOST}{node}")
            events.emit(self.store, severity="info", node=node, source="cluster",
                        message=f"node {node} is back", clock=self.clock)
        for node, job_id in decision.fail_running:
            self._fail(job_id, f"node {node} stopped answering while the job ran (its lease expired); "
                               "the work may be partly done")
        for node, job_id in decision.fail_queued:
            self._fail(job_id, f"node {node} has been down for over {self.queued_grace:.0f} s; the job was "
                               "not started (submit it again when the node is back)")
        return decision

    def _index(self, index: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for entry in self.store.list(index, keys_only=True):
            node, _, job_id = entry.key.removeprefix(index).partition("/")
            found.setdefault(node, []).append(job_id)
        return found

    def _fail(self, job_id: str, reason: str) -> None:
        entry = self.store.get_entry(f"jobs/{job_id}")
        if entry is None:
            return
        job = model.Job.from_dict(entry.value)
        if job.state.terminal:
            return
        try:
            # The end frees the job's locks in the same transaction (the node's lease, which they
            # were bound to, is gone anyway).
            self.jobs.apply(job, model.Fail(self.clock(), reason), expect_revision=entry.mod_revision)
            log.warning("job %s failed: %s", job_id, reason)
        except CairnError as exc:         # changed meanwhile (the node came back): next round decides
            log.info("job %s not failed this round: %s", job_id, exc)

    def _win_round(self) -> bool:
        return bool(self.store.claim(ROUND_KEY, {"node": self.node, "at": self.clock()},
                                     max(1, int(ROUND_SECONDS) - 1)))
