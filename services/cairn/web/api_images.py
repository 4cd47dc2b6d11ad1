"""/api/v1 routes for uploaded images (ISO images and disk images in each pool's images volume).
Thin: ImageService (cairn.compute.image_service) checks, streams and records.

The upload is PUT /images/<pool>/<name> with the file as the raw body (Content-Type:
application/octet-stream, Content-Length required). The app's gate checks credentials first, from
the headers; then its JSON body check lets this one endpoint through (guards.STREAMED_ENDPOINTS),
with a cap of guards.UPLOAD_CAP instead of the small one and no overall deadline (only the idle
limit per read), so the body is read here, in chunks, from request.stream: ISOs are gigabytes. Only
the node that has the pool takes the upload; another node answers 409 naming it.

Known limit under the gevent worker: ImageService's disk writes and its final fsync run on the
worker's event loop, so while one blocks (a slow disk, a large fsync) that worker's other
connections wait; handing them to a thread is ImageService's to do."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import request

from cairn.compute.image_service import ImageService
from cairn.errors import ValidationError
from cairn.runner import Runner
from cairn.web import schemas, schemas_images as si
from cairn.web.app import API_PREFIX, off_the_loop, services

bp = APIBlueprint("images", __name__, tag="Images")
SECURITY = ["token", "session"]
UPLOAD_TYPE = "application/octet-stream"


def document_upload_body(spec: dict[str, Any]) -> dict[str, Any]:
    """The upload's body in the OpenAPI document (APIFlask describes JSON and form bodies only)."""
    spec["paths"][f"{API_PREFIX}/images/{{pool}}/{{name}}"]["put"]["requestBody"] = {
        "required": True, "description": "The file's bytes, with its Content-Length",
        "content": {UPLOAD_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
    return spec


def svc() -> ImageService:
    cfg = services()["cfg"]
    return ImageService(services()["store"], Runner(), cfg.node_name, cfg.storage,
                        blocking=lambda function, *args: off_the_loop(function)(*args))


@bp.get("/images")
@bp.input(si.ImageListQuery, location="query", arg_name="query")
@bp.output(si.ImageListOut)
@bp.doc(summary="Uploaded ISO images and disk images of every pool", security=SECURITY)
def list_images(query: dict[str, Any]):
    return {"images": svc().images(query.get("kind"))}


@bp.put("/images/<pool>/<name>")
@bp.input(si.ImageUploadQuery, location="query", arg_name="query")
@bp.output(si.ImageOut, status_code=201)
@bp.doc(summary="Upload an ISO image or a disk image into the pool's images volume",
        description="The body is the file itself: Content-Type application/octet-stream, with its "
                    "Content-Length. Send it to the console of the pool's node. The file is checked with "
                    "qemu-img: an ISO 9660 image becomes kind iso, a raw, qcow2, vmdk, vdi, vhdx or vpc disk "
                    "image kind disk; anything else (or a disk image that reads other files) is refused. "
                    "The pool's images volume is made at its first upload.",
        security=SECURITY,
        responses={201: "Uploaded", 200: "Uploaded in place of the image of the same name (overwrite=true)",
                   400: "Bad name, no Content-Length, not application/octet-stream, the body broke off, or "
                        "the file is no ISO or disk image (the message says what it is)",
                   404: "No such pool",
                   409: "The name is taken, the same name is being uploaded, the pool is on another node "
                        "(the message names it) or not mounted, or the pool has not enough free space"})
def upload_image(pool: str, name: str, query: dict[str, Any]):
    if request.mimetype != UPLOAD_TYPE:
        raise ValidationError({"Content-Type": f"must be {UPLOAD_TYPE}: the body is the file's bytes "
                                               "(not a form or JSON)"})
    image, created = svc().upload(pool, name, request.stream, request.content_length, query["overwrite"])
    return image, (201 if created else 200)


@bp.get("/images/<pool>/<name>")
@bp.output(si.ImageOut)
@bp.doc(summary="One uploaded image", security=SECURITY)
def get_image(pool: str, name: str):
    return svc().image(pool, name)


@bp.delete("/images/<pool>/<name>")
@bp.output(schemas.MessageOut)
@bp.doc(summary="Delete an uploaded image (on the pool's node)", security=SECURITY,
        responses={200: "Deleted", 404: "No such image or pool",
                   409: "A VM has it as its ISO (the message names the VMs), a VM is being made from it, "
                        "or the pool is on another node (the message names it)"})
def delete_image(pool: str, name: str):
    svc().delete(pool, name)
    return {"message": f"image {name} deleted from pool {pool}"}
