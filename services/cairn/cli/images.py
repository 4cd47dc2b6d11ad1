"""cairnctl commands for uploaded images (ISO images and disk images in a pool's images volume).

    cairnctl image list [--kind iso|disk]
    cairnctl image upload FILE --pool P [--name N] [--overwrite]
    cairnctl image delete POOL/NAME

The upload streams FILE (PUT /api/v1/images/<pool>/<name>, the file as the body), never holding it
in memory, with its progress on stderr when that is a terminal. It must go to the console of the
pool's node (--url); another node answers 409 naming it. The image's path (`image list`) is what
`cairnctl vm create --iso` or `--import` takes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, BinaryIO, Callable
from urllib.parse import quote

from cairn.cli.output import ApiError, show, table
from cairn.cli.storage import human

IMAGE_COLUMNS = [("POOL", "pool"), ("NAME", "name"), ("KIND", "kind"), ("FORMAT", "format"), ("SIZE", "size"),
                 ("VIRTUAL", "virtual"), ("USED BY", "used_by"), ("PATH", "path")]
CHUNK = 1 << 20
UPLOAD_TIMEOUT = (30, 900)      # connect; then the server's fsync and qemu-img check of a large file


# --- rendering (pure) -------------------------------------------------------------------------
def image_rows(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**image, "size": human(image["size"]), "virtual": human(image["virtual_size"]),
             "used_by": ",".join(image.get("used_by") or []) or "-"} for image in images]


def progress_line(sent: int, total: int, elapsed: float) -> str:
    percent = 100 * sent // total if total else 100
    rate = sent / elapsed if elapsed > 0 else 0
    return f"\r{percent:3d}%  {human(sent)} of {human(total)}  {human(rate)}/s"


class Upload:
    """A file as a request body: read in chunks as requests sends it, with a callback per chunk.
    Its length is the file's size, so requests sends a Content-Length."""

    def __init__(self, handle: BinaryIO, size: int, report: Callable[[int], None]) -> None:
        self.handle = handle
        self.size = size
        self.sent = 0
        self.report = report

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int = CHUNK) -> bytes:
        data = self.handle.read(CHUNK if amount is None or amount < 0 else min(amount, CHUNK))
        self.sent += len(data)
        self.report(self.sent)
        return data


# --- commands ---------------------------------------------------------------------------------
def cmd_list(client, args) -> int:
    params = {"kind": args.kind} if args.kind else None
    show(client.call("GET", "/images", params=params)["images"], args.json,
         lambda rows: table(image_rows(rows), IMAGE_COLUMNS))
    return 0


def split_ref(ref: str) -> tuple[str, str]:
    pool, slash, name = ref.partition("/")
    if not slash or not pool or not name:
        raise ValueError(f"name the image as POOL/NAME, e.g. tank/debian.iso (got {ref!r})")
    return pool, name


def cmd_upload(client, args) -> int:
    path = args.file
    name = args.name or os.path.basename(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    size = os.stat(path).st_size
    where = f"/images/{quote(args.pool, safe='')}/{quote(name, safe='')}"
    # Ask first what would be refused at once: a refusal that comes while the file is still being
    # sent can be lost with the connection. Only the pool's node takes the upload.
    here = client.call("GET", "/health")["node"]
    pool_node = client.call("GET", f"/pools/{quote(args.pool, safe='')}")["node"]
    if pool_node != here:
        raise ApiError(409, f"pool {args.pool} is on node {pool_node}: upload through the console or API of "
                            f"{pool_node} (this is {here}; --url)")
    if not args.overwrite:
        try:
            client.call("GET", where)
        except ApiError as exc:
            if exc.status != 404:
                raise
        else:
            raise ApiError(409, f"pool {args.pool} has an image named {name} already: delete it first, or "
                                "pass --overwrite")
    tty = sys.stderr.isatty()
    started = time.monotonic()
    last = [0.0]

    def report(sent: int) -> None:
        now = time.monotonic()
        if tty and (now - last[0] >= 0.2 or sent == size):
            last[0] = now
            sys.stderr.write(progress_line(sent, size, now - started))
            sys.stderr.flush()

    with open(path, "rb") as handle:
        try:
            image = client.send("PUT", where, params={"overwrite": "true"} if args.overwrite else None,
                                timeout=UPLOAD_TIMEOUT, data=Upload(handle, size, report),
                                headers={"Content-Type": "application/octet-stream"})
        finally:
            if tty:
                sys.stderr.write("\n")
    show(image, args.json, lambda i: f"uploaded {i['pool']}/{i['name']}: {i['kind']} ({i['format']}, "
                                     f"{human(i['size'])}) at {i['path']} on {i['node']}")
    return 0


def cmd_delete(client, args) -> int:
    pool, name = split_ref(args.image)
    reply = client.call("DELETE", f"/images/{quote(pool, safe='')}/{quote(name, safe='')}")
    show(reply, args.json, lambda r: r["message"])
    return 0


def add_parsers(sub) -> None:
    image = sub.add_parser("image", help="uploaded ISO images and disk images").add_subparsers(dest="action",
                                                                                             required=True)
    listing = image.add_parser("list", help="uploaded images with their paths")
    listing.add_argument("--kind", choices=("iso", "disk"), help="only ISO images or only disk images")
    listing.set_defaults(func=cmd_list)
    upload = image.add_parser("upload", help="upload an ISO image or a disk image into a pool's images volume "
                                             "(to the console of the pool's node)")
    upload.add_argument("file", help="the file to upload")
    upload.add_argument("--pool", required=True)
    upload.add_argument("--name", help="its name in the pool (default: the file's name)")
    upload.add_argument("--overwrite", action="store_true", help="replace an image of the same name")
    upload.set_defaults(func=cmd_upload)
    delete = image.add_parser("delete", help="delete an uploaded image (refused while a VM has it as its ISO)")
    delete.add_argument("image", metavar="POOL/NAME")
    delete.set_defaults(func=cmd_delete)
