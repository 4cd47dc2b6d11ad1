"""The VM record's pure checks: names, capacity of the node (said in the message), disk sizes,
MACs in QEMU's range and unique in the cluster, numbered clone names, and a clone's new identity."""

from __future__ import annotations

import itertools

import pytest

from cairn.compute import images, model
from cairn.errors import ValidationError

NODE = model.Capacity(cpus=4, memory_mib=8192)


def counter_bytes():
    numbers = itertools.count(1)
    return lambda n: next(numbers).to_bytes(n, "big")


UPLOADED = [images.KnownImage("/pools/tank/images/d.iso", "iso", "node-a", "tank", "d.iso"),
            images.KnownImage("/pools/tank/images/disk.qcow2", "disk", "node-a", "tank", "disk.qcow2")]


def uploaded_only(path: str, kind: str) -> str | None:
    return images.source_problem(path, kind, "node-a", UPLOADED, ())


def check(body: dict, taken_names=(), taken_macs=()) -> model.Vm:
    return model.check_vm(body, node="node-a", capacity=NODE, taken_names=taken_names, taken_macs=taken_macs,
                          new_uuid=lambda: "uuid-1", random_bytes=counter_bytes(), now=100.0,
                          image_problem=uploaded_only)


def test_defaults_give_a_one_disk_one_nic_uefi_vm_with_a_named_cpu():
    vm = check({"name": "web", "pool": "tank"})
    assert vm == model.Vm("web", "uuid-1", "node-a", "tank", 1, 1024, "uefi", "Nehalem",
                          (model.Disk("disk0", 20 << 30),), (model.Nic("52:54:00:00:00:01", "br0"),),
                          None, False, "", {}, 100.0)


def test_every_problem_is_reported_at_once_with_what_the_node_has():
    with pytest.raises(ValidationError) as refused:
        check({"name": "-bad", "pool": "Tank!", "vcpus": 8, "memory_mib": 8000, "firmware": "coreboot",
               "cpu_model": "host", "disks": [{"size": "1.5M"}, {"size": 0}], "nics": [{"mac": "00:11:22:33:44:55"}],
               "cdrom": "debian.iso", "autostart": "yes", "colour": "blue"})
    fields = refused.value.fields
    assert set(fields) == {"name", "pool", "vcpus", "memory_mib", "firmware", "cpu_model", "disks[0].size",
                           "disks[1].size", "nics[0].mac", "cdrom", "autostart", "colour"}
    assert fields["vcpus"] == "node node-a has 4 CPUs; a VM can have at most 4 vCPUs"
    assert fields["memory_mib"] == ("node node-a has 8192 MiB of memory, 7168 MiB of it available to VMs "
                                    "(1024 MiB stay with the node)")
    assert "named models keep VMs movable" in fields["cpu_model"]


def test_names_and_macs_taken_elsewhere_are_refused():
    with pytest.raises(ValidationError) as refused:
        check({"name": "web", "pool": "tank", "nics": [{"mac": "52:54:00:AA:BB:CC"}]}, taken_names=["web"],
              taken_macs=["52:54:00:aa:bb:cc"])
    assert refused.value.fields == {"name": "a VM named 'web' exists already",
                                    "nics[0].mac": "52:54:00:aa:bb:cc is used by another VM"}


def test_new_macs_skip_taken_ones():
    assert model.new_mac(counter_bytes(), {"52:54:00:00:00:01"}) == "52:54:00:00:00:02"


def test_clone_names_are_numbered_past_taken_ones_and_too_long_bases_are_refused():
    assert model.clone_names("web", 3, {"web", "web-2"}) == ["web-1", "web-3", "web-4"]
    with pytest.raises(ValidationError):
        model.clone_names("x" * 62, 1, ())


def test_a_clone_keeps_the_hardware_and_gets_a_new_identity():
    source = check({"name": "web", "pool": "tank", "nics": [{}, {"bridge": "br1"}], "cdrom": "/pools/tank/images/d.iso",
                    "autostart": True})
    copy = model.cloned(source, "web-1", new_uuid=lambda: "uuid-2", macs=["52:54:00:00:00:09", "52:54:00:00:00:0a"],
                        now=200.0, origin={"clone_of": "web"})
    assert (copy.name, copy.uuid, [n.mac for n in copy.nics], [n.bridge for n in copy.nics]) == \
        ("web-1", "uuid-2", ["52:54:00:00:00:09", "52:54:00:00:00:0a"], ["br0", "br1"])
    assert (copy.disks, copy.vcpus, copy.memory_mib, copy.cdrom, copy.autostart, copy.origin) == \
        (source.disks, 1, 1024, None, False, {"clone_of": "web"})
    with pytest.raises(ValueError):
        model.cloned(source, "web-2", new_uuid=lambda: "u", macs=["52:54:00:00:00:0b"], now=0, origin={})


def test_paths_put_each_vm_in_its_own_subvolume_and_snapshots_beside_the_volumes():
    assert model.disk_path("/pools", "tank", "web", "disk0") == "/pools/tank/vms/web/disk0.raw"
    assert model.snapshot_path("/pools/", "tank", "web", "s1") == "/pools/tank/.snapshots/vms/web/s1"


def test_an_edit_is_checked_like_a_new_vm_and_changes_only_what_it_names():
    assert model.check_edit({"memory_mib": 2048, "cdrom": None, "autostart": True}, NODE, "node-a") == {
        "memory_mib": 2048, "cdrom": None, "autostart": True}
    with pytest.raises(ValidationError) as refused:
        model.check_edit({"vcpus": 5, "cdrom": "x.iso", "description": 7, "autostart": "no"}, NODE, "node-a")
    assert set(refused.value.fields) == {"vcpus", "cdrom", "description", "autostart"}
    assert "has 4 CPUs" in refused.value.fields["vcpus"]


def test_images_come_only_from_where_image_problem_allows_each_refusal_naming_its_field():
    vm = check({"name": "web", "pool": "tank", "disks": [{"import": "/pools/tank/images/disk.qcow2"}],
                "cdrom": "/pools/tank/images/d.iso"})
    assert (vm.disks[0].imported_from, vm.cdrom) == ("/pools/tank/images/disk.qcow2", "/pools/tank/images/d.iso")
    with pytest.raises(ValidationError) as refused:
        check({"name": "web", "pool": "tank", "cdrom": "/etc/shadow",
               "disks": [{"import": "/dev/sda"}, {"import": "/pools/tank/images/d.iso"}, {"import": "disk.qcow2"}]})
    assert refused.value.fields == {
        "cdrom": "/etc/shadow is in /etc: system files are never VM images",
        "disks[0].import": "/dev/sda is in /dev: system files are never VM images",
        "disks[1].import": "d.iso is an ISO image for the cdrom, not a disk image to import",
        "disks[2].import": "must be the absolute path of an image file"}
    with pytest.raises(ValidationError) as refused:
        model.check_edit({"cdrom": "/srv/isos/x.iso"}, NODE, "node-a", uploaded_only)
    assert refused.value.fields["cdrom"].startswith("/srv/isos/x.iso is not an uploaded image")
    assert model.check_edit({"cdrom": "/pools/tank/images/d.iso"}, NODE, "node-a", uploaded_only) == {
        "cdrom": "/pools/tank/images/d.iso"}


def test_without_an_image_check_every_path_is_refused():
    with pytest.raises(ValidationError) as refused:
        model.check_vm({"name": "web", "pool": "tank", "cdrom": "/pools/tank/images/d.iso"}, node="node-a",
                       capacity=NODE, taken_names=(), taken_macs=(), new_uuid=lambda: "u",
                       random_bytes=counter_bytes(), now=0.0)
    assert set(refused.value.fields) == {"cdrom"}
