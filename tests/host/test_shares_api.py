"""Users, groups and shares through the API of a real stack, on a real pool (btrfs on a loop
device): every field error at once, ids allocated once, passwords kept only as the NT hash,
nothing deleted while something refers to it (409 naming what), and each share's state following
what its pool's node publishes."""

from __future__ import annotations

import json
import sys

import pytest

from cairn.runner import Runner
from cairn.shares.ntlm import nt_hash
from cairn.storage import model as storage_model
from support import finish_job, storage_stack, wait_until


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with storage_stack(tmp_path_factory.mktemp("shares"), 1, 300) as (stack, loops):
        session = stack.session()
        for method, path, body in (("POST", "/pools", {"name": "tank", "node": stack.node, "disks": loops.ids(),
                                                       "profile": "single"}),
                                   ("POST", "/pools/tank/volumes", {"name": "office"})):
            job = finish_job(session, stack, method, path, json=body)
            assert job["state"] == "success", job

        def call(method, path, **kwargs):
            return session.request(method, stack.url + "/api/v1" + path, **kwargs)
        yield stack, call


def test_users_and_groups(api):
    stack, call = api
    staff = call("POST", "/file-groups", json={"name": "staff2"})
    assert staff.status_code == 201 and staff.json()["gid"] == 10000
    alice = call("POST", "/file-users", json={"name": "alice", "password": "Secret-123", "groups": ["staff2"],
                                              "full_name": "Alice Liddell"})
    assert alice.status_code == 201, alice.text
    assert alice.json() == {"name": "alice", "uid": 10000, "full_name": "Alice Liddell", "groups": ["staff2"],
                            "disabled": False}
    assert stack.store().get("share-users/alice")["nt_hash"] == nt_hash("Secret-123")
    assert "nt_hash" not in call("GET", "/file-users/alice").json()
    bad = call("POST", "/file-users", json={"name": "Bad Name", "password": "short", "groups": ["nope"]})
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"name", "password", "groups[0]"}
    assert call("POST", "/file-users", json={"name": "root", "password": "Secret-123"}).status_code == 400
    again = call("POST", "/file-users", json={"name": "alice", "password": "Secret-123"})
    assert again.status_code in (400, 409) and "alice" in again.json()["error"]["message"]
    bob = call("POST", "/file-users", json={"name": "bob", "password": "Secret-456"})
    assert bob.json()["uid"] == 10001
    changed = call("PATCH", "/file-users/bob", json={"password": "Another-789", "disabled": True})
    assert changed.status_code == 200 and changed.json()["disabled"] is True
    assert stack.store().get("share-users/bob")["nt_hash"] == nt_hash("Another-789")


def test_shares_are_checked_and_kept(api):
    stack, call = api
    made = call("POST", "/shares", json={"name": "Office", "pool": "tank", "volume": "office", "smb": {},
                                         "permissions": [{"principal": "user:alice", "access": "rw"},
                                                         {"principal": "group:staff2", "access": "ro"}]})
    assert made.status_code == 201, made.text
    assert made.json()["path"].endswith("/pools/tank/office")
    # The stack's own agent (accounts and smb.conf in its sandbox root) serves it.
    served = wait_until(lambda: (call("GET", "/shares/Office").json()["state"]["state"] == "served") or None,
                        60, "the agent to serve the share")
    assert served and "[Office]" in (stack.dir / "shares" / "root" / "etc" / "samba" / "smb.conf").read_text()
    assert "alice:x:10000:100:" in (stack.dir / "shares" / "root" / "etc" / "passwd").read_text()
    bad = call("POST", "/shares", json={"name": "a/b", "pool": "tank", "volume": "office",
                                        "path": "/etc", "nfs": {"clients": [{"match": "10.0.0.1/8"}]},
                                        "permissions": [{"principal": "user:zed", "access": "rw"}]})
    assert bad.status_code == 400
    fields = bad.json()["error"]["fields"]
    assert set(fields) >= {"name", "path", "nfs.clients[0].match", "permissions[0].principal"}
    assert "did you mean 10.0.0.0/8" in fields["nfs.clients[0].match"]
    assert "zed" in fields["permissions[0].principal"]
    assert call("POST", "/shares", json={"name": "HOMES", "pool": "tank", "volume": "office", "smb": {}}).status_code == 400
    missing = call("POST", "/shares", json={"name": "x", "pool": "tank", "volume": "nope", "smb": {}})
    assert missing.status_code == 400 and "no volume named 'nope'" in missing.json()["error"]["message"]
    assert call("POST", "/shares", json={"name": "office", "pool": "tank", "volume": "office",
                                         "smb": {}}).status_code in (400, 409)


def test_nothing_is_deleted_while_referred_to(api):
    stack, call = api
    volume = call("DELETE", "/pools/tank/volumes/office", params={"confirm": "office"})
    assert volume.status_code == 409 and "in use by Office" in volume.json()["error"]["message"]
    group = call("DELETE", "/file-groups/staff2")
    assert group.status_code == 409 and "members alice" in group.json()["error"]["message"]
    user = call("DELETE", "/file-users/alice")
    assert user.status_code == 409 and "Office" in user.json()["error"]["message"]
    patched = call("PATCH", "/shares/office", json={"permissions": [{"principal": "group:staff2", "access": "rw"}]})
    assert patched.status_code == 200 and patched.json()["permissions"] == [{"principal": "group:staff2", "access": "rw"}]
    assert call("DELETE", "/file-users/alice").status_code == 200
    assert call("DELETE", "/shares/Office").status_code == 200
    assert call("GET", "/shares").json()["shares"] == []
    assert call("DELETE", "/file-groups/staff2").status_code == 200
    assert call("DELETE", "/pools/tank/volumes/office", params={"confirm": "office"}).status_code == 202


def test_cairnctl_users_groups_and_shares(api, tmp_path):
    stack, call = api
    env = {"XDG_CONFIG_HOME": str(tmp_path)}

    def ctl(*args, input=None, check=True):
        return Runner().run([sys.executable, "-m", "cairn.cli.main", *args], env=env, input=input,
                            check=check, timeout=120)

    ctl("--url", stack.url, "--ca", stack.ca, "login", "--password-stdin", input=stack.password + "\n")
    assert ctl("group", "create", "team").stdout.strip().startswith("group team created (gid ")
    ctl("user", "create", "dora", "--group", "team", "--password-stdin", input="Dora-pass-1\n")
    users = json.loads(ctl("--json", "user", "list").stdout)
    assert [(u["name"], u["groups"]) for u in users if u["name"] == "dora"] == [("dora", ["team"])]
    call("POST", "/pools/tank/volumes", json={"name": "projects"})
    wait_until(lambda: call("GET", "/pools/tank/volumes/projects").status_code == 200, 60, "the volume")
    shown = ctl("share", "create", "Projects", "--pool", "tank", "--volume", "projects",
                "--nfs", "10.0.0.0/24,ro", "--smb", "--allow", "user:dora=rw", "--allow", "group:team=ro").stdout
    assert "nfs: 10.0.0.0/24 ro" in shown and "user:dora: rw" in shown
    listed = ctl("share", "list").stdout.splitlines()
    assert listed[0].split()[:3] == ["NAME", "POOL", "VOLUME"] and listed[1].split()[:3] == ["Projects", "tank", "projects"]
    wait_until(lambda: f"served by {stack.node}" in ctl("share", "list").stdout, 60, "cairnctl to show it served")
    bad = ctl("share", "create", "X", "--pool", "tank", "--volume", "projects", "--allow", "dora", check=False)
    assert bad.returncode == 2 and "principal=access" in bad.stderr
    refused = ctl("group", "delete", "team", check=False)
    assert refused.returncode == 1 and "members dora" in refused.stderr
    ctl("share", "delete", "Projects")
    ctl("user", "delete", "dora")
    ctl("group", "delete", "team")


def test_export_then_import_rebuilds_everything_or_nothing(api, tmp_path):
    stack, call = api
    assert call("POST", "/file-groups", json={"name": "crew"}).status_code == 201
    assert call("POST", "/file-users", json={"name": "erin", "password": "Erin-pass-1", "groups": ["crew"]}).status_code == 201
    call("POST", "/pools/tank/volumes", json={"name": "crewdata"})
    wait_until(lambda: call("GET", "/pools/tank/volumes/crewdata").status_code == 200, 60, "the volume")
    assert call("POST", "/shares", json={"name": "Crew", "pool": "tank", "volume": "crewdata", "smb": {},
                                         "permissions": [{"principal": "group:crew", "access": "rw"}]}).status_code == 201
    document = call("GET", "/shares-config").json()
    assert document["format"] == "cairn-shares/1"
    erin = next(u for u in document["users"] if u["name"] == "erin")
    assert erin["nt_hash"] == nt_hash("Erin-pass-1"), "the export carries what rebuilds the password"

    again = call("POST", "/shares-config", json=document)
    assert again.status_code == 200, again.text
    assert again.json()["unchanged"] == len(document["users"]) + \
        len(document["groups"]) + len(document["shares"])

    broken = {**document, "users": document["users"] + [{"name": "Bad", "uid": 5, "nt_hash": "x"}],
              "shares": document["shares"] + [{"name": "Ghost", "pool": "tank", "volume": "gone", "smb": {}}]}
    refused = call("POST", "/shares-config", json=broken)
    assert refused.status_code == 400
    fields = refused.json()["error"]["fields"]
    bad_user = len(document["users"])
    assert {f"users[{bad_user}].nt_hash", f"users[{bad_user}].name"} <= set(fields)
    assert f"shares[{len(document['shares'])}].volume" in fields

    # rebuild: remove everything, import the document, and get the same records back
    for share in call("GET", "/shares").json()["shares"]:
        assert call("DELETE", f"/shares/{share['name']}").status_code == 200
    for user in call("GET", "/file-users").json()["users"]:
        assert call("DELETE", f"/file-users/{user['name']}").status_code == 200
    for group in call("GET", "/file-groups").json()["groups"]:
        assert call("DELETE", f"/file-groups/{group['name']}").status_code == 200
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document))
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    ctl = lambda *args, **kw: Runner().run([sys.executable, "-m", "cairn.cli.main", *args], env=env,  # noqa: E731
                                           timeout=120, **kw)
    ctl("--url", stack.url, "--ca", stack.ca, "login", "--password-stdin", input=stack.password + "\n")
    imported = ctl("shares-config", "import", str(path)).stdout
    assert imported.startswith(f"imported {len(document['groups'])} groups, {len(document['users'])} users, "
                               f"{len(document['shares'])} shares")
    assert call("GET", "/shares-config").json() == document
    out = tmp_path / "again.json"
    ctl("shares-config", "export", "-o", str(out))
    assert json.loads(out.read_text()) == document and out.stat().st_mode & 0o777 == 0o600


def test_a_shares_state_follows_what_its_pools_node_publishes(api):
    # A pool of a node without an agent: only this test writes that node's status, so no pass of
    # the stack's own agent (which reports on node-a) can race with it.
    stack, call = api
    store = stack.store()
    store.put("pools/far", storage_model.Pool("far", "node-far", "single", "dup", "none", ("disk-far",),
                                              state="online").to_dict())
    store.put("volumes/far/data", storage_model.Volume("far", "data").to_dict())
    try:
        made = call("POST", "/shares", json={"name": "Remote", "pool": "far", "volume": "data", "smb": {}})
        assert made.status_code == 201, made.text

        def states():
            one = call("GET", "/shares/remote").json()["state"]
            listed = [s["state"] for s in call("GET", "/shares").json()["shares"] if s["name"] == "Remote"]
            assert [one] == listed, "GET one and GET all say the same"
            return one

        assert {"state": "pending", "node": "node-far", "error": None} == states()
        store.put("status/node-far/reconcile", {
            "shares": {"ok": False, "actions": 0, "error": "start smbd: systemctl exited with 1", "at": 1.0},
            "iscsi": {"ok": True, "actions": 0, "error": None, "at": 1.0}})
        assert {"state": "error", "node": "node-far", "error": "start smbd: systemctl exited with 1"} == states()
        store.put("status/node-far/shares", {"served": ["Remote"]})
        assert {"state": "served", "node": "node-far", "error": None} == states()
        store.put("status/node-far/reconcile", {"shares": {"ok": True, "actions": 2, "error": None, "at": 2.0}})
        assert {"state": "served", "node": "node-far", "error": None} == states()
        exported = next(s for s in call("GET", "/shares-config").json()["shares"] if s["name"] == "Remote")
        assert "state" not in exported, "the state is shown, not exported"
    finally:
        call("DELETE", "/shares/Remote")
        for key in ("pools/far", "volumes/far/data", "status/node-far/reconcile", "status/node-far/shares"):
            store.delete(key)
