"""The pure parts of creating and joining a cluster: request checks, certificate names, the node's
settings once clustered, clashes of claims, and etcd's environment files as the launcher reads them."""

from __future__ import annotations

import pytest

from cairn import config as config_mod
from cairn.cluster import formation, merge, tokens
from cairn.system.files import parse_assignments
from cairn.errors import ValidationError

TOKEN = tokens.new_token("0123456789abcdef", "10.77.1.11:443", "sha256:" + "a" * 64).text()


def test_create_params_are_checked_field_by_field():
    assert formation.check_create({"name": "office", "interface": "enp0s9", "address": "10.77.1.11/24"}) == \
        {"name": "office", "interface": "enp0s9", "address": "10.77.1.11/24"}
    with pytest.raises(ValidationError) as bad:
        formation.check_create({"name": " office", "interface": "en p0", "address": "10.77.1.300/24", "x": 1})
    assert set(bad.value.fields) == {"name", "interface", "address", "x"}


def test_join_params_need_a_token_and_an_address():
    assert formation.check_join({"token": f"  {TOKEN}\n", "address": "10.77.1.12/24"}) == \
        {"token": TOKEN, "interface": "", "address": "10.77.1.12/24"}
    with pytest.raises(ValidationError) as bad:
        formation.check_join({"token": "cairn-join-1.AAAA", "address": "nowhere"})
    assert set(bad.value.fields) == {"token", "address"}
    assert "damaged" in bad.value.fields["token"]


def test_a_join_request_is_checked_before_anything_is_looked_up():
    good = {"token": TOKEN, "node_id": "b" * 32, "name": "cairn-b", "address": "10.77.1.12",
            "keys": ["pools/tank"], "check_only": True}
    checked = formation.check_join_request(good)
    assert checked["token"].address == "10.77.1.11:443" and checked["check_only"] is True
    with pytest.raises(ValidationError) as bad:
        formation.check_join_request({**good, "check_only": False, "node_id": "0" * 32, "name": "a/b",
                                      "address": "10.77.1", "keys": ["ok", "bad\n"], "extra": 1})
    assert set(bad.value.fields) == {"node_id", "name", "address", "keys", "csr", "extra"}


def test_a_node_certificate_names_the_cluster_address_first_then_other_addresses_names_and_loopback():
    names = formation.node_names("10.77.1.11", "cairn-0a1b2c", "cairn-0a1b2c",
                                 ["192.168.1.20/24", "fe80::1/64", "127.0.0.1/8", "10.77.1.11/24"])
    assert names == ["10.77.1.11", "192.168.1.20", "cairn-0a1b2c", "127.0.0.1", "localhost"]
    assert formation.node_names("fd00::11", "h", "not a dns name", []) == ["fd00::11", "h", "127.0.0.1", "localhost"]


def test_the_clustered_settings_point_at_https_endpoints_and_the_node_files(tmp_path):
    cfg = config_mod.parse({"state_dir": str(tmp_path)}, "n1", "c" * 32)
    clustered = formation.clustered_config(cfg, "10.77.1.11", "enp0s9", ["https://10.77.1.11:2379"])
    assert clustered.etcd_endpoints == ("https://10.77.1.11:2379",)
    assert clustered.cluster.cert == str(tmp_path / "cluster" / "node.pem") and clustered.cluster.tls
    assert (clustered.cluster.address, clustered.cluster.interface) == ("10.77.1.11", "enp0s9")
    # ... and they are a valid configuration (https needs the three files, which it has).
    assert config_mod.parse(config_mod.as_dict(clustered), "n1") == clustered
    assert formation.client_url("fd00::11") == "https://[fd00::11]:2379"
    assert formation.console_address(replace_bind(clustered, "0.0.0.0:8443")) == "10.77.1.11:8443"


def replace_bind(cfg, bind):
    from dataclasses import replace
    return replace(cfg, web=replace(cfg.web, bind=bind))


def test_claims_of_unique_values_clash_as_names_do():
    joining = ["share-users/bob", "share-ids/uid/10000", "vm-macs/52:54:00:00:00:01", "iscsi-iqns/iqn.x:a",
               "pool-status/tank2", "jobs/1", "nodes/n2"]
    cluster = ["share-users/alice", "share-ids/uid/10000", "vm-macs/52:54:00:00:00:01", "iscsi-iqns/iqn.x:b"]
    assert merge.clashes(joining, cluster) == ["VM MAC address 52:54:00:00:00:01", "file user id 10000"]
    assert sorted(k for k in joining if k.startswith(merge.MOVING)) == ["iscsi-iqns/iqn.x:a", "pool-status/tank2", "share-ids/uid/10000",
                                      "share-users/bob", "vm-macs/52:54:00:00:00:01"]


def test_etcd_environment_files_are_read_as_systemd_reads_them():
    text = ("# comment\nETCD_NAME=a\n\nETCD_INITIAL_CLUSTER=a=https://10.0.0.1:2380,b=https://10.0.0.2:2380\n"
            'not a line\n  ETCD_LOG_LEVEL = "warn"\n')
    assert parse_assignments(text) == {"ETCD_NAME": "a", "ETCD_LOG_LEVEL": "warn",
                                       "ETCD_INITIAL_CLUSTER": "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380"}


class ScriptedMembers:
    """The membership side of a Store, in memory: members, status answers, promotions."""

    def __init__(self, voters: list[str], learners: list[str], down: tuple[str, ...] = ()) -> None:
        from cairn.cluster.store import Member
        self.members_ = {name: Member(f"id-{name}", name, [f"https://{name}:2380"], [f"https://{name}:2379"],
                                      name in learners) for name in voters + learners}
        self.down = down
        self.promoted: list[str] = []

    def members(self):
        return list(self.members_.values())

    def status_at(self, url: str, timeout: float = 1.0):
        from cairn.errors import Unavailable
        if url.split("//")[1].split(":")[0] in self.down:
            raise Unavailable(f"{url} did not answer")

    def member_promote(self, member_id: str, wait: float = 0) -> None:
        from dataclasses import replace
        name = member_id.removeprefix("id-")
        self.members_[name] = replace(self.members_[name], learner=False)
        self.promoted.append(name)


def test_the_fifth_node_joining_promotes_every_learner_the_cluster_wants_not_only_its_own():
    # n4 joined as the fourth node (3-4 nodes: 3 voters, so it stayed a learner); with n5 the cluster
    # wants 5 voters: n4 is promoted first (next_step picks by node), then n5.
    store = ScriptedMembers(["n1", "n2", "n3"], ["n4", "n5"])
    role = formation.promote_while_wanted(store, "id-n5", nodes=5)
    assert store.promoted == ["n4", "n5"] and role == "voting member"
    # The fourth node stays a learner, saying why.
    store = ScriptedMembers(["n1", "n2", "n3"], ["n4"])
    assert formation.promote_while_wanted(store, "id-n4", nodes=4).startswith("learner (3 of 4 nodes vote")
    assert store.promoted == []
    # A learner that does not answer is not promoted; the others are.
    store = ScriptedMembers(["n1", "n2", "n3"], ["n4", "n5"], down=("n4",))
    assert formation.promote_while_wanted(store, "id-n5", nodes=5) == "voting member"
    assert store.promoted == ["n5"]
