"""Shares served by a real appliance (node1) to a second one (node2) over the testbed's cluster
segment: an NFS export mounted and written as the user the records define (and refused to a
squashed root), SMB served with the same users, an iSCSI LUN logged into with CHAP from node2's
open-iscsi, a filesystem made on it, grown online, and its data read back after node1 reboots
(the agent rebuilds LIO from the records). Prints the figures the README quotes: time from
"create share" to a client using it, SMB and NFS write throughput (TCG appliances)."""

from __future__ import annotations

import time

import pytest

from support import wait_until

PASSWORD = "Files-pass-123"
CHAP = {"user": "node2", "password": "chap-secret-1"}
MIB = 1 << 20


@pytest.fixture(scope="module")
def bed(testbed_nodes):
    """node1 (the server) and node2 (the client) of the shared testbed (tests/e2e/conftest.py)."""
    return testbed_nodes(0, 1)


def call(node, method: str, path: str, body: dict | None = None, expect: int | tuple = (200, 201, 202, 204)):
    status, reply = node.api().call(method, path, body)
    assert status in ((expect,) if isinstance(expect, int) else expect), f"{method} {path}: {status} {reply}"
    return reply


def finish(node, reply: dict, timeout: float = 600) -> dict:
    api = node.api()

    def ended():
        job = api.get(f"/jobs/{reply['id']}")
        return job if job["state"] not in ("queued", "running") else None
    job = wait_until(ended, timeout, f"job {reply['id']}", interval=1.0)
    assert job["state"] == "success", f"{job['title']}: {job.get('error')}"
    return job


@pytest.fixture(scope="module")
def server(bed):
    """node1 with pool tank (one disk), volumes files and luns, and a file user alice."""
    node1 = bed.nodes[0]
    name = node1.api().get("/nodes")["nodes"][0]["name"]
    finish(node1, call(node1, "POST", "/pools", {"name": "tank", "node": name, "disks": ["CAIRN-VD1"],
                                                 "profile": "single"}))
    for volume in ("files", "luns"):
        finish(node1, call(node1, "POST", "/pools/tank/volumes", {"name": volume}))
    call(node1, "POST", "/file-users", {"name": "alice", "password": PASSWORD})
    return node1


def rate(size: int, seconds: float) -> str:
    return f"{size / MIB / seconds:.1f} MiB/s"


def test_nfs_export_is_mounted_and_written_from_another_appliance(bed, server):
    node2 = bed.nodes[1]
    network = server.cluster_ip.rsplit(".", 1)[0] + ".0/24"
    # node2 is a Cairn node too: its agent owns the ids from 10000 up, so alice comes from its API.
    call(node2, "POST", "/file-users", {"name": "alice", "uid": 10000, "password": PASSWORD})
    wait_until(lambda: node2.execute("getent passwd alice")[0] == 0, 60, "alice on node2")
    node2.succeed("mkdir -p /mnt/files")
    started = time.monotonic()
    call(server, "POST", "/shares", {"name": "Files", "pool": "tank", "volume": "files", "smb": {},
                                     "nfs": {"clients": [{"match": network, "access": "rw"}]},
                                     "permissions": [{"principal": "user:alice", "access": "rw"}]})
    wait_until(lambda: node2.execute(f"mount -t nfs -o vers=4.2,soft,timeo=50 {server.cluster_ip}:/pools/tank/files "
                                     "/mnt/files", timeout=60)[0] == 0, 180, "the NFS export to be mountable", interval=0.5)
    visible = time.monotonic() - started
    print(f"\nNFS: create share -> mounted on node2: {visible:.1f} s")
    assert "vers=4.2" in node2.succeed("grep /mnt/files /proc/mounts")

    size = 64 * MIB
    began = time.monotonic()
    node2.succeed("runuser -u alice -- dd if=/dev/urandom of=/mnt/files/from-node2.bin bs=1M count=64 "
                  "conv=fsync status=none", timeout=600)
    seconds = time.monotonic() - began
    print(f"NFS write from node2 (64 MiB, fsync, TCG): {rate(size, seconds)}")
    local = node2.succeed("runuser -u alice -- sha256sum /mnt/files/from-node2.bin").split()[0]
    served = server.succeed("sha256sum /pools/tank/files/from-node2.bin; stat -c %u /pools/tank/files/from-node2.bin")
    assert served.split()[0] == local and served.split()[2] == "10000"
    # root on the client is squashed to nobody, which the share's ACL gives nothing.
    assert "Permission denied" in node2.fail("touch /mnt/files/by-root")
    assert "Permission denied" in node2.fail("cat /mnt/files/from-node2.bin")
    node2.succeed("umount /mnt/files")


def test_smb_share_serves_the_same_user(bed, server):
    server.succeed("btrfs subvolume list /pools/tank >/dev/null")
    started = time.monotonic()
    call(server, "POST", "/shares", {"name": "Scans", "pool": "tank", "volume": "files", "path": "/pools/tank/files/scans",
                                     "smb": {}, "permissions": [{"principal": "user:alice", "access": "ro"}]})
    wait_until(lambda: server.execute(f"smbclient //localhost/Scans -U alice%{PASSWORD} -m SMB3 -c ls",
                                      timeout=60)[0] == 0, 120, "the new SMB share to answer", interval=0.2)
    print(f"\nSMB: create share -> listed by smbclient on node1: {time.monotonic() - started:.1f} s")
    listed = server.succeed(f"smbclient -L //localhost -U alice%{PASSWORD} -m SMB3")
    assert "Files" in listed and "Scans" in listed, listed
    denied = server.execute(f"smbclient //localhost/Scans -U alice%{PASSWORD} -m SMB3 -c 'put /etc/hostname x'")
    assert "NT_STATUS_ACCESS_DENIED" in denied[1] + denied[2]
    server.succeed("dd if=/dev/urandom of=/root/blob.bin bs=1M count=64 status=none")
    began = time.monotonic()
    server.succeed(f"smbclient //localhost/Files -U alice%{PASSWORD} -m SMB3 -c 'put /root/blob.bin smb.bin'",
                   timeout=600)
    seconds = time.monotonic() - began
    print(f"SMB write inside node1 (64 MiB, smbclient over loopback, TCG): {rate(64 * MIB, seconds)}")
    assert server.succeed("cmp /root/blob.bin /pools/tank/files/smb.bin && stat -c %u /pools/tank/files/smb.bin").strip() == "10000"
    refused = server.execute("smbclient //localhost/Files -U alice%wrong-password -m SMB3 -c ls", timeout=60)
    assert refused[0] != 0 and "NT_STATUS_LOGON_FAILURE" in refused[1] + refused[2]


def iscsi_disk(node2) -> str:
    """The block device of the LUN on node2 (by its vendor, LIO's)."""
    found = node2.succeed("lsblk -dn -o NAME,VENDOR,TRAN | awk '$2 == \"LIO-ORG\" {print $1}'").split()
    assert len(found) == 1, found
    return "/dev/" + found[0]


def test_iscsi_lun_from_another_appliance_survives_a_target_reboot(bed, server):
    node2 = bed.nodes[1]
    node2.succeed("systemctl start iscsid")
    initiator = node2.succeed("sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi").strip()
    target = call(server, "POST", "/iscsi-targets", {"name": "vmstore", "pool": "tank", "volume": "luns",
                                                      "initiators": [initiator], "chap": CHAP,
                                                      "luns": [{"size": 256 * MIB}]})
    iqn = target["iqn"]
    portal = f"{server.cluster_ip}:3260"
    wait_until(lambda: iqn in node2.execute(f"iscsiadm -m discovery -t sendtargets -p {portal}", timeout=60)[1],
               120, "the target to be discovered", interval=1.0)
    for key, value in (("node.session.auth.authmethod", "CHAP"), ("node.session.auth.username", CHAP["user"]),
                       ("node.session.auth.password", CHAP["password"])):
        node2.succeed(f"iscsiadm -m node -T {iqn} -p {portal} -o update -n {key} -v {value}")
    node2.succeed(f"iscsiadm -m node -T {iqn} -p {portal} --login", timeout=120)
    wait_until(lambda: node2.execute("lsblk -dn -o VENDOR | grep -q LIO-ORG")[0] == 0, 60, "the LUN's disk")
    disk = iscsi_disk(node2)
    assert int(node2.succeed(f"blockdev --getsize64 {disk}")) == 256 * MIB
    node2.succeed(f"mkfs.ext4 -q -F {disk} && mkdir -p /mnt/lun && mount {disk} /mnt/lun && "
                  "dd if=/dev/urandom of=/mnt/lun/data.bin bs=1M count=16 status=none && sync", timeout=300)
    written = node2.succeed("sha256sum /mnt/lun/data.bin").split()[0]
    status = wait_until(lambda: (call(server, "GET", "/iscsi-targets/vmstore").get("status") or {}).get("sessions"),
                        60, "the session to show in the target's status")
    assert status == [initiator]

    # Grown online: the initiator sees the new size after a rescan.
    call(server, "PATCH", "/iscsi-targets/vmstore/luns/0", {"size": 512 * MIB})
    def grown():
        node2.execute("iscsiadm -m session --rescan", timeout=60)
        return int(node2.succeed(f"blockdev --getsize64 {disk}")) == 512 * MIB
    wait_until(grown, 120, "the initiator to see the grown LUN", interval=2.0)
    node2.succeed("umount /mnt/lun")

    # The target reboots; LIO is rebuilt from the records and the initiator gets its data back.
    boot_id = server.succeed("cat /proc/sys/kernel/random/boot_id").strip()
    server.execute("systemctl reboot", timeout=30)
    wait_until(lambda: server.execute("cat /proc/sys/kernel/random/boot_id", timeout=20)[1].strip() not in ("", boot_id),
               900, "node1 to come back from its reboot", interval=5.0)
    wait_until(lambda: node2.execute("iscsiadm -m session -P 3 | grep -q 'iSCSI Session State: LOGGED_IN'")[0] == 0,
               600, "the initiator to log in again", interval=5.0)
    disk = iscsi_disk(node2)
    node2.succeed(f"mount {disk} /mnt/lun")
    assert node2.succeed("sha256sum /mnt/lun/data.bin").split()[0] == written
    node2.succeed(f"umount /mnt/lun && iscsiadm -m node -T {iqn} -p {portal} --logout", timeout=120)
