"""Request and response schemas of /api/v1. Every field says what it is (the OpenAPI document
is generated from these, and a meta-test checks that no field lacks a description).

A JSON body's numbers and booleans are taken as JSON types only (WholeNumber, JsonBoolean): the
document says integer and boolean, and marshmallow's own fields would quietly make 2.5 into 2,
1e-9 into 0 and "yes" into true. Query parameters arrive as text and keep the lenient fields."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Dict, Float, Integer, List, Nested, Raw, String
from apiflask.validators import Length, OneOf, Range

from cairn.jobs.model import JobState
from cairn.system.diagnostics import MAX_SAMPLES


def d(text: str) -> dict:
    return {"description": text}


class WholeNumber(Integer):
    """An integer of a JSON body: a JSON integer, nothing that merely converts to one."""

    def __init__(self, **kwargs) -> None:
        super().__init__(strict=True, **kwargs)


class JsonBoolean(Boolean):
    """A boolean of a JSON body: true or false, not 0, "1", "yes" or "off"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            return value
        raise self.make_error("invalid", input=value)


class ErrorDetailOut(Schema):
    code = String(required=True, metadata=d("What kind of error: invalid, unauthenticated, not_found, conflict, "
                                            "precondition_failed, busy, rate_limited, unavailable, internal, ..."))
    message = String(required=True, metadata=d("What went wrong, in words for a person"))
    fields = Dict(metadata=d("For invalid input: each field's path (e.g. disks[0].size) and what is wrong with it"))
    details = Dict(metadata=d("What a client can act on, e.g. the disk or the VMs in the way"))


class ErrorOut(Schema):
    error = Nested(ErrorDetailOut, required=True, metadata=d("Every error answer of the API has this one shape"))


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


class StoreHealthOut(Schema):
    db_size = Integer(metadata=d("Bytes of the local etcd member's database file"))
    db_size_in_use = Integer(metadata=d("Bytes of it holding live data (the rest is free pages until a defragment)"))
    quota = Integer(metadata=d("The database's quota in bytes: at the quota the store refuses every change"))
    revision = Integer(metadata=d("The store's current revision"))
    version = String(metadata=d("etcd's version"))
    alarms = List(String(metadata=d("An alarm, e.g. NOSPACE")), metadata=d("Active etcd alarms"))
    warning = String(allow_none=True, metadata=d("What needs the admin's attention, or null"))


class ClusterMemberOut(Schema):
    id = String(metadata=d("etcd member id (decimal)"))
    name = String(metadata=d("The member's name (its node), or '(not started yet)'"))
    role = String(metadata=d("'voter' (counts for quorum) or 'learner' (holds every change, does not vote)"))
    leader = Boolean(metadata=d("True for the member that leads the store now"))
    reachable = Boolean(metadata=d("The member answered a status request just now"))
    peer_urls = List(String(metadata=d("A peer URL")), metadata=d("Where members reach it"))
    client_urls = List(String(metadata=d("A client URL")), metadata=d("Where clients reach it"))
    rtt_ms = Float(allow_none=True, metadata=d("Round trip of its status request from this node, ms"))
    db_size = Integer(allow_none=True, metadata=d("Bytes of its database file"))
    version = String(allow_none=True, metadata=d("Its etcd version"))
    error = String(metadata=d("Why it did not answer ('' when it did)"))


class QuorumOut(Schema):
    voters = Integer(metadata=d("Voting members"))
    voters_up = Integer(metadata=d("Voting members that answer"))
    quorum = Integer(metadata=d("How many voters must answer for the store to accept changes"))
    can_lose = Integer(metadata=d("How many more voters can be lost with the store still working"))
    has_quorum = Boolean(metadata=d("The store can accept changes now"))
    text = String(metadata=d("What losing one more node would do, in a sentence"))


class ClusterNodeOut(Schema):
    id = String(metadata=d("The node's stable identity (its machine-id)"))
    name = String(metadata=d("The node's name (display only; it may change)"))
    address = String(metadata=d("The node's cluster address"))
    interface = String(metadata=d("The NIC that carries it"))
    joined_at = Float(metadata=d("When the node joined (Unix time)"))
    state = String(metadata=d("member, joining (admitted, not started yet) or removed (gone for good: "
                              "its records are kept, shown with it)"))
    removed_at = Float(allow_none=True, metadata=d("When it was removed (Unix time), for a removed node"))
    removed_by = String(allow_none=True, metadata=d("The node whose console removed it"))


class ClusterInfoOut(Schema):
    id = String(metadata=d("The cluster's id"))
    name = String(metadata=d("The cluster's name"))
    created_at = Float(metadata=d("When it was created (Unix time)"))
    ca_fingerprint = String(metadata=d("SHA-256 fingerprint of the cluster CA (join tokens carry it)"))
    nodes = List(Nested(ClusterNodeOut), metadata=d("The nodes of the cluster"))


class ClusterOut(Schema):
    cluster = Nested(ClusterInfoOut, allow_none=True,
                     metadata=d("The cluster this node is in; null while the node is standalone"))
    members = List(Nested(ClusterMemberOut), metadata=d("The cluster store's members"))
    leader = String(metadata=d("Member id of the leader ('' when there is none)"))
    quorum = Nested(QuorumOut, metadata=d("Quorum now, and what the cluster can lose"))
    roles = String(metadata=d("Why the members have the roles they have"))


class ClusterCaOut(Schema):
    ca = String(metadata=d("The cluster CA certificate (PEM)"))
    fingerprint = String(metadata=d("Its SHA-256 fingerprint, as join tokens carry it"))


class ClusterNicIn(Schema):
    interface = String(load_default="", validate=Length(0, 15),
                       metadata=d("This node's NIC for cluster traffic (etcd, migration, storage), e.g. enp0s9"))
    address = String(required=True, validate=Length(3, 64),
                     metadata=d("This node's static cluster address with its prefix, e.g. 10.77.1.11/24"))


class ClusterCreateIn(ClusterNicIn):
    name = String(required=True, validate=Length(1, 40), metadata=d("The cluster's name, e.g. office"))


class ClusterJoinIn(ClusterNicIn):
    token = String(required=True, validate=Length(1, 1024),
                   metadata=d("The join token shown on a cluster node's console"))


class JoinRequestIn(Schema):
    token = String(required=True, metadata=d("The join token (it authenticates the request)"))
    node_id = String(required=True, metadata=d("The joining node's machine-id"))
    name = String(required=True, metadata=d("The joining node's name"))
    address = String(required=True, metadata=d("The joining node's cluster address"))
    interface = String(load_default="", metadata=d("Its cluster NIC"))
    keys = List(String(), load_default=list, metadata=d("Store keys of the records the node brings"))
    csr = String(load_default="", metadata=d("The node's certificate signing request (PEM)"))
    check_only = Boolean(load_default=False, metadata=d("Only check: change nothing, use up nothing"))


class JoinRequestOut(Schema):
    ok = Boolean(metadata=d("check_only: the join would be accepted"))
    cluster_id = String(metadata=d("The cluster's id"))
    name = String(metadata=d("The cluster's name"))
    cert = String(metadata=d("The node's certificate from the cluster CA (PEM)"))
    ca = String(metadata=d("The cluster CA (PEM)"))
    member_id = String(metadata=d("The node's etcd member (a learner until promoted)"))
    initial_cluster = Dict(keys=String(), values=String(), metadata=d("etcd member name → peer URL"))
    endpoints = List(String(), metadata=d("Client URLs of the voting members"))


class JoinTokenIn(Schema):
    ttl = WholeNumber(load_default=3600, validate=Range(60, 7 * 24 * 3600),
                      metadata=d("Seconds the token stays valid (default one hour, at most 7 days)"))


class JoinTokenOut(Schema):
    token = String(metadata=d("The token to paste on the joining node (shown once)"))
    id = String(metadata=d("The token's id (to revoke it)"))
    expires_at = Float(metadata=d("When it expires (Unix time)"))
    address = String(metadata=d("The cluster node the joining node will ask (host:port)"))


class JoinTokenRecordOut(Schema):
    id = String(metadata=d("The token's id"))
    created_by = String(metadata=d("The node whose console made it"))
    created_at = Float(metadata=d("When it was made (Unix time)"))
    expires_at = Float(metadata=d("When it expires (Unix time)"))
    used_by = String(allow_none=True, metadata=d("The node that joined with it; null while unused"))
    used_at = Float(allow_none=True, metadata=d("When it was used"))


class JoinTokenListOut(Schema):
    tokens = List(Nested(JoinTokenRecordOut), metadata=d("Join tokens not yet expired (never their secrets)"))


class DiskUsageOut(Schema):
    kind = String(metadata=d("What uses the disk: system, pool, md, in-use or free (only free disks can be used)"))
    detail = String(metadata=d("In words, e.g. 'pool tank' or 'vda2 is mounted at /'"))


class PartitionOut(Schema):
    name = String(metadata=d("Kernel name of the partition"))
    size = Integer(metadata=d("Size in bytes"))
    fstype = String(allow_none=True, metadata=d("Filesystem or signature on it"))
    mountpoints = List(String(metadata=d("Mount point")), metadata=d("Where it is mounted"))


class DiskOut(Schema):
    id = String(allow_none=True, metadata=d("How Cairn names the disk: its serial (None: no serial, "
                                            "so Cairn will not use it)"))
    name = String(metadata=d("Kernel name (changes between boots: identify disks by id)"))
    path = String(metadata=d("Device path, e.g. /dev/nvme0n1"))
    serial = String(allow_none=True, metadata=d("Serial number as the disk reports it"))
    model = String(allow_none=True, metadata=d("Model as reported by the disk"))
    size = Integer(metadata=d("Size in bytes"))
    bus = String(metadata=d("sata, sas, nvme, virtio, usb, scsi, ..."))
    media = String(metadata=d("hdd, ssd or nvme"))
    usage = Nested(DiskUsageOut, metadata=d("What uses the disk"))
    partitions = List(Nested(PartitionOut), metadata=d("Partitions on the disk"))


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
    removed = Boolean(metadata=d("The node was removed from the cluster (gone for good; what it held is "
                                 "still listed, and it runs no jobs)"))


class NodeListOut(Schema):
    nodes = List(Nested(NodeOut), metadata=d("Every node of the cluster"))


class DiagnosticsIn(Schema):
    samples = WholeNumber(load_default=20, validate=Range(1, MAX_SAMPLES),
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
    last_log = String(allow_none=True, metadata=d("The newest line of the job's log"))
    log_count = Integer(metadata=d("How many log lines the job has written (the last 200 are kept)"))


class JobOut(JobSummaryOut):
    log = List(Nested(LogLineOut), metadata=d("The job's log, oldest first (last 200 lines)"))


class JobListOut(Schema):
    jobs = List(Nested(JobSummaryOut), metadata=d("Jobs, newest first"))
    next = String(allow_none=True, metadata=d("Continue token for the next page (pass it as "
                                              "`continue`), null on the last page"))


class JobQuery(Schema):
    state = String(validate=OneOf([s.value for s in JobState]), metadata=d("Only jobs in this state"))
    node = String(metadata=d("Only jobs of this node"))
    limit = Integer(load_default=100, validate=Range(1, 1000), metadata=d("At most this many jobs"))
    continue_ = String(data_key="continue", validate=Length(max=200),
                       metadata=d("The `next` token of the previous page: go on after it"))


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


# --- storage ----------------------------------------------------------------------------------
class DiskHealthOut(Schema):
    verdict = String(metadata=d("good, warning, failing, or unknown (no SMART)"))
    reasons = List(String(metadata=d("A reason")), metadata=d("Why the verdict is not good"))
    at = Float(metadata=d("When SMART was last read (Unix time)"))
    report = Dict(metadata=d("The parsed SMART report: temperature_c, power_on_hours, reallocated_sectors, "
                             "pending_sectors, media_errors, percentage_used, selftest, ..."))


class NodeDiskOut(DiskOut):
    node = String(metadata=d("The node the disk is in"))
    health = Nested(DiskHealthOut, allow_none=True, metadata=d("Last SMART reading (None until the first poll)"))


class DiskListOut(Schema):
    disks = List(Nested(NodeDiskOut), metadata=d("Whole disks of every node (or of one node)"))


class DiskQuery(Schema):
    node = String(metadata=d("Only disks of this node"))
    usage = String(metadata=d("Only disks with this usage, e.g. free"))


class SelfTestIn(Schema):
    type = String(load_default="short", metadata=d("short (minutes) or long (hours)"))


class PoolCreateIn(Schema):
    name = String(required=True, metadata=d("Pool name: 1-32 of a-z, 0-9, '-', '_'; mounted at /pools/<name>"))
    node = String(required=True, metadata=d("The node whose disks make the pool"))
    disks = List(String(metadata=d("Disk id (serial)")), load_default=None,
                 metadata=d("Disks to use, by id; each must be free (or give array)"))
    array = String(load_default=None, allow_none=True,
                   metadata=d("Make the pool on this md array instead of on disks (profile single)"))
    profile = String(load_default=None, allow_none=True, metadata=d("Data profile: single, raid1, raid1c3 or raid10 "
                                                     "(default raid1; btrfs raid5/6 are refused: use md RAID)"))
    metadata_profile = String(load_default=None, allow_none=True,
                              metadata=d("Metadata profile (default: raid1 on 2+ disks, dup on one)"))
    compression = String(load_default="none", metadata=d("none, zstd, lzo or zlib"))


class PoolOut(Schema):
    name = String(metadata=d("Pool name"))
    node = String(metadata=d("Node that holds the pool's disks"))
    data_profile = String(metadata=d("btrfs data profile"))
    metadata_profile = String(metadata=d("btrfs metadata profile"))
    compression = String(metadata=d("Compression of new writes"))
    disks = List(String(metadata=d("Disk id")), metadata=d("Disks of the pool, by id"))
    array = String(allow_none=True, metadata=d("md array the pool sits on, if any"))
    uuid = String(allow_none=True, metadata=d("btrfs filesystem UUID"))
    state = String(metadata=d("creating, online or destroying"))
    scrub_schedule = String(allow_none=True, metadata=d("None, weekly or monthly"))
    balance_schedule = String(allow_none=True, metadata=d("None, weekly or monthly"))
    created_at = Float(metadata=d("When it was created (Unix time)"))
    status = Dict(allow_none=True, metadata=d("What the node last observed: mounted, health (online, degraded, "
                                              "errors, unmounted), usage, devices, scrub, balance, volumes"))


class PoolListOut(Schema):
    pools = List(Nested(PoolOut), metadata=d("Every pool of the cluster"))


class PoolPatchIn(Schema):
    scrub_schedule = String(allow_none=True, metadata=d("None, weekly or monthly: scrub the pool that often"))
    balance_schedule = String(allow_none=True, metadata=d("None, weekly or monthly: rebalance the pool that often"))


class PoolExpandIn(Schema):
    disks = List(String(metadata=d("Disk id (serial)")), required=True, metadata=d("Free disks to add"))
    balance = JsonBoolean(load_default=True, metadata=d("Rebalance afterwards so data spreads over every disk"))


class PoolReplaceIn(Schema):
    old = String(required=True, metadata=d("Disk id to replace, or devid:<n> for a missing device"))
    new = String(required=True, metadata=d("Free disk id to replace it with"))


class ConfirmQuery(Schema):
    confirm = String(metadata=d("Must repeat the name of what is destroyed"))


class ScheduleIn(Schema):
    every = String(load_default="daily", metadata=d("hourly, daily, weekly, or '<n>m' (n >= 5 minutes)"))
    keep_last = WholeNumber(load_default=7, metadata=d("Keep this many newest automatic snapshots"))
    keep_hourly = WholeNumber(load_default=0, metadata=d("Keep the newest of each of this many last hours"))
    keep_daily = WholeNumber(load_default=7, metadata=d("Keep the newest of each of this many last days"))
    keep_weekly = WholeNumber(load_default=4, metadata=d("Keep the newest of each of this many last weeks"))


class VolumeCreateIn(Schema):
    name = String(required=True, metadata=d("Volume name: 1-32 of a-z, 0-9, '-', '_'"))
    quota_bytes = WholeNumber(load_default=None, allow_none=True, metadata=d("Quota in bytes (null: none)"))
    schedule = Nested(ScheduleIn, load_default=None, allow_none=True,
                      metadata=d("Snapshot schedule with retention (null: none)"))


class VolumePatchIn(Schema):
    quota_bytes = WholeNumber(allow_none=True, metadata=d("New quota in bytes (null removes it)"))
    schedule = Nested(ScheduleIn, allow_none=True, metadata=d("New snapshot schedule (null removes it)"))


class SnapshotOut(Schema):
    name = String(metadata=d("Snapshot name"))
    created_at = Float(metadata=d("When it was taken (Unix time)"))
    auto = Boolean(metadata=d("Taken by the schedule (pruned by its retention)"))
    referenced = Integer(allow_none=True, metadata=d("Bytes the snapshot refers to"))
    exclusive = Integer(allow_none=True, metadata=d("Bytes only it holds: what deleting it frees"))


class VolumeOut(Schema):
    pool = String(metadata=d("Pool of the volume"))
    name = String(metadata=d("Volume name"))
    path = String(metadata=d("Where it is on the pool's node"))
    quota_bytes = Integer(allow_none=True, metadata=d("Quota in bytes, if any"))
    schedule = Dict(allow_none=True, metadata=d("Snapshot schedule, if any"))
    created_at = Float(metadata=d("When it was created (Unix time)"))
    referenced = Integer(allow_none=True, metadata=d("Bytes the volume refers to (shared with snapshots too)"))
    exclusive = Integer(allow_none=True, metadata=d("Bytes only the volume holds (not shared with snapshots)"))
    snapshots = List(Nested(SnapshotOut), metadata=d("Its snapshots, oldest first"))


class VolumeListOut(Schema):
    volumes = List(Nested(VolumeOut), metadata=d("Volumes of the pool"))


class VolumePatchOut(Schema):
    volume = Nested(VolumeOut, metadata=d("The volume after the change (quota changes apply when the job ends)"))
    job = Dict(allow_none=True, metadata=d("The job that changes the quota, if the quota changed"))


class SnapshotListOut(Schema):
    snapshots = List(Nested(SnapshotOut), metadata=d("Snapshots of the volume, oldest first"))


class SnapshotCreateIn(Schema):
    name = String(load_default=None, allow_none=True,
                  metadata=d("Name (default: manual-<UTC time>); letters, digits, '.', '-', '_'"))


class RollbackIn(Schema):
    confirm = String(required=True, metadata=d("Must repeat the volume name: its current content is discarded"))


class CloneIn(Schema):
    name = String(required=True, metadata=d("Name of the new volume"))


class ArrayCreateIn(Schema):
    name = String(required=True, metadata=d("Array name: 1-32 of a-z, 0-9, '-', '_'; device /dev/md/<name>"))
    node = String(required=True, metadata=d("The node whose disks make the array"))
    level = String(required=True, metadata=d("raid0, raid1, raid5, raid6 or raid10"))
    disks = List(String(metadata=d("Disk id (serial)")), required=True, metadata=d("Free disks to use"))


class ArrayOut(Schema):
    name = String(metadata=d("Array name"))
    node = String(metadata=d("Node that holds the array's disks"))
    level = String(metadata=d("RAID level"))
    disks = List(String(metadata=d("Disk id")), metadata=d("Member disks by id"))
    uuid = String(allow_none=True, metadata=d("md UUID"))
    created_at = Float(metadata=d("When it was created (Unix time)"))
    status = Dict(allow_none=True, metadata=d("Last observation: health (clean, degraded, rebuilding, resyncing, "
                                              "reshaping, failed, missing), state, sync_percent, members"))


class ArrayListOut(Schema):
    arrays = List(Nested(ArrayOut), metadata=d("md RAID arrays of the cluster"))


class ArrayDiskIn(Schema):
    disk = String(required=True, metadata=d("Disk id (serial)"))


class ArrayReplaceIn(Schema):
    old = String(required=True, metadata=d("Member disk id to replace (failed, missing or healthy)"))
    new = String(required=True, metadata=d("Free disk id to rebuild onto"))


# --- shares -----------------------------------------------------------------------------------
class FileUserIn(Schema):
    name = String(required=True, metadata=d("User name: a-z, 0-9, '_', '.', '-' (SMB and NFS)"))
    password = String(required=True, load_only=True, metadata=d("Password for SMB (8-128 characters)"))
    full_name = String(load_default="", metadata=d("Full name, shown to people"))
    groups = List(String(metadata=d("Group name")), load_default=list, metadata=d("Groups the user is in"))
    uid = WholeNumber(metadata=d("Numeric id (default: the next free one from 10000)"))


class FileUserPatchIn(Schema):
    full_name = String(metadata=d("Full name"))
    groups = List(String(metadata=d("Group name")), metadata=d("Groups the user is in (replaces the list)"))
    disabled = JsonBoolean(metadata=d("A disabled user keeps its files but cannot connect"))
    password = String(load_only=True, metadata=d("New password"))


class FileUserOut(Schema):
    name = String(metadata=d("User name"))
    uid = Integer(metadata=d("Numeric id, the same on every node"))
    full_name = String(metadata=d("Full name"))
    groups = List(String(metadata=d("Group name")), metadata=d("Groups the user is in"))
    disabled = Boolean(metadata=d("Whether the user is disabled"))


class FileUserListOut(Schema):
    users = List(Nested(FileUserOut), metadata=d("File-access users"))


class FileGroupIn(Schema):
    name = String(required=True, metadata=d("Group name"))
    description = String(load_default="", metadata=d("What the group is for"))
    gid = WholeNumber(metadata=d("Numeric id (default: the next free one from 10000)"))


class FileGroupOut(Schema):
    name = String(metadata=d("Group name"))
    gid = Integer(metadata=d("Numeric id, the same on every node"))
    description = String(metadata=d("What the group is for"))


class FileGroupListOut(Schema):
    groups = List(Nested(FileGroupOut), metadata=d("File-access groups"))


class ShareIn(Schema):
    name = String(required=True, metadata=d("Share name as clients see it"))
    pool = String(required=True, metadata=d("Pool of the shared volume"))
    volume = String(required=True, metadata=d("The shared volume"))
    path = String(metadata=d("Directory shared (default: the volume's root); must lie inside the volume"))
    description = String(load_default="", metadata=d("Comment clients see"))
    smb = Dict(allow_none=True, load_default=None, metadata=d(
        "SMB settings or null: browseable, read_only, guest_ok, recycle_bin, previous_versions (booleans)"))
    nfs = Dict(allow_none=True, load_default=None, metadata=d(
        "NFS settings or null: clients, a list of {match: host|address|network|*.domain|*, access: rw|ro, "
        "root_squash: bool}"))
    permissions = List(Dict(metadata=d("{principal: user:<name>|group:<name>, access: rw|ro|none}")),
                       load_default=list, metadata=d("Who may do what"))


class SharePatchIn(Schema):
    path = String(metadata=d("Directory shared"))
    description = String(metadata=d("Comment clients see"))
    smb = Dict(allow_none=True, metadata=d("SMB settings or null"))
    nfs = Dict(allow_none=True, metadata=d("NFS settings or null"))
    permissions = List(Dict(metadata=d("{principal, access}")), metadata=d("Who may do what (replaces the list)"))


class ShareStateOut(Schema):
    state = String(validate=OneOf(["served", "pending", "error"]),
                   metadata=d("served: the pool's node serves the share; pending: it has not applied it yet; "
                              "error: it does not serve it and its last shares pass failed (see error)"))
    node = String(allow_none=True,
                  metadata=d("The node that owns the share's pool and serves it (null: no such pool)"))
    error = String(allow_none=True, metadata=d("State error: what is wrong with the share's record as its node "
                                                "sees it, or why the node's last shares pass failed; else null"))


class ShareOut(Schema):
    name = String(metadata=d("Share name"))
    pool = String(metadata=d("Pool"))
    volume = String(metadata=d("Volume"))
    path = String(metadata=d("Directory shared"))
    description = String(metadata=d("Comment"))
    smb = Dict(allow_none=True, metadata=d("SMB settings, or null when not shared over SMB"))
    nfs = Dict(allow_none=True, metadata=d("NFS settings, or null when not exported"))
    permissions = List(Dict(metadata=d("{principal, access}")), metadata=d("Who may do what"))
    state = Nested(ShareStateOut, metadata=d("Whether the share is served, from what its pool's node last "
                                             "reported (GET responses only; a new share is pending until the "
                                             "node's next pass)"))


class ShareListOut(Schema):
    shares = List(Nested(ShareOut), metadata=d("Every share of the cluster"))


class SharesConfigDoc(Schema):
    format = String(required=True, metadata=d("Always 'cairn-shares/1'"))
    groups = List(Dict(metadata=d("A group record")), load_default=list, metadata=d("Groups with their gids"))
    users = List(Dict(metadata=d("A user record with its NT hash")), load_default=list,
                 metadata=d("Users with their uids, groups and NT password hashes"))
    shares = List(Dict(metadata=d("A share record")), load_default=list, metadata=d("Shares with their settings"))
    iscsi_targets = List(Dict(metadata=d("An iSCSI target record with its LUNs and CHAP password")),
                         load_default=list, metadata=d("iSCSI targets (absent in documents from before iSCSI)"))


class SharesImportOut(Schema):
    groups = Integer(metadata=d("Groups added"))
    users = Integer(metadata=d("Users added"))
    shares = Integer(metadata=d("Shares added"))
    iscsi_targets = Integer(metadata=d("iSCSI targets added"))
    unchanged = Integer(metadata=d("Records that existed already, identical (skipped)"))


# --- iSCSI ------------------------------------------------------------------------------------
# Input fields are not marked required and take loose types where the checks in cairn.shares.iscsi
# say more (sizes as bytes or "10G"): that way every problem is reported at once, by field path.
class IscsiLunIn(Schema):
    size = Raw(metadata=d("Size (required): whole bytes or a text like 512M, 10G or 2T (binary units); "
                          "a multiple of 1 MiB, 1 MiB to 64 TiB. The file is sparse: space is used as data is written"))
    lun = WholeNumber(allow_none=True, metadata=d("LUN number 0-255 (default: the lowest free one)"))


class IscsiLunGrowIn(Schema):
    size = Raw(metadata=d("New size (required), bytes or like 20G: at least the current size (LUNs only grow)"))


class IscsiLunOut(Schema):
    lun = Integer(metadata=d("LUN number (0-255)"))
    size = Integer(metadata=d("Size in bytes"))
    serial = String(metadata=d("SCSI unit serial (32 hex digits), fixed at creation"))
    file = String(metadata=d("The LUN's sparse file on the pool's node"))


class IscsiTargetIn(Schema):
    name = String(load_default=None, metadata=d("Target name (required): 1-63 of a-z, 0-9 and '-'"))
    iqn = String(load_default=None, allow_none=True,
                 metadata=d("Target IQN (default: iqn.2026-11.invalid.cairn:<name>); iqn., eui. or naa. form"))
    pool = String(load_default=None, metadata=d("Pool of the volume holding the LUN files (required)"))
    volume = String(load_default=None, metadata=d("Volume holding the LUN files (required)"))
    description = String(load_default="", metadata=d("What the target is for"))
    initiators = List(String(metadata=d("Initiator IQN")), load_default=None,
                      metadata=d("iSCSI names of the initiators allowed to connect (at least one)"))
    chap = Dict(load_default=None, allow_none=True,
                metadata=d("CHAP or null: {user: 1-64 printable ASCII without spaces, password: 12-16 characters}"))
    luns = List(Dict(metadata=d("{size[, lun]}")), load_default=list,
                metadata=d("LUNs to make with the target: {size: bytes or like 10G, lun: optional number}"))


class IscsiTargetPatchIn(Schema):
    description = String(metadata=d("What the target is for"))
    initiators = List(String(metadata=d("Initiator IQN")), metadata=d("Allowed initiators (replaces the list)"))
    chap = Dict(allow_none=True, metadata=d("CHAP {user, password} or null to remove it; without a password the "
                                            "current one stays"))
    name = String(metadata=d("Fixed: a different value is refused"))
    iqn = String(metadata=d("Fixed: a different value is refused"))
    pool = String(metadata=d("Fixed: a different value is refused"))
    volume = String(metadata=d("Fixed: a different value is refused"))
    luns = Raw(metadata=d("Refused here: use /iscsi-targets/<name>/luns"))


class IscsiChapOut(Schema):
    user = String(metadata=d("CHAP user name"))
    password_set = Boolean(metadata=d("A CHAP password is set (it is never shown)"))


class IscsiTargetOut(Schema):
    name = String(metadata=d("Target name"))
    iqn = String(metadata=d("Target IQN, as initiators see it"))
    pool = String(metadata=d("Pool of the LUN files"))
    volume = String(metadata=d("Volume of the LUN files"))
    description = String(metadata=d("What the target is for"))
    luns = List(Nested(IscsiLunOut), metadata=d("LUNs, by number"))
    initiators = List(String(metadata=d("Initiator IQN")), metadata=d("Initiators allowed to connect"))
    chap = Nested(IscsiChapOut, allow_none=True, metadata=d("CHAP user (the password is never shown), or null"))
    status = Dict(allow_none=True, metadata=d("What the pool's node last observed of the target, or null"))


class IscsiTargetListOut(Schema):
    targets = List(Nested(IscsiTargetOut), metadata=d("Every iSCSI target of the cluster"))


class LunConfirmQuery(Schema):
    confirm = String(metadata=d("Must repeat the LUN number: its data is deleted"))
