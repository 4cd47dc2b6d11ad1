#!/usr/bin/env python3
"""Build the Cairn test guest: a tiny BIOS-bootable raw disk with a heartbeat (see README.md).

Pipeline (every external command goes through ``run()``, argv lists only, never a shell):

    kernel    Debian's linux-source-6.1 → ``make tinyconfig`` + image/guest/kernel.config →
              ``make olddefconfig`` → bzImage. Cached in the machine-wide build cache as
              /var/cache/cairn-build/guest-kernel/<key>/bzImage (see image/buildkit.py), keyed by a
              hash of kernel.config and the linux-source package version; a cache hit, from this
              clone or any other on the machine, skips the compile (~4 min on 2 cores). Built out
              of tree (O=) in build/guest/work.
    initramfs busybox-static + its applet links + image/guest/rootfs/ packed as a gzip'd newc cpio
              written here in Python (fixed mtimes and owners, so the same inputs give the same bytes).
    disk      MBR disk (sfdisk on the image file): partition 1 FAT "CAIRNBOOT" (active) with
              syslinux installed through mtools (``syslinux --install`` on the partition image) +
              bzImage + initrd + syslinux.cfg; partition 2 ext4 "data" (``mkfs.ext4``, empty);
              syslinux's mbr.bin in the first 440 bytes; partitions written at their offsets with
              ``dd``. Nothing is mounted, no loop devices, no KVM.

Invariants:
    - Outputs are written under build/ only: build/guest/cairn-testguest.img (the artifact; tests
      boot overlays or copies of it, never the file itself), build/guest/cairn-testguest.json
      (inputs hash, sizes, step timings); the kernel goes to the machine-wide build cache.
    - A rebuild with unchanged inputs (image/guest/*, busybox and syslinux package versions, kernel
      key) is skipped; ``--force`` rebuilds the disk (the kernel stays cached unless --force-kernel).
    - The artifact is replaced atomically (written as .tmp, then renamed).

Usage:
    image/guest/build.py deps                       install the host packages the build needs
    image/guest/build.py kernel [--force-kernel]    build (or reuse) the cached kernel only
    image/guest/build.py build [--force] [--force-kernel]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import buildkit  # noqa: E402
from buildkit import (CommandFailed, Timer, cache_lock, ensure_host_packages, log, package_version,  # noqa: E402,F401
                      prune, run, sha256_file, shared_cache, touch)

buildkit.PREFIX = "guest"

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD = REPO / "build"
KERNEL_CACHE = shared_cache() / "guest-kernel"    # <kernel_key()>/bzImage + config
KERNELS_KEPT = 3
OUT_DIR = BUILD / "guest"
# Not build/work: the appliance build removes that whole directory when it finishes.
WORK = OUT_DIR / "work"
IMAGE = OUT_DIR / "cairn-testguest.img"
MANIFEST = OUT_DIR / "cairn-testguest.json"

KERNEL_FRAGMENT = HERE / "kernel.config"
GUEST_ROOTFS = HERE / "rootfs"

KERNEL_SOURCE_PACKAGE = "linux-source-6.1"
KERNEL_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
KERNEL_JOBS = int(os.environ.get("GUEST_KERNEL_JOBS", "2"))  # two shared cores: never more than -j2
BUSYBOX = Path("/bin/busybox")
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")

HOST_PACKAGES = [
    KERNEL_SOURCE_PACKAGE,
    "build-essential", "flex", "bison", "bc", "libelf-dev", "libssl-dev", "xz-utils",  # kernel
    "busybox-static",  # the guest's whole userland
    "syslinux", "syslinux-common", "mtools", "dosfstools",  # BIOS boot from a FAT partition
    "e2fsprogs", "fdisk",  # mkfs.ext4, sfdisk
]

# Disk layout (MiB). Small on purpose: the raw file is sparse, a qcow2 overlay smaller still.
DISK_MIB = 64
BOOT_START_MIB = 1
BOOT_MIB = 16
DATA_START_MIB = BOOT_START_MIB + BOOT_MIB
DATA_MIB = DISK_MIB - DATA_START_MIB
BOOT_LABEL = "CAIRNBOOT"
DATA_LABEL = "data"
# Fixed identifiers so the same inputs give the same image.
DISK_ID = "0x43414952"  # "CAIR"
BOOT_VOLUME_ID = "43414952"
DATA_UUID = "c41e0000-7e57-4000-8000-000000000001"

# quiet + loglevel: the serial console is slow under TCG, and tests read it line by line.
KERNEL_CMDLINE = "console=ttyS0,115200n8 quiet loglevel=3 panic=5"
SOURCE_DATE_EPOCH = 1700000000


# ---------------------------------------------------------------------------------------------
# Helpers


# ---------------------------------------------------------------------------------------------
# kernel


def fragment_lines() -> list[str]:
    return [line.strip() for line in KERNEL_FRAGMENT.read_text().splitlines()
            if line.strip() and (line.startswith("CONFIG_") or line.startswith("# CONFIG_"))]


def kernel_key() -> str:
    digest = hashlib.sha256()
    digest.update(KERNEL_FRAGMENT.read_bytes())
    digest.update(package_version(KERNEL_SOURCE_PACKAGE).encode())
    return digest.hexdigest()[:16]


def kernel_cache_dir() -> Path:
    return KERNEL_CACHE / kernel_key()


def check_kernel_config(config: Path) -> None:
    """Every option the fragment asks for must have survived olddefconfig."""
    actual = set(config.read_text().splitlines())
    lost = []
    for line in fragment_lines():
        if line.startswith("# "):  # "# CONFIG_X is not set": lost only if X came back as =y
            if f"{line.split()[1]}=y" in actual:
                lost.append(line)
        elif line not in actual:
            lost.append(line)
    if lost:
        raise SystemExit("kernel config lost options after olddefconfig (a missing dependency?):\n  "
                         + "\n  ".join(lost))


def build_kernel(force: bool = False) -> Path:
    """The guest's bzImage: from the machine-wide cache, or compiled into it."""
    cache = kernel_cache_dir()
    with cache_lock(cache):
        if (cache / "bzImage").exists() and not force:
            log(f"kernel: cached {cache / 'bzImage'}")
        else:
            compile_kernel(cache)
        touch(cache)
    prune(KERNEL_CACHE, "*", KERNELS_KEPT)
    return cache / "bzImage"


def compile_kernel(cache: Path) -> None:
    if not KERNEL_SOURCE_TARBALL.exists():
        raise SystemExit(f"{KERNEL_SOURCE_TARBALL} missing: run `image/guest/build.py deps`")
    source = WORK / "linux-source"
    objects = WORK / "kernel-obj"
    for path in (source, objects):
        if path.exists():
            shutil.rmtree(path)
    source.mkdir(parents=True)
    objects.mkdir(parents=True)
    run(["tar", "-xf", KERNEL_SOURCE_TARBALL, "-C", source, "--strip-components=1"])
    make = ["make", "-C", source, f"O={objects}", "ARCH=x86_64"]
    env = {"KBUILD_BUILD_TIMESTAMP": time.strftime("%Y-%m-%d", time.gmtime(SOURCE_DATE_EPOCH)),
           "KBUILD_BUILD_USER": "cairn", "KBUILD_BUILD_HOST": "cairn"}
    run([*make, "tinyconfig"], env=env)
    config = objects / ".config"
    with config.open("a") as f:  # later assignments override earlier ones in Kconfig
        f.write("\n# image/guest/kernel.config\n" + "\n".join(fragment_lines()) + "\n")
    run([*make, "olddefconfig"], env=env)
    check_kernel_config(config)
    run([*make, "-s", f"-j{KERNEL_JOBS}", "bzImage"], env=env)     # -s: warnings and errors only
    staging = cache.with_name(f".{cache.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shutil.copy(objects / "arch/x86/boot/bzImage", staging / "bzImage")
    shutil.copy(config, staging / "config")
    if cache.exists():
        shutil.rmtree(cache)
    staging.rename(cache)
    # The unpacked source and objects are ~1.5 GB; the cache keeps only what boots.
    shutil.rmtree(source)
    shutil.rmtree(objects)
    log(f"kernel: {(cache / 'bzImage').stat().st_size // 1024} KiB")


# ---------------------------------------------------------------------------------------------
# initramfs


class Cpio:
    """A newc ("070701") archive, the format the kernel unpacks into its initramfs."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.inode = 1

    @staticmethod
    def _pad(length: int) -> bytes:
        return b"\0" * (-length % 4)

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self.inode, mode, 0, 0, 1, SOURCE_DATE_EPOCH, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0]
        header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
        self.chunks += [header, encoded, self._pad(len(header) + len(encoded)), data, self._pad(len(data))]
        self.inode += 1

    def directory(self, name: str) -> None:
        self.add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, executable: bool) -> None:
        self.add(name, stat.S_IFREG | (0o755 if executable else 0o644), data)

    def symlink(self, name: str, target: str) -> None:
        self.add(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self.add(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self.inode = 0
        self.add("TRAILER!!!", 0)
        return b"".join(self.chunks)


def build_initramfs() -> bytes:
    archive = Cpio()
    directories = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run",
                   "data", "boot", "etc", "root", "var", "www"}
    files: dict[str, Path] = {}
    for path in sorted(GUEST_ROOTFS.rglob("*")):
        relative = path.relative_to(GUEST_ROOTFS).as_posix()
        if path.is_dir():
            directories.add(relative)
        else:
            files[relative] = path
    # busybox's own list of applet paths ("usr/bin/awk", "sbin/init", …)
    applets = run([BUSYBOX, "--list-full"], capture=True).stdout.split()
    links = {applet: "/bin/busybox" for applet in applets
             if applet != "bin/busybox" and applet not in files}
    links["init"] = "/bin/busybox"  # the kernel runs /init; busybox picks the applet from argv[0]
    for path in list(files) + list(links):
        parent = Path(path).parent
        while parent != Path("."):
            directories.add(parent.as_posix())
            parent = parent.parent
    for name in sorted(directories):
        archive.directory(name)
    # Init's stdio is opened before devtmpfs is mounted: the node must be in the archive.
    archive.char_device("dev/console", 5, 1)
    archive.char_device("dev/null", 1, 3, 0o666)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), executable=True)
    for name, path in sorted(files.items()):
        data = path.read_bytes()
        archive.file(name, data, executable=data.startswith(b"#!"))
    for name, target in sorted(links.items()):
        archive.symlink(name, target)
    return gzip.compress(archive.finish(), compresslevel=9, mtime=0)


# ---------------------------------------------------------------------------------------------
# disk


SYSLINUX_CFG = f"""\
DEFAULT cairn
PROMPT 0
TIMEOUT 0
LABEL cairn
  LINUX /bzImage
  INITRD /initrd.gz
  APPEND {KERNEL_CMDLINE}
"""

NET_CFG_EXAMPLE = """\
# Cairn test guest network settings, read at boot when the kernel command line has no cairn.ip=.
# Uncomment to use a static address instead of DHCP:
#IP=192.168.122.50/24
#GW=192.168.122.1
#DNS=192.168.122.1
"""


def build_boot_partition(bzimage: Path, initrd: bytes, path: Path) -> None:
    if path.exists():
        path.unlink()
    env = {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    run(["mkfs.vfat", "-C", "-i", BOOT_VOLUME_ID, path, str(BOOT_MIB * 1024)], env=env)
    # The label through mtools, not mkfs.vfat -n: mkfs.fat stamps the label entry with the clock.
    run(["mlabel", "-i", path, f"::{BOOT_LABEL}"], env=env)
    staged = WORK / "boot-files"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    shutil.copy(bzimage, staged / "bzImage")
    (staged / "initrd.gz").write_bytes(initrd)
    (staged / "syslinux.cfg").write_text(SYSLINUX_CFG)
    (staged / "net.cfg").write_text(NET_CFG_EXAMPLE)
    for staged_file in staged.iterdir():  # mcopy -m keeps these times: fixed, for reproducible bytes
        os.utime(staged_file, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    run(["mcopy", "-i", path, "-m", *sorted(staged.iterdir()), "::"], env=env)
    # syslinux (the mtools installer) writes ldlinux.sys/ldlinux.c32 and the FAT boot sector.
    run(["syslinux", "--install", path], env=env)
    shutil.rmtree(staged)


def build_data_partition(path: Path) -> None:
    if path.exists():
        path.unlink()
    with path.open("wb") as f:
        f.truncate(DATA_MIB << 20)
    run(["mkfs.ext4", "-q", "-F", "-L", DATA_LABEL, "-U", DATA_UUID, "-m", "0",
         "-E", f"root_owner=0:0,hash_seed={DATA_UUID},lazy_itable_init=0", path],
        env={"E2FSPROGS_FAKE_TIME": str(SOURCE_DATE_EPOCH)})


def assemble_disk(boot: Path, data: Path, target: Path) -> None:
    if target.exists():
        target.unlink()
    with target.open("wb") as f:
        f.truncate(DISK_MIB << 20)
    sectors = 2048  # per MiB
    layout = (f"label: dos\nlabel-id: {DISK_ID}\nunit: sectors\n"
              f"start={BOOT_START_MIB * sectors}, size={BOOT_MIB * sectors}, type=e, bootable\n"
              f"start={DATA_START_MIB * sectors}, size={DATA_MIB * sectors}, type=83\n")
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", target], input=layout)
    run(["dd", f"if={SYSLINUX_MBR}", f"of={target}", "bs=440", "count=1", "conv=notrunc", "status=none"])
    for part, start in ((boot, BOOT_START_MIB), (data, DATA_START_MIB)):
        run(["dd", f"if={part}", f"of={target}", "bs=1M", f"seek={start}", "conv=notrunc,sparse",
             "status=none"])


# ---------------------------------------------------------------------------------------------
# build


def inputs_hash(kernel: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "README.md":
            digest.update(path.relative_to(HERE).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    for package in ("busybox-static", "syslinux", "syslinux-common"):
        digest.update(f"{package}={package_version(package)}\n".encode())
    digest.update((HERE.parent / "buildkit.py").read_bytes())
    digest.update(kernel.encode())
    return digest.hexdigest()[:16]


def build(force: bool, force_kernel: bool) -> int:
    timer = Timer()
    started = time.monotonic()
    key = kernel_key()
    wanted = inputs_hash(key)
    if not force and not force_kernel and IMAGE.exists() and MANIFEST.exists():
        with contextlib.suppress(ValueError, KeyError):
            if json.loads(MANIFEST.read_text())["inputs"] == wanted:
                log(f"{IMAGE.relative_to(REPO)} is up to date (inputs {wanted})")
                return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    kernel_cached = (kernel_cache_dir() / "bzImage").exists() and not force_kernel
    with timer.step("kernel"):
        bzimage = build_kernel(force=force_kernel)
    with timer.step("initramfs"):
        initrd = build_initramfs()
        log(f"initramfs: {len(initrd) // 1024} KiB")
    with timer.step("disk"):
        boot, data = WORK / "boot.vfat", WORK / "data.ext4"
        build_boot_partition(bzimage, initrd, boot)
        build_data_partition(data)
        staging = IMAGE.with_suffix(".img.tmp")
        assemble_disk(boot, data, staging)
        staging.rename(IMAGE)
        boot.unlink()
        data.unlink()
    with contextlib.suppress(OSError):
        WORK.rmdir()
    manifest = {
        "image": IMAGE.name,
        "inputs": wanted,
        "kernel_key": key,
        "kernel_cached": kernel_cached,
        "kernel_bytes": bzimage.stat().st_size,
        "initrd_bytes": len(initrd),
        "image_bytes": IMAGE.stat().st_size,
        "image_allocated_bytes": IMAGE.stat().st_blocks * 512,
        "sha256": sha256_file(IMAGE),
        "kernel_cmdline": KERNEL_CMDLINE,
        "steps_s": timer.steps,
        "total_s": round(time.monotonic() - started, 1),
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {IMAGE.relative_to(REPO)} ({manifest['image_allocated_bytes'] >> 20} MiB allocated, "
        f"{DISK_MIB} MiB apparent) in {manifest['total_s']} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("deps", help="install host packages the build needs (idempotent)")
    k = sub.add_parser("kernel", help="build or reuse the cached kernel")
    k.add_argument("--force-kernel", action="store_true", help="recompile even if cached")
    b = sub.add_parser("build", help="build build/guest/cairn-testguest.img")
    b.add_argument("--force", action="store_true", help="rebuild even if inputs are unchanged")
    b.add_argument("--force-kernel", action="store_true", help="also recompile the cached kernel")
    args = parser.parse_args()
    try:
        if args.command == "deps":
            ensure_host_packages(HOST_PACKAGES)
            return 0
        if args.command == "kernel":
            WORK.mkdir(parents=True, exist_ok=True)
            build_kernel(force=args.force_kernel)
            return 0
        return build(args.force, args.force_kernel)
    except CommandFailed as error:
        log(str(error))
        return 1


if __name__ == "__main__":
    sys.exit(main())
