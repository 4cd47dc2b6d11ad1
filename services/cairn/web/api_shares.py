"""/api/v1 routes for file-access users, groups and shares. Thin: schemas in, ShareService
(cairn.shares.service) checks and writes the desired state; the nodes' agents apply it."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from cairn.shares.service import ShareService
from cairn.web import schemas
from cairn.web.app import services

bp = APIBlueprint("shares", __name__, tag="Shares")
SECURITY = ["token", "session"]


def svc() -> ShareService:
    return ShareService(services()["store"])


@bp.get("/file-users")
@bp.output(schemas.FileUserListOut)
@bp.doc(summary="File-access users (SMB/NFS)", security=SECURITY)
def list_users():
    return {"users": svc().users()}


@bp.post("/file-users")
@bp.input(schemas.FileUserIn, arg_name="body")
@bp.output(schemas.FileUserOut, status_code=201)
@bp.doc(summary="Create a file-access user", security=SECURITY,
        responses={201: "Created", 400: "Bad input, every field named", 409: "Name or id taken"})
def create_user(body: dict[str, Any]):
    return svc().create_user(body)


@bp.get("/file-users/<name>")
@bp.output(schemas.FileUserOut)
@bp.doc(summary="One file-access user", security=SECURITY)
def get_user(name: str):
    return svc().user(name)


@bp.patch("/file-users/<name>")
@bp.input(schemas.FileUserPatchIn, arg_name="body")
@bp.output(schemas.FileUserOut)
@bp.doc(summary="Change a user's full name, groups, password or disabled flag", security=SECURITY,
        responses={400: "Bad input, every field named", 404: "No such user",
                   409: "The user changed meanwhile; try again"})
def patch_user(name: str, body: dict[str, Any]):
    return svc().update_user(name, body)


@bp.delete("/file-users/<name>")
@bp.output(schemas.MessageOut)
@bp.doc(summary="Delete a user (refused while shares name it)", security=SECURITY,
        responses={200: "Deleted", 404: "No such user", 409: "Shares name the user (the message names them)"})
def delete_user(name: str):
    svc().delete_user(name)
    return {"message": f"user {name} deleted"}


@bp.get("/file-groups")
@bp.output(schemas.FileGroupListOut)
@bp.doc(summary="File-access groups", security=SECURITY)
def list_groups():
    return {"groups": svc().groups()}


@bp.post("/file-groups")
@bp.input(schemas.FileGroupIn, arg_name="body")
@bp.output(schemas.FileGroupOut, status_code=201)
@bp.doc(summary="Create a file-access group", security=SECURITY,
        responses={201: "Created", 400: "Bad input, every field named", 409: "Name or id taken"})
def create_group(body: dict[str, Any]):
    return svc().create_group(body)


@bp.delete("/file-groups/<name>")
@bp.output(schemas.MessageOut)
@bp.doc(summary="Delete a group (refused while users are in it or shares name it)", security=SECURITY,
        responses={200: "Deleted", 404: "No such group",
                   409: "Users are in the group or shares name it (the message names them)"})
def delete_group(name: str):
    svc().delete_group(name)
    return {"message": f"group {name} deleted"}


@bp.get("/shares")
@bp.output(schemas.ShareListOut)
@bp.doc(summary="Every share (SMB and NFS) of the cluster, each with whether its node serves it", security=SECURITY)
def list_shares():
    service = svc()
    return {"shares": service.with_state(service.shares())}


@bp.post("/shares")
@bp.input(schemas.ShareIn, arg_name="body")
@bp.output(schemas.ShareOut, status_code=201)
@bp.doc(summary="Share a volume (or a directory in it) over SMB and/or NFS", security=SECURITY,
        responses={201: "Created", 400: "Bad input, every field named", 409: "The name is taken"})
def create_share(body: dict[str, Any]):
    return svc().create_share(body)


@bp.get("/shares/<name>")
@bp.output(schemas.ShareOut)
@bp.doc(summary="One share, with whether its node serves it", security=SECURITY)
def get_share(name: str):
    service = svc()
    return service.with_state([service.share(name)])[0]


@bp.patch("/shares/<name>")
@bp.input(schemas.SharePatchIn, arg_name="body")
@bp.output(schemas.ShareOut)
@bp.doc(summary="Change a share's settings or permissions", security=SECURITY,
        responses={400: "Bad input, every field named", 404: "No such share",
                   409: "The share changed meanwhile; try again"})
def patch_share(name: str, body: dict[str, Any]):
    return svc().update_share(name, body)


@bp.delete("/shares/<name>")
@bp.output(schemas.MessageOut)
@bp.doc(summary="Stop sharing (the data stays in the volume)", security=SECURITY)
def delete_share(name: str):
    svc().delete_share(name)
    return {"message": f"share {name} deleted"}


@bp.get("/shares-config")
@bp.output(schemas.SharesConfigDoc)
@bp.doc(summary="Export users, groups and shares as one document (holds password hashes: keep it safe)",
        security=SECURITY)
def export_config():
    return svc().export()


@bp.post("/shares-config")
@bp.input(schemas.SharesConfigDoc, arg_name="body")
@bp.output(schemas.SharesImportOut)
@bp.doc(summary="Import an exported document: all of it or nothing (every problem reported at once)",
        security=SECURITY, responses={400: "A record is bad or clashes with what exists, every problem named",
                                      409: "Users, groups, shares or targets changed while importing; "
                                           "nothing was imported, try again"})
def import_config(body: dict[str, Any]):
    return svc().import_config(body)
