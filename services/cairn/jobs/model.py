"""Jobs as data: the record kept in etcd at /cairn/jobs/<id>, its log, and its state machine (pure).

    queued ──start──> running ──succeed──> success
       │                 ├──────fail─────> failed
       └──abort──────────┴─────abort─────> aborted

Writers: the web server (or any API client path) creates the record in state `queued`; from then
on only the agent of the job's target node writes it. An abort request is a separate key,
/cairn/job-aborts/<id>, written by the API, so the record keeps a single writer.

Terminal states accept no event; an unknown state raises at once.

The log lives apart from the record (cairn.jobs.service stores each line under its own key), so a
progress write does not rewrite the whole log: `log` holds the last MAX_LOG_LINES lines in memory,
`log_count` counts every line ever appended (line i of the job has sequence number i), and the
record carries only `last_log`, the newest line, for listings and live progress.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from cairn.errors import Conflict

MAX_LOG_LINES = 200
MAX_LOG_LINE_CHARS = 2000      # a longer line (a tool's whole stderr, say) is cut, saying so


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCESS, JobState.FAILED, JobState.ABORTED)


@dataclass(frozen=True)
class LogLine:
    time: float
    message: str


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    node: str
    params: dict[str, Any]
    state: JobState = JobState.QUEUED
    title: str = ""
    progress: int = 0                  # percent, 0..100
    description: str = ""              # what the job is doing now
    log: tuple[LogLine, ...] = ()
    result: dict[str, Any] | None = None
    error: str | None = None
    abortable: bool = False
    locks: tuple[str, ...] = ()
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    waiting_for: str | None = None     # lock we wait on, if any
    log_count: int = 0                 # lines ever appended; the kept ones are the last len(log)

    @property
    def last_log(self) -> str | None:
        return self.log[-1].message if self.log else None

    def to_record(self) -> dict[str, Any]:
        """What is stored at jobs/<id>: everything but the log (kept apart, line by line)."""
        return {
            "id": self.id, "kind": self.kind, "node": self.node, "params": self.params,
            "state": self.state.value, "title": self.title, "progress": self.progress,
            "description": self.description, "last_log": self.last_log, "log_count": self.log_count,
            "result": self.result, "error": self.error, "abortable": self.abortable,
            "locks": list(self.locks), "created_at": self.created_at,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "waiting_for": self.waiting_for,
        }

    def to_dict(self) -> dict[str, Any]:
        """The job as the API shows it: the record with its (kept) log."""
        return {**self.to_record(),
                "log": [{"time": line.time, "message": line.message} for line in self.log]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Job":
        """From a record (with the log's lines, when they were read, in data["log"]). A record
        read without its log keeps its newest line (last_log) as its one known line."""
        log = tuple(LogLine(line["time"], line["message"]) for line in data.get("log", []))
        if not log and data.get("last_log") is not None:
            log = (LogLine(float(data.get("finished_at") or data.get("started_at") or 0.0),
                           data["last_log"]),)
        return cls(
            id=data["id"], kind=data["kind"], node=data["node"], params=data.get("params", {}),
            state=JobState(data["state"]), title=data.get("title", ""),
            progress=int(data.get("progress", 0)), description=data.get("description", ""),
            log=log, result=data.get("result"), error=data.get("error"),
            abortable=bool(data.get("abortable", False)), locks=tuple(data.get("locks", [])),
            created_at=float(data.get("created_at", 0.0)), started_at=data.get("started_at"),
            finished_at=data.get("finished_at"), waiting_for=data.get("waiting_for"),
            log_count=int(data.get("log_count", len(log))),
        )


def new_job_id(now: float) -> str:
    """Sortable by creation time, unique without coordination."""
    moment = datetime.fromtimestamp(now, tz=timezone.utc)
    return f"{moment:%Y%m%d-%H%M%S}{moment.microsecond // 1000:03d}-{secrets.token_hex(3)}"


# --- events ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    now: float


@dataclass(frozen=True)
class Wait:
    lock: str
    holder: str


@dataclass(frozen=True)
class Progress:
    now: float
    percent: int | None = None
    description: str | None = None
    message: str | None = None     # a log line


@dataclass(frozen=True)
class Succeed:
    now: float
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fail:
    now: float
    error: str


@dataclass(frozen=True)
class Abort:
    now: float
    reason: str


JobEvent = Start | Wait | Progress | Succeed | Fail | Abort


def _cut(message: str) -> str:
    if len(message) <= MAX_LOG_LINE_CHARS:
        return message
    return message[:MAX_LOG_LINE_CHARS] + f" … ({len(message) - MAX_LOG_LINE_CHARS} more characters cut)"


def _append_log(job: Job, now: float, message: str) -> dict[str, Any]:
    """The log fields of `job` with one more line (for dataclasses.replace)."""
    return {"log": (job.log + (LogLine(now, _cut(message)),))[-MAX_LOG_LINES:],
            "log_count": job.log_count + 1}


def unwritten_lines(job: Job, written_count: int) -> list[tuple[int, LogLine]]:
    """The kept lines of `job` with sequence number >= written_count, numbered (pure)."""
    added = min(job.log_count - written_count, len(job.log))
    if added <= 0:
        return []
    return list(enumerate(job.log[len(job.log) - added:], start=job.log_count - added))


def _next_queued(job: Job, event: JobEvent) -> Job:
    if isinstance(event, Start):
        return replace(job, state=JobState.RUNNING, started_at=event.now, waiting_for=None,
                       **_append_log(job, event.now, "started"))
    if isinstance(event, Wait):
        return replace(job, waiting_for=event.lock,
                       description=f"waiting for lock {event.lock} (held by {event.holder})")
    if isinstance(event, Abort):
        return replace(job, state=JobState.ABORTED, finished_at=event.now, error=event.reason,
                       **_append_log(job, event.now, f"aborted: {event.reason}"))
    if isinstance(event, Fail):
        return replace(job, state=JobState.FAILED, finished_at=event.now, error=event.error,
                       **_append_log(job, event.now, f"failed: {event.error}"))
    raise Conflict(f"job {job.id} is queued and cannot take {type(event).__name__}")


def _next_running(job: Job, event: JobEvent) -> Job:
    if isinstance(event, Progress):
        percent = job.progress if event.percent is None else max(0, min(100, int(event.percent)))
        lines = _append_log(job, event.now, event.message) if event.message else {}
        return replace(job, progress=percent, **lines,
                       description=job.description if event.description is None else event.description)
    if isinstance(event, Succeed):
        return replace(job, state=JobState.SUCCESS, progress=100, finished_at=event.now,
                       result=event.result, description="done",
                       **_append_log(job, event.now, "finished"))
    if isinstance(event, Fail):
        return replace(job, state=JobState.FAILED, finished_at=event.now, error=event.error,
                       **_append_log(job, event.now, f"failed: {event.error}"))
    if isinstance(event, Abort):
        return replace(job, state=JobState.ABORTED, finished_at=event.now, error=event.reason,
                       **_append_log(job, event.now, f"aborted: {event.reason}"))
    raise Conflict(f"job {job.id} is running and cannot take {type(event).__name__}")


def _next_terminal(job: Job, event: JobEvent) -> Job:
    raise Conflict(f"job {job.id} has already ended ({job.state.value})")


_TRANSITIONS = {
    JobState.QUEUED: _next_queued,
    JobState.RUNNING: _next_running,
    JobState.SUCCESS: _next_terminal,
    JobState.FAILED: _next_terminal,
    JobState.ABORTED: _next_terminal,
}


def advance(job: Job, event: JobEvent) -> Job:
    """The job after `event`. Raises Conflict for an event its state does not accept."""
    try:
        step = _TRANSITIONS[job.state]
    except KeyError:
        raise ValueError(f"unknown job state {job.state!r}") from None
    return step(job, event)


def summary(job: Job) -> dict[str, Any]:
    """The record without its log, for listings."""
    return job.to_record()
