"""`make cluster`: boot N appliances (default 3) on the testbed's private networks.

    PYTHONPATH=qemu-testbed python3 -m cairn_testbed.cluster [--nodes 3] [--memory 2048]

Prints each node's console URL, login and SSH command, then waits; Ctrl-C (or SIGTERM) tears
everything down: every QEMU, the namespace with its bridges, and dnsmasq. State lives under
build/cluster/ and is thrown away on the next start.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import time

from .machine import TestbedError
from .run import BUILD, interrupt, require_tools, say
from .testbed import Testbed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--memory", type=int, default=2048, help="MiB per appliance")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--state", default=str(BUILD / "cluster"))
    parser.add_argument("--exit-when-ready", action="store_true", help="tear down once all are up")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    if not 1 <= args.nodes <= 7:
        print("make cluster: --nodes must be 1 to 7", file=sys.stderr)
        return 2
    testbed = None
    try:
        require_tools()
        for tool, package in (("dnsmasq", "dnsmasq-base"), ("ip", "iproute2")):
            if shutil.which(tool) is None:
                raise TestbedError(f"{tool} not found: install it with `apt-get install {package}`")
        shutil.rmtree(args.state, ignore_errors=True)
        testbed = Testbed.create(args.nodes, args.state, memory_mib=args.memory, accel=args.accel, log=say)
        say(f"booting {args.nodes} appliances ({testbed.nodes[0].machine.accel.name}); "
            "under TCG on 2 cores this takes a few minutes")
        testbed.start()
        for node in testbed.nodes:
            password = node.succeed("cat /var/lib/cairn/admin-password").strip()
            hostname = node.succeed("hostname").strip()
            print(f"\n{node.name} ({hostname}, cluster {node.cluster_ip})\n"
                  f"  Console  {node.url}/\n  Login    admin / {password}\n"
                  f"  SSH      {shlex.join(node.machine.ssh_argv(node.ssh_port))}", flush=True)
        print("\nCtrl-C tears the testbed down.", flush=True)
        if not args.exit_when_ready:
            while all(node.running() for node in testbed.nodes):
                time.sleep(1)
            say("an appliance stopped; tearing the testbed down")
        return 0
    except TestbedError as error:
        print(f"make cluster: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say("tearing the testbed down")
        return 0
    finally:
        if testbed is not None:
            testbed.stop()


if __name__ == "__main__":
    raise SystemExit(main())
