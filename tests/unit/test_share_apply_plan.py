"""The pure side of applying shares on a node: parsing passwd/group/pdbedit/getfacl output captured
on a real system, planning account and passdb commands in a safe order (NT hashes on stdin, never
in argv), the ACL a share's permissions call for, the whole plan (nothing to do when the node
matches), and records the node cannot use: left out and named, never stopping the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.config import SharesConfig
from cairn.shares import accounts, acl, exports, smbconf
from cairn.shares.apply import (EXPORTS, NFS_CONF, SMB_CONF, NodeState, Plan, Records, plan, records_from,
                                served_after)
from cairn.shares.model import Group, NfsClient, NfsOptions, Permission, Share, SmbOptions, User

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_passwd_group_and_pdbedit_parse_real_files():
    users = {u.name: u for u in accounts.parse_passwd(fixture("samba/passwd"))}
    assert users["alice"] == accounts.UnixUser("alice", 10001, 100, "Alice B")
    groups = {g.name: g for g in accounts.parse_group(fixture("samba/group"))}
    assert groups["staff"] == accounts.UnixGroup("staff", 10100, ())
    entries = {e.name: e for e in accounts.parse_pdbedit(fixture("samba/pdbedit-L-w.txt"))}
    assert entries["alice"] == accounts.PassdbEntry("alice", 10001, "8846F7EAEE8FB117AD06BDD830B7586C", "U")
    assert entries["bob"].disabled and not entries["alice"].disabled
    assert entries["legacy"].uid == 500


def test_account_plan_adds_groups_before_users_and_removes_only_cairn_ids():
    users = {"alice": User("alice", 10001, "Alice B", ("staff",)),
             "dave": User("dave", 10003, "Dave", ("staff", "sales"))}
    groups = {"staff": Group("staff", 10100), "sales": Group("sales", 10101)}
    steps = accounts.plan_accounts(users, groups, accounts.parse_passwd(fixture("samba/passwd")),
                                   accounts.parse_group(fixture("samba/group")), "/srv/root")
    assert [s.argv for s in steps] == [
        ("userdel", "--prefix", "/srv/root", "bob"),               # uid 10002: Cairn's, no record
        ("groupadd", "--prefix", "/srv/root", "-g", "10101", "sales"),
        ("usermod", "--prefix", "/srv/root", "-G", "staff", "-c", "Alice B", "alice"),
        ("useradd", "--prefix", "/srv/root", "-u", "10003", "-g", "users", "-G", "sales,staff", "-M",
         "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-c", "Dave", "dave"),
    ]                                                               # legacy (uid 500) untouched


def test_account_plan_replaces_an_account_whose_id_changed_and_has_no_prefix_on_the_real_root():
    steps = accounts.plan_accounts({"alice": User("alice", 10005, "Alice B")}, {},
                                   accounts.parse_passwd(fixture("samba/passwd")), [], "/")
    assert [s.argv[:2] for s in steps] == [("userdel", "alice"), ("userdel", "bob"), ("useradd", "-u")]


def test_passdb_plan_imports_one_smbpasswd_line_per_change_on_stdin_and_removes_before_adding():
    users = {"alice": User("alice", 10001), "carol": User("carol", 10004, disabled=True),
             "bob": User("bob", 10002)}
    hashes = {"alice": "8846f7eaee8fb117ad06bdd830b7586c", "carol": "aa" * 16, "bob": "2abbdfbcb4232a31f5885fd42217a6b6"}
    removals, updates = accounts.plan_passdb(users, hashes, accounts.parse_pdbedit(fixture("samba/pdbedit-L-w.txt")),
                                             "/etc/samba/smb.conf", now=0x6B0D5B94)
    base = ("pdbedit", "-s", "/etc/samba/smb.conf")
    assert removals == []                                 # legacy (uid 500) is not Cairn's
    assert [(s.what, s.argv, s.input, s.expect) for s in updates] == [
        ("enable bob in the Samba passdb", (*base, "-i", "smbpasswd:/dev/stdin", "-u", "bob"),
         "bob:10002:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:2ABBDFBCB4232A31F5885FD42217A6B6:[U          ]:LCT-6B0D5B94:\n",
         "Importing account for bob...ok"),
        ("add carol to the Samba passdb", (*base, "-i", "smbpasswd:/dev/stdin", "-u", "carol"),
         f"carol:10004:{'X' * 32}:{'AA' * 16}:[DU         ]:LCT-6B0D5B94:\n", "Importing account for carol...ok"),
    ]                                                    # alice: same hash (any case), enabled: nothing
    assert not any(hashes[name].upper() in " ".join(step.argv) for step in updates for name in hashes)
    assert "AA" * 16 not in repr(updates[1])              # the secret stays out of logs and reprs


def test_an_smbpasswd_line_is_what_pdbedit_itself_writes():
    line = accounts.smbpasswd_line("bob", 10002, "2abbdfbcb4232a31f5885fd42217a6b6", True, 0x6B0D5B94)
    assert line == fixture("samba/pdbedit-L-w.txt").splitlines(keepends=True)[0]


def test_passdb_removes_entries_of_deleted_users_but_not_of_held_ones():
    entries = accounts.parse_pdbedit(fixture("samba/pdbedit-L-w.txt"))
    removals, _ = accounts.plan_passdb({}, {}, entries, "/c", now=0)
    assert [s.argv[-1] for s in removals] == ["alice", "bob"]
    removals, _ = accounts.plan_passdb({}, {}, entries, "/c", now=0, keep={"bob"})
    assert [s.argv[-1] for s in removals] == ["alice"]


def test_accounts_named_by_held_records_are_not_removed():
    steps = accounts.plan_accounts({}, {}, accounts.parse_passwd(fixture("samba/passwd")),
                                   accounts.parse_group(fixture("samba/group")), "/", keep_users={"alice"},
                                   keep_groups={"staff"})
    assert ("userdel", "alice") not in [s.argv for s in steps] and ("userdel", "bob") in [s.argv for s in steps]
    assert ("groupdel", "staff") not in [s.argv for s in steps]


def test_acl_gives_each_user_the_effective_access_and_none_beats_a_group_grant():
    users = {"alice": User("alice", 10001, groups=("staff",)), "bob": User("bob", 10002, groups=("staff", "temps")),
             "carol": User("carol", 10003), "dave": User("dave", 10004, groups=("staff",), disabled=True)}
    groups = {"staff": Group("staff", 10100), "temps": Group("temps", 10101)}
    share = Share("Office", "tank", "office", "/pools/tank/office", smb=SmbOptions(guest_ok=True),
                  permissions=(Permission("group:staff", "rw"), Permission("group:temps", "none"),
                               Permission("user:carol", "ro")))
    wanted = acl.entries(share, users, groups)
    assert wanted[:8] == ["user::rwX", "user:10001:rwX", "user:10002:---", "user:10003:r-X", "user:10004:---",
                          "user:65534:r-X", "group::---", "mask::rwX"]
    assert wanted[9:] == ["default:" + entry for entry in wanted[:9]]
    assert acl.parse_getfacl(fixture("acl/getfacl-dir.txt")) == acl.as_directory(
        ["user::rwX", "user:10001:rwX", "user:10002:r-X", "user:10003:---", "group::---", "mask::rwX",
         "other::---", "default:user::rwX", "default:user:10001:rwX", "default:user:10002:r-X",
         "default:user:10003:---", "default:group::---", "default:mask::rwX", "default:other::---"])
    assert "user:10001:rwx" in acl.parse_getfacl(fixture("acl/getfacl-file.txt"))   # '#effective' dropped


USERS = {"alice": User("alice", 10001)}
OFFICE = Share("Office", "tank", "office", "/pools/tank/office", smb=SmbOptions(),
               nfs=NfsOptions((NfsClient("10.0.0.0/24"),)), permissions=(Permission("user:alice", "rw"),))
SETTINGS = SharesConfig(etc_root="/", service_manager="systemd", nfs=True)


def matching_state(records: Records, **changes) -> NodeState:
    """The node as it is once everything is applied."""
    share_acl = acl.as_directory(acl.entries(OFFICE, records.users, records.groups))
    state = dict(
        unix_users=[accounts.UnixUser("alice", 10001, 100, "")], unix_groups=[],
        passdb=[accounts.PassdbEntry("alice", 10001, "AB" * 16, "U")], mounted_pools=frozenset({"tank"}),
        volumes=frozenset({"/pools/tank/office"}),
        smb_conf=smbconf.render([OFFICE], records.users, {}, netbios_name="NODE-1"),
        exports=exports.render_exports([OFFICE]), nfs_conf=exports.render_nfs_conf(),
        acls={OFFICE.path: share_acl}, smbd_active=True, nfsd_active=True)
    state.update(changes)
    return NodeState(**state)


def test_plan_is_empty_when_the_node_matches_and_complete_on_a_fresh_node():
    records = Records(USERS, {"alice": "ab" * 16}, {}, [OFFICE], "/pools")
    assert plan(records, matching_state(records), SETTINGS, "node-1") == Plan([], [OFFICE], {})
    fresh = matching_state(records, unix_users=[], passdb=[], smb_conf=None, exports=None, nfs_conf=None,
                           acls={OFFICE.path: None}, smbd_active=False, nfsd_active=False)
    kinds = [(a.kind, a.path or " ".join(a.argv[:1]), a.record)
             for a in plan(records, fresh, SETTINGS, "node-1").actions]
    assert kinds == [("smb.conf", "/" + SMB_CONF, ""), ("mkdir", OFFICE.path, "share:Office"),
                     ("run", "useradd", "user:alice"), ("run", "pdbedit", "user:alice"),
                     ("acl", OFFICE.path, "share:Office"), ("start", "smbd.service", ""),
                     ("nfs.conf", "/" + NFS_CONF, ""), ("exports", "/" + EXPORTS, ""),
                     ("start", "nfs-server.service", "")]


def test_shares_of_unmounted_pools_or_missing_volumes_are_not_served():
    records = Records(USERS, {"alice": "ab" * 16}, {}, [OFFICE], "/pools")
    for state in (matching_state(records, mounted_pools=frozenset()), matching_state(records, volumes=frozenset())):
        actions = plan(records, state, SETTINGS, "node-1").actions
        written = {a.kind: a.text for a in actions}
        assert "[Office]" not in written["smb.conf"] and OFFICE.path not in written["exports"]
        assert not any(a.kind in ("mkdir", "acl") for a in actions)


def test_a_share_no_config_file_can_hold_is_left_out_and_named_and_the_others_are_planned():
    bad = Share("50%Us", "tank", "office", "/pools/tank/office/x", smb=SmbOptions())
    twin = Share("Twin", "tank", "office", OFFICE.path, nfs=NfsOptions((NfsClient("*"),)))
    records = Records(USERS, {"alice": "ab" * 16}, {}, [bad, OFFICE, twin], "/pools")
    result = plan(records, matching_state(records), SETTINGS, "node-1")
    assert result.served == [OFFICE] and set(result.rejected) == {"shares/50%us", "shares/twin"}
    assert "50%Us" in result.rejected["shares/50%us"] and "'%U'" in result.rejected["shares/50%us"]
    assert result.rejected["shares/twin"] == f"share 'Office' exports {OFFICE.path} already"
    assert result.actions == []          # the node already serves Office as it should


def test_a_node_setting_smb_conf_cannot_hold_stops_the_plan_before_anything():
    records = Records(USERS, {"alice": "ab" * 16}, {}, [OFFICE], "/pools")
    with pytest.raises(ValueError, match="workgroup"):
        plan(records, matching_state(records), SharesConfig(workgroup="NODE-1"), "node-1")


GOOD_GROUP = ("share-groups/office", {"name": "office", "gid": 10100, "description": ""})
GOOD_USER = ("share-users/alice", {"name": "alice", "uid": 10001, "full_name": "", "groups": ["office"],
                                   "disabled": False, "nt_hash": "ab" * 16})
GOOD_SHARE = ("shares/office", {**OFFICE.to_dict(), "permissions": [{"principal": "group:office", "access": "rw"}]})


def test_good_records_are_taken_as_they_are():
    records = records_from([GOOD_USER], [GOOD_GROUP], [GOOD_SHARE], "/pools", {"tank"})
    assert (records.users, records.hashes, records.groups, records.rejected) == (
        {"alice": User("alice", 10001, groups=("office",))}, {"alice": "ab" * 16},
        {"office": Group("office", 10100)}, {})
    assert records.shares == [Share.from_dict(GOOD_SHARE[1])]
    assert records_from([], [], [GOOD_SHARE], "/pools", {"other-pool"}).shares == []   # not this node's


def test_bad_records_are_left_out_named_by_key_and_their_accounts_held():
    records = records_from(
        [GOOD_USER, ("share-users/eve", {**GOOD_USER[1], "name": "eve", "nt_hash": "ab" * 15 + ":\n"}),
         ("share-users/root", {**GOOD_USER[1], "name": "root", "uid": 10005})],
        [GOOD_GROUP, ("share-groups/staff\n", {"name": "staff\n", "gid": 10101})],
        [GOOD_SHARE, ("shares/media", {**GOOD_SHARE[1], "name": "Media", "path": "/etc"}),
         ("shares/misfiled", {**GOOD_SHARE[1], "name": "Other"}), ("shares/junk", ["not", "a", "share"])],
        "/pools", {"tank"})
    assert set(records.users) == {"alice"} and set(records.groups) == {"office"}
    assert [s.name for s in records.shares] == ["Office"]
    assert set(records.rejected) == {"share-users/eve", "share-users/root", "share-groups/staff\n",
                                     "shares/media", "shares/misfiled", "shares/junk"}
    assert records.rejected["share-groups/staff\n"].startswith("name: group name must be")
    assert records.rejected["share-users/eve"] == "nt_hash: missing or not an NT hash (32 hex digits)"
    assert records.rejected["share-users/root"] == "name: 'root' is reserved for the system"
    assert records.rejected["shares/media"].startswith("path: /etc is outside volume tank/office")
    assert records.rejected["shares/misfiled"] == "name: 'Other' is stored under shares/misfiled"
    assert (records.held_users, records.held_groups) == ({"eve", "root"}, {"staff\n"})


def test_a_failed_step_unserves_only_its_share_and_a_failed_smb_conf_only_new_smb_shares():
    second = Share("Second", "tank", "office", "/pools/tank/office/second", smb=SmbOptions())
    nfs_only = Share("Nfs", "tank", "office", "/pools/tank/office/nfs", nfs=NfsOptions((NfsClient("*"),)))
    result = Plan([], [OFFICE, nfs_only, second], {})
    assert served_after(result, {}, []) == ["Nfs", "Office", "Second"]
    assert served_after(result, {"share:Second": "set the ACL: failed"}, []) == ["Nfs", "Office"]
    assert served_after(result, {"smb.conf": "testparm refused it"}, ["Office"]) == ["Nfs", "Office"]
