"""Parsers against output captured on a real machine (tests/fixtures/)."""

from pathlib import Path

import pytest

from cairn.errors import ValidationError
from cairn.storage import disks
from cairn.system import diagnostics, inventory
from cairn.system.files import parse_assignments

FIX = Path(__file__).resolve().parent.parent / "fixtures"


def test_inventory_from_captured_proc():
    inv = inventory.read_inventory(FIX / "proc" / "host1")
    assert (inv.cpus, inv.cpu_model) == (2, "AMD EPYC")
    assert inv.memory_total == 24684092 * 1024
    assert 0 < inv.memory_available <= inv.memory_total
    assert inv.kernel == "6.18.44-fc-v657"
    assert len(inv.boot_id) == 36
    assert inv.uptime > 0
    assert inv.booted_at == 1796617261.0
    assert "uptime" not in inv.to_record() and inv.to_record()["booted_at"] == inv.booted_at


def test_meminfo_units():
    assert inventory.parse_meminfo("MemTotal:  2048 kB\nHugePages_Total:  4\n") == {
        "MemTotal": 2048 * 1024, "HugePages_Total": 4}


def test_df_rows_from_captured_output():
    rows = diagnostics.parse_df((FIX / "df" / "host.txt").read_text())
    root = next(r for r in rows if r["mountpoint"] == "/")
    assert root == {"filesystem": "/dev/vda", "size": 270553174016, "used": 24494792704,
                    "available": 84449501184, "mountpoint": "/"}


def test_lsblk_from_captured_output():
    devices = disks.parse_lsblk((FIX / "lsblk" / "host.json").read_text())
    assert [(d.name, d.type, d.mountpoint, d.rotational) for d in devices] == [
        ("zram0", "disk", None, False), ("vda", "disk", "/", True)]
    assert [d.name for d in disks.disks(devices)] == ["vda"]


def test_lsblk_children_know_their_parent_and_blank_text_is_none():
    nested = ('{"blockdevices": [{"name": "sda", "path": "/dev/sda", "size": 100, "type": "disk", '
              '"model": "QEMU  ", "serial": "S1", "tran": "sata", "rota": "1", "mountpoint": null, '
              '"children": [{"name": "sda1", "size": 50, "type": "part", "model": " ", "serial": null, '
              '"mountpoint": "/boot"}]}]}')
    sda, sda1 = disks.parse_lsblk(nested)
    assert (sda.model, sda.serial, sda.transport, sda.rotational, sda.parent) == ("QEMU", "S1", "sata", True, None)
    assert (sda1.model, sda1.parent, sda1.mountpoint) == (None, "sda", "/boot")
    assert [d.name for d in disks.disks([sda, sda1])] == ["sda"]


def test_ip_addr_from_captured_output():
    links = diagnostics.parse_ip_addr((FIX / "ip" / "host.json").read_text())
    lo = next(link for link in links if link["name"] == "lo")
    assert "127.0.0.1/8" in lo["addresses"]


def test_os_release():
    assert parse_assignments((FIX / "os-release" / "debian12").read_text())["PRETTY_NAME"] == \
        "Debian GNU/Linux 12 (bookworm)"


def test_latency_summary():
    assert diagnostics.latency_summary([3.0, 1.0, 2.0, 100.0]) == {
        "samples": 4, "p50_ms": 2.5, "p99_ms": 100.0, "max_ms": 100.0}


def test_diagnostics_params_checked_all_at_once():
    assert diagnostics.check_params({}) == {"samples": 20}
    with pytest.raises(ValidationError) as caught:
        diagnostics.check_params({"samples": 0, "colour": "red"})
    assert caught.value.fields == {"params.samples": "must be a whole number from 1 to 100000",
                                   "params.colour": "unknown parameter"}
    with pytest.raises(ValidationError):
        diagnostics.check_params({"samples": True})
