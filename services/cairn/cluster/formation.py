"""Creating and joining a cluster: the jobs that turn a standalone appliance into a cluster node,
and the cluster node's side of a join (`Sponsor`).

A standalone node's etcd is one member on 127.0.0.1 in plain HTTP. `cluster.create` (a job on the
node whose console was asked) does, with progress:
  1. checks the cluster interface and address (cairn.cluster.network: the NIC exists and is not the
     LAN's, the address is a host address of its subnet and on no other interface) and writes it
     as a systemd-networkd unit, waiting until the NIC has it. Stacks that do not manage the
     network (tests: manage_network = false) only check that the address is this node's;
  2. makes the cluster CA and this node's key and certificate from it (cairn.cluster.pki): the
     certificate names the cluster address, this node's other addresses, its host name, and
     127.0.0.1/localhost (the console is reached there too: it presents the same certificate);
  3. moves etcd to the cluster address over mutual TLS: the member's peer address is updated,
     its environment file (/etc/cairn/etcd.env, over the image's loopback-only drop-in) rewritten
     and etcd restarted; this process's store client follows (Store.reconfigure) and the job goes
     on once the store answers over TLS. If etcd does not come back, the old environment is put
     back and etcd restarted as it was: the node stays standalone;
  4. records the cluster: cluster/info (id, name, the CA certificate), cluster/ca-key (the CA's
     key: every node can then sign a joining node's request, as Proxmox keeps its CA key in its
     cluster file system; only nodes holding a cluster certificate reach etcd at all), and
     cluster/nodes/<node id> (name and cluster address);
  5. switches this node's services: cairn.toml gets the https endpoint and the TLS files, the
     console's certificate becomes the node certificate (so a browser that trusts the cluster CA
     trusts every node) and cairn-web is told to reload (SIGHUP to the pid in <state_dir>/web.pid:
     its new workers read the new settings and certificate).

`cluster.join` (on the joining node) checks the cluster's CA against the token's fingerprint,
asks the sponsor (the node named in the token) to check and then admit it, brings its records
into the cluster store, starts its etcd as a learner in a fresh data directory, switches its
services as above, and promotes learners while the cluster wants voters; a failure after the
sponsor admitted it is undone (`_JoinUndo`).

Keys written here: cluster/info and cluster/ca-key (by the node creating the cluster),
cluster/nodes/<node id> (the creating node, the sponsor at admission, the joined node at the end).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
import urllib3

from cairn import config as config_mod
from cairn.cluster import etcd_settings, events, membership, merge, network, pki, tokens
from cairn.cluster.store import ClientTls, Delete, Put, Store, absent
from cairn.errors import AuthenticationError, CairnError, Conflict, Unavailable, ValidationError
from cairn.jobs.registry import job_kind
from cairn.jobs.service import record_writes
from cairn.runner import Runner
from cairn.system.diagnostics import parse_ip_addr
from cairn.system.files import parse_assignments, read_text, write_if_changed, write_private
from cairn.system.tls import console_tls

INFO = "cluster/info"
CA_KEY = "cluster/ca-key"
NODES = "cluster/nodes/"
CLUSTER_NAME_MAX = 40
INTERFACE = re.compile(r"[A-Za-z0-9_.:-]{0,15}")     # "" where the network is not managed (tests)
STORE_BACK_SECONDS = 60.0       # how long etcd may take to answer after its restart
ADDRESS_SECONDS = 20.0          # how long the NIC may take to get the address networkd was told


# --- checks (pure) -----------------------------------------------------------------------------
def _check_nic(params: dict[str, Any], problems: dict[str, str]) -> dict[str, str]:
    """The cluster interface and address of a create or join (the problems go into `problems`)."""
    interface = params.get("interface", "")
    if not isinstance(interface, str) or not INTERFACE.fullmatch(interface):
        problems["interface"] = "a network interface name, like enp0s9"
    address = params.get("address")
    try:
        ipaddress.ip_interface(address)
    except (ValueError, TypeError):
        problems["address"] = "this node's cluster address with its prefix length, like 10.77.1.11/24"
    return {"interface": interface, "address": address}


def check_create(params: dict[str, Any]) -> dict[str, Any]:
    problems = {name: "unknown parameter" for name in set(params) - {"name", "interface", "address"}}
    name = params.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= CLUSTER_NAME_MAX \
            or not all(c.isprintable() for c in name) or name != name.strip():
        problems["name"] = f"the cluster's name: 1-{CLUSTER_NAME_MAX} printable characters"
    nic = _check_nic(params, problems)
    if problems:
        raise ValidationError(problems)
    return {"name": name, **nic}


def node_names(cluster_ip: str, hostname: str, node_name: str, addresses: list[str]) -> list[str]:
    """The names a node certificate carries: the cluster address first, the node's other (not
    link-local) addresses, its host and node names where they are DNS names, and loopback (pure)."""
    names = [cluster_ip]
    for text in addresses:
        ip = ipaddress.ip_interface(text).ip
        if not ip.is_link_local and not ip.is_loopback:
            names.append(str(ip))
    for name in (hostname, node_name):
        if pki.DNS_NAME.fullmatch(name or ""):
            names.append(name)
    names += ["127.0.0.1", "localhost"]
    return list(dict.fromkeys(names))


def url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def client_url(ip: str) -> str:
    return f"https://{url_host(ip)}:{etcd_settings.CLIENT_PORT}"


def peer_url(ip: str) -> str:
    return f"https://{url_host(ip)}:{etcd_settings.PEER_PORT}"


def console_address(cfg: config_mod.Config) -> str:
    """host:port where other nodes reach this node's console: its cluster address, the console's port."""
    port = cfg.web.bind.rpartition(":")[2]
    return f"{url_host(cfg.cluster.address)}:{port}"


def clustered_config(cfg: config_mod.Config, ip: str, interface: str, endpoints: list[str]) -> config_mod.Config:
    """This node's configuration once it is in a cluster (pure)."""
    files = cluster_files(cfg)
    cluster = replace(cfg.cluster, ca=str(files["ca"]), cert=str(files["cert"]), key=str(files["key"]),
                      address=ip, interface=interface)
    return replace(cfg, etcd_endpoints=tuple(endpoints), cluster=cluster)


def cluster_files(cfg: config_mod.Config) -> dict[str, Path]:
    directory = cfg.state_dir / "cluster"
    return {"ca": directory / "ca.pem", "cert": directory / "node.pem", "key": directory / "node.key"}


# --- the node's side effects ---------------------------------------------------------------------
class LocalNode:
    """What a cluster job changes on this node: its address, files, etcd and the web server."""

    def __init__(self, runner: Runner, cfg: config_mod.Config) -> None:
        self.runner = runner
        self.cfg = cfg

    def interfaces(self) -> list[dict[str, Any]]:
        return parse_ip_addr(self.runner.run(["ip", "-j", "addr"], timeout=10).stdout)

    def lan_members(self) -> list[str]:
        result = self.runner.run(["ip", "-j", "link", "show", "master", network.LAN_BRIDGE], timeout=10, check=False)
        if not result.ok or not result.stdout.strip():
            return []
        return [link.get("ifname", "") for link in json.loads(result.stdout)]

    def check_address(self, interface: str, address: str, taken: dict[str, str]) -> str:
        """The cluster IP to use, after the checks; ValidationError names what is wrong."""
        if self.cfg.cluster.manage_network:
            return network.check_choice(interface, address, self.interfaces(), self.lan_members(), taken).ip
        ip = str(ipaddress.ip_interface(address).ip)
        if ipaddress.ip_address(ip).is_unspecified or ipaddress.ip_address(ip).is_multicast:
            raise ValidationError({"address": f"{ip} cannot be a cluster address (unspecified or multicast)"})
        if ip in taken:
            raise ValidationError({"address": f"{ip} is already {taken[ip]}'s cluster address"})
        try:
            with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as sock:
                sock.bind((ip, 0))
        except OSError:
            raise ValidationError({"address": f"{ip} is not an address of this node"}) from None
        return ip

    def apply_address(self, interface: str, address: str) -> None:
        if not self.cfg.cluster.manage_network:
            return
        choice = network.check_choice(interface, address, self.interfaces(), self.lan_members(), {})
        if write_if_changed(network.UNIT_PATH, network.networkd_unit(choice)):
            self.runner.run(["networkctl", "reload"], timeout=30)
            self.runner.run(["networkctl", "reconfigure", interface], timeout=30)
        deadline = time.monotonic() + ADDRESS_SECONDS
        while True:
            nic = next((i for i in self.interfaces() if i["name"] == interface), {})
            if any(a.split("/")[0] == choice.ip for a in nic.get("addresses", [])):
                return
            if time.monotonic() > deadline:
                raise CairnError(f"{interface} did not get {address} within {ADDRESS_SECONDS:g} s "
                                 f"(systemd-networkd unit {network.UNIT_PATH})")
            time.sleep(0.5)

    def certificate_names(self, ip: str) -> list[str]:
        return node_names(ip, socket.gethostname(), self.cfg.node_name,
                          [a for nic in self.interfaces() for a in nic["addresses"]])

    def install_tls(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> tuple[ClientTls, dict[str, Path]]:
        """The node's key and certificates where its services read them (the client side of the
        store, returned), and etcd's copy (returned): etcd runs as its own user, which cannot read
        /var/lib/cairn; its copy is readable by etcd's group only (where that user exists)."""
        files = _write_tls(cluster_files(self.cfg), ca_pem, cert_pem, key_pem)
        directory = Path(self.cfg.cluster.etcd_tls_dir)
        etcd_files = _write_tls({"ca": directory / "ca.pem", "cert": directory / "node.pem",
                                 "key": directory / "node.key"}, ca_pem, cert_pem, key_pem)
        try:
            group = pwd.getpwnam(self.cfg.cluster.etcd_user).pw_gid
        except KeyError:
            group = None
        if group is not None:
            for path in (directory, *etcd_files.values()):
                os.chown(path, 0, group)
            os.chmod(directory, 0o750)
            os.chmod(etcd_files["key"], 0o640)
        return ClientTls(str(files["ca"]), str(files["cert"]), str(files["key"])), etcd_files

    def switch_services(self, clustered: config_mod.Config, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        """cairn.toml as a cluster node's; the console presents the node certificate (clients such
        as cairnctl trust the cluster CA), and cairn-web reloads with both."""
        self.write_config(clustered)
        tls = self.cfg.state_dir / "tls"
        _write_tls({"ca": tls / "ca.pem", "cert": tls / "server.pem", "key": tls / "server.key"},
                   ca_pem, cert_pem, key_pem)
        (tls / "ca.key").unlink(missing_ok=True)       # the standalone CA signs nothing any more
        self.reload_web()

    def switch_to_standalone(self, standalone: config_mod.Config) -> None:
        """cairn.toml as a standalone node's; the console gets a certificate from a new CA of its own
        (the cluster's CA signs nothing here any more), and cairn-web reloads with both."""
        self.write_config(standalone)
        for name in ("ca.pem", "ca.key", "server.pem", "server.key"):
            (self.cfg.state_dir / "tls" / name).unlink(missing_ok=True)
        console_tls(self.cfg.state_dir, self.cfg.node_name, self.cfg.web.bind)
        self.reload_web()

    def new_etcd_data_dir(self, path: str) -> None:
        """An empty directory for a joining member's data, owned by etcd's user where there is one."""
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            os.makedirs(path, mode=0o700)
        except OSError as exc:
            raise CairnError(f"cannot make etcd's data directory {path}: {exc.strerror or exc}") from None
        try:
            owner = pwd.getpwnam(self.cfg.cluster.etcd_user)
        except KeyError:
            return
        os.chown(path, owner.pw_uid, owner.pw_gid)

    def etcd_environment(self) -> str | None:
        return read_text(self.cfg.cluster.etcd_env)

    def data_dir_in_use(self) -> str:
        """The data directory etcd runs from now (its environment file's, else the default)."""
        return parse_assignments(self.etcd_environment() or "").get("ETCD_DATA_DIR", self.cfg.cluster.etcd_data_dir)

    def restart_etcd(self, environment: str | None) -> None:
        """Write etcd's environment file (None: remove it) and restart etcd with it."""
        path = Path(self.cfg.cluster.etcd_env)
        if environment is None:
            path.unlink(missing_ok=True)
        else:
            write_if_changed(path, environment, mode=0o600)
        if self.cfg.cluster.etcd_control == "systemd":
            self.runner.run(["systemctl", "restart", "etcd"], timeout=120)
        else:
            self.runner.run(["kill", "-HUP", self._pid(self.cfg.cluster.etcd_pidfile, "etcd's launcher")], timeout=10)

    def reload_web(self) -> None:
        """cairn-web re-reads its settings and certificate (its master starts new workers)."""
        try:
            pid = self._pid(str(self.cfg.state_dir / "web.pid"), "cairn-web")
        except CairnError:
            return          # not running: it reads the new settings when it starts
        self.runner.run(["kill", "-HUP", pid], timeout=10, check=False)

    def write_config(self, cfg: config_mod.Config) -> None:
        if not self.cfg.path:
            raise CairnError("this node's configuration file is unknown; cannot record the cluster in it")
        write_if_changed(self.cfg.path, config_mod.dump(cfg), mode=0o640)

    @staticmethod
    def _pid(pidfile: str, what: str) -> str:
        text = (read_text(pidfile) or "").strip() if pidfile else ""
        if not text.isdigit():
            raise CairnError(f"{what} is not running (no pid in {pidfile or 'a pid file'})")
        return text


def _write_tls(files: dict[str, Path], ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> dict[str, Path]:
    """A CA, a certificate and its key (mode 0600) into the paths given."""
    files["key"].parent.mkdir(parents=True, exist_ok=True)
    write_private(files["key"], key_pem)
    files["cert"].write_bytes(cert_pem)
    files["ca"].write_bytes(ca_pem)
    return files


def _until_answered(ask, seconds: float = STORE_BACK_SECONDS) -> None:
    """Call ask() until it does not raise Unavailable (the last Unavailable after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            ask()
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_for_store(store: Store, seconds: float = STORE_BACK_SECONDS) -> None:
    _until_answered(store.revision, seconds)


def cluster_info(store: Store) -> dict[str, Any] | None:
    return store.get(INFO)


def cluster_nodes(store: Store) -> dict[str, dict[str, Any]]:
    """cluster/nodes/<id> → record, of the nodes not removed (those the voter rule counts)."""
    return {e.key.removeprefix(NODES): e.value for e in store.list(NODES) if e.value.get("state") != "removed"}


def member_at(store: Store, address: str):
    """The etcd member whose peer address is on this cluster address, or None."""
    return next((m for m in store.members() if peer_url(address) in m.peer_urls), None)


def cluster_summary(store: Store) -> dict[str, Any] | None:
    """What the API shows of the cluster this node is in (never the CA key), or None."""
    info = cluster_info(store)
    if info is None:
        return None
    nodes = {e.key.removeprefix(NODES): e.value for e in store.list(NODES)}
    return {"id": info["id"], "name": info["name"], "created_at": info["created_at"],
            "ca_fingerprint": pki.fingerprint(info["ca_cert"].encode()),
            "nodes": [{"id": node_id, "state": "member", **value} for node_id, value in sorted(nodes.items())]}


# --- what the API and the console start ---------------------------------------------------------
def refuse_if_clustered(store: Store, cfg: config_mod.Config) -> None:
    existing = cluster_info(store)
    if existing is not None or cfg.cluster.tls:
        raise Conflict(f"this node is already in cluster {existing['name'] if existing else ''}".strip()
                       + ": it cannot create or join another")


def start(store: Store, cfg: config_mod.Config, jobs, kind: str, params: dict[str, Any]):
    """The cluster.create or cluster.join job on this node (409 at once when it is in a cluster)."""
    refuse_if_clustered(store, cfg)
    return jobs.submit(kind, cfg.node_name, params)


def _standalone_with_identity(store: Store, cfg: config_mod.Config) -> None:
    """What a create or join needs of the node when its job starts."""
    refuse_if_clustered(store, cfg)
    if cfg.node_id == "0" * 32:
        raise CairnError("this node has no machine-id (/etc/machine-id), its identity in the cluster; "
                         "set node_id in its cairn.toml")


def issue_token(store: Store, cfg: config_mod.Config, ttl: int) -> dict[str, Any]:
    """A join token naming this node's console on the cluster network (shown once)."""
    info = cluster_info(store)
    if info is None or not cfg.cluster.address:
        raise Conflict("this node is not in a cluster: create one first (or join one)")
    address = console_address(cfg)
    token, kept = tokens.TokenStore(store).issue(info["id"], address, pki.fingerprint(info["ca_cert"].encode()),
                                                 cfg.node_name, time.time(), ttl)
    return {"token": token.text(), "id": token.token_id, "expires_at": kept["expires_at"], "address": address}


def live_tokens(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Join tokens not yet expired, and used ones (never their secrets), oldest first."""
    now = time.time() if now is None else now
    kept = [t for t in tokens.TokenStore(store).list() if t["expires_at"] > now or t["used_by"]]
    return sorted(kept, key=lambda t: t["created_at"])


# --- the job -------------------------------------------------------------------------------------
def cluster_lock(node: str, params: dict[str, Any]) -> list[str]:
    """Every cluster job (create, join, leave, remove) holds the lock "cluster": one at a time."""
    return ["cluster"]


@job_kind("cluster.create", title="Create cluster {name}", check_params=check_create,
          locks=cluster_lock)
def create_cluster(ctx, params: dict[str, Any]) -> dict[str, Any]:
    cfg: config_mod.Config = ctx.config
    store: Store = ctx.store
    local = LocalNode(ctx.runner, cfg)
    ctx.progress(5, "checking the cluster address")
    _standalone_with_identity(store, cfg)
    members = store.members()
    if len(members) != 1:
        raise Conflict(f"this node's store has {len(members)} members; a new cluster starts from a "
                       "standalone node's single member")
    ip = local.check_address(params["interface"], params["address"], {})

    ctx.progress(15, f"giving {params['interface'] or 'the node'} the cluster address {params['address']}")
    local.apply_address(params["interface"], params["address"])

    ctx.progress(30, "making the cluster CA and this node's certificate")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = pki.make_ca(params["name"], now)
    key = pki.new_key()
    cert = pki.sign_node(ca, pki.make_csr(key, cfg.node_id, local.certificate_names(ip)), now)
    tls, etcd_files = local.install_tls(ca.cert_pem, cert, key)

    ctx.progress(45, "moving the cluster store to the cluster address, over mutual TLS")
    member = members[0]
    old_environment = local.etcd_environment()
    old_endpoints, old_tls = list(store.endpoints), store.tls
    environment = etcd_settings.member_environment(cfg.node_id, ip, str(etcd_files["ca"]),
                                                   str(etcd_files["cert"]), str(etcd_files["key"])) \
        + f"ETCD_DATA_DIR={local.data_dir_in_use()}\n"      # the member keeps its data
    store.member_update(member.member_id, [peer_url(ip)])
    try:
        local.restart_etcd(environment)
        ctx.move_store([client_url(ip)], tls)
    except CairnError as exc:
        ctx.log(f"etcd did not come back over TLS ({exc.message}); putting the standalone store back")
        _put_back(ctx, local, store, old_environment, old_endpoints, old_tls, member)
        raise CairnError(f"the cluster store did not come back at {client_url(ip)}: {exc.message}; "
                         "this node is standalone as before") from None
    ctx.log(f"etcd answers at {client_url(ip)} (mutual TLS)")

    ctx.progress(75, "recording the cluster")
    cluster_id = secrets.token_hex(8)
    stamp = time.time()
    store.put(INFO, {"id": cluster_id, "name": params["name"], "created_at": stamp,
                     "created_by": cfg.node_id, "ca_cert": ca.cert_pem.decode()})
    store.put(CA_KEY, {"key": ca.key_pem.decode()})
    store.put(NODES + cfg.node_id, {"name": cfg.node_name, "address": ip, "interface": params["interface"],
                                    "joined_at": stamp})

    ctx.progress(85, "switching this node's services to the cluster")
    local.switch_services(clustered_config(cfg, ip, params["interface"], [client_url(ip)]), ca.cert_pem, cert, key)
    events.emit(store, severity="info", node=cfg.node_name, source="cluster",
                message=f"cluster {params['name']} created on {cfg.node_name} ({ip})")
    ctx.progress(100, "done")
    return {"cluster_id": cluster_id, "name": params["name"], "address": ip,
            "ca_fingerprint": pki.fingerprint(ca.cert_pem)}


def _put_back(ctx, local: LocalNode, store: Store, environment: str | None, endpoints: list[str],
              tls: ClientTls | None, member) -> None:
    """etcd as it was before a failed move: its old environment, this process's client, its peer
    address. Each step is tried even when one before it failed (said in the job's log)."""
    try:
        local.restart_etcd(environment)
    except CairnError as exc:
        ctx.log(f"restarting etcd with its old settings failed: {exc.message}")
    try:
        ctx.move_store(endpoints, tls)
        store.member_update(member.member_id, member.peer_urls)
    except CairnError as exc:
        ctx.log(f"etcd's old peer address could not be put back: {exc.message}")




# --- joining: the sponsor's side (a cluster node's web server) ---------------------------------------
JOIN_REQUEST_FIELDS = {"token", "node_id", "name", "address", "interface", "keys", "csr", "check_only"}
MAX_BROUGHT_KEYS = 20_000          # a join request is one JSON body (at most 1 MiB)


def check_join_request(body: Any) -> dict[str, Any]:
    """A joining node's request, checked field by field (pure); the token is parsed, not yet checked."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "a JSON object"})
    problems = {name: "unknown field" for name in set(body) - JOIN_REQUEST_FIELDS}
    token = None
    try:
        token = tokens.parse(body.get("token"))
    except ValidationError as exc:
        problems.update(exc.fields)
    if config_mod.node_id_problem(body.get("node_id")) or body.get("node_id") == "0" * 32:
        problems["node_id"] = "the joining node's machine-id (32 hex digits)"
    problem = config_mod.node_name_problem(body.get("name"))
    if problem:
        problems["name"] = problem
    try:
        ipaddress.ip_address(body.get("address"))
    except (ValueError, TypeError):
        problems["address"] = "the joining node's cluster address (an IP address)"
    if not isinstance(body.get("interface", ""), str) or not INTERFACE.fullmatch(body.get("interface", "")):
        problems["interface"] = "a network interface name"
    keys = body.get("keys", [])
    if not isinstance(keys, list) or len(keys) > MAX_BROUGHT_KEYS \
            or not all(isinstance(k, str) and k and len(k) < 1024 and k.isprintable() for k in keys):
        problems["keys"] = "the store keys of the records the node brings (a list of strings)"
    check_only = body.get("check_only", False)
    if not isinstance(check_only, bool):
        problems["check_only"] = "true or false"
    if not check_only and not isinstance(body.get("csr"), str):
        problems["csr"] = "the node's certificate signing request (PEM)"
    if problems:
        raise ValidationError(problems)
    return {"token": token, "node_id": body["node_id"], "name": body["name"], "address": body["address"],
            "interface": body.get("interface", ""), "keys": keys, "csr": body.get("csr", ""),
            "check_only": check_only}


class Sponsor:
    """A cluster node admitting a joining node (its web server, on the token's say-so).

    Before anything changes, the token is checked (not yet used up) and so is everything that would
    make the join wrong: the node or its name or address already in the cluster, a record name or
    claim the cluster already has (the list of them), another membership change under way. Then,
    in this order: the node's certificate is signed, its etcd member added as a learner, the token
    used (if that fails, the member is removed again), and cluster/nodes/<id> written ("joining")."""

    def __init__(self, store: Store, clock=time.time) -> None:
        self.store = store
        self.clock = clock

    def admit(self, request: dict[str, Any]) -> dict[str, Any]:
        info = cluster_info(self.store)
        if info is None:
            raise Conflict("this node is not in a cluster")
        token: tokens.JoinToken = request["token"]
        now = self.clock()
        kept = self.store.get_entry(f"join-tokens/{token.token_id}")
        tokens.check_presented(kept.value if kept else None, token, info["id"], now)
        self._check(request)
        if request["check_only"]:
            return {"ok": True, "cluster_id": info["id"], "name": info["name"]}
        request_names = pki.read_csr(request["csr"])
        if request_names.node_id != request["node_id"] or request["address"] not in request_names.names:
            raise ValidationError({"csr": "the signing request must name this node's id and its cluster address"})
        ca = pki.KeyPair(info["ca_cert"].encode(), self.store.get(CA_KEY)["key"].encode())
        cert = pki.sign_node(ca, request["csr"], datetime.datetime.now(datetime.timezone.utc))
        added, everyone = self.store.member_add([peer_url(request["address"])], learner=True)
        try:
            tokens.TokenStore(self.store).consume(token, info["id"], request["name"], now)
        except CairnError:
            self.store.member_remove(added.member_id)
            raise
        self.store.put(NODES + request["node_id"], {
            "name": request["name"], "address": request["address"], "interface": request["interface"],
            "joined_at": now, "state": "joining", "member_id": added.member_id})
        named = {m.member_id: m.name for m in everyone}
        named[added.member_id] = request["node_id"]
        initial = {named[m.member_id]: url for m in everyone for url in m.peer_urls}
        endpoints = [url for m in everyone if not m.learner for url in m.client_urls]
        return {"cluster_id": info["id"], "name": info["name"], "cert": cert.decode(), "ca": info["ca_cert"],
                "member_id": added.member_id, "initial_cluster": initial, "endpoints": endpoints}

    def _check(self, request: dict[str, Any]) -> None:
        nodes = {e.key.removeprefix(NODES): e.value for e in self.store.list(NODES)}
        if request["node_id"] in nodes:
            raise Conflict(f"this node ({nodes[request['node_id']]['name']}) is already in the cluster")
        names = {value["name"] for value in nodes.values()} | \
            {e.key.removeprefix("nodes/") for e in self.store.list("nodes/", keys_only=True)}
        if request["name"] in names:
            raise Conflict(f"a node named {request['name']} is already in the cluster: give this node "
                           "another name (node_name in its cairn.toml), then join again")
        taken = {value["address"]: value["name"] for value in nodes.values()}
        if request["address"] in taken:
            raise Conflict(f"{request['address']} is already {taken[request['address']]}'s cluster address")
        cluster_keys = [e.key for prefix in (*merge.CLUSTER_WIDE, *merge.CLAIMS)
                        for e in self.store.list(prefix, keys_only=True)]
        merge.check_no_clash(request["keys"], cluster_keys)
        pending = [m for m in self.store.members() if not m.name]
        if pending:
            raise Conflict(f"another node is joining (member {pending[0].member_id} has not started yet); "
                           "try again when it has joined")


# --- joining: the joining node's side (its agent) ----------------------------------------------------
def check_join(params: dict[str, Any]) -> dict[str, Any]:
    problems = {name: "unknown parameter" for name in set(params) - {"token", "interface", "address"}}
    try:
        tokens.parse(params.get("token"))
    except ValidationError as exc:
        problems.update(exc.fields)
    nic = _check_nic(params, problems)
    if problems:
        raise ValidationError(problems)
    return {"token": params["token"].strip(), **nic}


class SponsorClient:
    """Requests from the joining node to the cluster node its token names: first its CA, checked
    against the token's fingerprint, then requests verified with that CA (kept in a temporary file
    until the node installs it: a refused join leaves nothing behind)."""

    def __init__(self, address: str) -> None:
        self.base = f"https://{address}/api/v1"
        self._ca_file = tempfile.NamedTemporaryFile(prefix="cairn-cluster-ca-", suffix=".pem")

    def close(self) -> None:
        self._ca_file.close()

    def ca(self, fingerprint: str) -> bytes:
        """The cluster CA, when its fingerprint is the token's (before that, nothing is trusted)."""
        try:
            with warnings.catch_warnings():
                # Not verified by a CA (none is trusted yet): by the token's fingerprint, below.
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                reply = requests.get(self.base + "/cluster/ca", verify=False, timeout=15)
        except requests.RequestException as exc:
            raise Unavailable(f"the cluster node {self.base.split('/')[2]} did not answer: {exc}") from None
        if reply.status_code != 200:
            raise CairnError(f"{self.base.split('/')[2]} is not a cluster node (it answered {reply.status_code})")
        ca_pem = reply.json()["ca"].encode()
        if pki.fingerprint(ca_pem) != fingerprint:
            raise AuthenticationError(
                f"the cluster CA at {self.base.split('/')[2]} is not the one the token names (fingerprint "
                f"{pki.fingerprint(ca_pem)}, token {fingerprint}): another cluster, or someone in between; "
                "nothing was changed")
        self._ca_file.write(ca_pem)
        self._ca_file.flush()
        return ca_pem

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = requests.post(self.base + "/cluster/join-requests", json=body, verify=self._ca_file.name,
                                  timeout=90)
        except requests.RequestException as exc:
            raise Unavailable(f"the cluster node {self.base.split('/')[2]} did not answer: {exc}") from None
        if reply.status_code >= 400:
            try:
                message = reply.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = reply.text[:300]
            error = {401: AuthenticationError, 409: Conflict}.get(reply.status_code, CairnError)
            raise error(f"the cluster refused the join: {message}")
        return reply.json()


def local_records(store: Store) -> list[str]:
    """Keys of the records this node brings into a cluster (its desired and observed state)."""
    return sorted(e.key for prefix in merge.MOVING for e in store.list(prefix, keys_only=True))


IMPORT_CHUNK = 1000


def import_records(source: Store, target: Store, keys: list[str], extra: list[Put]) -> list[str]:
    """Copy keys (and extra writes) into the target store, each only where it is absent there: a
    chunk with a key taken meanwhile is refused whole. Returns the keys written (to undo them)."""
    written: list[str] = []
    entries = [(key, entry) for key, entry in zip(keys, source.get_many(keys)) if entry is not None]
    writes = [Put(key, entry.value) for key, entry in entries] + extra
    for start in range(0, len(writes), IMPORT_CHUNK):
        chunk = writes[start:start + IMPORT_CHUNK]
        if not target.txn([absent(w.key) for w in chunk], chunk):
            raise Conflict("a name of this node was taken in the cluster while it joined; join again")
        written += [w.key for w in chunk]
    return written


@job_kind("cluster.join", title="Join a cluster", check_params=check_join, locks=cluster_lock)
def join_cluster(ctx, params: dict[str, Any]) -> dict[str, Any]:
    token = tokens.parse(params["token"])
    sponsor = SponsorClient(token.address)
    try:
        return _join(ctx, params, token, sponsor)
    finally:
        sponsor.close()


def _join(ctx, params: dict[str, Any], token: tokens.JoinToken, sponsor: SponsorClient) -> dict[str, Any]:
    cfg: config_mod.Config = ctx.config
    store: Store = ctx.store
    local = LocalNode(ctx.runner, cfg)
    ctx.progress(5, "checking this node and its cluster address")
    _standalone_with_identity(store, cfg)
    ip = local.check_address(params["interface"], params["address"], {})

    ctx.progress(10, f"checking the cluster at {token.address}")
    ca_pem = sponsor.ca(token.ca_fingerprint)
    keys = local_records(store)
    request = {"token": params["token"], "node_id": cfg.node_id, "name": cfg.node_name, "address": ip,
               "interface": params["interface"], "keys": keys}
    checked = sponsor.request({**request, "check_only": True})
    ctx.log(f"cluster {checked['name']} accepts this node ({len(keys)} records come along)")

    ctx.progress(20, f"giving {params['interface'] or 'the node'} the cluster address {params['address']}")
    local.apply_address(params["interface"], params["address"])

    ctx.progress(30, "asking for this node's certificate and etcd membership")
    key = pki.new_key()
    admitted = sponsor.request({**request, "csr": pki.make_csr(key, cfg.node_id, local.certificate_names(ip)).decode()})
    cert = admitted["cert"].encode()
    tls, etcd_files = local.install_tls(ca_pem, cert, key)
    cluster = Store(admitted["endpoints"], store.root, tls=tls)
    undo = _JoinUndo(ctx, local, store, cluster, admitted["member_id"], cfg)
    try:
        ctx.progress(45, "bringing this node's records into the cluster")
        # The job's own record comes along (its progress goes on there); its running index only
        # once this node holds a lease there (a running job of a node without one is failed).
        undo.imported = import_records(store, cluster, keys, record_writes(ctx.job))

        ctx.progress(55, "starting this node's etcd as a member of the cluster (a learner first)")
        data_dir = cfg.cluster.etcd_data_dir.rstrip("/") + "-cluster"
        local.new_etcd_data_dir(data_dir)
        undo.old_environment = local.etcd_environment()
        undo.etcd_restarted = True
        environment = etcd_settings.member_environment(
            cfg.node_id, ip, str(etcd_files["ca"]), str(etcd_files["cert"]), str(etcd_files["key"]),
            admitted["initial_cluster"]) + f"ETCD_DATA_DIR={data_dir}\n"
        local.restart_etcd(environment)
        endpoints = admitted["endpoints"] + [client_url(ip)]
        ctx.move_store(endpoints, tls)
        undo.moved = True
        running = f"job-running/{ctx.node}/{ctx.job.id}"
        store.put(running, {"since": ctx.job.started_at})
        undo.imported.append(running)
        _until_answered(lambda: cluster.status_at(client_url(ip), timeout=2.0))
        ctx.log(f"this node's etcd member answers at {client_url(ip)}")
    except BaseException as exc:
        undo.run()
        if isinstance(exc, CairnError):
            raise CairnError(f"{exc.message}; the join was undone: this node is standalone as before") from None
        raise

    ctx.progress(75, "switching this node's services to the cluster")
    local.switch_services(clustered_config(cfg, ip, params["interface"], endpoints), ca_pem, cert, key)
    store.put(NODES + cfg.node_id, {"name": cfg.node_name, "address": ip, "interface": params["interface"],
                                    "joined_at": time.time(), "state": "member",
                                    "member_id": admitted["member_id"]})

    ctx.progress(85, "giving the cluster the voting members it needs")
    role = promote_while_wanted(store, admitted["member_id"], len(cluster_nodes(store)))
    ctx.log(role)
    events.emit(store, severity="info", node=cfg.node_name, source="cluster",
                message=f"{cfg.node_name} ({ip}) joined cluster {admitted['name']}")
    ctx.restart_after = True
    ctx.progress(100, "done")
    return {"cluster_id": admitted["cluster_id"], "name": admitted["name"], "address": ip,
            "member_id": admitted["member_id"], "role": role, "records": len(keys)}


def member_states(store: Store) -> list[membership.MemberState]:
    """The store's members as the membership decisions see them (healthy: its first client URL
    answered a status request just now)."""
    states = []
    for member in store.members():
        healthy = True
        for url in member.client_urls[:1]:
            try:
                store.status_at(url, timeout=2.0)
            except Unavailable:
                healthy = False
        states.append(membership.MemberState(member.member_id, member.name, not member.learner, healthy))
    return states


PROMOTION_WAIT = 120.0      # seconds a learner may take to catch up before it is promoted


def promote_while_wanted(store: Store, member_id: str, nodes: int, wait: float = PROMOTION_WAIT) -> str:
    """Take the steps membership.next_step names, one at a time, while the cluster wants voters:
    whichever learner it picks (the joining node's own, or one that joined earlier and was not
    promoted then). Returns the joining member's role in words."""
    for _ in range(membership.voters_wanted(nodes)):
        step = membership.next_step(member_states(store), nodes)
        if step.action != "promote":
            break
        try:
            store.member_promote(step.member_id, wait=wait)
        except CairnError as exc:
            return f"learner for now: promoting member {step.member_id} failed ({exc.message})"
    voter = any(s.member_id == member_id and s.voter for s in member_states(store))
    return "voting member" if voter else f"learner ({membership.role_reason(nodes)})"


class _JoinUndo:
    """Putting a half-done join back: the cluster forgets the node (its member, its records), the
    node gets its standalone etcd, store client and files back. Each step runs even when one before
    it failed; what failed is said in the job's log."""

    def __init__(self, ctx, local: LocalNode, store: Store, cluster: Store, member_id: str,
                 cfg: config_mod.Config) -> None:
        self.ctx, self.local, self.cluster, self.member_id, self.cfg = ctx, local, cluster, member_id, cfg
        self.imported: list[str] = []
        self.etcd_restarted = False
        self.moved = False
        self.old_environment: str | None = None
        self.old_endpoints: list[str] = list(store.endpoints)
        self.old_tls = store.tls

    def _try(self, what: str, step) -> None:
        try:
            step()
        except Exception as exc:   # every step is tried; the log says what could not be undone
            self.ctx.log(f"undoing the join: {what} failed: {getattr(exc, 'message', exc)}")

    def run(self) -> None:
        self.ctx.log("the join failed: undoing it")
        self._try("removing this node's etcd member from the cluster", lambda: self.cluster.member_remove(self.member_id))
        for start in range(0, len(self.imported), IMPORT_CHUNK):
            chunk = self.imported[start:start + IMPORT_CHUNK]
            self._try("removing the records brought", lambda: self.cluster.txn([], [Delete(k) for k in chunk]))
        self._try("forgetting the node in the cluster", lambda: self.cluster.delete(NODES + self.cfg.node_id))
        if self.etcd_restarted:
            self._try("starting the standalone etcd again", lambda: self.local.restart_etcd(self.old_environment))
        if self.moved:
            self._try("talking to the standalone store again", lambda: self.ctx.move_store(self.old_endpoints, self.old_tls))
        shutil.rmtree(self.cfg.cluster.etcd_data_dir.rstrip("/") + "-cluster", ignore_errors=True)
        for path in (*cluster_files(self.cfg).values(), *Path(self.cfg.cluster.etcd_tls_dir).glob("*")):
            Path(path).unlink(missing_ok=True)
