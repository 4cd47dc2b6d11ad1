"""Console pages for virtual machines: every VM of the cluster on one page (with the New VM form),
and a page per VM with its settings and snapshots. Forms post here (CSRF-checked by the app's
gate) and go through VmService, as the API does; every change is a job, and the browser is sent
to the job's page to watch it. Refusals (400/404/409 from VmService) show the error page with the
reason. What a VM is doing (state, accelerator, snapshots) is what its node's agent last wrote."""

from __future__ import annotations

import re
from pathlib import Path

from apiflask import APIBlueprint
from flask import redirect, render_template, request, send_from_directory, url_for

from cairn.compute import model
from cairn.compute.service import LIFECYCLE, RUNNING, VmService
from cairn.runner import Runner
from cairn.errors import Conflict, ValidationError
from cairn.storage.pools import list_pools
from cairn.web import forms
from cairn.web.app import services

bp = APIBlueprint("vms_console", __name__, enable_openapi=False)
NOVNC_DIR = "/usr/share/novnc"        # Debian's novnc package (the image and `make test` install it)


def svc() -> VmService:
    cfg = services()["cfg"]
    return VmService(services()["store"], services()["jobs"], cfg.node_name, Runner(),
                     image_dirs=cfg.compute.image_dirs)


def to_job(job: dict):
    return redirect(url_for("console.job_detail", job_id=job["id"]))


def form_int(name: str, default: int) -> int:
    return forms.whole_number(request.form, name, default)


def new_vm_body() -> dict:
    """The New VM form as VmService.create takes it (which checks every field at once)."""
    sizes = [s for s in re.split(r"[\s,]+", request.form.get("disks", "")) if s]
    body = {"name": request.form.get("name", "").strip(), "pool": request.form.get("pool", ""),
            "vcpus": form_int("vcpus", 1), "memory_mib": form_int("memory_mib", 1024),
            "firmware": request.form.get("firmware", "uefi"),
            "disks": [{"size": size} for size in sizes or ["20G"]],
            "nics": [{"bridge": request.form.get("bridge", "").strip() or "br0"}],
            "autostart": bool(request.form.get("autostart"))}
    iso = request.form.get("iso", "").strip()
    if iso:
        body["cdrom"] = iso
    image = request.form.get("image", "").strip()
    if image:          # the first disk is made from the image (as large as the image, or the size given)
        first = {"import": image}
        if sizes:
            first["size"] = sizes[0]
        body["disks"] = [first] + [{"size": size} for size in sizes[1:]]
    return body


@bp.get("/vms")
def vms():
    return render_template("vms.html", vms=svc().vms(), pools=[p.name for p in list_pools(services()["store"])],
                           firmwares=model.FIRMWARE, running=RUNNING)


@bp.post("/vms")
def create_vm():
    return to_job(svc().create(new_vm_body())["job"])


@bp.get("/vms/<name>")
def vm(name: str):
    service = svc()
    record = service.vm(name)
    try:
        serial = service.serial_log(name, services()["cfg"].compute.log_dir, 16 << 10)
    except Conflict as exc:
        serial = {"text": "", "elsewhere": exc.message}
    return render_template("vm.html", vm=record, running=RUNNING, serial=serial)


@bp.get("/vms/<name>/console")
def vm_console(name: str):
    """The VM's screen in noVNC, over the WebSocket relay of GET /api/v1/vms/<name>/vnc."""
    record = svc().vm(name)
    return render_template("vm_console.html", vm=record, running=RUNNING,
                           here=record["node"] == services()["cfg"].node_name,
                           novnc=Path(NOVNC_DIR, "core", "rfb.js").exists())


@bp.get("/novnc/<path:filename>")
def novnc(filename: str):
    return send_from_directory(NOVNC_DIR, filename)


@bp.post("/vms/<name>/<action>")
def vm_action(name: str, action: str):
    service = svc()
    if action in LIFECYCLE:
        return to_job(service.action(name, action, {}))
    if action == "clone":
        return to_job(service.clone(name, {"count": form_int("count", 1)}))
    if action == "delete":
        return to_job(service.delete(name, keep_disks=bool(request.form.get("keep_disks")),
                                     force=bool(request.form.get("force"))))
    if action == "snapshot":
        return to_job(service.snapshot(name, {"name": request.form.get("snapshot_name", "").strip() or None}))
    if action == "edit":
        return to_job(service.update(name, edit_body(service.vm(name))))
    raise ValidationError({"action": f"unknown VM action {action!r}"})


def edit_body(current: dict) -> dict:
    """What the settings form changes (only fields that differ, so a running VM can still get a new
    description or autostart without touching what needs it stopped)."""
    wanted = {"vcpus": form_int("vcpus", current["vcpus"]), "memory_mib": form_int("memory_mib", current["memory_mib"]),
              "cdrom": request.form.get("cdrom", "").strip() or None,
              "description": request.form.get("description", "").strip(),
              "autostart": bool(request.form.get("autostart"))}
    changed = {key: value for key, value in wanted.items() if value != current.get(key)}
    if not changed:
        raise ValidationError({"settings": "nothing changed"})
    return changed


@bp.post("/vms/<name>/snapshots/<snapshot>/<action>")
def snapshot_action(name: str, snapshot: str, action: str):
    service = svc()
    if action == "revert":
        return to_job(service.revert(name, snapshot))
    if action == "restore":
        return to_job(service.restore(name, snapshot, {"name": request.form.get("new_name", "").strip()}))
    if action == "delete":
        return to_job(service.delete_snapshot(name, snapshot))
    raise ValidationError({"action": f"unknown snapshot action {action!r}"})
