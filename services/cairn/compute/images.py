"""Disk images a VM disk is imported from: what `qemu-img info` says of a file, whether it is a
disk image at all, and the argv that converts it into a VM's raw disk (pure; the job runs them).

Rules:
- Formats taken: raw, qcow2, vmdk, vdi, vhdx and vpc (VHD) — what hypervisors and cloud images
  ship. qemu-img calls any file it does not recognise "raw", so a "raw" file must also look like a
  disk: a whole number of 512-byte sectors and at least 1 MiB; an ISO 9660 image (CD001 at byte
  32769) is refused with a pointer to the cdrom setting instead.
- The VM's disk is `qemu-img convert -O raw -S 4k`: zeros become holes, so the disk stays thin.
  Its size is the image's virtual size rounded up to whole MiB, or the size asked for when that is
  larger (never smaller: that would cut the image off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc")
MIB = 1 << 20
ISO_MAGIC_OFFSET = 32769            # sector 16 (2048-byte sectors) + 1: the "CD001" identifier
ISO_MAGIC = b"CD001"


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int


def info_argv(path: str) -> list[str]:
    return ["qemu-img", "info", "--output=json", "--", path]


def convert_argv(source: str, source_format: str, dest: str) -> list[str]:
    return ["qemu-img", "convert", "-f", source_format, "-O", "raw", "-S", "4k", "--", source, dest]


def check_image(info_json: str, file_size: int, iso_probe: bytes, path: str) -> ImageInfo:
    """What the image is, from `qemu-img info --output=json`, the file's size and the 5 bytes at
    ISO_MAGIC_OFFSET; ValueError saying why when it is not a disk image Cairn can import."""
    try:
        data = json.loads(info_json)
        fmt, virtual = data["format"], int(data["virtual-size"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: qemu-img could not read it as a disk image") from None
    if fmt not in FORMATS:
        raise ValueError(f"{path} is a {fmt} image; Cairn imports {', '.join(FORMATS)}")
    if fmt == "raw":
        if iso_probe == ISO_MAGIC:
            raise ValueError(f"{path} is an ISO image (a CD/DVD), not a disk: attach it as the VM's cdrom")
        if file_size % 512 or file_size < MIB:
            raise ValueError(f"{path} is not a disk image ({file_size} bytes: a raw disk is whole 512-byte "
                             "sectors and at least 1 MiB)")
    if virtual <= 0:
        raise ValueError(f"{path}: the image says it holds no data")
    return ImageInfo(fmt, virtual)


def disk_size(info: ImageInfo, asked: int) -> int:
    """The VM disk's size for this image: its virtual size in whole MiB, or `asked` if larger."""
    needed = -(-info.virtual_size // MIB) * MIB
    if asked and asked < needed:
        raise ValueError(f"the image needs {needed >> 20} MiB; a disk of {asked >> 20} MiB would cut it off")
    return max(asked, needed)
