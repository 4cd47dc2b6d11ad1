"""Node membership records.

Keys:
    nodes/<name>        the node's inventory (CPUs, memory, kernel, boot, disks) and a few sampled
                        figures (available memory, load); written only by that node's agent, and
                        only when it changed (`worth_publishing`): the inventory at once, the
                        sampled figures when they moved noticeably and at most once a minute. So an
                        idle node adds nothing to the store's history.
    node-alive/<name>   {"since": t}; bound to the node's lease (TTL NODE_LEASE_TTL): it vanishes
                        when the agent stops refreshing, which is how everyone else sees a node die.
                        Liveness is the lease, never a periodic rewrite of a record.

Uptime is not stored (it changes every second): the record holds the boot time, and readers
compute the uptime (`list_nodes`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from cairn.cluster.store import Store

NODE_LEASE_TTL = 10

# Sampled figures are republished when they move this much, and at most every SAMPLE_MIN_INTERVAL s.
SAMPLED = ("memory_available", "load_1m")
MEMORY_STEP = 0.05              # of the node's memory
LOAD_STEP = 0.5                 # absolute, or LOAD_STEP_RELATIVE of the last value if larger
LOAD_STEP_RELATIVE = 0.25
SAMPLE_MIN_INTERVAL = 60.0


def worth_publishing(last: dict[str, Any] | None, current: dict[str, Any], now: float) -> bool:
    """Whether `current` (a node record) should replace `last`, the one last written (pure).

    Anything but the sampled figures differs → yes, at once. Sampled figures alone → only when
    one moved by its step and the last write is SAMPLE_MIN_INTERVAL old."""
    if last is None:
        return True
    if {k: v for k, v in last.items() if k not in SAMPLED + ("sampled_at",)} != \
            {k: v for k, v in current.items() if k not in SAMPLED + ("sampled_at",)}:
        return True
    if now - float(last.get("sampled_at", 0.0)) < SAMPLE_MIN_INTERVAL:
        return False
    total = max(1, int(current.get("memory_total", 0)))
    memory_moved = abs(int(current.get("memory_available", 0)) - int(last.get("memory_available", 0))) \
        >= MEMORY_STEP * total
    old_load = float(last.get("load_1m", 0.0))
    load_moved = abs(float(current.get("load_1m", 0.0)) - old_load) >= max(LOAD_STEP, LOAD_STEP_RELATIVE * old_load)
    return memory_moved or load_moved


class NodePublisher:
    """Writes nodes/<name> for one node's agent, only when worth it (see worth_publishing)."""

    def __init__(self, store: Store, name: str, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.name = name
        self.clock = clock
        self._last: dict[str, Any] | None = None

    def publish(self, inventory: dict[str, Any], version: str) -> bool:
        now = self.clock()
        current = {"name": self.name, "agent_version": version, **inventory}
        if not worth_publishing(self._last, {**current, "sampled_at": now}, now):
            return False
        record = {**current, "sampled_at": now}
        self.store.put(f"nodes/{self.name}", record)
        self._last = record
        return True

    def forget(self) -> None:
        """The next publish writes (the record may have been lost or changed by someone)."""
        self._last = None


def mark_alive(store: Store, name: str, lease: int, now: float) -> None:
    store.put(f"node-alive/{name}", {"since": now}, lease=lease)


def list_nodes(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Every node record with `online` (holds its lease) and `uptime` (from its boot time)."""
    now = time.time() if now is None else now
    alive = {e.key.removeprefix("node-alive/") for e in store.list("node-alive/")}
    nodes = []
    for entry in store.list("nodes/"):
        node = dict(entry.value)
        node["online"] = node["name"] in alive
        if "booted_at" in node:
            node["uptime"] = max(0.0, now - float(node["booted_at"]))
        node.setdefault("heartbeat_at", node.get("sampled_at"))
        nodes.append(node)
    return nodes
