"""Creating a cluster: the job that turns a standalone appliance into a cluster's first node.

A standalone node's etcd is one member on 127.0.0.1 in plain HTTP. `cluster.create` (a job on the
node whose console was asked) does, with progress:
  1. checks the cluster interface and address (cairn.cluster.network: the NIC exists and is not the
     LAN's, the address is a host address of its subnet and on no other interface) and writes it
     as a systemd-networkd unit, waiting until the NIC has it. Stacks that do not manage the
     network (tests: manage_network = false) only check that the address is this node's;
  2. makes the cluster CA and this node's key and certificate from it (cairn.cluster.pki): the
     certificate names the cluster address, this node's other addresses, its host name, and
     127.0.0.1/localhost (the node's own services reach its etcd there);
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

Keys written here (writer: the node creating the cluster): cluster/info, cluster/ca-key,
cluster/nodes/<node id>.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import secrets
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cairn import config as config_mod
from cairn.cluster import etcd_settings, events, network, pki
from cairn.cluster.store import ClientTls, Store
from cairn.errors import CairnError, Conflict, Unavailable, ValidationError
from cairn.jobs.registry import job_kind
from cairn.runner import Runner
from cairn.system.diagnostics import parse_ip_addr
from cairn.system.files import read_text, write_if_changed, write_private

INFO = "cluster/info"
CA_KEY = "cluster/ca-key"
NODES = "cluster/nodes/"
CLUSTER_NAME_MAX = 40
INTERFACE = re.compile(r"[A-Za-z0-9_.:-]{0,15}")     # "" where the network is not managed (tests)
STORE_BACK_SECONDS = 60.0       # how long etcd may take to answer after its restart
ADDRESS_SECONDS = 20.0          # how long the NIC may take to get the address networkd was told


# --- checks (pure) -----------------------------------------------------------------------------
def check_create(params: dict[str, Any]) -> dict[str, Any]:
    problems = {name: "unknown parameter" for name in set(params) - {"name", "interface", "address"}}
    name = params.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= CLUSTER_NAME_MAX \
            or not all(c.isprintable() for c in name) or name != name.strip():
        problems["name"] = f"the cluster's name: 1-{CLUSTER_NAME_MAX} printable characters"
    interface = params.get("interface", "")
    if not isinstance(interface, str) or not INTERFACE.fullmatch(interface):
        problems["interface"] = "a network interface name, like enp0s9"
    address = params.get("address")
    try:
        ipaddress.ip_interface(address) if isinstance(address, str) else None
    except ValueError:
        address = None
    if not isinstance(address, str):
        problems["address"] = "this node's cluster address with its prefix length, like 10.77.1.11/24"
    if problems:
        raise ValidationError(problems)
    return {"name": name, "interface": interface, "address": address}


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

    def write_node_tls(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> dict[str, Path]:
        files = cluster_files(self.cfg)
        files["ca"].parent.mkdir(parents=True, exist_ok=True)
        write_private(files["key"], key_pem)
        files["cert"].write_bytes(cert_pem)
        files["ca"].write_bytes(ca_pem)
        return files

    def use_for_console(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        """The console presents the node certificate; clients (cairnctl) trust the cluster CA."""
        tls = self.cfg.state_dir / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        write_private(tls / "server.key", key_pem)
        (tls / "server.pem").write_bytes(cert_pem)
        (tls / "ca.pem").write_bytes(ca_pem)
        (tls / "ca.key").unlink(missing_ok=True)       # the standalone CA signs nothing any more

    def etcd_environment(self) -> str | None:
        return read_text(self.cfg.cluster.etcd_env)

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


def wait_for_store(store: Store, seconds: float = STORE_BACK_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            store.revision()
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def cluster_info(store: Store) -> dict[str, Any] | None:
    return store.get(INFO)


def cluster_summary(store: Store) -> dict[str, Any] | None:
    """What the API shows of the cluster this node is in (never the CA key), or None."""
    info = cluster_info(store)
    if info is None:
        return None
    nodes = {e.key.removeprefix(NODES): e.value for e in store.list(NODES)}
    return {"id": info["id"], "name": info["name"], "created_at": info["created_at"],
            "ca_fingerprint": pki.fingerprint(info["ca_cert"].encode()),
            "nodes": [{"id": node_id, **value} for node_id, value in sorted(nodes.items())]}


# --- the job -------------------------------------------------------------------------------------
@job_kind("cluster.create", title="Create cluster {name}", check_params=check_create,
          locks=lambda node, params: ["cluster"])
def create_cluster(ctx, params: dict[str, Any]) -> dict[str, Any]:
    cfg: config_mod.Config = ctx.config
    store: Store = ctx.store
    local = LocalNode(ctx.runner, cfg)
    ctx.progress(5, "checking the cluster address")
    if cfg.cluster.tls:
        raise Conflict("this node is already in a cluster")
    if cfg.node_id == "0" * 32:
        raise CairnError("this node has no machine-id (/etc/machine-id), its identity in the cluster; "
                         "set node_id in its cairn.toml")
    existing = cluster_info(store)
    if existing is not None:
        raise Conflict(f"this node is already in cluster {existing['name']}")
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
    names = node_names(ip, socket.gethostname(), cfg.node_name,
                       [a for i in local.interfaces() for a in i["addresses"]])
    cert = pki.sign_node(ca, pki.make_csr(key, cfg.node_id, names), now)
    files = local.write_node_tls(ca.cert_pem, cert, key)
    tls = ClientTls(str(files["ca"]), str(files["cert"]), str(files["key"]))

    ctx.progress(45, "moving the cluster store to the cluster address, over mutual TLS")
    member = members[0]
    old_environment = local.etcd_environment()
    old_endpoints, old_tls = list(store.endpoints), store.tls
    environment = etcd_settings.member_environment(cfg.node_id, ip, str(files["ca"]), str(files["cert"]),
                                                   str(files["key"]))
    data_dir = etcd_data_dir(old_environment)
    if data_dir:
        environment += f"ETCD_DATA_DIR={data_dir}\n"
    store.member_update(member.member_id, [peer_url(ip)])
    try:
        local.restart_etcd(environment)
        store.reconfigure([client_url(ip)], tls)
        wait_for_store(store)
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
    local.write_config(clustered_config(cfg, ip, params["interface"], [client_url(ip)]))
    local.use_for_console(ca.cert_pem, cert, key)
    local.reload_web()
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
    store.reconfigure(endpoints, tls)
    try:
        wait_for_store(store)
        store.member_update(member.member_id, member.peer_urls)
    except CairnError as exc:
        ctx.log(f"etcd's old peer address could not be put back: {exc.message}")


def etcd_data_dir(environment: str | None) -> str:
    """ETCD_DATA_DIR from an environment file's text, or "" (pure)."""
    for line in (environment or "").splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "ETCD_DATA_DIR":
            return value.strip()
    return ""
