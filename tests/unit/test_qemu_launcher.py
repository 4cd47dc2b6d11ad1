"""The QEMU launcher's pure parts: the command line it builds, port picking, image checks."""

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "qemu-testbed"))

from cairn_testbed import run as run_module  # noqa: E402
from cairn_testbed.accel import TCG, Accel  # noqa: E402
from cairn_testbed import machine  # noqa: E402
from cairn_testbed.machine import DataDisk, MachineSpec, qemu_argv  # noqa: E402


def spec(tmp_path, **kw):
    return MachineSpec(name="t", image=tmp_path / "cairn.qcow2", run_dir=tmp_path / "run", **kw)


def test_argv_has_uefi_tcg_four_data_disks_by_serial_and_port_forwards(tmp_path):
    argv = qemu_argv(spec(tmp_path), Accel("tcg", TCG, "probe failed"), Path("/ovmf/CODE.fd"), None)
    text = " ".join(argv)
    assert "-accel tcg,thread=multi -cpu max" in text
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/ovmf/CODE.fd" in text
    assert "virtio-blk-pci,drive=root,bootindex=0,serial=CAIRN-ROOT" in text
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert "virtio-blk-pci,drive=data0,serial=CAIRN-VD1,id=disk-CAIRN-VD1,bus=rp0" in devices
    assert "pcie-root-port,id=rp0,chassis=1,slot=1" in devices      # hot-unpluggable
    assert "virtio-blk-pci,drive=data1,serial=CAIRN-VD2,id=disk-CAIRN-VD2,bus=rp1" in devices
    assert "nvme,drive=data2,serial=CAIRN-NVME1,id=disk-CAIRN-NVME1,bus=rp2" in devices
    assert "ide-hd,bus=ahci0.0,drive=data3,serial=CAIRN-SATA1,model=CAIRN SATA DISK,id=disk-CAIRN-SATA1" in devices
    assert "user,id=mgmt,hostfwd=tcp:127.0.0.1:8443-:443,hostfwd=tcp:127.0.0.1:2222-:22" in argv


def test_testbed_management_nic_is_restricted_to_its_port_forwards(tmp_path):
    argv = qemu_argv(spec(tmp_path, mgmt_restrict=True), Accel("tcg", TCG, ""), Path("/c.fd"), None)
    assert "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:8443-:443,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    assert argv[argv.index("-m") + 1] == "4096" and argv[argv.index("-smp") + 1] == "2"


def test_ssh_key_and_lan_nic_reach_the_guest_as_credentials(tmp_path):
    argv = qemu_argv(spec(tmp_path, lan_nic="52:54:00:00:00:09", watchdog=True),
                     Accel("tcg", TCG, ""), Path("/c.fd"), "ssh-ed25519 AAAA test")
    smbios = [argv[i + 1] for i, a in enumerate(argv) if a == "-smbios"]
    assert smbios[0].startswith("type=11,value=io.systemd.credential.binary:ssh.authorized_keys.root=")
    assert smbios[1] == "type=11,value=io.systemd.credential:cairn.lan_nic=52:54:00:00:00:09"
    assert "i6300esb" in argv


def test_a_guest_reset_stops_qemu_for_a_cold_start_and_a_pulled_disk_stays_out(tmp_path):
    argv = qemu_argv(spec(tmp_path), Accel("tcg", TCG, ""), Path("/c.fd"), None, frozenset({"CAIRN-VD2"}))
    assert argv[argv.index("reboot=shutdown") - 1] == "-action"
    monitors = [argv[i + 1] for i, a in enumerate(argv) if a == "-qmp"]
    assert monitors == [f"unix:{tmp_path}/run/qmp.sock,server=on,wait=off",
                        f"unix:{tmp_path}/run/events.sock,server=on,wait=off"]
    assert "serial.log,append=on" in " ".join(argv)       # the restarted QEMU keeps the log
    serials = " ".join(a for a in argv if a.startswith(("virtio-blk-pci", "nvme", "ide-hd")))
    assert "CAIRN-VD1" in serials and "CAIRN-NVME1" in serials and "CAIRN-VD2" not in serials
    plain = qemu_argv(spec(tmp_path, cold_reset=False), Accel("tcg", TCG, ""), Path("/c.fd"), None)
    assert "reboot=shutdown" not in plain and len([a for a in plain if a == "-qmp"]) == 1


def test_unknown_disk_bus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown disk bus 'scsi'"):
        qemu_argv(spec(tmp_path, data_disks=[DataDisk("scsi", "X")]), Accel("tcg", TCG, ""), Path("/c"), None)


def test_a_busy_port_is_skipped_for_the_next_free_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        chosen = run_module.pick_port(port, set())
    assert chosen > port


def test_missing_or_corrupt_images_are_named(tmp_path):
    assert run_module.image_problem(tmp_path / "none.qcow2") == f"{tmp_path / 'none.qcow2'} does not exist"
    corrupt = tmp_path / "bad.qcow2"
    corrupt.write_bytes(b"not a qcow2 at all" * 100)
    assert "is corrupt" in run_module.image_problem(corrupt)
    elsewhere = tmp_path / "mine.qcow2"
    with pytest.raises(machine.TestbedError, match="`make image` builds one under build/"):
        run_module.usable_image(elsewhere)
