"""Leaving a cluster and removing a dead node: the jobs that take a node out of the cluster.

`cluster.leave` (a job on the node that leaves; it must be up and the cluster healthy enough):
  1. refuses, naming the reason, when this is the cluster's last node, when another membership
     change is under way, when removing its etcd member would cost the cluster its quorum, while
     other jobs run or wait on the node, or while other nodes use what it holds (a VM elsewhere
     whose pool is here: merge.departure lists them);
  2. keeps a copy of its records (merge.departure: its pools, arrays, VMs, what lies on its pools,
     and a copy of all the cluster's file users and groups, and of the console's accounts, so
     whoever leaves logs in as before) in memory and in <state_dir>/cluster/leaving.json, so
     nothing is lost if the job dies half-way;
  3. talks to the other members only, and removes its own etcd member from the cluster (up to
     here a failure changes nothing);
  4. starts its own etcd again, standalone on loopback in a fresh data directory, and writes its
     records (and this job's) there;
  5. takes its records out of the cluster store in transactions, with its node records and its
     job indexes; the job's record there says it ended (the cluster does not see a node vanish);
     then moves the agent's client to its own store;
  6. switches its services back: cairn.toml without the cluster, a console certificate from a new
     CA of its own (the cluster's CA signs nothing here any more), the cluster files deleted,
     cairn-web reloaded; the agent starts again afterwards.

`cluster.remove` (a job on the node whose console was asked) takes out a node that is gone for
good: it refuses the node it runs on (that one leaves), a node that is up (it holds its lease:
it leaves from its own console) and a removal that would cost quorum; it removes the node's etcd
member, marks cluster/nodes/<id> "removed" and nodes/<name> removed (listed so, and no job is
queued for it any more; its pools, VMs and other records are kept as they are and shown with it:
never silently deleted) and promotes a learner when the cluster wants a voter.

Keys written here: cluster/nodes/<id> (marked removed), the records a leaving node takes along
(deleted from the cluster, written to its own store), jobs/<id> of the leave job.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cairn import config as config_mod
from cairn.cluster import events, membership, merge
from cairn.cluster.formation import (IMPORT_CHUNK, NODES, LocalNode, _until_answered, cluster_files,
                                     cluster_info, cluster_lock, cluster_nodes, member_at, member_states,
                                     peer_url, promote_while_wanted, wait_for_store)
from cairn.cluster.store import Delete, Put, Store
from cairn.errors import CairnError, Conflict, NotFound, PreconditionFailed, Unavailable, ValidationError
from cairn.jobs import model
from cairn.jobs.registry import job_kind
from cairn.jobs.service import LOCKS, QUEUE, RUNNING, record_writes
from cairn.system.files import write_private

LEAVING_FILE = "leaving.json"
CONSOLE_ACCOUNTS = "auth/users/"


def standalone_config(cfg: config_mod.Config) -> config_mod.Config:
    """This node's configuration once it is standalone again (pure)."""
    cluster = replace(cfg.cluster, ca="", cert="", key="", address="", interface="")
    return replace(cfg, etcd_endpoints=(cfg.cluster.standalone_endpoint,), cluster=cluster)


def standalone_environment(cfg: config_mod.Config, data_dir: str) -> str:
    """/etc/cairn/etcd.env of a standalone member (the image's drop-in has the rest: loopback only)."""
    return f"ETCD_NAME={cfg.node_name}\nETCD_DATA_DIR={data_dir}\n"


def start_leave(store: Store, cfg: config_mod.Config, jobs):
    """The cluster.leave job on this node (409 at once when it is not in a cluster)."""
    if cluster_info(store) is None or not cfg.cluster.tls:
        raise Conflict("this node is not in a cluster: there is nothing to leave")
    return jobs.submit("cluster.leave", cfg.node_name, {})


def start_remove(store: Store, cfg: config_mod.Config, jobs, node: str):
    """The cluster.remove job on this node, for `node` (name or id)."""
    if cluster_info(store) is None:
        raise Conflict("this node is not in a cluster")
    return jobs.submit("cluster.remove", cfg.node_name, {"target": node})


def remove_member(store: Store, member_id: str) -> None:
    """Remove an etcd member and wait until the store answers again (when the member led the
    cluster, the others elect a leader first). An answer lost in that election is checked against
    the membership: gone is done."""
    try:
        store.member_remove(member_id)
    except Unavailable:
        wait_for_store(store)
        if any(m.member_id == member_id for m in store.members()):
            raise
    wait_for_store(store)


def check_no_params(params: dict[str, Any]) -> dict[str, Any]:
    if params:
        raise ValidationError({name: "unknown parameter" for name in params})
    return {}


def check_remove(params: dict[str, Any]) -> dict[str, Any]:
    problems = {name: "unknown parameter" for name in set(params) - {"target"}}
    target = params.get("target")
    if not isinstance(target, str) or (config_mod.node_name_problem(target) and config_mod.node_id_problem(target)):
        problems["target"] = "the node to remove: its name or its id (machine-id)"
    if problems:
        raise ValidationError(problems)
    return {"target": target}


def _other_jobs(store: Store, node: str, job_id: str) -> list[str]:
    return sorted({e.key.rsplit("/", 1)[-1] for prefix in (RUNNING, QUEUE)
                   for e in store.list(f"{prefix}{node}/", keys_only=True)} - {job_id})


@job_kind("cluster.leave", title="Leave the cluster", check_params=check_no_params,
          locks=cluster_lock)
def leave_cluster(ctx, params: dict[str, Any]) -> dict[str, Any]:
    cfg: config_mod.Config = ctx.config
    store: Store = ctx.store
    ctx.progress(5, "checking that this node can leave")
    info = cluster_info(store)
    if info is None or not cfg.cluster.tls:
        raise Conflict("this node is not in a cluster")
    if set(cluster_nodes(store)) <= {cfg.node_id}:
        raise Conflict(f"{cfg.node_name} is the only node of cluster {info['name']}: there is no cluster "
                       "to leave; it keeps the cluster's settings")
    mine = member_at(store, cfg.cluster.address)
    if mine is None:
        raise Conflict(f"this node's etcd member ({peer_url(cfg.cluster.address)}) is not in the cluster")
    states = member_states(store)
    membership.check_one_change_at_a_time(states)
    membership.check_keeps_quorum(states, removing=mine.member_id)
    waiting = _other_jobs(store, cfg.node_name, ctx.job.id)
    if waiting:
        raise Conflict(f"jobs run or wait on {cfg.node_name} ({', '.join(waiting)}): let them end (or "
                       "abort them), then leave")
    records = {e.key: e.value for prefix in merge.MOVING for e in store.list(prefix)}
    leaving = merge.departure(records, cfg.node_name)
    if leaving.used_by_others:
        raise Conflict(f"other nodes use what {cfg.node_name} holds: {', '.join(leaving.used_by_others)}; "
                       "move or delete those first, then leave")

    ctx.progress(15, f"keeping a copy of this node's records ({len(leaving.moving)}, and "
                     f"{len(leaving.copied)} of the cluster's file users and groups)")
    kept = {key: records[key] for key in leaving.moving + leaving.copied}
    # The console's accounts are the cluster's while it is in one: they come along too (the user
    # who leaves logs in as before); sessions start anew (a new session key below).
    kept.update({e.key: e.value for e in store.list(CONSOLE_ACCOUNTS)})
    saved = cfg.state_dir / "cluster" / LEAVING_FILE
    write_private(saved, json.dumps(kept).encode())

    ctx.progress(25, "removing this node's etcd member from the cluster")
    old_endpoints, tls = list(store.endpoints), store.tls
    others = [url for m in store.members() if m.member_id != mine.member_id and not m.learner
              for url in m.client_urls]
    try:
        ctx.move_store(others, tls)
        remove_member(store, mine.member_id)
    except CairnError as exc:
        ctx.move_store(old_endpoints, tls)
        saved.unlink(missing_ok=True)
        raise CairnError(f"the cluster did not let this node's member go ({exc.message}); nothing was "
                         "changed: it is still a cluster node") from None
    ctx.log(f"etcd member {mine.member_id} removed: the cluster goes on without this node")
    # cluster/nodes/<this node> goes with its records, below: the cluster has one node fewer.
    ctx.log(_promote(store, len(cluster_nodes(store)) - 1))

    ctx.progress(45, "starting this node's own store again (standalone, loopback only)")
    # A fresh data directory that the removed member (which its service may restart meanwhile)
    # does not use; that member's directory goes once the new one runs.
    local = LocalNode(ctx.runner, cfg)
    in_use = local.data_dir_in_use()
    base = cfg.cluster.etcd_data_dir.rstrip("/")
    fresh = base if in_use.rstrip("/") != base else base + "-standalone"
    local.new_etcd_data_dir(fresh)
    local.restart_etcd(standalone_environment(cfg, fresh))
    own = Store([cfg.cluster.standalone_endpoint], store.root)
    _until_answered(own.revision)
    own.ensure_schema()
    _write_all(own, [Put(key, value) for key, value in kept.items()]
               + [Put("auth/session-secret", {"key": secrets.token_hex(32)})])
    shutil.rmtree(in_use, ignore_errors=True)

    ctx.progress(65, "taking this node's records out of the cluster")
    # From here on, this job writes to the node's own store: its record there first.
    _write_all(own, record_writes(ctx.job) + [Put(f"{RUNNING}{ctx.node}/{ctx.job.id}", {"since": ctx.job.started_at})])
    events.emit(store, severity="info", node=cfg.node_name, source="cluster",
                message=f"{cfg.node_name} left cluster {info['name']}"
                        + (f", taking {', '.join(leaving.held)}" if leaving.held else ""))
    result = {"left": info["name"], "records": len(leaving.moving), "held": list(leaving.held)}
    try:
        _take_out(ctx, store, cfg, leaving, result)
    except CairnError as exc:
        ctx.log(f"some of this node's records could not be taken out of the cluster ({exc.message}); "
                "they stay there, and this node has its copy")
    ctx.move_store([cfg.cluster.standalone_endpoint], None)
    ctx.log(f"this node's records are in its own store at {cfg.cluster.standalone_endpoint}")

    ctx.progress(80, "switching this node's services back to standalone")
    local.switch_to_standalone(standalone_config(cfg))
    for path in (*cluster_files(cfg).values(), *Path(cfg.cluster.etcd_tls_dir).glob("*")):
        Path(path).unlink(missing_ok=True)
    saved.unlink(missing_ok=True)
    ctx.restart_after = True
    ctx.progress(100, "done")
    return result


def _promote(store: Store, nodes: int) -> str:
    """Promote learners while the cluster (of `nodes` nodes) wants voters; the voters, in words."""
    promote_while_wanted(store, "", nodes)
    return f"voting members now: {sum(1 for s in member_states(store) if s.voter)} for {nodes} nodes"


def _write_all(store: Store, writes: list) -> None:
    for start in range(0, len(writes), IMPORT_CHUNK):
        store.txn([], writes[start:start + IMPORT_CHUNK])


def _take_out(ctx, store: Store, cfg: config_mod.Config, leaving: merge.Departure, result: dict) -> None:
    """Delete the leaving node's records and node records in the cluster; its job's record there
    ends (succeeded, with `result`), in the last transaction."""
    node = cfg.node_name
    locks = [e.key for e in store.list(LOCKS) if e.value.get("node") == node]
    status = [e.key for e in store.list(f"status/{node}/", keys_only=True)]
    # node-alive/<node> goes with the lease (the job's writes there are fenced by it until it moves).
    deletes = [Delete(key) for key in (*leaving.moving, *status, *locks, f"nodes/{node}", f"node-lost/{node}",
                                       NODES + cfg.node_id, f"{RUNNING}{node}/{ctx.job.id}")]
    ended = model.advance(ctx.job, model.Succeed(time.time(), result))
    _write_all(store, [*deletes, *record_writes(ended)[:1]])


@job_kind("cluster.remove", title="Remove node {target} from the cluster", check_params=check_remove,
          locks=cluster_lock)
def remove_node(ctx, params: dict[str, Any]) -> dict[str, Any]:
    cfg: config_mod.Config = ctx.config
    store: Store = ctx.store
    ctx.progress(5, f"checking that {params['target']} can be removed")
    info = cluster_info(store)
    if info is None:
        raise Conflict("this node is not in a cluster")
    known = cluster_nodes(store)
    node_id = next((i for i, v in known.items() if params["target"] in (i, v["name"])), None)
    if node_id is None:
        raise NotFound(f"no node {params['target']} in cluster {info['name']}")
    target = known[node_id]
    if node_id == cfg.node_id:
        raise Conflict(f"you are connected to {target['name']}: a node does not remove itself; to take it "
                       "out, leave the cluster from its console (it must be up)")
    if store.get(f"node-alive/{target['name']}") is not None:
        raise Conflict(f"{target['name']} is up (it holds its lease): a node that is up leaves the cluster "
                       "from its own console; remove only a node that is gone for good")
    states = member_states(store)
    member = member_at(store, target["address"])
    if member is not None:
        if any(s.member_id == member.member_id and s.healthy for s in states):
            raise Conflict(f"{target['name']}'s etcd member still answers: it is not gone; let it leave")
        membership.check_one_change_at_a_time([s for s in states if s.member_id != member.member_id])
        membership.check_keeps_quorum(states, removing=member.member_id)
        ctx.progress(30, f"removing {target['name']}'s etcd member {member.member_id}")
        try:
            remove_member(store, member.member_id)
        except CairnError as exc:
            raise PreconditionFailed(f"the cluster did not remove {target['name']}'s member: {exc.message}; "
                                     "nothing was changed") from None

    ctx.progress(60, f"marking {target['name']} removed (its records are kept)")
    now = time.time()
    store.update(NODES + node_id, lambda v: {**v, "state": "removed", "removed_at": now,
                                             "removed_by": cfg.node_name, "member_id": None})
    try:            # its inventory record too: listed as removed, and no job is queued for it
        store.update(f"nodes/{target['name']}", lambda v: {**v, "removed": True})
    except NotFound:
        pass
    records = {e.key: e.value for prefix in merge.MOVING for e in store.list(prefix)}
    held = merge.departure(records, target["name"]).held
    events.emit(store, severity="warning", node=cfg.node_name, source="cluster",
                message=f"{target['name']} was removed from cluster {info['name']} by {cfg.node_name}"
                        + (f"; what it held is kept, shown on a removed node: {', '.join(held)}" if held else ""))

    ctx.progress(80, "giving the cluster the voting members it needs")
    ctx.log(_promote(store, len(cluster_nodes(store))))
    ctx.progress(100, "done")
    return {"removed": target["name"], "node_id": node_id, "member_id": member.member_id if member else None,
            "held": list(held)}
