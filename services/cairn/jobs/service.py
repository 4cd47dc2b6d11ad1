"""Job records and named locks in the store.

Keys:
    jobs/<id>            the job record (model.Job); created by `submit`, then written only by the
                         target node's agent (through `JobService.apply`)
    job-aborts/<id>      an abort request; written by `request_abort`, read by the agent
    locks/<name>         {"job": id, "node": node}; created by the agent that runs the job, bound
                         to that agent's node lease so a dead agent's locks disappear with it
"""

from __future__ import annotations

import time
from typing import Any, Callable

from cairn.cluster.store import Compare, Delete, Put, Store, absent, unchanged
from cairn.errors import Conflict, NotFound, PreconditionFailed, ValidationError
from cairn.jobs import model, registry
from cairn.jobs.model import Job, JobState

JOBS = "jobs/"
ABORTS = "job-aborts/"
LOCKS = "locks/"


class JobService:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # --- API side ----------------------------------------------------------------------------
    def submit(self, kind_name: str, node: str, params: dict[str, Any]) -> Job:
        kind = registry.get_kind(kind_name)
        params = kind.check_params(params)
        if self.store.get_entry(f"nodes/{node}") is None:
            raise ValidationError({"node": f"no node named {node!r} in this cluster"})
        now = self.clock()
        job = Job(id=model.new_job_id(now), kind=kind.name, node=node, params=params,
                  title=kind.title.format(node=node, **params), abortable=kind.abortable,
                  locks=tuple(kind.locks(node, params)), created_at=now,
                  description="queued")
        if not self.store.create(JOBS + job.id, job.to_dict()):
            raise Conflict(f"job id {job.id} already exists")
        return job

    def get(self, job_id: str) -> Job:
        data = self.store.get(JOBS + job_id)
        if data is None:
            raise NotFound(f"no job with id {job_id!r}", job=job_id)
        return Job.from_dict(data)

    def list(self, *, state: str | None = None, node: str | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""
        jobs = [Job.from_dict(e.value) for e in self.store.list(JOBS, descending=True)]
        if state:
            jobs = [j for j in jobs if j.state.value == state]
        if node:
            jobs = [j for j in jobs if j.node == node]
        return jobs[:limit]

    def request_abort(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state.terminal:
            raise PreconditionFailed(f"job {job_id} has already ended ({job.state.value})")
        if not job.abortable and job.state is JobState.RUNNING:
            raise PreconditionFailed(f"job {job_id} ({job.kind}) cannot be aborted safely once running")
        self.store.put(ABORTS + job_id, {"requested_at": self.clock()})
        return job

    def abort_requested(self, job_id: str) -> bool:
        return self.store.get_entry(ABORTS + job_id) is not None

    # --- agent side --------------------------------------------------------------------------
    def apply(self, job: Job, event: model.JobEvent, *, expect_revision: int | None = None) -> Job:
        """Advance the job and write it. With expect_revision, only if nobody wrote it since."""
        updated = model.advance(job, event)
        writes: list[Put | Delete] = [Put(JOBS + job.id, updated.to_dict())]
        compares = [] if expect_revision is None else [unchanged(JOBS + job.id, expect_revision)]
        if updated.state.terminal:
            writes.append(Delete(ABORTS + job.id))   # in the same transaction: no stale request
            # ... and its locks go in the same transaction as its end: whoever sees the job
            # ended never finds its locks still held.
            for name in job.locks:
                entry = self.store.get_entry(LOCKS + name)
                if entry is not None and entry.value == {"job": job.id, "node": job.node}:
                    compares.append(unchanged(LOCKS + name, entry.mod_revision))
                    writes.append(Delete(LOCKS + name))
        if not self.store.txn(compares, writes):
            raise Conflict(f"job {job.id} was changed by someone else")
        return updated

    def queued_for(self, node: str) -> list[tuple[Job, int]]:
        """Queued jobs of a node with their mod revisions, in submission order."""
        entries = sorted((e for e in self.store.list(JOBS)
                          if e.value.get("node") == node and e.value.get("state") == JobState.QUEUED.value),
                         key=lambda e: e.create_revision)
        return [(Job.from_dict(e.value), e.mod_revision) for e in entries]

    def running_on(self, node: str) -> list[Job]:
        return [Job.from_dict(e.value) for e in self.store.list(JOBS)
                if e.value.get("node") == node and e.value.get("state") == JobState.RUNNING.value]

    def fail_orphans(self, node: str, reason: str) -> list[Job]:
        """Mark the node's jobs that were running when its agent stopped as failed; free their locks."""
        failed = []
        for job in self.running_on(node):
            failed.append(self.apply(job, model.Fail(self.clock(), reason)))
            self.release_locks(job)
        return failed

    # --- locks -------------------------------------------------------------------------------
    def acquire_locks(self, job: Job, lease: int) -> str | None:
        """Take all of the job's locks at once (one transaction), or none.

        Returns None when taken, or the name of a lock that is held by another job.
        A lock already held by this same job (a retry after a lost answer) counts as taken.
        """
        if not job.locks:
            return None
        holder = {"job": job.id, "node": job.node}
        compares = [absent(LOCKS + name) for name in job.locks]
        puts = [Put(LOCKS + name, holder, lease) for name in job.locks]
        if self.store.txn(compares, puts):
            return None
        for name in job.locks:
            current = self.store.get(LOCKS + name)
            if current is not None and current.get("job") != job.id:
                return name
        # Every lock is free or ours: take the free ones.
        remaining = [n for n in job.locks if self.store.get(LOCKS + n) is None]
        if remaining and not self.store.txn([absent(LOCKS + n) for n in remaining],
                                             [Put(LOCKS + n, holder, lease) for n in remaining]):
            return remaining[0]
        return None

    def lock_holder(self, name: str) -> dict[str, Any] | None:
        return self.store.get(LOCKS + name)

    def release_locks(self, job: Job) -> None:
        for name in job.locks:
            key = LOCKS + name
            # Delete only if this job still holds it.
            self.store.txn([Compare(key, "VALUE", "EQUAL", {"job": job.id, "node": job.node})],
                           [Delete(key)])
