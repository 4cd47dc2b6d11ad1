"""The pure side of iSCSI on a node: target records to LIO's wanted configuration, and the plan
that makes LIO match it (nothing when it does; files before backstores, LUNs before ACLs that map
them, stray targets and Cairn's unused backstores removed; a grown LUN grows file and backstore)."""

from __future__ import annotations

from cairn.shares.lio import Acl, Backstore, Lio, TargetState, backstore_name, plan, screen, wanted

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


def placed(name: str, serial: str = SERIAL0, root: str = "/pools", **changes) -> dict:
    """A target record as the API writes it (LUN file where it belongs under `root`)."""
    record = {"name": name, "iqn": f"iqn.2026-11.invalid.cairn:{name}", "pool": "tank", "volume": "luns",
              "description": "", "initiators": [CLIENT], "chap": None,
              "luns": [{"lun": 0, "size": 1 << 30, "serial": serial,
                        "file": f"{root}/tank/luns/.iscsi/{name}/lun0-{serial[:8]}.img"}]}
    record.update(changes)
    return record


def test_screen_keeps_good_records_and_names_bad_ones_holding_what_lio_has_for_them():
    good = placed("vmstore")
    entries = [("iscsi-targets/vmstore", good),
               ("iscsi-targets/bad\n", placed("bad\n", SERIAL1)),
               ("iscsi-targets/thief", placed("thief", "c" * 32, luns=[{"lun": 0, "size": 1 << 20, "serial": "c" * 32,
                                                                       "file": "/etc/shadow"}])),
               ("iscsi-targets/elsewhere", dict(placed("elsewhere", "d" * 32), pool="other")),
               ("iscsi-targets/misfiled", placed("other", "e" * 32))]
    records, rejected, keep = screen(entries, {"tank"}, "/pools")
    assert records == [good]
    assert set(rejected) == {"iscsi-targets/bad\n", "iscsi-targets/thief", "iscsi-targets/misfiled"}
    assert "name: target name must be" in rejected["iscsi-targets/bad\n"]
    assert rejected["iscsi-targets/thief"] == ("luns[0].file: must be /pools/tank/luns/.iscsi/thief/"
                                               f"lun0-{'c' * 8}.img (where the LUN's file lives)")
    assert keep == {"iqn.2026-11.invalid.cairn:bad\n", backstore_name(SERIAL1), "iqn.2026-11.invalid.cairn:thief",
                    backstore_name("c" * 32), "iqn.2026-11.invalid.cairn:other", backstore_name("e" * 32)}


def test_screen_without_the_pools_root_takes_any_root_but_the_same_for_every_lun():
    record = placed("vmstore", root="/srv/test-pools")
    assert screen([("iscsi-targets/vmstore", record)], {"tank"})[0] == [record]
    split = dict(record, luns=record["luns"] + [dict(record["luns"][0], lun=1, serial=SERIAL1,
                                                     file=f"/elsewhere/tank/luns/.iscsi/vmstore/lun1-{SERIAL1[:8]}.img")])
    assert set(screen([("iscsi-targets/vmstore", split)], {"tank"})[1]) == {"iscsi-targets/vmstore"}


def test_what_belongs_to_a_record_the_node_could_not_use_is_never_removed():
    have = configured()
    assert {a.kind for a in plan(Lio(), have)} == {"target-delete", "backstore-delete"}
    keep = frozenset({IQN, backstore_name(SERIAL0), backstore_name(SERIAL1)})
    assert plan(Lio(), have, keep) == []
