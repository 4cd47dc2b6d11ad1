"""Console pages for storage: disks and pools on one page, a page per pool with its volumes and
snapshots. Forms post here (CSRF-checked by the app's gate); every change is a job, and the
browser is sent to the job's page to watch it. Refusals show the error page with the reason."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import redirect, render_template, request, url_for

from cairn.cluster import nodes
from cairn.errors import ValidationError
from cairn.storage import model, raid
from cairn.storage.service import StorageService
from cairn.web import forms
from cairn.web.app import services

bp = APIBlueprint("storage_console", __name__, enable_openapi=False)
GiB = 1 << 30


def svc() -> StorageService:
    return StorageService(services()["store"], services()["jobs"])


def to_job(job: dict):
    return redirect(url_for("console.job_detail", job_id=job["id"]))


def form_int(name: str, default: int) -> int:
    return forms.whole_number(request.form, name, default)


@bp.get("/storage")
def storage():
    service = svc()
    return render_template("storage.html", disks=service.disks(), pools=service.pools(), arrays=service.arrays(),
                           levels=list(raid.LEVELS),
                           nodes=[n["name"] for n in nodes.list_nodes(service.store)],
                           profiles=list(model.PROFILES), compressions=model.COMPRESSION)


@bp.post("/storage/pools")
def create_pool():
    body = {"name": request.form.get("name", ""), "node": request.form.get("node", ""),
            "disks": request.form.getlist("disks"), "profile": request.form.get("profile", "raid1"),
            "compression": request.form.get("compression", "none")}
    if request.form.get("array"):
        body.update(array=request.form["array"], disks=None, profile=None)
    elif not body["disks"]:
        raise ValidationError({"disks": "tick at least one free disk (or choose an md array)"})
    return to_job(svc().create_pool(body))


@bp.post("/storage/arrays")
def create_array():
    disk_ids = request.form.getlist("disks")
    if not disk_ids:
        raise ValidationError({"disks": "tick the free disks for the array"})
    return to_job(svc().create_array({"name": request.form.get("array_name", ""),
                                      "node": request.form.get("node", ""),
                                      "level": request.form.get("level", ""), "disks": disk_ids}))


@bp.post("/storage/arrays/<name>/<action>")
def array_action(name: str, action: str):
    service = svc()
    if action in ("fail", "grow"):
        return to_job(service.array_member_job(name, f"raid.{action}", request.form.get("disk", "")))
    if action == "replace":
        return to_job(service.replace_array_disk(name, request.form.get("old", ""), request.form.get("new", "")))
    if action == "delete":
        return to_job(service.delete_array(name, request.form.get("confirm")))
    raise ValidationError({"action": f"unknown array action {action!r}"})


@bp.post("/storage/disks/<node>/<disk_id>/selftest")
def selftest(node: str, disk_id: str):
    return to_job(svc().selftest(node, disk_id, request.form.get("type", "short")))


@bp.post("/storage/nodes/<node>/rescan")
def rescan(node: str):
    return to_job(svc().rescan(node))


@bp.get("/storage/pools/<name>")
def pool(name: str):
    service = svc()
    info = service.pool(name)
    free = [d for d in service.disks(info["node"], "free")]
    return render_template("pool.html", pool=info, volumes=service.volumes(name), free=free)


@bp.post("/storage/pools/<name>/<action>")
def pool_action(name: str, action: str):
    service = svc()
    if action in ("scrub", "balance"):
        return to_job(service.pool_job(name, action))
    if action == "expand":
        return to_job(service.expand_pool(name, request.form.getlist("disks"), True))
    if action == "replace":
        return to_job(service.replace_disk(name, request.form.get("old", ""), request.form.get("new", "")))
    if action == "destroy":
        return to_job(service.destroy_pool(name, request.form.get("confirm")))
    if action == "schedules":
        service.set_schedules(name, {"scrub_schedule": request.form.get("scrub_schedule") or None,
                                     "balance_schedule": request.form.get("balance_schedule") or None})
        return redirect(url_for("storage_console.pool", name=name))
    if action == "volumes":
        quota = forms.decimal_number(request.form, "quota_gib")
        body = {"name": request.form.get("name", ""),
                "quota_bytes": int(quota * GiB) if quota is not None else None, "schedule": None}
        if request.form.get("every"):
            body["schedule"] = {"every": request.form["every"], "keep_last": form_int("keep_last", 7),
                                "keep_hourly": form_int("keep_hourly", 0), "keep_daily": form_int("keep_daily", 7),
                                "keep_weekly": form_int("keep_weekly", 4)}
        return to_job(service.create_volume(name, body))
    raise ValidationError({"action": f"unknown pool action {action!r}"})


@bp.post("/storage/pools/<name>/volumes/<volume>/<action>")
def volume_action(name: str, volume: str, action: str):
    service = svc()
    if action == "snapshot":
        return to_job(service.create_snapshot(name, volume, request.form.get("snapshot_name") or None))
    if action == "delete":
        return to_job(service.delete_volume(name, volume, request.form.get("confirm")))
    snapshot = request.form.get("snapshot", "")
    if action == "rollback":
        return to_job(service.rollback(name, volume, snapshot, request.form.get("confirm")))
    if action == "clone":
        return to_job(service.clone(name, volume, snapshot, request.form.get("new_name", "")))
    if action == "delete-snapshot":
        return to_job(service.delete_snapshot(name, volume, snapshot))
    raise ValidationError({"action": f"unknown volume action {action!r}"})
