"""Request and response schemas of /api/v1. Every field says what it is (the OpenAPI document
is generated from these, and a meta-test checks that no field lacks a description)."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Dict, Float, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range

from cairn.jobs.model import JobState
from cairn.system.diagnostics import MAX_SAMPLES


def d(text: str) -> dict:
    return {"description": text}


class LoginIn(Schema):
    username = String(required=True, validate=Length(1, 64), metadata=d("User name, e.g. admin"))
    password = String(required=True, validate=Length(1, 1024), metadata=d("The user's password"))


class TokenOut(Schema):
    token = String(metadata=d("Bearer token: send as 'Authorization: Bearer <token>'"))
    user = String(metadata=d("The user the token belongs to"))
    expires_at = Float(metadata=d("When the token expires (Unix time, seconds)"))


class MessageOut(Schema):
    message = String(metadata=d("What happened"))


class HealthOut(Schema):
    status = String(metadata=d("'ok' when this node's web server can reach the cluster store, else 'degraded'"))
    store = String(metadata=d("'ok' or 'unreachable': the cluster store (etcd) as seen from this node"))
    node = String(metadata=d("Name of the node that answered"))
    version = String(metadata=d("Cairn version of the node that answered"))


class DiskOut(Schema):
    name = String(metadata=d("Kernel name (changes between boots: identify disks by serial)"))
    path = String(allow_none=True, metadata=d("Device path, e.g. /dev/nvme0n1"))
    serial = String(allow_none=True, metadata=d("Serial number: the stable identity of the disk"))
    model = String(allow_none=True, metadata=d("Model as reported by the disk"))
    size = Integer(metadata=d("Size in bytes"))
    type = String(metadata=d("Device type as lsblk reports it (disk)"))
    transport = String(allow_none=True, metadata=d("Bus: sata, nvme, usb...; empty for virtio"))
    rotational = Boolean(allow_none=True, metadata=d("True for spinning disks"))
    mountpoint = String(allow_none=True, metadata=d("Where the whole disk is mounted, if it is"))
    parent = String(allow_none=True, metadata=d("Always empty for whole disks"))


class NodeOut(Schema):
    name = String(metadata=d("Node name"))
    online = Boolean(metadata=d("Whether the node's agent holds its lease (heartbeat within 10 s)"))
    hostname = String(metadata=d("Host name"))
    cpus = Integer(metadata=d("Logical CPUs"))
    cpu_model = String(metadata=d("CPU model name"))
    memory_total = Integer(metadata=d("Memory in bytes"))
    memory_available = Integer(metadata=d("Available memory in bytes"))
    uptime = Float(metadata=d("Seconds since boot"))
    kernel = String(metadata=d("Kernel release"))
    boot_id = String(metadata=d("Changes at every boot"))
    load_1m = Float(metadata=d("1-minute load average"))
    heartbeat_at = Float(metadata=d("Time of the last heartbeat (Unix time)"))
    agent_version = String(metadata=d("Version of the node's cairn-agent"))
    disks = List(Nested(DiskOut), metadata=d("Whole disks of the node (refreshed every 30 s)"))


class NodeListOut(Schema):
    nodes = List(Nested(NodeOut), metadata=d("Every node of the cluster"))


class DiagnosticsIn(Schema):
    samples = Integer(load_default=20, validate=Range(1, MAX_SAMPLES),
                      metadata=d("How many cluster store round trips to time"))


class LogLineOut(Schema):
    time = Float(metadata=d("When (Unix time)"))
    message = String(metadata=d("What the job reported"))


class JobSummaryOut(Schema):
    id = String(metadata=d("Job id (sortable by creation time)"))
    kind = String(metadata=d("What kind of job, e.g. node.diagnostics"))
    node = String(metadata=d("The node that runs the job"))
    title = String(metadata=d("Human-readable title"))
    params = Dict(metadata=d("Parameters the job was started with"))
    state = String(validate=OneOf([s.value for s in JobState]),
                   metadata=d("queued, running, success, failed or aborted"))
    progress = Integer(metadata=d("Percent done, 0 to 100"))
    description = String(metadata=d("What the job is doing now"))
    result = Dict(allow_none=True, metadata=d("What the job produced, when it succeeded"))
    error = String(allow_none=True, metadata=d("Why the job failed or was aborted"))
    abortable = Boolean(metadata=d("Whether the job can be aborted while running"))
    locks = List(String(metadata=d("Lock name")), metadata=d("Named locks the job holds while it runs"))
    created_at = Float(metadata=d("When the job was submitted (Unix time)"))
    started_at = Float(allow_none=True, metadata=d("When it started running"))
    finished_at = Float(allow_none=True, metadata=d("When it ended"))
    waiting_for = String(allow_none=True, metadata=d("A lock the queued job waits for"))


class JobOut(JobSummaryOut):
    log = List(Nested(LogLineOut), metadata=d("The job's log, oldest first (last 200 lines)"))


class JobListOut(Schema):
    jobs = List(Nested(JobSummaryOut), metadata=d("Jobs, newest first"))


class JobQuery(Schema):
    state = String(validate=OneOf([s.value for s in JobState]), metadata=d("Only jobs in this state"))
    node = String(metadata=d("Only jobs of this node"))
    limit = Integer(load_default=100, validate=Range(1, 1000), metadata=d("At most this many jobs"))


class EventOut(Schema):
    time = Float(metadata=d("When (Unix time)"))
    severity = String(metadata=d("info, warning or error"))
    node = String(metadata=d("Node that reported it"))
    source = String(metadata=d("What it is about, e.g. job:<id>"))
    message = String(metadata=d("What happened"))


class EventListOut(Schema):
    events = List(Nested(EventOut), metadata=d("Recent events, newest first"))


class StreamQuery(Schema):
    since = Integer(validate=Range(0), metadata=d("Send changes made after this store revision "
                                                   "(pages pass the revision they were rendered at)"))
