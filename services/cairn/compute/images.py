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

Where a VM's images may come from (what a disk is imported from, what its cdrom is): a file a
guest reads is handed to it whole, so a path given through the API could otherwise give a guest
/dev/sda or /etc/shadow. Taken are only
- an image of a pool's images volume, as the images API lists it (its record's path), on the VM's
  node and of the right kind (a disk image to import, an ISO for the cdrom); or
- a file under a directory the node's config allows (`[compute] image_dirs`, empty by default).
A path must be absolute and normalised (no '..', '.', '//'), hold no control characters and lie in
no system directory (config.SYSTEM_DIRS). Where the file can be looked at (the VM's node), it is
resolved first: a symlink that leads out of its images volume or allowed directory, into a system
directory, or to anything but a regular file is refused too (`resolved_problem`).
"""

from __future__ import annotations

import json
import posixpath
import stat
from dataclasses import dataclass
from typing import Callable, Iterable

from cairn.config import SYSTEM_DIRS

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


# --- where images may come from (pure; `resolved_problem` gets the file system as functions) ----------
KIND_NOUNS = {"disk": "a disk image", "iso": "an ISO image"}
KIND_WORDS = {"disk": "a disk image to import", "iso": "an ISO image for the cdrom"}


@dataclass(frozen=True)
class KnownImage:
    """An image of a pool's images volume, as its record says (compute/image_store.py)."""
    path: str
    kind: str                      # "iso" or "disk"
    node: str
    pool: str
    name: str


def in_directory(path: str, directory: str) -> bool:
    directory = directory.rstrip("/") or "/"
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def path_shape_problem(value: object) -> str | None:
    """Why `value` cannot name an image file at all, or None."""
    if not isinstance(value, str) or not value.startswith("/"):
        return "must be the absolute path of an image file"
    if any(not char.isprintable() for char in value):
        return "must not contain control characters"
    if posixpath.normpath(value) != value or "//" in value:
        return f"must be a normalised path (no '..', '.', '//' or trailing '/'): {posixpath.normpath(value)}?"
    for system in SYSTEM_DIRS:
        if in_directory(value, system):
            return f"{value} is in {system}: system files are never VM images"
    return None


def source_problem(path: object, kind: str, node: str, known: Iterable[KnownImage],
                   allowed_dirs: Iterable[str]) -> str | None:
    """Why a VM on `node` may not use `path` as `kind` ("disk": import a disk from it; "iso": its
    cdrom), or None: it must be an uploaded image of that kind on that node, or lie under one of
    `allowed_dirs` (the node's [compute] image_dirs)."""
    problem = path_shape_problem(path)
    if problem:
        return problem
    assert isinstance(path, str)
    for image in known:
        if image.path != path:
            continue
        if image.node != node:
            return (f"image {image.name} is in pool {image.pool} on node {image.node}; this VM runs on {node}: "
                    f"upload the image to a pool of {node}")
        if image.kind != kind:
            return f"{image.name} is {KIND_WORDS[image.kind]}, not {KIND_WORDS[kind]}"
        return None
    dirs = [d for d in allowed_dirs]
    if any(in_directory(path, directory) and path != directory.rstrip("/") for directory in dirs):
        return None
    where = f" or a file under {', '.join(dirs)}" if dirs else ""
    return (f"{path} is not an uploaded image: give the path of {KIND_NOUNS[kind]} in a pool's images volume "
            f"on node {node} (as GET /api/v1/images lists it){where}; other places are allowed only through "
            "[compute] image_dirs in the node's config")


def resolved_problem(path: str, places: Iterable[str], realpath: Callable[[str], str],
                     stat_of: Callable[[str], object]) -> str | None:
    """Why the file at `path` (which passed source_problem) may not be used, looked at on its
    node: it must exist, resolve (symlinks followed) into one of `places` (its images volume or
    an allowed directory, each resolved too) and be a regular file. `realpath` and `stat_of` are
    os.path.realpath and os.stat on the node."""
    resolved = realpath(path)
    roots = [realpath(place) for place in places]
    if not any(in_directory(resolved, root) and resolved != root for root in roots):
        return f"{path} leads to {resolved}, outside {' and '.join(roots) or 'any allowed place'}"
    for system in SYSTEM_DIRS:
        if in_directory(resolved, system):
            return f"{path} leads to {resolved}, in {system}: system files are never VM images"
    try:
        mode = stat_of(resolved).st_mode                   # type: ignore[attr-defined]
    except FileNotFoundError:
        return f"{path} does not exist on this node"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file (a device, directory or other special file is never a VM image)"
    return None
