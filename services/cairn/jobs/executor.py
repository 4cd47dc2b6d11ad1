"""Runs the jobs addressed to one node. Used only by that node's agent (the job records' writer).

A job goes: queued → (locks taken, all at once, bound to the node lease) → running → ended; locks
are freed at the end whatever happens. Fencing: a job runs under the node lease it started with;
every write for it (start, progress, end) holds only while `node-alive/<node>` is still bound to
that lease (store.held_by). A node that lost its lease (cut off from the store for longer than the
TTL, while the cluster failed its jobs: cluster.lost_nodes) gets LeaseLost at its next write: the
job's thread stops there and writes nothing more, so it never overwrites what the cluster decided. Progress writes are throttled to about one a second; state
changes are written at once. Abort requests are honoured between steps, where the handler calls
`ctx.check_abort()`; a queued job is aborted before it starts.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from cairn.cluster import events
from cairn.errors import CairnError, CommandFailed, Conflict
from cairn.jobs import model, registry
from cairn.jobs.model import Job
from cairn.cluster.store import Compare, held_by
from cairn.jobs.service import JobService, LeaseLost
from cairn.runner import Runner

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0


class JobAborted(Exception):
    """Raised inside a handler by check_abort(); ends the job as aborted."""


class JobContext:
    """What a job handler gets: its job's params, the runner, the store, and progress reporting."""

    def __init__(self, service: JobService, job: Job, runner: Runner,
                 clock: Callable[[], float] = time.time, config=None,
                 after_job: Callable[[Job], None] | None = None, fence: Compare | None = None,
                 node_hooks=None) -> None:
        self.service = service
        self.node_hooks = node_hooks    # the agent: move_store(), restart() (cluster jobs); None in bare tests
        self.restart_after = False      # the job asks its agent to start again once it has ended
        self.fence = fence              # the node lease the job runs under (None in bare tests)
        self.config = config            # the node's cairn.config.Config (None in bare tests)
        self.after_job = after_job      # runs before the end is recorded (e.g. republish the disk inventory)
        self.store = service.store
        self.runner = runner
        self.clock = clock
        self.job = job
        self.written_count = job.log_count    # log lines of the job already in the store
        self._last_write = 0.0
        self._pending = False

    @property
    def node(self) -> str:
        return self.job.node

    def progress(self, percent: int | None = None, description: str | None = None,
                 message: str | None = None) -> None:
        self.job = model.advance(self.job, model.Progress(self.clock(), percent, description, message))
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_INTERVAL or percent == 100:
            self.flush()
        else:
            self._pending = True

    def log(self, message: str) -> None:
        self.progress(message=message)

    def flush(self) -> None:
        self.service.write_progress(self.job, self.written_count, self.fence)
        self.written_count = self.job.log_count
        self._last_write = time.monotonic()
        self._pending = False

    def move_store(self, endpoints: list[str], tls) -> None:
        """This node's store moves (the node creates or joins a cluster): the agent's client
        follows, and the job goes on under the node's new lease there. A joining node has first
        copied the job's records into the cluster's store (JobService.record_writes)."""
        lease = self.node_hooks.move_store(endpoints, tls)
        self.fence = held_by(f"node-alive/{self.node}", lease)
        self.written_count = self.job.log_count

    def check_abort(self) -> None:
        if self.service.abort_requested(self.job.id):
            raise JobAborted()


class Executor:
    def __init__(self, service: JobService, node: str, runner: Runner, lease: Callable[[], int],
                 clock: Callable[[], float] = time.time, config=None,
                 after_job: Callable[[Job], None] | None = None, node_hooks=None) -> None:
        self.service = service
        self.node_hooks = node_hooks
        self.config = config
        self.after_job = after_job    # runs before the end is recorded (e.g. republish the disk inventory)
        self.node = node
        self.runner = runner
        self.lease = lease
        self.clock = clock
        self._running: dict[str, threading.Thread] = {}
        self._guard = threading.Lock()
        # One offer at a time: the queue watch and the lock watch both offer jobs, and two
        # threads starting the same job would have the loser free the winner's locks.
        self._offering = threading.Lock()

    def running_ids(self) -> list[str]:
        with self._guard:
            return [job_id for job_id, t in self._running.items() if t.is_alive()]

    def poll(self) -> None:
        """Start every queued job of this node whose locks are free; abort queued ones if asked."""
        for job, revision in self.service.queued_for(self.node):
            self.offer(job, revision)

    def offer(self, job: Job, revision: int) -> None:
        """Start this queued job if its locks are free (as poll does for each): the agent offers a
        job it has just seen queued in a watch event without listing every job first."""
        if job.node != self.node or job.state != model.JobState.QUEUED:
            return
        with self._offering:
            with self._guard:
                if job.id in self._running:
                    return
            try:
                self._try_start(job, revision)
            except Conflict:
                pass  # someone changed it meanwhile; the next poll sees the new state

    def _try_start(self, job: Job, revision: int) -> None:
        if self.service.abort_requested(job.id):
            self.service.apply(job, model.Abort(self.clock(), "aborted before it started"),
                               expect_revision=revision)
            return
        try:
            kind = registry.get_kind(job.kind)
        except CairnError:
            self.service.apply(job, model.Fail(self.clock(), f"this node does not know job kind {job.kind!r}"),
                               expect_revision=revision)
            return
        lease = self.lease()
        fence = held_by(f"node-alive/{self.node}", lease)
        blocked = self.service.acquire_locks(job, lease)
        if blocked is not None:
            holder = self.service.lock_holder(blocked) or {}
            if job.waiting_for != blocked:
                self.service.apply(job, model.Wait(blocked, holder.get("job", "?")), expect_revision=revision)
            return
        try:
            started = self.service.apply(job, model.Start(self.clock()), expect_revision=revision, fence=fence)
        except (Conflict, LeaseLost):
            self.service.release_locks(job)
            raise Conflict(f"job {job.id} not started: changed meanwhile, or the node lease was lost") from None
        thread = threading.Thread(target=self._run, args=(started, kind, fence), name=f"job-{job.id}", daemon=True)
        with self._guard:
            self._running[job.id] = thread
        thread.start()

    def _run(self, job: Job, kind: registry.JobKind, fence: Compare | None = None) -> None:
        ctx = JobContext(self.service, job, self.runner, self.clock, self.config, fence=fence,
                         node_hooks=self.node_hooks)
        try:
            event = self._outcome(ctx, kind)
            if event is None:
                return
            if self.after_job is not None:
                try:
                    self.after_job(job)
                except Exception:
                    log.exception("after-job hook failed for job %s", job.id)
            self._finish(ctx, event)
            if ctx.restart_after and self.node_hooks is not None:
                self.node_hooks.restart()
        finally:
            with self._guard:
                self._running.pop(job.id, None)

    def _outcome(self, ctx: JobContext, kind: registry.JobKind) -> model.JobEvent | None:
        """Run the handler: how the job ended, or None when the node lost the job's lease (then
        nothing more is written for it)."""
        job = ctx.job
        try:
            result = kind.handler(ctx, job.params) or {}
            return model.Succeed(self.clock(), result)
        except LeaseLost as lost:
            log.warning("job %s stopped: %s", job.id, lost)
            return None
        except JobAborted:
            return model.Abort(self.clock(), "aborted on request")
        except CommandFailed as exc:
            # The whole command and its error output go to the job's log and the agent's log;
            # the job's error (what API clients and the console show first) stays short.
            log.warning("job %s: %s", job.id, exc.log_text())
            ctx.job = model.advance(ctx.job, model.Progress(
                self.clock(), message=f"command {' '.join(exc.argv)} exited with {exc.returncode}"
                                      + (f"; its error output: {exc.stderr.strip()}" if exc.stderr.strip() else "")))
            return model.Fail(self.clock(), exc.message)
        except CairnError as exc:
            if exc.details:
                log.warning("job %s: %s", job.id, exc.log_text())
            return model.Fail(self.clock(), exc.message)
        except Exception as exc:  # a bug in a handler must still end the job
            log.exception("job %s crashed", job.id)
            return model.Fail(self.clock(), f"internal error: {type(exc).__name__}: {exc}")

    def _finish(self, ctx: JobContext, event: model.JobEvent) -> None:
        # The store may be briefly unreachable (leader election): keep trying to record the end.
        for attempt in range(60):
            try:
                self.service.apply(ctx.job, event, written_count=ctx.written_count, fence=ctx.fence)
                self.service.release_locks(ctx.job)
                self._emit_event(ctx.job, event)
                return
            except LeaseLost as lost:
                log.warning("job %s: its end is not recorded: %s", ctx.job.id, lost)
                return
            except CairnError as exc:
                log.warning("could not record the end of job %s (%s); retrying", ctx.job.id, exc.message)
                time.sleep(min(0.5 * (attempt + 1), 3.0))
        log.error("gave up recording the end of job %s", ctx.job.id)

    def _emit_event(self, job: Job, event: model.JobEvent) -> None:
        ended = model.advance(job, event)
        severity = {"success": "info", "failed": "error", "aborted": "warning"}[ended.state.value]
        events.emit(self.service.store, severity=severity, node=self.node, source=f"job:{job.id}",
                    message=f"{ended.title or ended.kind}: {ended.state.value}"
                            + (f" — {ended.error}" if ended.error else ""), clock=self.clock)
