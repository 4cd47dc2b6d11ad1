"""Disk image checks on `qemu-img info --output=json` captured from qemu-img 7.2 (raw test guest,
qcow2, vmdk, vdi, and a text file qemu-img calls "raw"), and the size of the imported disk."""

from __future__ import annotations

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
