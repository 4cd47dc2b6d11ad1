"""N appliances on private networks, with fault injection: the harness for cluster tests.

    with Testbed.create(3, base_dir) as testbed:
        testbed.start()                     # boot all at once, wait for SSH + console
        a, b, c = testbed.nodes
        a.succeed("ping -c1 " + b.cluster_ip)
        testbed.partition(c); testbed.heal()
        b.power_cut(); b.start(); b.wait_for_console()

Networks. Each appliance has three NICs: management (QEMU user-mode networking, with host port
forwards on 127.0.0.1 for HTTPS and SSH), cluster and LAN. The cluster and LAN NICs are tap devices
that QEMU opens in the host namespace; the testbed then moves each tap into a network namespace of
its own (`cairn-tb-<tag>`) and enslaves it to a bridge there (br-cluster, br-lan). Nothing of these
segments touches the host's own interfaces, and deleting the namespace removes all of it. A dnsmasq
in the namespace hands out addresses on each segment (fixed ones for the appliances' NICs, by MAC),
with no default route, so the segments stay private.

Faults: power_cut() (QEMU killed: the plug pulled), reset() (QMP system_reset; like every guest
reset, a cold start of a new QEMU: see MachineSpec.cold_reset), set_link(nic, up)
(QMP set_link: the guest sees its carrier go), partition(node)/heal() (both private NICs down/up),
detach_disk(serial) (QMP device_del: a disk pulled out).

Every process the testbed starts (QEMU, dnsmasq) is stopped by stop(), which the context manager
and an atexit hook call even when a test fails.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import accel as accel_module
from .machine import DataDisk, Machine, MachineSpec, Nic, PortForward, TestbedError
from .qmp import QMP
from .run import wait_until_ready

SEGMENTS = {"cluster": "10.77.1", "lan": "10.77.2"}   # /24 each, inside the testbed's namespace only
FIRST_NODE_HOST = 11                                    # node i gets .11+i on each segment
DYNAMIC_RANGE = (100, 199)                              # inner guests and bridges
# Inner guests run under TCG inside the (TCG) appliance unless told otherwise: nested KVM on
# emulated SVM has crashed appliances (see README.md for the stress figures behind this default).
DEFAULT_INNER_ACCEL = "tcg"


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the private segments --------------------------------------------------------------------
@dataclass
class Network:
    """A network namespace with one bridge and one dnsmasq per segment."""
    tag: str
    state_dir: Path
    dnsmasq: dict[str, subprocess.Popen] = field(default_factory=dict)
    created: bool = False

    @property
    def namespace(self) -> str:
        return f"cairn-tb-{self.tag}"

    def ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", self.namespace, *argv], check=check)

    def create(self) -> None:
        _run(["ip", "netns", "add", self.namespace])
        self.created = True
        self.ns("ip", "link", "set", "lo", "up")
        for segment, prefix in SEGMENTS.items():
            bridge = f"br-{segment}"
            self.ns("ip", "link", "add", bridge, "type", "bridge")
            # No STP and no forwarding delay: a tap is usable the moment it joins.
            self.ns("ip", "link", "set", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            self.ns("ip", "addr", "add", f"{prefix}.1/24", "dev", bridge)
            self.ns("ip", "link", "set", bridge, "up")
            hosts = self.state_dir / f"dhcp-hosts-{segment}"
            hosts.touch()     # reserve() may have written it already
            log = open(self.state_dir / f"dnsmasq-{segment}.log", "w")
            self.dnsmasq[segment] = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, "dnsmasq", "--keep-in-foreground",
                 "--conf-file=/dev/null", "--user=root", "--no-resolv", "--no-hosts", "--port=0", "--log-dhcp",
                 f"--interface={bridge}", "--bind-interfaces", "--except-interface=lo",
                 f"--dhcp-range={prefix}.{DYNAMIC_RANGE[0]},{prefix}.{DYNAMIC_RANGE[1]},255.255.255.0,1h",
                 f"--dhcp-hostsfile={hosts}", f"--dhcp-leasefile={self.state_dir / f'leases-{segment}'}",
                 "--dhcp-option=3", "--dhcp-option=6", "--log-facility=-"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def reserve(self, segment: str, mac: str, host: int) -> str:
        """A fixed address for a MAC on a segment (dnsmasq rereads its hosts file on SIGHUP)."""
        address = f"{SEGMENTS[segment]}.{host}"
        hosts = self.state_dir / f"dhcp-hosts-{segment}"
        existing = hosts.read_text().splitlines() if hosts.exists() else []
        lines = [line for line in existing if not line.startswith(mac)]
        hosts.write_text("\n".join(lines + [f"{mac},{address}"]) + "\n")
        process = self.dnsmasq.get(segment)
        if process and process.poll() is None:
            # SIGHUP rereads the hosts file, but kills a dnsmasq that has not set up its handlers
            # yet: wait until it says it is serving. (`ip netns exec` execs dnsmasq: same pid.)
            self.wait_serving(segment)
            os.kill(process.pid, 1)
        return address

    def wait_serving(self, segment: str, timeout: float = 10.0) -> None:
        log = self.state_dir / f"dnsmasq-{segment}.log"
        deadline = time.monotonic() + timeout
        while "sockets bound exclusively" not in log.read_text():
            if self.dnsmasq[segment].poll() is not None or time.monotonic() > deadline:
                raise TestbedError(f"dnsmasq on {segment} is not serving; see {log}")
            time.sleep(0.05)

    def attach(self, tap: str, segment: str) -> None:
        """Move a tap QEMU opened in the host namespace into ours, onto the segment's bridge."""
        deadline = time.monotonic() + 10
        while not Path(f"/sys/class/net/{tap}").exists():
            if time.monotonic() > deadline:
                raise TestbedError(f"QEMU did not create the tap device {tap}")
            time.sleep(0.1)
        _run(["ip", "link", "set", tap, "netns", self.namespace])
        self.ns("ip", "link", "set", tap, "master", f"br-{segment}")
        self.ns("ip", "link", "set", tap, "up")

    def set_tap(self, tap: str, up: bool) -> None:
        self.ns("ip", "link", "set", tap, "up" if up else "down")

    def destroy(self) -> None:
        for process in self.dnsmasq.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.dnsmasq.clear()
        if self.created:
            _run(["ip", "netns", "delete", self.namespace], check=False)
            self.created = False


# --- one appliance ---------------------------------------------------------------------------
class ApiClient:
    """A small authenticated client of the appliance's /api/v1 (stdlib only)."""

    def __init__(self, url: str, ca_file: Path, password: str) -> None:
        self.url = url
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.token = self.call("POST", "/auth/login", {"username": "admin", "password": password})[1]["token"]

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + "/api/v1" + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        request.add_header("Content-Type", "application/json")
        if getattr(self, "token", None):
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as reply:
                return reply.status, json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def get(self, path: str) -> dict:
        status, body = self.call("GET", path)
        if status != 200:
            raise TestbedError(f"GET {path}: {status} {body}")
        return body


@dataclass
class Node:
    """One appliance of the testbed, with the test-driver API."""
    index: int
    name: str
    machine: Machine
    network: Network
    https_port: int
    ssh_port: int
    taps: dict[str, str]             # segment -> tap name
    macs: dict[str, str]             # segment -> MAC
    cluster_ip: str
    cut_off: bool = False            # partition()ed: its taps are down until heal()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    # lifecycle
    def start(self) -> None:
        self.machine.on_restart = self._plug_taps
        self.machine.start()
        self._plug_taps()

    def _plug_taps(self) -> None:
        """Put QEMU's taps on the segments' bridges (again after a guest reset restarted QEMU; a
        node that was cut off stays cut off)."""
        for segment, tap in self.taps.items():
            self.network.attach(tap, segment)
            if self.cut_off:
                self.network.set_tap(tap, up=False)

    def wait_for_console(self, timeout: float = 900) -> dict:
        seen = wait_until_ready(self.machine, self.https_port, self.ssh_port, timeout)
        if "console" not in seen or "ssh" not in seen:
            raise TestbedError(f"{self.name} did not come up within {timeout:.0f} s; see {self.machine.spec.serial_log}")
        return seen

    def running(self) -> bool:
        return self.machine.running()

    # commands over SSH
    def execute(self, command: str, timeout: float = 120) -> tuple[int, str, str]:
        result = self.machine.ssh(self.ssh_port, command, timeout=timeout)
        return result.returncode, result.stdout, result.stderr

    def succeed(self, command: str, timeout: float = 120) -> str:
        code, out, err = self.execute(command, timeout)
        if code != 0:
            raise TestbedError(f"{self.name}: `{command}` failed ({code}): {err.strip() or out.strip()}")
        return out

    def fail(self, command: str, timeout: float = 120) -> str:
        code, out, err = self.execute(command, timeout)
        if code == 0:
            raise TestbedError(f"{self.name}: `{command}` succeeded but was expected to fail: {out.strip()}")
        return err

    def reaches(self, address: str, count: int = 1, wait: int = 2) -> bool:
        """Whether a ping from this node to address is answered."""
        code, _, _ = self.execute(f"ping -c {count} -W {wait} {address}", timeout=30)
        return code == 0

    def copy_to(self, local: Path, remote: str) -> None:
        argv = self.machine.ssh_argv(self.ssh_port)[:-1]   # all the options, without root@host
        options = argv[1:]
        port_index = options.index("-p")
        options[port_index] = "-P"
        _run(["scp", "-q", *options, str(local), f"root@127.0.0.1:{remote}"])

    # the console API
    def api(self) -> ApiClient:
        ca = self.machine.spec.run_dir / "appliance-ca.pem"
        ca.write_text(self.succeed("cat /var/lib/cairn/tls/ca.pem"))
        return ApiClient(self.url, ca, self.succeed("cat /var/lib/cairn/admin-password").strip())

    # faults
    def qmp(self, command: str, **arguments):
        with QMP(self.machine.spec.qmp_socket) as qmp:
            return qmp.execute(command, **arguments)

    def power_cut(self) -> None:
        """Pull the plug: QEMU is gone at once, nothing in the guest gets to react."""
        self.machine.power_cut()

    def reset(self) -> None:
        self.qmp("system_reset")

    def set_link(self, nic: str, up: bool) -> None:
        """Carrier up/down on the cluster or LAN NIC, as the guest sees it."""
        self.qmp("set_link", name=f"net-{nic}", up=up)

    def detach_disk(self, serial: str) -> None:
        self.qmp("device_del", id=f"disk-{serial}")
        self.machine.detached.add(serial)

    def start_test_guest(self, image: Path, name: str, mac: str, accel: str) -> str:
        """Copy the tiny test guest's disk in and start it under libvirt; returns its serial log path."""
        disk = f"/var/lib/libvirt/images/{name}.img"
        serial_log = f"/var/log/libvirt/qemu/{name}-serial.log"
        self.copy_to(image, disk)
        xml = self.machine.spec.run_dir / f"{name}.xml"
        xml.write_text(guest_domain_xml(name, disk, mac, accel, serial_log))
        self.copy_to(xml, f"/tmp/{name}.xml")
        self.succeed(f"virsh -c qemu:///system define /tmp/{name}.xml && virsh -c qemu:///system start {name}")
        return serial_log

    def trust(self, other: "Node") -> None:
        """Let this node's root SSH to the other over the cluster segment (for qemu+ssh migration)."""
        key = self.succeed("test -f /root/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519;"
                           " cat /root/.ssh/id_ed25519.pub").strip()
        other.succeed(f"grep -qxF '{key}' /root/.ssh/authorized_keys || echo '{key}' >> /root/.ssh/authorized_keys")

    def migrate(self, name: str, dest: "Node", copy_storage: bool = True, timeout: float = 600) -> float:
        """Live-migrate a libvirt domain to another node over the cluster segment; returns seconds taken.

        With copy_storage the disk is mirrored over NBD, so the destination must hold a file of the
        same size at the same path (any content)."""
        uri = f"qemu+ssh://root@{dest.cluster_ip}/system?no_verify=1&keyfile=/root/.ssh/id_ed25519"
        flags = "--live --persistent --undefinesource" + (" --copy-storage-all" if copy_storage else "")
        started = time.monotonic()
        self.succeed(f"virsh -c qemu:///system migrate {flags} {name} '{uri}' --migrateuri tcp://{dest.cluster_ip}",
                     timeout=timeout)
        return time.monotonic() - started

    def lan_ip(self) -> str | None:
        """br0's IPv4 address (DHCP on the LAN segment; br0's MAC is the appliance's own)."""
        out = self.succeed("ip -4 -j addr show dev br0")
        addresses = [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]
        return addresses[0] if addresses else None


# --- the tiny test guest inside an appliance --------------------------------------------------
def guest_domain_xml(name: str, disk: str, mac: str, accel: str, serial_log: str, memory_mib: int = 128) -> str:
    """A libvirt domain for the tiny test guest on the appliance's LAN bridge (pure).

    accel "kvm" uses the appliance's nested KVM (-cpu max exposes SVM under TCG); "tcg" runs the
    guest under QEMU's emulator inside the appliance (slow, but never crashes the appliance).
    """
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"inner accelerator must be kvm or tcg, not {accel!r}")
    domain_type = "kvm" if accel == "kvm" else "qemu"
    cpu = "<cpu mode='host-passthrough'/>" if accel == "kvm" else "<cpu mode='custom'><model>qemu64</model></cpu>"
    return f"""<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' discard='unmap'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <source bridge='br0'/>
      <mac address='{mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='{serial_log}'/><target port='0'/></serial>
    <console type='file'><source path='{serial_log}'/><target type='serial' port='0'/></console>
  </devices>
</domain>
"""


# --- the testbed -----------------------------------------------------------------------------
@dataclass
class Testbed:
    nodes: list[Node]
    network: Network
    state_dir: Path
    log: callable = print
    inner_accel: str = "tcg"     # how appliances run inner guests: "tcg" or "kvm" (nested)

    @classmethod
    def create(cls, count: int, state_dir: Path, image: Path | None = None, memory_mib: int = 2048,
               cpus: int = 2, watchdog: bool = True, accel: str = "auto", log=print,
               inner_accel: str | None = None, data_disks: list[DataDisk] | None = None) -> "Testbed":
        """count appliances from the newest image (not started: start() boots them); data_disks
        replaces MachineSpec's default four disks on every node."""
        from .run import BUILD, newest_manifest
        state_dir = Path(state_dir).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = newest_manifest()
        if manifest_path is None:
            raise TestbedError("no appliance image under build/: `make image` builds one")
        manifest = json.loads(manifest_path.read_text())
        image = image or manifest_path.parent / manifest["qcow2"]
        kernel = image.with_name(manifest["vmlinuz"]) if manifest.get("vmlinuz") else None
        chosen = accel_module.choose("qemu-system-x86_64", kernel, BUILD / "cache", accel)
        tag = secrets.token_hex(2)
        network = Network(tag, state_dir)
        nodes = []
        for index in range(count):
            name = f"node{index + 1}"
            macs = {segment: f"52:54:00:{0x70 + i:02x}:{int(tag[:2], 16):02x}:{index + 1:02x}"
                    for i, segment in enumerate(SEGMENTS)}
            taps = {segment: f"tb{tag}{index}{segment[0]}" for segment in SEGMENTS}
            https_port, ssh_port = free_port(), free_port()
            disks = {"data_disks": list(data_disks)} if data_disks is not None else {}
            spec = MachineSpec(
                name=f"cairn-{name}", image=image, run_dir=state_dir / name, memory_mib=memory_mib,
                cpus=cpus, forwards=[PortForward(https_port, 443), PortForward(ssh_port, 22)],
                mgmt_mac=f"52:54:00:ca:{int(tag[:2], 16):02x}:{index + 1:02x}",
                nics=[Nic(segment, f"tap,ifname={taps[segment]},script=no,downscript=no", macs[segment])
                      for segment in SEGMENTS],
                lan_nic=macs["lan"], watchdog=watchdog, mgmt_restrict=True, **disks)
            machine = Machine(spec, chosen, log=lambda message, n=name: log(f"[{n}] {message}"))
            machine.prepare(manifest.get("inputs"))
            nodes.append(Node(index, name, machine, network, https_port, ssh_port, taps, macs,
                              cluster_ip=f"{SEGMENTS['cluster']}.{FIRST_NODE_HOST + index}"))
        inner = inner_accel or os.environ.get("CAIRN_INNER_ACCEL", DEFAULT_INNER_ACCEL)
        if inner not in ("tcg", "kvm"):
            raise TestbedError(f"inner accelerator must be tcg or kvm, not {inner!r}")
        testbed = cls(nodes, network, state_dir, log, inner)
        atexit.register(testbed.stop)
        return testbed

    def __enter__(self) -> "Testbed":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 900, nodes: list[Node] | None = None) -> dict[str, dict]:
        """Boot every node (or only `nodes`; the others can be started by a later call) at once
        and wait until each answers SSH and HTTPS. The segments are made on the first call."""
        chosen = self.nodes if nodes is None else nodes
        if not self.network.created:
            for node in self.nodes:     # in the hosts file before dnsmasq starts
                self.network.reserve("cluster", node.macs["cluster"], FIRST_NODE_HOST + node.index)
            self.network.create()
            for segment in SEGMENTS:
                self.network.wait_serving(segment)
        started = time.monotonic()
        for node in chosen:
            node.start()
        seen = {node.name: node.wait_for_console(timeout) for node in chosen}
        self.log(f"testbed: {len(chosen)} appliances up in {time.monotonic() - started:.0f} s")
        return seen

    def partition(self, node: Node) -> None:
        """Cut the node off both private segments (its management NIC stays, for the harness)."""
        node.cut_off = True
        for tap in node.taps.values():
            self.network.set_tap(tap, up=False)

    def heal(self) -> None:
        for node in self.nodes:
            node.cut_off = False
            for tap in node.taps.values():
                self.network.set_tap(tap, up=True)

    def collect_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            for log in (node.machine.spec.serial_log, node.machine.spec.run_dir / "qemu.log"):
                if log.exists():
                    shutil.copy(log, dest / f"{node.name}-{log.name}")
            if node.running():
                code, out, _ = node.execute("journalctl -b --no-pager -n 2000", timeout=60)
                if code == 0:
                    (dest / f"{node.name}-journal.txt").write_text(out)
        for log in self.state_dir.glob("dnsmasq-*.log"):
            shutil.copy(log, dest / log.name)

    def stop(self) -> None:
        """Stop every QEMU and dnsmasq, delete the namespace. Safe to call twice."""
        for node in self.nodes:
            if node.running():
                node.machine.kill()
        self.network.destroy()
