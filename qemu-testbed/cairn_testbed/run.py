"""`make run`: boot one Cairn appliance from the built image and wait until its console answers.

    PYTHONPATH=qemu-testbed python3 -m cairn_testbed.run [--fresh] [--image build/cairn-V-amd64.qcow2]

A second run resumes the same appliance (same overlay, disks, UEFI variables, SSH key);
--fresh (make run FRESH=1) throws it away and starts a new one. Ctrl-C (or SIGTERM) presses the
ACPI power button through QMP and waits for the guest to power off; a second Ctrl-C pulls the plug.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import accel as accel_module
from .machine import Machine, MachineSpec, PortForward, TestbedError, find_firmware, pid_alive, port_free

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
PASSWORD_PATTERN = r"Cairn admin password: (\S+)"


def say(message: str) -> None:
    try:
        print(f"[run {time.strftime('%H:%M:%S')}] {message}", flush=True)
    except OSError:
        pass  # the terminal or a pipe (| tee) went away with Ctrl-C: keep shutting down


def require_tools() -> None:
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                          ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            raise TestbedError(f"{tool} not found: install it with `apt-get install {package}`")
    find_firmware()


def newest_manifest() -> Path | None:
    manifests = sorted(BUILD.glob("cairn-*-amd64.json"), key=lambda p: p.stat().st_mtime)
    return manifests[-1] if manifests else None


def rebuild(reason: str) -> None:
    say(f"{reason}: rebuilding it with image/build.py (several minutes on a cold cache)")
    result = subprocess.run([sys.executable, str(REPO / "image" / "build.py"), "build", "--force"])
    if result.returncode != 0:
        raise TestbedError("the image build failed; see its output above")


def image_problem(image: Path) -> str | None:
    if not image.exists():
        return f"{image} does not exist"
    if image.suffix != ".qcow2":
        return None if image.stat().st_size > 0 else f"{image} is empty"  # raw: nothing to check
    check = subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", str(image)], capture_output=True, text=True)
    if check.returncode != 0:
        return f"{image} is corrupt ({check.stderr.strip() or 'qemu-img check failed'})"
    return None


def usable_image(image: Path) -> tuple[Path, dict]:
    """The image to boot and its build manifest; a missing or corrupt build output is rebuilt."""
    problem = image_problem(image)
    if problem:
        if image.parent.resolve() != BUILD.resolve() or not image.name.startswith("cairn-"):
            raise TestbedError(f"{problem}; `make image` builds one under build/")
        rebuild(problem)
        problem = image_problem(image)
        if problem:
            raise TestbedError(f"{problem} even after a rebuild")
    manifest_path = image.with_name(image.name.rsplit(".", 1)[0] + ".json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    return image, manifest


def pick_port(wanted: int, taken: set[int]) -> int:
    port = wanted
    while port in taken or not port_free(port):
        port += 1
        if port > wanted + 100:
            raise TestbedError(f"no free TCP port on 127.0.0.1 between {wanted} and {port}")
    if port != wanted:
        say(f"127.0.0.1:{wanted} is in use; using 127.0.0.1:{port} instead")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=None, help="qcow2 or raw image (default: newest build)")
    parser.add_argument("--run-dir", type=Path, default=BUILD / "run")
    parser.add_argument("--fresh", action="store_true", help="discard the previous appliance")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--https-port", type=int, default=8443)
    parser.add_argument("--ssh-port", type=int, default=2222)
    parser.add_argument("--memory", type=int, default=4096, help="MiB")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the console")
    parser.add_argument("--exit-when-ready", action="store_true",
                        help="shut down cleanly once the console answers (for measurements and CI)")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM shut down cleanly, even where SIGINT was inherited as ignored (a
    # background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)

    machine = None
    try:
        require_tools()
        if args.image is None:
            manifest_path = newest_manifest()
            if manifest_path is None:
                rebuild("no image under build/")
                manifest_path = newest_manifest()
            args.image = BUILD / json.loads(manifest_path.read_text())["qcow2"]
        image, manifest = usable_image(args.image)

        running = pid_alive(args.run_dir / "qemu.pid")
        if running:
            raise TestbedError(f"the appliance in {args.run_dir} is already running (QEMU pid {running}); "
                               "stop it first (Ctrl-C where it was started)")
        if args.fresh and args.run_dir.exists():
            say(f"FRESH: removing the previous appliance in {args.run_dir}")
            shutil.rmtree(args.run_dir)

        https_port = pick_port(args.https_port, set())
        ssh_port = pick_port(args.ssh_port, {https_port})
        kernel = image.with_name(manifest["vmlinuz"]) if manifest.get("vmlinuz") else None
        chosen = accel_module.choose("qemu-system-x86_64", kernel, BUILD / "cache", args.accel)
        say(f"accelerator: {chosen.name} ({chosen.reason})")

        spec = MachineSpec(name="cairn-run", image=image, run_dir=args.run_dir.resolve(),
                           memory_mib=args.memory, cpus=args.cpus,
                           forwards=[PortForward(https_port, 443), PortForward(ssh_port, 22)])
        machine = Machine(spec, chosen, log=say)
        fresh = machine.prepare(manifest.get("inputs"))
        say(("starting a new appliance" if fresh else "resuming the appliance") + f" in {spec.run_dir}")
        machine.start()
    except TestbedError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if machine is not None:
            machine.kill()
        return 130

    try:
        ready = wait_until_ready(machine, https_port, ssh_port, args.timeout)
        if not machine.running():
            say("QEMU exited; last serial lines:\n" + "\n".join(machine.serial_text().splitlines()[-20:]))
            return 1
        print_banner(machine, chosen, https_port, ssh_port, ready)
        if args.exit_when_ready:
            raise KeyboardInterrupt
        while machine.running():
            time.sleep(1)
        say("the appliance powered off")
        return 0
    except KeyboardInterrupt:
        say("shutting the appliance down (ACPI power button; Ctrl-C again pulls the plug)")
        try:
            started = time.monotonic()
            if machine.powerdown(timeout=180):
                say(f"powered off cleanly in {time.monotonic() - started:.0f} s")
                return 0
            say("no clean power-off within 180 s; stopping QEMU")
        except KeyboardInterrupt:
            say("pulling the plug")
        machine.kill()
        return 1


def interrupt(signum, frame) -> None:
    """SIGTERM behaves like Ctrl-C: shut the guest down cleanly."""
    raise KeyboardInterrupt


def wait_until_ready(machine: Machine, https_port: int, ssh_port: int, timeout: float) -> dict:
    """Poll until the console answers over HTTPS; note when SSH and the password showed up."""
    seen: dict = {}
    deadline = time.monotonic() + timeout
    next_report = 60.0
    while machine.running() and time.monotonic() < deadline:
        if "ssh" not in seen and machine.ssh(ssh_port, "true", timeout=15).returncode == 0:
            seen["ssh"] = machine.elapsed()
            say(f"SSH answers after {seen['ssh']:.0f} s")
        if "password" not in seen:
            match = re.search(PASSWORD_PATTERN, machine.serial_text())
            if match:
                seen["password"] = match.group(1)
        if "console" not in seen and machine.https_answers(https_port):
            seen["console"] = machine.elapsed()
            say(f"console answers after {seen['console']:.0f} s")
        if "console" in seen and "ssh" in seen and ("password" in seen or machine.elapsed() > seen["console"] + 30):
            return seen
        if machine.elapsed() > next_report:
            last = [line for line in machine.serial_text().splitlines() if line.strip()][-1:] or ["(no output yet)"]
            say(f"still booting after {machine.elapsed():.0f} s; serial: {last[0][:120]}")
            next_report += 60
        time.sleep(3)
    if machine.running():
        say(f"the console did not answer within {timeout:.0f} s; the appliance keeps running for a look "
            f"(serial log {machine.spec.serial_log})")
    return seen


def print_banner(machine: Machine, chosen, https_port: int, ssh_port: int, ready: dict) -> None:
    spec = machine.spec
    password = ready.get("password")
    if not password and "ssh" in ready:
        result = machine.ssh(ssh_port, "cat /var/lib/cairn/admin-password 2>/dev/null")
        password = result.stdout.strip() or None
    login = f"admin / {password}" if password else "admin / (password not found: see /var/lib/cairn/admin-password)"
    print(f"""
Cairn is running ({chosen.name}).
  Console  https://127.0.0.1:{https_port}/   (the appliance's own self-signed certificate)
  Login    {login}
  SSH      {' '.join(machine.ssh_argv(ssh_port))}
  Logs     {spec.serial_log} (serial), QMP at {spec.qmp_socket}
Ctrl-C shuts it down cleanly; `make run` resumes this appliance, `make run FRESH=1` starts a new one.
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
