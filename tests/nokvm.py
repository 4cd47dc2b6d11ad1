"""Run a command (libvirtd) with /dev/kvm hidden, in a mount namespace of its own.

This build host's /dev/kvm exists but hangs (measured on the build machines): libvirtd then probes QEMU with KVM on
every domain definition and waits for the probe to time out (~50-100 s per `defineXML`). Over
/dev/kvm this binds an empty regular file, so opening it fails at once and libvirt settles on
TCG. Mounts made on the host later under a shared mount (the tests' pools) propagate in (slave
propagation). `--bind SRC:DST` binds more files in the namespace (e.g. a qemu.conf with
`namespaces = []`: libvirt's per-domain /dev cannot carry the hidden /dev/kvm mount over).

    python tests/nokvm.py [--bind SRC:DST ...] libvirtd [args...]
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    binds = []
    while len(argv) >= 2 and argv[0] == "--bind":
        source, _, dest = argv[1].partition(":")
        binds.append((source, dest))
        argv = argv[2:]

    def check(result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    check(libc.unshare(CLONE_NEWNS), "unshare")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "making / a slave mount")
    if os.path.exists("/dev/kvm"):
        fake = tempfile.NamedTemporaryFile(prefix="no-kvm-", delete=False)
        check(libc.mount(fake.name.encode(), b"/dev/kvm", None, MS_BIND, None), "hiding /dev/kvm")
    for source, dest in binds:
        check(libc.mount(source.encode(), dest.encode(), None, MS_BIND, None), f"binding {source} on {dest}")
    os.execvp(argv[0], argv)
    return 127


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
