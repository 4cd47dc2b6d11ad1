"""Stress the inner accelerator: start/stop the tiny test guest many times, or live-migrate it.

    PYTHONPATH=qemu-testbed python3 -m cairn_testbed.stress --inner kvm --cycles 24 [--smp 2]
    PYTHONPATH=qemu-testbed python3 -m cairn_testbed.stress --inner tcg --migrations 20

Cycles (one appliance): each starts the guest under libvirt, waits for its first heartbeat on the
serial console, then destroys it. Migrations (two appliances): the guest starts on the first and
is live-migrated back and forth over the cluster segment (disk mirrored, --copy-storage-all); after
each migration its HTTP heartbeat must show the same boot id and a higher counter, and it must run
on exactly one appliance. Either way every appliance must keep its boot id and answer SSH (a crash
or reset ends the run). Prints one line per step and a summary.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import time

from .machine import TestbedError
from .run import BUILD, say
from .testbed import Testbed

HEARTBEAT = re.compile(r"CAIRN-HEARTBEAT boot=(\S+) n=(\d+) up=\S+ ip=(\S+)")
PROBLEMS = re.compile(r"Kernel panic|Oops|BUG:|corrupted stack|detected stalls|soft lockup|blocked for more than")
VIRSH = "virsh -c qemu:///system"
GUEST = BUILD / "guest" / "cairn-testguest.img"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inner", choices=("tcg", "kvm"), required=True)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--cycles", type=int, default=24, help="start/stop cycles in one appliance")
    what.add_argument("--migrations", type=int, help="live migrations between two appliances")
    parser.add_argument("--smp", type=int, default=2, help="appliance vCPUs")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to the first heartbeat")
    args = parser.parse_args(argv)
    if not GUEST.exists():
        print("stress: build the test guest first (make guest)", file=sys.stderr)
        return 2
    mode = "migrate" if args.migrations else "cycles"
    state = BUILD / f"stress-{mode}-{args.inner}-smp{args.smp}"
    shutil.rmtree(state, ignore_errors=True)      # fresh appliances every run (no guests left over)
    testbed = Testbed.create(2 if args.migrations else 1, state, cpus=args.smp, inner_accel=args.inner, log=say)
    try:
        testbed.start()
        boots = {node.name: node.succeed("cat /proc/sys/kernel/random/boot_id").strip() for node in testbed.nodes}
        if args.migrations:
            times, outcome = migrations(testbed, args.migrations, args.timeout, boots)
            figures = (f"{len(times)}/{args.migrations} migrations, {outcome}; "
                       + (f"migration median {statistics.median(times):.1f} s, max {max(times):.1f} s" if times else ""))
        else:
            times, outcome = cycles(testbed.nodes[0], args.cycles, args.inner, args.timeout, boots)
            figures = (f"{len(times)}/{args.cycles} cycles, {outcome}; "
                       + (f"first heartbeat median {statistics.median(times):.1f} s, max {max(times):.1f} s"
                          if times else "no heartbeat"))
        panics = [f"{node.name}: {line}" for node in testbed.nodes
                  for line in node.machine.serial_text().splitlines() if PROBLEMS.search(line)]
        summary = (f"inner={args.inner} smp={args.smp}: {figures}; "
                   f"kernel problems on the appliance consoles: {len(panics)}")
        print(summary, flush=True)
        (state / "summary.txt").write_text(summary + "\n" + "\n".join(panics) + "\n")
        return 0 if outcome == "survived" else 1
    except TestbedError as error:
        print(f"stress: {error}", file=sys.stderr)
        return 2
    finally:
        testbed.stop()


def appliances_intact(nodes, boots: dict[str, str]) -> str | None:
    """None while every appliance runs with the boot id it started with, else what went wrong."""
    for node in nodes:
        code, out, _ = node.execute("cat /proc/sys/kernel/random/boot_id", timeout=30)
        if not node.running() or code != 0 or out.strip() != boots[node.name]:
            return f"{node.name} crashed or reset"
    return None


def first_heartbeat(node, serial: str, timeout: float, with_address: bool = False):
    """The first heartbeat line on the guest's serial log (with_address: the first that has its LAN IP)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        code, out, _ = node.execute(f"cat {serial}", timeout=30)
        if code != 0:
            return None
        for seen in HEARTBEAT.finditer(out):
            if not with_address or seen.group(3) != "-":
                return seen
        time.sleep(1)
    return None


def cycles(node, count: int, inner: str, timeout: float, boots: dict[str, str]) -> tuple[list[float], str]:
    times: list[float] = []
    serial = "/var/log/libvirt/qemu/stress-serial.log"
    for cycle in range(1, count + 1):
        node.execute(f"truncate -s0 {serial}")
        started = time.monotonic()
        if cycle == 1:
            node.start_test_guest(GUEST, "stress", "52:54:00:77:03:01", inner)
        else:
            node.succeed(f"{VIRSH} start stress")
        seen = first_heartbeat(node, serial, timeout)
        elapsed = time.monotonic() - started
        broken = appliances_intact([node], boots)
        if broken:
            return times, f"{broken} in cycle {cycle}"
        if not seen:
            return times, f"no heartbeat within {timeout:.0f} s in cycle {cycle}"
        times.append(elapsed)
        say(f"cycle {cycle}: first heartbeat after {elapsed:.1f} s")
        node.succeed(f"{VIRSH} destroy stress")
    return times, "survived"


def heartbeat(node, address: str):
    code, out, _ = node.execute(f"curl -s --max-time 5 http://{address}/heartbeat", timeout=30)
    return HEARTBEAT.search(out) if code == 0 else None


def migrations(testbed, count: int, timeout: float, boots: dict[str, str]) -> tuple[list[float], str]:
    a, b = testbed.nodes
    a.trust(b)
    b.trust(a)
    serial = a.start_test_guest(GUEST, "mig", "52:54:00:77:03:02", testbed.inner_accel)
    b.copy_to(GUEST, "/var/lib/libvirt/images/mig.img")      # --copy-storage-all needs the file there
    seen = first_heartbeat(a, serial, timeout, with_address=True)
    if not seen:
        return [], f"no heartbeat with a LAN address within {timeout:.0f} s"
    boot, address = seen.group(1), seen.group(3)
    deadline = time.monotonic() + 120
    last = heartbeat(b, address)
    while last is None and time.monotonic() < deadline:      # the guest's address answers on the LAN
        time.sleep(2)
        last = heartbeat(b, address)
    if last is None:
        return [], f"the guest's heartbeat at {address} never answered over the LAN"
    times: list[float] = []
    here, there = a, b
    for step in range(1, count + 1):
        try:
            elapsed = here.migrate("mig", there)
        except TestbedError as error:
            return times, f"migration {step} {here.name} -> {there.name} failed: {error}"
        broken = appliances_intact(testbed.nodes, boots)
        if broken:
            return times, f"{broken} in migration {step}"
        running = [node.name for node in testbed.nodes
                   if "mig" in node.succeed(f"{VIRSH} list --name").split()]
        if running != [there.name]:
            return times, f"after migration {step} the guest runs on {running or 'no node'}, not only {there.name}"
        beat = None
        deadline = time.monotonic() + 60
        while beat is None and time.monotonic() < deadline:
            beat = heartbeat(here, address)
            if beat is None:
                time.sleep(1)
        if beat is None:
            return times, f"no heartbeat over the LAN after migration {step}"
        if beat.group(1) != boot:
            return times, f"the guest rebooted during migration {step} (boot id {beat.group(1)}, was {boot})"
        if int(beat.group(2)) <= int(last.group(2)):
            return times, f"the heartbeat counter did not move on in migration {step}"
        last = beat
        times.append(elapsed)
        say(f"migration {step}: {here.name} -> {there.name} in {elapsed:.1f} s, heartbeat n={beat.group(2)}")
        here, there = there, here
    return times, "survived"


if __name__ == "__main__":
    raise SystemExit(main())
