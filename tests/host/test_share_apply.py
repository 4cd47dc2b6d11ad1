"""The node side of shares for real: records written through ShareService into a real etcd, the
agent's ShareApplier creating Unix accounts (useradd & co. under a temp etc root), Samba's passdb
(pdbedit, NT hashes), ACLs on the share directories and smb.conf, and a real smbd on a loopback
port serving what the records say — changes of passwords (NT hashes given to pdbedit on stdin, never
on its command line), permissions and shares included; a record that bypassed the API's checks
reported on its own while every good one is applied; the running smb.conf kept when testparm
refuses the new one.

The accounts live in a temp etc root and reach Samba through nss_wrapper, so this host's own
/etc/passwd is never touched. NFS is not served on this host (no nfsd); the appliance test does it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cairn.agent.reconcile import ReconcileLoop
from cairn.cluster.store import Store
from cairn.config import SharesConfig
from cairn.devstack import free_port
from cairn.runner import Runner
from cairn.shares import smbconf
from cairn.shares.apply import SMB_CONF, ShareApplier
from cairn.shares.model import Share
from cairn.shares.ntlm import nt_hash
from cairn.shares.service import ShareService
from cairn.storage import model as storage_model
from environment import missing
from support import new_root, wait_until

NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"
pytestmark = missing(tools={"smbd": "Debian package samba", "setfacl": "Debian package acl"},
                     files={NSS_WRAPPER: "Debian package libnss-wrapper"})


class WrappedRunner(Runner):
    """Every command sees the accounts of the temp etc root (nss_wrapper)."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__()
        self.extra = env
        self.argvs: list[list[str]] = []

    def run(self, argv, **kwargs):
        self.argvs.append(list(argv))
        kwargs["env"] = {**os.environ, **self.extra, **(kwargs.get("env") or {})}
        return super().run(argv, **kwargs)


class Node:
    def __init__(self, base: Path, store: Store) -> None:
        self.store = store
        self.pools = Path(tempfile.mkdtemp(prefix="cairn-apply-pools-"))   # walkable by the users
        self.volume = self.pools / "tank" / "office"
        self.volume.mkdir(parents=True)
        for directory in (self.pools, self.pools / "tank", self.volume):
            os.chmod(directory, 0o755)
        self.etc = base / "root"
        (self.etc / "etc" / "samba").mkdir(parents=True)
        for name, text in {"passwd": "root:x:0:0:root:/root:/bin/sh\n"
                                     "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                           "group": "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n",
                           "shadow": "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
                           "gshadow": "root:*::\nusers:*::\nnogroup:*::\n"}.items():
            (self.etc / "etc" / name).write_text(text)
        self.port = free_port()
        state = base / "state"
        for sub in ("private", "lock", "state", "cache", "ncalrpc"):
            (state / sub).mkdir(parents=True)
        self.include = base / "site.conf"
        self.site = "".join(f"\t{key} = {value}\n" for key, value in {
            "smb ports": self.port, "interfaces": "lo", "bind interfaces only": "yes",
            "private dir": state / "private", "lock directory": state / "lock",
            "state directory": state / "state", "cache directory": state / "cache",
            "pid directory": state, "ncalrpc dir": state / "ncalrpc", "log file": base / "smbd.log",
            "disable netbios": "yes"}.items())
        self.include.write_text(self.site)
        self.env = {"LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_PASSWD": str(self.etc / "etc" / "passwd"),
                    "NSS_WRAPPER_GROUP": str(self.etc / "etc" / "group")}
        self.runner = WrappedRunner(self.env)
        self.settings = SharesConfig(etc_root=str(self.etc), service_manager="none", nfs=False,
                                     samba_include=str(self.include))
        self.applier = ShareApplier(self.runner, store, "n1", self.settings, str(self.pools), lambda pool: True)
        self.loop = ReconcileLoop(store, "n1", [self.applier])
        self.service = ShareService(store)
        pool = storage_model.Pool("tank", "n1", "single", "dup", "none", ("loop:x",), uuid="u-1", state="online")
        store.put("pools/tank", pool.to_dict())
        store.put("pool-status/tank", {"path": str(self.pools / "tank")})
        store.put("volumes/tank/office", storage_model.Volume("tank", "office").to_dict())
        self.smbd = None

    @property
    def conf(self) -> Path:
        return self.etc / SMB_CONF

    def apply(self) -> int:
        """One pass; returns how many actions it took (raises what the pass reported)."""
        report = self.loop.run_once()["shares"]
        assert report.ok, report.error
        return report.actions

    def start_smbd(self) -> None:
        self.smbd = self.runner.spawn(["smbd", "--foreground", "--no-process-group", "--debug-stdout",
                                       "-s", str(self.conf)], log_path=self.etc.parent / "smbd.stdout",
                                      env={**os.environ, **self.env})

    def smb(self, user: str, password: str, share: str, command: str, cwd: Path | None = None):
        return Runner().run(["smbclient", f"//127.0.0.1/{share}", "-p", str(self.port), "-U",
                             f"{user}%{password}", "-m", "SMB3", "-c", command], check=False, cwd=cwd,
                            timeout=60)


PASSWORDS = {"alice": "Alice-pass-1", "bob": "Bob-pass-22", "carol": "Carol-pass-333"}


@pytest.fixture(scope="module")
def node(tmp_path_factory, etcd):
    made = Node(tmp_path_factory.mktemp("apply"), Store(etcd.endpoints, new_root()))
    yield made
    if made.smbd:
        made.smbd.stop()
    shutil.rmtree(made.pools, ignore_errors=True)


def denied(result) -> bool:
    out = result.stdout + result.stderr
    return result.returncode != 0 and ("NT_STATUS_ACCESS_DENIED" in out or "NT_STATUS_LOGON_FAILURE" in out)


def test_records_become_accounts_passdb_acl_and_smb_conf(node):
    node.service.create_group({"name": "office"})
    for name in PASSWORDS:
        node.service.create_user({"name": name, "password": PASSWORDS[name], "full_name": name.title(),
                                  "groups": ["office"] if name != "alice" else []})
    node.service.create_share({"name": "Office", "pool": "tank", "volume": "office", "smb": {},
                               "description": "Shared office files",
                               "permissions": [{"principal": "user:alice", "access": "rw"},
                                               {"principal": "group:office", "access": "ro"},
                                               {"principal": "user:carol", "access": "none"}]})
    assert node.apply() > 0

    passwd = (node.etc / "etc" / "passwd").read_text()
    for uid, name in enumerate(PASSWORDS, start=10000):
        assert f"{name}:x:{uid}:100:{name.title()}:/nonexistent:/usr/sbin/nologin\n" in passwd
    assert "office:x:10000:bob,carol\n" in (node.etc / "etc" / "group").read_text()
    listed = node.runner.run(["pdbedit", "-s", str(node.conf), "-L", "-w"]).stdout
    hashes = {line.split(":")[0]: line.split(":")[3] for line in listed.splitlines()}
    assert hashes == {name: nt_hash(password).upper() for name, password in PASSWORDS.items()}

    shares = [Share.from_dict(s) for s in node.service.shares()]
    users, groups = node.applier.desired(node.store).users, node.applier.desired(node.store).groups
    assert node.conf.read_text() == smbconf.render(shares, users, groups, netbios_name="N1",
                                                   pools_root=str(node.pools), include=str(node.include))
    acl_text = node.runner.run(["getfacl", "-c", "-p", "-n", str(node.volume)]).stdout
    assert {"user:10000:rwx", "user:10001:r-x", "user:10002:---", "group::---", "other::---",
            "default:user:10000:rwx", "default:user:10001:r-x"} <= set(acl_text.split())
    assert node.apply() == 0, "a second pass must find nothing to do"
    assert node.store.get("status/n1/shares") == {"served": ["Office"]}


def test_smbd_serves_what_the_records_say(node, tmp_path):
    node.start_smbd()
    wait_until(lambda: node.smb("alice", PASSWORDS["alice"], "Office", "ls").returncode == 0, 30, "smbd")
    (tmp_path / "plan.txt").write_text("budget\n")
    assert node.smb("alice", PASSWORDS["alice"], "Office", "put plan.txt", cwd=tmp_path).returncode == 0
    written = node.volume / "plan.txt"
    assert (written.stat().st_uid, written.read_text()) == (10000, "budget\n")
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    assert node.smb("bob", PASSWORDS["bob"], "Office", "get plan.txt", cwd=fetched).returncode == 0
    assert (fetched / "plan.txt").read_text() == "budget\n"
    assert denied(node.smb("bob", PASSWORDS["bob"], "Office", "put plan.txt bob.txt", cwd=tmp_path))
    assert denied(node.smb("carol", PASSWORDS["carol"], "Office", "ls"))
    assert denied(node.smb("alice", "wrong-password", "Office", "ls"))


def test_password_permission_and_disable_changes_reach_smbd(node, tmp_path):
    node.runner.argvs.clear()
    node.service.update_user("bob", {"password": "Bob-new-pass-4"})
    node.service.update_share("Office", {"permissions": [{"principal": "user:alice", "access": "rw"},
                                                         {"principal": "group:office", "access": "rw"},
                                                         {"principal": "user:carol", "access": "none"}]})
    node.service.update_user("alice", {"disabled": True})
    assert node.apply() > 0
    assert denied(node.smb("bob", PASSWORDS["bob"], "Office", "ls"))
    (tmp_path / "bob.txt").write_text("from bob\n")
    assert node.smb("bob", "Bob-new-pass-4", "Office", "put bob.txt", cwd=tmp_path).returncode == 0
    assert (node.volume / "bob.txt").stat().st_uid == 10001
    # The file alice wrote before gets bob's new access too (the ACL is applied over the tree).
    acl_text = node.runner.run(["getfacl", "-c", "-p", "-n", str(node.volume / "plan.txt")]).stdout
    assert "user:10001:rw-" in acl_text.split()
    disabled = node.smb("alice", PASSWORDS["alice"], "Office", "ls")
    assert disabled.returncode != 0 and "NT_STATUS_ACCOUNT_DISABLED" in disabled.stdout + disabled.stderr
    assert "alice:10000:" in node.runner.run(["pdbedit", "-s", str(node.conf), "-L", "-w"]).stdout
    assert node.apply() == 0
    # The new hash went to pdbedit on stdin: no command line of the pass held it.
    assert ["-i", "smbpasswd:/dev/stdin", "-u", "bob"] in [argv[3:] for argv in node.runner.argvs]
    secret = nt_hash("Bob-new-pass-4").upper()
    assert not [argv for argv in node.runner.argvs if any(secret in item.upper() for item in argv)]


def test_a_bad_record_is_reported_on_its_own_and_every_good_one_is_applied(node):
    # Records that bypassed the API's checks, written straight into the store: a group whose name
    # ends in a newline (groupadd would refuse it) and a share smb.conf cannot hold.
    node.store.put("share-groups/staff\n", {"name": "staff\n", "gid": 10050, "description": ""})
    node.store.put("shares/bad%uname", dict(node.service.share("Office"), name="Bad%Uname"))
    # Good changes in the same pass: a group, a user in it, a share for them.
    node.service.create_group({"name": "design"})
    node.service.create_user({"name": "dave", "password": "Dave-pass-4444", "groups": ["design", "office"]})
    node.service.create_share({"name": "Design", "pool": "tank", "volume": "office", "smb": {},
                               "path": str(node.volume / "design"),
                               "permissions": [{"principal": "group:design", "access": "rw"}]})
    report = node.loop.run_once()["shares"]
    assert not report.ok
    assert repr("share-groups/staff\n") in report.error and "shares/bad%uname" in report.error

    assert "dave:x:10003:100::/nonexistent:/usr/sbin/nologin\n" in (node.etc / "etc" / "passwd").read_text()
    group_file = (node.etc / "etc" / "group").read_text()
    assert "design:x:10001:dave\n" in group_file and "staff" not in group_file   # (office grants the volume)
    listed = node.runner.run(["pdbedit", "-s", str(node.conf), "-L", "-w"]).stdout
    assert f":{nt_hash('Dave-pass-4444').upper()}:" in listed
    assert "[Design]" in node.conf.read_text() and "Bad%Uname" not in node.conf.read_text()
    status = node.store.get("status/n1/shares")
    assert status["served"] == ["Design", "Office"]
    assert set(status["problems"]) == {"share-groups/staff\n", "shares/bad%uname"}
    states = {s["name"]: s["state"] for s in node.service.with_state(node.service.shares())}
    assert states["Design"] == {"state": "served", "node": "n1", "error": None}
    assert states["Bad%Uname"]["state"] == "error" and "'%U'" in states["Bad%Uname"]["error"]
    wait_until(lambda: node.smb("dave", "Dave-pass-4444", "Design", "ls").returncode == 0, 30,
               "smbd to serve the new share to the new user")

    # The same records again: nothing is redone, the same two are reported, the status is not rewritten.
    revision = node.store.get_entry("status/n1/shares").mod_revision
    again = node.loop.run_once()["shares"]
    assert not again.ok and again.error == report.error
    assert node.store.get_entry("status/n1/shares").mod_revision == revision

    node.store.delete("share-groups/staff\n")
    node.store.delete("shares/bad%uname")
    assert node.apply() == 0
    assert node.store.get("status/n1/shares") == {"served": ["Design", "Office"]}
    node.service.delete_share("Design")       # (a share inside Office: Office's ACL changes reach into it)
    assert node.apply() > 0


def test_a_config_testparm_refuses_leaves_the_running_one(node):
    before = node.conf.read_text()
    # testparm refuses the new file (here: a broken site include): the running one stays.
    node.include.write_text(node.site + "\tno such option = 1\n")
    node.service.create_share({"name": "Second", "pool": "tank", "volume": "office", "path":
                               str(node.volume / "second"), "smb": {},
                               "permissions": [{"principal": "user:bob", "access": "rw"}]})
    report = node.loop.run_once()["shares"]
    assert not report.ok and "testparm refused" in report.error
    assert node.conf.read_text() == before
    node.include.write_text(node.site)
    assert node.apply() > 0
    assert "[Second]" in node.conf.read_text()
    assert (node.volume / "second").is_dir()
    wait_until(lambda: node.smb("bob", "Bob-new-pass-4", "Second", "ls").returncode == 0, 30,
               "smbd to serve the new share")


def test_deleting_shares_and_users_removes_them_from_the_node(node):
    node.service.delete_share("Second")
    node.service.update_share("Office", {"permissions": [{"principal": "group:office", "access": "rw"}]})
    node.service.delete_user("alice")
    assert node.apply() > 0
    assert "[Second]" not in node.conf.read_text()
    gone = node.smb("bob", "Bob-new-pass-4", "Second", "ls")
    assert gone.returncode != 0 and "NT_STATUS_BAD_NETWORK_NAME" in gone.stdout + gone.stderr
    assert "alice" not in (node.etc / "etc" / "passwd").read_text()
    assert "alice" not in node.runner.run(["pdbedit", "-s", str(node.conf), "-L", "-w"]).stdout
    assert node.apply() == 0
