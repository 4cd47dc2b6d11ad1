"""The development stack: a real single-member etcd, cairn-agent and cairn-web on this host.

`make dev` runs it: console at https://127.0.0.1:8443, state under build/dev/. Tests use the same
pieces (EtcdProcess, start_agent, start_web) to run real processes. It never touches this host's
disks: everything lives in the state directory given.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import requests

from cairn import config as config_mod
from cairn.cluster import etcd_settings
from cairn.runner import Daemon, Runner


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    daemon: Daemon | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


@dataclass
class EtcdCluster:
    """One or more etcd members on loopback addresses, started with `etcd` from Debian's etcd-server."""
    base_dir: Path
    members: list[EtcdMember] = field(default_factory=list)
    runner: Runner = field(default_factory=Runner)

    @classmethod
    def create(cls, base_dir: Path, size: int = 1, hosts: list[str] | None = None,
               client_ports: list[int] | None = None,
               peer_ports: list[int] | None = None) -> "EtcdCluster":
        hosts = hosts or ["127.0.0.1"] * size
        cluster = cls(base_dir)
        for index in range(size):
            host = hosts[index]
            cluster.members.append(EtcdMember(
                name=f"etcd{index}", host=host,
                client_port=client_ports[index] if client_ports else free_port(host),
                peer_port=peer_ports[index] if peer_ports else free_port(host), data_dir=base_dir / f"etcd{index}"))
        return cluster

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start_member(self, member: EtcdMember) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        state = "existing" if (member.data_dir / "member").exists() else "new"
        member.data_dir.mkdir(parents=True, exist_ok=True)
        member.daemon = self.runner.spawn([
            "etcd", "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", f"cairn-{self.base_dir.name}",
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--log-level", "warn", *etcd_settings.flags(),
        ], log_path=self.base_dir / f"{member.name}.log")

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for member in self.members:
            self.start_member(member)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0, members: list[EtcdMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for member in members or self.members:
            while True:
                try:
                    reply = requests.get(member.client_url + "/health", timeout=1)
                    if reply.ok and reply.json().get("health") == "true":
                        break
                except requests.RequestException:
                    pass
                if member.daemon and not member.daemon.alive():
                    raise RuntimeError(f"etcd member {member.name} exited; see {self.base_dir}/{member.name}.log")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd member {member.name} not healthy after {timeout} s")
                time.sleep(0.1)

    def leader(self) -> EtcdMember:
        for member in self.members:
            if member.daemon is None or not member.daemon.alive():
                continue
            try:
                status = requests.post(member.client_url + "/v3/maintenance/status", json={}, timeout=1).json()
            except requests.RequestException:
                continue
            if status.get("leader") == status.get("header", {}).get("member_id"):
                return member
        raise RuntimeError("no etcd leader")

    def stop(self) -> None:
        for member in self.members:
            if member.daemon:
                member.daemon.stop()


def write_config(path: Path, cfg: config_mod.Config) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_mod.dump(cfg))
    return path


NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"


def share_sandbox(base: Path, smb_port: int | None = None) -> config_mod.SharesConfig:
    """Shares settings that keep a dev or test stack's agent off this machine's /etc: accounts,
    smb.conf and Samba's state live under `base`, daemons are not started (smbd only if the
    caller starts it on `smb_port`), NFS is off. The agent sees the accounts through nss_wrapper
    (`sandbox_env`)."""
    etc = base / "root" / "etc"
    (etc / "samba").mkdir(parents=True, exist_ok=True)
    for name, text in {"passwd": "root:x:0:0:root:/root:/bin/sh\n"
                                 "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                       "group": "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n",
                       "shadow": "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
                       "gshadow": "root:*::\nusers:*::\nnogroup:*::\n"}.items():
        if not (etc / name).exists():
            (etc / name).write_text(text)
    state = base / "samba"
    for sub in ("private", "lock", "state", "cache", "ncalrpc"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    settings = {"private dir": state / "private", "lock directory": state / "lock",
                "state directory": state / "state", "cache directory": state / "cache",
                "pid directory": state, "ncalrpc dir": state / "ncalrpc", "log file": base / "smbd.log",
                "disable netbios": "yes", "interfaces": "lo", "bind interfaces only": "yes",
                "smb ports": smb_port or free_port()}
    include = base / "samba-site.conf"
    include.write_text("".join(f"\t{key} = {value}\n" for key, value in settings.items()))
    return config_mod.SharesConfig(etc_root=str(base / "root"), service_manager="none", nfs=False,
                                   samba_include=str(include))


def sandbox_env(shares: config_mod.SharesConfig) -> dict[str, str] | None:
    """nss_wrapper's environment for a sandboxed agent (None on the real root)."""
    if shares.etc_root in ("", "/") or not Path(NSS_WRAPPER).exists():
        return None
    return {"LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_PASSWD": f"{shares.etc_root}/etc/passwd",
            "NSS_WRAPPER_GROUP": f"{shares.etc_root}/etc/group"}


def start_agent(config_path: Path, log_path: Path, runner: Runner | None = None) -> Daemon:
    shares = config_mod.load(str(config_path)).shares
    return (runner or Runner()).spawn([sys.executable, "-m", "cairn.agent.main", "--config", str(config_path)],
                                      log_path=log_path, env=sandbox_env(shares))


def start_web(config_path: Path, log_path: Path, runner: Runner | None = None) -> Daemon:
    return (runner or Runner()).spawn([sys.executable, "-m", "cairn.web.server", "--config", str(config_path)],
                                      log_path=log_path)


def wait_http(url: str, timeout: float = 60.0, verify: str | bool = False, daemon: Daemon | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # an unverified probe of our own fresh server
                requests.get(url, timeout=2, verify=verify)
            return
        except requests.RequestException:
            if daemon is not None and not daemon.alive():
                raise RuntimeError(f"{daemon.argv[2]} exited; see {daemon.log_path}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cairn-devstack", description=__doc__.splitlines()[0])
    parser.add_argument("--state", default="build/dev", help="state directory (default build/dev)")
    parser.add_argument("--port", type=int, default=8443, help="console port on 127.0.0.1")
    args = parser.parse_args(argv)
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", args.port))
    except OSError:
        print(f"port {args.port} on 127.0.0.1 is in use; pick another with PORT=<n>", file=sys.stderr)
        return 2
    etcd = EtcdCluster.create(state, 1, client_ports=[_stable_port(state / "etcd-port")],
                              peer_ports=[_stable_port(state / "etcd-peer-port")])
    node = socket.gethostname()
    cfg = config_mod.Config(node_name=node, etcd_endpoints=tuple(etcd.endpoints), state_dir=state,
                            web=config_mod.WebConfig(bind=f"127.0.0.1:{args.port}", workers=2),
                            shares=share_sandbox(state / "shares"))
    config_path = write_config(state / "cairn.toml", cfg)
    daemons: list[Daemon] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        etcd.start()
        daemons.append(start_agent(config_path, state / "agent.log"))
        web = start_web(config_path, state / "web.log")
        daemons.append(web)
        url = f"https://127.0.0.1:{args.port}"
        wait_http(url + "/api/v1/health", daemon=web)
        password = (state / "admin-password").read_text().strip()
        print(f"\nCairn dev stack is up (node {node}).\n"
              f"  Console:  {url}   (certificate: {state}/tls/ca.pem)\n"
              f"  Login:    admin / {password}\n"
              f"  Logs:     {state}/*.log\n"
              f"  cairnctl: .venv/bin/cairnctl --url {url} --ca {state}/tls/ca.pem login\n"
              "Press Ctrl-C to stop.", flush=True)
        while not stop.is_set():
            for daemon in daemons:
                if not daemon.alive():
                    print(f"{daemon.argv[2]} exited with {daemon.returncode()}; see {daemon.log_path}",
                          file=sys.stderr)
                    return 1
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        etcd.stop()
        print("dev stack stopped")
    return 0


def _stable_port(path: Path) -> int:
    """The same etcd client port across restarts of the dev stack (etcd remembers its URLs)."""
    if path.exists():
        return int(path.read_text())
    port = free_port()
    path.write_text(str(port))
    return port


if __name__ == "__main__":
    raise SystemExit(main())
