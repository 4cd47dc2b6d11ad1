"""The cluster interface: which NIC and address carry etcd, migration and storage traffic (pure).

Creating a cluster (and joining one) starts with the user's choice of an interface and a static
address with its prefix, e.g. enp0s9 and 10.77.1.11/24. Before anything is applied the choice is
checked against what the node has (`ip -j addr`, parsed by cairn.system.diagnostics.parse_ip_addr)
and what the cluster already uses:
  - the interface exists, is an ethernet NIC (not loopback, not the LAN bridge's member);
  - the address is a usable host address of its subnet (not the network or broadcast address,
    not loopback, link-local or multicast);
  - when the interface already has an address of that family (e.g. from DHCP), the new one is in
    that subnet: a typo that would cut the node off is caught;
  - the address is not another node's, and its subnet is not another interface's (the LAN's
    subnet on the cluster NIC would make routing ambiguous).
Problems come back all at once, keyed by field ("interface", "address"). The address is then
written as a systemd-networkd unit matching the NIC by MAC (`networkd_unit`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from cairn.errors import ValidationError

UNIT_PATH = "/etc/systemd/network/05-cairn-cluster.network"
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
LAN_BRIDGE = "br0"


@dataclass(frozen=True)
class ClusterAddress:
    interface: str
    mac: str
    address: str            # "10.77.1.11/24"

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


def check_choice(interface: Any, address: Any, interfaces: list[dict[str, Any]],
                 lan_members: list[str], taken: dict[str, str]) -> ClusterAddress:
    """The chosen interface and address, checked. `interfaces`: parse_ip_addr's list; `lan_members`:
    the NICs enslaved to the LAN bridge; `taken`: cluster addresses already used, address → node."""
    problems: dict[str, str] = {}
    by_name = {i["name"]: i for i in interfaces}
    nic = by_name.get(interface) if isinstance(interface, str) else None
    if nic is None:
        usable = sorted(name for name, i in by_name.items()
                        if name not in lan_members and name != LAN_BRIDGE and _ethernet(i))
        problems["interface"] = (f"no interface {interface!r} on this node; its NICs: {', '.join(usable) or 'none'}"
                                 if isinstance(interface, str) else "name the cluster interface, e.g. enp0s9")
    elif interface == LAN_BRIDGE or interface in lan_members:
        problems["interface"] = (f"{interface} carries the LAN (clients and VM bridges); pick another NIC "
                                 "for the cluster")
    elif not _ethernet(nic):
        problems["interface"] = f"{interface} is not an ethernet NIC"

    try:
        chosen = ipaddress.ip_interface(address) if isinstance(address, str) and "/" in address else None
    except ValueError:
        chosen = None
    if chosen is None:
        problems["address"] = "an address with its prefix length, e.g. 10.77.1.11/24"
    else:
        problem = _host_problem(chosen)
        if problem:
            problems["address"] = problem
        elif str(chosen.ip) in taken:
            problems["address"] = f"{chosen.ip} is already {taken[str(chosen.ip)]}'s cluster address"
        elif nic is not None and "interface" not in problems:
            problem = _subnet_problem(chosen, nic, interfaces)
            if problem:
                problems["address"] = problem
    if problems:
        raise ValidationError(problems)
    return ClusterAddress(interface, nic["mac"], str(chosen))


def _ethernet(nic: dict[str, Any]) -> bool:
    return bool(nic.get("mac")) and MAC.fullmatch(nic["mac"]) is not None and nic["mac"] != "00:00:00:00:00:00"


def _host_problem(chosen: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> str | None:
    ip, network = chosen.ip, chosen.network
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return f"{ip} cannot be a cluster address (loopback, link-local, multicast or unspecified)"
    if network.num_addresses < 4 and network.version == 4:
        return f"/{network.prefixlen} leaves no room for a second node; use /29 or wider"
    if network.version == 4 and ip in (network.network_address, network.broadcast_address):
        return f"{ip} is the {'network' if ip == network.network_address else 'broadcast'} address of {network}"
    return None


def _subnet_problem(chosen, nic: dict[str, Any], interfaces: list[dict[str, Any]]) -> str | None:
    own = [ipaddress.ip_interface(a) for a in nic.get("addresses", [])]
    same_family = [a for a in own if a.version == chosen.version and not a.ip.is_link_local]
    if same_family and not any(chosen.ip in a.network for a in same_family):
        return (f"{chosen.ip} is outside {nic['name']}'s subnet "
                f"({', '.join(str(a.network) for a in same_family)})")
    for other in interfaces:
        if other["name"] == nic["name"]:
            continue
        for text in other.get("addresses", []):
            theirs = ipaddress.ip_interface(text)
            if theirs.version != chosen.version or theirs.ip.is_loopback or theirs.ip.is_link_local:
                continue
            if theirs.ip == chosen.ip:
                return f"{chosen.ip} is already on {other['name']}"
            if theirs.network.overlaps(chosen.network):
                return f"{chosen.network} overlaps {other['name']}'s subnet {theirs.network}"
    return None


def networkd_unit(choice: ClusterAddress) -> str:
    """The .network file giving the cluster NIC its static address (matched by MAC: renames of the
    interface do not matter). No gateway and no DNS: the cluster segment is private."""
    return (
        "# Written by Cairn when this node joined or created its cluster: the cluster interface.\n"
        "[Match]\n"
        f"MACAddress={choice.mac}\n"
        "\n"
        "[Link]\n"
        "RequiredForOnline=yes\n"
        "\n"
        "[Network]\n"
        f"Address={choice.address}\n"
        "DHCP=no\n"
        "IPv6AcceptRA=no\n"
        "LinkLocalAddressing=no\n"
    )
