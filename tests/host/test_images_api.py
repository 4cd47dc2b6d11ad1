"""Image uploads through the real stack (cairn-web and cairn-agent processes, a real etcd) into a
btrfs pool on a loop device: a qcow2 and an ISO 9660 image are streamed into the pool's images
volume (made at the first upload, as a subvolume with a volume record) and recorded with kind,
format and sizes; a text file and a qcow2 with a backing file are refused with the reason and
leave no .part behind; bad names, unknown pools, another node's pool, a taken name, a body that
is not octet-stream, too little space, a broken-off body and an upload of a name already being
uploaded are refused; delete is refused while a VM has the ISO as its cdrom or is being made from
a disk image, and a record whose pool is gone can still be deleted; an uploaded qcow2 becomes a
VM's raw disk; and cairnctl image upload/list/delete.

No libvirtd: the VMs that use images are on a far node (records written into the store; its jobs
stay queued), and the disk made from an image is made by the VM backend with a hypervisor that
only records what it is given."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import ssl
import struct
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cairn.cli.storage import human
from cairn.compute import model
from cairn.compute.vms import Compute
from cairn.jobs import registry
from cairn.jobs.service import JobService
from cairn.runner import Runner
from cairn.storage import model as storage_model
from support import finish_job, storage_stack, wait_until

MiB = 1 << 20
GiB = 1 << 30
FAR = "node-far"
OCTETS = {"Content-Type": "application/octet-stream"}


def tiny_iso(label: str, sectors: int = 512) -> bytes:
    """A small valid ISO 9660 image (blkid: TYPE="iso9660"): primary volume descriptor at sector 16
    with an empty root directory, terminator, path tables; `sectors` of 2048 bytes in all."""
    sector = 2048

    def both16(value: int) -> bytes:
        return struct.pack("<H", value) + struct.pack(">H", value)

    def both32(value: int) -> bytes:
        return struct.pack("<I", value) + struct.pack(">I", value)

    def directory(extent: int, ident: bytes) -> bytes:
        body = bytes(1) + both32(extent) + both32(sector) + bytes(7) + bytes([2, 0, 0]) + both16(1) \
            + bytes([len(ident)]) + ident
        record = bytes([len(body) + 1]) + body
        return record + (b"\0" if len(record) % 2 else b"")

    pvd = bytearray(sector)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[8:40] = b"LINUX".ljust(32)
    pvd[40:72] = label.encode().ljust(32)
    pvd[80:88] = both32(sectors)
    pvd[120:132] = both16(1) + both16(1) + both16(sector)
    pvd[132:140] = both32(10)
    pvd[140:144], pvd[148:152] = struct.pack("<I", 18), struct.pack(">I", 19)
    pvd[156:190] = directory(20, b"\0")
    for start in (190, 318, 446, 574):
        pvd[start:start + 128] = b" " * 128
    for start in (702, 739, 776):
        pvd[start:start + 37] = b" " * 37
    for start in (813, 830, 847, 864):
        pvd[start:start + 17] = b"0" * 16 + b"\0"
    pvd[881] = 1
    terminator = b"\xffCD001\x01".ljust(sector, b"\0")
    path_l = (bytes([1, 0]) + struct.pack("<I", 20) + struct.pack("<H", 1) + b"\0\0").ljust(sector, b"\0")
    path_m = (bytes([1, 0]) + struct.pack(">I", 20) + struct.pack(">H", 1) + b"\0\0").ljust(sector, b"\0")
    root = (directory(20, b"\0") + directory(20, b"\1")).ljust(sector, b"\0")
    return (bytes(16 * sector) + bytes(pvd) + terminator + path_l + path_m + root).ljust(sectors * sector, b"\0")


@pytest.fixture(scope="module")
def rig(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("images")
    with storage_stack(base, 1, 512, keep_logs=lambda: request.session.testsfailed) as (stack, loops):
        session = stack.session()
        job = finish_job(session, stack, "POST", "/pools", json={"name": "tank", "node": stack.node,
                                                                 "disks": loops.ids(), "profile": "single"})
        assert job["state"] == "success", job
        store = stack.store()
        store.put(f"nodes/{FAR}", {"name": FAR, "heartbeat_at": time.time(), "agent_version": "test", "cpus": 4,
                                   "memory_total": 8 * GiB})
        store.put("pools/far", storage_model.Pool("far", FAR, "single", "dup", "none", ("disk-far",),
                                                  state="online").to_dict())
        files = base / "files"
        files.mkdir()
        raw = files / "guest.raw"                    # 2 MiB: a pattern, then zeros
        raw.write_bytes((b"cairn image " * 87382)[:MiB] + bytes(MiB))
        Runner().run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(files / "guest.qcow2")])
        Runner().run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(raw), "-F", "raw",
                      str(files / "overlay.qcow2")])
        (files / "install.iso").write_bytes(tiny_iso("CAIRN_TEST"))
        (files / "notes.txt").write_text("hello, not an image\n")

        def call(method, path, **kwargs):
            return session.request(method, stack.url + "/api/v1" + path, timeout=60, **kwargs)
        yield stack, call, files


def images_dir(stack) -> Path:
    return stack.dir / "pools" / "tank" / "images"


def upload(call, files: Path, name: str, as_name: str | None = None, **params):
    with open(files / name, "rb") as handle:
        return call("PUT", f"/images/tank/{as_name or name}", data=handle, headers=OCTETS, params=params)


def raw_put(stack, path: str, length: int, send: bytes, read_reply: bool = True):
    """A PUT with Content-Length `length` that sends only `send` (http.client, to break a body off).
    Returns (status, json) when read_reply, else the open connection."""
    token = stack.session().headers["Authorization"]
    url = urlparse(stack.url)
    connection = http.client.HTTPSConnection(url.hostname, url.port, timeout=30,
                                             context=ssl.create_default_context(cafile=stack.ca))
    connection.putrequest("PUT", "/api/v1" + path)
    for header, value in (("Authorization", token), ("Content-Type", "application/octet-stream"),
                          ("Content-Length", str(length))):
        connection.putheader(header, value)
    connection.endheaders()
    connection.send(send)
    if not read_reply:
        return connection
    reply = connection.getresponse()
    body = json.loads(reply.read())
    connection.close()
    return reply.status, body


def test_a_qcow2_and_an_iso_are_streamed_into_the_images_volume_and_recorded(rig):
    stack, call, files = rig
    disk = upload(call, files, "guest.qcow2")
    assert disk.status_code == 201, disk.text
    iso = upload(call, files, "install.iso", "debian-netinst.iso")
    assert iso.status_code == 201, iso.text
    here = images_dir(stack)
    expected = [
        {"pool": "tank", "name": "debian-netinst.iso", "node": stack.node, "path": str(here / "debian-netinst.iso"),
         "size": MiB, "kind": "iso", "format": "raw", "virtual_size": MiB, "used_by": []},
        {"pool": "tank", "name": "guest.qcow2", "node": stack.node, "path": str(here / "guest.qcow2"),
         "size": (files / "guest.qcow2").stat().st_size, "kind": "disk", "format": "qcow2",
         "virtual_size": 2 * MiB, "used_by": []}]
    listed = call("GET", "/images").json()["images"]
    assert expected == [{k: v for k, v in i.items() if k != "uploaded_at"} for i in listed]
    assert all(abs(i["uploaded_at"] - time.time()) < 60 for i in listed)
    assert [expected[0]] == [{k: v for k, v in i.items() if k != "uploaded_at"}
                             for i in call("GET", "/images", params={"kind": "iso"}).json()["images"]]
    assert listed[1] == call("GET", "/images/tank/guest.qcow2").json()
    assert (here / "guest.qcow2").read_bytes() == (files / "guest.qcow2").read_bytes()
    assert (here / "debian-netinst.iso").read_bytes() == (files / "install.iso").read_bytes()
    assert ["debian-netinst.iso", "guest.qcow2"] == sorted(os.listdir(here))       # no .part left
    # The images volume: a subvolume with a volume record, as volumes are.
    assert Runner().run(["btrfs", "subvolume", "show", str(here)], check=False).ok
    assert "images" in [v["name"] for v in call("GET", "/pools/tank/volumes").json()["volumes"]]
    # An ISO is not a disk to import: the VM API says so, from the same check.
    refused = call("POST", "/vms", json={"name": "imt-iso-disk", "pool": "tank",
                                         "disks": [{"import": expected[0]["path"]}]})
    assert refused.status_code == 400 and "is an ISO image" in refused.json()["error"]["fields"]["disks[0].import"]


def test_a_file_that_is_no_image_is_refused_with_the_reason_and_leaves_nothing(rig):
    stack, call, files = rig
    text = upload(call, files, "notes.txt")
    assert text.status_code == 400
    assert text.json()["error"]["fields"]["body"] == (
        "notes.txt is not a disk image (20 bytes: a raw disk is whole 512-byte sectors and at least 1 MiB); "
        "Cairn keeps ISO images and disk images (raw, qcow2, vmdk, vdi, vhdx, vpc)")
    overlay = upload(call, files, "overlay.qcow2")
    assert overlay.status_code == 400
    assert f"reads other files (backing file {files / 'guest.raw'})" in overlay.json()["error"]["fields"]["body"]
    assert ["debian-netinst.iso", "guest.qcow2"] == sorted(os.listdir(images_dir(stack)))
    assert [404, 404] == [call("GET", f"/images/tank/{n}").status_code for n in ("notes.txt", "overlay.qcow2")]


def test_bad_requests_are_refused_before_anything_is_written(rig):
    stack, call, files = rig
    answers = {
        "bad name": upload(call, files, "notes.txt", ".hidden"),
        "part name": upload(call, files, "notes.txt", "x.iso.part"),
        "unknown pool": call("PUT", "/images/nope/x.iso", data=b"x", headers=OCTETS),
        "far pool": call("PUT", "/images/far/x.iso", data=b"x", headers=OCTETS),
        "json": call("PUT", "/images/tank/x.iso", json={"file": "x"}),
        "taken": upload(call, files, "install.iso", "debian-netinst.iso"),
    }
    assert {"bad name": 400, "part name": 400, "unknown pool": 404, "far pool": 409, "json": 400, "taken": 409} \
        == {what: reply.status_code for what, reply in answers.items()}
    assert "not starting with '.'" in answers["bad name"].json()["error"]["fields"]["name"]
    assert "pool far is on node node-far: upload to it through the console or API of node-far" in \
        answers["far pool"].json()["error"]["message"]
    assert "must be application/octet-stream" in answers["json"].json()["error"]["fields"]["Content-Type"]
    assert "has an image named debian-netinst.iso already" in answers["taken"].json()["error"]["message"]
    status, body = raw_put(stack, "/images/tank/huge.iso", 1 << 40, b"x" * 1000)
    assert 409 == status and "the file needs 1048576 MiB" in body["error"]["message"], body
    assert ["debian-netinst.iso", "guest.qcow2"] == sorted(os.listdir(images_dir(stack)))
    assert 404 == call("GET", "/images/tank/x.iso").status_code


def test_overwrite_replaces_an_image_in_place(rig):
    stack, call, files = rig
    iso = files / "bigger.iso"
    iso.write_bytes(tiny_iso("BIGGER", 1024))
    replaced = upload(call, files, "bigger.iso", "debian-netinst.iso", overwrite="true")
    assert (200, 2 * MiB) == (replaced.status_code, replaced.json()["size"])
    assert (images_dir(stack) / "debian-netinst.iso").read_bytes() == iso.read_bytes()
    assert 2 * MiB == call("GET", "/images/tank/debian-netinst.iso").json()["virtual_size"]


def test_a_body_that_breaks_off_is_written_as_it_arrives_then_removed(rig):
    stack, call, files = rig
    part = images_dir(stack) / ".cut.qcow2.part"
    connection = raw_put(stack, "/images/tank/cut.qcow2", 8 * MiB, os.urandom(3 * MiB), read_reply=False)
    # Streamed: the bytes reach the pool while the body is still incomplete (nothing waits for all of it).
    wait_until(lambda: part.exists() and part.stat().st_size >= 2 * MiB, 30, "the upload's .part to grow")
    connection.sock.close()
    connection.close()
    wait_until(lambda: not part.exists(), 30, "the broken-off upload's .part to go")
    assert 404 == call("GET", "/images/tank/cut.qcow2").status_code
    assert ["debian-netinst.iso", "guest.qcow2"] == sorted(os.listdir(images_dir(stack)))


def test_a_second_upload_of_a_name_being_uploaded_is_refused_and_a_stale_part_is_taken_over(rig):
    stack, call, files = rig
    part = images_dir(stack) / ".busy.qcow2.part"
    with open(part, "wb") as held:                   # as the upload running in another web worker holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = upload(call, files, "guest.qcow2", "busy.qcow2")
    assert busy.status_code == 409 and "busy.qcow2 is being uploaded to pool tank right now" in \
        busy.json()["error"]["message"]
    assert part.exists()                             # the other upload's file is left alone
    # Nobody holds it now (its process died): the next upload takes it over.
    assert 201 == upload(call, files, "guest.qcow2", "busy.qcow2").status_code
    assert not part.exists()
    assert 200 == call("DELETE", "/images/tank/busy.qcow2").status_code


def test_delete_is_refused_while_a_vm_uses_the_image_then_removes_file_and_record(rig):
    stack, call, files = rig
    iso_path = str(images_dir(stack) / "debian-netinst.iso")
    disk_path = str(images_dir(stack) / "guest.qcow2")
    # The VMs are on the far node so that their jobs stay queued; the API takes only images of the
    # VM's own node, so their records go straight into the store (what is tested here is the image side).
    store = stack.store()
    for vm in (model.Vm("imt-cd", "00000000-0000-4000-8000-0000000000c1", FAR, "far", 1, 128,
                        disks=(model.Disk("disk0", 16 * MiB),), nics=(model.Nic("52:54:00:00:cd:01"),),
                        cdrom=iso_path),
               model.Vm("imt-import", "00000000-0000-4000-8000-0000000000c2", FAR, "far", 1, 128,
                        disks=(model.Disk("disk0", 0, disk_path),), nics=(model.Nic("52:54:00:00:cd:02"),))):
        store.put(f"vms/{vm.name}", vm.to_dict())
    registry.load_all()
    JobService(store).submit("vm.create", FAR, {"vm": "imt-import"})
    refused = call("POST", "/vms", json={"name": "imt-far", "pool": "far", "cdrom": iso_path})
    assert refused.status_code == 400 and refused.json()["error"]["fields"]["cdrom"] == (
        f"image debian-netinst.iso is in pool tank on node {stack.node}; this VM runs on {FAR}: "
        f"upload the image to a pool of {FAR}")
    assert ["imt-cd"] == call("GET", "/images/tank/debian-netinst.iso").json()["used_by"]
    in_use = call("DELETE", "/images/tank/debian-netinst.iso")
    assert (409, "image debian-netinst.iso is the ISO of VM imt-cd: eject it there first (the VM's settings, or "
                 "cairnctl vm set NAME --eject)") == (in_use.status_code, in_use.json()["error"]["message"])
    being_made = call("DELETE", "/images/tank/guest.qcow2")      # imt-import's vm.create job is queued on node-far
    assert (409, "VM imt-import is being made from image guest.qcow2: wait until its job has ended") == \
        (being_made.status_code, being_made.json()["error"]["message"])
    assert os.path.exists(iso_path) and os.path.exists(disk_path)
    assert 202 == call("PATCH", "/vms/imt-cd", json={"cdrom": None}).status_code
    deleted = call("DELETE", "/images/tank/debian-netinst.iso")
    assert (200, "image debian-netinst.iso deleted from pool tank") == (deleted.status_code, deleted.json()["message"])
    assert not os.path.exists(iso_path)
    assert [404, 404] == [call(m, "/images/tank/debian-netinst.iso").status_code for m in ("GET", "DELETE")]
    assert ["guest.qcow2"] == [i["name"] for i in call("GET", "/images").json()["images"]]
    # The record of an image whose pool was destroyed (the file went with it) can still be removed.
    stack.store().put("images/gone/old.iso", {"pool": "gone", "name": "old.iso", "node": stack.node,
                                              "path": "/pools/gone/images/old.iso", "size": MiB, "kind": "iso",
                                              "format": "raw", "virtual_size": MiB, "uploaded_at": 1.0})
    assert (200, 404) == (call("DELETE", "/images/gone/old.iso").status_code,
                          call("GET", "/images/gone/old.iso").status_code)


class RecordingHypervisor:
    """Stands in for libvirt: keeps the domain XML it is given."""

    def __init__(self) -> None:
        self.defined: list[str] = []

    def define(self, xml: str) -> None:
        self.defined.append(xml)

    def set_autostart(self, name: str, flag: bool) -> None:
        pass


def test_an_uploaded_qcow2_becomes_a_vms_thin_raw_disk(rig):
    stack, call, files = rig
    image = call("GET", "/images/tank/guest.qcow2").json()
    hypervisor = RecordingHypervisor()
    backend = Compute(Runner(), stack.store(), stack.node, str(stack.dir / "pools"), hypervisor, "tcg",
                      str(stack.dir / "vm-logs"))
    vm = model.Vm("imt-from-image", "00000000-0000-4000-8000-0000000000aa", stack.node, "tank", 1, 128,
                  disks=(model.Disk("disk0", 4 * MiB, image["path"]),), nics=(model.Nic("52:54:00:00:aa:01"),))
    backend.create(vm)            # what the vm.create job does on the VM's node (the disk's size is given)
    disk = stack.dir / "pools" / "tank" / "vms" / "imt-from-image" / "disk0.raw"
    assert disk.read_bytes() == (files / "guest.raw").read_bytes() + bytes(2 * MiB)
    assert disk.stat().st_blocks * 512 < 2 * MiB                    # thin: the zeros are holes
    assert len(hypervisor.defined) == 1 and str(disk) in hypervisor.defined[0]
    Runner().run(["btrfs", "subvolume", "delete", str(disk.parent)])


def test_cairnctl_uploads_lists_and_deletes_images(rig, tmp_path):
    stack, call, files = rig
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cli-config")}

    def ctl(*args, check=True, input=None):
        return Runner().run([sys.executable, "-m", "cairn.cli.main", *args], env=env, input=input,
                            check=check, timeout=120)

    ctl("--url", stack.url, "--ca", stack.ca, "login", "--password-stdin", input=stack.password + "\n")
    qcow2 = files / "guest.qcow2"
    uploaded = ctl("image", "upload", str(qcow2), "--pool", "tank", "--name", "cli.qcow2")
    path = images_dir(stack) / "cli.qcow2"
    assert f"uploaded tank/cli.qcow2: disk (qcow2, {human(qcow2.stat().st_size)}) at {path} on {stack.node}\n" \
        == uploaded.stdout
    assert "" == uploaded.stderr                    # no progress when stderr is not a terminal
    assert path.read_bytes() == qcow2.read_bytes()
    listed = [line.split() for line in ctl("image", "list", "--kind", "disk").stdout.splitlines()]
    assert [["POOL", "NAME", "KIND", "FORMAT", "SIZE", "VIRTUAL", "USED", "BY", "PATH"],
            ["tank", "cli.qcow2", "disk", "qcow2", *human(qcow2.stat().st_size).split(), "2.0", "MiB", "-", str(path)],
            ["tank", "guest.qcow2"]] == listed[:2] + [listed[2][:2]]
    taken = ctl("image", "upload", str(qcow2), "--pool", "tank", "--name", "cli.qcow2", check=False)
    assert (1, "error (409): pool tank has an image named cli.qcow2 already: delete it first, or pass "
               "--overwrite\n") == (taken.returncode, taken.stderr)
    assert 0 == ctl("image", "upload", str(files / "install.iso"), "--pool", "tank", "--name", "cli.qcow2",
                    "--overwrite").returncode
    assert "iso" == json.loads(ctl("--json", "image", "list").stdout)[0]["kind"]
    refused = ctl("image", "upload", str(files / "notes.txt"), "--pool", "tank", check=False)
    assert (1, "error (400): body: notes.txt is not a disk image") == (refused.returncode, refused.stderr[:48])
    far = ctl("image", "upload", str(qcow2), "--pool", "far", check=False)
    assert far.returncode == 1 and "through the console or API of node-far" in far.stderr
    assert "image cli.qcow2 deleted from pool tank\n" == ctl("image", "delete", "tank/cli.qcow2").stdout
    gone = ctl("image", "delete", "tank/cli.qcow2", check=False)
    assert (1, "error (404): no image 'cli.qcow2' in pool 'tank'\n") == (gone.returncode, gone.stderr)
    assert not path.exists()
    missing = ctl("image", "upload", str(files / "nope.iso"), "--pool", "tank", check=False)
    assert (2, f"error: {files / 'nope.iso'}: no such file\n") == (missing.returncode, missing.stderr)


def test_the_images_volume_and_a_pool_with_vms_are_not_deleted_from_under_them(rig):
    stack, call, _ = rig
    assert call("GET", "/images/tank/guest.qcow2").status_code == 200
    volume = call("DELETE", "/pools/tank/volumes/images", params={"confirm": "images"})
    assert volume.status_code == 409, volume.text
    assert volume.json()["error"]["message"].startswith("volume images is in use by image ")
    assert "image guest.qcow2" in volume.json()["error"]["message"]
    pool = call("DELETE", "/pools/tank", params={"confirm": "tank"})
    assert pool.status_code == 409 and "image guest.qcow2" in pool.json()["error"]["message"], pool.text
    # A pool that holds VM disks (the far pool: VMs imt-cd and imt-import) is refused naming them.
    far = call("DELETE", "/pools/far", params={"confirm": "far"})
    assert (409, "pool far holds the disks of VMs imt-cd, imt-import: delete them first") == \
        (far.status_code, far.json()["error"]["message"])
    assert images_dir(stack).joinpath("guest.qcow2").exists()
