"""cairnctl vm against a real stack without libvirt: VM records of a far node (and what its agent
would report) are written straight into the store; commands that change a VM queue the job they
should (the far node has no agent, so it stays queued and is read back through the API), and
refusals exit 1 with the API's message."""

from __future__ import annotations

import sys
import time

import pytest

from cairn.compute import model
from cairn.compute.image_store import Image
from cairn.runner import Runner
from cairn.storage import model as storage_model

GiB = 1 << 30
FAR = "node-far"


@pytest.fixture(scope="module")
def rig(stack, tmp_path_factory):
    store = stack.store()
    store.put(f"nodes/{FAR}", {"name": FAR, "heartbeat_at": time.time(), "agent_version": "test", "cpus": 4,
                               "memory_total": 8 * GiB})
    store.put("pools/far", storage_model.Pool("far", FAR, "single", "dup", "none", ("disk-far",),
                                              state="online").to_dict())
    records = [model.Vm("web", "00000000-0000-4000-8000-000000000001", FAR, "far", 2, 2048,
                        disks=(model.Disk("disk0", 20 * GiB), model.Disk("disk1", 100 * GiB)),
                        nics=(model.Nic("52:54:00:00:00:01"),), created_at=1.0),
               model.Vm("db", "00000000-0000-4000-8000-000000000002", FAR, "far", 1, 1024,
                        disks=(model.Disk("disk0", 8 * GiB),), nics=(model.Nic("52:54:00:00:00:02"),),
                        origin={"clone_of": "base"}, created_at=1.0)]
    for vm in records:
        store.put(f"vms/{vm.name}", vm.to_dict())
        store.put(f"vm-macs/{vm.nics[0].mac}", {"vm": vm.name})
    for name, kind in (("x.iso", "iso"), ("debian.qcow2", "disk")):     # uploaded to the far pool
        store.put(f"images/far/{name}", Image("far", name, FAR, f"/pools/far/images/{name}", 1 << 20, kind,
                                              "raw" if kind == "iso" else "qcow2", 1 << 20).to_dict())
    store.put("vm-status/web", {"node": FAR, "state": "running", "accel": "tcg", "vnc_port": 5900,
                                "snapshots": ["before-upgrade", "daily.1"], "files": True})
    store.put("vm-status/db", {"node": FAR, "state": "shutoff", "accel": "kvm", "vnc_port": None,
                               "snapshots": [], "files": True})
    env = {"XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("cli-config"))}

    def ctl(*args, check=True, input=None):
        return Runner().run([sys.executable, "-m", "cairn.cli.main", *args], env=env, input=input,
                            check=check, timeout=120)

    ctl("--url", stack.url, "--ca", stack.ca, "login", "--password-stdin", input=stack.password + "\n")
    session = stack.session()

    def job(job_id: str) -> dict:
        """The job as GET /api/v1/jobs lists it."""
        (found,) = [j for j in session.get(stack.url + "/api/v1/jobs").json()["jobs"] if j["id"] == job_id]
        return {key: found[key] for key in ("kind", "node", "params", "state")}
    yield stack, ctl, job


def queued(result) -> str:
    """The id of the job a command printed (render_job: '<id>  <title>' first)."""
    return result.stdout.split()[0]


def test_vm_list_shows_the_records_with_state_and_accelerator(rig):
    stack, ctl, job = rig
    assert ("NAME  NODE      POOL  STATE          VCPUS  MEMORY    DISKS               ORIGIN\n"
            "db    node-far  far   shutoff        1      1024 MiB  8.0 GiB             clone of base\n"
            "web   node-far  far   running (TCG)  2      2048 MiB  20.0 GiB,100.0 GiB  -\n") == ctl("vm", "list").stdout


def test_vm_show_and_snapshots(rig):
    stack, ctl, job = rig
    assert ("vm web on node-far (pool far): running (TCG)\n"
            "  2 vCPUs (Nehalem), 2048 MiB, firmware uefi, accelerator TCG, autostart no\n"
            "  disk0: 20.0 GiB\n"
            "  disk1: 100.0 GiB\n"
            "  nic 52:54:00:00:00:01 on br0\n"
            "  vnc: node-far:5900\n"
            "  snapshots: before-upgrade, daily.1\n"
            "  uuid: 00000000-0000-4000-8000-000000000001\n") == ctl("vm", "show", "web").stdout
    assert "SNAPSHOT\nbefore-upgrade\ndaily.1\n" == ctl("vm", "snapshots", "web").stdout


def test_vm_create_with_more_memory_than_the_node_has_is_refused(rig):
    stack, ctl, job = rig
    refused = ctl("vm", "create", "big", "--pool", "far", "--memory", "8192", check=False)
    assert (1, "error (400): memory_mib: node node-far has 8192 MiB of memory, 7168 MiB of it available "
               "to VMs (1024 MiB stay with the node)\n") == (refused.returncode, refused.stderr)
    assert stack.store().get("vms/big") is None


def test_vm_clone_count_queues_numbered_names(rig):
    stack, ctl, job = rig
    result = ctl("vm", "clone", "db", "--count", "2")
    assert {"kind": "vm.clone", "node": FAR, "params": {"vm": "db", "names": ["db-1", "db-2"]},
            "state": "queued"} == job(queued(result))
    result = ctl("vm", "clone", "db", "--name", "alpha", "--name", "beta")
    assert {"vm": "db", "names": ["alpha", "beta"]} == job(queued(result))["params"]


def test_lifecycle_commands_queue_their_jobs(rig):
    stack, ctl, job = rig
    assert {"kind": "vm.start", "node": FAR, "params": {"vm": "db"}, "state": "queued"} == job(queued(ctl("vm", "start", "db")))
    assert {"kind": "vm.stop", "node": FAR, "params": {"vm": "web", "timeout": 30, "force": True},
            "state": "queued"} == job(queued(ctl("vm", "stop", "web", "--timeout", "30", "--force")))
    assert {"kind": "vm.snapshot", "node": FAR, "params": {"vm": "web", "snapshot": "s1"},
            "state": "queued"} == job(queued(ctl("vm", "snapshot", "web", "--name", "s1")))
    assert {"kind": "vm.restore", "node": FAR, "params": {"vm": "web", "snapshot": "daily.1", "name": "web-2"},
            "state": "queued"} == job(queued(ctl("vm", "restore", "web", "daily.1", "web-2")))


def test_vm_delete_of_a_running_vm_needs_force(rig):
    stack, ctl, job = rig
    refused = ctl("vm", "delete", "web", check=False)
    assert (1, "error (409): VM web is running: shut it down first, or delete with force=true\n") == (
        refused.returncode, refused.stderr)
    forced = ctl("vm", "delete", "web", "--force", "--keep-disks")
    assert {"kind": "vm.delete", "node": FAR, "params": {"vm": "web", "keep_disks": True, "force": True},
            "state": "queued"} == job(queued(forced))
    refused = ctl("vm", "revert", "web", "daily.1", check=False)
    assert (1, "error (409): VM web is running: shut it down before reverting it\n") == (
        refused.returncode, refused.stderr)


def test_vm_set_changes_a_stopped_vm_and_refuses_a_running_one(rig):
    stack, ctl, job = rig
    result = ctl("vm", "set", "db", "--memory", "2048", "--vcpus", "2", "--iso", "far/x.iso", "--no-autostart")
    assert {"kind": "vm.redefine", "node": FAR, "params": {"vm": "db"}, "state": "queued"} == job(queued(result))
    record = stack.store().get("vms/db")
    assert (record["memory_mib"], record["vcpus"], record["cdrom"], record["autostart"]) == \
        (2048, 2, "/pools/far/images/x.iso", False)
    for iso, why in (("/etc/shadow", "/etc/shadow is in /etc: system files are never VM images"),
                     ("/pools/far/images/debian.qcow2", "debian.qcow2 is a disk image to import, not an ISO image "
                                                        "for the cdrom")):
        refused = ctl("vm", "set", "db", "--iso", iso, check=False)
        assert (1, f"error (400): cdrom: {why}\n") == (refused.returncode, refused.stderr)
    ctl("vm", "set", "db", "--eject")
    assert stack.store().get("vms/db")["cdrom"] is None
    refused = ctl("vm", "set", "web", "--memory", "1024", check=False)
    assert (1, "error (409): VM web is running: shut it down to change memory_mib\n") == \
        (refused.returncode, refused.stderr)
    nothing = ctl("vm", "set", "db", check=False)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr


def test_vm_create_from_an_image_with_cloud_init_sends_both(rig, tmp_path):
    stack, ctl, job = rig
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAiBs5xOBnDTD6R/rf/T9GPDXC00MDbnufS9RzHSfiMc ops@laptop\n")
    result = ctl("vm", "create", "app", "--pool", "far", "--import", "far/debian.qcow2", "--disk", "30G",
                 "--user", "ops", "--ssh-key", str(key), "--password-stdin", input="Guest-pass-1\n")
    assert {"kind": "vm.create", "node": FAR, "params": {"vm": "app"}, "state": "queued"} == job(queued(result))
    record = stack.store().get("vms/app")
    assert record["disks"] == [{"name": "disk0", "size": 30 * GiB, "imported_from": "/pools/far/images/debian.qcow2"}]
    assert (record["cloud_init"]["user"], record["cloud_init"]["ssh_keys"]) == ("ops", [key.read_text().strip()])
    assert record["cloud_init"]["password_hash"].startswith("$6$") and "Guest-pass-1" not in str(record)
