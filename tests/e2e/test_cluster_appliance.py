"""Three appliances become one cluster over the testbed's cluster segment, through the API.

node3 creates the cluster on its cluster NIC (a static address written through systemd-networkd,
etcd moved to mutual TLS there); node1 and node2 join with tokens from node3's console, bringing
what earlier modules left on them (pools, shares, users, a VM); node2's first try is refused for a
file user both have. Then every console lists and
manages every node; a job for node3 is started from node2's console; etcd answers nothing without
a cluster certificate, and nothing at all on the LAN; node3 powered off (the testbed's power cut:
its QEMU gone at once) is shown down everywhere while the others keep serving, and comes back by
itself.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from support import wait_until

CLUSTER_NIC_PREFIX = "10.77.1."


class Console:
    """A node's console as a user of the cluster sees it: its CA read from the node each time a
    request fails (the certificate changes when the node creates or joins the cluster)."""

    def __init__(self, node, password: str) -> None:
        self.node = node
        self.password = password
        self.session: requests.Session | None = None

    def _login(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        ca = self.node.machine.spec.run_dir / "cluster-ca.pem"
        ca.write_text(self.node.succeed("cat /var/lib/cairn/tls/ca.pem"))
        session.verify = str(ca)
        reply = session.post(self.node.url + "/api/v1/auth/login",
                             json={"username": "admin", "password": self.password}, timeout=60)
        reply.raise_for_status()
        session.headers["Authorization"] = "Bearer " + reply.json()["token"]
        return session

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        for attempt in range(2):
            try:
                self.session = self.session or self._login()
                return self.session.request(method, self.node.url + "/api/v1" + path, timeout=120, **kwargs)
            except (requests.RequestException, OSError):
                self.session = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def job(self, job_id: str, timeout: float = 600) -> dict:
        def ended():
            try:
                reply = self.call("GET", f"/jobs/{job_id}")
            except (requests.RequestException, OSError):
                return None
            if reply.status_code == 401:
                self.session = None
                return None
            job = reply.json() if reply.status_code == 200 else None
            return job if job and job["state"] not in ("queued", "running") else None
        return wait_until(ended, timeout, f"job {job_id} on {self.node.name} to end", interval=2)


def cluster_nic(node) -> tuple[str, str]:
    """(interface, address/prefix) of the node's NIC on the cluster segment (DHCP gave it one)."""
    for link in json.loads(node.succeed("ip -j addr")):
        for address in link.get("addr_info", []):
            if address.get("local", "").startswith(CLUSTER_NIC_PREFIX):
                return link["ifname"], f"{address['local']}/{address['prefixlen']}"
    raise AssertionError(f"{node.name} has no address on the cluster segment")


@pytest.fixture(scope="module")
def cluster(testbed_nodes, as_appliance):
    testbed = testbed_nodes(0, 1, 2)
    passwords = [as_appliance(node).console_password() for node in testbed.nodes]
    return testbed, passwords


def cairn_name(node) -> str:
    """The node's name in Cairn (its host name, cairn-xxxxxx), not the testbed's node1/2/3."""
    return node.succeed("hostname").strip()


def test_three_appliances_form_a_cluster_and_every_console_manages_every_node(cluster):
    testbed, passwords = cluster
    node1, node2, node3 = testbed.nodes
    third = Console(node3, passwords[2])
    interface, address = cluster_nic(node3)
    reply = third.call("POST", "/cluster", json={"name": "lab", "interface": interface, "address": address})
    assert reply.status_code == 202, reply.text
    started = time.monotonic()
    created = third.job(reply.json()["id"])
    assert created["state"] == "success", created
    print(f"cluster.create on {node3.name}: {time.monotonic() - started:.0f} s")
    assert "05-cairn-cluster.network" in node3.succeed("ls /etc/systemd/network")

    brought: dict[str, str] = {}            # pool → node, of what the joining nodes hold
    for node, password in ((node1, passwords[0]), (node2, passwords[1])):
        token = third.call("POST", "/cluster/tokens", json={"ttl": 900}).json()["token"]
        interface, address = cluster_nic(node)
        joining = Console(node, password)
        brought |= {p["name"]: p["node"] for p in joining.call("GET", "/pools").json()["pools"]}
        join = {"token": token, "interface": interface, "address": address}
        if node is node2:
            refuse_a_clash_then_rename(third, joining, join)
        reply = joining.call("POST", "/cluster/join", json=join)
        assert reply.status_code == 202, reply.text
        started = time.monotonic()
        # Once joined, the node's console answers with the cluster's accounts (node3's admin).
        joined = Console(node, passwords[2])
        name = cairn_name(node)
        wait_until(lambda: name in [n["name"] for n in third.call("GET", "/nodes").json()["nodes"] if n["online"]],
                   600, f"{node.name} online in node3's console", interval=2)
        print(f"join of {node.name}: token pasted → online in node3's console in {time.monotonic() - started:.0f} s")
        job = joined.job(reply.json()["id"])
        assert job["state"] == "success", job

    consoles = [Console(node, passwords[2]) for node in (node1, node2, node3)]
    names = sorted(cairn_name(node) for node in testbed.nodes)
    for console in consoles:
        wait_until(lambda: sorted(n["name"] for n in console.call("GET", "/nodes").json()["nodes"] if n["online"])
                   == names, 300, f"{console.node.name}'s console lists every node online", interval=2)
    status = consoles[0].call("GET", "/cluster").json()
    assert sorted(m["role"] for m in status["members"]) == ["voter"] * 3, status
    assert status["quorum"]["can_lose"] == 1
    # What node1 and node2 held came along (in a whole run: node1's pool tank, node2's vmtank and
    # the md-backed ones): node3's console lists them on their nodes.
    pools = {p["name"]: p["node"] for p in consoles[2].call("GET", "/pools").json()["pools"]}
    assert pools == brought, (pools, brought)
    print(f"pools brought by the joining nodes: {sorted(brought) or 'none (this module ran alone)'}")
    # A job for node3, started from node2's console, runs on node3.
    reply = consoles[1].call("POST", f"/nodes/{cairn_name(node3)}/diagnostics", json={"samples": 3})
    assert reply.status_code == 202, reply.text
    assert consoles[1].job(reply.json()["id"])["state"] == "success"


def refuse_a_clash_then_rename(cluster: Console, joining: Console, join: dict) -> None:
    """node2 has a file user alice with id 10000, as the cluster has (node1's from the shares
    module; made here when this module runs alone): the join is refused, listing both, and nothing
    changes; with node2's alice deleted, the same token joins."""
    if cluster.call("GET", "/file-users/alice").status_code == 404:
        assert cluster.call("POST", "/file-users", json={"name": "alice", "uid": 10000,
                                                         "password": "Secret-123"}).status_code == 201
    if joining.call("GET", "/file-users/alice").status_code == 404:
        assert joining.call("POST", "/file-users", json={"name": "alice", "uid": 10000,
                                                         "password": "Secret-123"}).status_code == 201
    reply = joining.call("POST", "/cluster/join", json=join)
    assert reply.status_code == 202, reply.text
    refused = joining.job(reply.json()["id"])
    assert refused["state"] == "failed", refused
    assert "file user alice" in refused["error"] and "file user id 10000" in refused["error"], refused["error"]
    assert joining.call("GET", "/cluster").json()["cluster"] is None          # still standalone
    assert joining.call("DELETE", "/file-users/alice").status_code == 200


def test_etcd_answers_only_cluster_certificates_and_nothing_on_the_lan(cluster):
    testbed, _ = cluster
    node1, node2, node3 = testbed.nodes
    lan_ip = node3.lan_ip()
    assert lan_ip, "node3 has no LAN address"
    for port in (2379, 2380):
        # From node1 over the LAN: nothing listens there.
        node1.fail(f"curl -sS --max-time 5 http://{lan_ip}:{port}/version")
        node1.fail(f"curl -sSk --max-time 5 https://{lan_ip}:{port}/version")
        # On the cluster segment: TLS only, and only with a certificate from the cluster CA.
        node1.fail(f"curl -sS --max-time 5 http://{node3.cluster_ip}:{port}/version")
    node1.fail(f"curl -sS --max-time 5 --cacert /var/lib/cairn/cluster/ca.pem https://{node3.cluster_ip}:2379/version")
    answer = node1.succeed(f"curl -sS --max-time 5 --cacert /var/lib/cairn/cluster/ca.pem "
                           f"--cert /var/lib/cairn/cluster/node.pem --key /var/lib/cairn/cluster/node.key "
                           f"https://{node3.cluster_ip}:2379/version")
    assert "etcdserver" in answer


def test_a_node_powered_off_is_shown_down_everywhere_and_comes_back_by_itself(cluster):
    testbed, passwords = cluster
    node1, node2, node3 = testbed.nodes
    consoles = [Console(node, passwords[2]) for node in (node1, node2)]
    name = cairn_name(node3)

    def shown(online: bool, timeout: float, what: str) -> float:
        started = time.monotonic()
        for console in consoles:
            wait_until(lambda: {n["name"]: n["online"] for n in console.call("GET", "/nodes").json()["nodes"]}
                       .get(name) is online, timeout, f"{console.node.name} shows {node3.name} {what}", interval=1)
        return time.monotonic() - started

    node3.power_cut()
    # The testbed pulled the plug: QEMU is gone, node3 answers nothing, the others run on.
    assert not node3.running()
    assert not node1.reaches(node3.cluster_ip, count=2)
    for node in (node1, node2):
        assert node.running()
        assert node.succeed("systemctl is-active cairn-agent cairn-web etcd").split() == ["active"] * 3
    assert node1.reaches(node2.cluster_ip)
    print(f"{node3.name} shown down in both other consoles {shown(False, 120, 'down'):.0f} s after the power cut")
    assert consoles[0].call("GET", "/cluster").json()["quorum"]["has_quorum"]
    assert consoles[1].call("GET", "/pools").status_code == 200
    node3.start()
    node3.wait_for_console()
    assert node1.reaches(node3.cluster_ip)
    print(f"{node3.name} online again in both consoles {shown(True, 300, 'back'):.0f} s after its console answered")
