"""Shares: users, groups, share validation (every problem at once, by field path), NFS client rules,
id allocation and effective access (pure, no system)."""

from __future__ import annotations

import json

import pytest

from cairn.errors import Conflict, ValidationError
from cairn.shares import model

USERS = {"alice", "bob", "carol"}
GROUPS = {"editors", "interns"}


def share_data(**changes):
    data = {"name": "Media", "pool": "tank", "volume": "media", "smb": {}}
    data.update(changes)
    return data


def problems_of(data, **kwargs) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.check_share(data, USERS, GROUPS, **kwargs)
    return caught.value.fields


def share_problem(field: str, **changes) -> str:
    return problems_of(share_data(**changes))[field]


# --- users and groups -------------------------------------------------------------------------
def test_user_gets_the_lowest_free_uid_and_keeps_its_groups():
    user = model.check_user({"name": "alice", "full_name": "Alice Liddell", "groups": ["editors"]},
                            taken_names={"bob"}, groups=GROUPS, taken_uids={10000, 10002})
    assert user == model.User("alice", 10001, "Alice Liddell", ("editors",), False)


def test_user_names_are_posix_lower_case_and_not_the_systems():
    for good in ("alice", "_svc", "j.doe", "a-b_c", "a" * 32):
        assert model.check_user({"name": good}, set()).name == good
    for bad in ("Alice", "1abc", "-x", "a" * 33, "", None, "a b", "é"):
        fields = pytest.raises(ValidationError, model.check_user, {"name": bad}, set()).value.fields
        assert fields == {"name": "user name must be 1-32 of a-z, 0-9, '_', '.' and '-', "
                                  "starting with a letter or '_'"}, bad
    for reserved in ("root", "nobody", "www-data", "systemd-network", "libvirt-qemu", "etcd", "_apt"):
        fields = pytest.raises(ValidationError, model.check_user, {"name": reserved}, set()).value.fields
        assert fields == {"name": f"{reserved!r} is reserved for the system"}


def test_user_reports_every_problem_at_once():
    with pytest.raises(ValidationError) as caught:
        model.check_user({"name": "bob", "full_name": "Bob: the builder",
                          "groups": ["editors", "ghosts", "editors"], "disabled": "no", "uid": 999,
                          "shell": "/bin/sh"},
                         taken_names={"bob"}, groups=GROUPS)
    assert caught.value.fields == {
        "name": "a user named 'bob' exists already",
        "full_name": "must not contain ':' (':' and ',' separate fields in /etc/passwd)",
        "groups[1]": "no group named 'ghosts'",
        "groups[2]": "'editors' is listed twice",
        "disabled": "must be true or false",
        "uid": "must be a whole number from 10000 to 59999",
        "shell": "unknown setting",
    }


def test_given_uid_must_be_free():
    with pytest.raises(ValidationError, match="uid: 10005 is taken"):
        model.check_user({"name": "dave", "uid": 10005}, set(), taken_uids={10005})
    assert model.check_user({"name": "dave", "uid": 10007}, set(), taken_uids={10005}).uid == 10007


def test_groups_follow_the_same_name_rules_and_allocate_gids():
    assert model.check_group({"name": "editors", "description": "Everyone"}, set(), {10000}) == \
        model.Group("editors", 10001, "Everyone")
    with pytest.raises(ValidationError) as caught:
        model.check_group({"name": "users", "gid": 70000}, set())
    assert caught.value.fields == {"name": "'users' is reserved for the system",
                                   "gid": "must be a whole number from 10000 to 59999"}
    with pytest.raises(ValidationError, match="a group named 'editors' exists already"):
        model.check_group({"name": "editors"}, {"editors"})


def test_allocate_id_fills_gaps_and_ignores_foreign_ranges():
    assert model.allocate_id(set()) == 10000
    assert model.allocate_id({0, 1000, 65534, 10000, 10001, 10003}) == 10002
    assert model.allocate_id({500}, first=500, last=502) == 501
    with pytest.raises(Conflict, match="no free id left from 1 to 2"):
        model.allocate_id({1, 2}, first=1, last=2)


def test_records_round_trip_through_json():
    user = model.User("alice", 10001, "Alice", ("editors", "interns"), True)
    group = model.Group("editors", 10000, "Everyone")
    share = model.check_share(share_data(
        description="Films", path="/pools/tank/media/films",
        smb={"recycle_bin": True}, nfs={"clients": [{"match": "10.0.0.0/8", "root_squash": False}]},
        permissions=[{"principal": "group:editors", "access": "rw"}]), USERS, GROUPS)
    for record, kind in ((user, model.User), (group, model.Group), (share, model.Share)):
        assert kind.from_dict(json.loads(json.dumps(record.to_dict()))) == record


# --- share names ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Büro Ablage", "Homes2", "50% Rabatt", "backup$", "a", "x" * 80,
                                  "Média & Co.pdf-archive", "日本語"])
def test_share_names_that_are_fine(name):
    assert model.check_share(share_data(name=name), USERS, GROUPS).name == name


@pytest.mark.parametrize("name, problem", [
    ("HOMES", "'HOMES' is reserved by Samba (share names ignore case)"),
    ("Global", "'Global' is reserved by Samba (share names ignore case)"),
    ("IPC$", "'IPC$' is reserved by Samba (share names ignore case)"),
    ("print$", "'print$' is reserved by Samba (share names ignore case)"),
    ("", "share name must be 1-80 characters"),
    ("x" * 81, "share name must be 1-80 characters, not 81"),
    ("a/b", "must not contain '/' (share names cannot hold / \\ : * ? \" < > | [ ])"),
    ("a:b*", "must not contain '*', ':' (share names cannot hold / \\ : * ? \" < > | [ ])"),
    ("[x]", "must not contain '[', ']' (share names cannot hold / \\ : * ? \" < > | [ ])"),
    (".", "'.' is not a share name"),
    ("..", "'..' is not a share name"),
    ("data.", "must not end with '.' (Windows drops trailing dots)"),
    (" lead", "must not start or end with a space (smb.conf cannot keep it)"),
    ("trail ", "must not start or end with a space (smb.conf cannot keep it)"),
    ("two  spaces", "must not contain two spaces in a row (Samba's config parser merges them into one)"),
    ("tab\there", "must contain only printable characters and plain spaces (found U+0009)"),
    ("line\nbreak", "must contain only printable characters and plain spaces (found U+000A)"),
    ("no\u00a0break", "must contain only printable characters and plain spaces (found U+00A0)"),
    ("%U home", "contains '%U', which Samba would replace (it substitutes %-variables and has no "
                "escape for '%'); a '%' before a space, digit or sign is fine"),
    ("env%$(HOME)", "contains '%$', which Samba would replace (it substitutes %-variables and has no "
                    "escape for '%'); a '%' before a space, digit or sign is fine"),
    ("trailing\\", "must not contain '\\' (share names cannot hold / \\ : * ? \" < > | [ ])"),
    (None, "share name must be 1-80 characters"),
])
def test_share_names_that_are_refused_say_why(name, problem):
    assert share_problem("name", name=name) == problem


def test_share_names_clash_ignoring_case():
    assert problems_of(share_data(name="MEDIA"), taken_names={"media", "Other"}) == \
        {"name": "a share named 'media' exists already (share names ignore case)"}


# --- paths ------------------------------------------------------------------------------------
def test_path_defaults_to_the_volume_and_is_normalised_inside_it():
    assert model.check_share(share_data(), USERS, GROUPS).path == "/pools/tank/media"
    for given, kept in (("/pools/tank/media/", "/pools/tank/media"),
                        ("/pools/tank/media/films/../music//./jazz", "/pools/tank/media/music/jazz"),
                        ("/pools/tank/media/Büro Ablage", "/pools/tank/media/Büro Ablage"),
                        ("/pools/tank/media/100% sure #1", "/pools/tank/media/100% sure #1")):
        assert model.check_share(share_data(path=given), USERS, GROUPS).path == kept
    assert model.check_share(share_data(path="/srv/nas/tank/media/x"), USERS, GROUPS,
                             pools_root="/srv/nas/").path == "/srv/nas/tank/media/x"


@pytest.mark.parametrize("path, problem", [
    ("/pools/tank/media/../other", "/pools/tank/media/../other resolves to /pools/tank/other, which is "
                                   "outside volume tank/media (/pools/tank/media)"),
    ("/pools/tank/media/../../../etc", "/pools/tank/media/../../../etc resolves to /etc, which is "
                                       "outside volume tank/media (/pools/tank/media)"),
    ("/etc/samba", "/etc/samba is outside volume tank/media (/pools/tank/media)"),
    ("/pools/tank/media2", "/pools/tank/media2 is outside volume tank/media (/pools/tank/media)"),
    ("/pools/tank", "/pools/tank is outside volume tank/media (/pools/tank/media)"),
    ("/pools/tank/.snapshots/media/auto-20260101T000000Z",
     "/pools/tank/.snapshots/media/auto-20260101T000000Z is outside volume tank/media (/pools/tank/media)"),
    ("media/films", "'media/films' is not absolute; give a path inside /pools/tank/media"),
    ("", "must be an absolute path inside /pools/tank/media"),
    ('/pools/tank/media/say "hi"', "must not contain '\"' (smb.conf strips quotes around values and "
                                   "exports(5) quotes with them)"),
    ("/pools/tank/media/a\\b", "must not contain '\\' (smb.conf continues lines with it and "
                               "exports(5) decodes escapes with it)"),
    ("/pools/tank/media/%U", "contains '%U', which Samba would replace (it substitutes %-variables and "
                             "has no escape for '%'); a '%' before a space, digit or sign is fine"),
    ("/pools/tank/media/a  b", "must not contain two spaces in a row (Samba's config parser merges them "
                               "into one)"),
    ("/pools/tank/media/x\n", "must contain only printable characters and plain spaces (found U+000A)"),
    ("/pools/tank/media/" + "x" * 1024, "must be at most 1024 bytes long (UTF-8)"),
])
def test_paths_outside_the_volume_or_unwritable_are_refused(path, problem):
    assert share_problem("path", path=path) == problem


def test_pool_and_volume_names_follow_the_storage_rules():
    assert problems_of(share_data(pool="Tank", volume="vms")) == {
        "pool": "pool name must be 1-32 of a-z, 0-9, '-' and '_', starting with a letter or digit",
        "volume": "'vms' is reserved",
    }


# --- protocols, NFS clients and permissions ---------------------------------------------------
def test_a_share_needs_smb_or_nfs():
    assert problems_of(share_data(smb=None)) == {"smb": "a share needs smb or nfs settings (or both)"}
    assert problems_of(share_data(smb={"guest_ok": "yes", "colour": "red"})) == {
        "smb.guest_ok": "must be true or false", "smb.colour": "unknown setting"}


@pytest.mark.parametrize("given, kept", [
    ("nas-client.lan", "nas-client.lan"),
    ("Backup.Example.COM", "backup.example.com"),
    ("192.168.1.7", "192.168.1.7"),
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("10.0.0.0/255.0.0.0", "10.0.0.0/8"),
    ("192.168.1.7/32", "192.168.1.7/32"),
    ("2001:db8::1", "2001:db8::1"),
    ("2001:DB8:0:0::/64", "2001:db8::/64"),
    ("fd00::/8", "fd00::/8"),
    ("*.example.com", "*.example.com"),
    ("*", "*"),
    ("localhost", "localhost"),
])
def test_nfs_clients_that_are_fine_are_kept_in_canonical_form(given, kept):
    share = model.check_share(share_data(smb=None, nfs={"clients": [{"match": given}]}), USERS, GROUPS)
    assert share.nfs.clients == (model.NfsClient(kept, "rw", True),)


@pytest.mark.parametrize("match, problem", [
    ("10.0.0.1/8", "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"),
    ("192.168.1.10/24", "192.168.1.10/24 has host bits set; did you mean 192.168.1.0/24?"),
    ("fd00::1/64", "fd00::1/64 has host bits set; did you mean fd00::/64?"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not a network in CIDR form (like 192.168.1.0/24 or fd00::/64)"),
    ("10.0.0.0/", "'10.0.0.0/' is not a network in CIDR form (like 192.168.1.0/24 or fd00::/64)"),
    ("host/24", "'host/24' is not a network in CIDR form (like 192.168.1.0/24 or fd00::/64)"),
    ("", "empty; give a host name, an address, a network like 192.168.1.0/24, a wildcard like "
         "*.example.com, or * for everyone"),
    (None, "empty; give a host name, an address, a network like 192.168.1.0/24, a wildcard like "
           "*.example.com, or * for everyone"),
    ("a*.example.com", "'a*.example.com': only a leading '*.' wildcard is allowed (like *.example.com)"),
    ("*.*.example.com", "'*.*.example.com': only a leading '*.' wildcard is allowed (like *.example.com)"),
    ("**", "'**': only a leading '*.' wildcard is allowed (like *.example.com)"),
    ("*.", "'*.' is not a host name, address, network or wildcard"),
    ("not a host", "'not a host' is not a host name, address, network or wildcard"),
    ("-bad.example.com", "'-bad.example.com' is not a host name, address, network or wildcard"),
    ("bad-.example.com", "'bad-.example.com' is not a host name, address, network or wildcard"),
    ("under_score.lan", "'under_score.lan' is not a host name, address, network or wildcard"),
    ("trailing.dot.", "'trailing.dot.' is not a host name, address, network or wildcard"),
    ("x" * 64 + ".lan", f"'{'x' * 64}.lan' is not a host name, address, network or wildcard"),
    ("300.1.1.1", "'300.1.1.1' is not a valid IP address (and host names do not end in a number)"),
    ("010.0.0.1", "'010.0.0.1' is not a valid IP address (and host names do not end in a number)"),
    ("fe80::1%eth0", "fe80::1%eth0: zone indexes ('%...') cannot be used in exports"),
    ("host(rw)", "'host(rw)' is not a host name, address, network or wildcard"),
])
def test_bad_nfs_clients_say_what_is_wrong(match, problem):
    fields = problems_of(share_data(nfs={"clients": [{"match": "*"}, {"match": match}]}))
    assert fields == {"nfs.clients[1].match": problem}


def test_nfs_needs_clients_with_known_settings_and_no_duplicates():
    assert share_problem("nfs.clients", nfs={"clients": []}) == \
        "at least one client is needed (use '*' for everyone)"
    assert share_problem("nfs.clients", nfs={}) == "at least one client is needed (use '*' for everyone)"
    fields = problems_of(share_data(nfs={"clients": [
        {"match": "10.0.0.0/8"}, {"match": "10.0.0.0/255.0.0.0", "access": "write", "root_squash": 0,
                                  "insecure": True}]}))
    assert fields == {"nfs.clients[1].match": "10.0.0.0/8 is listed twice (also clients[0])",
                      "nfs.clients[1].access": "must be rw or ro",
                      "nfs.clients[1].root_squash": "must be true or false",
                      "nfs.clients[1].insecure": "unknown setting"}


def test_permissions_name_existing_principals_once():
    fields = problems_of(share_data(permissions=[
        {"principal": "user:alice", "access": "rw"},
        {"principal": "user:bob2", "access": "ro"},
        {"principal": "group:ghosts", "access": "ro"},
        {"principal": "alice", "access": "rw"},
        {"principal": "user:alice", "access": "all"},
        "rw",
    ]))
    assert fields == {
        "permissions[1].principal": "no user named 'bob2'",
        "permissions[2].principal": "no group named 'ghosts'",
        "permissions[3].principal": "must be 'user:<name>' or 'group:<name>'",
        "permissions[4].principal": "user:alice is listed twice",
        "permissions[4].access": "must be ro, rw or none",
        "permissions[5]": "must be an object with principal and access",
    }


def test_every_problem_comes_back_at_once():
    with pytest.raises(ValidationError) as caught:
        model.check_share({"name": "HOMES", "pool": "tank", "volume": "media",
                           "path": "/pools/tank/media/../../etc", "description": "a\tb",
                           "smb": {"read_only": 1},
                           "nfs": {"clients": [{"match": "10.0.0.1/8"}, {"match": ""}]},
                           "permissions": [{"principal": "user:bob2", "access": "rw"}],
                           "quota": 5}, USERS, GROUPS)
    assert set(caught.value.fields) == {"name", "path", "description", "smb.read_only",
                                        "nfs.clients[0].match", "nfs.clients[1].match",
                                        "permissions[0].principal", "quota"}
    message = str(caught.value)
    assert "permissions[0].principal: no user named 'bob2'" in message
    assert "nfs.clients[0].match: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?" in message
    assert caught.value.to_dict()["fields"]["quota"] == "unknown setting"


def test_descriptions_must_survive_smb_conf():
    assert model.check_share(share_data(description="100% Büro, 50 % off"), USERS, GROUPS).description == \
        "100% Büro, 50 % off"
    assert share_problem("description", description="x" * 257) == "must be at most 256 characters, not 257"
    assert share_problem("description", description="ends in \\") == \
        "must not end with '\\' (it would continue the line in smb.conf)"
    assert share_problem("description", description="for %m only").startswith("contains '%m', which Samba")


# --- effective access -------------------------------------------------------------------------
def share_with(*entries: tuple[str, str]) -> model.Share:
    return model.Share("s", "tank", "media", "/pools/tank/media", smb=model.SmbOptions(),
                       permissions=tuple(model.Permission(p, a) for p, a in entries))


@pytest.mark.parametrize("entries, groups, expected", [
    ([], [], "none"),
    ([("group:editors", "rw")], [], "none"),
    ([("group:editors", "rw")], ["editors"], "rw"),
    ([("group:editors", "ro")], ["editors"], "ro"),
    ([("group:editors", "rw"), ("group:interns", "ro")], ["editors", "interns"], "rw"),
    ([("group:editors", "rw"), ("group:interns", "none")], ["editors", "interns"], "none"),
    ([("group:editors", "ro"), ("group:interns", "none")], ["interns", "editors"], "none"),
    ([("user:alice", "ro"), ("group:editors", "rw")], ["editors"], "ro"),
    ([("user:alice", "rw"), ("group:interns", "none")], ["interns"], "rw"),
    ([("user:alice", "none"), ("group:editors", "rw")], ["editors"], "none"),
    ([("user:bob", "rw")], ["editors"], "none"),
])
def test_effective_access_user_entry_first_then_none_rw_ro_among_groups(entries, groups, expected):
    assert model.effective_access(share_with(*entries), "alice", groups) == expected
