"""Live updates for /api/v1/events/stream: one store watch per cairn-web worker process, fanned out
to every open event stream (Server-Sent Events).

    etcd ──Store.watch("")──▶ EventHub._watch (one per process: a thread, which is a greenlet under
                              gunicorn's gevent worker)
                              └─▶ Backlog: the last BACKLOG messages clients follow, by position
    every stream (EventHub.follow) ─ replays from the Backlog what its client has not seen, then
                                     waits on the hub for more; it holds no worker thread and no
                                     store connection of its own.

Positions: (revision, n), the n-th followed change (n = 0, 1, ...) of an etcd revision. A message's
SSE id is "<revision>" ("<revision>.<n>" for a revision's further changes, which no writer makes
today), so the Last-Event-ID a browser's EventSource sends on reconnect names exactly what it has
and only what it missed is replayed. The `since` query (the store revision a page was rendered at)
means "everything up to and including that revision".

When a client's position is older than what the backlog keeps (evicted, or from before this
process began watching), it gets an explicit `reload` event (its view may miss changes; the
console reloads the page) and then live messages from now on.

Who writes what: only the hub's watch thread adds to the backlog; streams only read it.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from cairn.cluster.store import Store
from cairn.errors import CairnError

log = logging.getLogger("cairn.web")

Position = tuple[int, int]
END = sys.maxsize                 # (revision, END): every change of that revision
# Messages kept for replay. A dropped stream is back within seconds (the retry hint is 2 s), and
# 1024 changes is minutes of a busy cluster (job progress is written about once a second per job);
# a message is a record of a few KiB at most, so a worker keeps a few MiB.
BACKLOG = 1024
KEEPALIVE_SECONDS = 15.0
WATCH_IDLE_SECONDS = 15.0
RETRY_MILLISECONDS = 2000
_ID = re.compile(r"([0-9]{1,19})(?:\.([0-9]{1,9}))?")


def sse_message(key: str, value: Any) -> str | None:
    """One SSE event (without its id) for a store change, or None for changes clients don't
    follow (pure)."""
    if value is None:
        return None
    if key.startswith("jobs/"):
        data = dict(value)
        if "log" in data:                       # a record that still carries its log
            log_lines = data.pop("log") or []
            data["last_log"] = log_lines[-1]["message"] if log_lines else None
        data.setdefault("last_log", None)
        return f"event: job\ndata: {json.dumps(data)}\n\n"
    if key.startswith("events/"):
        return f"event: event\ndata: {json.dumps(value)}\n\n"
    if key.startswith("nodes/"):
        return f"event: node\ndata: {json.dumps(value)}\n\n"
    return None


def event_id(position: Position) -> str:
    revision, index = position
    return str(revision) if index == 0 else f"{revision}.{index}"


def parse_event_id(text: str | None) -> Position | None:
    """The position an SSE id names; None for an id this server never sent."""
    found = _ID.fullmatch((text or "").strip())
    if not found:
        return None
    return int(found.group(1)), int(found.group(2) or 0)


def start_position(last_event_id: str | None, since: int | None) -> Position | None:
    """Where a stream starts: after the Last-Event-ID the client sent, else after the `since`
    revision, else (None) from now."""
    position = parse_event_id(last_event_id)
    if position is not None:
        return position
    return None if since is None else (since, END)


def reload_event(reason: str, revision: int) -> str:
    return f"event: reload\ndata: {json.dumps({'reason': reason, 'revision': revision})}\n\n"


@dataclass(frozen=True)
class Message:
    position: Position
    text: str                     # the whole SSE event, id included


@dataclass
class Backlog:
    """The recent messages by position (pure: no locks, no I/O).

    `covered_after`: every followed change after this position is kept here. `seen`: the position
    up to which the watch has delivered changes (a stream that names no position starts there)."""
    capacity: int
    covered_after: Position
    seen: Position
    messages: list[Message] = field(default_factory=list)
    _revision: int = -1
    _count: int = 0

    def note(self, revision: int, body: str | None) -> Message | None:
        """The watch saw a change at `revision`; `body` is its SSE event when clients follow it."""
        if revision != self._revision:
            self._revision, self._count = revision, 0
        if body is None:
            self.seen = max(self.seen, (revision, self._count - 1))
            return None
        position = (revision, self._count)
        self._count += 1
        message = Message(position, f"id: {event_id(position)}\n{body}")
        self.messages.append(message)
        if len(self.messages) > self.capacity:
            excess = len(self.messages) - self.capacity
            self.covered_after = self.messages[excess - 1].position
            del self.messages[:excess]
        self.seen = max(self.seen, position)
        return message

    def lost(self, revision: int) -> None:
        """The changes before `revision` will never be seen (the store compacted them away)."""
        gap = (revision - 1, END)
        self.messages = [message for message in self.messages if message.position > gap]
        self.covered_after = max(self.covered_after, gap)
        self.seen = max(self.seen, gap)

    def after(self, position: Position) -> list[Message] | None:
        """The messages after `position`, or None when some of them are no longer kept."""
        if position < self.covered_after:
            return None
        start = bisect.bisect_right(self.messages, position, key=lambda message: message.position)
        return self.messages[start:]


class EventHub:
    """One store watch per process, fanned out to every stream of that process. `start` begins the
    watch (once per process; the first stream or the worker's start calls it)."""

    def __init__(self, store: Store, capacity: int = BACKLOG, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.capacity = capacity
        self.clock = clock
        self._changed = threading.Condition()
        self._backlog: Backlog | None = None
        self._pid = 0
        self._stop = threading.Event()

    def start(self, position: Position | None = None) -> None:
        """Watch from now, or, when a stream asks for a recent past (at most `capacity` revisions
        back) before this process watches, from where that stream stands. Raises Unavailable when
        the store cannot be reached."""
        with self._changed:
            if self._backlog is not None and self._pid == os.getpid():
                return
            current = self.store.revision()
            first = current + 1
            if position is not None:
                wanted = position[0] + 1 if position[1] == END else position[0]
                if 0 < wanted <= first and first - wanted <= self.capacity:
                    first = wanted
            self._backlog = Backlog(self.capacity, covered_after=(first - 1, END), seen=(current, END))
            self._pid = os.getpid()
            self._stop.clear()
            threading.Thread(target=self._watch, args=(first,), name="cairn-event-hub", daemon=True).start()
            log.info("event hub of process %d watches the store from revision %d", self._pid, first)

    def stop(self) -> None:
        self._stop.set()

    def _watch(self, first: int) -> None:
        next_revision = first
        while not self._stop.is_set():
            try:
                for event in self.store.watch("", next_revision, idle_timeout=WATCH_IDLE_SECONDS, stop=self._stop):
                    if event is None:
                        continue
                    if event.kind == "compacted":
                        # etcd no longer has the changes before event.revision: whoever stands
                        # before it gets a reload event.
                        next_revision = event.revision
                        with self._changed:
                            self._backlog.lost(event.revision)
                            self._changed.notify_all()
                        log.warning("event hub: changes before revision %d were compacted away", event.revision)
                        continue
                    next_revision = event.revision + 1
                    body = sse_message(event.key, event.value)
                    with self._changed:
                        if self._backlog.note(event.revision, body) is not None:
                            self._changed.notify_all()
            except CairnError as exc:
                log.warning("event hub: %s; watching again from revision %d", exc.message, next_revision)
                self._stop.wait(2.0)
            except Exception:
                log.exception("event hub: the watch failed; watching again from revision %d", next_revision)
                self._stop.wait(2.0)

    def follow(self, position: Position | None, *, until: float,
               keepalive: float = KEEPALIVE_SECONDS) -> Iterator[str]:
        """The text of one event stream: what the client missed after `position` (all of it, or a
        reload event), then changes as they come, with a keep-alive comment when quiet, until the
        clock reaches `until` (the client reconnects by itself, with its Last-Event-ID)."""
        yield f"retry: {RETRY_MILLISECONDS}\n\n"
        with self._changed:
            backlog = self._backlog
            if position is None:
                position = backlog.seen
        while True:
            with self._changed:
                pending = backlog.after(position)
                if pending == []:
                    left = until - self.clock()
                    if left <= 0:
                        return
                    self._changed.wait(min(keepalive, left))
                    pending = backlog.after(position)
                seen = backlog.seen
            if pending is None:
                yield reload_event("this stream's position is older than the changes this server keeps: "
                                   "reload what you show", seen[0])
                position = seen
            elif pending:
                yield "".join(message.text for message in pending)
                position = pending[-1].position
            elif self.clock() < until:
                yield ": keep-alive\n\n"
            else:
                return
