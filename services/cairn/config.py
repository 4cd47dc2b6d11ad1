"""Node configuration: a small TOML file, /etc/cairn/cairn.toml (or $CAIRN_CONFIG).

    node_name = "cairn-1a2b"                    # default: the hostname (a display name; may change)
    node_id = "0f3c…"                           # default: /etc/machine-id (the node's stable identity)
    etcd_endpoints = ["http://127.0.0.1:2379"]
    state_dir = "/var/lib/cairn"                # TLS material, admin password file, web.pid (the
                                                # console server's pid: cluster jobs make it reload)
    store_root = "/cairn"                       # key prefix in etcd (tests use their own)
    [web]
    bind = "0.0.0.0:443"
    workers = 2
    connections = 1000                          # per worker: requests, event streams and consoles
    [storage]
    pools_root = "/pools"                       # pools are mounted at <pools_root>/<pool>
    smart_interval = 600                        # seconds between SMART reads of every disk
    include_loop = false                        # treat loop devices as disks (tests only)
    [shares]
    etc_root = "/"                              # holds etc/passwd, etc/samba, etc/exports.d (tests: a temp dir)
    service_manager = "systemd"                 # "none": smbd/nfsd are started by someone else (tests)
    nfs = true                                  # serve NFS (hosts without nfsd: false)
    samba_include = ""                          # a file of extra [global] settings (tests: ports, dirs)
    workgroup = "WORKGROUP"
    [compute]
    libvirt_uri = "qemu:///system"
    accel = "auto"                              # kvm, tcg, or auto: kvm where libvirt offers it
    log_dir = "/var/log/cairn/vms"              # VMs' serial console logs
    image_dirs = []                             # directories whose files VMs may use as disk images
                                                # and ISOs, besides the pools' images volumes
    [history]                                   # how much history the cluster store keeps
    job_keep_days = 30                          # ended jobs (and their logs) older than this go
    job_keep_count = 2000                       # ... and the oldest ended ones beyond this many
    event_keep_days = 30                        # events older than this go
    event_keep_count = 5000                     # ... and the oldest beyond this many
    interval = 600                              # seconds between pruning rounds
    [cluster]                                   # mutual TLS towards etcd (a cluster node's own
    ca = "/var/lib/cairn/cluster/ca.pem"        # certificate from the cluster CA); all three or
    cert = "/var/lib/cairn/cluster/node.pem"    # none: a standalone node's etcd listens on
    key = "/var/lib/cairn/cluster/node.key"     # 127.0.0.1 only, in plain HTTP
    address = "10.77.1.11"                      # this node's cluster address ("" standalone)
    interface = "enp0s9"                        # the NIC it is on
    manage_network = true                       # write the address as a systemd-networkd unit
                                                # (false: it must already be on the node: tests)
    etcd_env = "/etc/cairn/etcd.env"            # etcd's environment file, rewritten by create/join
    etcd_tls_dir = "/etc/cairn/etcd-tls"        # etcd's copy of the CA, node certificate and key
    etcd_user = "etcd"                          # ... readable by this user's group (etcd runs as it)
    etcd_data_dir = "/var/lib/etcd"             # the standalone member's data; a join starts a
                                                # new member in <etcd_data_dir>-cluster
    etcd_control = "systemd"                    # how etcd is restarted: systemd, or "pidfile": a
    etcd_pidfile = ""                           # launcher whose pid is there restarts it on SIGHUP
    standalone_endpoint = "http://127.0.0.1:2379"   # where its own etcd answers once it leaves

Written by the image (or the dev stack, with `dump`: tomli-w quotes and escapes every value);
read by cairn-agent and cairn-web at start. `parse` checks every setting's type and range (a
bool is not a number, a path is absolute, a list holds strings) and reports every problem at
once, in one ValidationError keyed "section.key".

`image_dirs` should be the same on every node: the API checks a VM's images against the setting
of the node it runs on (and resolves symlinks when the VM is on that node).
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from cairn.cluster.store import ClientTls, Store
from cairn.errors import ValidationError

DEFAULT_PATH = "/etc/cairn/cairn.toml"


@dataclass(frozen=True)
class WebConfig:
    bind: str = "0.0.0.0:443"
    workers: int = 2
    connections: int = 1000          # per worker (gevent): requests, event streams, consoles together


@dataclass(frozen=True)
class StorageConfig:
    pools_root: str = "/pools"
    smart_interval: float = 600.0
    include_loop: bool = False


@dataclass(frozen=True)
class SharesConfig:
    etc_root: str = "/"
    service_manager: str = "systemd"
    nfs: bool = True
    samba_include: str = ""
    workgroup: str = "WORKGROUP"


@dataclass(frozen=True)
class ComputeConfig:
    libvirt_uri: str = "qemu:///system"
    accel: str = "auto"
    log_dir: str = "/var/log/cairn/vms"
    image_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistoryConfig:
    """How much history the cluster store keeps (cairn.cluster.history prunes to it)."""
    job_keep_days: float = 30.0      # ended jobs (with their logs) older than this are deleted
    job_keep_count: int = 2000       # ... and the oldest ended ones beyond this many
    event_keep_days: float = 30.0    # events older than this are deleted
    event_keep_count: int = 5000     # ... and the oldest beyond this many
    interval: float = 600.0          # seconds between rounds (pruning, etcd defragmentation, quota check)


@dataclass(frozen=True)
class ClusterConfig:
    """Files for mutual TLS towards etcd ("" for a standalone node talking to its own etcd), this
    node's cluster address, and how its etcd is restarted when the node creates or joins a cluster."""
    ca: str = ""
    cert: str = ""
    key: str = ""
    address: str = ""
    interface: str = ""
    manage_network: bool = True
    etcd_env: str = "/etc/cairn/etcd.env"
    etcd_tls_dir: str = "/etc/cairn/etcd-tls"
    etcd_user: str = "etcd"
    etcd_data_dir: str = "/var/lib/etcd"
    etcd_control: str = "systemd"
    etcd_pidfile: str = ""
    standalone_endpoint: str = "http://127.0.0.1:2379"

    @property
    def tls(self) -> bool:
        return bool(self.ca)


@dataclass(frozen=True)
class Config:
    node_name: str
    node_id: str = "0" * 32         # "unknown": /etc/machine-id missing (set it then)
    etcd_endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    state_dir: Path = Path("/var/lib/cairn")
    store_root: str = "/cairn"
    web: WebConfig = field(default_factory=WebConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    shares: SharesConfig = field(default_factory=SharesConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    path: str = field(default="", compare=False)     # the file this was read from (not a setting)


# --- checking --------------------------------------------------------------------------------------
# Directories a VM image may never come from, whatever image_dirs says.
SYSTEM_DIRS = ("/dev", "/proc", "/sys", "/etc", "/boot", "/run", "/root", "/var/lib/cairn")
WORKGROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")
NODE_NAME_MAX = 64
NODE_ID = re.compile(r"[0-9a-f]{32}")


def _plain_text(value: str) -> bool:
    return all(char.isprintable() for char in value)


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not _plain_text(value):
        return "must not contain control characters (line breaks, tabs, ...)"
    return None


def _path(value: Any) -> str | None:
    problem = _text(value)
    if problem:
        return problem
    if not value.startswith("/"):
        return "must be an absolute path"
    return None


def _optional_path(value: Any) -> str | None:
    return None if value == "" else _path(value)


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _whole(low: int, high: int):
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number from {low} to {high}"
        return None
    return check


def _seconds(low: float):
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            return f"must be a number of seconds, at least {low:g}"
        return None
    return check


def _days(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 36500:
        return "must be a number of days from 1 to 36500"
    return None


def _one_of(*choices: str):
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


def _bind(value: Any) -> str | None:
    problem = _text(value)
    if problem:
        return problem
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or " " in value:
        return "must be address:port, like 0.0.0.0:443"
    return None


def _workgroup(value: Any) -> str | None:
    if not isinstance(value, str) or not WORKGROUP.fullmatch(value):
        return "must be 1-15 letters, digits, '.', '_' and '-', starting with a letter or digit"
    return None


def _non_empty_text(value: Any) -> str | None:
    return _text(value) or (None if value else "must not be empty")


def image_dir_problem(value: Any) -> str | None:
    """Why `value` cannot be a directory VM images are taken from, or None."""
    problem = _path(value)
    if problem:
        return problem
    normal = posixpath.normpath(value)
    if normal == "/" or normal != value.rstrip("/") or "//" in value:
        return "must be a normalised absolute directory other than / (no '..', '.' or '//')"
    for system in SYSTEM_DIRS:
        if normal == system or normal.startswith(system + "/"):
            return f"must not be in {system} (system files are never VM images)"
    return None


def _image_dirs(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list of absolute directories, like [\"/srv/isos\"]"
    for index, item in enumerate(value):
        problem = image_dir_problem(item)
        if problem:
            return f"[{index}] {problem}"
    return None


def _endpoints(value: Any) -> str | None:
    if not isinstance(value, list) or not value or not all(
            isinstance(e, str) and _plain_text(e) and " " not in e and e.startswith(("http://", "https://"))
            for e in value):
        return "must be a non-empty list of http(s):// URLs"
    return None


def node_name_problem(value: Any) -> str | None:
    if (not isinstance(value, str) or not value or len(value) > NODE_NAME_MAX or "/" in value
            or not all(char.isprintable() and not char.isspace() for char in value)):
        return (f"must be 1-{NODE_NAME_MAX} printable characters without spaces, line breaks or '/' "
                "(the hostname by default)")
    return None


def node_id_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not NODE_ID.fullmatch(value):
        return "must be 32 lowercase hex digits, like /etc/machine-id"
    return None


def _address(value: Any) -> str | None:
    if value == "":
        return None
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return "must be an IP address (or empty: not in a cluster)"
    return None


def _store_root(value: Any) -> str | None:
    problem = _path(value)
    if problem:
        return problem
    if value.endswith("/") or " " in value:
        return "must start with '/' and not end with '/'"
    return None


# Every setting: its check. A table's settings are those of its dataclass (nothing else is taken).
TOP = {"node_name": node_name_problem, "node_id": node_id_problem, "etcd_endpoints": _endpoints,
       "state_dir": _path, "store_root": _store_root}
TABLES: dict[str, tuple[type, dict[str, Any]]] = {
    "web": (WebConfig, {"bind": _bind, "workers": _whole(1, 64), "connections": _whole(10, 100_000)}),
    "storage": (StorageConfig, {"pools_root": _path, "smart_interval": _seconds(10),
                                "include_loop": _bool}),
    "shares": (SharesConfig, {"etc_root": _path, "service_manager": _one_of("systemd", "none"),
                              "nfs": _bool, "samba_include": _optional_path, "workgroup": _workgroup}),
    "compute": (ComputeConfig, {"libvirt_uri": _non_empty_text, "accel": _one_of("auto", "kvm", "tcg"),
                                "log_dir": _path, "image_dirs": _image_dirs}),
    "history": (HistoryConfig, {"job_keep_days": _days, "job_keep_count": _whole(10, 1_000_000),
                                "event_keep_days": _days, "event_keep_count": _whole(10, 1_000_000),
                                "interval": _seconds(10)}),
    "cluster": (ClusterConfig, {"ca": _optional_path, "cert": _optional_path, "key": _optional_path,
                                "address": _address, "interface": _text, "manage_network": _bool,
                                "etcd_env": _path, "etcd_control": _one_of("systemd", "pidfile"),
                                "etcd_tls_dir": _path, "etcd_user": _text, "etcd_data_dir": _path,
                                "etcd_pidfile": _optional_path, "standalone_endpoint": _non_empty_text}),
}


def _table(name: str, data: Any, problems: dict[str, str]) -> Any:
    cls, checks = TABLES[name]
    if data is None:
        return cls()
    if not isinstance(data, dict):
        problems[name] = "must be a table"
        return cls()
    values: dict[str, Any] = {}
    for key, value in data.items():
        check = checks.get(key)
        if check is None:
            problems[f"{name}.{key}"] = "unknown setting"
            continue
        problem = check(value)
        if problem:
            problems[f"{name}.{key}"] = problem
            continue
        default = getattr(cls, key)
        if isinstance(default, float):
            value = float(value)
        elif isinstance(default, tuple):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def _cross_check(values: dict[str, Any], cluster: ClusterConfig, problems: dict[str, str]) -> None:
    """Settings that only make sense together: all three TLS files or none; https needs them."""
    given = [name for name in ("ca", "cert", "key") if getattr(cluster, name)]
    if given and len(given) < 3:
        for name in ("ca", "cert", "key"):
            if name not in given:
                problems[f"cluster.{name}"] = "needed with the other TLS files (all three or none)"
    endpoints = values["etcd_endpoints"] if isinstance(values["etcd_endpoints"], list) else []
    schemes = {str(e).split("://")[0] for e in endpoints}
    if "https" in schemes and not given and "etcd_endpoints" not in problems:
        problems["cluster.ca"] = "https etcd endpoints need [cluster] ca, cert and key (the node's certificate)"
    if given and "http" in schemes and "etcd_endpoints" not in problems:
        problems["etcd_endpoints"] = "with [cluster] TLS files every endpoint must be https://"


def parse(data: dict, default_node_name: str, default_node_id: str = "0" * 32, path: str = "") -> Config:
    """Config from parsed TOML. Every problem is reported at once, keyed "section.key"."""
    problems: dict[str, str] = {}
    for key in data:
        if key not in TOP and key not in TABLES:
            problems[key] = "unknown setting"
    values = {"node_name": default_node_name, "node_id": default_node_id,
              "etcd_endpoints": ["http://127.0.0.1:2379"], "state_dir": "/var/lib/cairn", "store_root": "/cairn"}
    for key, check in TOP.items():
        if key in data:
            values[key] = data[key]
        problem = check(values[key])
        if problem:
            problems[key] = problem
    tables = {name: _table(name, data.get(name), problems) for name in TABLES}
    _cross_check(values, tables["cluster"], problems)
    if problems:
        raise ValidationError(problems, "bad configuration: " + "; ".join(
            f"{k}: {v}" for k, v in sorted(problems.items())))
    return Config(node_name=values["node_name"], node_id=values["node_id"],
                  etcd_endpoints=tuple(values["etcd_endpoints"]), state_dir=Path(values["state_dir"]),
                  store_root=values["store_root"], path=path, **tables)


def load(path: str | None = None) -> Config:
    path = path or os.environ.get("CAIRN_CONFIG") or DEFAULT_PATH
    data: dict = {}
    if Path(path).exists():
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValidationError({"file": f"{path} is not valid TOML: {exc}"},
                                      f"bad configuration: {path} is not valid TOML: {exc}") from None
    return parse(data, socket.gethostname(), machine_id(), str(path))


def machine_id(path: str = "/etc/machine-id") -> str:
    """This machine's id (systemd's machine-id), the node's identity by default; 32 zeros when the
    file is missing or not one (then node_id must be set)."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return "0" * 32
    return text if NODE_ID.fullmatch(text) else "0" * 32


def store_tls(cfg: Config) -> ClientTls | None:
    """Mutual TLS towards the store when the node is in a cluster, else None."""
    return ClientTls(cfg.cluster.ca, cfg.cluster.cert, cfg.cluster.key) if cfg.cluster.tls else None


def open_store(cfg: Config) -> Store:
    """The cluster store as this node's configuration says (mutual TLS when it is in a cluster)."""
    return Store(cfg.etcd_endpoints, cfg.store_root, tls=store_tls(cfg))


def as_dict(config: Config) -> dict[str, Any]:
    """A Config as the plain data its TOML file holds (tuples as lists, paths as strings)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        if isinstance(value, Path):
            return str(value)
        return value
    data: dict[str, Any] = {key: plain(getattr(config, key)) for key in TOP}
    for name in TABLES:
        table = getattr(config, name)
        data[name] = {f.name: plain(getattr(table, f.name)) for f in fields(table)}
    return data


def dump(config: Config) -> str:
    """TOML text for a Config (the dev stack and tests write these), quoted and escaped by tomli-w."""
    return tomli_w.dumps(as_dict(config))
