"""Storage job kinds: each checks its params (pure), names its locks, and runs on the node that owns
the disk or pool, through `pools.Storage` and `smart`.

Locks: `disk:<node>/<disk id>` for every disk a job touches, `pool:<pool>` for anything that changes
a pool (so two jobs on one disk or pool never interleave: the second waits in the queue).
"""

from __future__ import annotations

import time
from typing import Any

from cairn.cluster import events
from cairn.config import StorageConfig
from cairn.jobs.registry import job_kind
from cairn.storage import disks, model, raid, smart
from cairn.storage.pools import Storage


def storage(ctx) -> Storage:
    settings = ctx.config.storage if getattr(ctx, "config", None) is not None else StorageConfig()
    return Storage(ctx.runner, ctx.store, ctx.node, settings)


def _only(params: dict[str, Any], allowed: set[str], problems: dict[str, str]) -> None:
    for key in sorted(set(params) - allowed):
        problems[f"params.{key}"] = "unknown parameter"


def _disk_list(value: Any, problems: dict[str, str], field: str = "disks") -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(d, str) and d for d in value):
        problems[field] = "must be a non-empty list of disk ids (serials)"
        return []
    if len(set(value)) != len(value):
        problems[field] = "names a disk more than once"
    return list(value)


REFERENCE_KINDS = {"pool": "pool name", "volume": "volume name", "array": "array name", "name": "name"}


def _string(params: dict[str, Any], key: str, problems: dict[str, str]) -> str:
    """A required reference: a pool, volume, array or snapshot name checked as such (so a name
    with a newline never reaches a command), a disk id as printable text."""
    value = params.get(key)
    if not isinstance(value, str) or not value:
        problems[key] = "required"
        return ""
    if key in REFERENCE_KINDS:
        return model.check_name(value, key, problems, REFERENCE_KINDS[key])
    if key == "snapshot":
        if not model.SNAPSHOT_NAME.fullmatch(value):
            problems[key] = "snapshot name must be 1-64 of letters, digits, '.', '-' and '_'"
            return ""
        return value
    if not value.isprintable() or len(value) > 256:
        problems[key] = "must be printable text of at most 256 characters"
        return ""
    return value


def _confirm(params: dict[str, Any], expected: str, what: str, problems: dict[str, str]) -> None:
    if params.get("confirm") != expected:
        problems["confirm"] = f"destroying {what} needs confirm={expected!r}"


def disk_locks(node: str, ids: list[str]) -> list[str]:
    return [f"disk:{node}/{d}" for d in ids]


# --- disks ------------------------------------------------------------------------------------
def check_selftest(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"disk", "type"}, problems)
    disk = _string(params, "disk", problems)
    kind = params.get("type", "short")
    if kind not in smart.SELFTEST_TYPES:
        problems["type"] = f"must be one of {', '.join(smart.SELFTEST_TYPES)}"
    model.raise_problems(problems)
    return {"disk": disk, "type": kind}


@job_kind("disk.selftest", title="SMART {type} self-test of {disk} on {node}", check_params=check_selftest,
          locks=lambda node, p: disk_locks(node, [p["disk"]]), abortable=True)
def run_selftest(ctx, params: dict[str, Any]) -> dict[str, Any]:
    found = disks.scan(ctx.runner, include_loop=storage(ctx).settings.include_loop)
    disk = disks.find(found, params["disk"], ctx.node)
    ctx.progress(1, f"starting a {params['type']} self-test on {disk.path}")
    smart.start_selftest(ctx.runner, disk.path, params["type"])
    time.sleep(1)
    while True:
        report = smart.read(ctx.runner, disk.path)
        test = report.selftest
        if test is None or not test.running:
            break
        try:
            ctx.check_abort()
        except Exception:
            smart.abort_selftest(ctx.runner, disk.path)
            raise
        remaining = test.remaining_percent if test.remaining_percent is not None else 100
        ctx.progress(min(99, max(1, 100 - remaining)), f"self-test running, {remaining} % left")
        time.sleep(5)
    result = {"disk": disk.id, "type": params["type"], "result": test.last_result if test else None,
              "passed": test.last_passed if test else None, "verdict": smart.assess(report)[0]}
    if test and test.last_passed is False:
        events.emit(ctx.store, severity="critical", node=ctx.node, source=f"disk:{disk.id}",
                    message=f"SMART self-test of {disk.id} on {ctx.node} failed: {test.last_result}")
    return result


def check_no_params(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, set(), problems)
    model.raise_problems(problems)
    return {}


@job_kind("disk.rescan", title="Rescan the disks of {node}", check_params=check_no_params)
def rescan(ctx, params: dict[str, Any]) -> dict[str, Any]:
    """Reads the disks now (a hot-plugged disk shows up at once; the agent publishes the
    inventory when the job ends) instead of at the next periodic refresh."""
    found = storage(ctx).inventory()
    return {"disks": len(found), "free": sum(1 for d in found if d.usage.kind == "free")}


# --- pools ------------------------------------------------------------------------------------
def check_pool_create(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"name", "disks", "profile", "metadata_profile", "compression", "array"}, problems)
    name = model.check_name(params.get("name"), "name", problems, "pool name")
    array = params.get("array")
    if array is not None and not isinstance(array, str):
        problems["array"] = "must be the name of an md array"
    if array is not None:
        if params.get("disks"):
            problems["disks"] = "give either disks or an array, not both"
        ids = []
    else:
        ids = _disk_list(params.get("disks"), problems)
    profile = params.get("profile")
    if profile is None and array is None:
        profile = "raid1" if len(ids) >= 2 else "single"
    profile, metadata = model.check_pool_layout(profile, params.get("metadata_profile"),
                                                len(ids), array is not None, problems)
    compression = model.check_compression(params.get("compression"), problems)
    model.raise_problems(problems)
    return {"name": name, "disks": ids, "profile": profile, "metadata_profile": metadata,
            "compression": compression, "array": array}


@job_kind("pool.create", title="Create pool {name} on {node}", check_params=check_pool_create,
          locks=lambda node, p: [f"pool:{p['name']}", *disk_locks(node, p["disks"]),
                                 *([f"array:{p['array']}"] if p.get("array") else [])])
def create_pool(ctx, params: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(5, "checking the disks are free")
    pool = model.Pool(name=params["name"], node=ctx.node, data_profile=params["profile"],
                      metadata_profile=params["metadata_profile"], compression=params["compression"],
                      disks=tuple(params["disks"]), array=params["array"])
    pool = storage(ctx).create_pool(pool, progress=ctx.progress)
    return {"pool": pool.name, "uuid": pool.uuid, "path": storage(ctx).path(pool.name)}


def check_pool_destroy(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"pool", "confirm"}, problems)
    pool = _string(params, "pool", problems)
    _confirm(params, pool, f"pool {pool}", problems)
    model.raise_problems(problems)
    return {"pool": pool, "confirm": pool}


@job_kind("pool.destroy", title="Destroy pool {pool}", check_params=check_pool_destroy,
          locks=lambda node, p: [f"pool:{p['pool']}"])
def destroy_pool(ctx, params: dict[str, Any]) -> dict[str, Any]:
    storage(ctx).destroy_pool(params["pool"], progress=ctx.progress)
    events.emit(ctx.store, severity="info", node=ctx.node, source=f"pool:{params['pool']}",
                message=f"pool {params['pool']} destroyed")
    return {"pool": params["pool"]}


def check_pool_expand(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"pool", "disks", "balance"}, problems)
    pool = _string(params, "pool", problems)
    ids = _disk_list(params.get("disks"), problems)
    balance = params.get("balance", True)
    if not isinstance(balance, bool):
        problems["balance"] = "must be true or false"
    model.raise_problems(problems)
    return {"pool": pool, "disks": ids, "balance": balance}


@job_kind("pool.expand", title="Add disks to pool {pool}", check_params=check_pool_expand,
          locks=lambda node, p: [f"pool:{p['pool']}", *disk_locks(node, p["disks"])], abortable=True)
def expand_pool(ctx, params: dict[str, Any]) -> dict[str, Any]:
    pool = storage(ctx).expand_pool(params["pool"], params["disks"], params["balance"], ctx)
    return {"pool": pool.name, "disks": list(pool.disks)}


def check_replace(container: str):
    """Params check of a disk replacement in a pool or an array: {container, old, new}."""
    def check(params: dict[str, Any]) -> dict[str, Any]:
        problems: dict[str, str] = {}
        _only(params, {container, "old", "new"}, problems)
        values = {key: _string(params, key, problems) for key in (container, "old", "new")}
        if values["old"] and values["old"] == values["new"]:
            problems["new"] = "must be a different disk from old"
        model.raise_problems(problems)
        return values
    return check


check_pool_replace = check_replace("pool")


@job_kind("pool.replace", title="Replace {old} by {new} in pool {pool}", check_params=check_pool_replace,
          locks=lambda node, p: [f"pool:{p['pool']}", *disk_locks(node, [p["old"], p["new"]])])
def replace_disk(ctx, params: dict[str, Any]) -> dict[str, Any]:
    pool = storage(ctx).replace_disk(params["pool"], params["old"], params["new"], ctx)
    return {"pool": pool.name, "disks": list(pool.disks)}


def check_pool_only(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"pool"}, problems)
    pool = _string(params, "pool", problems)
    model.raise_problems(problems)
    return {"pool": pool}


@job_kind("pool.scrub", title="Scrub pool {pool}", check_params=check_pool_only,
          locks=lambda node, p: [f"pool:{p['pool']}"], abortable=True)
def scrub_pool(ctx, params: dict[str, Any]) -> dict[str, Any]:
    status = storage(ctx).run_scrub(params["pool"], ctx)
    errors = status["corrected_errors"] + status["uncorrectable_errors"]
    if errors:
        events.emit(ctx.store, severity="warning" if not status["uncorrectable_errors"] else "critical",
                    node=ctx.node, source=f"pool:{params['pool']}",
                    message=f"scrub of pool {params['pool']} found {errors} errors "
                            f"({status['uncorrectable_errors']} uncorrectable)")
    return status


@job_kind("pool.balance", title="Balance pool {pool}", check_params=check_pool_only,
          locks=lambda node, p: [f"pool:{p['pool']}"], abortable=True)
def balance_pool(ctx, params: dict[str, Any]) -> dict[str, Any]:
    st = storage(ctx)
    pool = st.owned_pool(params["pool"])
    st.require_mounted(pool)
    status = st.run_balance(pool, ctx)
    st.publish_status(pool)
    return status


# --- volumes ----------------------------------------------------------------------------------
def check_volume_create(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"pool", "name", "quota_bytes", "schedule"}, problems)
    pool = _string(params, "pool", problems)
    name = model.check_volume_name(params.get("name"), problems)
    quota = model.check_quota(params.get("quota_bytes"), problems)
    schedule = model.check_schedule(params.get("schedule"), problems)
    model.raise_problems(problems)
    return {"pool": pool, "name": name, "quota_bytes": quota, "schedule": schedule.to_dict() if schedule else None}


@job_kind("volume.create", title="Create volume {pool}/{name}", check_params=check_volume_create,
          locks=lambda node, p: [f"pool:{p['pool']}"])
def create_volume(ctx, params: dict[str, Any]) -> dict[str, Any]:
    schedule = model.Schedule(**params["schedule"]) if params["schedule"] else None
    volume = storage(ctx).create_volume(model.Volume(params["pool"], params["name"], params["quota_bytes"], schedule))
    return {"pool": volume.pool, "volume": volume.name, "path": storage(ctx).volume_path(volume.pool, volume.name)}


def check_volume_quota(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"pool", "name", "quota_bytes"}, problems)
    values = {key: _string(params, key, problems) for key in ("pool", "name")}
    if "quota_bytes" not in params:
        problems["quota_bytes"] = "required (null removes the quota)"
    quota = model.check_quota(params.get("quota_bytes"), problems)
    model.raise_problems(problems)
    return {**values, "quota_bytes": quota}


@job_kind("volume.quota", title="Set the quota of volume {pool}/{name}", check_params=check_volume_quota,
          locks=lambda node, p: [f"pool:{p['pool']}"])
def set_quota(ctx, params: dict[str, Any]) -> dict[str, Any]:
    volume = storage(ctx).set_quota(params["pool"], params["name"], params["quota_bytes"])
    storage(ctx).publish_status(storage(ctx).owned_pool(params["pool"]))
    return {"pool": volume.pool, "volume": volume.name, "quota_bytes": volume.quota_bytes}


def check_volume_delete(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"pool", "name", "confirm"}, problems)
    values = {key: _string(params, key, problems) for key in ("pool", "name")}
    _confirm(params, values["name"], f"volume {values['name']} and its snapshots", problems)
    model.raise_problems(problems)
    return {**values, "confirm": values["name"]}


@job_kind("volume.delete", title="Delete volume {pool}/{name}", check_params=check_volume_delete,
          locks=lambda node, p: [f"pool:{p['pool']}"])
def delete_volume(ctx, params: dict[str, Any]) -> dict[str, Any]:
    storage(ctx).delete_volume(params["pool"], params["name"])
    return {"pool": params["pool"], "volume": params["name"]}


# --- snapshots --------------------------------------------------------------------------------
def check_snapshot_create(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"pool", "volume", "name"}, problems)
    values = {key: _string(params, key, problems) for key in ("pool", "volume")}
    name = model.check_snapshot_name(params.get("name"), problems)
    model.raise_problems(problems)
    return {**values, "name": name}


@job_kind("snapshot.create", title="Snapshot volume {pool}/{volume}", check_params=check_snapshot_create,
          locks=lambda node, p: [f"pool:{p['pool']}"])
def create_snapshot(ctx, params: dict[str, Any]) -> dict[str, Any]:
    st = storage(ctx)
    name = st.create_snapshot(params["pool"], params["volume"], params["name"])
    st.publish_status(st.owned_pool(params["pool"]))
    return {"pool": params["pool"], "volume": params["volume"], "snapshot": name}


def check_snapshot_ref(params: dict[str, Any], extra: set[str] = frozenset()) -> tuple[dict[str, Any], dict[str, str]]:
    problems: dict[str, str] = {}
    _only(params, {"pool", "volume", "snapshot", *extra}, problems)
    values = {key: _string(params, key, problems) for key in ("pool", "volume", "snapshot")}
    return values, problems


def check_snapshot_delete(params: dict[str, Any]) -> dict[str, Any]:
    values, problems = check_snapshot_ref(params)
    model.raise_problems(problems)
    return values


@job_kind("snapshot.delete", title="Delete snapshot {pool}/{volume}@{snapshot}", check_params=check_snapshot_delete,
          locks=lambda node, p: [f"pool:{p['pool']}"])
def delete_snapshot(ctx, params: dict[str, Any]) -> dict[str, Any]:
    st = storage(ctx)
    st.delete_snapshot(params["pool"], params["volume"], params["snapshot"])
    st.publish_status(st.owned_pool(params["pool"]))
    return params


def check_rollback(params: dict[str, Any]) -> dict[str, Any]:
    values, problems = check_snapshot_ref(params, {"confirm"})
    _confirm(params, values["volume"], f"the current content of volume {values['volume']}", problems)
    model.raise_problems(problems)
    return {**values, "confirm": values["volume"]}


@job_kind("snapshot.rollback", title="Roll volume {pool}/{volume} back to {snapshot}", check_params=check_rollback,
          locks=lambda node, p: [f"pool:{p['pool']}"])
def rollback(ctx, params: dict[str, Any]) -> dict[str, Any]:
    st = storage(ctx)
    st.rollback(params["pool"], params["volume"], params["snapshot"])
    st.publish_status(st.owned_pool(params["pool"]))
    return {"pool": params["pool"], "volume": params["volume"], "snapshot": params["snapshot"]}


def check_clone(params: dict[str, Any]) -> dict[str, Any]:
    values, problems = check_snapshot_ref(params, {"name"})
    name = model.check_volume_name(params.get("name"), problems)
    model.raise_problems(problems)
    return {**values, "name": name}


@job_kind("snapshot.clone", title="Clone {pool}/{volume}@{snapshot} as volume {name}", check_params=check_clone,
          locks=lambda node, p: [f"pool:{p['pool']}"])
def clone(ctx, params: dict[str, Any]) -> dict[str, Any]:
    st = storage(ctx)
    volume = st.clone(params["pool"], params["volume"], params["snapshot"], params["name"])
    st.publish_status(st.owned_pool(params["pool"]))
    return {"pool": volume.pool, "volume": volume.name, "path": st.volume_path(volume.pool, volume.name)}



# --- md RAID ----------------------------------------------------------------------------------
def arrays(ctx):
    from cairn.storage.arrays import Arrays
    return Arrays(storage(ctx))


def check_raid_create(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"name", "level", "disks"}, problems)
    name = model.check_name(params.get("name"), "name", problems, "array name")
    ids = _disk_list(params.get("disks"), problems)
    level = raid.check_create(params.get("level"), len(ids), problems)
    model.raise_problems(problems)
    return {"name": name, "level": level, "disks": ids}


@job_kind("raid.create", title="Create RAID {level} array {name} on {node}", check_params=check_raid_create,
          locks=lambda node, p: [f"array:{p['name']}", *disk_locks(node, p["disks"])])
def create_array(ctx, params: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(5, "checking the disks are free")
    array = arrays(ctx).create(params["name"], params["level"], params["disks"], progress=ctx.progress)
    return {"array": array.name, "uuid": array.uuid, "device": raid.device(array.name)}


def check_raid_member(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"array", "disk"}, problems)
    values = {key: _string(params, key, problems) for key in ("array", "disk")}
    model.raise_problems(problems)
    return values


@job_kind("raid.fail", title="Mark {disk} failed in array {array}", check_params=check_raid_member,
          locks=lambda node, p: [f"array:{p['array']}", *disk_locks(node, [p["disk"]])])
def fail_member(ctx, params: dict[str, Any]) -> dict[str, Any]:
    status = arrays(ctx).mark_failed(params["array"], params["disk"])
    return {"array": params["array"], "state": status["state"], "health": status["health"]}


check_raid_replace = check_replace("array")


@job_kind("raid.replace", title="Replace {old} by {new} in array {array}", check_params=check_raid_replace,
          locks=lambda node, p: [f"array:{p['array']}", *disk_locks(node, [p["old"], p["new"]])])
def replace_member(ctx, params: dict[str, Any]) -> dict[str, Any]:
    array = arrays(ctx).replace(params["array"], params["old"], params["new"], ctx)
    return {"array": array.name, "disks": list(array.disks)}


@job_kind("raid.grow", title="Grow array {array} with {disk}", check_params=check_raid_member,
          locks=lambda node, p: [f"array:{p['array']}", *disk_locks(node, [p["disk"]])])
def grow_array(ctx, params: dict[str, Any]) -> dict[str, Any]:
    array = arrays(ctx).grow(params["array"], params["disk"], ctx)
    return {"array": array.name, "disks": list(array.disks)}


def check_raid_delete(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"array", "confirm"}, problems)
    array = _string(params, "array", problems)
    _confirm(params, array, f"array {array}", problems)
    model.raise_problems(problems)
    return {"array": array, "confirm": array}


@job_kind("raid.delete", title="Stop and delete array {array}", check_params=check_raid_delete,
          locks=lambda node, p: [f"array:{p['array']}"])
def delete_array(ctx, params: dict[str, Any]) -> dict[str, Any]:
    arrays(ctx).delete(params["array"])
    return {"array": params["array"]}
