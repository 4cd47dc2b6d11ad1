"""End-to-end fixtures: real appliances booted from the built image by qemu-testbed/.

One testbed of three appliances is shared by the e2e modules (`shared_testbed`), because booting
is most of what an appliance test costs under TCG: each module booting its own came to 8 boots
(13 with the reboots the tests do), now 3 (8 with the reboots). node1 and node2 boot together when
the first module asks; node3 only when test_testbed does, so it doesn't idle on the 2 cores while
the single-node modules run. The modules take nodes that don't get in each other's way, in an order
where each finds what it expects:

    node1  test_appliance (first: its four data disks still free), then the shares server
    node2  test_storage_appliance (md RAID on the small disks), the shares client, then the VMs
           node (its CAIRN-VD1 is still free: storage used the small disks, shares only mounted)
    all    test_testbed: it cuts links, pulls a disk, resets a node
    all    test_cluster_appliance last (it makes the three one cluster): node3 creates it, node1
           and node2 join with what the modules before left on them (pool tank on node1, vmtank on
           node2; both have a file user alice with id 10000: node2's join is refused listing
           them, and goes through once node2's alice is deleted), then pulls node3's plug

Each module still asserts everything it did on an appliance of its own; what it leaves on a node
(pools, arrays, users, a reboot) is nothing a later module on that node looks at. `launcher`
remains for a module that needs an appliance of its own.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "qemu-testbed"))

from cairn_testbed import accel as accel_module  # noqa: E402
from cairn_testbed import testbed as testbed_module  # noqa: E402
from cairn_testbed.machine import DataDisk, Machine, MachineSpec, PortForward  # noqa: E402
from cairn_testbed.run import PASSWORD_PATTERN, newest_manifest, wait_until_ready  # noqa: E402
from cairn.devstack import free_port  # noqa: E402
from support import ARTIFACTS  # noqa: E402
from timing import record_phase  # noqa: E402

BOOT_TIMEOUT = 600

# Every node of the shared testbed has MachineSpec's four data disks (two virtio, NVMe, SATA) and
# seven small virtio disks for md RAID (small, so resyncs stay short under TCG).
SMALL_DISKS = [f"CAIRN-SM{i}" for i in range(1, 8)]
SHARED_DISKS = [DataDisk("virtio", "CAIRN-VD1"), DataDisk("virtio", "CAIRN-VD2"), DataDisk("nvme", "CAIRN-NVME1"),
                DataDisk("sata", "CAIRN-SATA1", model="CAIRN SATA DISK")] + \
               [DataDisk("virtio", serial, size_mib=128) for serial in SMALL_DISKS]
SHARED_NODES = 3
FIRST_BOOT = (0, 1)     # node1 and node2 at once; node3 only for test_testbed (no idle appliance meanwhile)
# Modules in this order (the rest of the suite runs first): see the module docstring.
MODULE_ORDER = ["test_appliance.py", "test_storage_appliance.py", "test_shares_appliance.py",
                "test_vms_appliance.py", "test_testbed.py", "test_cluster_appliance.py"]


@dataclass
class Appliance:
    machine: Machine
    https_port: int
    ssh_port: int
    dir: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def succeed(self, command: str, timeout: float = 120) -> str:
        result = self.machine.ssh(self.ssh_port, command, timeout=timeout)
        assert result.returncode == 0, f"`{command}` failed ({result.returncode}): {result.stderr.strip()}"
        return result.stdout

    def ca_file(self) -> str:
        path = self.dir / "appliance-ca.pem"
        path.write_text(self.succeed("cat /var/lib/cairn/tls/ca.pem"))
        return str(path)

    def console_password(self) -> str:
        matches = re.findall(PASSWORD_PATTERN, self.machine.serial_text())
        assert matches, "the admin password was not shown on the console"
        return matches[-1]

    def api(self, password: str | None = None) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.verify = self.ca_file()
        reply = session.post(self.url + "/api/v1/auth/login",
                             json={"username": "admin", "password": password or self.console_password()},
                             timeout=60)
        reply.raise_for_status()
        session.headers["Authorization"] = "Bearer " + reply.json()["token"]
        return session

    def wait_ready(self) -> dict:
        seen = wait_until_ready(self.machine, self.https_port, self.ssh_port, BOOT_TIMEOUT)
        assert "console" in seen and "ssh" in seen, f"appliance not ready: {seen}"
        return seen


def boot(base: Path, name: str, data_disks: list | None = None) -> Appliance:
    manifest_path = newest_manifest()
    assert manifest_path is not None, "no appliance image under build/: `make image` builds one"
    manifest = json.loads(manifest_path.read_text())
    image = manifest_path.parent / manifest["qcow2"]
    https_port, ssh_port = free_port(), free_port()
    kernel = image.with_name(manifest["vmlinuz"]) if manifest.get("vmlinuz") else None
    chosen = accel_module.choose("qemu-system-x86_64", kernel, REPO / "build" / "cache", "auto")
    extra = {"data_disks": data_disks} if data_disks is not None else {}
    spec = MachineSpec(name=name, image=image, run_dir=base / name, mgmt_restrict=True,
                       forwards=[PortForward(https_port, 443), PortForward(ssh_port, 22)], **extra)
    machine = Machine(spec, chosen, log=lambda message: print(f"[{name}] {message}"))
    machine.prepare(manifest.get("inputs"))
    started = time.monotonic()
    machine.start()
    appliance = Appliance(machine, https_port, ssh_port, base)
    try:
        seen = appliance.wait_ready()
    except BaseException:
        # A boot that failed (a kernel panic under TCG has been seen) must not leave QEMU spinning
        # on the 2 cores for the rest of the suite; its serial log is kept for the report.
        keep = ARTIFACTS / "e2e"
        keep.mkdir(parents=True, exist_ok=True)
        if machine.spec.serial_log.exists():
            shutil.copy(machine.spec.serial_log, keep / f"{name}-failed-boot-serial.log")
        machine.kill()
        raise
    print(f"[{name}] {chosen.name}: SSH after {seen['ssh']:.0f} s, console after {seen['console']:.0f} s "
          f"({time.monotonic() - started:.0f} s wall)")
    return appliance


def pytest_collection_modifyitems(session, config, items):
    """The e2e modules after the rest of the suite, in MODULE_ORDER (a module not listed there
    before test_testbed, whose faults come last but for the cluster module); each module's tests
    keep their order."""
    here = Path(__file__).parent

    def rank(item) -> tuple[int, int]:
        if item.path.parent != here:
            return (0, 0)
        if item.path.name in MODULE_ORDER[-2:]:
            return (2, MODULE_ORDER.index(item.path.name))
        return (1, MODULE_ORDER.index(item.path.name) if item.path.name in MODULE_ORDER else len(MODULE_ORDER))
    items.sort(key=rank)     # stable


@dataclass
class Nodes:
    """Some nodes of the shared testbed, shaped like a Testbed for the module that uses them."""
    nodes: list
    network: object
    inner_accel: str
    testbed: object

    def collect_logs(self, dest: Path) -> None:
        self.testbed.collect_logs(dest)


def appliance_of(node) -> Appliance:
    """A testbed node seen through the Appliance helper (requests, the console password)."""
    return Appliance(node.machine, node.https_port, node.ssh_port, node.machine.spec.run_dir)


class SharedTestbed:
    """The run's testbed; each node is booted when a module first asks for it (FIRST_BOOT
    together, the rest later), and every node stays up until the end of the run."""

    def __init__(self, testbed) -> None:
        self.testbed = testbed
        self.booted: set[int] = set()
        self.failed: BaseException | None = None

    def up(self, *indices: int) -> list:
        first = set(FIRST_BOOT) if not self.booted else set()
        wanted = sorted((set(indices) | first) - self.booted)
        if wanted and self.failed is not None:
            raise self.failed       # a boot already failed in this run: don't spend another 10 minutes
        if wanted:
            nodes = [self.testbed.nodes[i] for i in wanted]
            started = time.monotonic()
            try:
                self.testbed.start(timeout=BOOT_TIMEOUT + 300, nodes=nodes)
            except BaseException as error:
                self.failed = error
                self.testbed.collect_logs(ARTIFACTS / "e2e-testbed-boot")
                for node in nodes:
                    node.machine.kill()
                raise
            self.booted |= set(wanted)
            record_phase(f"e2e: booting {' + '.join(n.name for n in nodes)} (at once)", time.monotonic() - started)
        return [self.testbed.nodes[i] for i in indices]


@pytest.fixture(scope="session")
def shared_testbed(tmp_path_factory, request):
    """The testbed of the run (SHARED_NODES appliances, booted as modules ask: see testbed_nodes)."""
    shared = SharedTestbed(testbed_module.Testbed.create(SHARED_NODES, tmp_path_factory.mktemp("e2e-testbed"),
                                                         data_disks=SHARED_DISKS))
    yield shared
    if request.session.testsfailed and shared.booted:
        shared.testbed.collect_logs(ARTIFACTS / "e2e-testbed")
    shared.testbed.stop()


@pytest.fixture(scope="session")
def testbed_nodes(shared_testbed):
    """testbed_nodes(1): node2 of the shared testbed (booted if it isn't yet), shaped like a
    Testbed (nodes, network, inner_accel, collect_logs); asked for all nodes, the Testbed itself."""
    def pick(*indices: int):
        nodes = shared_testbed.up(*indices)
        testbed = shared_testbed.testbed
        if list(indices) == list(range(len(testbed.nodes))):
            return testbed
        return Nodes(nodes, testbed.network, testbed.inner_accel, testbed)
    return pick


@pytest.fixture(scope="session")
def as_appliance():
    """as_appliance(node): a testbed node seen through the Appliance helper."""
    return appliance_of


@pytest.fixture(scope="session")
def launcher():
    """boot(base, name, data_disks=None) for test modules that need an appliance of their own."""
    return boot


@pytest.fixture(scope="module")
def appliance(testbed_nodes):
    """node1 of the shared testbed (its serial log is kept with the testbed's when a test fails)."""
    return appliance_of(testbed_nodes(0).nodes[0])
