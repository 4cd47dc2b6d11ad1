"""The web console: server-rendered pages. Forms post back here (with the session's CSRF token);
live updates come from /api/v1/events/stream."""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlparse

from apiflask import APIBlueprint
from flask import g, redirect, render_template, request, session, url_for

from cairn.cluster import events, history, nodes
from cairn.cluster.health import cluster_health
from cairn.errors import AuthenticationError, CairnError, RateLimited, ValidationError
from cairn.jobs.model import summary
from cairn.web.app import services

bp = APIBlueprint("console", __name__, enable_openapi=False)


def _safe_next(target: str | None) -> str:
    if not target:
        return url_for("console.dashboard")
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/"):
        return url_for("console.dashboard")
    return target


@bp.get("/login")
def login():
    return render_template("login.html", error=None, next=request.args.get("next", ""))


@bp.post("/login")
def login_post():
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    try:
        user = services()["auth"].login(username, password, request.remote_addr or "unknown")
    except (AuthenticationError, RateLimited, ValidationError) as exc:
        status = 429 if isinstance(exc, RateLimited) else 401 if isinstance(exc, AuthenticationError) else 400
        return render_template("login.html", error=exc.message, next=request.form.get("next", "")), status
    session.clear()
    session.permanent = True
    session["user"] = user["name"]
    session["csrf"] = secrets.token_urlsafe(24)
    session["login_at"] = time.time()
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("console.login"))


@bp.before_request
def _remember_revision() -> None:
    """Pages pass the store revision they were rendered at to the live stream, so no change made
    between rendering and connecting is missed."""
    if request.method == "GET" and session.get("user"):
        g.store_revision = services()["store"].revision()


@bp.get("/")
def dashboard():
    store = services()["store"]
    return render_template("dashboard.html", nodes=nodes.list_nodes(store),
                           jobs=[summary(j) for j in services()["jobs"].list(limit=8)],
                           events=events.recent(store, limit=10), now=time.time(),
                           store_health=history.store_health(store), cluster=cluster_health(store))


@bp.post("/nodes/<name>/diagnostics")
def start_diagnostics(name: str):
    job = services()["jobs"].submit("node.diagnostics", name, {"samples": 200})
    return redirect(url_for("console.job_detail", job_id=job.id))


@bp.get("/jobs")
def jobs():
    after = request.args.get("after") or None
    try:
        page = services()["jobs"].page(limit=100, after=after)
    except ValidationError:
        return redirect(url_for("console.jobs"))      # a stale or edited link: the first page
    return render_template("jobs.html", jobs=[summary(j) for j in page.jobs], next=page.next, paged=bool(after))


@bp.get("/jobs/<job_id>")
def job_detail(job_id: str):
    return render_template("job.html", job=services()["jobs"].get(job_id).to_dict())


@bp.post("/jobs/<job_id>/abort")
def abort(job_id: str):
    try:
        services()["jobs"].request_abort(job_id)
    except CairnError:
        pass  # the job page shows its state; an ended job needs no abort
    return redirect(url_for("console.job_detail", job_id=job_id))
