"""The cluster store secured and grown as a cluster grows: real etcd members on 127.0.0.x speaking
mutual TLS with certificates from a cluster CA, joined one learner at a time and promoted to three
voters, a member removed, and quorum lost and regained; a join token used once, even in a race."""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time

import pytest
import requests

from cairn.cluster import health, membership, pki, tokens
from cairn.cluster.store import ClientTls, Store
from cairn.devstack import EtcdCluster, make_member_tls
from cairn.errors import AuthenticationError, CairnError, Conflict, Unavailable
from support import start_stack, wait_until

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def states(store: Store, cluster: EtcdCluster) -> list[membership.MemberState]:
    """Each member as the membership decisions see it (healthy: its server answers)."""
    by_url = {m.peer_url: m for m in cluster.members}
    found = []
    for member in store.members():
        local = by_url.get(member.peer_urls[0])
        healthy = bool(local and local.daemon and local.daemon.alive())
        if healthy:
            try:
                healthy = local.get("/version").ok
            except requests.RequestException:
                healthy = False
        found.append(membership.MemberState(member.member_id, member.name, not member.learner, healthy))
    return found


def local_copy(member, key: str):
    """The value of key in the member's own copy of the store (a serializable read)."""
    reply = requests.post(member.client_url + "/v3/kv/range", timeout=5, **member.tls.requests_options(),
                          json={"key": base64.b64encode(key.encode()).decode(), "serializable": True})
    kvs = reply.json().get("kvs", [])
    return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None


@pytest.fixture
def tls_cluster(tmp_path):
    cluster = EtcdCluster.create(tmp_path / "etcd", 1, hosts=HOSTS[:1], tls=True).start()
    yield cluster
    cluster.stop()


def test_etcd_answers_only_clients_holding_a_certificate_from_the_cluster_ca(tls_cluster, tmp_path):
    member = tls_cluster.members[0]
    store = Store(tls_cluster.endpoints, "/cairn-tls", tls=tls_cluster.client_tls())
    store.put("probe", {"ok": True})
    assert store.get("probe") == {"ok": True}
    assert member.client_url.startswith("https://")

    plain = member.client_url.replace("https://", "http://")
    with pytest.raises(requests.RequestException):
        requests.post(plain + "/v3/kv/range", json={"key": "Lw=="}, timeout=3)
    with pytest.raises(requests.exceptions.SSLError):      # TLS, but no client certificate
        requests.post(member.client_url + "/v3/kv/range", json={"key": "Lw=="}, timeout=3,
                      verify=str(member.tls.ca))
    stranger_ca = pki.make_ca("elsewhere", datetime.datetime.now(datetime.timezone.utc))
    stranger = make_member_tls(tmp_path / "stranger", stranger_ca, "e" * 32, ["127.0.0.1"])
    with pytest.raises(requests.exceptions.SSLError):      # a certificate from another CA
        requests.post(member.client_url + "/v3/kv/range", json={"key": "Lw=="}, timeout=3,
                      verify=str(member.tls.ca), cert=(str(stranger.cert), str(stranger.key)))
    outsider = Store(tls_cluster.endpoints, "/cairn-tls", timeout=3,
                     tls=ClientTls(str(member.tls.ca), str(stranger.cert), str(stranger.key)))
    with pytest.raises(Unavailable):
        outsider.get("probe")


def test_the_store_grows_one_learner_at_a_time_to_three_voters_then_loses_and_regains_quorum(tls_cluster):
    store = Store(tls_cluster.endpoints, "/cairn-grow", timeout=3, tls=tls_cluster.client_tls())
    store.put("pools/tank", {"node": "a"})

    for host, nodes in ((HOSTS[1], 2), (HOSTS[2], 3)):
        joining = tls_cluster.new_member(host)
        member_id = tls_cluster.join(joining, store)
        now = states(store, tls_cluster)
        assert [m.voter for m in now if m.member_id == member_id] == [False]    # a learner first
        assert sum(m.voter for m in now) == nodes - 1                            # quorum unchanged
        step = membership.next_step(now, nodes)
        assert (step.action, step.member_id) == ("promote", member_id)
        store.member_promote(step.member_id)      # waits until it has caught up
        assert membership.next_step(states(store, tls_cluster), nodes).action == "none"

    now = states(store, tls_cluster)
    assert [m.voter for m in now] == [True, True, True]
    view = health.cluster_health(store)      # what the dashboard and `cairnctl cluster status` show
    assert [(m["role"], m["reachable"]) for m in view["members"]] == [("voter", True)] * 3
    assert sum(m["leader"] for m in view["members"]) == 1 and view["quorum"]["can_lose"] == 1
    assert all(m["rtt_ms"] is not None and m["rtt_ms"] < 1000 for m in view["members"])
    # Every member holds the data in its own copy (a serializable read answers from the member's
    # local store, not through the leader): the learners caught up before their promotion.
    assert [local_copy(m, "/cairn-grow/pools/tank") for m in tls_cluster.members] == [{"node": "a"}] * 3

    # Two of three voters down: no quorum; the store says so instead of answering stale data.
    store = Store(tls_cluster.endpoints, "/cairn-grow", timeout=2, tls=tls_cluster.client_tls())
    down = tls_cluster.members[1:]
    for member in down:
        member.daemon.stop()
    assert membership.tolerance(states(store, tls_cluster))["has_quorum"] is False
    with pytest.raises(Unavailable):
        store.put("pools/tank", {"node": "b"})
    # A membership change now is refused before anything is asked of etcd.
    with pytest.raises(CairnError, match="fewer than the 2 needed"):
        membership.check_keeps_quorum(states(store, tls_cluster), removing=None)
    for member in down:
        tls_cluster.start_member(member)
    tls_cluster.wait_healthy(30)
    # The refused write's outcome was unknown (etcd may still commit a proposal it held); what
    # matters is that every member's own copy ends up the same.
    agreed = wait_until(lambda: len({json.dumps(local_copy(m, "/cairn-grow/pools/tank")) for m in tls_cluster.members})
                        == 1 and local_copy(tls_cluster.members[0], "/cairn-grow/pools/tank"), 30,
                        "the members' copies to agree")
    assert agreed in ({"node": "a"}, {"node": "b"})

    # A dead member is removed (quorum of the rest allows it); two voters remain and work.
    dead = tls_cluster.members[2]
    dead.daemon.stop()
    now = states(store, tls_cluster)
    dead_id = next(m.member_id for m in now if not m.healthy)
    membership.check_keeps_quorum(now, removing=dead_id)
    view = health.cluster_health(store)
    assert [m["reachable"] for m in view["members"]] == [True, True, False]
    assert view["members"][2]["error"] and view["quorum"]["text"].startswith("losing one more voting member")
    store.member_remove(dead_id)
    after = states(store, tls_cluster)
    assert len(after) == 2 and all(m.voter and m.healthy for m in after)
    store.put("pools/tank", {"node": "c"})
    assert store.get("pools/tank") == {"node": "c"}


def test_a_join_token_is_used_once_even_by_two_joins_at_once(store):
    kept_tokens = tokens.TokenStore(store)
    token, kept = kept_tokens.issue("c0ffee00c0ffee00", "10.77.1.11:443", "sha256:" + "ab" * 32, "node1",
                                    now=time.time(), ttl=600)
    assert kept["secret_sha256"] != token.secret and token.secret not in repr(kept_tokens.list())
    pasted = tokens.parse(token.text())

    outcomes: list[str] = []

    def join(name: str) -> None:
        try:
            kept_tokens.consume(pasted, "c0ffee00c0ffee00", name, now=time.time())
            outcomes.append("joined")
        except Conflict as refused:
            outcomes.append(str(refused))

    racers = [threading.Thread(target=join, args=(f"node{n}",)) for n in (4, 5)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(outcomes)[0] == "joined" and "already used" in sorted(outcomes)[1]
    with pytest.raises(Conflict, match="already used"):
        kept_tokens.consume(pasted, "c0ffee00c0ffee00", "node6", now=time.time())
    kept_tokens.revoke(token.token_id)
    with pytest.raises(AuthenticationError, match="unknown here"):
        kept_tokens.consume(pasted, "c0ffee00c0ffee00", "node6", now=time.time())


def test_a_node_runs_its_agent_and_console_on_a_store_that_speaks_mutual_tls_only(tmp_path):
    stack = start_stack(tmp_path, node="node-tls", tls=True)
    try:
        assert all(url.startswith("https://") for url in stack.cfg.etcd_endpoints)
        session = stack.session()
        nodes = session.get(stack.url + "/api/v1/nodes").json()["nodes"]
        assert [n["name"] for n in nodes] == ["node-tls"]
        job = session.post(f"{stack.url}/api/v1/nodes/node-tls/diagnostics", json={"samples": 5}).json()
        deadline = time.monotonic() + 60
        while (state := session.get(f"{stack.url}/api/v1/jobs/{job['id']}").json()["state"]) not in (
                "success", "failed"):
            assert time.monotonic() < deadline, f"the job stayed {state}"
            time.sleep(0.2)
        assert state == "success"
        assert stack.store().get_entry(f"jobs/{job['id']}") is not None
    finally:
        stack.stop()
