"""Console page for uploaded images: every ISO and disk image of the cluster, with a Delete button
(a form, CSRF-checked by the app's gate) and an upload form. The upload itself does not go
through this page: the browser sends the file with XMLHttpRequest straight to the API
(PUT /api/v1/images/<pool>/<name>, session cookie + X-CSRF-Token), so it is streamed and its
progress shown. Refusals show the error page with the reason.

`uploaded_images(kind)` is a template global: the VMs page offers the uploaded ISOs and disk images
by their node paths in the New VM form (vms.html), without its view having to fetch them."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import redirect, render_template, url_for

from cairn.compute.image_service import ImageService
from cairn.runner import Runner
from cairn.storage.pools import list_pools
from cairn.web.app import services

bp = APIBlueprint("images_console", __name__, enable_openapi=False)


def svc() -> ImageService:
    cfg = services()["cfg"]
    return ImageService(services()["store"], Runner(), cfg.node_name, cfg.storage)


@bp.app_template_global()
def uploaded_images(kind: str) -> list[dict]:
    return svc().images(kind)


@bp.get("/images")
def images():
    return render_template("images.html", images=svc().images(),
                           pools=sorted(list_pools(services()["store"]), key=lambda p: p.name))


@bp.post("/images/<pool>/<name>/delete")
def delete_image(pool: str, name: str):
    svc().delete(pool, name)
    return redirect(url_for("images_console.images"))
