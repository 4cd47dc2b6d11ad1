"""The console's Cluster page: create a cluster on this node or join one with a token; in a cluster,
its nodes, the CA fingerprint, and join tokens to make and revoke. Every change is the same job or
call as the API's (cairn.cluster.formation); refusals show the error page."""

from __future__ import annotations

import time

from apiflask import APIBlueprint
from flask import redirect, render_template, request, url_for

from cairn.cluster import departure, formation, nodes, tokens
from cairn.cluster.health import cluster_health
from cairn.errors import ValidationError
from cairn.web.app import services

bp = APIBlueprint("cluster_console", __name__, enable_openapi=False)


def _page(issued: dict | None = None):
    svc = services()
    store = svc["store"]
    online = {n["name"]: n["online"] for n in nodes.list_nodes(store)}
    return render_template("cluster.html", cluster=formation.cluster_summary(store), health=cluster_health(store),
                           online=online, tokens=formation.live_tokens(store), issued=issued, now=time.time(),
                           node=svc["cfg"].node_name)


@bp.get("/cluster")
def cluster():
    return _page()


def _start(kind: str, fields: tuple[str, ...]):
    """Start the create or join job with the form's fields; the job page follows it."""
    svc = services()
    job = formation.start(svc["store"], svc["cfg"], svc["jobs"], kind,
                          {name: request.form.get(name, "").strip() for name in fields})
    return redirect(url_for("console.job_detail", job_id=job.id))


@bp.post("/cluster/create")
def create():
    return _start("cluster.create", ("name", "interface", "address"))


@bp.post("/cluster/join")
def join():
    return _start("cluster.join", ("token", "interface", "address"))


@bp.post("/cluster/leave")
def leave():
    svc = services()
    job = departure.start_leave(svc["store"], svc["cfg"], svc["jobs"])
    return redirect(url_for("console.job_detail", job_id=job.id))


@bp.post("/cluster/nodes/<node>/remove")
def remove(node: str):
    svc = services()
    job = departure.start_remove(svc["store"], svc["cfg"], svc["jobs"], node)
    return redirect(url_for("console.job_detail", job_id=job.id))


@bp.post("/cluster/tokens")
def issue():
    try:
        ttl = tokens.check_ttl(int(request.form.get("ttl", "3600")))
    except ValueError:
        raise ValidationError({"ttl": "a whole number of seconds"}) from None
    return _page(issued=formation.issue_token(services()["store"], services()["cfg"], ttl))


@bp.post("/cluster/tokens/<token_id>/revoke")
def revoke(token_id: str):
    tokens.TokenStore(services()["store"]).revoke(token_id)
    return redirect(url_for("cluster_console.cluster"))
