"""Creating a cluster on a real node: etcd (run as the appliance runs it: settings from environment
files, restarted by the job), cairn-agent and cairn-web as processes on a 127.x address of their own.
The job moves etcd to the cluster address over mutual TLS, gives the console a certificate from the
cluster CA, and the node keeps working, across restarts; join tokens are issued from it."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest
import requests

from cairn import config as config_mod
from cairn.cluster import events, nodes, pki, tokens
from cairn.runner import Runner
from support import finish_job, start_node, wait_until

# A 127.x.y.0/24 of this module's own: each node's etcd listens on etcd's usual ports there.
NET = f"127.{random.randint(100, 250)}.{random.randint(0, 250)}"


def verified(stack, ca: str, password: str | None = None) -> requests.Session:
    session = stack.session(login=False)
    session.verify = ca
    reply = session.post(stack.url + "/api/v1/auth/login",
                         json={"username": "admin", "password": password or stack.password})
    reply.raise_for_status()
    session.headers["Authorization"] = "Bearer " + reply.json()["token"]
    return session


def refused(url: str, **options) -> str:
    """Why a request to url is refused (the exception's class), or '' when it is answered."""
    try:
        requests.get(url, timeout=3, **options)
    except requests.RequestException as exc:
        return type(exc).__name__
    return ""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    stack = start_node(tmp_path_factory.mktemp("node1"), f"{NET}.1", "node1")
    CLUSTER_PASSWORD.append(stack.password)
    yield stack
    stack.stop()


def standalone(tmp_path_factory, number: int):
    stack = start_node(tmp_path_factory.mktemp(f"node{number}"), f"{NET}.{number}", f"node{number}")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def node2(tmp_path_factory):
    yield from standalone(tmp_path_factory, 2)


@pytest.fixture(scope="module")
def node3(tmp_path_factory):
    yield from standalone(tmp_path_factory, 3)


@pytest.fixture(scope="module")
def node4(tmp_path_factory):
    yield from standalone(tmp_path_factory, 4)


def test_a_create_with_an_address_that_is_not_the_nodes_fails_and_changes_nothing(node):
    session = node.session()
    job = finish_job(session, node, "post", "/cluster", json={"name": "office", "address": "10.99.0.5/24"})
    assert job["state"] == "failed"
    assert "10.99.0.5 is not an address of this node" in job["error"]
    cluster = session.get(node.url + "/api/v1/cluster").json()
    assert cluster["cluster"] is None
    assert requests.get(f"http://{NET}.1:2379/version", timeout=3).ok       # etcd as it was
    reply = session.post(node.url + "/api/v1/cluster", json={"name": "", "address": "x"})
    assert reply.status_code == 400 and "name" in reply.text
    reply = session.post(node.url + "/api/v1/cluster/tokens", json={})
    assert reply.status_code == 409 and "not in a cluster" in reply.json()["error"]["message"]


def test_create_moves_etcd_to_mutual_tls_and_the_console_to_a_certificate_from_the_cluster_ca(node):
    session = node.session()
    started = time.monotonic()
    submitted = json.loads(ctl(node, "--json", "cluster", "create", "office", "--address", f"{NET}.1/24").stdout)
    # The console changes its certificate on the way (tls/ca.pem becomes the cluster CA): ask anew
    # each time, through whatever answers.
    job = wait_until(lambda: _ended(node, submitted["id"]), 120, "cluster.create to end")
    print(f"cluster.create took {time.monotonic() - started:.1f} s")
    assert job["state"] == "success", job
    ca = str(node.dir / "cluster" / "ca.pem")
    fingerprint = pki.fingerprint(open(ca, "rb").read())
    assert job["result"]["ca_fingerprint"] == fingerprint

    # The console now presents the node certificate, issued by the cluster CA (after its reload).
    def console_cert():
        return ssl.get_server_certificate((f"{NET}.1", int(node.url.rsplit(":", 1)[1]))).encode()
    wait_until(lambda: pki.issued_by(console_cert(), open(ca, "rb").read()), 30,
               "the console presents a certificate from the cluster CA")
    session = wait_until(lambda: _try(verified, node, ca), 30, "the reloaded console answers")
    cluster = session.get(node.url + "/api/v1/cluster").json()
    assert cluster["cluster"]["name"] == "office" and cluster["cluster"]["ca_fingerprint"] == fingerprint
    assert [(n["id"], n["address"]) for n in cluster["cluster"]["nodes"]] == [(node.cfg.node_id, f"{NET}.1")]
    assert [m["client_urls"] for m in cluster["members"]] == [[f"https://{NET}.1:2379"]]

    # etcd: nothing in plain HTTP any more; TLS only with a certificate from the cluster CA.
    assert refused(f"http://{NET}.1:2379/version") == "ConnectionError"
    assert refused(f"https://{NET}.1:2379/version", verify=ca) in ("SSLError", "ConnectionError")
    files = (str(node.dir / "cluster" / "node.pem"), str(node.dir / "cluster" / "node.key"))
    assert requests.get(f"https://{NET}.1:2379/version", verify=ca, cert=files, timeout=3).ok

    # The node's settings say so, and its services work on the secured store: a job runs.
    cfg = config_mod.load(str(node.config_path))
    assert cfg.etcd_endpoints == (f"https://{NET}.1:2379",) and cfg.cluster.tls and cfg.cluster.address == f"{NET}.1"
    diagnostics = finish_job(session, node, "post", f"/nodes/{node.node}/diagnostics", json={"samples": 3})
    assert diagnostics["state"] == "success", diagnostics

    # cairnctl fetches the CA (public), and shows the cluster.
    assert ctl(node, "--insecure", "cluster", "ca", "--pem").stdout == open(ca).read()
    assert ctl(node, "--ca", ca, "cluster", "status").stdout.startswith(f"cluster office (1 node), CA {fingerprint}\n")

    # Creating again is refused.
    reply = session.post(node.url + "/api/v1/cluster", json={"name": "again", "address": f"{NET}.1/24"})
    assert reply.status_code == 409 and "already in cluster office" in reply.json()["error"]["message"]


def test_the_cluster_node_comes_back_as_such_after_its_services_restart(node):
    ca = str(node.dir / "cluster" / "ca.pem")
    node.etcd.daemon.signal(1)      # SIGHUP: the launcher restarts etcd from its files
    node.agent.stop()
    node.restart_agent()
    node.web.stop()
    from cairn.devstack import start_web, wait_http
    node.web = start_web(node.config_path, node.dir / "web.log")
    wait_http(node.url + "/api/v1/health", timeout=60, verify=ca, daemon=node.web)
    session = verified(node, ca)
    assert session.get(node.url + "/api/v1/cluster").json()["cluster"]["name"] == "office"
    job = finish_job(session, node, "post", f"/nodes/{node.node}/diagnostics", json={"samples": 2})
    assert job["state"] == "success", job


def test_join_tokens_carry_the_ca_fingerprint_and_this_nodes_address_and_are_kept_without_secret(node):
    ca = str(node.dir / "cluster" / "ca.pem")
    session = verified(node, ca)
    issued = json.loads(ctl(node, "--ca", ca, "--json", "cluster", "token", "--ttl", "600").stdout)
    token = tokens.parse(issued["token"])
    assert token.ca_fingerprint == pki.fingerprint(open(ca, "rb").read())
    assert token.address == issued["address"] == node.url.removeprefix("https://")
    listed = session.get(node.url + "/api/v1/cluster/tokens").json()["tokens"]
    assert [t["id"] for t in listed] == [issued["id"]] and "secret" not in str(listed)
    assert listed[0]["used_by"] is None and listed[0]["created_by"] == node.node
    assert session.post(node.url + "/api/v1/cluster/tokens", json={"ttl": 10}).status_code == 400
    assert ctl(node, "--ca", ca, "cluster", "tokens").stdout.splitlines()[1].split()[0] == issued["id"]
    assert ctl(node, "--ca", ca, "cluster", "revoke", issued["id"]).stdout.strip() == f"join token {issued['id']} revoked"
    assert session.delete(node.url + f"/api/v1/cluster/tokens/{issued['id']}").status_code == 404
    assert session.get(node.url + "/api/v1/cluster/tokens").json()["tokens"] == []


# --- joining ---------------------------------------------------------------------------------------
def cluster_ca(node) -> str:
    return str(node.dir / "cluster" / "ca.pem")


def new_token(node) -> str:
    session = verified(node, cluster_ca(node))
    return session.post(node.url + "/api/v1/cluster/tokens", json={"ttl": 600}).json()["token"]


def tampered(text: str, **change) -> str:
    import base64
    body = json.loads(base64.urlsafe_b64decode(text.removeprefix(tokens.PREFIX) + "=="))
    body.update(change)
    return tokens.PREFIX + base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def join(stack, token: str, number: int) -> dict:
    session = stack.session()
    reply = session.post(stack.url + "/api/v1/cluster/join", json={"token": token, "address": f"{NET}.{number}/24"})
    assert reply.status_code == 202, reply.text
    return wait_until(lambda: _ended(stack, reply.json()["id"]), 180, "cluster.join to end")


def test_a_join_with_a_bad_token_is_refused_naming_the_problem_and_changes_nothing(node, node2):
    session = node2.session()
    reply = session.post(node2.url + "/api/v1/cluster/join", json={"token": "hello", "address": f"{NET}.2/24"})
    assert reply.status_code == 400 and "not a Cairn join token" in reply.text
    token = new_token(node)
    wrong_secret = join(node2, tampered(token, s="x" * 32), 2)
    assert wrong_secret["state"] == "failed" and "the join token's secret is wrong" in wrong_secret["error"]
    other_ca = join(node2, tampered(token, f="sha256:" + "0" * 64), 2)
    assert other_ca["state"] == "failed" and "is not the one the token names" in other_ca["error"]
    other_cluster = join(node2, tampered(token, c="0" * 16), 2)
    assert other_cluster["state"] == "failed" and "for another cluster" in other_cluster["error"]
    assert session.get(node2.url + "/api/v1/cluster").json()["cluster"] is None
    assert len(verified(node, cluster_ca(node)).get(node.url + "/api/v1/cluster").json()["members"]) == 1
    # The sponsor's side: a join request needs a good token, nothing else lets one in.
    anonymous = requests.Session()
    anonymous.trust_env = False          # else $REQUESTS_CA_BUNDLE replaces the cluster CA
    anonymous.verify = cluster_ca(node)
    request = {"token": tampered(token, s="y" * 32), "node_id": "1" * 32, "name": "intruder",
               "address": f"{NET}.9", "csr": "x"}
    reply = anonymous.post(node.url + "/api/v1/cluster/join-requests", json=request)
    assert reply.status_code == 401 and "secret is wrong" in reply.json()["error"]["message"]
    reply = anonymous.post(node.url + "/api/v1/cluster/join-requests", json={**request, "token": "x"})
    assert reply.status_code == 400 and "token" in reply.json()["error"]["fields"]


def test_a_node_joins_with_its_records_and_both_consoles_manage_both_nodes(node, node2):
    cluster = verified(node, cluster_ca(node))
    password = node.password
    assert node2.session().post(node2.url + "/api/v1/file-users",
                                json={"name": "bob", "password": "Secret-123"}).status_code == 201
    token = new_token(node)
    started = time.monotonic()
    job = join(node2, token, 2)
    assert job["state"] == "success", job
    assert job["result"]["role"].startswith("voting member"), job["result"]
    wait_until(lambda: {n["name"]: n["online"] for n in cluster.get(node.url + "/api/v1/nodes").json()["nodes"]}
               == {"node1": True, "node2": True}, 60, "node1's console shows node2 online")
    print(f"join: token pasted → node2 online in node1's console in {time.monotonic() - started:.1f} s")
    # node2's console now presents a certificate from the cluster CA, and its users are the cluster's.
    second = wait_until(lambda: _try(verified, node2, cluster_ca(node), password), 60, "node2's console, reloaded")
    assert sorted(n["name"] for n in second.get(node2.url + "/api/v1/nodes").json()["nodes"]) == ["node1", "node2"]
    assert cluster.get(node.url + "/api/v1/file-users/bob").status_code == 200       # bob came along
    status = cluster.get(node.url + "/api/v1/cluster").json()
    assert sorted((m["name"], m["role"]) for m in status["members"]) == sorted(
        [(node.cfg.node_id, "voter"), (node2.cfg.node_id, "voter")])
    assert [n["name"] for n in status["cluster"]["nodes"]] == sorted(["node1", "node2"], key=lambda n: {
        "node1": node.cfg.node_id, "node2": node2.cfg.node_id}[n])
    # A job for node2 submitted on node1's console runs on node2; the token is used up.
    diagnostics = finish_job(cluster, node, "post", "/nodes/node2/diagnostics", json={"samples": 2})
    assert diagnostics["state"] == "success" and diagnostics["node"] == "node2"
    assert refused(f"http://{NET}.2:2379/version") == "ConnectionError"
    # node2's agent started itself again after the join without the cluster seeing it gone: it
    # left its lease to run out while the new process bound node-alive/node2 again.
    time.sleep(nodes.NODE_LEASE_TTL)
    said = [e["message"] for e in events.recent(node.store(), limit=100)]
    assert "node node2 stopped answering (its lease expired)" not in said, said
    again = second.post(node2.url + "/api/v1/cluster/join", json={"token": token, "address": f"{NET}.2/24"})
    assert again.status_code == 409 and "already in cluster office" in again.json()["error"]["message"]


def test_a_name_clash_refuses_the_join_listing_the_names_then_the_renamed_node_joins(node, node3):
    cluster = verified(node, cluster_ca(node))
    assert cluster.post(node.url + "/api/v1/file-users", json={"name": "alice", "password": "Secret-123"}).status_code == 201
    own = node3.session()
    assert own.post(node3.url + "/api/v1/file-users", json={"name": "alice", "password": "Secret-123"}).status_code == 201
    token = new_token(node)
    refused_job = join(node3, token, 3)
    assert refused_job["state"] == "failed" and "file user alice" in refused_job["error"], refused_job
    assert "nothing was changed" in refused_job["error"]
    assert own.get(node3.url + "/api/v1/cluster").json()["cluster"] is None          # still standalone
    assert len(cluster.get(node.url + "/api/v1/cluster").json()["members"]) == 2
    assert own.delete(node3.url + "/api/v1/file-users/alice").status_code == 200
    job = join(node3, token, 3)                                                    # the same token
    assert job["state"] == "success", job
    status = cluster.get(node.url + "/api/v1/cluster").json()
    assert sorted(m["role"] for m in status["members"]) == ["voter"] * 3
    assert status["quorum"]["can_lose"] == 1


def test_a_join_that_fails_after_the_cluster_admitted_the_node_is_undone(node, node4):
    cluster = verified(node, cluster_ca(node))
    own = node4.session()
    # (an id of its own: every node numbers its users from 10000, and the same id is a clash)
    assert own.post(node4.url + "/api/v1/file-users",
                    json={"name": "dave", "password": "Secret-123", "uid": 20000}).status_code == 201
    # etcd's new data directory cannot be made (a file is in the way): after the node was admitted.
    Path(node4.cfg.cluster.etcd_data_dir + "-cluster").write_text("in the way")
    job = join(node4, new_token(node), 4)
    assert job["state"] == "failed" and "cannot make etcd's data directory" in job["error"], job
    assert "the join was undone" in job["error"]
    assert len(cluster.get(node.url + "/api/v1/cluster").json()["members"]) == 3
    assert cluster.get(node.url + "/api/v1/file-users/dave").status_code == 404
    assert "node4" not in [n["name"] for n in cluster.get(node.url + "/api/v1/cluster").json()["cluster"]["nodes"]]
    assert own.get(node4.url + "/api/v1/cluster").json()["cluster"] is None
    assert own.get(node4.url + "/api/v1/file-users/dave").status_code == 200
    again = finish_job(own, node4, "post", "/nodes/node4/diagnostics", json={"samples": 2})
    assert again["state"] == "success"


# --- quorum lost and regained -----------------------------------------------------------------
def etcd_pids(stack) -> list[int]:
    """The node's etcd process (the child of its launcher)."""
    out = Runner().run(["pgrep", "-P", str(stack.etcd.daemon.pid), "-x", "etcd"], check=False).stdout
    return [int(pid) for pid in out.split()]


def test_a_node_cut_off_from_the_quorum_says_so_and_refuses_changes_until_it_is_back(node, node2, node3):
    """node2's and node3's etcd members frozen (as if cut off by the network): node1's console answers
    503 saying it is cut off and refuses a change; they answer again and so does node1."""
    cluster = verified(node, cluster_ca(node))
    frozen = etcd_pids(node2) + etcd_pids(node3)
    assert len(frozen) == 2
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        def refused_read():
            reply = _try(lambda: cluster.get(node.url + "/api/v1/pools", timeout=30))
            return [reply] if reply is not None and reply.status_code == 503 else None     # (a 503 is falsy)
        reply, = wait_until(refused_read, 60, "node1's console to answer 503")
        assert "cut off from the other nodes" in reply.json()["error"]["message"], reply.text
        change = cluster.post(node.url + "/api/v1/file-users", json={"name": "carol", "password": "Secret-123"},
                              timeout=60)
        assert change.status_code == 503 and "refuses changes" in change.json()["error"]["message"]
        health = cluster.get(node.url + "/api/v1/health", timeout=30)
        assert health.status_code == 503 and health.json()["store"] == "unreachable"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: (r := _try(lambda: cluster.get(node.url + "/api/v1/pools", timeout=30))) is not None
               and r.status_code == 200, 60, "node1's console to answer again")
    assert cluster.get(node.url + "/api/v1/file-users/carol").status_code == 404       # nothing was written
    assert cluster.get(node.url + "/api/v1/cluster").json()["quorum"]["has_quorum"]


# --- removing and leaving ------------------------------------------------------------------------
def pool_record(name: str, node_name: str) -> dict:
    """A pool record of a node (the host test has no disks for a real pool: the record is what a
    removal keeps and a leaving node takes along; the storage tests make real ones)."""
    return {"name": name, "node": node_name, "data_profile": "single", "metadata_profile": "dup",
            "compression": "zstd", "disks": [f"DISK-{name}"], "array": None, "uuid": None, "state": "online",
            "scrub_schedule": None, "balance_schedule": None, "created_at": time.time()}


def test_leave_and_remove_refuse_what_cannot_be_done_naming_why(node, node2, node4):
    reply = node4.session().post(node4.url + "/api/v1/cluster/leave")
    assert reply.status_code == 409 and "not in a cluster" in reply.json()["error"]["message"]
    cluster = verified(node, cluster_ca(node))
    me = finish_job(cluster, node, "delete", "/cluster/nodes/node1")
    assert me["state"] == "failed" and "you are connected to node1" in me["error"], me
    up = finish_job(cluster, node, "delete", "/cluster/nodes/node2")
    assert up["state"] == "failed" and "node2 is up" in up["error"], up
    unknown = finish_job(cluster, node, "delete", "/cluster/nodes/nobody")
    assert unknown["state"] == "failed" and "no node nobody in cluster office" in unknown["error"], unknown
    assert len(cluster.get(node.url + "/api/v1/cluster").json()["members"]) == 3


def test_a_dead_node_is_removed_its_member_goes_and_its_records_are_kept_marked(node, node3):
    cluster = verified(node, cluster_ca(node))
    store = node.store()
    store.put("pools/p3", pool_record("p3", "node3"))
    node3.stop()                                                     # gone for good
    wait_until(lambda: not {n["name"]: n["online"] for n in cluster.get(node.url + "/api/v1/nodes").json()["nodes"]}
               ["node3"], 60, "node1's console to show node3 down")
    job = finish_job(cluster, node, "delete", "/cluster/nodes/node3", timeout=180)
    assert job["state"] == "success", job
    assert job["result"]["held"] == ["pool p3"]
    status = cluster.get(node.url + "/api/v1/cluster").json()
    assert len(status["members"]) == 2 and status["quorum"]["voters"] == 2
    marked = {n["name"]: n for n in status["cluster"]["nodes"]}["node3"]
    assert marked["state"] == "removed" and marked["removed_by"] == "node1"
    # Never silently deleted: its records stay, and it is still listed (down).
    assert store.get("pools/p3") is not None
    listed = {n["name"]: n for n in cluster.get(node.url + "/api/v1/nodes").json()["nodes"]}["node3"]
    assert listed["online"] is False and listed["removed"] is True
    refused_job = cluster.post(node.url + "/api/v1/nodes/node3/diagnostics", json={"samples": 2})
    assert refused_job.status_code == 409 and "node3 was removed from the cluster" in refused_job.json()["error"]["message"]
    said = [e["message"] for e in events.recent(store, limit=50)]
    assert any(m.startswith("node3 was removed from cluster office by node1") and "pool p3" in m for m in said), said
    again = finish_job(cluster, node, "delete", "/cluster/nodes/node3")
    assert again["state"] == "failed" and "no node node3" in again["error"]


def test_a_node_leaves_with_its_records_and_works_alone_again(node, node2):
    cluster = verified(node, cluster_ca(node))
    store = node.store()
    store.put("pools/p2", pool_record("p2", "node2"))
    store.put("pools/p1", pool_record("p1", "node1"))
    second = verified(node2, cluster_ca(node), CLUSTER_PASSWORD[0])
    started = time.monotonic()
    reply = second.post(node2.url + "/api/v1/cluster/leave")
    assert reply.status_code == 202, reply.text
    job = wait_until(lambda: _ended(node2, reply.json()["id"], CLUSTER_PASSWORD[0]), 180, "cluster.leave to end")
    assert job["state"] == "success", job          # (the cluster's copy of the record says so first)
    assert "pool p2" in job["result"]["held"]

    # node2: standalone, its own etcd in plain HTTP on loopback, a console certificate of its own,
    # its records (and copies of the cluster's file users); the cluster's admin logs in as before.
    def standalone_console():
        if config_mod.load(str(node2.config_path)).cluster.tls:
            return None
        session = _try(verified, node2, node2.ca, CLUSTER_PASSWORD[0])
        reply = session and _try(lambda: session.get(f"{node2.url}/api/v1/jobs/{job['id']}"))
        return session if reply is not None and reply.status_code == 200 and reply.json()["state"] == "success" \
            and session.get(node2.url + "/api/v1/cluster").json()["cluster"] is None else None
    alone = wait_until(standalone_console, 60, "node2's console, standalone, to show the leave ended")
    print(f"cluster.leave: node2 standalone, its console answering, {time.monotonic() - started:.1f} s after the request")
    assert config_mod.load(str(node2.config_path)).etcd_endpoints == (f"http://{NET}.2:2379",)
    assert requests.get(f"http://{NET}.2:2379/version", timeout=3).ok
    own_ca = open(node2.ca, "rb").read()
    assert pki.fingerprint(own_ca) != pki.fingerprint(open(cluster_ca(node), "rb").read())
    assert pki.issued_by(ssl.get_server_certificate((f"{NET}.2", int(node2.url.rsplit(":", 1)[1]))).encode(), own_ca)
    assert not (node2.dir / "cluster" / "node.key").exists()
    mine = node2.store()
    assert mine.get("pools/p2")["node"] == "node2" and mine.get("pools/p1") is None
    assert {"alice", "bob"} <= {e.key.removeprefix("share-users/") for e in mine.list("share-users/", keys_only=True)}
    assert [n["name"] for n in alone.get(node2.url + "/api/v1/nodes").json()["nodes"]] == ["node2"]
    diagnostics = finish_job(alone, node2, "post", "/nodes/node2/diagnostics", json={"samples": 2})
    assert diagnostics["state"] == "success", diagnostics

    # The cluster: without node2's member, node records and pool; the accounts stay; it said so,
    # and never that node2 stopped answering.
    status = cluster.get(node.url + "/api/v1/cluster").json()
    assert [m["name"] for m in status["members"]] == [node.cfg.node_id]
    assert "node2" not in [n["name"] for n in status["cluster"]["nodes"]]
    assert store.get("pools/p2") is None and store.get("pools/p1") is not None
    assert store.get("share-users/bob") is not None
    assert cluster.get(f"{node.url}/api/v1/jobs/{job['id']}").json()["state"] == "success"
    time.sleep(nodes.NODE_LEASE_TTL)
    said = [e["message"] for e in events.recent(store, limit=100)]
    assert any(m.startswith("node2 left cluster office, taking") for m in said), said
    assert "node node2 stopped answering (its lease expired)" not in said, said
    assert "node2" not in [n["name"] for n in cluster.get(node.url + "/api/v1/nodes").json()["nodes"]]

    # The last node cannot leave: there is no cluster to leave.
    last = finish_job(cluster, node, "post", "/cluster/leave")
    assert last["state"] == "failed" and "node1 is the only node of cluster office" in last["error"], last


def ctl(stack, *args):
    """cairnctl as a user runs it, logged in to the node (its state in the node's directory)."""
    env = {"XDG_CONFIG_HOME": str(stack.dir / "cli")}
    run = Runner().run
    if not (stack.dir / "cli" / "cairn" / "cli.json").exists():
        run([sys.executable, "-m", "cairn.cli.main", "--url", stack.url, "--ca", stack.ca, "login",
             "--password-stdin"], input=stack.password + "\n", env=env, timeout=60)
    return run([sys.executable, "-m", "cairn.cli.main", *args], env=env, timeout=60)


CLUSTER_PASSWORD: list[str] = []    # node1's admin password: a joined node's users are the cluster's
SESSIONS: dict = {}


def _ended(stack, job_id: str, password: str | None = None):
    """The job once it has ended, asked through the node's console as it is now (its certificate and
    users change when it creates, joins or leaves a cluster); None meanwhile."""
    session = SESSIONS.get(stack.url)
    reply = _try(lambda: session.get(f"{stack.url}/api/v1/jobs/{job_id}")) if session else None
    if reply is None or reply.status_code == 401:
        # Log in again as the admin the node has now: the cluster's once its settings say it is in
        # one (node1's), else its own. Never a wrong password: the login limit counts them.
        clustered = config_mod.load(str(stack.config_path)).cluster.tls
        password = password or (CLUSTER_PASSWORD[0] if clustered and CLUSTER_PASSWORD else stack.password)
        SESSIONS[stack.url] = _try(verified, stack, stack.ca, password)
        return None
    if reply.status_code != 200:
        return None         # 503 while the node's store moves, 404 on a worker not reloaded yet
    job = reply.json()
    return job if job["state"] not in ("queued", "running") else None


def _try(function, *args):
    try:
        return function(*args)
    except (requests.RequestException, OSError, socket.error):
        return None


def test_a_web_worker_follows_its_settings_file_before_its_reload_replaces_it(tmp_path):
    """A worker still answering (a keep-alive connection) after a cluster job rewrote cairn.toml
    talks to the store the file names now, not the old one (seen as a 503 in the browser test)."""
    from cairn.devstack import EtcdCluster, write_config
    from cairn.web.app import create_app, services
    first = EtcdCluster.create(tmp_path / "a", 1).start()
    second = EtcdCluster.create(tmp_path / "b", 1).start()
    try:
        cfg = config_mod.Config(node_name="n1", etcd_endpoints=tuple(first.endpoints), state_dir=tmp_path)
        path = write_config(tmp_path / "cairn.toml", cfg)
        app = create_app(config_mod.load(str(path)))
        client = app.test_client()
        assert client.get("/api/v1/health", base_url="https://localhost").status_code == 200
        write_config(path, config_mod.Config(node_name="n1", etcd_endpoints=tuple(second.endpoints),
                                             state_dir=tmp_path))
        first.stop()                     # the old store is gone, as after a join
        time.sleep(1.1)
        assert client.get("/api/v1/health", base_url="https://localhost").status_code == 200
        assert services(app)["store"].endpoints == second.endpoints
    finally:
        first.stop()
        second.stop()
