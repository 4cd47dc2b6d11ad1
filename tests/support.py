"""Helpers shared by the tests (imported as `support`; conftest.py files only hold fixtures, since
every directory's conftest is a module named `conftest`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cairn import config as config_mod
from cairn.cluster.store import Store
from cairn.devstack import EtcdCluster, EtcdService, cluster_settings, free_port, share_sandbox, start_agent, start_web, wait_http, write_config
from cairn.runner import Daemon, Runner

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The canvas noVNC draws into shows something (not one flat colour): the VM's screen arrived.
CANVAS_HAS_PICTURE = """() => {
  const canvas = document.querySelector('#screen canvas');
  if (!canvas || !canvas.width || !canvas.height) return false;
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 4; i < d.length; i += 4)
    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
  return false;
}"""


def goto(page, path: str, attempts: int = 4):
    """page.goto, again when chromium aborted it because the host's network changed (a VM's tap
    device coming or going, or its IPv6 link-local address appearing, is such a change)."""
    for attempt in range(attempts):
        try:
            return page.goto(path)
        except Exception as exc:              # playwright's Error; only this one cause is retried
            if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def console_page(url: str, password: str):
    """A logged-in chromium page on a node's web console (Playwright, Debian's chromium)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(ignore_https_errors=True, base_url=url).new_page()
            goto(page, "/login")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_selector("header nav")
            yield page
        finally:
            browser.close()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll until predicate() is truthy; return its value, or fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


def new_root() -> str:
    """A key root of its own, so tests sharing one etcd never see each other's keys."""
    return f"/t-{secrets.token_hex(4)}"


@dataclass
class Stack:
    """A running node: its own etcd, cairn-agent and cairn-web as real processes."""
    dir: Path
    etcd: EtcdCluster | EtcdService
    config_path: Path
    cfg: config_mod.Config
    agent: Daemon
    web: Daemon
    url: str
    ca: str

    @property
    def password(self) -> str:
        return (self.dir / "admin-password").read_text().strip()

    @property
    def node(self) -> str:
        return self.cfg.node_name

    def store(self) -> Store:
        return config_mod.open_store(config_mod.load(str(self.config_path)))

    def session(self, login: bool = True) -> requests.Session:
        session = requests.Session()
        session.trust_env = False    # else $REQUESTS_CA_BUNDLE replaces the node's CA
        session.verify = self.ca
        # gunicorn closes an idle keep-alive connection after 2 s; a GET that raced that close is
        # sent again (never a POST: it may have arrived).
        retry = Retry(total=2, connect=2, read=2, status=0, allowed_methods=frozenset({"GET"}), backoff_factor=0)
        session.mount("https://", HTTPAdapter(max_retries=retry))
        if login:
            reply = session.post(self.url + "/api/v1/auth/login",
                                 json={"username": "admin", "password": self.password})
            reply.raise_for_status()
            session.headers["Authorization"] = "Bearer " + reply.json()["token"]
        return session

    def restart_agent(self) -> None:
        self.agent = start_agent(self.config_path, self.dir / "agent.log")

    def stop(self) -> None:
        for daemon in (self.web, self.agent):
            daemon.stop()
        self.etcd.stop()


def start_stack(base: Path, node: str = "node-a", storage: config_mod.StorageConfig | None = None,
                tls: bool = False) -> Stack:
    """A node on its own etcd; with tls, an etcd that speaks mutual TLS only (as in a cluster).
    A cluster job (the API fuzzer may start one) stays in `base` and fails: devstack.cluster_settings."""
    etcd = EtcdCluster.create(base / "etcd", 1, tls=tls).start()
    member_tls = etcd.members[0].tls
    cluster = cluster_settings(base)
    if member_tls:
        cluster = replace(cluster, ca=str(member_tls.ca), cert=str(member_tls.cert), key=str(member_tls.key))
    return _run_node(base, etcd, config_mod.Config(
        node_name=node, etcd_endpoints=tuple(etcd.endpoints), state_dir=base,
        web=config_mod.WebConfig(bind=f"127.0.0.1:{free_port()}", workers=2),
        storage=storage or config_mod.StorageConfig(), shares=share_sandbox(base / "shares"),
        compute=config_mod.ComputeConfig(accel="tcg", log_dir=str(base / "vm-logs")), cluster=cluster))


def start_node(base: Path, host: str, node: str) -> Stack:
    """A standalone node as an appliance runs it, for cluster tests: etcd on `host` (a 127.x.y.z of
    its own) under the devstack launcher, so a cluster job can rewrite etcd's environment and restart
    it; the console on host:<free port>; its own machine-id."""
    etcd = EtcdService(base / "etcd", host, node).start()
    return _run_node(base, etcd, config_mod.Config(
        node_name=node, node_id=secrets.token_hex(16), etcd_endpoints=(etcd.standalone_url,), state_dir=base,
        web=config_mod.WebConfig(bind=f"{host}:{free_port(host)}", workers=1),
        shares=share_sandbox(base / "shares"),
        compute=config_mod.ComputeConfig(accel="tcg", log_dir=str(base / "vm-logs")),
        cluster=cluster_settings(base, etcd)))


def _run_node(base: Path, etcd: EtcdCluster | EtcdService, cfg: config_mod.Config) -> Stack:
    """cairn-agent and cairn-web of a node with this configuration, up once the console answers and
    the agent has reported the node (all of it stopped again if it does not come up)."""
    config_path = write_config(base / "cairn.toml", cfg)
    agent = start_agent(config_path, base / "agent.log")
    web = start_web(config_path, base / "web.log")
    url = f"https://{cfg.web.bind}"
    stack = Stack(base, etcd, config_path, cfg, agent, web, url, str(base / "tls" / "ca.pem"))
    try:
        wait_http(url + "/api/v1/health", timeout=60, daemon=web)
        wait_until(lambda: stack.session().get(url + "/api/v1/nodes").json()["nodes"], 30,
                   "the agent reports its node")
    except BaseException:
        stack.stop()     # a stack that never came up must not outlive the test run
        raise
    return stack


class LoopDisks:
    """Sparse files on loop devices, standing in for disks where the host has no spare ones.
    Detached (and unmounted) at close, whatever happened."""

    def __init__(self, directory: Path, count: int, size_mib: int = 512) -> None:
        self.runner = Runner()
        self.directory = directory
        self.devices: list[str] = []
        directory.mkdir(parents=True, exist_ok=True)
        try:
            for index in range(count):
                backing = directory / f"disk{index}.img"
                with open(backing, "wb") as fh:
                    fh.truncate(size_mib << 20)
                self.devices.append(self.runner.run(["losetup", "-f", "--show", str(backing)]).stdout.strip())
        except BaseException:
            self.close()
            raise

    def ids(self) -> list[str]:
        """How Cairn names them: loop:<name>."""
        return [f"loop:{Path(d).name}" for d in self.devices]

    def close(self) -> None:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for line in mounts:
            source, point = line.split()[:2]
            if source in self.devices or point.startswith(str(self.directory)):
                self.runner.run(["umount", "-l", point], check=False)
        for device in self.devices:
            self.runner.run(["losetup", "-d", device], check=False)
        self.devices = []


def assert_golden(path: Path, actual: str) -> None:
    """actual == the golden file; with CAIRN_UPDATE_GOLDEN=1 the file is rewritten and the test
    still fails once, so the diff gets reviewed before it counts."""
    import pytest
    if os.environ.get("CAIRN_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual.encode())
        pytest.fail(f"rewrote {path}: review the diff, then run again without CAIRN_UPDATE_GOLDEN")
    assert actual == path.read_bytes().decode("utf-8")


def finish_job(session: requests.Session, stack: Stack, method: str, path: str, timeout: float = 120,
               **kwargs) -> dict:
    """Submit through /api/v1 (expects 202) and wait for the job to end; returns the ended job."""
    reply = session.request(method, stack.url + "/api/v1" + path, **kwargs)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]
    return wait_until(lambda: (j := session.get(f"{stack.url}/api/v1/jobs/{job_id}").json())["state"]
                      not in ("queued", "running") and j, timeout, f"job {job_id} to end")


@contextlib.contextmanager
def storage_stack(base: Path, disks: int, size_mib: int, keep_logs=lambda: False):
    """A running stack whose agent treats `disks` fresh loop devices as disks (already rescanned),
    pools under base/pools. Everything is stopped and detached at the end; with keep_logs() true
    the daemons' logs are copied to the test artifacts first."""
    loops = LoopDisks(base / "loops", disks, size_mib)
    stack = None
    try:
        stack = start_stack(base, storage=config_mod.StorageConfig(pools_root=str(base / "pools"),
                                                                   include_loop=True))
        rescan = finish_job(stack.session(), stack, "POST", f"/nodes/{stack.node}/disks/rescan")
        assert rescan["state"] == "success", rescan
        yield stack, loops
    finally:
        if stack is not None:
            if keep_logs():
                keep = ARTIFACTS / "logs" / base.name
                keep.mkdir(parents=True, exist_ok=True)
                for log in base.glob("*.log"):
                    shutil.copy(log, keep / log.name)
            stack.stop()
        loops.close()


LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")
VM_BRIDGE = "cairnvmbr0"


def virsh(*args: str, check: bool = True):
    return Runner().run(["virsh", "-c", "qemu:///system", *args], check=check, timeout=60)


@contextlib.contextmanager
def libvirt_host(base: Path, domain_prefix: str):
    """A running system libvirtd (started here, with /dev/kvm hidden, if none runs: tests/nokvm.py
    says why) and a bridge VM_BRIDGE for the VMs' NICs. Yields a directory to put stacks in: a
    shared mount, so pools their agents mount under it also appear in libvirtd's mount namespace,
    and world-traversable (QEMU runs as libvirt-qemu). At the end every domain whose name starts
    with `domain_prefix` is destroyed and undefined, and what was started here is stopped."""
    runner = Runner()
    mounts = Path(tempfile.mkdtemp(prefix="cairn-vmhost-"))
    os.chmod(mounts, 0o755)
    runner.run(["mount", "--bind", str(mounts), str(mounts)])
    runner.run(["mount", "--make-shared", str(mounts)])
    started: list[Daemon] = []
    try:
        if not LIBVIRT_SOCKET.exists():
            qemu_conf = base / "qemu.conf"
            qemu_conf.write_text("namespaces = []\n")     # libvirt's per-VM /dev cannot carry the hidden kvm
            for daemon in ("virtlogd", "libvirtd"):
                started.append(runner.spawn([sys.executable, str(ROOT / "tests" / "nokvm.py"), "--bind",
                                             f"{qemu_conf}:/etc/libvirt/qemu.conf", daemon],
                                            log_path=base / f"{daemon}.log"))
            wait_until(lambda: virsh("version", check=False).ok, 60, "libvirtd to answer", interval=0.5)
        runner.run(["ip", "link", "add", VM_BRIDGE, "type", "bridge"], check=False)
        runner.run(["ip", "link", "set", VM_BRIDGE, "up"])
        yield mounts
    finally:
        if LIBVIRT_SOCKET.exists():
            for name in virsh("list", "--all", "--name", check=False).stdout.split():
                if name.startswith(domain_prefix):
                    virsh("destroy", name, check=False)
                    virsh("undefine", name, "--nvram", check=False)
        runner.run(["ip", "link", "del", VM_BRIDGE], check=False)
        for daemon in reversed(started):
            daemon.stop()
        runner.run(["umount", "--lazy", str(mounts)], check=False)
        shutil.rmtree(mounts, ignore_errors=True)


# --- the test guest on VM_BRIDGE (host tests and benchmarks) ---------------------------------
GUEST_IP, HOST_IP = "10.99.0.10", "10.99.0.1"   # net.cfg on its boot partition; HOST_IP on VM_BRIDGE


def reachable(url: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2):
            return True
    except OSError:
        return False


def guest_run(script: str, timeout: float = 120) -> str:
    """Run a shell script in the test guest (its /cgi-bin/run, test guests only)."""
    request = urllib.request.Request(f"http://{GUEST_IP}/cgi-bin/run", data=script.encode(), method="POST")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=timeout) as reply:
        body = reply.read().decode()
        assert reply.headers["X-Cairn-Exit"] == "0", body
        return body
