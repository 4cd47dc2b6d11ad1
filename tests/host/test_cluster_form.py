"""Creating a cluster on a real node: etcd (run as the appliance runs it: settings from environment
files, restarted by the job), cairn-agent and cairn-web as processes on a 127.x address of their own.
The job moves etcd to the cluster address over mutual TLS, gives the console a certificate from the
cluster CA, and the node keeps working, across restarts; join tokens are issued from it."""

from __future__ import annotations

import json
import random
import socket
import ssl
import sys
import time

import pytest
import requests

from cairn import config as config_mod
from cairn.cluster import pki, tokens
from cairn.runner import Runner
from support import finish_job, start_node, wait_until

# A 127.x.y.0/24 of this module's own: each node's etcd listens on etcd's usual ports there.
NET = f"127.{random.randint(100, 250)}.{random.randint(0, 250)}"


def verified(stack, ca: str) -> requests.Session:
    session = stack.session(login=False)
    session.verify = ca
    reply = session.post(stack.url + "/api/v1/auth/login", json={"username": "admin", "password": stack.password})
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
    yield stack
    stack.stop()


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


def ctl(stack, *args):
    """cairnctl as a user runs it, logged in to the node (its state in the node's directory)."""
    env = {"XDG_CONFIG_HOME": str(stack.dir / "cli")}
    run = Runner().run
    if not (stack.dir / "cli" / "cairn" / "cli.json").exists():
        run([sys.executable, "-m", "cairn.cli.main", "--url", stack.url, "--ca", stack.ca, "login",
             "--password-stdin"], input=stack.password + "\n", env=env, timeout=60)
    return run([sys.executable, "-m", "cairn.cli.main", *args], env=env, timeout=60)


def _ended(stack, job_id: str):
    session = _try(verified, stack, stack.ca)
    if session is None:
        return None
    job = _try(lambda: session.get(f"{stack.url}/api/v1/jobs/{job_id}").json())
    return job if job and job["state"] not in ("queued", "running") else None


def _try(function, *args):
    try:
        return function(*args)
    except (requests.RequestException, OSError, socket.error):
        return None
