"""The smb.conf Cairn generates, served by a real smbd on a loopback port: users get exactly the
access their permissions give them (read-write, read-only, none), files land owned by the user who
wrote them, and a share marked read-only refuses writes to everyone.

smbd runs with its state in a temp dir; the file-access users exist only for it, through
nss_wrapper (Samba's own test suite does the same), so this host's /etc/passwd is never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cairn.devstack import free_port
from cairn.runner import Runner
from environment import missing
from cairn.shares import model, smbconf
from support import wait_until

NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"
pytestmark = missing(tools={"smbd": "Debian package samba"}, files={NSS_WRAPPER: "Debian package libnss-wrapper"})

USERS = {"alice": 10001, "bob": 10002, "carol": 10003}
PASSWORD = "Secret-123"


@pytest.fixture(scope="module")
def samba(tmp_path_factory):
    base = tmp_path_factory.mktemp("samba")
    # The users must be able to walk down to the shares: pytest's own temp dirs are root-only.
    pools = Path(tempfile.mkdtemp(prefix="cairn-samba-pools-"))
    (pools / "tank").mkdir()
    for directory in (pools, pools / "tank"):
        os.chmod(directory, 0o755)
    media = pools / "tank" / "media"
    archive = pools / "tank" / "archive"
    for directory in (media, archive):
        directory.mkdir(parents=True)
        os.chmod(directory, 0o2770)
        os.chown(directory, 0, 10100)            # group "staff" below: members write through the group
    (archive / "old.txt").write_text("kept\n")
    os.chmod(archive / "old.txt", 0o660)
    os.chown(archive / "old.txt", 0, 10100)

    passwd = base / "passwd"
    group = base / "group"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                      + "".join(f"{name}:x:{uid}:10100:{name}:/nonexistent:/usr/sbin/nologin\n"
                                for name, uid in USERS.items()))
    group.write_text("root:x:0:\nnogroup:x:65534:\nstaff:x:10100:alice,bob,carol\n")
    env = {"LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_PASSWD": str(passwd), "NSS_WRAPPER_GROUP": str(group)}

    users = {name: model.User(name, uid, groups=("staff",)) for name, uid in USERS.items()}
    groups = {"staff": model.Group("staff", 10100)}
    shares = [
        model.check_share({"name": "Media", "pool": "tank", "volume": "media", "path": str(media), "smb": {},
                           "permissions": [{"principal": "user:alice", "access": "rw"},
                                           {"principal": "user:bob", "access": "ro"}]},
                          USERS, groups, pools_root=str(pools)),
        model.check_share({"name": "Archive", "pool": "tank", "volume": "archive", "path": str(archive),
                           "smb": {"read_only": True},
                           "permissions": [{"principal": "group:staff", "access": "rw"}]},
                          USERS, groups, pools_root=str(pools)),
    ]
    conf = smbconf.render(shares, users, groups, netbios_name="CAIRNTEST", pools_root=str(pools))
    port = free_port()
    state = base / "state"
    local = "\n".join(f"\t{key} = {value}" for key, value in {
        "smb ports": port, "interfaces": "lo", "bind interfaces only": "yes",
        "private dir": state / "private", "lock directory": state / "lock", "state directory": state / "state",
        "cache directory": state / "cache", "pid directory": state, "ncalrpc dir": state / "ncalrpc",
        "log file": base / "smbd.log", "disable netbios": "yes"}.items())
    conf_path = base / "smb.conf"
    conf_path.write_text(conf.replace("[global]\n", "[global]\n" + local + "\n", 1))
    for sub in ("private", "lock", "state", "cache", "ncalrpc"):
        (state / sub).mkdir(parents=True, exist_ok=True)

    runner = Runner()
    checked = runner.run(["testparm", "-s", "--suppress-prompt", str(conf_path)], check=False)
    assert checked.returncode == 0, checked.stderr
    for name in USERS:
        runner.run(["smbpasswd", "-c", str(conf_path), "-a", "-s", name], input=f"{PASSWORD}\n{PASSWORD}\n", env=env)
    daemon = runner.spawn(["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf_path)],
                          log_path=base / "smbd.stdout", env=env)
    try:
        wait_until(lambda: client(port, "alice", "Media", "ls", check=False).returncode == 0, 30, "smbd to serve")
        yield port, media, archive
    finally:
        daemon.stop()
        shutil.rmtree(pools, ignore_errors=True)


def client(port: int, user: str, share: str, command: str, check: bool = True, cwd: Path | None = None):
    return Runner().run(["smbclient", f"//127.0.0.1/{share}", "-p", str(port), "-U", f"{user}%{PASSWORD}",
                         "-m", "SMB3", "-c", command], check=check, cwd=cwd, timeout=60)


def test_read_write_user_writes_and_owns_the_file(samba, tmp_path):
    port, media, _ = samba
    (tmp_path / "report.txt").write_text("q3 figures\n")
    client(port, "alice", "Media", "put report.txt", cwd=tmp_path)
    written = media / "report.txt"
    assert written.read_text() == "q3 figures\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (USERS["alice"], 10100)
    assert written.stat().st_mode & 0o777 == 0o660


def test_read_only_user_reads_but_cannot_write(samba, tmp_path):
    port, media, _ = samba
    (media / "shared.txt").write_text("for everyone\n")
    os.chown(media / "shared.txt", USERS["alice"], 10100)
    os.chmod(media / "shared.txt", 0o660)
    client(port, "bob", "Media", "get shared.txt", cwd=tmp_path)
    assert (tmp_path / "shared.txt").read_text() == "for everyone\n"
    (tmp_path / "mine.txt").write_text("x")
    refused = client(port, "bob", "Media", "put mine.txt", check=False, cwd=tmp_path)
    assert "NT_STATUS_ACCESS_DENIED" in refused.stdout + refused.stderr
    assert not (media / "mine.txt").exists()


def test_user_without_permission_is_turned_away(samba):
    port, _, _ = samba
    refused = client(port, "carol", "Media", "ls", check=False)
    assert refused.returncode != 0
    assert "NT_STATUS_ACCESS_DENIED" in refused.stdout + refused.stderr or \
        "NT_STATUS_LOGON_FAILURE" in refused.stdout + refused.stderr


def test_read_only_share_refuses_writes_even_to_a_granted_group(samba, tmp_path):
    port, _, archive = samba
    client(port, "carol", "Archive", "get old.txt", cwd=tmp_path)
    assert (tmp_path / "old.txt").read_text() == "kept\n"
    (tmp_path / "new.txt").write_text("x")
    refused = client(port, "carol", "Archive", "put new.txt", check=False, cwd=tmp_path)
    assert "NT_STATUS_ACCESS_DENIED" in refused.stdout + refused.stderr
    assert not (archive / "new.txt").exists()


def test_wrong_password_is_refused(samba):
    port, _, _ = samba
    wrong = Runner().run(["smbclient", "//127.0.0.1/Media", "-p", str(port), "-U", "alice%nope", "-m", "SMB3",
                          "-c", "ls"], check=False, timeout=60)
    assert "NT_STATUS_LOGON_FAILURE" in wrong.stdout + wrong.stderr
