"""End-to-end fixtures: real appliances booted from the built image by qemu-testbed/."""

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
from cairn_testbed.machine import Machine, MachineSpec, PortForward  # noqa: E402
from cairn_testbed.run import PASSWORD_PATTERN, newest_manifest, wait_until_ready  # noqa: E402
from cairn.devstack import free_port  # noqa: E402
from support import ARTIFACTS  # noqa: E402

BOOT_TIMEOUT = 600


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


@pytest.fixture(scope="session")
def launcher():
    """boot(base, name, data_disks=None) for test modules that need an appliance of their own."""
    return boot


@pytest.fixture(scope="module")
def appliance(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("appliance")
    running = boot(base, "cairn-e2e")
    yield running
    if request.session.testsfailed:
        keep = ARTIFACTS / "e2e"
        keep.mkdir(parents=True, exist_ok=True)
        for log in (running.machine.spec.serial_log, running.machine.spec.serial_log.with_name("serial.log.old")):
            if log.exists():
                shutil.copy(log, keep / f"{running.machine.spec.name}-{log.name}")
    if not running.machine.powerdown(timeout=120):
        running.machine.kill()
