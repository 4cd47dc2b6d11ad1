"""Console page for file sharing: shares, iSCSI targets, users and groups on one page. Forms post
here (CSRF-checked by the app's gate) and come back to the page; refusals show the error page with
the reason. Changes are desired state (no job): the nodes apply them, and the page shows what the
nodes last reported (whether each share is served; each target's sessions and LUN usage)."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import redirect, render_template, request, url_for

from cairn.errors import ValidationError
from cairn.shares.iscsi_service import IscsiService
from cairn.shares.service import ShareService
from cairn.storage.pools import list_pools, list_volumes
from cairn.web.app import services

bp = APIBlueprint("shares_console", __name__, enable_openapi=False)


def svc() -> ShareService:
    return ShareService(services()["store"])


def iscsi() -> IscsiService:
    return IscsiService(services()["store"])


def back():
    return redirect(url_for("shares_console.shares"))


def parse_permissions(text: str) -> list[dict[str, str]]:
    """One `user:alice=rw` / `group:staff=ro` per line (or comma-separated)."""
    entries = []
    for item in text.replace(",", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        principal, sep, access = item.rpartition("=")
        if not sep:
            raise ValidationError({"permissions": f"{item!r}: write principal=access, e.g. user:alice=rw"})
        entries.append({"principal": principal.strip(), "access": access.strip()})
    return entries


def parse_clients(text: str) -> dict | None:
    """One NFS client per line: `match [ro] [no_root_squash]`."""
    clients = []
    for line in text.splitlines():
        words = line.split()
        if words:
            clients.append({"match": words[0], "access": "ro" if "ro" in words[1:] else "rw",
                            "root_squash": "no_root_squash" not in words[1:]})
    return {"clients": clients} if clients else None


@bp.get("/shares")
def shares():
    service = svc()
    store = services()["store"]
    volumes = [(pool.name, volume.name) for pool in list_pools(store) for volume in list_volumes(store, pool.name)]
    return render_template("shares.html", users=service.users(), groups=service.groups(),
                           shares=service.with_state(service.shares()), targets=iscsi().targets(), volumes=volumes)


@bp.post("/shares/users")
def create_user():
    svc().create_user({"name": request.form.get("name", ""), "password": request.form.get("password", ""),
                       "full_name": request.form.get("full_name", ""), "groups": request.form.getlist("groups")})
    return back()


@bp.post("/shares/users/<name>/delete")
def delete_user(name: str):
    svc().delete_user(name)
    return back()


@bp.post("/shares/groups")
def create_group():
    svc().create_group({"name": request.form.get("name", ""), "description": request.form.get("description", "")})
    return back()


@bp.post("/shares/groups/<name>/delete")
def delete_group(name: str):
    svc().delete_group(name)
    return back()


@bp.post("/shares/new")
def create_share():
    pool, _, volume = request.form.get("volume", "").partition("/")
    body = {"name": request.form.get("name", ""), "pool": pool, "volume": volume,
            "description": request.form.get("description", ""),
            "smb": {"recycle_bin": bool(request.form.get("recycle_bin")),
                    "previous_versions": bool(request.form.get("previous_versions"))}
            if request.form.get("smb") else None,
            "nfs": parse_clients(request.form.get("nfs_clients", "")),
            "permissions": parse_permissions(request.form.get("permissions", ""))}
    if request.form.get("path"):
        body["path"] = request.form["path"]
    svc().create_share(body)
    return back()


@bp.post("/shares/<name>/delete")
def delete_share(name: str):
    svc().delete_share(name)
    return back()


# --- iSCSI targets ----------------------------------------------------------------------------
@bp.post("/shares/iscsi")
def create_target():
    pool, _, volume = request.form.get("volume", "").partition("/")
    chap_user = request.form.get("chap_user", "").strip()
    size = request.form.get("lun_size", "").strip()
    body = {"name": request.form.get("name", ""), "pool": pool, "volume": volume,
            "iqn": request.form.get("iqn", "").strip() or None,
            "description": request.form.get("description", ""),
            "initiators": request.form.get("initiators", "").replace(",", " ").split(),
            "chap": {"user": chap_user, "password": request.form.get("chap_password", "")} if chap_user else None,
            "luns": [{"size": size}] if size else []}
    iscsi().create_target(body)
    return back()


@bp.post("/shares/iscsi/<name>/delete")
def delete_target(name: str):
    iscsi().delete_target(name, request.form.get("confirm"))
    return back()


@bp.post("/shares/iscsi/<name>/luns")
def add_lun(name: str):
    iscsi().add_lun(name, {"size": request.form.get("size", "").strip()})
    return back()


@bp.post("/shares/iscsi/<name>/luns/<lun>/grow")
def grow_lun(name: str, lun: str):
    iscsi().grow_lun(name, lun, {"size": request.form.get("size", "").strip()})
    return back()


@bp.post("/shares/iscsi/<name>/luns/<lun>/delete")
def delete_lun(name: str, lun: str):
    iscsi().delete_lun(name, lun, request.form.get("confirm"))
    return back()
