"""The cluster interface and address a user picks: checked against the node's NICs and the
cluster's addresses before anything is applied, then written as a systemd-networkd unit."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.cluster import network
from cairn.errors import ValidationError
from cairn.system.diagnostics import parse_ip_addr

FIX = Path(__file__).resolve().parents[1] / "fixtures"

# An appliance in the testbed, as parse_ip_addr gives it: management NIC (user networking), the
# cluster NIC with its DHCP address, the LAN NIC enslaved to br0 which holds the LAN address.
APPLIANCE = [
    {"name": "lo", "state": "UNKNOWN", "mac": "00:00:00:00:00:00", "addresses": ["127.0.0.1/8", "::1/128"]},
    {"name": "enp0s2", "state": "UP", "mac": "52:54:00:ca:37:01", "addresses": ["10.0.2.15/24"]},
    {"name": "enp0s9", "state": "UP", "mac": "52:54:00:70:37:01",
     "addresses": ["10.77.1.11/24", "fe80::5054:ff:fe70:3701/64"]},
    {"name": "enp0s10", "state": "UP", "mac": "52:54:00:71:37:01", "addresses": []},
    {"name": "br0", "state": "UP", "mac": "52:54:00:71:37:01", "addresses": ["10.77.2.109/24"]},
]
LAN = ["enp0s10"]


def check(interface, address, taken=None):
    return network.check_choice(interface, address, APPLIANCE, LAN, taken or {})


def test_a_good_choice_becomes_a_networkd_unit_matching_the_nic_by_mac():
    choice = check("enp0s9", "10.77.1.11/24")
    assert choice == network.ClusterAddress("enp0s9", "52:54:00:70:37:01", "10.77.1.11/24")
    unit = network.networkd_unit(choice)
    assert "MACAddress=52:54:00:70:37:01\n" in unit and "Address=10.77.1.11/24\n" in unit
    assert "Gateway" not in unit and "DHCP=no" in unit


@pytest.mark.parametrize("interface, address, field, problem", [
    ("eth7", "10.77.1.11/24", "interface", "no interface 'eth7' on this node; its NICs: enp0s2, enp0s9"),
    ("br0", "10.77.1.11/24", "interface", "br0 carries the LAN"),
    ("enp0s10", "10.77.1.11/24", "interface", "enp0s10 carries the LAN"),
    ("lo", "10.77.1.11/24", "interface", "lo is not an ethernet NIC"),
    (None, "10.77.1.11/24", "interface", "name the cluster interface"),
    ("enp0s9", "10.77.1.11", "address", "an address with its prefix length"),
    ("enp0s9", "10.77.1.300/24", "address", "an address with its prefix length"),
    ("enp0s9", "10.77.1.11/24\n", "address", "an address with its prefix length"),
    ("enp0s9", "10.77.1.0/24", "address", "the network address of 10.77.1.0/24"),
    ("enp0s9", "10.77.1.255/24", "address", "the broadcast address of 10.77.1.0/24"),
    ("enp0s9", "127.0.0.5/8", "address", "cannot be a cluster address"),
    ("enp0s9", "10.77.1.11/31", "address", "leaves no room for a second node"),
    ("enp0s9", "10.77.9.11/24", "address", "outside enp0s9's subnet (10.77.1.0/24)"),
])
def test_a_bad_choice_is_refused_naming_the_field_and_the_problem(interface, address, field, problem):
    with pytest.raises(ValidationError) as refused:
        check(interface, address)
    assert list(refused.value.fields) == [field]
    assert problem in refused.value.fields[field]


def test_an_address_of_another_node_or_on_another_interface_is_a_clash():
    with pytest.raises(ValidationError, match="already node2's cluster address"):
        check("enp0s9", "10.77.1.12/24", {"10.77.1.12": "node2"})
    bare = [dict(nic, addresses=[]) if nic["name"] == "enp0s9" else nic for nic in APPLIANCE]
    with pytest.raises(ValidationError, match="10.77.2.0/24 overlaps br0's subnet 10.77.2.0/24"):
        network.check_choice("enp0s9", "10.77.2.50/24", bare, LAN, {})
    with pytest.raises(ValidationError, match="10.0.2.15 is already on enp0s2"):
        network.check_choice("enp0s9", "10.0.2.15/16", bare, LAN, {})
    # A NIC without an address yet takes any free subnet.
    assert network.check_choice("enp0s9", "192.168.50.1/24", bare, LAN, {}).address == "192.168.50.1/24"


def test_every_problem_at_once():
    with pytest.raises(ValidationError) as refused:
        check("eth7", "nonsense")
    assert set(refused.value.fields) == {"interface", "address"}


def test_on_real_ip_output_loopback_is_never_a_cluster_interface():
    interfaces = parse_ip_addr((FIX / "ip" / "host.json").read_text())
    with pytest.raises(ValidationError, match="lo is not an ethernet NIC"):
        network.check_choice("lo", "10.9.9.9/24", interfaces, [], {})
