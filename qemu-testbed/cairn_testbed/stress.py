"""Stress the inner accelerator: start and stop the tiny test guest many times inside one appliance.

    PYTHONPATH=qemu-testbed python3 -m cairn_testbed.stress --inner kvm --cycles 24 [--smp 2]

Each cycle starts the guest under libvirt, waits for its first heartbeat on the serial console,
then destroys it. After every cycle the appliance must still answer SSH with the same boot id
(a crash or reset of the appliance ends the run). Prints one line per cycle and a summary:
cycles survived, median/max time to first heartbeat, and how the appliance fared.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

from .machine import TestbedError
from .run import BUILD, say
from .testbed import Testbed

HEARTBEAT = re.compile(r"CAIRN-HEARTBEAT boot=(\S+) n=(\d+)")
GUEST = BUILD / "guest" / "cairn-testguest.img"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inner", choices=("tcg", "kvm"), required=True)
    parser.add_argument("--cycles", type=int, default=24)
    parser.add_argument("--smp", type=int, default=2, help="appliance vCPUs")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to the first heartbeat")
    args = parser.parse_args(argv)
    if not GUEST.exists():
        print("stress: build the test guest first (make guest)", file=sys.stderr)
        return 2
    state = BUILD / f"stress-{args.inner}-smp{args.smp}"
    testbed = Testbed.create(1, state, cpus=args.smp, inner_accel=args.inner, log=say)
    node = testbed.nodes[0]
    times: list[float] = []
    outcome = "survived"
    try:
        testbed.start()
        appliance_boot = node.succeed("cat /proc/sys/kernel/random/boot_id").strip()
        serial = "/var/log/libvirt/qemu/stress-serial.log"
        for cycle in range(1, args.cycles + 1):
            node.execute(f"truncate -s0 {serial}")
            started = time.monotonic()
            if cycle == 1:
                node.start_test_guest(GUEST, "stress", "52:54:00:77:03:01", args.inner)
            else:
                node.succeed("virsh -c qemu:///system start stress")
            seen = None
            while time.monotonic() - started < args.timeout:
                code, out, _ = node.execute(f"cat {serial}", timeout=30)
                if code != 0:
                    break
                seen = HEARTBEAT.search(out)
                if seen:
                    break
                time.sleep(1)
            elapsed = time.monotonic() - started
            code, out, _ = node.execute("cat /proc/sys/kernel/random/boot_id", timeout=30)
            if code != 0 or out.strip() != appliance_boot or not node.running():
                outcome = f"appliance crashed or reset in cycle {cycle}"
                say(outcome)
                break
            if not seen:
                outcome = f"no heartbeat within {args.timeout:.0f} s in cycle {cycle}"
                say(outcome)
                break
            times.append(elapsed)
            say(f"cycle {cycle}: first heartbeat after {elapsed:.1f} s")
            node.succeed("virsh -c qemu:///system destroy stress")
        panics = [line for line in node.machine.serial_text().splitlines()
                  if re.search(r"Kernel panic|Oops|BUG:|corrupted stack", line)]
        summary = (f"inner={args.inner} smp={args.smp}: {len(times)}/{args.cycles} cycles, {outcome}; "
                   + (f"first heartbeat median {statistics.median(times):.1f} s, max {max(times):.1f} s"
                      if times else "no heartbeat") + f"; kernel problems on the appliance console: {len(panics)}")
        print(summary, flush=True)
        (state / "summary.txt").write_text(summary + "\n" + "\n".join(panics) + "\n")
        return 0 if outcome == "survived" else 1
    except TestbedError as error:
        print(f"stress: {error}", file=sys.stderr)
        return 2
    finally:
        testbed.stop()


if __name__ == "__main__":
    raise SystemExit(main())
