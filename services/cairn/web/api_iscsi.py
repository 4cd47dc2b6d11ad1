"""/api/v1 routes for iSCSI targets and their LUNs. Thin: schemas in, IscsiService
(cairn.shares.iscsi_service) checks and writes the desired state; the pool's node applies it."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from cairn.shares.iscsi_service import IscsiService
from cairn.web import schemas
from cairn.web.app import services

bp = APIBlueprint("iscsi", __name__, tag="iSCSI")
SECURITY = ["token", "session"]


def svc() -> IscsiService:
    return IscsiService(services()["store"])


@bp.get("/iscsi-targets")
@bp.output(schemas.IscsiTargetListOut)
@bp.doc(summary="Every iSCSI target of the cluster (CHAP passwords are never shown)", security=SECURITY)
def list_targets():
    return {"targets": svc().targets()}


@bp.post("/iscsi-targets")
@bp.input(schemas.IscsiTargetIn, arg_name="body")
@bp.output(schemas.IscsiTargetOut, status_code=201)
@bp.doc(summary="Make an iSCSI target with LUN files in a volume", security=SECURITY,
        responses={201: "Created", 400: "Bad input, every field named", 409: "The name or the IQN is taken"})
def create_target(body: dict[str, Any]):
    return svc().create_target(body)


@bp.get("/iscsi-targets/<name>")
@bp.output(schemas.IscsiTargetOut)
@bp.doc(summary="One iSCSI target, with what its node observed", security=SECURITY)
def get_target(name: str):
    return svc().target(name)


@bp.patch("/iscsi-targets/<name>")
@bp.input(schemas.IscsiTargetPatchIn, arg_name="body")
@bp.output(schemas.IscsiTargetOut)
@bp.doc(summary="Change a target's description, initiators or CHAP (name, IQN, pool and volume stay)",
        security=SECURITY, responses={400: "Bad input, every field named", 404: "No such target",
                                      409: "The target changed meanwhile; try again"})
def patch_target(name: str, body: dict[str, Any]):
    return svc().update_target(name, body)


@bp.delete("/iscsi-targets/<name>")
@bp.input(schemas.ConfirmQuery, location="query", arg_name="query")
@bp.output(schemas.MessageOut)
@bp.doc(summary="Delete a target and its LUNs' data (with LUNs it needs ?confirm=<name>)", security=SECURITY,
        responses={200: "Deleted", 400: "confirm is missing or does not repeat the name", 404: "No such target",
                   409: "The target changed meanwhile; nothing was deleted, try again"})
def delete_target(name: str, query: dict[str, Any]):
    svc().delete_target(name, query.get("confirm"))
    return {"message": f"iSCSI target {name} deleted"}


@bp.post("/iscsi-targets/<name>/luns")
@bp.input(schemas.IscsiLunIn, arg_name="body")
@bp.output(schemas.IscsiLunOut, status_code=201)
@bp.doc(summary="Add a LUN (a sparse file in the target's volume)", security=SECURITY,
        responses={201: "Created", 400: "Bad input, every field named", 409: "The LUN number is taken"})
def add_lun(name: str, body: dict[str, Any]):
    return svc().add_lun(name, body)


@bp.patch("/iscsi-targets/<name>/luns/<lun>")
@bp.input(schemas.IscsiLunGrowIn, arg_name="body")
@bp.output(schemas.IscsiLunOut)
@bp.doc(summary="Grow a LUN (shrinking is refused: it would cut off data)", security=SECURITY,
        responses={400: "Bad size, or smaller than now", 404: "No such target or LUN",
                   409: "The target changed meanwhile; try again"})
def grow_lun(name: str, lun: str, body: dict[str, Any]):
    return svc().grow_lun(name, lun, body)


@bp.delete("/iscsi-targets/<name>/luns/<lun>")
@bp.input(schemas.LunConfirmQuery, location="query", arg_name="query")
@bp.output(schemas.MessageOut)
@bp.doc(summary="Delete a LUN and its data (needs ?confirm=<lun number>)", security=SECURITY,
        responses={200: "Deleted", 400: "confirm is missing or does not repeat the LUN number",
                   404: "No such target or LUN", 409: "The target changed meanwhile; try again"})
def delete_lun(name: str, lun: str, query: dict[str, Any]):
    svc().delete_lun(name, lun, query.get("confirm"))
    return {"message": f"LUN {lun} of iSCSI target {name} deleted"}
