"""The development stack: a real single-member etcd, cairn-agent and cairn-web on this host.

`make dev` runs it: console at https://127.0.0.1:8443, state under build/dev/. Tests use the same
pieces (EtcdProcess, start_agent, start_web) to run real processes. It never touches this host's
disks: everything lives in the state directory given.
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
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
from cairn.cluster import etcd_settings, pki
from cairn.cluster.store import ClientTls
from cairn.runner import Daemon, Runner
from cairn.system.files import parse_assignments, write_private


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class MemberTls:
    """A member's files for mutual TLS: the cluster CA and its node certificate (client + server)."""
    ca: Path
    cert: Path
    key: Path

    def etcd_flags(self) -> list[str]:
        return etcd_settings.flags(etcd_settings.tls_settings(str(self.ca), str(self.cert), str(self.key)))

    def client(self) -> ClientTls:
        return ClientTls(str(self.ca), str(self.cert), str(self.key))

    def requests_options(self) -> dict:
        """verify/cert for a requests call to a member as a client holding this certificate."""
        return {"verify": str(self.ca), "cert": (str(self.cert), str(self.key))}


@dataclass
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    daemon: Daemon | None = None
    tls: MemberTls | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.peer_port}"

    def get(self, path: str, timeout: float = 1.0) -> requests.Response:
        """A request to the member as a client holding its certificate (when it has one)."""
        return requests.get(self.client_url + path, timeout=timeout,
                            **(self.tls.requests_options() if self.tls else {}))


def make_member_tls(directory: Path, ca: "pki.KeyPair", node_id: str, names: list[str]) -> MemberTls:
    """A node key and a certificate from the cluster CA, written under directory (keys 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = pki.new_key()
    cert = pki.sign_node(ca, pki.make_csr(key, node_id, names), datetime.datetime.now(datetime.timezone.utc))
    files = MemberTls(directory / "ca.pem", directory / "node.pem", directory / "node.key")
    files.ca.write_bytes(ca.cert_pem)
    files.cert.write_bytes(cert)
    write_private(files.key, key)
    return files


@dataclass
class EtcdCluster:
    """One or more etcd members on loopback addresses, started with `etcd` from Debian's etcd-server."""
    base_dir: Path
    members: list[EtcdMember] = field(default_factory=list)
    runner: Runner = field(default_factory=Runner)

    ca: "pki.KeyPair | None" = None     # with a CA every member speaks mutual TLS only

    @classmethod
    def create(cls, base_dir: Path, size: int = 1, hosts: list[str] | None = None,
               client_ports: list[int] | None = None,
               peer_ports: list[int] | None = None, tls: bool = False) -> "EtcdCluster":
        hosts = hosts or ["127.0.0.1"] * size
        cluster = cls(base_dir)
        if tls:
            cluster.ca = pki.make_ca(base_dir.name, datetime.datetime.now(datetime.timezone.utc))
        for index in range(size):
            cluster.members.append(cluster.new_member(
                hosts[index], client_ports[index] if client_ports else None,
                peer_ports[index] if peer_ports else None))
        return cluster

    def new_member(self, host: str, client_port: int | None = None, peer_port: int | None = None) -> EtcdMember:
        """A member (not started, not in `members`): with the cluster's CA, its own certificate."""
        index = len(self.members)
        while any(m.name == f"etcd{index}" for m in self.members) or (self.base_dir / f"etcd{index}").exists():
            index += 1
        name = f"etcd{index}"
        tls = None
        if self.ca:
            node_id = secrets.token_hex(16)
            tls = make_member_tls(self.base_dir / f"{name}-tls", self.ca, node_id, [host, "localhost"])
        return EtcdMember(name=name, host=host, client_port=client_port or free_port(host),
                          peer_port=peer_port or free_port(host), data_dir=self.base_dir / name, tls=tls)

    def client_tls(self) -> ClientTls | None:
        """Client files for a Store (the first member's certificate: any node's will do)."""
        return self.members[0].tls.client() if self.ca else None

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start_member(self, member: EtcdMember, initial: str | None = None, state: str | None = None) -> None:
        """Start a member; `initial`/`state` for a member that joins a running cluster (from
        member_add's answer, state "existing")."""
        initial = initial or ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        state = state or ("existing" if (member.data_dir / "member").exists() else "new")
        member.data_dir.mkdir(parents=True, exist_ok=True)
        member.daemon = self.runner.spawn([
            "etcd", "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", f"cairn-{self.base_dir.name}",
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--log-level", "warn", *etcd_settings.flags(), *(member.tls.etcd_flags() if member.tls else []),
        ], log_path=self.base_dir / f"{member.name}.log")

    def join(self, member: EtcdMember, store, timeout: float = 30.0) -> str:
        """Grow the running cluster by `member` the way a joining node does: added as a learner
        (quorum unchanged), started with the membership etcd answered, then caught up. Returns
        its member id (promote it with store.member_promote)."""
        added, everyone = store.member_add([member.peer_url], learner=True)
        named = {m.member_id: m.name for m in everyone}
        named[added.member_id] = member.name
        initial = ",".join(f"{named[m.member_id]}={url}" for m in everyone for url in m.peer_urls)
        self.members.append(member)
        self.start_member(member, initial=initial, state="existing")
        self.wait_up(member, timeout)
        return added.member_id

    def wait_up(self, member: EtcdMember, timeout: float = 30.0) -> None:
        """The member's server answers (a learner answers /version, not /health)."""
        self._wait(member, lambda reply: reply.ok, "/version", "up", time.monotonic() + timeout, timeout)

    def _wait(self, member: EtcdMember, good, path: str, what: str, deadline: float, timeout: float) -> None:
        while True:
            try:
                if good(member.get(path)):
                    return
            except requests.RequestException:
                pass
            if member.daemon and not member.daemon.alive():
                raise RuntimeError(f"etcd member {member.name} exited; see {self.base_dir}/{member.name}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd member {member.name} not {what} after {timeout} s")
            time.sleep(0.1)

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for member in self.members:
            self.start_member(member)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0, members: list[EtcdMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for member in members or self.members:
            self._wait(member, lambda reply: reply.ok and reply.json().get("health") == "true", "/health",
                       "healthy", deadline, timeout)

    def leader(self) -> EtcdMember:
        for member in self.members:
            if member.daemon is None or not member.daemon.alive():
                continue
            try:
                status = requests.post(member.client_url + "/v3/maintenance/status", json={}, timeout=1,
                                       **(member.tls.requests_options() if member.tls else {})).json()
            except requests.RequestException:
                continue
            if status.get("leader") == status.get("header", {}).get("member_id"):
                return member
        raise RuntimeError("no etcd leader")

    def stop(self) -> None:
        for member in self.members:
            if member.daemon:
                member.daemon.stop()


def etcd_service(argv: list[str]) -> int:
    """etcd run the way the appliance's unit runs it, for dev and test stacks: its settings come
    from environment files only (later files override earlier ones; a missing file is skipped, like
    systemd's EnvironmentFile=-), SIGHUP restarts it with the files read again (what a cluster job
    asks with `systemctl restart etcd` on an appliance), SIGTERM stops it. It writes its own pid to
    --pidfile; a member that exits on its own is started again after a second."""
    parser = argparse.ArgumentParser(prog="cairn-devstack etcd-service")
    parser.add_argument("--env", action="append", default=[], help="environment file (repeatable)")
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    wanted = {"restart": threading.Event(), "stop": threading.Event()}
    signal.signal(signal.SIGHUP, lambda *_: wanted["restart"].set())
    signal.signal(signal.SIGTERM, lambda *_: wanted["stop"].set())
    Path(args.pidfile).write_text(f"{os.getpid()}\n")
    runner = Runner()
    try:
        while not wanted["stop"].is_set():
            env: dict[str, str] = {}
            for path in args.env:
                env.update(parse_assignments(Path(path).read_text()) if Path(path).exists() else {})
            wanted["restart"].clear()
            etcd = runner.spawn(["etcd"], log_path=args.log, env=env)
            while etcd.alive() and not wanted["restart"].is_set() and not wanted["stop"].is_set():
                wanted["stop"].wait(0.1)
            etcd.stop(timeout=20)
            if not wanted["restart"].is_set() and not wanted["stop"].is_set():
                time.sleep(1.0)       # it exited by itself: Restart=on-failure, RestartSec
    finally:
        Path(args.pidfile).unlink(missing_ok=True)
    return 0


@dataclass
class EtcdService:
    """A node's etcd under etcd_service (see there), standalone at first: one member on `host`
    (a 127.x.y.z of its own per node) at etcd's usual ports, in plain HTTP, as an appliance's is on
    loopback. A cluster job rewrites `override` and sends SIGHUP to the launcher (pid in `pidfile`)."""
    dir: Path
    host: str
    name: str
    daemon: Daemon | None = None
    runner: Runner = field(default_factory=Runner)

    @property
    def base(self) -> Path:
        return self.dir / "etcd-base.env"

    @property
    def override(self) -> Path:
        return self.dir / "etcd.env"

    @property
    def pidfile(self) -> Path:
        return self.dir / "etcd-service.pid"

    @property
    def data_dir(self) -> Path:
        return self.dir / "etcd-data"

    @property
    def standalone_url(self) -> str:
        return f"http://{self.host}:{etcd_settings.CLIENT_PORT}"

    def start(self, timeout: float = 30.0) -> "EtcdService":
        self.dir.mkdir(parents=True, exist_ok=True)
        peer = f"http://{self.host}:{etcd_settings.PEER_PORT}"
        if not self.base.exists():
            base = {"name": self.name, "data-dir": str(self.data_dir),
                    "listen-client-urls": self.standalone_url, "advertise-client-urls": self.standalone_url,
                    "listen-peer-urls": peer, "initial-advertise-peer-urls": peer,
                    "heartbeat-interval": "100", "election-timeout": "1000", "log-level": "warn",
                    **etcd_settings.SETTINGS}
            self.base.write_text("".join(f"{k}={v}\n" for k, v in etcd_settings.environment(base).items()))
        self.daemon = self.runner.spawn(
            [sys.executable, "-m", "cairn.devstack", "etcd-service", "--env", str(self.base), "--env",
             str(self.override), "--pidfile", str(self.pidfile), "--log", str(self.dir / "etcd.log")],
            log_path=self.dir / "etcd-service.log")
        deadline = time.monotonic() + timeout
        while not self.pidfile.exists() or not self._answers():
            if not self.daemon.alive():
                raise RuntimeError(f"etcd's launcher exited; see {self.dir}/etcd-service.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd on {self.host} did not answer within {timeout} s; see {self.dir}/etcd.log")
            time.sleep(0.2)
        return self

    def _answers(self) -> bool:
        try:
            return requests.get(self.standalone_url + "/version", timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop(timeout=30)


def cluster_settings(base: Path, etcd: EtcdService | None = None) -> config_mod.ClusterConfig:
    """A dev or test node's [cluster] settings: a cluster job writes nothing outside `base` (no
    networkd unit, etcd's environment and TLS files there) and restarts etcd through its launcher;
    without one (etcd run by EtcdCluster) the restart fails and the job puts everything back."""
    return config_mod.ClusterConfig(
        manage_network=False, etcd_control="pidfile",
        etcd_env=str(etcd.override if etcd else base / "etcd.env"),
        etcd_pidfile=str(etcd.pidfile if etcd else base / "no-etcd-launcher.pid"),
        etcd_tls_dir=str((etcd.dir if etcd else base) / "etcd-tls"),
        etcd_data_dir=str(etcd.data_dir if etcd else base / "etcd-data"),
        **({"standalone_endpoint": etcd.standalone_url} if etcd else {}))


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
    return (runner or Runner()).spawn([sys.executable, "-m", "cairn.web.serve", "--config", str(config_path)],
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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["etcd-service"]:
        return etcd_service(argv[1:])
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
                            shares=share_sandbox(state / "shares"), cluster=cluster_settings(state))
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
