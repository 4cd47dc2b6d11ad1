"""Uploaded images (pure): the files VMs boot from (ISO images, attached as a VM's cdrom) and the
disk images VM disks are imported from, kept in each pool's images volume. No I/O here.

Store layout (under the cluster root; who writes what):

    images/<pool>/<file>      Image record (below). Written only by cairn-web on the pool's node
                              (upload and delete; image_service.py), after the file is in place.

On disk (the pool's node):

    <pool>/images/            the pool's "images" volume (a btrfs subvolume with a volume record,
                              made at the first upload)
        <file>                an uploaded image, under the name it was uploaded with
        .<file>.part          an upload in progress (removed when it fails)

Invariants kept by the checks below:
- File names are 1-128 of A-Z, a-z, 0-9, '.', '_', '+' and '-', never starting with '.' (so never
  '..' nor a hidden .part file) and never ending in '.part'; the name is the file's name in the
  images volume, so a record's path is always <pools_root>/<pool>/images/<file>.
- An image is kind "iso" (an ISO 9660 image: qemu-img reads it as raw and it has "CD001" at byte
  32769) or kind "disk" (what compute/images.py takes to import as a VM disk). Anything else is
  refused, and so is a disk image that reaches for other files (a backing file, a qcow2 external
  data file, VMDK extents in other files): importing it would copy whatever those name on the node.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from cairn.compute import images
from cairn.storage import model as storage_model

IMAGES = "images/"                 # store prefix: images/<pool>/<file>
IMAGES_VOLUME = "images"           # the volume (subvolume) of a pool that holds its images
PART_SUFFIX = ".part"
KINDS = ("iso", "disk")
FILE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}")
ISO_SECTOR = 2048


@dataclass(frozen=True)
class Image:
    pool: str
    name: str                      # the file's name in the pool's images volume
    node: str                      # the pool's node: the only node that has the file
    path: str                      # <pools_root>/<pool>/images/<name>: what a VM's cdrom or import names
    size: int                      # bytes of the file
    kind: str                      # "iso" or "disk"
    format: str                    # qemu-img's format: raw (every ISO), qcow2, vmdk, vdi, vhdx, vpc
    virtual_size: int              # bytes the guest sees (an ISO's is its size)
    uploaded_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Image":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass(frozen=True)
class Classified:
    kind: str
    format: str
    virtual_size: int


# --- names, keys and paths --------------------------------------------------------------------
def name_problem(value: Any) -> str | None:
    """Why `value` cannot be an image's file name, or None."""
    if not isinstance(value, str) or not FILE_NAME.fullmatch(value):
        return ("file name must be 1-128 of letters, digits, '.', '_', '+' and '-', "
                "not starting with '.'")
    if value.endswith(PART_SUFFIX):
        return f"file name must not end in {PART_SUFFIX!r} (kept for uploads in progress)"
    return None


def key(pool: str, name: str) -> str:
    return f"{IMAGES}{pool}/{name}"


def images_dir(pools_root: str, pool: str) -> str:
    return f"{storage_model.pool_path(pools_root, pool)}/{IMAGES_VOLUME}"


def image_path(pools_root: str, pool: str, name: str) -> str:
    return f"{images_dir(pools_root, pool)}/{name}"


def part_path(pools_root: str, pool: str, name: str) -> str:
    """Where an upload of `name` is written until it is checked (hidden: names never start with '.')."""
    return f"{images_dir(pools_root, pool)}/.{name}{PART_SUFFIX}"


# --- what a file is -----------------------------------------------------------------------------
def classify(info_json: str, file_size: int, iso_probe: bytes, name: str) -> Classified:
    """What an uploaded file is, from `qemu-img info --output=json`, its size and the 5 bytes at
    images.ISO_MAGIC_OFFSET; ValueError saying what it is when Cairn keeps no such image."""
    try:
        data = json.loads(info_json)
        fmt = data["format"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{name}: qemu-img could not read it as an image") from None
    if fmt == "raw" and iso_probe == images.ISO_MAGIC:
        if file_size % ISO_SECTOR:
            raise ValueError(f"{name} looks like an ISO image but is cut off ({file_size} bytes is not "
                             f"whole {ISO_SECTOR}-byte sectors)")
        return Classified("iso", fmt, file_size)
    reach = outside_files(data)
    if reach:
        raise ValueError(f"{name} is a {fmt} image that reads other files ({reach}); upload a standalone "
                         f"image (e.g. qemu-img convert -O qcow2 it first)")
    try:
        info = images.check_image(info_json, file_size, iso_probe, name)
    except ValueError as exc:
        raise ValueError(f"{exc}; Cairn keeps ISO images and disk images "
                         f"({', '.join(images.FORMATS)})") from None
    return Classified("disk", info.format, info.virtual_size)


def outside_files(info: dict[str, Any]) -> str:
    """The other files an image reads, as qemu-img reports them ('' when none): a backing file,
    a qcow2 external data file, VMDK extents that are not the file itself."""
    found = []
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        found.append(f"backing file {backing}")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        found.append(f"data file {specific['data-file']}")
    for extent in specific.get("extents") or ():
        if extent.get("filename") not in (None, info.get("filename")):
            found.append(f"extent {extent['filename']}")
    return ", ".join(found)


# --- who uses an image --------------------------------------------------------------------------
def cdrom_users(path: str, vms: Iterable[Any]) -> list[str]:
    """Names of the VMs (compute.model.Vm) whose cdrom is the image at `path`."""
    return sorted(vm.name for vm in vms if vm.cdrom == path)


def import_sources(vms_being_made: Iterable[Any], path: str) -> list[str]:
    """Names of the VMs (still being made) whose disks are imported from the image at `path`."""
    return sorted(vm.name for vm in vms_being_made if any(d.imported_from == path for d in vm.disks))


def space_problem(free: int, needed: int, pool: str) -> str | None:
    """Why a file of `needed` bytes does not fit in `free` bytes of the pool, or None."""
    if needed > free:
        return (f"pool {pool} has {free >> 20} MiB free; the file needs {needed >> 20} MiB "
                "(make room or upload to another pool)")
    return None
