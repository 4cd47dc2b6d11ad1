"""Web server under long-lived streams (issue 13, point 6). Prints figures; asserts nothing.

    make bench          (or: .venv/bin/python tests/bench/bench_web.py [--streams 200] [--relays 5])

A real etcd and a real cairn-web with the appliance's web settings (WebConfig defaults), no agent.
VMS VMs (5) are records on this node whose screen is a real QEMU VNC server (`-vnc` on loopback,
no disk, paused before the firmware runs: the screen says the guest has not initialised the
display); GET /api/v1/vms lists them. Then, in this order:
- VNC_RELAYS consoles open through the product's relay (wss /api/v1/vms/<vm>/vnc with a bearer
  token, RFB handshake to the ServerInit), each getting one whole screen, then asking for an
  incremental update every second (the paused screen does not change: open, idle consoles);
- SSE_STREAMS open event streams (GET /api/v1/events/stream with a bearer token), read as they come;
- while all of them stay open: GET /api/v1/health and GET /api/v1/vms, CLIENTS_PER_URL sequential
  clients each (keep-alive), until REQUESTS_PER_CLIENT requests each or MEASURE_SECONDS have passed.
A request that gets no answer within REQUEST_TIMEOUT counts as REQUEST_TIMEOUT in the figures.
Printed: how many streams and consoles the server answered, p50/p99/max per URL, the number of
timed-out requests, and the RSS of the web workers with everything open.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_api import children, percentile, rss_kib  # noqa: E402  (tests/bench: the script's folder)
from vnc_client import Console  # noqa: E402
from cairn import config as config_mod  # noqa: E402
from cairn.cluster.store import Store  # noqa: E402
from cairn.compute import model  # noqa: E402
from cairn.devstack import EtcdCluster, free_port, start_web, wait_http, write_config  # noqa: E402
from cairn.runner import Runner  # noqa: E402

SSE_STREAMS = 200
VNC_RELAYS = 5
VMS = 5                           # VM records (with a QEMU screen each) whatever the consoles opened
CLIENTS_PER_URL = 2
REQUESTS_PER_CLIENT = 200
MEASURE_SECONDS = 90.0
REQUEST_TIMEOUT = 10.0
NODE = "bench-node"


def start_vnc_servers(base: Path, count: int) -> tuple[list, list[int]]:
    """QEMU processes serving VNC on loopback (paused, no disk); their ports once they answer."""
    daemons, ports = [], []
    for index in range(count):
        port = free_port()
        while port < 5900:
            port = free_port()
        daemons.append(Runner().spawn(
            ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "32", "-nodefaults", "-no-user-config",
             "-vga", "std", "-display", "none", "-vnc", f"127.0.0.1:{port - 5900}", "-S"],
            log_path=base / f"qemu{index}.log"))
        ports.append(port)
    deadline = time.monotonic() + 30
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"QEMU's VNC server on port {port} did not answer")
                time.sleep(0.1)
    return daemons, ports


def seed_vms(store: Store, ports: list[int]) -> list[str]:
    names = []
    for index, port in enumerate(ports):
        name = f"bench-{index}"
        vm = model.Vm(name, f"00000000-0000-4000-8000-{index:012d}", NODE, "bench", 1, 32,
                      nics=(model.Nic(f"52:54:00:be:00:{index:02x}"),), created_at=time.time())
        store.put(f"vms/{name}", vm.to_dict())
        store.put(f"vm-status/{name}", {"node": NODE, "state": "running", "accel": "tcg", "vnc_port": port,
                                        "snapshots": [], "files": True})
        names.append(name)
    return names


class Streams:
    """SSE_STREAMS event streams, each a TLS socket in its own thread (blocked in recv: no polling, so
    the bench's own CPU use stays out of the figures), read until close()."""

    def __init__(self, url: str, token: str, count: int) -> None:
        self.host, self.port = url.removeprefix("https://").rsplit(":", 1)
        self.token = token
        self.stop = threading.Event()
        self.answered = 0
        self.sockets: list[ssl.SSLSocket] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._follow, daemon=True) for _ in range(count)]

    def open(self) -> None:
        for thread in self.threads:
            thread.start()

    def _follow(self) -> None:
        context = ssl._create_unverified_context()
        try:
            raw = socket.create_connection((self.host, int(self.port)), timeout=REQUEST_TIMEOUT)
            sock = context.wrap_socket(raw, server_hostname=self.host)
            sock.sendall((f"GET /api/v1/events/stream HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                          f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n").encode())
        except OSError:
            return
        with self.lock:
            self.sockets.append(sock)
        sock.settimeout(None)           # blocked in recv until data comes or close() shuts the socket
        head = b""
        while not self.stop.is_set():
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            if head is not None:
                head += data
                if b"\r\n\r\n" in head:
                    if head.startswith(b"HTTP/1.1 200"):
                        with self.lock:
                            self.answered += 1
                    head = None
        sock.close()

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Relays:
    """VNC consoles through the relay: RFB handshake, one whole screen, then an incremental update
    request every second (a paused guest's screen does not change: the console is open and idle)."""

    def __init__(self, url: str, token: str, ca: str, names: list[str]) -> None:
        self.url, self.token, self.ca = url, token, ca
        self.stop = threading.Event()
        self.open_count = 0
        self.relayed = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._console, args=(name,), daemon=True) for name in names]

    def open(self) -> None:
        for thread in self.threads:
            thread.start()

    def _console(self, name: str) -> None:
        try:
            console = Console(self.url, f"/api/v1/vms/{name}/vnc", self.token, self.ca)
            if console.status != 101:
                return
            width, height, _ = console.rfb_init()
        except (OSError, ConnectionError, AssertionError):
            return
        with self.lock:
            self.open_count += 1
        console.sock.settimeout(1.0)
        size = width.to_bytes(2, "big") + height.to_bytes(2, "big")
        console.send(bytes([3, 0, 0, 0, 0, 0]) + size)         # FramebufferUpdateRequest: the whole screen
        while not self.stop.is_set():
            try:
                data = console.sock.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.relayed += len(data)
                continue                                        # drain what is there first
            except (TimeoutError, socket.timeout):
                pass
            except OSError:
                break
            try:
                console.send(bytes([3, 1, 0, 0, 0, 0]) + size)  # then an incremental one every second
            except OSError:
                break
        console.close()


def measure(url: str, token: str, ca: str) -> dict[str, tuple[list[float], int]]:
    results: dict[str, tuple[list[float], int]] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + MEASURE_SECONDS

    def client(path: str) -> None:
        session = requests.Session()
        session.trust_env = False
        session.verify = ca
        session.headers["Authorization"] = f"Bearer {token}"
        timings, timeouts = [], 0
        for _ in range(REQUESTS_PER_CLIENT):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            try:
                session.get(url + path, timeout=REQUEST_TIMEOUT).raise_for_status()
                timings.append((time.perf_counter() - started) * 1000)
            except requests.RequestException:
                timings.append(REQUEST_TIMEOUT * 1000)
                timeouts += 1
                session.close()
        with lock:
            old, count = results.get(path, ([], 0))
            results[path] = (old + timings, count + timeouts)

    threads = [threading.Thread(target=client, args=(path,))
               for path in ("/api/v1/health", "/api/v1/vms") for _ in range(CLIENTS_PER_URL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> int:
    global SSE_STREAMS, VNC_RELAYS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=SSE_STREAMS)
    parser.add_argument("--relays", type=int, default=VNC_RELAYS)
    args = parser.parse_args()
    SSE_STREAMS, VNC_RELAYS = args.streams, args.relays
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="cairn-bench-web-") as tmp:
        base = Path(tmp)
        etcd = EtcdCluster.create(base / "etcd", 1).start()
        qemus, web = [], None
        try:
            port = free_port()
            web_cfg = config_mod.WebConfig(bind=f"127.0.0.1:{port}")
            cfg = config_mod.Config(node_name=NODE, etcd_endpoints=tuple(etcd.endpoints), state_dir=base, web=web_cfg)
            config_path = write_config(base / "cairn.toml", cfg)
            qemus, ports = start_vnc_servers(base, max(VMS, VNC_RELAYS))
            web = start_web(config_path, base / "web.log")
            url = f"https://127.0.0.1:{port}"
            wait_http(url + "/api/v1/health", timeout=60, daemon=web)
            ca = str(base / "tls" / "ca.pem")
            password = (base / "admin-password").read_text().strip()
            login = requests.post(url + "/api/v1/auth/login", json={"username": "admin", "password": password},
                                  verify=ca, timeout=30)
            login.raise_for_status()
            token = login.json()["token"]
            store = Store(cfg.etcd_endpoints, cfg.store_root)
            store.put(f"nodes/{NODE}", {"name": NODE, "heartbeat_at": time.time(), "cpus": os.cpu_count()})
            names = seed_vms(store, ports)

            relays = Relays(url, token, ca, names[:VNC_RELAYS])
            relays.open()
            streams = Streams(url, token, SSE_STREAMS)
            streams.open()
            time.sleep(5)                                # let every stream and console connect
            results = measure(url, token, ca)
            web_pids = children(web.pid)
            web_rss = sum(rss_kib(pid) for pid in [web.pid] + web_pids)
            answered, consoles, relayed = streams.answered, relays.open_count, relays.relayed
            relays.stop.set()
            streams.close()

            worker = re.search(r"Using worker: (\S+)", (base / "web.log").read_text())
            per_worker = (f"connections={web_cfg.connections}" if hasattr(web_cfg, "connections")
                          else f"threads={web_cfg.threads}")            # older code: threads
            print(f"cairn-web ({web_cfg.workers} {worker.group(1) if worker else '?'} workers, config "
                  f"{per_worker}), {len(names)} VMs, with {SSE_STREAMS} event streams and {VNC_RELAYS} VNC "
                  f"consoles open; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:")
            print(f"  event streams answered      {answered}/{SSE_STREAMS}")
            print(f"  VNC consoles open           {consoles}/{VNC_RELAYS} "
                  f"({relayed / 1e6:.1f} MB of screen relayed to them)")
            for path, (timings, timeouts) in results.items():
                print(f"  GET {path:<22} p50 {statistics.median(timings):7.1f} ms   p99 "
                      f"{percentile(timings, 0.99):7.1f} ms   max {max(timings):7.1f} ms   "
                      f"{len(timings)} requests, {timeouts} timed out (>{REQUEST_TIMEOUT:g} s)")
            print(f"  cairn-web RSS (master + {len(web_pids)} workers) {web_rss / 1024:.1f} MiB")
        finally:
            if web is not None:
                web.stop()
            for qemu in qemus:
                qemu.stop()
            etcd.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
