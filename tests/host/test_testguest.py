"""The tiny test guest (build/guest/cairn-testguest.img, image/guest/README.md) boots by itself under
QEMU TCG with SeaBIOS, shows its heartbeat on the serial console and over HTTP, keeps /data across
boots, gets a new boot id per boot, and powers off on the ACPI power button.

Every QEMU runs on a qcow2 overlay (or a copy) in tmp_path, so the artifact is never modified; one
QEMU at a time (two shared cores); every QEMU started here is killed at teardown, pass or fail.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from environment import missing
from support import ARTIFACTS

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "build" / "guest" / "cairn-testguest.img"
BOOT_PARTITION_OFFSET = 1 << 20  # image/guest/build.py: BOOT_START_MIB = 1

pytestmark = missing(files={IMAGE: "the test guest: `make guest`"})

HEARTBEAT = re.compile(r"CAIRN-HEARTBEAT boot=(?P<boot>\S+) n=(?P<n>\d+) up=(?P<up>[\d.]+) ip=(?P<ip>\S+)")
BOOT_TIMEOUT = 90  # seconds; a first heartbeat takes a few seconds here, more on a loaded CI host


@dataclass(frozen=True)
class Beat:
    boot: str
    n: int
    up: float
    ip: str

    @classmethod
    def parse(cls, text: str) -> Beat | None:
        match = HEARTBEAT.search(text)
        if not match:
            return None
        return cls(match["boot"], int(match["n"]), float(match["up"]), match["ip"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Guest:
    """One QEMU (TCG, SeaBIOS) running the test guest from `disk`; files live in `workdir`."""

    def __init__(self, disk: Path, workdir: Path, *, disk_format: str = "qcow2", bus: str = "virtio-blk",
                 machine: str = "pc", memory_mib: int = 64, guest_ip: str = "") -> None:
        self.disk, self.workdir = disk, workdir
        self.disk_format, self.bus, self.machine, self.memory_mib = disk_format, bus, machine, memory_mib
        self.guest_ip = guest_ip  # hostfwd target; empty = QEMU's first DHCP address
        self.console = workdir / "console.log"
        self.qmp_path = workdir / "qmp.sock"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def argv(self) -> list[str]:
        drive = f"file={self.disk},format={self.disk_format},if=none,id=disk0,discard=unmap"
        if self.bus == "virtio-scsi":
            disk_devices = ["-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-hd,bus=scsi0.0,drive=disk0"]
        else:
            disk_devices = ["-device", "virtio-blk-pci,drive=disk0"]
        return [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", self.machine, "-cpu", "max",
            "-smp", "1", "-m", str(self.memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-chardev", f"file,id=serial0,path={self.console}", "-serial", "chardev:serial0",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-drive", drive, *disk_devices,
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-{self.guest_ip}:80",
            "-device", "virtio-net-pci,netdev=net0",
        ]

    def start(self) -> Guest:
        self.port = free_port()
        self.console.unlink(missing_ok=True)
        self.qmp_path.unlink(missing_ok=True)
        with (self.workdir / "qemu.log").open("ab") as log:
            self.started = time.monotonic()
            self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def beats(self) -> list[Beat]:
        return [beat for line in self.console_text().splitlines() if (beat := Beat.parse(line))]

    def wait_for_beats(self, count: int, timeout: float = BOOT_TIMEOUT) -> list[Beat]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            beats = self.beats()
            if len(beats) >= count:
                return beats
            assert self.process.poll() is None, f"QEMU exited ({self.process.returncode}) before {count} beats"
            time.sleep(0.2)
        raise AssertionError(f"{len(self.beats())} heartbeats after {timeout} s, wanted {count}; "
                             f"console tail: {self.console_text()[-800:]!r}")

    def request(self, path: str, body: bytes | None = None, timeout: float = 60) -> tuple[dict, str]:
        """HTTP to the guest's port 80 through the host forward; retried until the guest answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{self.port}{path}", data=body), timeout=10) as reply:
                    return dict(reply.headers), reply.read().decode()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def http_beat(self, timeout: float = 60) -> Beat:
        """The heartbeat over HTTP, once it shows the guest's address (the file lags by up to 1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            _, body = self.request("/heartbeat", timeout=timeout)
            beat = Beat.parse(body)
            assert beat is not None, body
            if beat.ip != "-" or time.monotonic() > deadline:
                return beat
            time.sleep(0.5)

    def shell(self, script: str) -> tuple[int, str]:
        """Run a shell script in the guest through its test-only /cgi-bin/run."""
        headers, output = self.request("/cgi-bin/run", script.encode())
        return int(headers["X-Cairn-Exit"]), output

    def qmp(self, command: str) -> dict:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.qmp_path))
            stream = sock.makefile("rw")
            json.loads(stream.readline())  # greeting
            for execute in ("qmp_capabilities", command):
                stream.write(json.dumps({"execute": execute}) + "\n")
                stream.flush()
                while True:
                    reply = json.loads(stream.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def power_button_and_wait(self, timeout: float) -> float:
        """Press the ACPI power button; return seconds until QEMU exited."""
        pressed = time.monotonic()
        assert "return" in self.qmp("system_powerdown")
        self.process.wait(timeout=timeout)
        return time.monotonic() - pressed


@pytest.fixture
def guests(tmp_path, request):
    """Makes guests; kills every QEMU at teardown and keeps their logs when the test failed."""
    made: list[Guest] = []
    failed_before = request.session.testsfailed

    def make(disk: Path | None = None, **options) -> Guest:
        if disk is None:
            disk = overlay(tmp_path / f"disk{len(made)}.qcow2")
        workdir = tmp_path / f"guest{len(made)}"
        workdir.mkdir()
        guest = Guest(disk, workdir, **options)
        made.append(guest)
        return guest

    yield make
    for guest in made:
        guest.kill()
    if request.session.testsfailed > failed_before:
        keep = ARTIFACTS / "testguest" / request.node.name
        keep.mkdir(parents=True, exist_ok=True)
        for index, guest in enumerate(made):
            for log in (guest.console, guest.workdir / "qemu.log"):
                if log.exists():
                    shutil.copy(log, keep / f"{index}-{log.name}")


def overlay(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(IMAGE), str(path)],
                   check=True)
    return path


def test_console_heartbeat_counter_counts_up_with_one_boot_id(guests):
    guest = guests().start()
    beats = guest.wait_for_beats(3)
    assert [1, 2, 3] == [beat.n for beat in beats[:3]]
    assert 1 == len({beat.boot for beat in beats})
    assert beats[0].up < beats[2].up


def test_http_heartbeat_answers_with_the_console_boot_id(guests):
    guest = guests().start()
    console_boot = guest.wait_for_beats(1)[0].boot
    over_http = guest.http_beat()
    assert console_boot == over_http.boot
    assert "10.0.2.15" == over_http.ip  # from QEMU's user-mode DHCP server


def test_second_boot_of_the_same_disk_has_a_new_boot_id_and_keeps_data(guests, tmp_path):
    disk = overlay(tmp_path / "shared.qcow2")
    token = secrets.token_hex(8)
    first = guests(disk).start()
    first_boot = first.wait_for_beats(1)[0].boot
    assert (0, "") == first.shell(f"echo {token} > /data/marker && sync")
    first.power_button_and_wait(timeout=30)

    second = guests(disk).start()
    second_boot = second.wait_for_beats(1)[0].boot
    assert (0, token + "\n") == second.shell("cat /data/marker")
    assert first_boot != second_boot


def test_acpi_power_button_powers_the_guest_off_within_seconds(guests):
    guest = guests().start()
    guest.wait_for_beats(1)
    seconds = guest.power_button_and_wait(timeout=30)
    assert 0 == guest.process.returncode
    assert "CAIRN-POWEROFF" in guest.console_text()
    assert seconds < 60, f"QEMU took {seconds:.1f} s to exit after the power button"


def test_virtio_scsi_disk_on_q35_mounts_data_and_fstrim_runs(guests):
    guest = guests(bus="virtio-scsi", machine="q35").start()
    guest.wait_for_beats(1)
    code, output = guest.shell("grep ' /data ' /proc/mounts | cut -d' ' -f1-3; fstrim /data")
    assert (0, "/dev/sda2 /data ext4\n") == (code, output)


def test_static_address_from_net_cfg_on_the_boot_partition(guests, tmp_path):
    disk = tmp_path / "static.img"
    shutil.copyfile(IMAGE, disk)
    net_cfg = tmp_path / "net.cfg"
    net_cfg.write_text("IP=10.0.2.50/24\nGW=10.0.2.2\n")
    subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{BOOT_PARTITION_OFFSET}", str(net_cfg), "::net.cfg"],
                   check=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    guest = guests(disk, disk_format="raw", guest_ip="10.0.2.50").start()
    assert "10.0.2.50" == guest.wait_for_beats(1)[0].ip
    assert "10.0.2.50" == guest.http_beat().ip
