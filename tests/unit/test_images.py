"""Disk image checks on `qemu-img info --output=json` captured from qemu-img 7.2 (raw test guest,
qcow2, vmdk, vdi, and a text file qemu-img calls "raw"), and the size of the imported disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.compute import images

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "qemu-img"


def info(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def test_disk_images_are_recognised_with_their_virtual_size():
    assert images.check_image(info("qcow2"), 200704, b"", "d.qcow2") == images.ImageInfo("qcow2", 1 << 30)
    assert images.check_image(info("raw"), 64 << 20, b"\0\0\0\0\0", "g.img") == images.ImageInfo("raw", 64 << 20)
    assert images.check_image(info("vmdk"), 65536, b"", "d.vmdk").format == "vmdk"
    assert images.check_image(info("vdi"), 65536, b"", "d.vdi").format == "vdi"


def test_a_file_that_is_no_disk_image_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"notes.txt is not a disk image \(6 bytes"):
        images.check_image(info("text"), 6, b"", "notes.txt")
    with pytest.raises(ValueError, match="is an ISO image .* attach it as the VM's cdrom"):
        images.check_image(info("raw"), 64 << 20, b"CD001", "debian.iso")
    with pytest.raises(ValueError, match="is a luks image"):
        images.check_image('{"format": "luks", "virtual-size": 1048576}', 1 << 20, b"", "x.luks")
    with pytest.raises(ValueError, match="could not read it"):
        images.check_image("not json", 1 << 20, b"", "x")


def test_the_disk_is_the_image_rounded_up_to_mib_or_larger_never_smaller():
    image = images.ImageInfo("qcow2", (10 << 20) + 1)
    assert images.disk_size(image, 0) == 11 << 20
    assert images.disk_size(image, 20 << 20) == 20 << 20
    with pytest.raises(ValueError, match="needs 11 MiB; a disk of 10 MiB would cut it off"):
        images.disk_size(image, 10 << 20)


def test_conversion_makes_a_thin_raw_file_and_paths_cannot_pass_for_options():
    assert images.convert_argv("-x.qcow2", "qcow2", "/p/disk0.raw") == [
        "qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-S", "4k", "--", "-x.qcow2", "/p/disk0.raw"]
    assert images.info_argv("-x") == ["qemu-img", "info", "--output=json", "--", "-x"]


TANK_ISO = images.KnownImage("/pools/tank/images/debian.iso", "iso", "node-a", "tank", "debian.iso")
TANK_DISK = images.KnownImage("/pools/tank/images/guest.qcow2", "disk", "node-a", "tank", "guest.qcow2")
FAR_DISK = images.KnownImage("/pools/far/images/other.qcow2", "disk", "node-b", "far", "other.qcow2")


def source(path, kind="disk", allowed=()):
    return images.source_problem(path, kind, "node-a", [TANK_ISO, TANK_DISK, FAR_DISK], allowed)


def test_uploaded_images_of_the_vms_node_and_files_under_allowed_dirs_are_taken():
    assert source("/pools/tank/images/guest.qcow2") is None
    assert source("/pools/tank/images/debian.iso", "iso") is None
    assert source("/srv/isos/rescue.iso", "iso", allowed=["/srv/isos"]) is None
    assert source("/srv/isos/sub/rescue.iso", "iso", allowed=["/srv/isos/"]) is None


@pytest.mark.parametrize("path, problem", [
    ("/dev/sda", "/dev/sda is in /dev: system files are never VM images"),
    ("/etc/shadow", "/etc/shadow is in /etc: system files are never VM images"),
    ("/proc/self/environ", "/proc/self/environ is in /proc: system files are never VM images"),
    ("/pools/tank/images/../../../etc/shadow", "must be a normalised path (no '..', '.', '//' or trailing '/'): "
                                                "/etc/shadow?"),
    ("/pools/tank/images//guest.qcow2", "must be a normalised path (no '..', '.', '//' or trailing '/'): "
                                        "/pools/tank/images/guest.qcow2?"),
    ("/pools/tank/images/guest.qcow2\n", "must not contain control characters"),
    ("guest.qcow2", "must be the absolute path of an image file"),
    (None, "must be the absolute path of an image file"),
    ("/pools/tank/images/debian.iso", "debian.iso is an ISO image for the cdrom, not a disk image to import"),
    ("/pools/far/images/other.qcow2", "image other.qcow2 is in pool far on node node-b; this VM runs on node-a: "
                                      "upload the image to a pool of node-a"),
    ("/srv/isos", "/srv/isos is not an uploaded image: give the path of a disk image in a pool's images volume on "
                  "node node-a (as GET /api/v1/images lists it) or a file under /srv/isos; other places are allowed "
                  "only through [compute] image_dirs in the node's config"),
])
def test_anything_else_is_refused_saying_why(path, problem):
    assert source(path, allowed=["/srv/isos"]) == problem


def test_on_the_node_a_symlink_out_of_its_place_or_to_no_regular_file_is_refused(tmp_path):
    allowed = tmp_path / "isos"
    allowed.mkdir()
    (allowed / "real.iso").write_bytes(b"x")
    (allowed / "alias.iso").symlink_to(allowed / "real.iso")
    (allowed / "shadow.iso").symlink_to("/etc/shadow")
    (allowed / "escape.iso").symlink_to(tmp_path / "outside.iso")
    (tmp_path / "outside.iso").write_bytes(b"x")
    (allowed / "dir.iso").mkdir()

    def resolved(name):
        return images.resolved_problem(str(allowed / name), [str(allowed)], os.path.realpath, os.stat)
    assert (resolved("real.iso"), resolved("alias.iso")) == (None, None)
    assert resolved("shadow.iso") == f"{allowed}/shadow.iso leads to /etc/shadow, outside {allowed}"
    assert resolved("escape.iso") == f"{allowed}/escape.iso leads to {tmp_path}/outside.iso, outside {allowed}"
    assert resolved("dir.iso") == (f"{allowed}/dir.iso is not a regular file (a device, directory or other "
                                   "special file is never a VM image)")
    assert resolved("gone.iso") == f"{allowed}/gone.iso does not exist on this node"
    (allowed / "null.iso").symlink_to("/dev/null")
    assert resolved("null.iso") == f"{allowed}/null.iso leads to /dev/null, outside {allowed}"
    # An allowed directory that is itself a symlink into a system directory gives nothing either.
    (tmp_path / "etc-link").symlink_to("/etc")
    assert images.resolved_problem(str(tmp_path / "etc-link" / "shadow"), [str(tmp_path / "etc-link")],
                                   os.path.realpath, os.stat) == \
        f"{tmp_path}/etc-link/shadow leads to /etc/shadow, in /etc: system files are never VM images"
