"""One Cairn appliance under QEMU: its description (pure), its files, and its process.

``MachineSpec`` says what the machine is; ``qemu_argv(spec, accel)`` turns it into QEMU's command
line without touching anything (tests can compare argv). ``Machine`` owns the run directory:
qcow2 overlay on the built image, UEFI variable store, data disks, serial log, QMP socket, pid file,
and the testbed's SSH key, whose public half reaches root's authorized_keys through a systemd
credential passed in SMBIOS (systemd's tmpfiles provision.conf writes it; nothing is baked into
the image).

Run directory layout (one appliance):
    instance.json     what the overlay was made from (image path + inputs hash), ports, created time
    base.qcow2        hard link to (or copy of) the image this appliance was made from
    root.qcow2        overlay on base.qcow2 (virtual size grown; first boot grows the root fs into it)
    OVMF_VARS.fd      this machine's UEFI variables
    disk-<serial>.qcow2
    serial.log (+ serial.log.old), qemu.log, qmp.sock, qemu.pid
    ssh/id_ed25519[.pub]
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .accel import Accel
from .qmp import QMP, QMPError

OVMF_CODE_CANDIDATES = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS_CANDIDATES = ("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd")


class TestbedError(RuntimeError):
    """A clear, user-facing problem (missing package, busy port, broken image...)."""


@dataclass(frozen=True)
class DataDisk:
    bus: str  # "virtio", "nvme" or "sata"
    serial: str
    size_mib: int = 8192
    model: str | None = None  # SATA only


@dataclass(frozen=True)
class Nic:
    name: str      # "cluster", "lan"
    netdev: str    # QEMU -netdev without id, e.g. "tap,ifname=tb1a2b0c,script=no,downscript=no"
    mac: str


@dataclass(frozen=True)
class PortForward:
    host_port: int
    guest_port: int
    host_addr: str = "127.0.0.1"


@dataclass
class MachineSpec:
    name: str
    image: Path  # qcow2 (or raw) built by image/build.py; used as the overlay's backing file
    run_dir: Path
    memory_mib: int = 4096
    cpus: int = 2
    root_size_gib: int = 32
    data_disks: list[DataDisk] = field(default_factory=lambda: [
        DataDisk("virtio", "CAIRN-VD1"),
        DataDisk("virtio", "CAIRN-VD2"),
        DataDisk("nvme", "CAIRN-NVME1"),
        DataDisk("sata", "CAIRN-SATA1", model="CAIRN SATA DISK"),
    ])
    forwards: list[PortForward] = field(default_factory=lambda: [
        PortForward(8443, 443), PortForward(2222, 22)])
    mgmt_mac: str = "52:54:00:ca:00:01"
    # restrict: the management NIC reaches nothing but the host port forwards (tests: no traffic
    # may leave for any address outside the testbed, even by a wrong route).
    mgmt_restrict: bool = False
    nics: list["Nic"] = field(default_factory=list)  # NICs after the management NIC (testbed segments)
    lan_nic: str | None = None  # passed as the system credential cairn.lan_nic (name or MAC)
    watchdog: bool = False  # i6300esb, reset on expiry
    # A guest reset (reboot, watchdog, panic=N, QMP system_reset) becomes a cold start of a new
    # QEMU by Machine's supervisor: under TCG, OVMF (2022.11, QEMU 7.2) sometimes spins for minutes
    # or for good in a warm reset; a cold start has never been seen to.
    cold_reset: bool = True
    qemu: str = "qemu-system-x86_64"

    @property
    def overlay(self) -> Path:
        return self.run_dir / "root.qcow2"

    @property
    def serial_log(self) -> Path:
        return self.run_dir / "serial.log"

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / "qmp.sock"

    @property
    def events_socket(self) -> Path:     # a second QMP monitor, read only by Machine's supervisor
        return self.run_dir / "events.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "qemu.pid"

    @property
    def vars_file(self) -> Path:
        return self.run_dir / "OVMF_VARS.fd"

    @property
    def ssh_key(self) -> Path:
        return self.run_dir / "ssh" / "id_ed25519"

    def disk_path(self, disk: DataDisk) -> Path:
        return self.run_dir / f"disk-{disk.serial}.qcow2"


def find_firmware() -> tuple[Path, Path]:
    code = next((Path(p) for p in OVMF_CODE_CANDIDATES if Path(p).exists()), None)
    variables = next((Path(p) for p in OVMF_VARS_CANDIDATES if Path(p).exists()), None)
    if code is None or variables is None:
        raise TestbedError("UEFI firmware (OVMF) not found: install it with `apt-get install ovmf`")
    return code, variables


def qemu_argv(spec: MachineSpec, accel: Accel, firmware_code: Path, ssh_public_key: str | None,
              detached: frozenset[str] = frozenset()) -> list[str]:
    """QEMU's command line for spec (pure: reads nothing, starts nothing); data disks whose serial
    is in `detached` were pulled out and stay out."""
    argv = [
        spec.qemu, "-name", spec.name, "-machine", "q35", *accel.args,
        "-smp", str(spec.cpus), "-m", str(spec.memory_mib),
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={firmware_code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={spec.vars_file}",
        "-display", "none", "-monitor", "none",
        "-chardev", f"file,id=serial0,path={spec.serial_log},append=on",
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
        "-pidfile", str(spec.pidfile),
        "-rtc", "base=utc",
        "-device", "virtio-rng-pci",
        # Root disk first in the boot order: OVMF then boots \EFI\BOOT\BOOTX64.EFI from its ESP.
        "-drive", f"if=none,id=root,file={spec.overlay},format=qcow2,discard=unmap",
        "-device", "virtio-blk-pci,drive=root,bootindex=0,serial=CAIRN-ROOT",
    ]
    sata_ports = 0
    for index, disk in enumerate(spec.data_disks):
        if disk.serial in detached:
            continue
        drive = f"data{index}"
        argv += ["-drive", f"if=none,id={drive},file={spec.disk_path(disk)},format=qcow2,discard=unmap"]
        device_id = f"disk-{disk.serial}"   # QMP device_del addresses the disk by this id
        if disk.bus in ("virtio", "nvme"):
            # Each on a PCIe root port of its own: q35's root bus cannot hot-unplug (detach_disk).
            port = f"rp{index}"
            argv += ["-device", f"pcie-root-port,id={port},chassis={index + 1},slot={index + 1}"]
            model = "virtio-blk-pci" if disk.bus == "virtio" else "nvme"
            argv += ["-device", f"{model},drive={drive},serial={disk.serial},id={device_id},bus={port}"]
        elif disk.bus == "sata":
            if sata_ports == 0:
                argv += ["-device", "ahci,id=ahci0"]
            model = f",model={disk.model}" if disk.model else ""
            argv += ["-device", f"ide-hd,bus=ahci0.{sata_ports},drive={drive},serial={disk.serial}{model},"
                                f"id={device_id}"]
            sata_ports += 1
        else:
            raise ValueError(f"unknown disk bus {disk.bus!r}")
    forwards = "".join(f",hostfwd=tcp:{f.host_addr}:{f.host_port}-:{f.guest_port}" for f in spec.forwards)
    restrict = ",restrict=on" if spec.mgmt_restrict else ""
    argv += ["-netdev", f"user,id=mgmt{restrict}{forwards}",
             "-device", f"virtio-net-pci,netdev=mgmt,mac={spec.mgmt_mac}"]
    for nic in spec.nics:
        # QMP set_link names the NIC's netdev: "net-<name>".
        argv += ["-netdev", f"{nic.netdev},id=net-{nic.name}",
                 "-device", f"virtio-net-pci,netdev=net-{nic.name},mac={nic.mac},id=nic-{nic.name}"]
    credentials = []
    if ssh_public_key:
        encoded = base64.b64encode(ssh_public_key.strip().encode() + b"\n").decode()
        credentials.append(f"io.systemd.credential.binary:ssh.authorized_keys.root={encoded}")
    if spec.lan_nic:
        credentials.append(f"io.systemd.credential:cairn.lan_nic={spec.lan_nic}")
    for credential in credentials:
        argv += ["-smbios", f"type=11,value={credential}"]
    if spec.watchdog:
        argv += ["-device", "i6300esb", "-action", "watchdog=reset"]
    if spec.cold_reset:
        argv += ["-action", "reboot=shutdown", "-qmp", f"unix:{spec.events_socket},server=on,wait=off"]
    return argv


# SHUTDOWN reasons that mean "the machine was reset" (with -action reboot=shutdown QEMU exits).
RESET_REASONS = frozenset({"guest-reset", "host-qmp-system-reset"})


def port_free(port: int, addr: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((addr, port))
        except OSError:
            return False
    return True


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


class Machine:
    """A running (or startable) appliance. All process handling for one QEMU lives here."""

    def __init__(self, spec: MachineSpec, accel: Accel, log=print):
        self.spec = spec
        self.accel = accel
        self.log = log
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.detached: set[str] = set()      # serials of data disks pulled out (stay out on a restart)
        self.on_restart = None               # called after the supervisor started QEMU again
        self.restarts = 0
        self._stopping = False
        self._resetting = False

    # ---- files

    def prepare(self, image_inputs: str | None) -> bool:
        """Create the run directory's files if missing. Returns True if this is a new appliance.

        The overlay's backing file is the machine's own hard link to (or copy of) the image, so a
        rebuilt image (written under a new inode) never breaks an appliance made from the old one.
        """
        spec = self.spec
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        instance = spec.run_dir / "instance.json"
        fresh = not spec.overlay.exists()
        if not fresh:
            recorded = json.loads(instance.read_text()) if instance.exists() else {}
            if recorded.get("image_inputs") not in (None, image_inputs):
                self.log(f"note: the image was rebuilt after this appliance was created ({recorded.get('created')}); "
                         "it keeps running the build it was made from; `make run FRESH=1` starts one from the new image")
        code, variables = find_firmware()
        if not spec.vars_file.exists():
            shutil.copyfile(variables, spec.vars_file)
        if fresh:
            backing = spec.run_dir / f"base.{self._image_format()}"
            backing.unlink(missing_ok=True)
            try:
                os.link(spec.image, backing)
            except OSError:
                shutil.copyfile(spec.image, backing)
            os.chmod(backing, 0o444)
            self._run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", self._image_format(),
                       "-b", backing.name, str(spec.overlay), f"{spec.root_size_gib}G"])
            instance.write_text(json.dumps({
                "image": str(spec.image.resolve()), "image_inputs": image_inputs,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=2) + "\n")
        for disk in spec.data_disks:
            if not spec.disk_path(disk).exists():
                self._run(["qemu-img", "create", "-q", "-f", "qcow2", str(spec.disk_path(disk)),
                           f"{disk.size_mib}M"])
        if not spec.ssh_key.exists():
            spec.ssh_key.parent.mkdir(parents=True, exist_ok=True)
            self._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"cairn-testbed-{spec.name}",
                       "-f", str(spec.ssh_key)])
        return fresh

    def _image_format(self) -> str:
        return "raw" if self.spec.image.suffix in (".img", ".raw") else "qcow2"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise TestbedError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
        return result

    # ---- process

    def start(self) -> None:
        spec = self.spec
        running = pid_alive(spec.pidfile)
        if running:
            raise TestbedError(f"appliance {spec.name} is already running (QEMU pid {running}); "
                               "stop it first (Ctrl-C in its terminal)")
        if spec.serial_log.exists():
            os.replace(spec.serial_log, spec.serial_log.with_name("serial.log.old"))
        self._stopping = False
        self._launch()

    def _launch(self) -> None:
        spec = self.spec
        spec.qmp_socket.unlink(missing_ok=True)
        spec.events_socket.unlink(missing_ok=True)
        code, _ = find_firmware()
        public_key = spec.ssh_key.with_suffix(".pub").read_text() if spec.ssh_key.with_suffix(".pub").exists() else None
        argv = qemu_argv(spec, self.accel, code, public_key, frozenset(self.detached))
        (spec.run_dir / "qemu.argv").write_text("\n".join(argv) + "\n")
        qemu_log = open(spec.run_dir / "qemu.log", "a")
        # Own session: a Ctrl-C in the terminal reaches the launcher only, which shuts the guest down.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qemu_log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.process = process
        self.started_at = time.monotonic()
        self._resetting = False
        time.sleep(0.5)
        if process.poll() is not None:
            raise TestbedError("QEMU exited at once: " + (spec.run_dir / "qemu.log").read_text().strip())
        os.chmod(spec.serial_log, 0o600) if spec.serial_log.exists() else None
        if spec.cold_reset:
            threading.Thread(target=self._supervise, args=(process,), daemon=True,
                             name=f"supervise-{spec.name}").start()

    def _supervise(self, process: subprocess.Popen) -> None:
        """Follow QEMU's events; when the guest reset itself (so QEMU exited), start it again cold."""
        reason = None
        try:
            with QMP(self.spec.events_socket, timeout=30) as qmp:
                while (event := qmp.next_event()) is not None:
                    if event.get("event") == "SHUTDOWN":
                        reason = event.get("data", {}).get("reason")
                        self._resetting = reason in RESET_REASONS and not self._stopping
        except (QMPError, OSError) as error:
            self.log(f"supervisor: QMP events unavailable ({error}); a guest reset will stop QEMU")
        process.wait()
        if self._stopping or process is not self.process or reason not in RESET_REASONS:
            self._resetting = False
            return
        self.restarts += 1
        self.log(f"the guest reset ({reason}): QEMU started again, cold (restart {self.restarts})")
        try:
            self._launch()
            if self.on_restart:
                self.on_restart()
        except (TestbedError, OSError) as error:
            self._resetting = False
            self.log(f"supervisor: could not start QEMU again: {error}")

    def elapsed(self) -> float:
        return time.monotonic() - (self.started_at or time.monotonic())

    def running(self) -> bool:
        """QEMU runs (or is being started again after a guest reset)."""
        return self._resetting or (self.process is not None and self.process.poll() is None)

    def power_cut(self) -> None:
        """Pull the plug: QEMU is gone at once, nothing in the guest gets to react."""
        self._stopping = True
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def serial_text(self) -> str:
        try:
            return self.spec.serial_log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_serial(self, pattern: str, timeout: float) -> re.Match | None:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline and self.running():
            match = regex.search(self.serial_text())
            if match:
                return match
            time.sleep(1)
        return None

    def https_answers(self, port: int) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=context, timeout=5)
            return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer (401, 302, 404...) means the console is serving
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def ssh_argv(self, port: int, command: str | None = None) -> list[str]:
        argv = ["ssh", "-i", str(self.spec.ssh_key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                "-o", "BatchMode=yes", "root@127.0.0.1"]
        return argv + ([command] if command else [])

    def ssh(self, port: int, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command over SSH. A command that outlives `timeout` is exit code 124 (as timeout(1))."""
        argv = self.ssh_argv(port, command)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as expired:
            out = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            return subprocess.CompletedProcess(argv, 124, out, f"timed out after {timeout:g} s")

    def powerdown(self, timeout: float = 120) -> bool:
        """ACPI power button, then wait for QEMU to exit. Returns True if it shut down cleanly."""
        self._stopping = True
        if not self.running():
            return True
        try:
            with QMP(self.spec.qmp_socket) as qmp:
                qmp.execute("system_powerdown")
        except (QMPError, OSError) as error:
            self.log(f"QMP system_powerdown failed: {error}")
        try:
            self.process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        """Hard stop (like pulling the plug): QMP quit, then SIGKILL."""
        self._stopping = True
        if not self.running():
            return
        try:
            with QMP(self.spec.qmp_socket, timeout=3) as qmp:
                qmp.execute("quit")
            self.process.wait(timeout=10)
        except (QMPError, OSError, subprocess.TimeoutExpired):
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
