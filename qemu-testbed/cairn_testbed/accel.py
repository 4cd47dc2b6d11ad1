"""Choose QEMU's accelerator: KVM only where a short probe boot shows it works, else TCG.

Why a probe: on some hosts /dev/kvm exists and opens, yet a guest with a normal Debian kernel hangs
right after the firmware ("Booting from ROM") while burning CPU, and ``-cpu host`` fails outright.
The probe boots the appliance's own kernel with no root filesystem under KVM; a working KVM reaches
the kernel's "VFS: Unable to mount root fs" panic within seconds, and ``panic=-1 -no-reboot`` makes
QEMU exit. Anything else within the time limit means TCG. The verdict is cached per host kernel and
QEMU binary under build/cache/.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROBE_SECONDS = 20
SUCCESS_MARKERS = ("VFS: Unable to mount root", "Kernel panic", "Run /init")


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    args: tuple[str, ...]
    reason: str


TCG = ("-accel", "tcg,thread=multi", "-cpu", "max")
KVM = ("-accel", "kvm", "-cpu", "host")


def kvm_usable_device() -> str | None:
    """None when /dev/kvm can be opened read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"/dev/kvm: {error.strerror}"
    os.close(fd)
    return None


def probe_kvm(qemu: str, kernel: Path, seconds: int = PROBE_SECONDS) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="cairn-kvm-probe-") as tmp:
        log = Path(tmp) / "serial.log"
        argv = [qemu, *KVM, "-machine", "q35", "-m", "512", "-smp", "1", "-display", "none",
                "-monitor", "none", "-serial", f"file:{log}", "-no-reboot", "-nodefaults",
                "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 loglevel=4"]
        started = time.monotonic()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        elapsed = time.monotonic() - started
        serial = log.read_text(errors="replace") if log.exists() else ""
        if any(marker in serial for marker in SUCCESS_MARKERS):
            return True, f"KVM probe booted a kernel in {elapsed:.1f} s"
        detail = (output or b"").decode(errors="replace").strip().splitlines()
        why = detail[-1] if detail else f"no kernel output within {seconds} s"
        return False, f"KVM probe failed ({why})"


def choose(qemu: str, kernel: Path | None, cache_dir: Path, want: str = "auto") -> Accel:
    """want: "auto" (probe), "kvm" or "tcg" (forced)."""
    if want == "tcg":
        return Accel("tcg", TCG, "forced")
    if want == "kvm":
        return Accel("kvm", KVM, "forced")
    problem = kvm_usable_device()
    if problem:
        return Accel("tcg", TCG, problem)
    if kernel is None or not kernel.exists():
        return Accel("tcg", TCG, "no kernel to probe KVM with")
    qemu_path = Path(shutil.which(qemu) or qemu)
    key = f"{platform.release()}|{qemu_path}|{qemu_path.stat().st_mtime if qemu_path.exists() else 0}"
    cache = cache_dir / "kvm-probe.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            ok, reason = cached["ok"], cached["reason"] + " (cached)"
            return Accel("kvm", KVM, reason) if ok else Accel("tcg", TCG, reason)
    except (OSError, ValueError, KeyError):
        pass
    ok, reason = probe_kvm(qemu, kernel)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "ok": ok, "reason": reason}) + "\n")
    return Accel("kvm", KVM, reason) if ok else Accel("tcg", TCG, reason)
