"""The cluster store: etcd, reached through its JSON gateway (etcd3gw), keys under one root.

Values are JSON documents. Keys are given relative to the root ("jobs/abc" -> "/cairn/jobs/abc").
Every read returns the key's mod revision so that writers can compare-and-swap; `txn` exposes
etcd transactions for multi-key atomic changes. Leases bind keys to a holder's liveness.

Endpoint failover: the client talks to one endpoint at a time and moves to the next when a request
cannot be delivered (connection refused, reset, or — for reads only — a timeout). When no endpoint
answers, `Unavailable` is raised with a message naming the endpoints tried. A write that timed out
is not repeated blindly: its outcome is unknown, and the caller gets Unavailable.

Schema: `/cairn/schema` holds {"version": N}. `ensure_schema` creates it and runs forward migrations
(MIGRATIONS[i] takes the store from version i to i+1). Only the agent and the web server at start
call it; migrations must be idempotent.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw import exceptions as etcd_errors

from cairn.errors import CairnError, Conflict, NotFound, Unavailable

SCHEMA_VERSION = 1
MEMBER_WAIT = 30.0          # seconds a membership change waits for etcd to accept it
MEMBER_WAIT_FOR = ("unhealthy cluster", "in sync with leader")   # etcd's "not yet" answers
GET_MANY_CHUNK = 100        # reads per transaction (etcd refuses more than --max-txn-ops)
# MIGRATIONS[i] upgrades version i to i+1. Version 0 means "empty store".
MIGRATIONS: list[Callable[["Store"], None]] = [lambda store: None]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _status(endpoint: str, result: dict[str, Any]) -> "MemberStatus":
    return MemberStatus(endpoint=endpoint, member_id=str(result.get("header", {}).get("member_id", "")),
                        db_size=int(result.get("dbSize", 0)),
                        db_size_in_use=int(result.get("dbSizeInUse", result.get("dbSize", 0))),
                        revision=int(result.get("header", {}).get("revision", 0)),
                        leader=str(result.get("leader", "")), version=str(result.get("version", "")))


def _member(raw: dict[str, Any]) -> "Member":
    return Member(member_id=str(raw.get("ID", "")), name=str(raw.get("name", "")),
                  peer_urls=list(raw.get("peerURLs", [])), client_urls=list(raw.get("clientURLs", [])),
                  learner=bool(raw.get("isLearner", False)))


def _prefix_end(prefix: str) -> str:
    """The range_end that selects every key starting with prefix."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


@dataclass(frozen=True)
class Entry:
    key: str            # relative to the root
    value: Any          # decoded JSON
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    kind: str           # "put" | "delete" | "compacted" (changes before `revision` are lost)
    key: str            # relative to the root
    value: Any          # decoded JSON, None on delete
    revision: int


@dataclass(frozen=True)
class MemberStatus:
    endpoint: str
    member_id: str
    db_size: int            # bytes of the database file
    db_size_in_use: int     # bytes holding live data (the rest is free pages until a defragment)
    revision: int
    leader: str
    version: str


# Building blocks of transactions (pure): compares and operations as etcd JSON.
@dataclass(frozen=True)
class Compare:
    key: str
    target: str         # "MOD" | "CREATE" | "VERSION" | "VALUE" | "LEASE"
    op: str             # "EQUAL" | "NOT_EQUAL" | "GREATER" | "LESS"
    value: Any


def absent(key: str) -> Compare:
    return Compare(key, "CREATE", "EQUAL", 0)


def unchanged(key: str, mod_revision: int) -> Compare:
    return Compare(key, "MOD", "EQUAL", mod_revision)


def held_by(key: str, lease: int) -> Compare:
    """The key exists bound to this lease: a fencing token. A writer whose lease expired (its key
    gone, or now bound to a newer lease) fails this compare, so it cannot write as if it held it."""
    return Compare(key, "LEASE", "EQUAL", lease)


@dataclass(frozen=True)
class Put:
    key: str
    value: Any
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False
    range_end: str = ""     # delete [key, range_end) (relative keys); "" with prefix=False: one key


def encode_txn(root: str, compares: Sequence[Compare], success: Sequence[Put | Delete],
               failure: Sequence[Put | Delete] = ()) -> dict[str, Any]:
    """The etcd /kv/txn request body for a transaction (pure)."""
    def full(key: str) -> str:
        return f"{root}/{key}"

    def compare(c: Compare) -> dict[str, Any]:
        body: dict[str, Any] = {"key": _b64(full(c.key)), "target": c.target, "result": c.op}
        field = {"MOD": "mod_revision", "CREATE": "create_revision",
                 "VERSION": "version", "VALUE": "value", "LEASE": "lease"}[c.target]
        body[field] = _b64(json.dumps(c.value, sort_keys=True)) if c.target == "VALUE" else str(c.value)
        return body

    def op(o: Put | Delete) -> dict[str, Any]:
        if isinstance(o, Put):
            put: dict[str, Any] = {"key": _b64(full(o.key)), "value": _b64(json.dumps(o.value, sort_keys=True))}
            if o.lease:
                put["lease"] = str(o.lease)
            return {"request_put": put}
        body = {"key": _b64(full(o.key))}
        if o.prefix:
            body["range_end"] = _b64(_prefix_end(full(o.key)))
        elif o.range_end:
            body["range_end"] = _b64(full(o.range_end))
        return {"request_delete_range": body}

    return {"compare": [compare(c) for c in compares],
            "success": [op(o) for o in success],
            "failure": [op(o) for o in failure]}


@dataclass(frozen=True)
class ClientTls:
    """Mutual TLS towards etcd: the cluster CA, and this node's certificate and key."""
    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class Member:
    member_id: str          # decimal, as etcd's JSON gateway gives it
    name: str               # empty until a member added by member_add has started
    peer_urls: list[str]
    client_urls: list[str]
    learner: bool


class Store:
    def __init__(self, endpoints: Sequence[str], root: str = "/cairn", timeout: float = 5.0,
                 tls: ClientTls | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.tls = tls
        self.endpoints = list(endpoints)
        self.root = root
        self.timeout = timeout
        self._current = 0
        self._lock = threading.Lock()
        self._clients = [self._client(url) for url in self.endpoints]
        self._others: dict[str, Etcd3Client] = {}    # other members' clients, by URL (status_at)
        # What this process last wrote with put_if_changed: key -> (encoded value, lease).
        self._written: dict[str, tuple[str, int]] = {}

    def reconfigure(self, endpoints: Sequence[str], tls: ClientTls | None) -> None:
        """Talk to other endpoints, with other TLS files, from the next request on: what a node does
        when it creates or joins a cluster (its etcd moves to the cluster address and mutual TLS).
        Requests under way finish on the old connections; watches reconnect to the new ones."""
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        with self._lock:
            self.tls = tls
            self.endpoints = list(endpoints)
            self._clients = [self._client(url) for url in self.endpoints]
            self._current = 0
            self._others = {}
            self._written = {}

    def reset_connections(self) -> None:
        """New HTTP sessions (after fork: a child must not share pooled sockets with its parent)."""
        self._clients = [self._client(url) for url in self.endpoints]
        self._others = {}

    def _client(self, url: str) -> Etcd3Client:
        protocol, rest = url.split("://", 1)
        host, _, port = rest.rstrip("/").rpartition(":")
        if self.tls is None:
            return Etcd3Client(host=host, port=int(port), protocol=protocol, timeout=self.timeout,
                               api_path="/v3/")
        session = requests.Session()
        # Not from the environment: REQUESTS_CA_BUNDLE would replace the cluster CA, a proxy
        # variable would send cluster traffic elsewhere.
        session.trust_env = False
        session.verify = self.tls.ca
        session.cert = (self.tls.cert, self.tls.key)
        return Etcd3Client(host=host, port=int(port), protocol=protocol, timeout=self.timeout,
                           api_path="/v3/", session=session)

    def full_key(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _relative(self, full: str) -> str:
        return full[len(self.root) + 1:]

    # --- transport with failover -------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        errors: list[str] = []
        with self._lock:
            start, clients, endpoints = self._current, self._clients, self.endpoints
        for step in range(len(clients)):
            index = (start + step) % len(clients)
            client = clients[index]
            try:
                result = client.post(client.get_url(path), json=body)
            except etcd_errors.ConnectionFailedError as exc:
                errors.append(f"{endpoints[index]}: {_short(exc)}")
                continue
            except etcd_errors.ConnectionTimeoutError as exc:
                errors.append(f"{endpoints[index]}: timed out")
                if not idempotent:
                    raise Unavailable(
                        f"etcd did not answer a write within {self.timeout:g} s "
                        f"({endpoints[index]}); its outcome is unknown") from exc
                continue
            except etcd_errors.Etcd3Exception as exc:
                text = str(getattr(exc, "detail_text", "") or exc)
                if "no leader" in text or "timed out" in text or "leader changed" in text \
                        or "not supported for learner" in text:
                    # A learner (a node's own member while it catches up) serves no requests:
                    # the next endpoint will.
                    errors.append(f"{endpoints[index]}: {text.strip()[:200]}")
                    if not idempotent:
                        raise Unavailable(f"etcd could not complete a write: {text.strip()[:200]}") from exc
                    continue
                raise CairnError(f"etcd refused a request to {path}: {text.strip()[:300]}") from exc
            with self._lock:
                if clients is self._clients:
                    self._current = index
            return result
        raise Unavailable("the cluster store (etcd) is unreachable: " + "; ".join(errors))

    # --- reads -------------------------------------------------------------------------------
    def get_entry(self, key: str) -> Entry | None:
        result = self._post("/kv/range", {"key": _b64(self.full_key(key))}, idempotent=True)
        kvs = result.get("kvs", [])
        return self._entry(kvs[0]) if kvs else None

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.get_entry(key)
        return default if entry is None else entry.value

    def list(self, prefix: str, *, limit: int = 0, descending: bool = False, after: str = "",
             keys_only: bool = False) -> list[Entry]:
        """Entries whose key starts with prefix, in key order (or reversed), at most `limit`.

        `after` continues a listing: only keys after it in the listing's order (a page's last key
        for the next page), so paging is done by the store, not by reading everything and slicing.
        With keys_only the entries' values are None (counting and pruning need no values).
        """
        full = self.full_key(prefix)
        start, end = full, _prefix_end(full)
        if after:
            if descending:
                end = self.full_key(after)                  # range end is exclusive
            else:
                start = self.full_key(after) + "\0"        # the first key after `after`
        body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(end)}
        if limit:
            body["limit"] = str(limit)
        if descending:
            body["sort_order"] = "DESCEND"
            body["sort_target"] = "KEY"
        if keys_only:
            body["keys_only"] = True
        result = self._post("/kv/range", body, idempotent=True)
        return [self._entry(kv) for kv in result.get("kvs", [])]

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """Several keys in one round trip per GET_MANY_CHUNK keys (a transaction of reads)."""
        found: list[Entry | None] = []
        for begin in range(0, len(keys), GET_MANY_CHUNK):
            chunk = keys[begin:begin + GET_MANY_CHUNK]
            body = {"success": [{"request_range": {"key": _b64(self.full_key(k))}} for k in chunk]}
            result = self._post("/kv/txn", body, idempotent=True)
            for response in result.get("responses", []):
                kvs = response.get("response_range", {}).get("kvs", [])
                found.append(self._entry(kvs[0]) if kvs else None)
        return found

    def count(self, prefix: str) -> int:
        full = self.full_key(prefix)
        result = self._post("/kv/range", {"key": _b64(full), "range_end": _b64(_prefix_end(full)),
                                          "count_only": True}, idempotent=True)
        return int(result.get("count", 0))

    def revision(self) -> int:
        result = self._post("/kv/range", {"key": _b64(self.full_key("schema"))}, idempotent=True)
        return int(result["header"]["revision"])

    def _entry(self, kv: dict[str, Any]) -> Entry:
        raw = _unb64(kv["value"]) if kv.get("value") else "null"
        return Entry(key=self._relative(_unb64(kv["key"])), value=json.loads(raw),
                     mod_revision=int(kv.get("mod_revision", 0)),
                     create_revision=int(kv.get("create_revision", 0)),
                     lease=int(kv.get("lease", 0)))

    # --- writes ------------------------------------------------------------------------------
    def put(self, key: str, value: Any, lease: int = 0) -> int:
        """Unconditional write (for keys with one writer). Returns the new revision."""
        self._forget_exact(key)
        body: dict[str, Any] = {"key": _b64(self.full_key(key)), "value": _b64(json.dumps(value, sort_keys=True))}
        if lease:
            body["lease"] = str(lease)
        result = self._post("/kv/put", body, idempotent=True)
        return int(result["header"]["revision"])

    def put_if_changed(self, key: str, value: Any, lease: int = 0, *,
                       stamp: dict[str, Any] | None = None) -> bool:
        """Write a key that this process alone writes (a node's status, say) only when its value or
        lease differs from what this process last wrote there: a periodic publisher then adds no
        store history while nothing changes. `stamp` (e.g. {"observed_at": now}) is written with
        the value but not compared, so a time does not make every pass a change. Returns whether
        it wrote. Any other write or delete of the key through this Store makes the next call write.
        """
        encoded = json.dumps(value, sort_keys=True)
        with self._lock:
            if self._written.get(key) == (encoded, lease):
                return False
        try:
            self.put(key, {**value, **stamp} if stamp else value, lease)
        except CairnError:
            self.forget_written(key)
            raise
        with self._lock:
            self._written[key] = (encoded, lease)
        return True

    def _forget_exact(self, key: str) -> None:
        if self._written:
            with self._lock:
                self._written.pop(key, None)

    def forget_written(self, prefix: str = "") -> None:
        """Make the next put_if_changed of keys under prefix write (after a lost lease, say)."""
        with self._lock:
            for key in [k for k in self._written if k.startswith(prefix)]:
                del self._written[key]

    def txn(self, compares: Sequence[Compare], success: Sequence[Put | Delete],
            failure: Sequence[Put | Delete] = ()) -> bool:
        """Apply `success` if every compare holds, else `failure`. Returns whether they held."""
        return self.txn_result(compares, success, failure)[0]

    def txn_result(self, compares: Sequence[Compare], success: Sequence[Put | Delete],
                   failure: Sequence[Put | Delete] = ()) -> tuple[bool, int]:
        """As txn, with the store revision after it."""
        for op in (*success, *failure):
            if isinstance(op, Delete) and (op.prefix or op.range_end):
                self.forget_written(op.key)
            else:
                self._forget_exact(op.key)
        result = self._post("/kv/txn", encode_txn(self.root, compares, success, failure), idempotent=False)
        return bool(result.get("succeeded", False)), int(result.get("header", {}).get("revision", 0))

    def create(self, key: str, value: Any, lease: int = 0) -> bool:
        """Write only if the key does not exist."""
        return self.txn([absent(key)], [Put(key, value, lease)])

    def claim(self, key: str, value: Any, ttl: int) -> int:
        """Create key bound to a new lease of ttl seconds, if nobody holds it: the lease (revoke
        it to let go, or let it run out), or 0 when the key is taken. How one node of the cluster
        wins a round of periodic work, or holds a cluster-wide lock."""
        if self.get_entry(key) is not None:      # taken: no lease granted for nothing
            return 0
        lease = self.grant_lease(ttl)
        if self.create(key, value, lease):
            return lease
        self.revoke_lease(lease)
        return 0

    def cas(self, key: str, value: Any, mod_revision: int, lease: int = 0) -> bool:
        """Write only if the key was not changed since mod_revision (0: only if absent)."""
        compare = absent(key) if mod_revision == 0 else unchanged(key, mod_revision)
        return self.txn([compare], [Put(key, value, lease)])

    def update(self, key: str, change: Callable[[Any], Any], *, attempts: int = 20) -> Entry:
        """Read-modify-write with compare-and-swap: `change` gets the key's current value and
        returns the new one (or raises to refuse); if someone wrote the key in between, it runs
        again on the fresh value. The key keeps its lease. Nothing is written when `change`
        returns the value unchanged. Raises NotFound for a missing key, Conflict when the key
        kept changing for `attempts` tries."""
        for _ in range(attempts):
            entry = self.get_entry(key)
            if entry is None:
                raise NotFound(f"{key} does not exist (it was deleted meanwhile?)", key=key)
            value = json.loads(json.dumps(change(copy.deepcopy(entry.value)), sort_keys=True))
            if value == entry.value:
                return entry
            held, revision = self.txn_result([unchanged(key, entry.mod_revision)],
                                             [Put(key, value, entry.lease)])
            if held:
                return Entry(key, value, revision, entry.create_revision, entry.lease)
        raise Conflict(f"{key} changed {attempts} times while it was being updated; try again")

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        self._forget_exact(key)
        if mod_revision is None:
            result = self._post("/kv/deleterange", {"key": _b64(self.full_key(key))}, idempotent=True)
            return int(result.get("deleted", 0)) > 0
        return self.txn([unchanged(key, mod_revision)], [Delete(key)])

    def delete_range(self, start: str, end: str) -> int:
        """Delete every key in [start, end) (relative keys). Returns how many were deleted."""
        self.forget_written(start)
        body = {"key": _b64(self.full_key(start)), "range_end": _b64(self.full_key(end))}
        return int(self._post("/kv/deleterange", body, idempotent=True).get("deleted", 0))

    def delete_prefix(self, prefix: str) -> int:
        self.forget_written(prefix)
        full = self.full_key(prefix)
        result = self._post("/kv/deleterange", {"key": _b64(full), "range_end": _b64(_prefix_end(full))},
                            idempotent=True)
        return int(result.get("deleted", 0))

    # --- leases ------------------------------------------------------------------------------
    def grant_lease(self, ttl: int) -> int:
        result = self._post("/lease/grant", {"TTL": str(ttl)}, idempotent=False)
        return int(result["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh a lease; returns its TTL, or -1 if it has already expired."""
        result = self._post("/lease/keepalive", {"ID": str(lease)}, idempotent=True)
        return int(result.get("result", {}).get("TTL", -1))

    def revoke_lease(self, lease: int) -> None:
        try:
            self._post("/kv/lease/revoke", {"ID": str(lease)}, idempotent=True)
        except CairnError as exc:
            if "not found" not in exc.message:
                raise

    # --- maintenance (per member) -------------------------------------------------------------
    def member_status(self, endpoint: int = 0) -> MemberStatus:
        """Database size, size in use and raft state of the member behind endpoints[endpoint]."""
        return _status(self.endpoints[endpoint], self._post_to(endpoint, "/maintenance/status", {}))

    def status_at(self, url: str, timeout: float = 1.0) -> MemberStatus:
        """The status of any member, by its client URL (e.g. another node's, from the member list),
        reached with this store's credentials."""
        with self._lock:
            if url not in self._others:
                self._others[url] = self._client(url)
            client = self._others[url]
        try:
            response = client.session.post(client.get_url("/maintenance/status"), json={}, timeout=timeout)
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"etcd member {url} did not answer: {_short(exc)}") from exc
        if response.status_code != 200:
            raise Unavailable(f"etcd member {url} refused a status request: {response.text.strip()[:200]}")
        return _status(url, response.json())

    # --- membership (etcd's cluster API) -------------------------------------------------------
    def members(self) -> list[Member]:
        result = self._member_post("/cluster/member/list", {})
        return [_member(m) for m in result.get("members", [])]

    def member_add(self, peer_urls: list[str], learner: bool, wait: float = MEMBER_WAIT) -> tuple[Member, list[Member]]:
        """Add a member (a learner: it gets the data but does not vote, so quorum is unchanged until
        it is promoted). Returns the new member and the whole membership, for its --initial-cluster.
        Adding the same peer URLs again (a retry after a lost answer) returns the member added."""
        try:
            result = self._member_post("/cluster/member/add", {"peerURLs": peer_urls, "isLearner": learner}, wait)
        except CairnError as refused:
            if "Peer URLs already exists" not in str(refused):
                raise
            everyone = self.members()
            same = [m for m in everyone if sorted(m.peer_urls) == sorted(peer_urls)]
            if not same or same[0].name:
                raise Conflict(f"a member with peer address {', '.join(peer_urls)} is already in the cluster") from None
            return same[0], everyone
        return _member(result.get("member", {})), [_member(m) for m in result.get("members", [])]

    def member_promote(self, member_id: str, wait: float = MEMBER_WAIT) -> None:
        """A learner becomes a voting member, once its log has caught up with the leader's
        (waits up to `wait` seconds for that)."""
        self._member_post("/cluster/member/promote", {"ID": member_id}, wait)

    def member_update(self, member_id: str, peer_urls: list[str], wait: float = MEMBER_WAIT) -> None:
        """A member's peer addresses (a node creating a cluster moves its member to the cluster
        address; the member listens there after its restart)."""
        self._member_post("/cluster/member/update", {"ID": member_id, "peerURLs": peer_urls}, wait)

    def member_remove(self, member_id: str, wait: float = MEMBER_WAIT) -> None:
        self._member_post("/cluster/member/remove", {"ID": member_id}, wait)

    def _member_post(self, path: str, body: dict[str, Any], wait: float = MEMBER_WAIT) -> dict[str, Any]:
        """A membership call to the first member that answers. etcd refuses a change for a few
        seconds after the last one ("unhealthy cluster": a new voter must have been up 5 s) and
        promotes only a learner in sync: both are waited out for up to `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                start = self._current
            unreachable: list[str] = []
            for step in range(len(self._clients)):
                index = (start + step) % len(self._clients)
                try:
                    return self._post_to(index, path, body)
                except Unavailable as exc:
                    unreachable.append(str(exc))
                except CairnError as exc:
                    if not any(text in str(exc) for text in MEMBER_WAIT_FOR) or time.monotonic() > deadline:
                        raise
                    break
            else:
                raise Unavailable("the cluster store (etcd) is unreachable: " + "; ".join(unreachable))
            time.sleep(0.5)

    def alarms(self) -> list[dict[str, str]]:
        """Active etcd alarms (NOSPACE: the quota is reached and the store refuses writes)."""
        result = self._post("/maintenance/alarm", {"action": "GET", "memberID": "0", "alarm": "NONE"},
                            idempotent=True)
        return [{"member_id": str(a.get("memberID", "")), "alarm": str(a.get("alarm", ""))}
                for a in result.get("alarms", [])]

    def defragment(self, endpoint: int = 0) -> None:
        """Give the member's free pages back to the file system. The member answers nothing else
        while it runs (seconds for a large database): do one member at a time."""
        self._post_to(endpoint, "/maintenance/defragment", {}, timeout=300.0)

    def _post_to(self, index: int, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        client = self._clients[index]
        try:
            response = client.session.post(client.get_url(path), json=body, timeout=timeout or self.timeout)
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"etcd member {self.endpoints[index]} did not answer: {_short(exc)}") from exc
        if response.status_code != 200:
            raise CairnError(f"etcd member {self.endpoints[index]} refused {path}: "
                             f"{response.text.strip()[:300]}")
        return response.json()

    # --- schema ------------------------------------------------------------------------------
    def ensure_schema(self) -> int:
        """Create or migrate the schema record; returns the version now in force."""
        while True:
            entry = self.get_entry("schema")
            version = 0 if entry is None else int(entry.value["version"])
            if version > SCHEMA_VERSION:
                raise CairnError(f"the store has schema version {version}, newer than this "
                                 f"software's {SCHEMA_VERSION}: upgrade Cairn on this node")
            if version == SCHEMA_VERSION:
                return version
            MIGRATIONS[version](self)
            self.cas("schema", {"version": version + 1}, 0 if entry is None else entry.mod_revision)

    # --- watch -------------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int, *, idle_timeout: float = 5.0,
              stop: threading.Event | None = None) -> Iterator[Event | None]:
        """Events under prefix from start_revision on; yields None after `idle_timeout` quiet seconds.

        When the history from start_revision on was compacted away, it yields an Event of kind
        "compacted" (its revision: the oldest one still kept) and goes on from there: changes in
        between are lost, and the caller must read the state again.

        Reconnects (to the next endpoint if need be) from the last revision seen, so no event is
        lost across a leader change. Ends when `stop` is set.
        """
        next_revision = start_revision
        full = self.full_key(prefix)
        request = {"create_request": {"key": _b64(full), "range_end": _b64(_prefix_end(full)),
                                      "start_revision": str(next_revision)}}
        while stop is None or not stop.is_set():
            with self._lock:
                index = self._current % len(self._clients)
                client = self._clients[index]
            request["create_request"]["start_revision"] = str(next_revision)
            try:
                with client.session.post(client.get_url("/watch"), json=request, stream=True,
                                         timeout=(self.timeout, idle_timeout)) as response:
                    for line in response.iter_lines(chunk_size=None):
                        if not line.strip():
                            continue
                        result = json.loads(line).get("result", {})
                        if result.get("compact_revision") and int(result["compact_revision"]) > next_revision:
                            # History is gone: the caller must re-read the state.
                            next_revision = int(result["compact_revision"])
                            yield Event(kind="compacted", key="", value=None, revision=next_revision)
                            break
                        for raw in result.get("events", []):
                            event = self._event(raw)
                            next_revision = event.revision + 1
                            yield event
                        if stop is not None and stop.is_set():
                            return
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
                # Read timeouts on a stream surface as ConnectionError; quiet stream or dead endpoint.
                yield None
                if not self._endpoint_alive(client):
                    with self._lock:
                        self._current = (index + 1) % len(self._clients)
            except requests.exceptions.Timeout:
                yield None

    def _endpoint_alive(self, client: Etcd3Client) -> bool:
        try:
            client.session.get(client.base_url + "/version", timeout=1.0)
            return True
        except requests.exceptions.RequestException:
            return False

    def _event(self, raw: dict[str, Any]) -> Event:
        kv = raw["kv"]
        kind = "delete" if raw.get("type") == "DELETE" else "put"
        value = json.loads(_unb64(kv["value"])) if kind == "put" and kv.get("value") else None
        return Event(kind=kind, key=self._relative(_unb64(kv["key"])), value=value,
                     revision=int(kv.get("mod_revision", 0)))


def _short(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    return text[:160]
