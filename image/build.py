#!/usr/bin/env python3
"""Build the Cairn appliance image: a raw GPT UEFI disk image and a qcow2 copy.

Pipeline (every external command goes through ``run()``, argv lists only):

    base      mmdebstrap Debian 13 "trixie" (+ updates, security) with BASE_PACKAGES into a tarball
              in the machine-wide build cache (/var/cache/cairn-build/base/, see buildkit.py),
              keyed by a hash of the base configuration and of ``mmdebstrap_base``'s own source, so
              a code-only rebuild, and every other clone on this machine, skips it.
    tree      unpack the cached base into build/work/rootfs, install Cairn into a venv at /opt/cairn
              (``pip install`` of a wheel built from services/ on the host; runtime dependencies come
              from PyPI inside the chroot), lay rootfs/ over the tree, enable/mask units, and strip
              per-machine identity (machine-id, SSH host keys) so first boot makes new ones.
    uki       ``ukify`` from the trixie chroot builds one unified kernel image (kernel + initrd +
              command line with ``root=PARTUUID=...``), placed at \\EFI\\BOOT\\BOOTX64.EFI.
    disk      ESP via ``mkfs.vfat -C`` + mtools, root via ``mkfs.ext4 -d``, a GPT made by ``sfdisk``
              on the image file, and both filesystems written at their partition offsets with ``dd``.
              Nothing is mounted through loop devices and nothing needs KVM.
    qcow2     ``qemu-img convert``.

Invariants:
    - The build never mounts a partition; the only mounts are /proc, /sys, /dev and a pip cache bind
      inside the chroot, all in a private mount namespace (the script re-executes itself under
      ``unshare --mount``), so nothing leaks onto the host if the build dies.
    - Outputs are written under build/ only; build/cairn-<version>-amd64.json records the inputs hash
      and step timings, and a rebuild with the same inputs is skipped (``--force`` rebuilds).

Usage:
    image/build.py deps                 install the host packages the build needs (idempotent)
    image/build.py base                 build (or reuse) the cached base rootfs only
    image/build.py build [--force]      full image
    image/build.py version              print the version used in file names
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from buildkit import (CommandFailed, Timer, cache_lock, ensure_host_packages, log, prune, run,  # noqa: E402
                      shared_cache, touch)

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
WORK = BUILD / "work"
BASE_CACHE = shared_cache() / "base"     # base rootfs tarballs, by base_key()
PIP_CACHE = shared_cache() / "pip"       # pip's cache for the venv installed in the chroot
BASES_KEPT = 3                           # a few keys, for clones at different commits

# Host packages (Debian 12) that the build and `make run` use.
HOST_PACKAGES = [
    "mmdebstrap",
    "qemu-utils",  # qemu-img
    "mtools",  # mmd/mcopy into the ESP image
    "dosfstools",  # mkfs.vfat
    "fdisk",  # sfdisk
    "e2fsprogs",  # mkfs.ext4 -d
    "python3-pip",  # pip wheel services/
    "python3-venv",
    "util-linux",  # unshare
]

HOST_CA_BUNDLE = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
SUITE = "trixie"
ARCH = "amd64"

BASE_PACKAGES = [
    # boot and core system
    "linux-image-amd64", "initramfs-tools", "zstd",
    "systemd", "systemd-sysv", "systemd-resolved", "udev", "dbus", "kmod",
    "systemd-boot-efi", "systemd-ukify", "python3-pefile",
    "e2fsprogs", "fdisk", "cloud-guest-utils", "dosfstools", "mtools",
    "iproute2", "iputils-ping", "procps", "less", "nano", "ca-certificates", "openssl", "curl",
    "pciutils", "lsscsi", "ethtool", "netbase", "tzdata",
    "openssh-server", "chrony",
    # cluster store
    "etcd-server", "etcd-client",
    # compute
    "libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "qemu-utils", "ovmf",
    "novnc", "python3-websockify",
    # storage and sharing
    "samba", "smbclient", "nfs-kernel-server", "targetcli-fb", "python3-rtslib-fb", "open-iscsi",
    "mdadm", "btrfs-progs", "smartmontools", "nvme-cli", "acl",
    # Cairn's Python runtime (Debian's bindings reach the venv through system site packages)
    "python3", "python3-venv", "python3-libvirt", "python3-pyudev",
]

# Shrink the image: no docs (but keep copyright files), no man pages, no translations.
DPKG_OPTIONS = [
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
]

# Units. Cairn's own units come from rootfs/. Stock services Cairn configures itself stay disabled
# until the agent starts them; services Cairn never wants are masked.
ENABLE_UNITS = [
    "systemd-networkd.service",
    "systemd-resolved.service",
    "ssh.service",
    "chrony.service",
    "etcd.service",
    "cairn-firstboot.service",
    "cairn-netconfig.service",
    "cairn-agent.service",
    "cairn-web.service",
    "cairn-issue.path",
    "cairn-issue.service",
]
DISABLE_UNITS = [
    "smbd.service",
    "nfs-server.service",
    "rtslib-fb-targetctl.service",
    "iscsid.service",
    "iscsid.socket",
    "open-iscsi.service",
    "smartmontools.service",
    "smartd.service",
    "libvirt-guests.service",
    "systemd-networkd-wait-online.service",
    "libvirtd-tcp.socket",  # Cairn sets up migration transport itself
    "libvirtd-tls.socket",  # needs certificates it doesn't have: libvirtd fails to start with it
]
MASK_UNITS = [
    "samba-ad-dc.service",
    "nmbd.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "nvmf-autoconnect.service",
    "nvmefc-boot-connections.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "systemd-timesyncd.service",
]

ESP_MIB = 256
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Linux root (x86-64)
ROOT_LABEL = "cairn-root"
# audit=0: without auditd every unit start is printed on the console as an audit record.
# panic=10: a node whose kernel panics reboots itself after 10 s instead of hanging (a NAS must come
# back by itself; a hung node would also hold its pools and VMs until someone walks to it).
KERNEL_CMDLINE = ("rw rootfstype=ext4 rootwait console=tty0 console=ttyS0,115200n8 "
                  "systemd.show_status=auto audit=0 panic=10")


# Commands run inside the chroot get this environment, not the host's (whose PIP_*, SSL_* and
# proxy settings name host paths).
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


# ---------------------------------------------------------------------------------------------
# Helpers


def version() -> str:
    pyproject = REPO / "services" / "pyproject.toml"
    if pyproject.exists():
        with pyproject.open("rb") as f:
            data = tomllib.load(f)
        found = data.get("project", {}).get("version")
        if found:
            return str(found)
    return "0.1.0"


def tree_digest(root: Path, skip=("__pycache__", ".egg-info", "build", "dist", ".pytest_cache")) -> str:
    """Hash of every file's relative path, mode and content under root (symlinks by target)."""
    digest = hashlib.sha256()
    if not root.exists():
        return "absent"
    for path in sorted(root.rglob("*")):
        if any(part in skip or part.endswith(".egg-info") for part in path.relative_to(root).parts):
            continue
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif path.is_file():
            digest.update(f"F {rel} {path.stat().st_mode & 0o7777:o}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        elif path.is_dir():
            digest.update(f"D {rel}\n".encode())
    return digest.hexdigest()


def base_key() -> str:
    config = {
        "suite": SUITE, "arch": ARCH, "mirror": MIRROR, "security": SECURITY_MIRROR,
        "packages": sorted(BASE_PACKAGES), "dpkg": DPKG_OPTIONS,
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    digest.update(inspect.getsource(mmdebstrap_base).encode())
    return digest.hexdigest()[:16]


def disk_usage_bytes(root: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


# ---------------------------------------------------------------------------------------------
# deps


# ---------------------------------------------------------------------------------------------
# base


def base_tarball() -> Path:
    return BASE_CACHE / f"base-{SUITE}-{base_key()}.tar"


def build_base() -> Path:
    """The base rootfs tarball: from the machine-wide cache, or made there (keyed by base_key())."""
    target = base_tarball()
    with cache_lock(target):
        if target.exists():
            log(f"base rootfs cached: {target}")
        else:
            partial = target.with_name(f".{target.stem}.partial.tar")
            partial.unlink(missing_ok=True)
            mmdebstrap_base(partial)
            partial.rename(target)
        touch(target)
    prune(BASE_CACHE, f"base-{SUITE}-*.tar", BASES_KEPT)
    return target


def mmdebstrap_base(partial: Path) -> None:
    """mmdebstrap the base rootfs into a tarball at partial (its source is part of base_key())."""
    sources = [
        f"deb {MIRROR} {SUITE} main",
        f"deb {MIRROR} {SUITE}-updates main",
        f"deb {SECURITY_MIRROR} {SUITE}-security main",
    ]
    argv = [
        "mmdebstrap", "--mode=root", "--variant=minbase", f"--architectures={ARCH}",
        "--include=" + ",".join(BASE_PACKAGES),
        "--aptopt=Acquire::Retries \"3\"",
        *[f"--dpkgopt={option}" for option in DPKG_OPTIONS],
        SUITE, str(partial), *sources,
    ]
    run(argv)


# ---------------------------------------------------------------------------------------------
# tree


def chroot(tree: Path, *argv, **kwargs) -> subprocess.CompletedProcess:
    """Run argv inside the tree with a clean environment."""
    return run(["chroot", tree, *argv], env=CHROOT_ENV, clean_env=True, **kwargs)


@contextlib.contextmanager
def chroot_mounts(tree: Path, pip_cache: Path):
    """/proc, /sys, /dev, host DNS and a pip cache inside the chroot; undone on exit."""
    mounts = []
    cache_target = tree / "var" / "cache" / "cairn-pip"
    resolv = tree / "etc" / "resolv.conf"
    saved = tree / "etc" / "resolv.conf.cairn-build"
    try:
        for fstype, source, target, options in [
            ("proc", "proc", tree / "proc", []),
            ("sysfs", "sysfs", tree / "sys", []),
        ]:
            run(["mount", "-t", fstype, source, target, *options])
            mounts.append(target)
        run(["mount", "--rbind", "/dev", tree / "dev"])
        mounts.append(tree / "dev")
        cache_target.mkdir(parents=True, exist_ok=True)
        pip_cache.mkdir(parents=True, exist_ok=True)
        run(["mount", "--bind", pip_cache, cache_target])
        mounts.append(cache_target)
        if resolv.exists() or resolv.is_symlink():
            os.rename(resolv, saved)
        shutil.copyfile("/etc/resolv.conf", resolv)
        yield
    finally:
        if saved.exists() or saved.is_symlink():
            resolv.unlink(missing_ok=True)
            os.rename(saved, resolv)
        for target in reversed(mounts):
            run(["umount", "--recursive", "--lazy", target], check=False)
        if cache_target.is_dir():
            cache_target.rmdir()


def build_wheel(services: Path) -> Path:
    wheels = BUILD / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    # Build from a copy: setuptools leaves build/ and *.egg-info in the source directory.
    source = WORK / "services-src"
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(services, source, ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "--no-input", str(source), "-w", str(wheels)])
    shutil.rmtree(source)
    built = sorted(wheels.glob("*.whl"))
    if len(built) != 1:
        raise SystemExit(f"expected one wheel from {services}, got {built}")
    return built[0]


def unit_exists(tree: Path, unit: str) -> bool:
    return any((tree / d / unit).exists() or (tree / d / unit).is_symlink()
               for d in ("usr/lib/systemd/system", "etc/systemd/system"))


def build_tree(tarball: Path, wheel: Path, root_partuuid: str, image_version: str) -> Path:
    tree = WORK / "rootfs"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    run(["tar", "--extract", "--file", tarball, "--directory", tree, "--preserve-permissions",
         "--numeric-owner", "--xattrs", "--xattrs-include=*"])

    with chroot_mounts(tree, PIP_CACHE):
        wheel_dir = tree / "tmp" / "cairn-wheels"
        wheel_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheel, wheel_dir / wheel.name)
        # The host's CA bundle, for this install only: the build reaches PyPI the way the host does
        # (which may be through a TLS-inspecting proxy); the image keeps Debian's own bundle.
        shutil.copyfile(HOST_CA_BUNDLE, wheel_dir / "host-ca.crt")
        chroot(tree, "/usr/bin/python3", "-m", "venv", "--system-site-packages", "/opt/cairn")
        chroot(tree, "/opt/cairn/bin/pip", "install", "--disable-pip-version-check", "--no-input",
               "--cert", "/tmp/cairn-wheels/host-ca.crt", "--cache-dir", "/var/cache/cairn-pip",
               f"/tmp/cairn-wheels/{wheel.name}")
        shutil.rmtree(wheel_dir)

    # rootfs/ laid over the tree as it is (modes from the repo, owned by root).
    overlay = REPO / "rootfs"
    for source in sorted(overlay.rglob("*")):
        rel = source.relative_to(overlay)
        if "__pycache__" in rel.parts:
            continue
        target = tree / rel
        if source.is_dir() and not source.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            os.chown(target, 0, 0)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
        os.lchown(target, 0, 0)
    os.chmod(tree / "etc" / "cairn", 0o755)

    os_release = tree / "usr/lib/os-release"
    os_release.write_text(os_release.read_text().rstrip("\n")
                          + f"\nIMAGE_ID=cairn\nIMAGE_VERSION={image_version}\n")

    # On first boot (machine-id "uninitialized") systemd applies presets to every unit, and
    # Debian's presets enable nearly everything with an [Install] section (libvirtd-tls.socket,
    # networkd-wait-online, sysupdate timers...). "disable *" keeps the set enabled here.
    preset = tree / "usr/lib/systemd/system-preset/00-cairn.preset"
    preset.parent.mkdir(parents=True, exist_ok=True)
    # No "enable" lines: presetting an enabled unit re-enables its Also= units (networkd's
    # wait-online), and the units Cairn wants are enabled below already.
    preset.write_text(
        "# Written by image/build.py: the image's enabled units are decided at build time.\n"
        "disable *\n"
    )
    chroot(tree, "systemctl", "enable", *ENABLE_UNITS)
    present = [unit for unit in DISABLE_UNITS if unit_exists(tree, unit)]
    if present:
        chroot(tree, "systemctl", "disable", *present)
    chroot(tree, "systemctl", "mask", *MASK_UNITS)
    chroot(tree, "systemctl", "set-default", "multi-user.target")

    # Identity: first boot makes a new machine-id and SSH host keys; no two appliances share them.
    (tree / "etc/machine-id").write_text("uninitialized\n")
    dbus_id = tree / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tree / "var/lib/systemd/random-seed").unlink(missing_ok=True)
    (tree / "etc/hostname").write_text("cairn\n")
    (tree / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    (tree / "etc/fstab").write_text(f"PARTUUID={root_partuuid}\t/\text4\tdefaults,errors=remount-ro\t0\t1\n")
    resolv = tree / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    for leftover in (tree / "var/cache/apt").glob("*.bin"):
        leftover.unlink()
    return tree


# ---------------------------------------------------------------------------------------------
# uki + disk


def build_uki(tree: Path, root_partuuid: str, out: Path) -> str:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise SystemExit(f"expected one kernel in the tree, found {kernels}")
    kernel_version = kernels[0].name.removeprefix("vmlinuz-")
    cmdline = f"root=PARTUUID={root_partuuid} {KERNEL_CMDLINE}"
    chroot(tree, "ukify", "build",
           f"--linux=/boot/vmlinuz-{kernel_version}",
           f"--initrd=/boot/initrd.img-{kernel_version}",
           f"--cmdline={cmdline}",
           f"--uname={kernel_version}",
           "--os-release=@/etc/os-release",
           "--output=/tmp/cairn-uki.efi")
    shutil.move(tree / "tmp/cairn-uki.efi", out)
    return kernel_version


def make_esp(uki: Path, esp: Path) -> None:
    esp.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-F", "32", "-n", "CAIRN-ESP", esp, str(ESP_MIB * 1024)])
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"], env=env)
    run(["mcopy", "-i", esp, uki, "::/EFI/BOOT/BOOTX64.EFI"], env=env)


def make_root(tree: Path, root: Path, root_fs_uuid: str) -> int:
    used = disk_usage_bytes(tree)
    mib = 1024 * 1024
    size_mib = int(used * 1.25 / mib) + 768
    size_mib = (size_mib + 63) // 64 * 64
    root.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", root_fs_uuid, "-d", tree, root, f"{size_mib}M"])
    return size_mib


def make_disk(esp: Path, root: Path, root_mib: int, root_partuuid: str, image: Path) -> None:
    total_mib = 1 + ESP_MIB + root_mib + 1
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(total_mib * 1024 * 1024)
    sectors_per_mib = 2048
    script = "\n".join([
        "label: gpt",
        f"label-id: {uuid.uuid4()}",
        "unit: sectors",
        "first-lba: 2048",
        f"start={sectors_per_mib}, size={ESP_MIB * sectors_per_mib}, type={ESP_TYPE}, "
        f"uuid={uuid.uuid4()}, name=\"esp\"",
        f"start={(1 + ESP_MIB) * sectors_per_mib}, size={root_mib * sectors_per_mib}, type={ROOT_TYPE}, "
        f"uuid={root_partuuid}, name=\"{ROOT_LABEL}\"",
    ]) + "\n"
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image], input=script)
    run(["dd", f"if={esp}", f"of={image}", "bs=4M", f"seek={1 * 1024 * 1024}", "oflag=seek_bytes",
         "conv=notrunc,sparse", "status=none"])
    run(["dd", f"if={root}", f"of={image}", "bs=4M", f"seek={(1 + ESP_MIB) * 1024 * 1024}",
         "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"])
    run(["sfdisk", "--verify", image])


# ---------------------------------------------------------------------------------------------
# main


def inputs_hash(services: Path) -> str:
    digest = hashlib.sha256()
    digest.update(base_key().encode())
    digest.update(Path(__file__).read_bytes())
    digest.update((Path(__file__).parent / "buildkit.py").read_bytes())
    digest.update(tree_digest(REPO / "rootfs").encode())
    digest.update(tree_digest(services).encode())
    return digest.hexdigest()[:16]


def build(args) -> int:
    services = Path(args.services).resolve()
    ver = version() if args.version is None else args.version
    stem = f"cairn-{ver}-{ARCH}"
    manifest_path = BUILD / f"{stem}.json"
    image, qcow2, vmlinuz = BUILD / f"{stem}.img", BUILD / f"{stem}.qcow2", BUILD / f"{stem}.vmlinuz"
    wanted = inputs_hash(services)
    if not args.force and manifest_path.exists() and image.exists() and qcow2.exists():
        previous = json.loads(manifest_path.read_text())
        if previous.get("inputs") == wanted:
            log(f"{image.relative_to(REPO)} is up to date (inputs {wanted}); --force rebuilds")
            return 0
    if not (services / "pyproject.toml").exists():
        raise SystemExit(f"{services}/pyproject.toml not found: cannot build the Cairn wheel")

    timer = Timer()
    started = time.monotonic()
    base_was_cached = base_tarball().exists()
    with timer.step("base"):
        tarball = build_base()
    with timer.step("wheel"):
        wheel = build_wheel(services)
    root_partuuid = str(uuid.uuid4())
    with timer.step("tree"):
        tree = build_tree(tarball, wheel, root_partuuid, ver)
    parts = WORK / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    with timer.step("uki"):
        uki = parts / "BOOTX64.EFI"
        kernel_version = build_uki(tree, root_partuuid, uki)
        shutil.copy2(tree / f"boot/vmlinuz-{kernel_version}", vmlinuz)
    with timer.step("esp"):
        make_esp(uki, parts / "esp.vfat")
    with timer.step("root"):
        root_mib = make_root(tree, parts / "root.ext4", str(uuid.uuid4()))
    with timer.step("disk"):
        partial = BUILD / f"{stem}.img.partial"
        make_disk(parts / "esp.vfat", parts / "root.ext4", root_mib, root_partuuid, partial)
        partial.rename(image)
    with timer.step("qcow2"):
        partial = BUILD / f"{stem}.qcow2.partial"
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", image, partial])
        partial.rename(qcow2)
    if args.compress:
        with timer.step("qcow2-compressed"):
            compressed = BUILD / f"{stem}-compressed.qcow2"
            run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", image, compressed])
    if not args.keep_work:
        shutil.rmtree(WORK)

    manifest = {
        "version": ver, "arch": ARCH, "suite": SUITE, "kernel": kernel_version,
        "root_partuuid": root_partuuid, "root_label": ROOT_LABEL, "inputs": wanted,
        "base": tarball.name, "base_cached": base_was_cached,
        "image": image.name, "qcow2": qcow2.name, "vmlinuz": vmlinuz.name,
        "raw_bytes": image.stat().st_size, "raw_allocated_bytes": image.stat().st_blocks * 512,
        "qcow2_bytes": qcow2.stat().st_size,
        "steps_seconds": timer.steps, "total_seconds": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"built {image.relative_to(REPO)} and {qcow2.name} in {manifest['total_seconds']} s "
        f"(base {'cached' if base_was_cached else 'built'}); steps: {timer.steps}")
    return 0


def reexec_in_private_mount_namespace() -> None:
    """Run the rest of the build in its own mount namespace so chroot mounts cannot leak."""
    if os.environ.get("CAIRN_BUILD_NAMESPACE") == "1":
        return
    os.environ["CAIRN_BUILD_NAMESPACE"] = "1"
    argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, *sys.argv]
    os.execvp("unshare", argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("deps", help="install host packages the build needs")
    sub.add_parser("base", help="build or reuse the cached base rootfs")
    sub.add_parser("version", help="print the image version")
    b = sub.add_parser("build", help="build the image")
    b.add_argument("--services", default=str(REPO / "services"), help="directory with Cairn's pyproject.toml")
    b.add_argument("--version", default=None, help="version in file names (default: from services/pyproject.toml)")
    b.add_argument("--force", action="store_true", help="rebuild even if inputs are unchanged")
    b.add_argument("--compress", action="store_true", help="also write a compressed qcow2")
    b.add_argument("--keep-work", action="store_true", help="keep build/work (the unpacked tree)")
    args = parser.parse_args()

    if args.command == "version":
        print(version())
        return 0
    if os.geteuid() != 0:
        raise SystemExit("image/build.py must run as root (mmdebstrap --mode=root, chroot, mknod)")
    if args.command == "deps":
        ensure_host_packages(HOST_PACKAGES)
        return 0
    reexec_in_private_mount_namespace()
    try:
        if args.command == "base":
            with Timer().step("base"):
                build_base()
            return 0
        return build(args)
    except CommandFailed as error:
        log(str(error))
        return 1


if __name__ == "__main__":
    sys.exit(main())
