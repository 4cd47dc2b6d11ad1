"""/api/v1 routes. Thin: validate input (schemas), call the service, shape the output."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

from apiflask import APIBlueprint
from flask import Response, request, session, stream_with_context

from cairn import __version__
from cairn.cluster import events, nodes
from cairn.errors import CairnError, NotFound, Unavailable, ValidationError
from cairn.jobs.model import summary
from cairn.web import schemas
from cairn.web.app import services

bp = APIBlueprint("api", __name__, tag="Cairn")

SSE_MAX_SECONDS = 300     # the browser reconnects by itself; keeps worker threads from piling up


def client_address() -> str:
    return request.remote_addr or "unknown"


@bp.get("/health")
@bp.output(schemas.HealthOut)
@bp.doc(summary="Health of this node's web server and its view of the cluster store",
        responses={200: "Healthy", 503: "The cluster store is unreachable"})
def health():
    svc = services()
    try:
        svc["store"].revision()
        return {"status": "ok", "store": "ok", "node": svc["cfg"].node_name, "version": __version__}
    except Unavailable:
        return ({"status": "degraded", "store": "unreachable", "node": svc["cfg"].node_name,
                 "version": __version__}, 503)


@bp.post("/auth/login")
@bp.input(schemas.LoginIn, arg_name="body")
@bp.output(schemas.TokenOut)
@bp.doc(summary="Log in; returns a bearer token",
        responses={200: "Logged in", 400: "A field is missing", 401: "Wrong user name or password",
                   429: "Too many failed attempts from this address"})
def login(body: dict[str, Any]):
    auth = services()["auth"]
    user = auth.login(body["username"], body["password"], client_address())
    return auth.issue_token(user["name"])


@bp.post("/auth/logout")
@bp.output(schemas.MessageOut)
@bp.doc(summary="Log out: revoke the bearer token or end the console session", security=["token", "session"])
def logout():
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        services()["auth"].revoke_token(header.removeprefix("Bearer ").strip())
    session.clear()
    return {"message": "logged out"}


@bp.get("/nodes")
@bp.output(schemas.NodeListOut)
@bp.doc(summary="Nodes of the cluster with their basic inventory", security=["token", "session"])
def list_nodes():
    return {"nodes": nodes.list_nodes(services()["store"])}


@bp.get("/nodes/<name>")
@bp.output(schemas.NodeOut)
@bp.doc(summary="One node", security=["token", "session"])
def get_node(name: str):
    for node in nodes.list_nodes(services()["store"]):
        if node["name"] == name:
            return node
    raise NotFound(f"no node named {name!r}", node=name)


@bp.post("/nodes/<name>/diagnostics")
@bp.input(schemas.DiagnosticsIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Start a diagnostics job on a node (read-only checks, with progress)",
        security=["token", "session"])
def start_diagnostics(name: str, body: dict[str, Any]):
    try:
        job = services()["jobs"].submit("node.diagnostics", name, body)
    except ValidationError as exc:
        if "node" in exc.fields:
            raise NotFound(exc.fields["node"], node=name) from None
        raise
    return job.to_dict()


@bp.get("/jobs")
@bp.input(schemas.JobQuery, location="query", arg_name="query")
@bp.output(schemas.JobListOut)
@bp.doc(summary="Jobs, newest first", security=["token", "session"])
def list_jobs(query: dict[str, Any]):
    jobs = services()["jobs"].list(state=query.get("state"), node=query.get("node"), limit=query["limit"])
    return {"jobs": [summary(job) for job in jobs]}


@bp.get("/jobs/<job_id>")
@bp.output(schemas.JobOut)
@bp.doc(summary="One job with its log", security=["token", "session"])
def get_job(job_id: str):
    return services()["jobs"].get(job_id).to_dict()


@bp.post("/jobs/<job_id>/abort")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Ask a job to stop; it ends as 'aborted' at its next safe point",
        responses={202: "Abort requested", 404: "No such job", 409: "The job has ended or cannot be aborted"},
        security=["token", "session"])
def abort_job(job_id: str):
    return services()["jobs"].request_abort(job_id).to_dict()


@bp.get("/events")
@bp.output(schemas.EventListOut)
@bp.doc(summary="Recent cluster events", security=["token", "session"])
def list_events():
    return {"events": events.recent(services()["store"], limit=50)}


@bp.get("/events/stream")
@bp.doc(summary="Server-Sent Events: job progress ('job'), cluster events ('event') and node "
                "heartbeats ('node') as they happen",
        responses={200: {"description": "text/event-stream",
                         "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
        security=["token", "session"])
@bp.input(schemas.StreamQuery, location="query", arg_name="query")
def event_stream(query: dict[str, Any]):
    store = services()["store"]
    start = (query["since"] if query.get("since") else store.revision()) + 1

    def generate() -> Iterator[str]:
        yield "retry: 2000\n\n"
        deadline = time.monotonic() + SSE_MAX_SECONDS
        try:
            for event in store.watch("", start, idle_timeout=15.0):
                if time.monotonic() > deadline:
                    return
                if event is None:
                    yield ": keep-alive\n\n"
                    continue
                message = sse_message(event.key, event.value)
                if message:
                    yield message
        except CairnError:
            yield "event: error\ndata: {\"message\": \"the cluster store is unreachable\"}\n\n"

    return Response(stream_with_context(generate()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def sse_message(key: str, value: Any) -> str | None:
    """One SSE message for a store change, or None for changes clients don't follow (pure)."""
    if value is None:
        return None
    if key.startswith("jobs/"):
        data = dict(value)
        log = data.pop("log", [])
        data["last_log"] = log[-1]["message"] if log else None
        return f"event: job\ndata: {json.dumps(data)}\n\n"
    if key.startswith("events/"):
        return f"event: event\ndata: {json.dumps(value)}\n\n"
    if key.startswith("nodes/"):
        return f"event: node\ndata: {json.dumps(value)}\n\n"
    return None
