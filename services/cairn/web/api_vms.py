"""/api/v1 routes for virtual machines. Thin: schemas in, VmService (cairn.compute.service) checks,
writes the records and queues the jobs that the VM's node runs."""

from __future__ import annotations

import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from apiflask import APIBlueprint
from flask import Response, request

from cairn.compute.service import VmService
from cairn.errors import AuthenticationError, CairnError, Conflict, ValidationError
from cairn.runner import Runner
from cairn.web import schemas, schemas_vms as vs, websocket
from cairn.web.app import services

log = logging.getLogger("cairn.web")
bp = APIBlueprint("vms", __name__, tag="Virtual machines")
SECURITY = ["token", "session"]


def svc() -> VmService:
    cfg = services()["cfg"]
    return VmService(services()["store"], services()["jobs"], cfg.node_name, Runner(),
                     image_dirs=cfg.compute.image_dirs)


@bp.get("/vms")
@bp.output(vs.VmListOut)
@bp.doc(summary="VMs of the cluster with their last observed state", security=SECURITY)
def list_vms():
    return {"vms": svc().vms()}


@bp.post("/vms")
@bp.input(vs.VmCreateIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Create a VM on its pool's node (a job: subvolume, thin disks, libvirt domain)", security=SECURITY,
        responses={202: "Job queued", 400: "Bad input (e.g. more memory than the node has)",
                   409: "The name or a MAC address is taken"})
def create_vm(body: dict[str, Any]):
    return svc().create(body)["job"]


@bp.get("/vms/<name>")
@bp.output(vs.VmOut)
@bp.doc(summary="One VM", security=SECURITY)
def get_vm(name: str):
    return svc().vm(name)


@bp.patch("/vms/<name>")
@bp.input(vs.VmPatchIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Change vCPUs, memory or the ISO (VM stopped), description or autostart (any time)",
        security=SECURITY, responses={202: "Job queued (libvirt gets the new definition)",
                                      400: "Bad input, or more than the node has", 409: "The VM is running"})
def update_vm(name: str, body: dict[str, Any]):
    return svc().update(name, body)


@bp.delete("/vms/<name>")
@bp.input(vs.VmDeleteQuery, location="query", arg_name="query")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Delete a VM with its disks and snapshots (or keep the disks)", security=SECURITY,
        responses={202: "Job queued", 409: "The VM is running (use force=true)"})
def delete_vm(name: str, query: dict[str, Any]):
    return svc().delete(name, query["keep_disks"], query["force"])


@bp.post("/vms/<name>/actions/<action>")
@bp.input(vs.VmStopIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="start, stop (ACPI, then optionally power off), poweroff, reboot, pause or resume", security=SECURITY)
def vm_action(name: str, action: str, body: dict[str, Any]):
    return svc().action(name, action, body)


@bp.post("/vms/<name>/clones")
@bp.input(vs.VmCloneIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Clone a stopped VM N times: reflink copies with new names, MACs and UUIDs", security=SECURITY,
        responses={202: "Job queued", 409: "The VM is running (clone from a snapshot), or a name is taken"})
def clone_vm(name: str, body: dict[str, Any]):
    return svc().clone(name, body)


@bp.get("/vms/<name>/snapshots")
@bp.output(vs.VmSnapshotListOut)
@bp.doc(summary="The VM's snapshots (as its node last reported)", security=SECURITY)
def list_snapshots(name: str):
    return {"snapshots": (svc().vm(name).get("status") or {}).get("snapshots") or []}


@bp.post("/vms/<name>/snapshots")
@bp.input(vs.VmSnapshotIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Snapshot the VM's disks and definition (quiesced when a guest agent answers)", security=SECURITY,
        responses={202: "Job queued", 400: "Bad snapshot name", 404: "No such VM",
                   409: "The VM has a snapshot of that name"})
def snapshot_vm(name: str, body: dict[str, Any]):
    return svc().snapshot(name, body)


@bp.delete("/vms/<name>/snapshots/<snapshot>")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Delete a snapshot of the VM", security=SECURITY,
        responses={202: "Job queued", 400: "Bad snapshot name", 404: "No such VM"})
def delete_snapshot(name: str, snapshot: str):
    return svc().delete_snapshot(name, snapshot)


@bp.post("/vms/<name>/snapshots/<snapshot>/revert")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Put the (stopped) VM's disks back as they were in the snapshot", security=SECURITY,
        responses={202: "Job queued", 400: "Bad snapshot name", 404: "No such VM", 409: "The VM is running"})
def revert_vm(name: str, snapshot: str):
    return svc().revert(name, snapshot)


@bp.post("/vms/<name>/snapshots/<snapshot>/restore")
@bp.input(vs.VmRestoreIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Restore the snapshot as a new VM (reflink copy: costs only what changes later)",
        security=SECURITY, responses={202: "Job queued", 409: "The name is taken"})
def restore_snapshot(name: str, snapshot: str, body: dict[str, Any]):
    return svc().restore(name, snapshot, body)


@bp.get("/vms/<name>/serial")
@bp.output(vs.VmSerialOut)
@bp.doc(summary="The end (64 KiB) of the VM's serial console log", security=SECURITY,
        responses={200: "The log's end", 409: "The VM runs on another node"})
def serial_log(name: str):
    return svc().serial_log(name, services()["cfg"].compute.log_dir)


@bp.get("/vms/<name>/vnc")
@bp.doc(summary="The VM's screen: a WebSocket (RFB, binary) relayed to its VNC server on the node's loopback",
        description="What noVNC connects to. Needs a console session (same origin) or a bearer token; "
                    "answers 101 and then relays until either side closes.", security=SECURITY,
        responses={101: "Switching to WebSocket", 400: "Not a WebSocket request",
                   409: "The VM is not running, has no display yet, or runs on another node"})
def vnc(name: str):
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        raise AuthenticationError(f"a WebSocket from {origin} may not open this console (cross-site)")
    try:
        answer, connection, _ = websocket.accept(list(request.headers.items()),
                                                 request.environ.get("RAW_URI") or request.full_path)
    except ValueError as exc:
        raise ValidationError({"headers": str(exc)}) from None
    address = svc().vnc_address(name)
    raw = request.environ.get("gunicorn.socket")
    if raw is None:
        raise CairnError("the VM console needs cairn-web under gunicorn (it takes over the connection)")
    try:
        target = socket.create_connection(address, timeout=5)
    except OSError as exc:
        raise Conflict(f"VM {name}'s display at {address[0]}:{address[1]} does not answer ({exc}); "
                       "it may have just stopped") from None
    raw.sendall(answer)
    why = websocket.relay(raw, target, connection)
    target.close()
    log.info("console of VM %s closed: %s", name, why)
    return _TakenOver()


# Werkzeug routes a WebSocket handshake only to rules marked websocket=True (and a plain GET only to
# unmarked ones): the same view takes both, so a plain GET gets the reason instead of a bare 400.
bp.add_url_rule("/vms/<name>/vnc", view_func=vnc, websocket=True)


class _TakenOver(Response):
    """The connection now belongs to the relay, which has closed it: nothing more may be written.
    Raising StopIteration here makes gunicorn drop the connection without an answer. Under the
    gevent worker the relay is this request's greenlet: it holds no worker thread."""

    def __call__(self, environ, start_response):
        raise StopIteration()
