"""Request and response schemas of the /api/v1 image routes (every field described, as in schemas.py).
The upload's body is the file itself (application/octet-stream), not a schema."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Float, Integer, List, Nested, String
from apiflask.validators import OneOf

from cairn.web.schemas import d


class ImageOut(Schema):
    pool = String(metadata=d("The pool whose images volume holds the file"))
    name = String(metadata=d("File name: 1-128 of letters, digits, '.', '_', '+' and '-', not starting with '.'"))
    node = String(metadata=d("The pool's node: the only node that has the file (and where VMs using it run)"))
    path = String(metadata=d("The file's path on that node, <pools root>/<pool>/images/<name>: what a VM's "
                             "cdrom or a disk's import names"))
    size = Integer(metadata=d("Size of the file in bytes"))
    kind = String(metadata=d("iso (an ISO 9660 image, for a VM's cdrom) or disk (a disk image, to import as "
                             "a VM disk)"))
    format = String(metadata=d("The format qemu-img found: raw (every ISO, and raw disks), qcow2, vmdk, vdi, "
                               "vhdx or vpc (VHD)"))
    virtual_size = Integer(metadata=d("Bytes the guest sees: a disk image's virtual size, an ISO's size"))
    uploaded_at = Float(metadata=d("When the upload completed (Unix time)"))
    used_by = List(String(metadata=d("VM name")),
                   metadata=d("VMs whose cdrom is this image (it cannot be deleted while any are)"))


class ImageListOut(Schema):
    images = List(Nested(ImageOut), metadata=d("Every uploaded image of the cluster, by pool and name"))


class ImageListQuery(Schema):
    kind = String(validate=OneOf(("iso", "disk")), metadata=d("Only images of this kind: iso or disk"))


class ImageUploadQuery(Schema):
    overwrite = Boolean(load_default=False, metadata=d("Replace an image of the same name (default false: "
                                                       "409 when the name is taken)"))
