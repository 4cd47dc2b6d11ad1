"""Cluster events: short notices for people (a job ended, a disk degraded) at events/<time>-<rand>.

Each event is written once by whoever noticed it and never changed; events expire after
RETENTION seconds through a shared lease, so the store does not grow without bound.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable

from cairn.cluster.store import Store

PREFIX = "events/"
RETENTION = 7 * 24 * 3600


def emit(store: Store, *, severity: str, node: str, source: str, message: str,
         clock: Callable[[], float] = time.time) -> dict[str, Any]:
    now = clock()
    event = {"time": now, "severity": severity, "node": node, "source": source, "message": message}
    key = f"{PREFIX}{now:017.6f}-{secrets.token_hex(3)}"
    store.put(key, event, lease=store.grant_lease(RETENTION))
    return event


def recent(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    return [e.value for e in store.list(PREFIX, limit=limit, descending=True)]
