"""/api/v1 routes. Thin: validate input (schemas), call the service, shape the output."""

from __future__ import annotations

import time
from typing import Any

from apiflask import APIBlueprint
from flask import Response, request, session

from cairn import __version__
from cairn.cluster import departure, events, formation, history, nodes, pki, tokens
from cairn.cluster.health import cluster_health
from cairn.errors import NotFound, Unavailable, ValidationError
from cairn.jobs.model import summary
from cairn.web import schemas, streams
from cairn.web.app import services

bp = APIBlueprint("api", __name__, tag="Cairn")

SSE_MAX_SECONDS = 300     # then the client reconnects (with its Last-Event-ID), and its credentials are checked again
# One message of the event stream (OpenAPI before 3.2 gives an event stream's schema per event).
SSE_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["job", "event", "node", "reload"],
              "description": "What changed: a job, a cluster event, a node; reload: re-read the state"},
    "data": {"type": "string", "description": "JSON: the job's summary, the event, the node, or {reason, revision}"},
    "id": {"type": "string", "description": "The store revision of the change (Last-Event-ID on reconnect)"}}}


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


@bp.get("/store")
@bp.output(schemas.StoreHealthOut)
@bp.doc(summary="The cluster store: database size against its quota, alarms, and a warning before "
                "the quota is near", security=["token", "session"],
        responses={200: "The store's health", 503: "The cluster store is unreachable"})
def store_health():
    return history.store_health(services()["store"])


@bp.get("/cluster")
@bp.output(schemas.ClusterOut)
@bp.doc(summary="The cluster store's members: voters and learners, the leader, quorum and what losing "
                "one more node would do", security=["token", "session"],
        responses={200: "The members, as this node sees them", 503: "The cluster store is unreachable"})
def cluster():
    store = services()["store"]
    return {**cluster_health(store), "cluster": formation.cluster_summary(store)}


@bp.post("/cluster")
@bp.input(schemas.ClusterCreateIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Create a cluster on this node: its cluster address, the cluster CA, etcd over mutual TLS "
                "(a job; the console's certificate becomes one from the cluster CA)",
        security=["token", "session"],
        responses={202: "The job was started", 400: "A field is not valid (the field is named)",
                   409: "This node is already in a cluster"})
def create_cluster(body: dict[str, Any]):
    svc = services()
    return formation.start(svc["store"], svc["cfg"], svc["jobs"], "cluster.create", body).to_dict()


@bp.get("/cluster/ca")
@bp.output(schemas.ClusterCaOut)
@bp.doc(summary="The cluster CA certificate (public: trust it once to trust every node's console; a "
                "joining node checks it against its token)",
        responses={200: "The CA", 404: "This node is not in a cluster"})
def cluster_ca():
    info = formation.cluster_info(services()["store"])
    if info is None:
        raise NotFound("this node is not in a cluster")
    return {"ca": info["ca_cert"], "fingerprint": pki.fingerprint(info["ca_cert"].encode())}


@bp.post("/cluster/join")
@bp.input(schemas.ClusterJoinIn, arg_name="body")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Join this (standalone) node to a cluster with a token from a cluster node's console "
                "(a job: the cluster CA is checked against the token, this node's records come along, "
                "its etcd joins as a learner and is promoted when a voter is wanted)",
        security=["token", "session"],
        responses={202: "The job was started", 400: "The token or a field is not valid (named)",
                   409: "This node is already in a cluster"})
def join_cluster(body: dict[str, Any]):
    svc = services()
    return formation.start(svc["store"], svc["cfg"], svc["jobs"], "cluster.join", body).to_dict()


@bp.post("/cluster/leave")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Take this node out of its cluster (a job: it takes its pools, VMs, shares and other records "
                "along and becomes standalone; refused, naming the reason, for the last node, while quorum "
                "would be lost, while jobs run on it or while other nodes use what it holds)",
        security=["token", "session"],
        responses={202: "The job was started", 409: "This node is not in a cluster"})
def leave_cluster():
    svc = services()
    return departure.start_leave(svc["store"], svc["cfg"], svc["jobs"]).to_dict()


@bp.delete("/cluster/nodes/<node>")
@bp.output(schemas.JobOut, status_code=202)
@bp.doc(summary="Remove a node that is gone for good (a job: its etcd member is removed, the node marked "
                "removed; its records are kept and shown with it). A node that is up leaves instead",
        security=["token", "session"],
        responses={202: "The job was started", 409: "This node is not in a cluster"})
def remove_cluster_node(node: str):
    svc = services()
    return departure.start_remove(svc["store"], svc["cfg"], svc["jobs"], node).to_dict()


@bp.post("/cluster/join-requests")
@bp.input(schemas.JoinRequestIn, arg_name="body")
@bp.output(schemas.JoinRequestOut)
@bp.doc(summary="A joining node asks to be admitted (node to node; authenticated by the join token, "
                "not by a user): checked, then its certificate signed and its etcd member added",
        responses={200: "Admitted (or, with check_only, it would be)", 400: "A field is not valid",
                   401: "The token is unknown, expired, wrong or for another cluster",
                   409: "The token was used, or a name of the node is taken in the cluster (listed)"})
def join_request(body: dict[str, Any]):
    return formation.Sponsor(services()["store"]).admit(formation.check_join_request(body))


@bp.post("/cluster/tokens")
@bp.input(schemas.JoinTokenIn, arg_name="body")
@bp.output(schemas.JoinTokenOut, status_code=201)
@bp.doc(summary="Make a one-time join token: paste it on the appliance that should join (it carries "
                "the cluster CA's fingerprint and this node's cluster address)",
        security=["token", "session"],
        responses={201: "The token (shown once)", 400: "ttl is out of range", 409: "This node is not in a cluster"})
def issue_join_token(body: dict[str, Any]):
    return formation.issue_token(services()["store"], services()["cfg"], body["ttl"])


@bp.get("/cluster/tokens")
@bp.output(schemas.JoinTokenListOut)
@bp.doc(summary="Join tokens not yet expired, used or not (never their secrets)", security=["token", "session"])
def list_join_tokens():
    return {"tokens": formation.live_tokens(services()["store"])}


@bp.delete("/cluster/tokens/<token_id>")
@bp.output(schemas.MessageOut)
@bp.doc(summary="Revoke a join token", security=["token", "session"],
        responses={200: "Revoked", 400: "Not a token id", 404: "No such token"})
def revoke_join_token(token_id: str):
    tokens.TokenStore(services()["store"]).revoke(token_id)
    return {"message": f"join token {token_id} revoked"}


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
        security=["token", "session"],
        responses={202: "The job was started", 404: "No such node", 409: "The node was removed from the cluster"})
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
@bp.doc(summary="Jobs, newest first, a page at a time (pass `next` back as `continue`)",
        responses={200: "A page of jobs", 400: "A filter or the continue token is not valid"},
        security=["token", "session"])
def list_jobs(query: dict[str, Any]):
    page = services()["jobs"].page(state=query.get("state"), node=query.get("node"), limit=query["limit"],
                                   after=query.get("continue_"))
    return {"jobs": [summary(job) for job in page.jobs], "next": page.next}


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
        description="Each message's id is the store revision of its change. On reconnect, a client "
                    "sends the last id it got (header Last-Event-ID; browsers' EventSource does so by "
                    "itself) and gets exactly the messages it missed. A position older than what the "
                    "server keeps gets a 'reload' event instead: re-read the state, then the stream "
                    "goes on from now. The stream ends after a few minutes; reconnect to go on.",
        responses={200: {"description": "text/event-stream; the schema is that of one event",
                         "content": {"text/event-stream": {"schema": SSE_EVENT}}}},
        security=["token", "session"])
@bp.input(schemas.StreamQuery, location="query", arg_name="query")
def event_stream(query: dict[str, Any]):
    position = streams.start_position(request.headers.get("Last-Event-ID"), query.get("since"))
    hub = services()["hub"]
    hub.start(position)
    return Response(hub.follow(position, until=time.monotonic() + SSE_MAX_SECONDS),
                    mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
