"""The pure side of applying shares on a node: parsing passwd/group/pdbedit/getfacl output captured
on a real system, planning account and passdb commands in a safe order, the ACL a share's
permissions call for, and the whole plan (nothing to do when the node matches; nothing planned
when a config cannot be generated)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.config import SharesConfig
from cairn.shares import accounts, acl, exports, smbconf
from cairn.shares.apply import EXPORTS, NFS_CONF, SMB_CONF, NodeState, Records, plan
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


def test_passdb_plan_sets_hashes_and_flags_and_removes_before_adding():
    users = {"alice": User("alice", 10001), "carol": User("carol", 10004, disabled=True)}
    hashes = {"alice": "8846f7eaee8fb117ad06bdd830b7586c", "carol": "aa" * 16}
    removals, updates = accounts.plan_passdb(users, hashes, accounts.parse_pdbedit(fixture("samba/pdbedit-L-w.txt")),
                                             "/etc/samba/smb.conf")
    base = ("pdbedit", "-s", "/etc/samba/smb.conf")
    assert [s.argv for s in removals] == [(*base, "-x", "-u", "bob")]   # legacy (uid 500) is not Cairn's
    assert [(s.argv, s.secret_input) for s in updates] == [
        ((*base, "-a", "-t", "-u", "carol"), True),
        ((*base, "-u", "carol", "--set-nt-hash", "AA" * 16), False),
        ((*base, "-u", "carol", "-c", "[D]"), False),
    ]                                                    # alice: same hash (any case), enabled: nothing


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
    assert plan(records, matching_state(records), SETTINGS, "node-1") == []
    fresh = matching_state(records, unix_users=[], passdb=[], smb_conf=None, exports=None, nfs_conf=None,
                           acls={OFFICE.path: None}, smbd_active=False, nfsd_active=False)
    kinds = [(a.kind, a.path or " ".join(a.argv[:1])) for a in plan(records, fresh, SETTINGS, "node-1")]
    assert kinds == [("smb.conf", "/" + SMB_CONF), ("mkdir", OFFICE.path), ("run", "useradd"),
                     ("run", "pdbedit"), ("run", "pdbedit"), ("acl", OFFICE.path), ("start", "smbd.service"),
                     ("nfs.conf", "/" + NFS_CONF), ("exports", "/" + EXPORTS), ("start", "nfs-server.service")]


def test_shares_of_unmounted_pools_or_missing_volumes_are_not_served():
    records = Records(USERS, {"alice": "ab" * 16}, {}, [OFFICE], "/pools")
    for state in (matching_state(records, mounted_pools=frozenset()), matching_state(records, volumes=frozenset())):
        actions = plan(records, state, SETTINGS, "node-1")
        written = {a.kind: a.text for a in actions}
        assert "[Office]" not in written["smb.conf"] and OFFICE.path not in written["exports"]
        assert not any(a.kind in ("mkdir", "acl") for a in actions)


def test_a_record_smb_conf_cannot_hold_stops_the_plan_before_anything():
    records = Records(USERS, {"alice": "ab" * 16}, {}, [OFFICE, Share("50%Us", "tank", "office", "/pools/tank/office/x",
                                                                      smb=SmbOptions())], "/pools")
    with pytest.raises(ValueError, match="50%Us"):
        plan(records, matching_state(records), SETTINGS, "node-1")
