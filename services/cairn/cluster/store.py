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
import json
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw import exceptions as etcd_errors

from cairn.errors import Unavailable, CairnError

SCHEMA_VERSION = 1
# MIGRATIONS[i] upgrades version i to i+1. Version 0 means "empty store".
MIGRATIONS: list[Callable[["Store"], None]] = [lambda store: None]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


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
    kind: str           # "put" | "delete"
    key: str            # relative to the root
    value: Any          # decoded JSON, None on delete
    revision: int


# Building blocks of transactions (pure): compares and operations as etcd JSON.
@dataclass(frozen=True)
class Compare:
    key: str
    target: str         # "MOD" | "CREATE" | "VERSION" | "VALUE"
    op: str             # "EQUAL" | "NOT_EQUAL" | "GREATER" | "LESS"
    value: Any


def absent(key: str) -> Compare:
    return Compare(key, "CREATE", "EQUAL", 0)


def unchanged(key: str, mod_revision: int) -> Compare:
    return Compare(key, "MOD", "EQUAL", mod_revision)


@dataclass(frozen=True)
class Put:
    key: str
    value: Any
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


def encode_txn(root: str, compares: Sequence[Compare], success: Sequence[Put | Delete],
               failure: Sequence[Put | Delete] = ()) -> dict[str, Any]:
    """The etcd /kv/txn request body for a transaction (pure)."""
    def full(key: str) -> str:
        return f"{root}/{key}"

    def compare(c: Compare) -> dict[str, Any]:
        body: dict[str, Any] = {"key": _b64(full(c.key)), "target": c.target, "result": c.op}
        field = {"MOD": "mod_revision", "CREATE": "create_revision",
                 "VERSION": "version", "VALUE": "value"}[c.target]
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
        return {"request_delete_range": body}

    return {"compare": [compare(c) for c in compares],
            "success": [op(o) for o in success],
            "failure": [op(o) for o in failure]}


class Store:
    def __init__(self, endpoints: Sequence[str], root: str = "/cairn", timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = list(endpoints)
        self.root = root
        self.timeout = timeout
        self._current = 0
        self._lock = threading.Lock()
        self._clients = [self._client(url) for url in self.endpoints]

    def reset_connections(self) -> None:
        """New HTTP sessions (after fork: a child must not share pooled sockets with its parent)."""
        self._clients = [self._client(url) for url in self.endpoints]

    def _client(self, url: str) -> Etcd3Client:
        protocol, rest = url.split("://", 1)
        host, _, port = rest.rstrip("/").rpartition(":")
        return Etcd3Client(host=host, port=int(port), protocol=protocol, timeout=self.timeout,
                           api_path="/v3/")

    def full_key(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _relative(self, full: str) -> str:
        return full[len(self.root) + 1:]

    # --- transport with failover -------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        errors: list[str] = []
        with self._lock:
            start = self._current
        for step in range(len(self._clients)):
            index = (start + step) % len(self._clients)
            client = self._clients[index]
            try:
                result = client.post(client.get_url(path), json=body)
            except etcd_errors.ConnectionFailedError as exc:
                errors.append(f"{self.endpoints[index]}: {_short(exc)}")
                continue
            except etcd_errors.ConnectionTimeoutError as exc:
                errors.append(f"{self.endpoints[index]}: timed out")
                if not idempotent:
                    raise Unavailable(
                        f"etcd did not answer a write within {self.timeout:g} s "
                        f"({self.endpoints[index]}); its outcome is unknown") from exc
                continue
            except etcd_errors.Etcd3Exception as exc:
                text = str(getattr(exc, "detail_text", "") or exc)
                if "no leader" in text or "timed out" in text or "leader changed" in text:
                    errors.append(f"{self.endpoints[index]}: {text.strip()[:200]}")
                    if not idempotent:
                        raise Unavailable(f"etcd could not complete a write: {text.strip()[:200]}") from exc
                    continue
                raise CairnError(f"etcd refused a request to {path}: {text.strip()[:300]}") from exc
            with self._lock:
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

    def list(self, prefix: str, *, limit: int = 0, descending: bool = False) -> list[Entry]:
        """Entries whose key starts with prefix, in key order."""
        full = self.full_key(prefix)
        body: dict[str, Any] = {"key": _b64(full), "range_end": _b64(_prefix_end(full))}
        if limit:
            body["limit"] = str(limit)
        if descending:
            body["sort_order"] = "DESCEND"
            body["sort_target"] = "KEY"
        result = self._post("/kv/range", body, idempotent=True)
        return [self._entry(kv) for kv in result.get("kvs", [])]

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
        body: dict[str, Any] = {"key": _b64(self.full_key(key)), "value": _b64(json.dumps(value, sort_keys=True))}
        if lease:
            body["lease"] = str(lease)
        result = self._post("/kv/put", body, idempotent=True)
        return int(result["header"]["revision"])

    def txn(self, compares: Sequence[Compare], success: Sequence[Put | Delete],
            failure: Sequence[Put | Delete] = ()) -> bool:
        """Apply `success` if every compare holds, else `failure`. Returns whether they held."""
        result = self._post("/kv/txn", encode_txn(self.root, compares, success, failure), idempotent=False)
        return bool(result.get("succeeded", False))

    def create(self, key: str, value: Any, lease: int = 0) -> bool:
        """Write only if the key does not exist."""
        return self.txn([absent(key)], [Put(key, value, lease)])

    def cas(self, key: str, value: Any, mod_revision: int, lease: int = 0) -> bool:
        """Write only if the key was not changed since mod_revision (0: only if absent)."""
        compare = absent(key) if mod_revision == 0 else unchanged(key, mod_revision)
        return self.txn([compare], [Put(key, value, lease)])

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        if mod_revision is None:
            result = self._post("/kv/deleterange", {"key": _b64(self.full_key(key))}, idempotent=True)
            return int(result.get("deleted", 0)) > 0
        return self.txn([unchanged(key, mod_revision)], [Delete(key)])

    def delete_prefix(self, prefix: str) -> int:
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

        Reconnects (to the next endpoint if need be) from the last revision seen, so no event is
        lost across a leader change. Ends when `stop` is set.
        """
        next_revision = start_revision
        full = self.full_key(prefix)
        request = {"create_request": {"key": _b64(full), "range_end": _b64(_prefix_end(full)),
                                      "start_revision": str(next_revision)}}
        while stop is None or not stop.is_set():
            with self._lock:
                index = self._current
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
                            yield None
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
                if not self._endpoint_alive(index):
                    with self._lock:
                        self._current = (index + 1) % len(self._clients)
            except requests.exceptions.Timeout:
                yield None

    def _endpoint_alive(self, index: int) -> bool:
        client = self._clients[index]
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
