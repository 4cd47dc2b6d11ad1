"""Three appliances on the testbed's private segments: they reach each other, survive each other's
faults, and a tiny test guest run by libvirt on one answers its heartbeat to another over the LAN.
(The power cut is pulled in test_cluster_appliance, once, where the cluster must also see it.)"""

import json
import re
import time
from pathlib import Path

import pytest

from cairn_testbed import testbed as testbed_module
import support

NODES = 3
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def testbed(testbed_nodes):
    """The shared testbed's three appliances (tests/e2e/conftest.py); this module runs last, since
    it cuts links, pulls a disk and resets a node."""
    return testbed_nodes(*range(NODES))


def wait_until(predicate, timeout, what):
    return support.wait_until(predicate, timeout, what, interval=1)


def link_line(node, mac):
    """The guest's `ip -o link` line of the NIC with this MAC."""
    return next(line for line in node.succeed("ip -o link").splitlines() if mac in line)


def test_appliances_get_their_cluster_addresses_and_reach_each_other(testbed):
    for node in testbed.nodes:
        wait_until(lambda: node.cluster_ip in node.succeed("ip -4 -o addr"), 120,
                   f"{node.name} to get {node.cluster_ip}")
    for node in testbed.nodes:
        for other in testbed.nodes:
            if other is not node:
                assert node.reaches(other.cluster_ip), f"{node.name} cannot reach {other.name}"


def test_private_segments_have_no_route_out(testbed):
    node = testbed.nodes[0]
    routes = json.loads(node.succeed("ip -4 -j route show default"))
    gateways = {route.get("gateway") for route in routes}
    assert not any(g and g.startswith(tuple(testbed_module.SEGMENTS.values())) for g in gateways), routes


def test_every_appliance_has_its_own_identity(testbed):
    identities = [(n.succeed("cat /etc/machine-id"), n.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub"),
                   # the console's own certificate (the CA becomes the cluster's, shared, in a cluster)
                   n.succeed("cat /var/lib/cairn/tls/server.pem"), n.succeed("cat /var/lib/cairn/admin-password"))
                  for n in testbed.nodes]
    for field in range(4):
        assert len({identity[field] for identity in identities}) == NODES


def test_link_cut_isolates_a_node_and_healing_restores_it(testbed):
    a, b, c = testbed.nodes
    testbed.partition(c)
    try:
        assert not a.reaches(c.cluster_ip, count=2)
        assert not c.reaches(b.cluster_ip, count=2)
        assert a.reaches(b.cluster_ip)
    finally:
        testbed.heal()
    wait_until(lambda: a.reaches(c.cluster_ip), 60, "the healed node to answer")
    c.set_link("cluster", False)
    try:
        wait_until(lambda: "NO-CARRIER" in link_line(c, c.macs["cluster"]),
                   30, "the guest to see its cluster link go down")
        assert not a.reaches(c.cluster_ip, count=2)
    finally:
        c.set_link("cluster", True)
    wait_until(lambda: a.reaches(c.cluster_ip), 60, "the cluster link to come back")


GUEST_IMAGE = REPO / "build" / "guest" / "cairn-testguest.img"
GUEST_MAC = "52:54:00:77:02:32"
HEARTBEAT = re.compile(r"CAIRN-HEARTBEAT boot=(\S+) n=(\d+)")


def test_test_guest_on_one_appliance_answers_another_over_the_lan(testbed):
    a, b, _ = testbed.nodes
    assert GUEST_IMAGE.exists(), "the test guest is not built: `make guest`"
    address = testbed.network.reserve("lan", GUEST_MAC, 60)    # .50/.51: test_vms_appliance's guests
    serial = a.start_test_guest(GUEST_IMAGE, "testguest", GUEST_MAC, testbed.inner_accel)
    started = time.monotonic()
    try:
        # execute, not succeed: an appliance busy with TCG inside TCG can miss an SSH banner now and then.
        first = wait_until(lambda: HEARTBEAT.search(a.execute(f"cat {serial} 2>/dev/null || true")[1]), 600,
                           "the guest's first heartbeat on its serial console")
        booted = time.monotonic() - started
        reply = wait_until(lambda: b.execute(f"curl -s --max-time 5 http://{address}/heartbeat")[1], 180,
                           "the guest's HTTP heartbeat from the other appliance")
        over_lan = HEARTBEAT.search(reply)
        assert over_lan.group(1) == first.group(1), "HTTP and serial heartbeats come from different boots"
        time.sleep(3)
        later = HEARTBEAT.search(b.succeed(f"curl -s --max-time 5 http://{address}/heartbeat"))
        assert (later.group(1), int(later.group(2)) > int(over_lan.group(2))) == (first.group(1), True)
        print(f"test guest ({testbed.inner_accel} inside TCG): first heartbeat {booted:.0f} s after start")
    finally:
        a.execute("virsh -c qemu:///system destroy testguest; virsh -c qemu:///system undefine testguest")


def test_pulled_disk_disappears_from_the_appliance(testbed):
    _, b, _ = testbed.nodes
    assert "CAIRN-VD2" in b.succeed("lsblk -dno SERIAL")
    b.detach_disk("CAIRN-VD2")
    wait_until(lambda: "CAIRN-VD2" not in b.succeed("lsblk -dno SERIAL"), 60, "the pulled disk to vanish")
    assert "CAIRN-VD1" in b.succeed("lsblk -dno SERIAL")


def test_reset_reboots_the_appliance(testbed):
    _, b, _ = testbed.nodes
    before = b.succeed("cat /proc/sys/kernel/random/boot_id").strip()
    b.reset()
    wait_until(lambda: (lambda r: r[0] == 0 and r[1].strip() not in ("", before))(
        b.execute("cat /proc/sys/kernel/random/boot_id", timeout=15)), 600, "the reset node to boot again")
    b.wait_for_console()
    assert b.running()
