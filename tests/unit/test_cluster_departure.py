"""What goes with a node that leaves the cluster, what it takes a copy of, and what holds it back
(cairn.cluster.merge.departure), and the leave/remove jobs' parameter checks."""

import pytest

from cairn import config as config_mod
from cairn.cluster import departure as departure_mod
from cairn.cluster import merge
from cairn.errors import ValidationError

RECORDS = {
    "pools/tank": {"name": "tank", "node": "n2"},
    "pools/other": {"name": "other", "node": "n1"},
    "pool-status/tank": {"node": "n2"},
    "pool-status/other": {"node": "n1"},
    "pool-maintenance/tank": {"job": "x"},
    "volumes/tank/data": {"pool": "tank"},
    "volumes/other/data": {"pool": "other"},
    "images/tank/debian.qcow2": {"pool": "tank"},
    "arrays/md0": {"name": "md0", "node": "n2"},
    "array-status/md0": {"node": "n2"},
    "arrays/md1": {"name": "md1", "node": "n1"},
    "shares/docs": {"name": "docs", "pool": "tank"},
    "shares/media": {"name": "media", "pool": "other"},
    "iscsi-targets/lun": {"name": "lun", "pool": "tank"},
    "iscsi-status/lun": {"node": "n2"},
    "iscsi-iqns/iqn.2026-12.invalid.cairn:lun": {"target": "lun"},
    "iscsi-trash/abc": {"pool": "tank", "file": "/pools/tank/x.img", "target": "lun"},
    "iscsi-trash/def": {"pool": "other", "file": "/pools/other/y.img", "target": "t2"},
    "vms/web": {"name": "web", "node": "n2", "pool": "tank"},
    "vm-status/web": {"state": "running"},
    "vm-macs/52:54:00:00:00:01": {"vm": "web"},
    "vms/db": {"name": "db", "node": "n1", "pool": "other"},
    "vm-macs/52:54:00:00:00:02": {"vm": "db"},
    "share-users/alice": {"name": "alice"},
    "share-groups/staff": {"name": "staff"},
    "share-ids/uid/10000": {"user": "alice"},
}


def test_a_leaving_node_takes_its_pools_arrays_vms_and_what_lies_on_its_pools_and_nothing_else():
    leaving = merge.departure(RECORDS, "n2")
    assert leaving.moving == tuple(sorted([
        "pools/tank", "pool-status/tank", "pool-maintenance/tank", "volumes/tank/data", "images/tank/debian.qcow2",
        "arrays/md0", "array-status/md0", "shares/docs", "iscsi-targets/lun", "iscsi-status/lun",
        "iscsi-iqns/iqn.2026-12.invalid.cairn:lun", "iscsi-trash/abc", "vms/web", "vm-status/web",
        "vm-macs/52:54:00:00:00:01"]))
    assert leaving.copied == ("share-groups/staff", "share-ids/uid/10000", "share-users/alice")
    assert leaving.held == ("RAID array md0", "VM web", "iSCSI target lun", "pool tank", "share docs")
    assert leaving.used_by_others == ()
    # The other node's side is the rest, exactly.
    other = merge.departure(RECORDS, "n1")
    assert set(other.moving) | set(leaving.moving) | set(leaving.copied) == set(RECORDS)
    assert not set(other.moving) & set(leaving.moving)


def test_a_vm_elsewhere_on_the_leaving_nodes_pool_holds_the_leave_back_naming_it():
    records = {**RECORDS, "vms/app": {"name": "app", "node": "n1", "pool": "tank"}}
    assert merge.departure(records, "n2").used_by_others == ("pool tank (VM app on n1)",)
    assert "vms/app" not in merge.departure(records, "n2").moving


def test_a_node_with_nothing_takes_only_the_copies():
    leaving = merge.departure(RECORDS, "n9")
    assert (leaving.moving, leaving.held) == ((), ())
    assert leaving.copied == ("share-groups/staff", "share-ids/uid/10000", "share-users/alice")


def test_the_remove_and_leave_parameters_are_checked():
    assert departure_mod.check_remove({"target": "node3"}) == {"target": "node3"}
    assert departure_mod.check_remove({"target": "a" * 32}) == {"target": "a" * 32}
    with pytest.raises(ValidationError) as caught:
        departure_mod.check_remove({"target": "", "force": True})
    assert set(caught.value.fields) == {"target", "force"}
    with pytest.raises(ValidationError):
        departure_mod.check_no_params({"x": 1})


def test_a_standalone_configuration_drops_the_cluster_and_talks_to_its_own_store_again(tmp_path):
    cluster = config_mod.ClusterConfig(ca="/c/ca.pem", cert="/c/n.pem", key="/c/n.key", address="10.77.1.12",
                                       interface="enp0s9", standalone_endpoint="http://127.0.0.9:2379")
    cfg = config_mod.Config(node_name="n2", etcd_endpoints=("https://10.77.1.12:2379",), cluster=cluster)
    alone = departure_mod.standalone_config(cfg)
    assert alone.etcd_endpoints == ("http://127.0.0.9:2379",)
    assert not alone.cluster.tls and alone.cluster.address == "" and alone.cluster.interface == ""
    assert alone.cluster.etcd_env == cfg.cluster.etcd_env
    (tmp_path / "cairn.toml").write_text(config_mod.dump(alone))
    assert config_mod.load(str(tmp_path / "cairn.toml")) == alone
