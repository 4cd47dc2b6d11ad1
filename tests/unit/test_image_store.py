"""Uploaded images, the pure part: file names, where images live, what a file is — from
`qemu-img info --output=json` captured from qemu-img 7.2 on files made for the purpose (an ISO 9660
image, qcow2 with and without a backing file or external data file, flat and sparse VMDK, VHDX, VHD,
a raw disk and a text file) — and who uses an image. Also cairnctl's streaming upload body."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cairn.cli import images as cli_images
from cairn.compute import image_store, model
from cairn.compute.image_store import Classified, Image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CD001 = b"CD001"
MIB = 1 << 20


def info(name: str) -> str:
    """Captured output: tests/fixtures/compute/qemu-img-<name>.json, or the older tests/fixtures/qemu-img/."""
    new = FIXTURES / "compute" / f"qemu-img-{name}.json"
    return (new if new.exists() else FIXTURES / "qemu-img" / f"{name}.json").read_text()


@pytest.mark.parametrize("name", ["debian-12.5.0-amd64-netinst.iso", "a", "noble+cloud_img.qcow2", "X" * 128,
                                  "-dash-first.img", "win.part.iso"])
def test_good_file_names_pass(name):
    assert image_store.name_problem(name) is None


@pytest.mark.parametrize("name, why", [
    ("", "1-128 of letters"), (".hidden.iso", "not starting with '.'"), ("..", "not starting with '.'"),
    ("a/b.iso", "1-128 of letters"), ("space in.iso", "1-128 of letters"), ("naïve.iso", "1-128 of letters"),
    ("X" * 129, "1-128 of letters"), ("debian.iso.part", "must not end in '.part'"), (None, "1-128 of letters")])
def test_bad_file_names_are_refused_with_the_rule(name, why):
    assert why in image_store.name_problem(name)


def test_images_live_in_the_pools_images_volume_and_uploads_in_a_hidden_part_file():
    assert ("/pools/tank/images", "/pools/tank/images/d.iso", "/pools/tank/images/.d.iso.part",
            "images/tank/d.iso") == (image_store.images_dir("/pools/", "tank"),
                                     image_store.image_path("/pools", "tank", "d.iso"),
                                     image_store.part_path("/pools", "tank", "d.iso"),
                                     image_store.key("tank", "d.iso"))
    # The same pool path the VMs use for <pool>/vms/<name>.
    assert model.vm_dir("/srv/p/", "tank", "web").rsplit("/vms/", 1)[0] == \
        image_store.images_dir("/srv/p/", "tank").rsplit("/images", 1)[0]


def test_an_iso_is_kind_iso_with_its_size_as_virtual_size():
    assert Classified("iso", "raw", MIB) == image_store.classify(info("iso"), MIB, CD001, "install.iso")


def test_a_cut_off_iso_is_refused():
    with pytest.raises(ValueError, match=r"install.iso looks like an ISO image but is cut off \(1000000 bytes"):
        image_store.classify(info("iso"), 1_000_000, CD001, "install.iso")


@pytest.mark.parametrize("fixture, size, expected", [
    ("qcow2", 196616, Classified("disk", "qcow2", 64 * MIB)),
    ("raw", 64 * MIB, Classified("disk", "raw", 64 * MIB)),
    ("vmdk", 65536, Classified("disk", "vmdk", 64 * MIB)),
    ("vdi", 65536, Classified("disk", "vdi", 64 * MIB)),
    ("vhdx", 8 * MIB, Classified("disk", "vhdx", 64 * MIB)),
    ("vpc", 2560, Classified("disk", "vpc", 67125248))])
def test_disk_images_are_kind_disk_with_format_and_virtual_size(fixture, size, expected):
    assert expected == image_store.classify(info(fixture), size, b"\0" * 5, f"disk.{fixture}")


def test_a_text_file_is_refused_saying_what_it_is_and_what_is_kept():
    with pytest.raises(ValueError) as refused:
        image_store.classify(info("text"), 20, b"", "notes.txt")
    assert str(refused.value) == ("notes.txt is not a disk image (20 bytes: a raw disk is whole 512-byte sectors "
                                  "and at least 1 MiB); Cairn keeps ISO images and disk images "
                                  "(raw, qcow2, vmdk, vdi, vhdx, vpc)")


@pytest.mark.parametrize("fixture, reach", [
    ("qcow2-backing-file", "backing file base.raw"),
    ("qcow2-data-file", "data file data.raw"),
    ("vmdk-flat", "extent flat-flat.vmdk")])
def test_images_that_read_other_files_are_refused(fixture, reach):
    with pytest.raises(ValueError, match=f"reads other files \\({reach}\\); upload a standalone image"):
        image_store.classify(info(fixture), 196616, b"", "x")


def test_formats_cairn_does_not_import_and_unreadable_output_are_refused():
    with pytest.raises(ValueError, match="x.luks is a luks image; Cairn imports raw, qcow2"):
        image_store.classify('{"format": "luks", "virtual-size": 1048576}', MIB, b"", "x.luks")
    with pytest.raises(ValueError, match="x: qemu-img could not read it as an image"):
        image_store.classify("qemu-img: Could not open", MIB, b"", "x")
    # An ISO magic in a qcow2 is a qcow2 (only a raw file is taken for an ISO by its magic).
    assert "disk" == image_store.classify(info("qcow2"), 196616, CD001, "x").kind


def vm(name: str, cdrom: str | None = None, imports: tuple[str, ...] = ()) -> model.Vm:
    return model.Vm(name, "u", "node-a", "tank", 1, 512, cdrom=cdrom,
                    disks=tuple(model.Disk(f"disk{i}", 0, path) for i, path in enumerate(imports)))


def test_users_of_an_image_are_the_vms_naming_it():
    iso, disk = "/pools/tank/images/d.iso", "/pools/tank/images/d.qcow2"
    vms = [vm("b", cdrom=iso), vm("a", cdrom=iso), vm("c", cdrom="/elsewhere.iso"), vm("d", imports=(disk,)),
           vm("e", imports=("/x.qcow2", disk))]
    assert (["a", "b"], [], ["d", "e"], []) == (image_store.cdrom_users(iso, vms), image_store.cdrom_users(disk, vms),
                                                image_store.import_sources(vms, disk),
                                                image_store.import_sources(vms, iso))


def test_space_is_checked_against_the_files_size():
    assert image_store.space_problem(10 * MIB, 10 * MIB, "tank") is None
    assert ("pool tank has 10 MiB free; the file needs 11 MiB (make room or upload to another pool)"
            == image_store.space_problem(10 * MIB, 11 * MIB, "tank"))


def test_an_image_record_round_trips_and_ignores_fields_it_does_not_know():
    image = Image("tank", "d.iso", "node-a", "/pools/tank/images/d.iso", MIB, "iso", "raw", MIB, 5.0)
    assert image == Image.from_dict({**image.to_dict(), "later_field": 1})
    assert ["pool", "name", "node", "path", "size", "kind", "format", "virtual_size", "uploaded_at"] == \
        list(image.to_dict())


def test_cairnctl_streams_the_file_in_chunks_with_its_length_and_progress():
    seen = []
    body = cli_images.Upload(io.BytesIO(b"x" * (3 * MIB + 5)), 3 * MIB + 5, seen.append)
    chunks = []
    while chunk := body.read(8 * MIB):
        chunks.append(len(chunk))
    assert (3 * MIB + 5, [MIB, MIB, MIB, 5], [MIB, 2 * MIB, 3 * MIB, 3 * MIB + 5]) == (len(body), chunks, seen[:4])
    assert "\r 50%  1.0 MiB of 2.0 MiB  512.0 KiB/s" == cli_images.progress_line(MIB, 2 * MIB, 2.0)


def test_cairnctl_names_an_image_as_pool_slash_name():
    assert ("tank", "d.iso") == cli_images.split_ref("tank/d.iso")
    with pytest.raises(ValueError, match="POOL/NAME"):
        cli_images.split_ref("d.iso")
