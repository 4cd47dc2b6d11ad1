"""What a joining node brings into the cluster, and the names that would clash (pure).

A node that already holds pools, shares or VMs joins with them: its records move into the
cluster's store. Names are cluster-wide for everything a user picks a name for — pools, RAID
arrays, shares, file users and groups, iSCSI targets, VMs — so a join is refused, before anything
changes, when one of the joining node's names is taken in the cluster; the refusal lists every
clashing name ("pool tank", "VM web"), so the user can rename them on one side and try again.
Volumes and images live under their pool (`volumes/<pool>/…`, `images/<pool>/…`), so they cannot
clash once their pools do not.

The inputs are store keys (relative to the root), as Store.list(prefix, keys_only=True) gives them.
"""

from __future__ import annotations

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


def brought(keys: list[str]) -> list[str]:
    """The joining node's keys that move into the cluster store (its desired state), in key order."""
    moving = tuple(CLUSTER_WIDE) + UNDER_A_POOL + tuple(CLAIMS) + OBSERVED
    return sorted(key for key in keys if key.startswith(moving))
