"""/api/v1 storage routes: disks (inventory, SMART, self-tests), pools, volumes and snapshots.
Thin: schemas in, `StorageService` (cairn.storage.service) does the checking and submitting."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from cairn.storage.service import StorageService
from cairn.web import schemas
from cairn.web.app import services

bp = APIBlueprint("storage", __name__, tag="Storage")
SECURITY = ["token", "session"]


def svc() -> StorageService:
    return StorageService(services()["store"], services()["jobs"])


# --- disks ------------------------------------------------------------------------------------
@bp.get("/disks")
@bp.input(schemas.DiskQuery, location="query", arg_name="query")
@bp.output(schemas.DiskListOut)
@bp.doc(summary="Whole disks of every node with what uses them and their SMART health", security=SECURITY)
def list_disks(query: dict[str, Any]):
    return {"disks": svc().disks(query.get("node"), query.get("usage"))}


@bp.post("/nodes/<node>/disks/rescan")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Read the node's disks now (e.g. after plugging one in) instead of at the next refresh",
        security=SECURITY)
def rescan_disks(node: str):
    return svc().rescan(node)


@bp.get("/nodes/<node>/disks/<disk_id>")
@bp.output(schemas.NodeDiskOut)
@bp.doc(summary="One disk with its last SMART report", security=SECURITY)
def get_disk(node: str, disk_id: str):
    return svc().disk(node, disk_id)


@bp.post("/nodes/<node>/disks/<disk_id>/selftest")
@bp.input(schemas.SelfTestIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Start a SMART self-test (a job with progress; abortable)", security=SECURITY)
def start_selftest(node: str, disk_id: str, body: dict[str, Any]):
    return svc().selftest(node, disk_id, body["type"])


# --- pools ------------------------------------------------------------------------------------
@bp.get("/pools")
@bp.output(schemas.PoolListOut)
@bp.doc(summary="Pools of the cluster with their last observed status", security=SECURITY)
def list_all_pools():
    return {"pools": svc().pools()}


@bp.post("/pools")
@bp.input(schemas.PoolCreateIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Create a btrfs pool over free disks of one node (a job)", security=SECURITY,
        responses={202: "Job queued", 400: "Bad input (profile, disk count, unknown disk)",
                   404: "No such node", 409: "A disk is not free, or the name is taken"})
def create_pool(body: dict[str, Any]):
    return svc().create_pool(body)


@bp.get("/pools/<name>")
@bp.output(schemas.PoolOut)
@bp.doc(summary="One pool with usage, devices, scrub/balance state and volumes", security=SECURITY)
def get_one_pool(name: str):
    return svc().pool(name)


@bp.patch("/pools/<name>")
@bp.input(schemas.PoolPatchIn, arg_name="body")
@bp.output(schemas.PoolOut)
@bp.doc(summary="Change pool settings (scrub and balance schedules)", security=SECURITY,
        responses={400: "Bad input, every field named", 404: "No such pool",
                   409: "The pool changed meanwhile; try again"})
def patch_pool(name: str, body: dict[str, Any]):
    return svc().set_schedules(name, body)


@bp.delete("/pools/<name>")
@bp.input(schemas.ConfirmQuery, location="query", arg_name="query")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Destroy a pool and everything on it (needs ?confirm=<name>)", security=SECURITY,
        responses={202: "Job queued", 400: "confirm is missing or does not repeat the name", 404: "No such pool",
                   409: "Shares, iSCSI targets, images or VMs still use the pool (the message names them)"})
def destroy_pool(name: str, query: dict[str, Any]):
    return svc().destroy_pool(name, query.get("confirm"))


@bp.post("/pools/<name>/disks")
@bp.input(schemas.PoolExpandIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Add free disks to a pool and rebalance (a job)", security=SECURITY,
        responses={202: "Job queued", 400: "A disk is not on the pool's node", 404: "No such pool",
                   409: "A disk is not free, or the pool sits on an md array"})
def expand_pool(name: str, body: dict[str, Any]):
    return svc().expand_pool(name, body["disks"], body["balance"])


@bp.post("/pools/<name>/replace")
@bp.input(schemas.PoolReplaceIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Replace a pool disk (present or missing) by a free disk (a job)", security=SECURITY,
        responses={202: "Job queued", 400: "The old disk is not in the pool, or the new one not on its node",
                   404: "No such pool", 409: "The new disk is not free"})
def replace_pool_disk(name: str, body: dict[str, Any]):
    return svc().replace_disk(name, body["old"], body["new"])


@bp.post("/pools/<name>/scrub")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Scrub the pool: read and verify every copy (a job; abortable)", security=SECURITY)
def scrub_pool(name: str):
    return svc().pool_job(name, "scrub")


@bp.post("/pools/<name>/balance")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Rebalance the pool's data over its disks (a job; abortable)", security=SECURITY)
def balance_pool(name: str):
    return svc().pool_job(name, "balance")


# --- volumes ----------------------------------------------------------------------------------
@bp.get("/pools/<name>/volumes")
@bp.output(schemas.VolumeListOut)
@bp.doc(summary="Volumes of a pool with space used and snapshots", security=SECURITY)
def list_pool_volumes(name: str):
    return {"volumes": svc().volumes(name)}


@bp.post("/pools/<name>/volumes")
@bp.input(schemas.VolumeCreateIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Create a volume (btrfs subvolume) with an optional quota and snapshot schedule (a job)",
        security=SECURITY, responses={202: "Job queued", 400: "Bad input, every field named", 404: "No such pool",
                                      409: "The name is taken"})
def create_volume(name: str, body: dict[str, Any]):
    return svc().create_volume(name, body)


@bp.get("/pools/<name>/volumes/<volume>")
@bp.output(schemas.VolumeOut)
@bp.doc(summary="One volume with space used (exclusive vs shared) and its snapshots", security=SECURITY)
def get_one_volume(name: str, volume: str):
    return svc().volume(name, volume)


@bp.patch("/pools/<name>/volumes/<volume>")
@bp.input(schemas.VolumePatchIn, arg_name="body")
@bp.output(schemas.VolumePatchOut)
@bp.doc(summary="Change a volume's quota (a job) and/or snapshot schedule", security=SECURITY,
        responses={400: "Bad input, every field named", 404: "No such pool or volume",
                   409: "The volume changed meanwhile; try again"})
def patch_volume(name: str, volume: str, body: dict[str, Any]):
    return svc().patch_volume(name, volume, body)


@bp.delete("/pools/<name>/volumes/<volume>")
@bp.input(schemas.ConfirmQuery, location="query", arg_name="query")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Delete a volume and its snapshots (needs ?confirm=<volume>)", security=SECURITY,
        responses={202: "Job queued", 400: "confirm is missing or does not repeat the name",
                   404: "No such pool or volume", 409: "Shares or iSCSI targets use the volume (the message names them)"})
def delete_volume(name: str, volume: str, query: dict[str, Any]):
    return svc().delete_volume(name, volume, query.get("confirm"))


# --- snapshots --------------------------------------------------------------------------------
@bp.get("/pools/<name>/volumes/<volume>/snapshots")
@bp.output(schemas.SnapshotListOut)
@bp.doc(summary="Snapshots of a volume, oldest first", security=SECURITY)
def list_snapshots(name: str, volume: str):
    return {"snapshots": svc().snapshots(name, volume)}


@bp.post("/pools/<name>/volumes/<volume>/snapshots")
@bp.input(schemas.SnapshotCreateIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Take a read-only snapshot of a volume (a job)", security=SECURITY,
        responses={202: "Job queued", 404: "No such pool or volume"})
def create_snapshot(name: str, volume: str, body: dict[str, Any]):
    return svc().create_snapshot(name, volume, body.get("name"))


@bp.delete("/pools/<name>/volumes/<volume>/snapshots/<snapshot>")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Delete a snapshot (a job)", security=SECURITY)
def delete_snapshot(name: str, volume: str, snapshot: str):
    return svc().delete_snapshot(name, volume, snapshot)


@bp.post("/pools/<name>/volumes/<volume>/snapshots/<snapshot>/rollback")
@bp.input(schemas.RollbackIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Roll the volume back to the snapshot; its current content is discarded (a job)",
        security=SECURITY)
def rollback_snapshot(name: str, volume: str, snapshot: str, body: dict[str, Any]):
    return svc().rollback(name, volume, snapshot, body["confirm"])


@bp.post("/pools/<name>/volumes/<volume>/snapshots/<snapshot>/clone")
@bp.input(schemas.CloneIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Clone the snapshot as a new writable volume (a job)", security=SECURITY,
        responses={202: "Job queued", 400: "Bad name", 404: "No such pool, volume or snapshot",
                   409: "The name is taken"})
def clone_snapshot(name: str, volume: str, snapshot: str, body: dict[str, Any]):
    return svc().clone(name, volume, snapshot, body["name"])

# --- md RAID ----------------------------------------------------------------------------------
@bp.get("/arrays")
@bp.output(schemas.ArrayListOut)
@bp.doc(summary="md RAID arrays with their health and rebuild progress", security=SECURITY)
def list_arrays():
    return {"arrays": svc().arrays()}


@bp.post("/arrays")
@bp.input(schemas.ArrayCreateIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Create an md RAID array from free disks of one node (a job)", security=SECURITY,
        responses={202: "Job queued", 400: "Bad input (level, disk count, unknown disk)", 404: "No such node",
                   409: "A disk is not free, or the name is taken"})
def create_array(body: dict[str, Any]):
    return svc().create_array(body)


@bp.get("/arrays/<name>")
@bp.output(schemas.ArrayOut)
@bp.doc(summary="One array: members, state, rebuild progress", security=SECURITY)
def get_array(name: str):
    return svc().array(name)


@bp.post("/arrays/<name>/fail")
@bp.input(schemas.ArrayDiskIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Mark a member disk failed (before pulling it)", security=SECURITY)
def fail_array_disk(name: str, body: dict[str, Any]):
    return svc().array_member_job(name, "raid.fail", body["disk"])


@bp.post("/arrays/<name>/replace")
@bp.input(schemas.ArrayReplaceIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Replace a member by a free disk and rebuild (a job with progress)", security=SECURITY,
        responses={202: "Job queued", 400: "The old disk is no member, or the new one not on the array's node",
                   404: "No such array", 409: "The new disk is not free"})
def replace_array_disk(name: str, body: dict[str, Any]):
    return svc().replace_array_disk(name, body["old"], body["new"])


@bp.post("/arrays/<name>/grow")
@bp.input(schemas.ArrayDiskIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Grow the array by a free disk as an active member (not a spare); reshape is a job",
        security=SECURITY, responses={202: "Job queued", 400: "The disk is not on the array's node",
                                      404: "No such array", 409: "The disk is not free"})
def grow_array(name: str, body: dict[str, Any]):
    return svc().array_member_job(name, "raid.grow", body["disk"])


@bp.delete("/arrays/<name>")
@bp.input(schemas.ConfirmQuery, location="query", arg_name="query")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Stop an array and wipe its members' md superblocks (needs ?confirm=<name>)", security=SECURITY,
        responses={202: "Job queued", 400: "confirm is missing or does not repeat the name", 404: "No such array",
                   409: "A pool sits on the array"})
def delete_array(name: str, query: dict[str, Any]):
    return svc().delete_array(name, query.get("confirm"))
