"""Cluster events: short notices for people (a job ended, a disk degraded) at events/<time>-<rand>.

Each event is written once by whoever noticed it and never changed. History is bounded by
`prune` (run by the history keeper, cairn.cluster.history): events older than keep_days go, and
the oldest beyond keep_count. Keys sort by time, so both are one range delete.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable

from cairn.cluster.store import Store

PREFIX = "events/"


def _key(moment: float) -> str:
    return f"{PREFIX}{moment:017.6f}"


def emit(store: Store, *, severity: str, node: str, source: str, message: str,
         clock: Callable[[], float] = time.time) -> dict[str, Any]:
    now = clock()
    event = {"time": now, "severity": severity, "node": node, "source": source, "message": message}
    store.put(f"{_key(now)}-{secrets.token_hex(3)}", event)
    return event


def recent(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    return [e.value for e in store.list(PREFIX, limit=limit, descending=True)]


def prune(store: Store, *, now: float, keep_days: float, keep_count: int) -> int:
    """Delete events older than keep_days and the oldest beyond keep_count. Returns how many."""
    deleted = store.delete_range(PREFIX, _key(now - keep_days * 86400))
    excess = store.count(PREFIX) - keep_count
    if excess > 0:
        oldest = store.list(PREFIX, limit=excess, keys_only=True)
        if oldest:
            deleted += store.delete_range(PREFIX, oldest[-1].key + "\0")
    return deleted
