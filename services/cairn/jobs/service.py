"""Job records, their logs, per-node queues and named locks in the store.

Keys:
    jobs/<id>                the job record without its log (model.Job.to_record); created by
                             `submit`, then written only by the target node's agent (`apply`,
                             `write_progress`)
    job-order/<inverted id>  {}: jobs newest first in key order (listings page through it);
                             created with the record, deleted with it
    job-log/<id>/<seq>       one log line each ({"time", "message"}, seq zero-padded); the last
                             model.MAX_LOG_LINES are kept, older ones deleted in the same write
    job-queue/<node>/<id>    present while the job is queued: the node's agent reads only its own
                             queue, never the whole job list; created with the record, deleted in the
                             transaction that takes the job out of `queued`. An abort request for a
                             queued job rewrites it ({"abort": true}) so the agent's queue watch sees it.
    job-running/<node>/<id>  present while the job runs (orphans are found from it at agent start)
    job-aborts/<id>          an abort request; written by `request_abort`, read by the agent
    locks/<name>             {"job": id, "node": node}; created by the agent that runs the job, bound
                             to that agent's node lease so a dead agent's locks disappear with it

Job ids begin with their creation time, so jobs/ in key order is creation order (pruning reads
only its oldest end) and job-order/ is the reverse (listings page through it in the store: limit +
the last key seen).
History is bounded (`prune`): finished jobs older than keep_days, and the oldest finished ones
beyond keep_count, are deleted with their logs.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from cairn.cluster.store import Compare, Delete, Put, Store, absent, unchanged
from cairn.errors import Conflict, NotFound, PreconditionFailed, ValidationError
from cairn.jobs import model, registry
from cairn.jobs.model import Job, JobState

JOBS = "jobs/"
ORDER = "job-order/"
LOGS = "job-log/"
QUEUE = "job-queue/"
RUNNING = "job-running/"
ABORTS = "job-aborts/"
LOCKS = "locks/"

PAGE_SCAN_LIMIT = 1000        # records one filtered listing request reads at most
PRUNE_PAGE = 200
DELETE_BATCH = 100            # jobs per pruning transaction (4 operations each)


_INVERT = str.maketrans("0123456789", "9876543210")


def order_key(job_id: str) -> str:
    """job-order/<id with its digits inverted>: newest first in ascending key order (ids begin
    with their creation time). Inverting twice gives the id back."""
    return ORDER + job_id.translate(_INVERT)


def job_id_of(key: str) -> str:
    return key[len(ORDER):].translate(_INVERT)


def _seq(number: int) -> str:
    return f"{number:010d}"


def log_key(job_id: str, number: int) -> str:
    return f"{LOGS}{job_id}/{_seq(number)}"


def record_writes(job: Job) -> list[Put]:
    """Everything stored for a job: its record, its place in the listing order, its kept log."""
    return [Put(JOBS + job.id, job.to_record()), Put(order_key(job.id), {}),
            *(Put(log_key(job.id, number), {"time": line.time, "message": line.message})
              for number, line in model.unwritten_lines(job, 0))]


class LeaseLost(Exception):
    """A job's node lost the lease the job ran under (the store was out of its reach for longer
    than the lease's TTL): the cluster may already have failed the job, so the node must stop it
    and write nothing more for it. Not a CairnError: handlers must not catch it as a job failure."""


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next: str | None           # continue token for the next page, None at the end


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    """The job key a continue token stands for; ValidationError when it is not one of ours."""
    try:
        key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = ""
    if not re.fullmatch(r"job-order/[0-9A-Za-z-]{1,64}", key):
        raise ValidationError({"continue": "is not a continue token from a job listing"})
    return key


class JobService:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # --- API side ----------------------------------------------------------------------------
    def submit(self, kind_name: str, node: str, params: dict[str, Any]) -> Job:
        kind = registry.get_kind(kind_name)
        params = kind.check_params(params)
        record = self.store.get_entry(f"nodes/{node}")
        if record is None:
            raise ValidationError({"node": f"no node named {node!r} in this cluster"})
        if record.value.get("removed"):
            raise Conflict(f"node {node} was removed from the cluster: it runs no jobs")
        now = self.clock()
        job = Job(id=model.new_job_id(now), kind=kind.name, node=node, params=params,
                  title=kind.title.format(node=node, **params), abortable=kind.abortable,
                  locks=tuple(kind.locks(node, params)), created_at=now,
                  description="queued")
        if not self.store.txn([absent(JOBS + job.id)], [*record_writes(job),
                                                        Put(f"{QUEUE}{node}/{job.id}", {"kind": job.kind})]):
            raise Conflict(f"job id {job.id} already exists")
        return job

    def get(self, job_id: str) -> Job:
        entry = self.store.get_entry(JOBS + job_id)
        if entry is None:
            raise NotFound(f"no job with id {job_id!r}", job=job_id)
        lines = [e.value for e in self.store.list(f"{LOGS}{job_id}/")]
        return Job.from_dict({**entry.value, "log": lines})

    def page(self, *, state: str | None = None, node: str | None = None, limit: int = 100,
             after: str | None = None) -> JobPage:
        """Jobs newest first, `limit` at a time; `after` is the previous page's continue token.

        Pages are cut by the store: job-order/ lists jobs newest first in plain key order (etcd
        sorts a range other than by ascending key only after reading all of it), so a page costs
        the same with 100 or 100,000 jobs stored. Queued and running jobs come from their
        indexes; other filters read records page by page and stop after PAGE_SCAN_LIMIT, with a
        token to go on from there (a page may then hold fewer than `limit` jobs and have a next).
        """
        cursor = decode_token(after) if after else ""
        if state in (JobState.QUEUED.value, JobState.RUNNING.value):
            return self._page_of_index(QUEUE if state == JobState.QUEUED.value else RUNNING,
                                       state, node, limit, cursor)
        filtered = bool(state or node)
        batch = PRUNE_PAGE if filtered else limit + 1
        found: list[Job] = []
        scanned = 0
        while True:
            if scanned >= PAGE_SCAN_LIMIT:
                return JobPage(found, encode_token(cursor))
            keys = [e.key for e in self.store.list(ORDER, limit=batch, after=cursor, keys_only=True)]
            for key, entry in zip(keys, self.store.get_many([JOBS + job_id_of(k) for k in keys])):
                if len(found) == limit:
                    return JobPage(found, encode_token(cursor))     # `key` is still to come
                cursor = key
                scanned += 1
                if entry is None or (state and entry.value.get("state") != state) \
                        or (node and entry.value.get("node") != node):
                    continue
                found.append(Job.from_dict(entry.value))
            if len(keys) < batch:
                return JobPage(found, None)

    def _page_of_index(self, index: str, state: str, node: str | None, limit: int, cursor: str) -> JobPage:
        # Index keys are <index><node>/<id>: few (what is queued or running now), read whole.
        keys = [e.key for e in self.store.list(index + (f"{node}/" if node else ""), keys_only=True)]
        order = sorted(order_key(k.rsplit("/", 1)[1]) for k in keys)
        order = [k for k in order if k > cursor]
        chosen = order[:limit]
        jobs = [Job.from_dict(e.value) for e in self.store.get_many([JOBS + job_id_of(k) for k in chosen])
                if e is not None and e.value.get("state") == state]
        return JobPage(jobs, encode_token(chosen[-1]) if len(order) > limit else None)

    def list(self, *, state: str | None = None, node: str | None = None, limit: int = 100) -> list[Job]:
        """Newest first (the first page of `page`)."""
        return self.page(state=state, node=node, limit=limit).jobs

    def request_abort(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state.terminal:
            raise PreconditionFailed(f"job {job_id} has already ended ({job.state.value})")
        if not job.abortable and job.state is JobState.RUNNING:
            raise PreconditionFailed(f"job {job_id} ({job.kind}) cannot be aborted safely once running")
        request = Put(ABORTS + job_id, {"requested_at": self.clock()})
        queued = f"{QUEUE}{job.node}/{job.id}"
        # A queued job: poke its queue entry too, so its agent (which watches only its queue)
        # acts at once. If it has just left the queue, the request alone is written.
        self.store.txn([Compare(queued, "CREATE", "GREATER", 0)],
                       [request, Put(queued, {"kind": job.kind, "abort": True})], [request])
        return job

    def abort_requested(self, job_id: str) -> bool:
        return self.store.get_entry(ABORTS + job_id) is not None

    # --- agent side --------------------------------------------------------------------------
    def _log_writes(self, job: Job, written_count: int) -> list[Put | Delete]:
        writes: list[Put | Delete] = [Put(log_key(job.id, number), {"time": line.time, "message": line.message})
                                      for number, line in model.unwritten_lines(job, written_count)]
        # The kept window is the last MAX_LOG_LINES of all lines ever written — not what this copy
        # holds in memory (a record read without its log holds one line).
        first_kept = job.log_count - model.MAX_LOG_LINES
        if first_kept > 0 and writes:
            writes.append(Delete(f"{LOGS}{job.id}/", range_end=log_key(job.id, first_kept)))
        return writes

    def write_progress(self, job: Job, written_count: int, fence: Compare | None = None) -> None:
        """Write a running job's record and the log lines not written yet (one transaction); with
        a fence, only while the node still holds the lease the job runs under (else LeaseLost)."""
        writes = [Put(JOBS + job.id, job.to_record()), *self._log_writes(job, written_count)]
        if not self.store.txn([fence] if fence else [], writes):
            self._check_fence(fence)
            raise Conflict(f"job {job.id} was changed by someone else")

    def _check_fence(self, fence: Compare | None) -> None:
        """After a refused write: raise LeaseLost when the fence is what failed."""
        if fence is None:
            return
        entry = self.store.get_entry(fence.key)
        if entry is None or entry.lease != fence.value:
            raise LeaseLost(f"this node no longer holds lease {fence.value:x} ({fence.key}): "
                            "the cluster may have given its jobs up")

    def apply(self, job: Job, event: model.JobEvent, *, expect_revision: int | None = None,
              written_count: int | None = None, fence: Compare | None = None) -> Job:
        """Advance the job and write it, with its new log lines and index changes, in one
        transaction. With expect_revision, only if nobody wrote the record since.
        `written_count`: how many of the job's log lines are already stored (default: all)."""
        updated = model.advance(job, event)
        stored = job.log_count if written_count is None else written_count
        writes: list[Put | Delete] = [Put(JOBS + job.id, updated.to_record()), *self._log_writes(updated, stored)]
        compares = [] if expect_revision is None else [unchanged(JOBS + job.id, expect_revision)]
        if fence is not None:
            compares.append(fence)
        queued, running = f"{QUEUE}{job.node}/{job.id}", f"{RUNNING}{job.node}/{job.id}"
        if job.state is JobState.QUEUED and updated.state is not JobState.QUEUED:
            writes.append(Delete(queued))
        if updated.state is JobState.RUNNING and job.state is not JobState.RUNNING:
            writes.append(Put(running, {"since": updated.started_at}))
        if updated.state.terminal:
            writes.append(Delete(running))
            writes.append(Delete(ABORTS + job.id))   # in the same transaction: no stale request
            # ... and its locks go in the same transaction as its end: whoever sees the job
            # ended never finds its locks still held.
            for name in job.locks:
                entry = self.store.get_entry(LOCKS + name)
                if entry is not None and entry.value == {"job": job.id, "node": job.node}:
                    compares.append(unchanged(LOCKS + name, entry.mod_revision))
                    writes.append(Delete(LOCKS + name))
        if not self.store.txn(compares, writes):
            self._check_fence(fence)
            raise Conflict(f"job {job.id} was changed by someone else")
        return updated

    def _indexed(self, index: str, node: str, state: JobState) -> list[tuple[Job, int]]:
        keys = [e.key for e in self.store.list(f"{index}{node}/", keys_only=True)]
        ids = [k.rsplit("/", 1)[1] for k in keys]
        entries = [e for e in self.store.get_many([JOBS + i for i in ids])
                   if e is not None and e.value.get("state") == state.value and e.value.get("node") == node]
        entries.sort(key=lambda e: e.create_revision)
        return [(Job.from_dict(e.value), e.mod_revision) for e in entries]

    def queued_for(self, node: str) -> list[tuple[Job, int]]:
        """Queued jobs of a node with their mod revisions, in submission order (from its queue)."""
        return self._indexed(QUEUE, node, JobState.QUEUED)

    def running_on(self, node: str) -> list[Job]:
        return [job for job, _ in self._indexed(RUNNING, node, JobState.RUNNING)]

    def active(self, kind: str | None = None) -> list[Job]:
        """Every queued or running job of the cluster (from the two indexes), optionally of one kind."""
        ids = [e.key.rsplit("/", 1)[1] for index in (QUEUE, RUNNING) for e in self.store.list(index, keys_only=True)]
        jobs = [Job.from_dict(e.value) for e in self.store.get_many([JOBS + i for i in ids]) if e is not None]
        return [job for job in jobs if not job.state.terminal and (kind is None or job.kind == kind)]

    def fail_orphans(self, node: str, reason: str) -> list[Job]:
        """Mark the node's jobs that were running when its agent stopped as failed; free their locks."""
        failed = []
        for job in self.running_on(node):
            failed.append(self.apply(job, model.Fail(self.clock(), reason)))
            self.release_locks(job)
        return failed

    # --- history -----------------------------------------------------------------------------
    def prune(self, *, keep_days: float, keep_count: int) -> int:
        """Delete ended jobs (with their logs) that finished more than keep_days ago, and the
        oldest ended ones beyond keep_count. Queued and running jobs are never deleted. Reads
        only the oldest end of jobs/ (ids sort by creation time). Returns how many went.

        Any node may run it, even two at once: deleting a key twice is harmless."""
        now = self.clock()
        cutoff = now - keep_days * 86400
        excess = max(0, self.store.count(JOBS) - keep_count)
        deleted = 0
        after = ""
        while True:
            entries = self.store.list(JOBS, limit=PRUNE_PAGE, after=after)
            if not entries:
                break
            doomed: list[str] = []
            done = False
            for entry in entries:
                record = entry.value
                ended = record.get("state") in {s.value for s in JobState if s.terminal}
                old = ended and float(record.get("finished_at") or now) < cutoff
                if ended and (old or excess > 0):
                    doomed.append(record["id"])
                    excess = max(0, excess - 1)
                elif excess == 0 and float(record.get("created_at") or 0) >= cutoff:
                    done = True         # newer jobs finished after the cutoff too
                    break
            for begin in range(0, len(doomed), DELETE_BATCH):
                batch = doomed[begin:begin + DELETE_BATCH]
                self.store.txn([], [op for job_id in batch for op in (
                    Delete(JOBS + job_id), Delete(order_key(job_id)), Delete(f"{LOGS}{job_id}/", prefix=True),
                    Delete(ABORTS + job_id))])
                deleted += len(batch)
            if done or len(entries) < PRUNE_PAGE:
                break
            after = entries[-1].key
        return deleted

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
