"""Node membership records.

Keys:
    nodes/<name>        inventory + heartbeat time; written only by that node's agent
    node-alive/<name>   {"since": t}; bound to the node's lease (TTL NODE_LEASE_TTL): it vanishes
                        when the agent stops refreshing, which is how everyone else sees a node die
"""

from __future__ import annotations

from typing import Any

from cairn.cluster.store import Store

NODE_LEASE_TTL = 10


def publish(store: Store, name: str, inventory: dict[str, Any], now: float, version: str) -> None:
    store.put(f"nodes/{name}", {"name": name, "heartbeat_at": now, "agent_version": version, **inventory})


def mark_alive(store: Store, name: str, lease: int, now: float) -> None:
    store.put(f"node-alive/{name}", {"since": now}, lease=lease)


def list_nodes(store: Store) -> list[dict[str, Any]]:
    alive = {e.key.removeprefix("node-alive/") for e in store.list("node-alive/")}
    nodes = []
    for entry in store.list("nodes/"):
        node = dict(entry.value)
        node["online"] = node["name"] in alive
        nodes.append(node)
    return nodes
