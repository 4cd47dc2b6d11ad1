"""The pure side of iSCSI on a node: target records to LIO's wanted configuration, and the plan
that makes LIO match it (nothing when it does; files before backstores, LUNs before ACLs that map
them, stray targets and Cairn's unused backstores removed; a grown LUN grows file and backstore)."""

from __future__ import annotations

from cairn.shares.lio import Acl, Backstore, Lio, TargetState, backstore_name, plan, wanted

SERIAL0, SERIAL1 = "a" * 32, "b" * 32
IQN = "iqn.2026-11.invalid.cairn:vmstore"
CLIENT = "iqn.1993-08.org.debian:01:client"
RECORD = {"name": "vmstore", "iqn": IQN, "pool": "tank", "volume": "luns",
          "luns": [{"lun": 0, "size": 1 << 30, "serial": SERIAL0, "file": "/pools/tank/luns/.iscsi/vmstore/lun0.img"},
                   {"lun": 3, "size": 1 << 20, "serial": SERIAL1, "file": "/pools/tank/luns/.iscsi/vmstore/lun3.img"}],
          "initiators": [CLIENT], "chap": {"user": "client", "password": "twelve-chars"}}


def configured(record=RECORD) -> Lio:
    """LIO as the agent leaves it after applying `record`."""
    want = wanted([record], {"tank"})
    sizes = {store.file: store.size for store in want.backstores.values()}
    return Lio(want.backstores, want.targets, sizes)


def test_records_become_backstores_luns_and_acls_for_mounted_pools_only():
    want = wanted([RECORD], {"tank"})
    assert want.backstores[backstore_name(SERIAL0)] == Backstore(
        "cairn-" + "a" * 16, RECORD["luns"][0]["file"], 1 << 30, SERIAL0)
    assert want.targets[IQN] == TargetState(IQN, True, {0: "cairn-" + "a" * 16, 3: "cairn-" + "b" * 16},
                                            {CLIENT: Acl(("client", "twelve-chars"), frozenset({0, 3}))})
    assert wanted([RECORD], {"other"}) == Lio()


def test_nothing_to_do_when_lio_matches_and_everything_in_order_on_a_fresh_node():
    assert plan(wanted([RECORD], {"tank"}), configured()) == []
    kinds = [a.kind for a in plan(wanted([RECORD], {"tank"}), Lio())]
    assert kinds == ["file", "backstore-create", "file", "backstore-create", "target-create",
                     "lun-create", "lun-create", "acl-set", "authentication"]


def test_growing_a_lun_grows_file_and_backstore_and_remaps_nothing():
    grown = dict(RECORD, luns=[dict(RECORD["luns"][0], size=2 << 30), RECORD["luns"][1]])
    actions = plan(wanted([grown], {"tank"}), configured())
    assert [(a.kind, a.backstore.size) for a in actions] == [("file", 2 << 30), ("backstore-grow", 2 << 30)]


def test_removed_lun_initiator_and_chap_change_only_what_changed():
    changed = dict(RECORD, luns=RECORD["luns"][:1], chap=None,
                   initiators=["iqn.2000-01.com.example:other"])
    actions = plan(wanted([changed], {"tank"}), configured())
    assert [(a.kind, a.lun, a.initiator) for a in actions] == [
        ("lun-delete", 3, ""),
        ("acl-delete", -1, CLIENT),
        ("acl-set", -1, "iqn.2000-01.com.example:other"),
        ("authentication", -1, ""),
        ("backstore-delete", -1, ""),
    ]
    assert actions[2].acl == Acl(None, frozenset({0}))
    assert actions[3].flag is False and actions[4].backstore.name == backstore_name(SERIAL1)


def test_targets_without_records_go_and_only_cairns_backstores_are_removed():
    have = configured()
    foreign = Backstore("admin-disk", "/srv/disk.img", 1 << 20, "c" * 32)
    have = Lio({**have.backstores, foreign.name: foreign}, have.targets, have.file_sizes)
    actions = plan(Lio(), have)
    assert [a.kind for a in actions] == ["target-delete", "backstore-delete", "backstore-delete"]
    assert foreign.name not in {a.backstore.name for a in actions if a.backstore}
