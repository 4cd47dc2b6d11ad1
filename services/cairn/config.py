"""Node configuration: a small TOML file, /etc/cairn/cairn.toml (or $CAIRN_CONFIG).

    node_name = "cairn-1a2b"                    # default: the hostname
    etcd_endpoints = ["http://127.0.0.1:2379"]
    state_dir = "/var/lib/cairn"                # TLS material, admin password file
    store_root = "/cairn"                       # key prefix in etcd (tests use their own)
    [web]
    bind = "0.0.0.0:443"
    workers = 2
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

Written by the image (or the dev stack); read by cairn-agent and cairn-web at start.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from cairn.errors import ValidationError

DEFAULT_PATH = "/etc/cairn/cairn.toml"


@dataclass(frozen=True)
class WebConfig:
    bind: str = "0.0.0.0:443"
    workers: int = 2
    threads: int = 16


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


@dataclass(frozen=True)
class Config:
    node_name: str
    etcd_endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    state_dir: Path = Path("/var/lib/cairn")
    store_root: str = "/cairn"
    web: WebConfig = field(default_factory=WebConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    shares: SharesConfig = field(default_factory=SharesConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)


def parse(data: dict, default_node_name: str) -> Config:
    """Config from parsed TOML. All problems are reported at once, by key."""
    problems: dict[str, str] = {}
    known = {"node_name", "etcd_endpoints", "state_dir", "store_root", "web", "storage", "shares", "compute"}
    for key in data:
        if key not in known:
            problems[key] = "unknown setting"
    endpoints = data.get("etcd_endpoints", ["http://127.0.0.1:2379"])
    if not isinstance(endpoints, list) or not endpoints or not all(
            isinstance(e, str) and e.startswith(("http://", "https://")) for e in endpoints):
        problems["etcd_endpoints"] = "must be a non-empty list of http(s):// URLs"
    node_name = data.get("node_name", default_node_name)
    if not isinstance(node_name, str) or not node_name or "/" in node_name:
        problems["node_name"] = "must be a non-empty name without '/'"
    root = data.get("store_root", "/cairn")
    if not isinstance(root, str) or not root.startswith("/") or root.endswith("/"):
        problems["store_root"] = "must start with '/' and not end with '/'"
    web_data = data.get("web", {})
    web = WebConfig()
    if not isinstance(web_data, dict):
        problems["web"] = "must be a table"
    else:
        try:
            web = WebConfig(**web_data)
        except TypeError as exc:
            problems["web"] = str(exc)
    storage_data = data.get("storage", {})
    storage = StorageConfig()
    if not isinstance(storage_data, dict):
        problems["storage"] = "must be a table"
    else:
        try:
            storage = StorageConfig(**storage_data)
        except TypeError as exc:
            problems["storage"] = str(exc)
        else:
            if not str(storage.pools_root).startswith("/"):
                problems["storage.pools_root"] = "must be an absolute path"
            if not isinstance(storage.smart_interval, (int, float)) or storage.smart_interval < 10:
                problems["storage.smart_interval"] = "must be at least 10 seconds"
    shares_data = data.get("shares", {})
    shares = SharesConfig()
    if not isinstance(shares_data, dict):
        problems["shares"] = "must be a table"
    else:
        try:
            shares = SharesConfig(**shares_data)
        except TypeError as exc:
            problems["shares"] = str(exc)
        else:
            if not str(shares.etc_root).startswith("/"):
                problems["shares.etc_root"] = "must be an absolute path"
            if shares.service_manager not in ("systemd", "none"):
                problems["shares.service_manager"] = "must be systemd or none"
    compute_data = data.get("compute", {})
    compute = ComputeConfig()
    if not isinstance(compute_data, dict):
        problems["compute"] = "must be a table"
    else:
        try:
            compute = ComputeConfig(**compute_data)
        except TypeError as exc:
            problems["compute"] = str(exc)
        else:
            if compute.accel not in ("auto", "kvm", "tcg"):
                problems["compute.accel"] = "must be auto, kvm or tcg"
    if problems:
        raise ValidationError(problems, "bad configuration: " + "; ".join(
            f"{k}: {v}" for k, v in sorted(problems.items())))
    return Config(node_name=node_name, etcd_endpoints=tuple(endpoints),
                  state_dir=Path(data.get("state_dir", "/var/lib/cairn")), store_root=root, web=web,
                  storage=storage, shares=shares, compute=compute)


def load(path: str | None = None) -> Config:
    path = path or os.environ.get("CAIRN_CONFIG") or DEFAULT_PATH
    data: dict = {}
    if Path(path).exists():
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    return parse(data, socket.gethostname())


def dump(config: Config) -> str:
    """TOML text for a Config (the dev stack and tests write these)."""
    endpoints = ", ".join(f'"{e}"' for e in config.etcd_endpoints)
    return (
        f'node_name = "{config.node_name}"\n'
        f"etcd_endpoints = [{endpoints}]\n"
        f'state_dir = "{config.state_dir}"\n'
        f'store_root = "{config.store_root}"\n'
        "[web]\n"
        f'bind = "{config.web.bind}"\n'
        f"workers = {config.web.workers}\n"
        f"threads = {config.web.threads}\n"
        "[storage]\n"
        f'pools_root = "{config.storage.pools_root}"\n'
        f"smart_interval = {config.storage.smart_interval}\n"
        f"include_loop = {'true' if config.storage.include_loop else 'false'}\n"
        "[shares]\n"
        f'etc_root = "{config.shares.etc_root}"\n'
        f'service_manager = "{config.shares.service_manager}"\n'
        f"nfs = {'true' if config.shares.nfs else 'false'}\n"
        f'samba_include = "{config.shares.samba_include}"\n'
        f'workgroup = "{config.shares.workgroup}"\n'
        "[compute]\n"
        f'libvirt_uri = "{config.compute.libvirt_uri}"\n'
        f'accel = "{config.compute.accel}"\n'
        f'log_dir = "{config.compute.log_dir}"\n'
    )
