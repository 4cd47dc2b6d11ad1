"""The cluster's trust material: CA and node certificates (pki), one-time join tokens (tokens), and
who votes in the cluster store (membership) — all pure."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from cairn.cluster import membership, pki, tokens
from cairn.cluster.membership import MemberState
from cairn.errors import AuthenticationError, Conflict, PreconditionFailed, ValidationError

NOW = datetime.datetime(2026, 12, 7, tzinfo=datetime.timezone.utc)
NODE = "0123456789abcdef0123456789abcdef"


# --- pki ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca():
    return pki.make_ca("office", NOW)


def test_a_node_certificate_is_signed_by_the_cluster_ca_for_the_names_asked(ca):
    key = pki.new_key()
    cert = pki.sign_node(ca, pki.make_csr(key, NODE, ["10.77.1.11", "cairn-0a1b2c"]), NOW,
                         allowed_names=["10.77.1.11", "cairn-0a1b2c", "localhost"])
    assert pki.issued_by(cert, ca.cert_pem)
    issued = x509.load_pem_x509_certificate(cert)
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NODE
    names = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.77.1.11"]
    assert names.get_values_for_type(x509.DNSName) == ["cairn-0a1b2c"]
    other = pki.make_ca("elsewhere", NOW)
    assert not pki.issued_by(cert, other.cert_pem)


def test_a_signing_request_for_names_it_may_not_have_is_refused_naming_them(ca):
    csr = pki.make_csr(pki.new_key(), NODE, ["10.77.1.11", "10.0.0.1"])
    with pytest.raises(ValidationError, match="may not have: 10.0.0.1"):
        pki.sign_node(ca, csr, NOW, allowed_names=["10.77.1.11"])


@pytest.mark.parametrize("text, problem", [
    ("not a csr", "not a PEM certificate signing request"),
    ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
     "not a PEM certificate signing request"),
])
def test_a_malformed_signing_request_is_refused(ca, text, problem):
    with pytest.raises(ValidationError, match=problem) as refused:
        pki.sign_node(ca, text, NOW)
    assert refused.value.fields == {"csr": problem}


def test_node_ids_and_names_are_checked_in_full():
    with pytest.raises(ValidationError, match="machine-id"):
        pki.make_csr(pki.new_key(), NODE + "\n", ["10.0.0.1"])
    with pytest.raises(ValidationError, match="not an address or host name"):
        pki.make_csr(pki.new_key(), NODE, ["cairn\n"])


def test_the_fingerprint_pins_one_ca(ca):
    assert pki.fingerprint(ca.cert_pem) == pki.fingerprint(ca.cert_pem)
    assert pki.fingerprint(ca.cert_pem).startswith("sha256:") and len(pki.fingerprint(ca.cert_pem)) == 71
    assert pki.fingerprint(pki.make_ca("office", NOW).cert_pem) != pki.fingerprint(ca.cert_pem)


# --- tokens ---------------------------------------------------------------------------------------
CLUSTER = "c0ffee00c0ffee00"


def token() -> tokens.JoinToken:
    return tokens.new_token(CLUSTER, "10.77.1.11:443", "sha256:" + "ab" * 32)


def test_a_token_survives_copy_and_paste_with_whitespace():
    made = token()
    assert tokens.parse("  " + made.text() + "\n") == made


@pytest.mark.parametrize("text, problem", [
    ("", "paste the join token"),
    (None, "paste the join token"),
    ("hello", "not a Cairn join token"),
    ("cairn-join-1.%%%", "damaged"),
    ("cairn-join-1.eyJjIjoiMSJ9", "damaged"),            # {"c":"1"}: fields missing
])
def test_a_pasted_token_that_is_not_one_says_what_is_wrong(text, problem):
    with pytest.raises(ValidationError, match=problem) as refused:
        tokens.parse(text)
    assert list(refused.value.fields) == ["token"]


def test_a_cut_token_is_damaged():
    with pytest.raises(ValidationError, match="damaged"):
        tokens.parse(token().text()[:-10])


def test_the_cluster_keeps_a_hash_of_the_secret_never_the_secret():
    made = token()
    kept = tokens.record(made, "node1", 1000.0, 600)
    assert made.secret not in repr(kept)
    assert kept["expires_at"] == 1600.0


def test_presented_tokens_are_checked_for_cluster_secret_use_and_expiry():
    made = token()
    kept = tokens.record(made, "node1", 1000.0, 600)
    tokens.check_presented(kept, made, CLUSTER, 1599.0)                 # good until it expires
    with pytest.raises(AuthenticationError, match="another cluster"):
        tokens.check_presented(kept, made, "0" * 16, 1100.0)
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.check_presented(kept, made, CLUSTER, 1600.0)
    with pytest.raises(AuthenticationError, match="unknown here"):
        tokens.check_presented(None, made, CLUSTER, 1100.0)
    forged = tokens.JoinToken(made.cluster_id, made.address, made.ca_fingerprint, made.token_id, "x" * 32)
    with pytest.raises(AuthenticationError, match="secret is wrong"):
        tokens.check_presented(kept, forged, CLUSTER, 1100.0)
    used = dict(kept, used_by="node4", used_at=1200.0)
    with pytest.raises(Conflict, match="already used \\(by node4\\)"):
        tokens.check_presented(used, made, CLUSTER, 1300.0)


@pytest.mark.parametrize("ttl", [0, 59, 7 * 24 * 3600 + 1, "3600", True, 1.5])
def test_a_token_lifetime_outside_a_minute_to_a_week_is_refused(ttl):
    with pytest.raises(ValidationError, match="seconds from 60"):
        tokens.check_ttl(ttl)


# --- membership -----------------------------------------------------------------------------------
@pytest.mark.parametrize("nodes, voters", [(1, 1), (2, 2), (3, 3), (4, 3), (5, 5), (6, 5), (7, 5)])
def test_voters_wanted_for_each_cluster_size(nodes, voters):
    assert membership.voters_wanted(nodes) == voters


def member(n: int, voter: bool = True, healthy: bool = True, caught_up: bool = True, started: bool = True):
    return MemberState(f"m{n}", f"node{n}" if started else "", voter, healthy, caught_up)


def test_a_healthy_caught_up_learner_is_promoted_when_a_voter_is_wanted():
    members = [member(1), member(2), member(3, voter=False, caught_up=False), member(4, voter=False)]
    assert membership.next_step(members, 4) == membership.Step("promote", "m4", "2 voting members, 3 wanted for 4 nodes")
    assert membership.next_step([member(1), member(2), member(3), member(4, voter=False)], 4).action == "none"
    assert membership.next_step([member(1), member(2, voter=False, healthy=False)], 2).action == "none"


def test_what_losing_one_more_node_would_do():
    three = [member(1), member(2), member(3)]
    assert membership.tolerance(three)["can_lose"] == 1
    two_up = [member(1), member(2), member(3, healthy=False)]
    assert membership.tolerance(two_up)["text"].startswith("losing one more voting member stops all changes")
    one_up = [member(1), member(2, healthy=False), member(3, healthy=False)]
    assert membership.tolerance(one_up)["has_quorum"] is False
    assert "1 of 3 voting members answer, 2 are needed" in membership.tolerance(one_up)["text"]
    assert "HA needs three nodes" in membership.role_reason(2)


def test_a_change_that_would_lose_quorum_is_refused_before_it_is_made():
    two_up = [member(1), member(2), member(3, healthy=False)]
    membership.check_keeps_quorum(two_up, removing="m3")             # removing the dead one is fine
    with pytest.raises(PreconditionFailed, match="1 of 2 voting members answering"):
        membership.check_keeps_quorum(two_up, removing="m1")
    with pytest.raises(PreconditionFailed, match="2 of 4 voting members answering, fewer than the 3"):
        membership.check_keeps_quorum(two_up, adding_voter=True)
    with pytest.raises(PreconditionFailed, match="last voting member"):
        membership.check_keeps_quorum([member(1)], removing="m1")


def test_membership_changes_one_at_a_time():
    membership.check_one_change_at_a_time([member(1), member(2)])
    with pytest.raises(Conflict, match="member m3 has not started yet"):
        membership.check_one_change_at_a_time([member(1), member(2), member(3, voter=False, started=False)])


# --- health ---------------------------------------------------------------------------------------
def test_the_health_view_names_the_leader_and_lists_a_member_not_started_yet_last():
    from cairn.cluster.health import Probe, summarise
    from cairn.cluster.store import Member, MemberStatus

    def status(member_id: str, leader: str) -> MemberStatus:
        return MemberStatus(f"https://{member_id}", member_id, 4096, 2048, 10, leader, "3.5.16")
    members = [Member("3", "", ["https://10.77.1.13:2380"], [], True),
               Member("2", "node2", ["https://10.77.1.12:2380"], ["https://10.77.1.12:2379"], False),
               Member("1", "node1", ["https://10.77.1.11:2380"], ["https://10.77.1.11:2379"], False)]
    view = summarise(members, [Probe("1", status("1", "2"), 1.234), Probe("2", status("2", "2"), 0.5),
                               Probe("3", None, None, "not started yet")])
    assert [(m["name"], m["role"], m["leader"], m["reachable"]) for m in view["members"]] == [
        ("node1", "voter", False, True), ("node2", "voter", True, True),
        ("(not started yet)", "learner", False, False)]
    assert view["leader"] == "2" and view["members"][0]["rtt_ms"] == 1.23
    assert view["quorum"]["voters"] == 2 and view["quorum"]["can_lose"] == 0
    split = summarise(members[1:], [Probe("1", status("1", "1"), 1.0), Probe("2", status("2", "2"), 1.0)])
    assert split["leader"] == ""          # members that disagree on the leader: none is named


# --- merge ----------------------------------------------------------------------------------------
def test_a_join_is_refused_listing_every_name_already_used_in_the_cluster():
    from cairn.cluster import merge
    joining = ["pools/tank", "volumes/tank/media", "shares/Office", "vms/web", "share-users/alice",
               "images/tank/debian.iso", "nodes/new", "jobs/1", "status/new/pools/tank"]
    cluster = ["pools/tank", "vms/web", "share-users/bob", "shares/Public", "volumes/tank/media"]
    assert merge.clashes(joining, cluster) == ["VM web", "pool tank"]
    with pytest.raises(Conflict, match="2 names of this node are already used in the cluster: VM web, "
                                       "pool tank; rename them on one side"):
        merge.check_no_clash(joining, cluster)
    merge.check_no_clash(["pools/vault", "vms/db"], cluster)
    assert sorted(k for k in joining if k.startswith(merge.MOVING)) == ["images/tank/debian.iso", "pools/tank", "share-users/alice",
                                      "shares/Office", "vms/web", "volumes/tank/media"]


# --- etcd member environment ----------------------------------------------------------------------
def test_a_cluster_members_etcd_listens_on_the_cluster_address_only_over_mutual_tls_only():
    from cairn.cluster import etcd_settings
    env = dict(line.split("=", 1) for line in etcd_settings.member_environment(
        "cairn-0a1b2c", "10.77.1.11", "/var/lib/cairn/cluster/ca.pem", "/var/lib/cairn/cluster/node.pem",
        "/var/lib/cairn/cluster/node.key", {"cairn-0a1b2c": "https://10.77.1.11:2380",
                                            "cairn-9f8e7d": "https://10.77.1.12:2380"}).splitlines())
    assert env["ETCD_LISTEN_CLIENT_URLS"] == "https://10.77.1.11:2379"
    assert env["ETCD_LISTEN_PEER_URLS"] == "https://10.77.1.11:2380"
    assert all(env[k] == "true" for k in ("ETCD_CLIENT_CERT_AUTH", "ETCD_PEER_CLIENT_CERT_AUTH"))
    assert not [v for v in env.values() if v.startswith("http://") or ",http://" in v]
    assert env["ETCD_INITIAL_CLUSTER"] == "cairn-0a1b2c=https://10.77.1.11:2380,cairn-9f8e7d=https://10.77.1.12:2380"
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    alone = etcd_settings.member_environment("n", "fd00::11", "/c", "/n", "/k")
    assert "ETCD_ADVERTISE_CLIENT_URLS=https://[fd00::11]:2379\n" in alone and "INITIAL_CLUSTER" not in alone
    with pytest.raises(ValueError, match="ETCD_NAME"):
        etcd_settings.member_environment("bad\nETCD_X=1", "10.77.1.11", "/c", "/n", "/k")


# --- lost nodes -----------------------------------------------------------------------------------
def test_a_lost_nodes_running_jobs_fail_at_once_and_its_queued_ones_after_the_grace():
    from cairn.cluster.lost_nodes import Decision, decide
    known = {"a", "b", "c"}
    first = decide(known, alive={"a", "c"}, lost_since={}, running={"b": ["j1"], "a": ["j2"]},
                   queued={"b": ["j3"]}, now=100.0, queued_grace=60)
    assert first == Decision(newly_lost=["b"], back=[], fail_running=[("b", "j1")], fail_queued=[])
    later = decide(known, alive={"a", "c"}, lost_since={"b": 100.0}, running={}, queued={"b": ["j3"]},
                   now=160.0, queued_grace=60)
    assert later == Decision(fail_queued=[("b", "j3")])
    back = decide(known, alive={"a", "b", "c"}, lost_since={"b": 100.0}, running={}, queued={"b": ["j4"]},
                  now=170.0)
    assert back == Decision(back=["b"])
