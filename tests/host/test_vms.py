"""VMs through the API of a real stack, on a real libvirtd (TCG domains) with their disks on btrfs
over a loop device: the tiny test guest imported from a qcow2 image, booted and shut down; cloned
×10 in one job, each clone a reflink copy with its own UUID and MAC that boots by itself;
snapshot, change, restore-as-new and revert showing the old data; refusals for bad input
(capacity, names taken, files that are no disk image, running VMs); deletion with and without the
disks; an aborted clone leaving nothing; a guest's fstrim giving the space back to the pool
(virtio-scsi with discard=unmap).

libvirtd and virtlogd are started by the fixture when they are not running (support.libvirt_host:
with this host's hanging /dev/kvm hidden) and stopped after; every domain the tests define is
destroyed and undefined at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from cairn.compute.domain import parse_macs
from cairn.compute.hypervisor import Hypervisor
from cairn.compute.vms import Compute, get_vm
from cairn.errors import ExecutionError
from cairn.runner import Runner
from environment import missing
from support import (ARTIFACTS, CANVAS_HAS_PICTURE, GUEST_IP, HOST_IP, VM_BRIDGE as BRIDGE, console_page, finish_job,
                     goto, guest_run, libvirt_host, reachable, storage_stack, virsh, wait_until)
from vnc_client import Console

REPO = Path(__file__).resolve().parents[2]
GUEST = REPO / "build" / "guest" / "cairn-testguest.img"
HEARTBEAT = re.compile(r"CAIRN-HEARTBEAT boot=(\S+) n=(\d+)")

pytestmark = missing(tools={"libvirtd": "Debian package libvirt-daemon-system"},
                     files={GUEST: "the test guest: `make guest`"})


@pytest.fixture(scope="module")
def libvirt(tmp_path_factory):
    with libvirt_host(tmp_path_factory.mktemp("libvirtd"), "vmt-") as mounts:
        yield mounts


@pytest.fixture(scope="module")
def api(libvirt, request):
    # QEMU runs as libvirt-qemu: the pools must be reachable through world-traversable directories.
    base = Path(tempfile.mkdtemp(prefix="cairn-vms-", dir=libvirt))
    os.chmod(base, 0o755)
    try:
        with storage_stack(base, 1, 2048, keep_logs=lambda: request.session.testsfailed) as (stack, loops):
            session = stack.session()
            job = finish_job(session, stack, "POST", "/pools", json={"name": "tank", "node": stack.node,
                                                                     "disks": loops.ids(), "profile": "single"})
            assert job["state"] == "success", job
            os.chmod(base / "pools", 0o755)

            def call(method, path, **kwargs):
                return session.request(method, stack.url + "/api/v1" + path, timeout=60, **kwargs)
            yield stack, call, session
    finally:
        if request.session.testsfailed:
            keep = ARTIFACTS / "vm-logs"
            keep.mkdir(parents=True, exist_ok=True)
            for log in (base / "vm-logs").glob("*.log"):
                shutil.copy(log, keep / log.name)
        shutil.rmtree(base, ignore_errors=True)


def done(api, method: str, path: str, timeout: float = 300, **kwargs) -> dict:
    stack, _, session = api
    job = finish_job(session, stack, method, path, timeout=timeout, **kwargs)
    assert job["state"] == "success", f"{job['title']}: {job.get('error')}"
    return job


def vm_dir(stack, name: str) -> Path:
    return stack.dir / "pools" / "tank" / "vms" / name


def heartbeat(stack, name: str, after: int = 0) -> str:
    """Waits for a heartbeat in the VM's serial log (written by virtlogd) past byte `after`; returns the boot id."""
    log = stack.dir / "vm-logs" / f"{name}.log"

    def beat():
        if not log.exists():
            return None
        found = HEARTBEAT.search(log.read_text(errors="replace")[after:])
        return found.group(1) if found else None
    return wait_until(beat, 120, f"{name}'s heartbeat", interval=0.5)


def log_size(stack, name: str) -> int:
    log = stack.dir / "vm-logs" / f"{name}.log"
    return len(log.read_text(errors="replace")) if log.exists() else 0


OCTETS = {"Content-Type": "application/octet-stream"}


def uploaded(api, source: Path, name: str) -> str:
    """`source` uploaded into pool tank's images volume (a VM's disk is imported from, and its ISO
    is, an uploaded image or a file under a directory the node's config allows); its path."""
    stack, call, _ = api
    found = call("GET", f"/images/tank/{name}")
    if found.status_code == 200:
        return found.json()["path"]
    with open(source, "rb") as handle:
        reply = call("PUT", f"/images/tank/{name}", data=handle, headers=OCTETS)
    assert reply.status_code == 201, reply.text
    return reply.json()["path"]


def guest_image(api) -> str:
    """The test guest as an uploaded qcow2 (its raw contents once imported)."""
    stack, _, _ = api
    qcow2 = stack.dir / "guest.qcow2"
    if not qcow2.exists():
        Runner().run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(GUEST), str(qcow2)])
    return uploaded(api, qcow2, "guest.qcow2")


def boot_and_power_off(api, name: str) -> tuple[str, list[str]]:
    """Start the VM, wait for its heartbeat, read its NIC MACs from the running domain, power off."""
    stack, call, _ = api
    before = log_size(stack, name)
    done(api, "POST", f"/vms/{name}/actions/start", json={})
    boot = heartbeat(stack, name, before)
    macs = parse_macs(virsh("dumpxml", name).stdout)
    done(api, "POST", f"/vms/{name}/actions/poweroff", json={})
    return boot, macs


def test_a_vm_is_created_from_an_imported_image_booted_and_shut_down(api):
    stack, call, _ = api
    image = guest_image(api)
    body = {"name": "vmt-guest", "pool": "tank", "vcpus": 1, "memory_mib": 128, "firmware": "bios",
            "cpu_model": "qemu64", "disks": [{"import": image}, {"size": "32M"}],
            "nics": [{"bridge": BRIDGE}]}
    job = done(api, "POST", "/vms", json=body)
    assert job["result"]["accel"] == "tcg"
    disk = vm_dir(stack, "vmt-guest") / "disk0.raw"
    assert disk.read_bytes() == GUEST.read_bytes()                              # the qcow2's contents, as raw
    assert disk.stat().st_blocks * 512 < 16 << 20                               # and thin
    empty = vm_dir(stack, "vmt-guest") / "disk1.raw"
    assert empty.stat().st_size == 32 << 20 and empty.stat().st_blocks == 0
    record = call("GET", "/vms/vmt-guest").json()
    assert [(d["size"], d["imported_from"]) for d in record["disks"]] == [
        (64 << 20, image), (32 << 20, None)]
    vm = wait_until(lambda: (v := call("GET", "/vms/vmt-guest").json()).get("status") and v, 30, "the VM's status")
    assert vm["status"]["state"] == "shutoff" and vm["status"]["accel"] == "tcg"
    assert re.match(r"^52:54:00(:[0-9a-f]{2}){3}$", vm["nics"][0]["mac"])

    before = log_size(stack, "vmt-guest")
    done(api, "POST", "/vms/vmt-guest/actions/start", json={})
    heartbeat(stack, "vmt-guest", before)
    wait_until(lambda: call("GET", "/vms/vmt-guest").json()["status"]["state"] == "running", 30, "running")
    assert call("DELETE", "/vms/vmt-guest").status_code == 409          # running, not forced
    clone = call("POST", "/vms/vmt-guest/clones", json={"count": 1})
    assert clone.status_code == 409 and "snapshot" in clone.json()["error"]["message"]
    # The guest powers off on the ACPI power button (busybox acpid).
    job = done(api, "POST", "/vms/vmt-guest/actions/stop", json={"timeout": 60})
    assert job["result"]["state"] == "shutoff"
    serial = call("GET", "/vms/vmt-guest/serial").json()
    assert "CAIRN-HEARTBEAT" in serial["text"] and serial["size"] >= len(serial["text"].encode()) > 0


def test_bad_input_is_refused_with_the_reason(api):
    stack, call, _ = api
    image = guest_image(api)
    small = call("POST", "/vms", json={"name": "vmt-small", "pool": "tank", "disks": [{"import": image, "size": "16M"}]})
    assert small.status_code == 400 and "would cut it off" in small.json()["error"]["fields"]["disks[0].size"]
    # Only uploaded images (or files under [compute] image_dirs) reach a guest: never a device, a
    # system file, a file elsewhere on the node, nor a symlink out of the images volume.
    notes = stack.dir / "notes.txt"
    notes.write_text("not a disk\n")
    link = Path(image).parent / "shadow.img"
    link.symlink_to("/etc/shadow")
    try:
        refused = call("POST", "/vms", json={"name": "vmt-steal", "pool": "tank", "cdrom": "/etc/shadow",
                                             "disks": [{"import": "/dev/sda"}, {"import": str(notes)},
                                                       {"import": "/nowhere.img"}, {"import": str(link)}]})
    finally:
        link.unlink()
    assert refused.status_code == 400
    fields = refused.json()["error"]["fields"]
    assert (fields["cdrom"], fields["disks[0].import"]) == ("/etc/shadow is in /etc: system files are never VM images",
                                                           "/dev/sda is in /dev: system files are never VM images")
    assert fields["disks[1].import"].startswith(f"{notes} is not an uploaded image")
    assert fields["disks[2].import"].startswith("/nowhere.img is not an uploaded image")
    assert fields["disks[3].import"].startswith(f"{link} is not an uploaded image")
    assert [call("GET", f"/vms/{n}").status_code for n in ("vmt-small", "vmt-steal")] == [404] * 2
    big = call("POST", "/vms", json={"name": "vmt-big", "pool": "tank", "memory_mib": 10 << 20, "vcpus": 512})
    assert big.status_code == 400
    fields = big.json()["error"]["fields"]
    assert "CPUs" in fields["vcpus"] and "available to VMs" in fields["memory_mib"]
    taken = call("POST", "/vms", json={"name": "vmt-guest", "pool": "tank"})
    assert taken.status_code == 409
    bad = call("POST", "/vms", json={"name": "Bad_Name", "pool": "nope", "disks": [{"size": "1.5K"}],
                                     "nics": [{"mac": "00:11:22:33:44:55"}], "firmware": "coreboot"})
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) >= {"pool"}
    assert call("POST", "/vms/vmt-guest/actions/explode", json={}).status_code == 400
    assert call("GET", "/vms/vmt-nope").status_code == 404


def test_ten_clones_are_reflinks_with_their_own_identity_and_each_boots(api):
    stack, call, _ = api
    pool = stack.dir / "pools" / "tank"
    used_before = shutil.disk_usage(pool).used
    started = time.monotonic()
    job = done(api, "POST", "/vms/vmt-guest/clones", json={"count": 10})
    print(f"\n10 clones through the API: {time.monotonic() - started:.2f} s (job)")
    names = [c["name"] for c in job["result"]["clones"]]
    assert names == [f"vmt-guest-{i}" for i in range(1, 11)]
    vms = {v["name"]: v for v in call("GET", "/vms").json()["vms"]}
    macs = {vms[n]["nics"][0]["mac"] for n in names} | {vms["vmt-guest"]["nics"][0]["mac"]}
    uuids = {vms[n]["uuid"] for n in names} | {vms["vmt-guest"]["uuid"]}
    assert len(macs) == 11 and len(uuids) == 11
    assert all(vms[n]["origin"] == {"clone_of": "vmt-guest"} for n in names)
    source = (vm_dir(stack, "vmt-guest") / "disk0.raw").read_bytes()
    assert all((vm_dir(stack, n) / "disk0.raw").read_bytes() == source for n in names)
    # Shared extents: ten more 64 MiB disks cost (almost) nothing.
    Runner().run(["sync"])
    assert shutil.disk_usage(pool).used - used_before < 16 << 20
    # Each clone's space: all of it referenced, (almost) none of it exclusive.
    space = wait_until(lambda: call("GET", f"/vms/{names[0]}").json().get("space"), 60, "the clone's space")
    source_space = call("GET", "/vms/vmt-guest").json()["space"]
    assert source_space["referenced"] >= 2 << 20, source_space         # the guest's data: a few MiB
    assert abs(space["referenced"] - source_space["referenced"]) < 256 << 10 and space["exclusive"] < 256 << 10, \
        (space, source_space)
    boots = set()
    for name in names:
        boot, running_macs = boot_and_power_off(api, name)
        assert running_macs == [vms[name]["nics"][0]["mac"]]
        boots.add(boot)
    assert len(boots) == 10


def test_snapshot_restore_as_new_and_revert_bring_back_the_old_data(api):
    stack, call, _ = api
    disk = vm_dir(stack, "vmt-guest-1") / "disk0.raw"
    marker_at = (64 << 20) - 4096              # the last block: inside the data partition's tail
    with open(disk, "r+b") as handle:
        handle.seek(marker_at)
        handle.write(b"OLD DATA".ljust(4096, b"\0"))
    done(api, "POST", "/vms/vmt-guest-1/snapshots", json={"name": "before"})
    wait_until(lambda: call("GET", "/vms/vmt-guest-1/snapshots").json()["snapshots"] == ["before"], 10,
               "the snapshot in the VM's status")
    with open(disk, "r+b") as handle:
        handle.seek(marker_at)
        handle.write(b"NEW DATA".ljust(4096, b"\0"))

    def marker(path: Path) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(marker_at)
            return handle.read(8)

    started = time.monotonic()
    job = done(api, "POST", "/vms/vmt-guest-1/snapshots/before/restore", json={"name": "vmt-restored"})
    print(f"\nrestore as new VM: {time.monotonic() - started:.2f} s (job)")
    assert job["result"]["vm"] == "vmt-restored"
    assert marker(vm_dir(stack, "vmt-restored") / "disk0.raw") == b"OLD DATA"
    assert marker(disk) == b"NEW DATA"
    restored = call("GET", "/vms/vmt-restored").json()
    assert restored["origin"] == {"restored_from": "vmt-guest-1@before"}
    boot_and_power_off(api, "vmt-restored")
    taken = call("POST", "/vms/vmt-guest-1/snapshots/before/restore", json={"name": "vmt-restored"})
    assert taken.status_code == 409

    done(api, "POST", "/vms/vmt-guest-1/snapshots/before/revert")
    assert marker(disk) == b"OLD DATA"
    boot_and_power_off(api, "vmt-guest-1")
    done(api, "DELETE", "/vms/vmt-guest-1/snapshots/before")
    assert not (stack.dir / "pools" / "tank" / ".snapshots" / "vms" / "vmt-guest-1" / "before").exists()


def test_delete_removes_everything_or_keeps_the_disks(api):
    stack, call, _ = api
    done(api, "DELETE", "/vms/vmt-guest-2")
    assert not vm_dir(stack, "vmt-guest-2").exists()
    assert call("GET", "/vms/vmt-guest-2").status_code == 404
    assert "vmt-guest-2" not in virsh("list", "--all", "--name").stdout.split()
    job = done(api, "DELETE", "/vms/vmt-guest-3", params={"keep_disks": "true"})
    kept = Path(job["result"]["kept_disks_at"])
    assert (kept / "disk0.raw").exists() and not vm_dir(stack, "vmt-guest-3").exists()
    # A freed name can be taken again, and the MAC claims went with the VM.
    mac = call("GET", "/vms/vmt-guest-4").json()["nics"][0]["mac"]
    done(api, "DELETE", "/vms/vmt-guest-4")
    reply = call("POST", "/vms", json={"name": "vmt-guest-4", "pool": "tank", "memory_mib": 128,
                                       "disks": [{"size": "16M"}], "nics": [{"mac": mac, "bridge": BRIDGE}]})
    assert reply.status_code == 202, reply.text


def test_a_guests_fstrim_gives_the_space_back_to_the_pool(api):
    stack, call, _ = api
    done(api, "POST", "/vms/vmt-guest/clones", json={"names": ["vmt-trim"]})
    disk = vm_dir(stack, "vmt-trim") / "disk0.raw"
    net = stack.dir / "net.cfg"
    net.write_text(f"IP={GUEST_IP}/24\n")
    Runner().run(["mcopy", "-o", "-i", f"{disk}@@1M", str(net), "::net.cfg"], env={"MTOOLS_SKIP_CHECK": "1"})
    Runner().run(["ip", "addr", "replace", f"{HOST_IP}/24", "dev", BRIDGE])
    before = log_size(stack, "vmt-trim")
    done(api, "POST", "/vms/vmt-trim/actions/start", json={})
    heartbeat(stack, "vmt-trim", before)
    wait_until(lambda: reachable(f"http://{GUEST_IP}/heartbeat"), 60, "the guest's address", interval=0.5)

    pool = stack.dir / "pools" / "tank"

    def allocated() -> int:
        return disk.stat().st_blocks * 512

    def pool_used() -> int:
        Runner().run(["btrfs", "filesystem", "sync", str(pool)])
        stat = os.statvfs(pool)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    empty, pool_empty = allocated(), pool_used()
    guest_run("dd if=/dev/urandom of=/data/big bs=1M count=32 2>/dev/null && sync")
    written, pool_written = allocated() - empty, pool_used() - pool_empty
    assert written >= 30 << 20, f"the guest's 32 MiB reached the disk file as {written >> 20} MiB"
    started = time.monotonic()
    guest_run("rm /data/big && sync && fstrim /data")
    seconds = time.monotonic() - started
    freed, pool_freed = empty + written - allocated(), pool_empty + pool_written - pool_used()
    print(f"\nfstrim in the guest gave back {freed >> 20} MiB of {written >> 20} MiB in {seconds:.2f} s "
          f"(pool: {pool_written >> 20} MiB used by the write, {pool_freed >> 20} MiB freed)")
    assert freed >= 30 << 20, f"only {freed >> 20} MiB of {written >> 20} MiB came back"
    assert pool_freed >= 30 << 20, f"the pool got only {pool_freed >> 20} MiB back"
    done(api, "POST", "/vms/vmt-trim/actions/poweroff", json={})


def test_an_aborted_clone_leaves_nothing_behind(api):
    stack, call, _ = api
    backend = Compute(Runner(), stack.store(), stack.node, str(stack.dir / "pools"), Hypervisor(), "tcg",
                      str(stack.dir / "vm-logs"))
    source = get_vm(stack.store(), "vmt-guest")
    asked = []

    def abort_after_two() -> bool:
        asked.append(1)
        return len(asked) > 2
    with pytest.raises(ExecutionError, match="aborted"):
        backend.clone(source, ["vmt-ab-1", "vmt-ab-2", "vmt-ab-3"], should_stop=abort_after_two)
    assert sorted(p.name for p in (stack.dir / "pools" / "tank" / "vms").iterdir() if p.name.startswith("vmt-ab")) == []
    assert [call("GET", f"/vms/vmt-ab-{i}").status_code for i in (1, 2, 3)] == [404, 404, 404]
    assert not any(n.startswith("vmt-ab") for n in virsh("list", "--all", "--name").stdout.split())


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAiBs5xOBnDTD6R/rf/T9GPDXC00MDbnufS9RzHSfiMc ops@laptop"


def seed_file(seed: Path, name: str) -> str:
    return Runner().run(["mtype", "-i", str(seed), f"::{name}"], env={"MTOOLS_SKIP_CHECK": "1"}).stdout


def test_cloud_init_seed_carries_the_user_and_a_copy_gets_its_own_identity(api):
    stack, call, _ = api
    body = {"name": "vmt-cloud", "pool": "tank", "memory_mib": 128, "firmware": "bios", "cpu_model": "qemu64",
            "disks": [{"import": guest_image(api)}], "nics": [{"bridge": BRIDGE}],
            "cloud_init": {"user": "ops", "password": "Guest-pass-1", "ssh_keys": [KEY]}}
    done(api, "POST", "/vms", json=body)
    record = call("GET", "/vms/vmt-cloud").json()
    password_hash = record["cloud_init"]["password_hash"]
    assert "Guest-pass-1" not in json.dumps(record) and password_hash.startswith("$6$")
    salt = password_hash.split("$")[2]
    assert Runner().run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input="Guest-pass-1\n").stdout.strip() \
        == password_hash
    seed = vm_dir(stack, "vmt-cloud") / "cloud-init.img"
    assert "LABEL=\"CIDATA\"" in Runner().run(["blkid", "-p", str(seed)], check=False).stdout
    user = json.loads(seed_file(seed, "user-data").split("\n", 1)[1])
    assert (user["hostname"], user["users"][0]["name"], user["users"][0]["passwd"],
            user["users"][0]["ssh_authorized_keys"]) == ("vmt-cloud", "ops", password_hash, [KEY])
    assert json.loads(seed_file(seed, "meta-data")) == {"instance-id": record["uuid"], "local-hostname": "vmt-cloud"}
    # libvirt takes the seed as a read-only disk and the VM boots with it.
    boot_and_power_off(api, "vmt-cloud")
    assert "cloud-init.img" in virsh("dumpxml", "vmt-cloud").stdout

    clone = done(api, "POST", "/vms/vmt-cloud/clones", json={"names": ["vmt-cloud-2"]})["result"]["clones"][0]
    copy = call("GET", f"/vms/{clone['name']}").json()
    copy_seed = vm_dir(stack, "vmt-cloud-2") / "cloud-init.img"
    assert json.loads(seed_file(copy_seed, "meta-data")) == {"instance-id": copy["uuid"],
                                                             "local-hostname": "vmt-cloud-2"}
    assert json.loads(seed_file(copy_seed, "user-data").split("\n", 1)[1])["users"][0]["passwd"] == password_hash
    bad = call("POST", "/vms", json={**body, "name": "vmt-cloud-bad", "cloud_init": {"user": "root"}})
    assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"cloud_init", "cloud_init.user"}


def test_a_stopped_vm_is_edited_and_libvirt_gets_the_new_definition(api):
    stack, call, _ = api
    iso = uploaded(api, make_guest_iso(stack.dir / "edit-iso"), "edit.iso")
    done(api, "PATCH", "/vms/vmt-guest", json={"memory_mib": 192, "vcpus": 2, "description": "edited",
                                               "cdrom": iso})
    xml = virsh("dumpxml", "vmt-guest", "--inactive").stdout
    assert '<memory unit="KiB">196608</memory>' in xml.replace("'", '"') and ">2</vcpu>" in xml
    assert "<description>edited</description>" in xml and "edit.iso" in xml
    done(api, "PATCH", "/vms/vmt-guest", json={"cdrom": None, "vcpus": 1})
    assert "edit.iso" not in virsh("dumpxml", "vmt-guest", "--inactive").stdout
    refused = call("PATCH", "/vms/vmt-guest", json={"cdrom": "/dev/sda"})
    assert refused.status_code == 400 and refused.json()["error"]["fields"] == {
        "cdrom": "/dev/sda is in /dev: system files are never VM images"}
    too_big = call("PATCH", "/vms/vmt-guest", json={"memory_mib": 10 << 20})
    assert too_big.status_code == 400 and "available to VMs" in too_big.json()["error"]["fields"]["memory_mib"]
    fixed = call("PATCH", "/vms/vmt-guest", json={"name": "other"})
    assert fixed.status_code == 400
    before = log_size(stack, "vmt-guest")
    done(api, "POST", "/vms/vmt-guest/actions/start", json={})
    heartbeat(stack, "vmt-guest", before)                       # boots with its new definition
    wait_until(lambda: call("GET", "/vms/vmt-guest").json()["status"]["state"] == "running", 30, "running")
    running = call("PATCH", "/vms/vmt-guest", json={"memory_mib": 128})
    assert running.status_code == 409 and "shut it down to change memory_mib" in running.json()["error"]["message"]
    assert call("PATCH", "/vms/vmt-guest", json={"description": "while running"}).status_code == 202
    done(api, "POST", "/vms/vmt-guest/actions/poweroff", json={})


def test_the_console_shows_the_vm_screen_over_the_websocket_relay_and_in_novnc(api):
    stack, call, session = api
    done(api, "POST", "/vms", json={"name": "vmt-screen", "pool": "tank", "vcpus": 1, "memory_mib": 128,
                                    "firmware": "bios", "cpu_model": "qemu64", "disks": [{"import": guest_image(api)}],
                                    "nics": [{"bridge": BRIDGE}]})
    token = session.headers["Authorization"].removeprefix("Bearer ")
    path = "/api/v1/vms/vmt-screen/vnc"
    stopped = Console(stack.url, path, token, stack.ca)
    assert stopped.status == 409 and "start it" in stopped.body, (stopped.head, stopped.body)
    done(api, "POST", "/vms/vmt-screen/actions/start", json={})
    wait_until(lambda: (call("GET", "/vms/vmt-screen").json().get("status") or {}).get("vnc_port"), 30,
               "the VM's VNC port")
    assert Console(stack.url, path, None, stack.ca).status == 401                     # no login
    assert Console(stack.url, path, token, stack.ca, origin="https://elsewhere.example").status == 401
    plain = call("GET", "/vms/vmt-screen/vnc")
    assert plain.status_code == 400 and "Upgrade: websocket" in plain.json()["error"]["message"]

    console = Console(stack.url, path, token, stack.ca)
    assert console.status == 101 and "Sec-WebSocket-Protocol: binary" in console.head
    width, height, name = console.rfb_init()                # QEMU's own VNC server, through the relay
    assert width >= 640 and height >= 400 and "vmt-screen" in name
    console.close()

    with console_page(stack.url, stack.password) as page:
        goto(page, "/vms/vmt-screen")
        goto(page, page.get_attribute("#open-console", "href"))
        expect(page.locator("#screen")).to_have_attribute("data-state", "connected", timeout=30_000)
        page.wait_for_function(CANVAS_HAS_PICTURE, timeout=60_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "vm-console.png"))
        done(api, "POST", "/vms/vmt-screen/actions/poweroff", json={})
        expect(page.locator("#screen")).to_have_attribute("data-state", "disconnected", timeout=30_000)
        expect(page.locator("#screen-status")).to_contain_text("closed")
    done(api, "DELETE", "/vms/vmt-screen")


def test_a_running_vm_with_a_guest_agent_is_snapshotted_quiesced(api):
    stack, call, _ = api
    done(api, "POST", "/vms", json={"name": "vmt-qga", "pool": "tank", "vcpus": 1, "memory_mib": 128,
                                    "firmware": "bios", "cpu_model": "qemu64", "disks": [{"import": guest_image(api)}],
                                    "nics": [{"bridge": BRIDGE}]})
    done(api, "POST", "/vms/vmt-qga/actions/start", json={})
    heartbeat(stack, "vmt-qga")
    # The test guest answers the guest-agent port (image/guest/rootfs/usr/sbin/cairn-qga): libvirt
    # freezes /data through it for the snapshot and thaws it after.
    wait_until(lambda: '"return"' in virsh("qemu-agent-command", "vmt-qga", '{"execute":"guest-ping"}',
                                           check=False).stdout, 60, "the guest agent to answer", interval=1)
    job = done(api, "POST", "/vms/vmt-qga/snapshots", json={"name": "quiet"})
    assert job["result"]["quiesced"] is True and job["result"]["running"] is True, job["result"]
    log = (stack.dir / "vm-logs" / "vmt-qga.log").read_text(errors="replace")
    froze, thawed = log.rfind("CAIRN-QGA froze /data"), log.rfind("CAIRN-QGA thawed /data")
    assert 0 <= froze < thawed, "the guest did not see freeze then thaw"
    done(api, "DELETE", "/vms/vmt-qga", timeout=120, params={"force": "true"})


def test_a_uefi_vm_starts_on_ovmf_with_its_nvram_in_its_own_subvolume(api):
    stack, call, _ = api
    done(api, "POST", "/vms", json={"name": "vmt-uefi", "pool": "tank", "vcpus": 1, "memory_mib": 256,
                                    "firmware": "uefi", "disks": [{"size": "16M"}], "nics": [{"bridge": BRIDGE}]})
    done(api, "POST", "/vms/vmt-uefi/actions/start", json={})
    live = virsh("dumpxml", "vmt-uefi").stdout
    assert re.search(r"<loader[^>]*type=.pflash.[^>]*>/usr/share/OVMF/OVMF_CODE_4M\.fd</loader>", live), live
    nvram = vm_dir(stack, "vmt-uefi") / "nvram.fd"
    assert nvram.exists() and nvram.stat().st_size > 0            # made from OVMF's template, in the VM's subvolume
    assert virsh("domstate", "vmt-uefi").stdout.strip() == "running"
    done(api, "POST", "/vms/vmt-uefi/actions/poweroff", json={})
    done(api, "POST", "/vms/vmt-uefi/clones", json={"names": ["vmt-uefi-copy"]})
    assert (vm_dir(stack, "vmt-uefi-copy") / "nvram.fd").read_bytes() == nvram.read_bytes()
    for name in ("vmt-uefi-copy", "vmt-uefi"):
        done(api, "DELETE", f"/vms/{name}")


def make_guest_iso(workdir: Path) -> Path:
    """A bootable ISO (isolinux) with the test guest's kernel and initramfs: the guest's whole
    userland lives in its initramfs, so it runs from the CD alone."""
    tree = workdir / "iso"
    (tree / "isolinux").mkdir(parents=True)
    for name in ("bzImage", "initrd.gz"):
        Runner().run(["mcopy", "-i", f"{GUEST}@@1M", f"::{name}", str(tree / name)], env={"MTOOLS_SKIP_CHECK": "1"})
    shutil.copy("/usr/lib/ISOLINUX/isolinux.bin", tree / "isolinux")
    shutil.copy("/usr/lib/syslinux/modules/bios/ldlinux.c32", tree / "isolinux")
    (tree / "isolinux" / "isolinux.cfg").write_text(
        "DEFAULT cairn\nPROMPT 0\nTIMEOUT 0\nLABEL cairn\n  LINUX /bzImage\n  INITRD /initrd.gz\n"
        "  APPEND console=ttyS0,115200n8 quiet loglevel=3 panic=5\n")
    iso = workdir / "guest.iso"
    Runner().run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "CAIRNCD", "-o", str(iso),
                  "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
                  "-boot-load-size", "4", "-boot-info-table", str(tree)])
    return iso


def test_a_vm_boots_from_its_iso_and_the_iso_is_ejected_while_it_is_stopped(api):
    stack, call, _ = api
    iso = uploaded(api, make_guest_iso(stack.dir / "iso-build"), "guest.iso")
    done(api, "POST", "/vms", json={"name": "vmt-cd", "pool": "tank", "vcpus": 1, "memory_mib": 128,
                                    "firmware": "bios", "cpu_model": "qemu64", "disks": [{"size": "16M"}],
                                    "cdrom": str(iso), "nics": [{"bridge": BRIDGE}]})
    done(api, "POST", "/vms/vmt-cd/actions/start", json={})
    heartbeat(stack, "vmt-cd")                  # the disk is empty: only the CD can have booted it
    live = virsh("dumpxml", "vmt-cd").stdout
    assert f"<source file='{iso}'" in live and "device='cdrom'" in live
    done(api, "POST", "/vms/vmt-cd/actions/poweroff", json={})
    done(api, "PATCH", "/vms/vmt-cd", json={"cdrom": None})
    assert "device='cdrom'" not in virsh("dumpxml", "vmt-cd").stdout
    done(api, "DELETE", "/vms/vmt-cd", params={"force": "true"})
