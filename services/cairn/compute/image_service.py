"""Uploaded images as the API, the console and cairnctl ask for them: upload a file into a pool's
images volume, list, read and delete them. The decisions (names, paths, what a file is) live in
image_store.py; this module does the I/O, and runs qemu-img through the runner only.

Who writes what: the image records (images/<pool>/<file>) and the files are written by cairn-web
on the pool's node, nowhere else: an upload is a stream into the node's own pool, so a request for
a pool of another node is refused (409, naming the node whose console takes it). The first upload
to a pool makes its "images" volume: the volume record (volumes/<pool>/images, as the volume jobs
write it, in one create) and its subvolume. It is done here rather than by a volume.create job
because that job would wait behind any job holding the pool's lock (a scrub holds it for hours);
the agent shows the volume's space at its next look at the pool.

Upload, in order (nothing is changed until the checks pass; a failure later removes the .part):
check the name, pool (404 unknown, 409 not on this node or not mounted), Content-Length, an
existing image (409 unless overwrite), free space (409) → claim .<file>.part (a flock on a file
opened without following symlinks; a second upload of the same name is 409 Busy while the first
runs, a .part left by a crashed process is taken over) → copy the body in 1 MiB chunks, never more
in memory → fsync → qemu-img info → classify (400 saying what the file is) → link (or, with
overwrite, rename) into place, fsync the directory → write the record.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Any, BinaryIO, Callable

from cairn.cluster.store import Store
from cairn.compute import image_store, images
from cairn.compute.image_store import Image
from cairn.compute.vms import list_vms
from cairn.config import StorageConfig
from cairn.errors import Busy, CairnError, Conflict, NotFound, PreconditionFailed, ValidationError, last_line
from cairn.jobs.service import JobService
from cairn.storage import btrfs, model as storage_model
from cairn.storage.pools import VOLUMES, get_pool, mounts

CHUNK = 1 << 20
INFO_TIMEOUT = 120.0
DIR_WAIT = 10.0                    # seconds a second first upload waits for the images volume being made


class ImageService:
    def __init__(self, store: Store, runner, node: str, settings: StorageConfig | None = None,
                 clock: Callable[[], float] = time.time,
                 blocking: Callable[..., Any] = lambda function, *args: function(*args)) -> None:
        self.store = store
        self.runner = runner
        self.node = node                  # the node this process runs on: it writes only its own pools
        self.settings = settings or StorageConfig()
        self.clock = clock
        # Runs the file writes and fsyncs of an upload: cairn-web's event loop hands them to a
        # thread (a write can wait for the disk, and must not stop every other connection).
        self.blocking = blocking

    @property
    def pools_root(self) -> str:
        return self.settings.pools_root

    # --- reading -------------------------------------------------------------------------------
    def view(self, image: Image, vms: list | None = None) -> dict[str, Any]:
        vms = list_vms(self.store) if vms is None else vms
        return {**image.to_dict(), "used_by": image_store.cdrom_users(image.path, vms)}

    def images(self, kind: str | None = None) -> list[dict[str, Any]]:
        vms = list_vms(self.store)
        found = [Image.from_dict(e.value) for e in self.store.list(image_store.IMAGES)]
        return [self.view(image, vms) for image in sorted(found, key=lambda i: (i.pool, i.name))
                if kind is None or image.kind == kind]

    def image(self, pool: str, name: str) -> dict[str, Any]:
        data = self.store.get(image_store.key(pool, name))
        if data is None:
            raise NotFound(f"no image {name!r} in pool {pool!r}", pool=pool, image=name)
        return self.view(Image.from_dict(data))

    # --- checks --------------------------------------------------------------------------------
    def local_pool(self, pool_name: str, doing: str) -> storage_model.Pool:
        """The pool, if it is this node's and mounted: 404 when there is no such pool, 409 otherwise."""
        pool = get_pool(self.store, pool_name)
        if pool.node != self.node:
            raise Conflict(f"pool {pool_name} is on node {pool.node}: {doing} through the console or API of "
                           f"{pool.node} (this is {self.node})", node=pool.node)
        entry = mounts().get(storage_model.pool_path(self.pools_root, pool_name))
        if entry is None or entry[1] != "btrfs":
            raise PreconditionFailed(f"pool {pool_name} is not mounted on {self.node}")
        return pool

    def ensure_images_dir(self, pool: str) -> str:
        """The pool's images volume, made (record + subvolume) if it is not there yet."""
        path = image_store.images_dir(self.pools_root, pool)
        if os.path.isdir(path):
            return path
        if os.path.lexists(path):
            raise PreconditionFailed(f"{path} exists and is not a directory: move it away to upload images")
        volume_key = f"{VOLUMES}{pool}/{image_store.IMAGES_VOLUME}"
        volume = storage_model.Volume(pool, image_store.IMAGES_VOLUME, created_at=self.clock())
        if not self.store.create(volume_key, volume.to_dict()):
            # Made by another upload right now (or a volume record without its subvolume).
            deadline = time.monotonic() + DIR_WAIT
            while not os.path.isdir(path):
                if time.monotonic() > deadline:
                    raise PreconditionFailed(f"volume {image_store.IMAGES_VOLUME} of pool {pool} has a record "
                                             f"but no directory at {path}")
                time.sleep(0.1)
            return path
        try:
            btrfs.subvolume_create(self.runner, path)
        except CairnError:
            self.store.delete(volume_key)
            raise
        return path

    # --- upload ----------------------------------------------------------------------------------
    def upload(self, pool_name: str, name: str, body: BinaryIO, length: int | None,
               overwrite: bool = False) -> tuple[dict[str, Any], bool]:
        """Stream `length` bytes of `body` into <pool>/images/<name>; returns (the image, whether it
        is new). Raises before reading the body when the request cannot succeed."""
        problem = image_store.name_problem(name)
        if problem:
            raise ValidationError({"name": problem})
        if length is None:
            raise ValidationError({"Content-Length": "required: send the file's size with its bytes"})
        pool = self.local_pool(pool_name, "upload to it")
        final = image_store.image_path(self.pools_root, pool.name, name)
        exists = self.store.get(image_store.key(pool.name, name)) is not None or os.path.lexists(final)
        if exists and not overwrite:
            raise Conflict(f"pool {pool.name} has an image named {name} already: delete it first, or upload "
                           "with overwrite=true", pool=pool.name, image=name)
        directory = self.ensure_images_dir(pool.name)
        stat = os.statvfs(directory)
        replaced = os.stat(final).st_size if exists and os.path.isfile(final) else 0
        problem = image_store.space_problem(stat.f_bavail * stat.f_frsize + replaced, length, pool.name)
        if problem:
            raise PreconditionFailed(problem, needed=length)
        part = image_store.part_path(self.pools_root, pool.name, name)
        fd = self._claim(part, pool.name, name)
        try:
            try:
                size = self._receive(fd, body, length, pool.name)
                self.blocking(os.fsync, fd)
                found = self._classify(fd, part, size, name)
                self._place(part, final, overwrite, pool.name, name)
            except BaseException:
                _remove_if_same(part, fd)
                raise
        finally:
            os.close(fd)
        self.blocking(_fsync_dir, directory)
        image = Image(pool.name, name, pool.node, final, size, found.kind, found.format, found.virtual_size,
                      self.clock())
        try:
            self.store.put(image_store.key(pool.name, name), image.to_dict())
        except CairnError:
            if not exists:          # no record, no file: the upload did not happen
                os.unlink(final)
            raise
        return self.view(image), not exists

    def _claim(self, part: str, pool: str, name: str) -> int:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = os.fstat(fd)
            try:
                current = os.stat(part, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            # Between open and lock the other upload may have renamed or removed the file we opened.
            if current is None or (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
                raise BlockingIOError
        except BlockingIOError:
            os.close(fd)
            raise Busy(f"{name} is being uploaded to pool {pool} right now; try again when that upload has "
                       "ended", pool=pool, image=name) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)            # a .part a crashed upload left behind
        os.fchmod(fd, 0o644)
        return fd

    def _receive(self, fd: int, body: BinaryIO, length: int, pool: str) -> int:
        received = 0
        while received < length:
            try:
                chunk = body.read(min(CHUNK, length - received))
            except Exception as exc:   # the client went away: werkzeug, gunicorn and sockets each say it differently
                raise ValidationError({"body": f"the upload broke off after {received} of {length} bytes "
                                               f"({exc.__class__.__name__})"}) from None
            if not chunk:
                raise ValidationError({"body": f"the upload ended after {received} of {length} bytes "
                                               "(Content-Length)"})
            try:
                self.blocking(_write_all, fd, chunk)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise PreconditionFailed(f"pool {pool} ran out of space (or the images volume's quota) after "
                                             f"{received >> 20} MiB of {length >> 20} MiB") from None
                raise
            received += len(chunk)
        return received

    def _classify(self, fd: int, part: str, size: int, name: str) -> image_store.Classified:
        probe = os.pread(fd, len(images.ISO_MAGIC), images.ISO_MAGIC_OFFSET)
        result = self.runner.run(images.info_argv(part), check=False, timeout=INFO_TIMEOUT)
        if not result.ok:
            reason = last_line(result.stderr) or f"exit {result.returncode}"
            raise ValidationError({"body": f"{name} is not an image qemu-img can read: "
                                           f"{reason.replace(part, name)}"})
        try:
            return image_store.classify(result.stdout, size, probe, name)
        except ValueError as exc:
            raise ValidationError({"body": str(exc).replace(part, name)}) from None

    @staticmethod
    def _place(part: str, final: str, overwrite: bool, pool: str, name: str) -> None:
        try:
            if overwrite:
                os.replace(part, final)
            else:
                os.link(part, final)      # never replaces: a same-named upload that won the race stays
                os.unlink(part)
        except (FileExistsError, IsADirectoryError):
            raise Conflict(f"pool {pool} has an image named {name} already (it arrived during this upload)",
                           pool=pool, image=name) from None

    # --- delete ----------------------------------------------------------------------------------
    def delete(self, pool_name: str, name: str) -> dict[str, Any]:
        """Remove the file and its record; refused while a VM has it as its cdrom or is being made from it."""
        entry = self.store.get_entry(image_store.key(pool_name, name))
        try:
            pool = self.local_pool(pool_name, "delete its images")
        except NotFound:
            if entry is None:
                raise
            # The pool was destroyed, and the file with it: only the record is left to remove.
            self.store.delete(image_store.key(pool_name, name))
            return self.view(Image.from_dict(entry.value))
        path = image_store.image_path(self.pools_root, pool.name, name)
        if image_store.name_problem(name) or (entry is None and not os.path.lexists(path)):
            raise NotFound(f"no image {name!r} in pool {pool_name!r}", pool=pool_name, image=name)
        vms = list_vms(self.store)
        users = image_store.cdrom_users(path, vms)
        if users:
            raise Conflict(f"image {name} is the ISO of VM {', '.join(users)}: eject it there first "
                           "(the VM's settings, or cairnctl vm set NAME --eject)", vms=users)
        being_made = {job.params.get("vm") for job in JobService(self.store).active("vm.create")}
        making = image_store.import_sources([vm for vm in vms if vm.name in being_made], path)
        if making:
            raise Busy(f"VM {', '.join(making)} is being made from image {name}: wait until its job has ended",
                       vms=making)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        _fsync_dir(os.path.dirname(path))
        if entry is not None:
            self.store.delete(image_store.key(pool.name, name))
            return self.view(Image.from_dict(entry.value), vms)
        return {"pool": pool.name, "name": name, "path": path, "used_by": []}


def _remove_if_same(path: str, fd: int) -> None:
    """Remove `path` if it still names the file open as `fd` (another upload may own the name now)."""
    try:
        held, current = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
