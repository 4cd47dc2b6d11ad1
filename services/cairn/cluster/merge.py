"""What a joining node brings into the cluster, and the names that would clash (pure).

A node that already holds pools, shares or VMs joins with them: its records move into the
cluster's store. Names are cluster-wide for everything a user picks a name for — pools, RAID
arrays, shares, file users and groups, iSCSI targets, VMs — so a join is refused, before anything
changes, when one of the joining node's names is taken in the cluster; the refusal lists every
clashing name ("pool tank", "VM web"), so the user can rename them on one side and try again.
Volumes and images live under their pool (`volumes/<pool>/…`, `images/<pool>/…`), so they cannot
clash once their pools do not.

A node that leaves takes the same kinds of records back out (`departure`): its pools, arrays and
VMs, what lies on its pools, their observed state and claims; the cluster's file users and groups
stay in the cluster and the node takes a copy.

The inputs are store keys (relative to the root), as Store.list(prefix, keys_only=True) gives them
(`departure` also reads values: which node a record names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cairn.errors import Conflict

# Store prefix → what the console calls a record of it, for the names that are cluster-wide.
CLUSTER_WIDE = {
    "pools/": "pool",
    "arrays/": "RAID array",
    "shares/": "share",
    "share-users/": "file user",
    "share-groups/": "file group",
    "iscsi-targets/": "iSCSI target",
    "vms/": "VM",
}
# Records that come along under their pool's name.
UNDER_A_POOL = ("volumes/", "images/")
# Claims of values that must be unique in the cluster (a file user's or group's id, a VM's MAC
# address, an iSCSI IQN): the same key on both sides is a clash too.
CLAIMS = {"share-ids/uid/": "file user id", "share-ids/gid/": "file group id", "vm-macs/": "VM MAC address",
          "iscsi-iqns/": "iSCSI IQN"}
# What the agent reports of the records (observed state): it comes along, and is written anew by
# the joined node's agent anyway.
OBSERVED = ("pool-status/", "array-status/", "vm-status/", "iscsi-status/", "iscsi-trash/",
            "pool-maintenance/")


def named(keys: list[str]) -> set[tuple[str, str]]:
    """(prefix, name) of every cluster-wide record among keys."""
    found = set()
    for key in keys:
        for prefix in CLUSTER_WIDE:
            if key.startswith(prefix) and "/" not in key[len(prefix):] and key[len(prefix):]:
                found.add((prefix, key[len(prefix):]))
    return found


def clashes(joining: list[str], cluster: list[str]) -> list[str]:
    """The joining node's names and claims already taken in the cluster, as the console says them,
    sorted."""
    taken = named(joining) & named(cluster)
    found = [f"{CLUSTER_WIDE[prefix]} {name}" for prefix, name in taken]
    both = set(joining) & set(cluster)
    for prefix, what in CLAIMS.items():
        found += [f"{what} {key[len(prefix):]}" for key in both if key.startswith(prefix)]
    return sorted(found)


def check_no_clash(joining: list[str], cluster: list[str]) -> None:
    found = clashes(joining, cluster)
    if found:
        raise Conflict(f"{len(found)} name{'s' if len(found) > 1 else ''} of this node "
                       f"{'are' if len(found) > 1 else 'is'} already used in the cluster: {', '.join(found)}; "
                       "rename them on one side, then join again (nothing was changed)")


# Every prefix whose records a joining node brings into the cluster store.
MOVING = tuple(CLUSTER_WIDE) + UNDER_A_POOL + tuple(CLAIMS) + OBSERVED


# --- leaving: what goes with a node, what it takes a copy of, what holds it back (pure) -----------
# File users and groups (and their id claims) are the cluster's: a leaving node takes a copy (its
# shares' permissions name them) and they stay in the cluster.
ACCOUNTS = ("share-users/", "share-groups/", "share-ids/")


@dataclass(frozen=True)
class Departure:
    moving: tuple[str, ...]             # keys that go with the node (out of the cluster once copied)
    copied: tuple[str, ...]             # cluster-wide accounts it takes a copy of
    held: tuple[str, ...]               # its records by name, as the console says them ("pool tank")
    used_by_others: tuple[str, ...]     # what other nodes use of it: the leave is refused while any


def _name(key: str, prefix: str) -> str | None:
    """The record's name when key is prefix<name> (nothing below it), else None."""
    rest = key[len(prefix):] if key.startswith(prefix) else ""
    return rest if rest and "/" not in rest else None


def departure(records: dict[str, Any], node: str) -> Departure:
    """Which of the cluster's records (key → value, those under MOVING) belong to `node`, by the
    rule its records came in with: its pools, arrays and VMs (their `node`), what lies on its pools
    (volumes, images, shares, iSCSI targets and their LUN tombstones), the observed state of each,
    and the claims of its VMs' MACs and its targets' IQNs."""
    def names(prefix: str, test) -> set[str]:
        return {n for key, value in records.items() if (n := _name(key, prefix)) and test(value)}

    pools = names("pools/", lambda v: v.get("node") == node)
    arrays = names("arrays/", lambda v: v.get("node") == node)
    vms = names("vms/", lambda v: v.get("node") == node)
    shares = names("shares/", lambda v: v.get("pool") in pools)
    targets = names("iscsi-targets/", lambda v: v.get("pool") in pools)
    by_name = {"pools/": pools, "pool-status/": pools, "pool-maintenance/": pools, "arrays/": arrays,
               "array-status/": arrays, "vms/": vms, "vm-status/": vms, "shares/": shares,
               "iscsi-targets/": targets, "iscsi-status/": targets}

    def goes(key: str, value: Any) -> bool:
        for prefix, owned in by_name.items():
            if key.startswith(prefix):
                return _name(key, prefix) in owned
        if key.startswith(UNDER_A_POOL):
            return key.split("/")[1] in pools
        if key.startswith("iscsi-trash/"):
            return value.get("pool") in pools
        if key.startswith("iscsi-iqns/"):
            return value.get("target") in targets
        if key.startswith("vm-macs/"):
            return value.get("vm") in vms
        return False

    moving = tuple(sorted(key for key, value in records.items() if goes(key, value)))
    copied = tuple(sorted(key for key in records if key.startswith(ACCOUNTS)))
    held = tuple(sorted(f"{CLUSTER_WIDE[prefix]} {name}" for prefix, group in
                        (("pools/", pools), ("arrays/", arrays), ("vms/", vms), ("shares/", shares),
                         ("iscsi-targets/", targets)) for name in group))
    used = tuple(sorted(f"pool {value['pool']} (VM {name} on {value.get('node')})"
                        for key, value in records.items() if (name := _name(key, "vms/"))
                        and value.get("pool") in pools and value.get("node") != node))
    return Departure(moving, copied, held, used)
