"""VMs inside a real appliance, through its API only (plus SSH to look, never to do): the tiny test
guest uploaded as a qcow2 into the pool's images volume, imported as a VM disk, booted under the
appliance's libvirt (TCG inside TCG: nested KVM has crashed appliances, see qemu-testbed/README.md),
its screen read over the console's WebSocket (RFB) and drawn by noVNC in chromium; a snapshot of the
running VM (quiesced through the guest-agent port), a write in the guest, the snapshot restored as a new VM that boots with the old data;
fstrim in the guest giving the space back to the pool (and to the VM's space figures); ten clones
in one job, with their own MACs, two of them booted. The guests sit on the appliance's br0, on the
testbed's LAN segment, where dnsmasq gives them fixed addresses: the test reaches them from the
appliance (curl to the guest's /cgi-bin/run)."""

from __future__ import annotations

import json
import re
import shlex
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from cairn.runner import Runner
from environment import missing
from support import ARTIFACTS, CANVAS_HAS_PICTURE, console_page, goto, wait_until
from vnc_client import Console

REPO_GUEST = ARTIFACTS.parent / "guest" / "cairn-testguest.img"
HEARTBEAT = re.compile(r"CAIRN-HEARTBEAT boot=(\S+) n=(\d+)")
MAC = "52:54:00:e2:e0:01"
GUEST_IP = 50            # on the LAN segment (10.77.2.x)
RESTORED_IP = 51
MIB = 1 << 20

pytestmark = missing(files={REPO_GUEST: "the test guest: `make guest`"})


@pytest.fixture(scope="module")
def bed(testbed_nodes):
    """node2 of the shared testbed (its CAIRN-VD1 is still free: storage used the small disks, shares only mounted)."""
    testbed = testbed_nodes(1)
    node = testbed.nodes[0]
    # How inner guests run is a testbed setting (TCG unless asked): the agent is told so.
    node.succeed(f"printf '\\n[compute]\\naccel = \"{testbed.inner_accel}\"\\n' >> /etc/cairn/cairn.toml"
                 " && systemctl restart cairn-agent")
    return testbed


def call(api, method: str, path: str, body: dict | None = None, expect_status=(200, 201, 202, 204)):
    status, reply = api.call(method, path, body)
    assert status in ((expect_status,) if isinstance(expect_status, int) else expect_status), \
        f"{method} {path}: {status} {reply}"
    return reply


def finish(api, reply: dict, timeout: float = 600) -> dict:
    def ended():
        job = api.get(f"/jobs/{reply['id']}")
        return job if job["state"] not in ("queued", "running") else None
    job = wait_until(ended, timeout, f"job {reply['id']}", interval=0.1)
    assert job["state"] == "success", f"{job['title']}: {job.get('error')}"
    return job


def done(api, method: str, path: str, body: dict | None = None, timeout: float = 600) -> dict:
    return finish(api, call(api, method, path, body), timeout)


def heartbeat(api, name: str, after: int = 0, timeout: float = 300) -> str:
    """The boot id of the first heartbeat in the VM's serial log past byte `after` (through the API)."""
    def beat():
        text = api.get(f"/vms/{name}/serial")["text"]
        found = HEARTBEAT.search(text[after:]) if len(text) > after else None
        return found.group(1) if found else None
    return wait_until(beat, timeout, f"{name}'s heartbeat", interval=2)


def serial_size(api, name: str) -> int:
    return len(api.get(f"/vms/{name}/serial")["text"])


def guest_run(node, ip: str, script: str, timeout: int = 180) -> str:
    """A shell script run in the test guest (its /cgi-bin/run), from the appliance."""
    out = node.succeed(f"curl -s -i -m {timeout} --data-binary {shlex.quote(script)} http://{ip}/cgi-bin/run",
                       timeout=timeout + 30)
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    assert re.search(r"(?im)^X-Cairn-Exit: 0$", head), f"{script!r} in the guest: {head}\n{body}"
    return body


def reachable(node, ip: str) -> bool:
    return node.execute(f"curl -s -m 3 -o /dev/null http://{ip}/heartbeat", timeout=30)[0] == 0


def upload(node, api, local, pool: str, name: str) -> dict:
    size = local.stat().st_size
    with open(local, "rb") as body:
        request = urllib.request.Request(f"{node.url}/api/v1/images/{pool}/{name}", data=body, method="PUT",
                                         headers={"Content-Type": "application/octet-stream",
                                                  "Content-Length": str(size),
                                                  "Authorization": f"Bearer {api.token}"})
        started = time.monotonic()
        with urllib.request.urlopen(request, context=api.context, timeout=600) as reply:
            record = json.loads(reply.read())
    seconds = time.monotonic() - started
    print(f"\nupload of {size / MIB:.1f} MiB into the appliance: {seconds:.1f} s ({size / MIB / seconds:.1f} MiB/s)")
    return record


@pytest.fixture(scope="module")
def vm(bed, tmp_path_factory):
    """Pool vmtank; the guest uploaded as a qcow2 and imported as VM `guest` (fixed MAC → GUEST_IP), running."""
    node = bed.nodes[0]
    api = node.api()
    name = api.get("/nodes")["nodes"][0]["name"]
    done(api, "POST", "/pools", {"name": "vmtank", "node": name, "disks": ["CAIRN-VD1"], "profile": "single"})
    qcow2 = tmp_path_factory.mktemp("images") / "guest.qcow2"
    Runner().run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(REPO_GUEST), str(qcow2)])
    image = upload(node, api, qcow2, "vmtank", "guest.qcow2")
    assert image["kind"] == "disk" and image["format"] == "qcow2", image
    ip = bed.network.reserve("lan", MAC, GUEST_IP)
    job = done(api, "POST", "/vms", {"name": "guest", "pool": "vmtank", "vcpus": 1, "memory_mib": 128,
                                     "firmware": "bios", "cpu_model": "qemu64",
                                     "disks": [{"import": image["path"]}], "nics": [{"mac": MAC}]})
    assert job["result"]["accel"] == bed.inner_accel
    started = time.monotonic()
    done(api, "POST", "/vms/guest/actions/start", {})
    heartbeat(api, "guest")
    print(f"\nguest's first heartbeat {time.monotonic() - started:.1f} s after start ({bed.inner_accel} inside TCG)")
    wait_until(lambda: reachable(node, ip), 180, "the guest on the LAN segment", interval=2)
    return node, api, ip


def test_the_uploaded_image_boots_as_a_vm_and_its_screen_shows_in_novnc(bed, vm):
    node, api, _ = vm
    record = api.get("/vms/guest")
    assert record["status"]["state"] == "running" and record["status"]["accel"] == bed.inner_accel
    assert record["disks"][0]["imported_from"].endswith("/images/guest.qcow2")
    # The display is reached through cairn-web only: QEMU's VNC listens on the appliance's loopback.
    listening = node.succeed("ss -Hltn")
    port = record["status"]["vnc_port"]
    assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening
    console = Console(node.url, "/api/v1/vms/guest/vnc", api.token, str(node.machine.spec.run_dir / "appliance-ca.pem"))
    assert console.status == 101, (console.head, console.body)
    width, height, name = console.rfb_init()
    assert width >= 640 and height >= 400 and "guest" in name
    console.close()
    with console_page(node.url, node.succeed("cat /var/lib/cairn/admin-password").strip()) as page:
        goto(page, "/vms/guest")
        goto(page, page.get_attribute("#open-console", "href"))
        expect(page.locator("#screen")).to_have_attribute("data-state", "connected", timeout=60_000)
        page.wait_for_function(CANVAS_HAS_PICTURE, timeout=120_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "appliance-vm-console.png"))


def test_snapshot_of_the_running_vm_restored_as_new_boots_with_the_old_data(bed, vm):
    node, api, ip = vm
    guest_run(node, ip, "echo OLD > /data/marker && sync")
    started = time.monotonic()
    job = done(api, "POST", "/vms/guest/snapshots", {"name": "before"})
    print(f"\nsnapshot of the running VM through the API (job done, quiesced: {job['result']['quiesced']}): "
          f"{time.monotonic() - started:.2f} s")
    assert job["result"]["quiesced"] is True      # the test guest answers the guest-agent port
    guest_run(node, ip, "echo NEW > /data/marker && sync")
    started = time.monotonic()
    done(api, "POST", "/vms/guest/snapshots/before/restore", {"name": "restored"})
    print(f"restore as a new VM through the API (job done): {time.monotonic() - started:.2f} s")
    restored = api.get("/vms/restored")
    assert restored["origin"] == {"restored_from": "guest@before"}
    assert restored["nics"][0]["mac"] != MAC and restored["uuid"] != api.get("/vms/guest")["uuid"]
    restored_ip = bed.network.reserve("lan", restored["nics"][0]["mac"], RESTORED_IP)
    done(api, "POST", "/vms/restored/actions/start", {})
    heartbeat(api, "restored")
    wait_until(lambda: reachable(node, restored_ip), 180, "the restored VM on the LAN segment", interval=2)
    assert guest_run(node, restored_ip, "cat /data/marker").strip() == "OLD"
    assert guest_run(node, ip, "cat /data/marker").strip() == "NEW"
    done(api, "POST", "/vms/restored/actions/poweroff", {})
    done(api, "DELETE", "/vms/restored")


def test_fstrim_in_the_guest_gives_the_space_back_to_the_pool(vm):
    node, api, ip = vm
    disk = "/pools/vmtank/vms/guest/disk0.raw"

    def allocated() -> int:
        return int(node.succeed(f"stat -c %b {disk}")) * 512

    def pool_used() -> int:
        node.succeed("btrfs filesystem sync /pools/vmtank")
        return int(node.succeed("df -B1 --output=used /pools/vmtank").split()[-1])

    empty, pool_empty = allocated(), pool_used()
    guest_run(node, ip, "dd if=/dev/urandom of=/data/big bs=1M count=32 2>/dev/null && sync")
    written, pool_written = allocated() - empty, pool_used() - pool_empty
    assert written >= 30 * MIB, f"the guest's 32 MiB reached the disk file as {written / MIB:.0f} MiB"
    exclusive = wait_until(lambda: (s := api.get("/vms/guest").get("space")) and s["exclusive"] >= written and s,
                           120, "the VM's space figures to show the write", interval=2)["exclusive"]
    started = time.monotonic()
    guest_run(node, ip, "rm /data/big && sync && fstrim /data")
    seconds = time.monotonic() - started
    freed, pool_freed = empty + written - allocated(), pool_empty + pool_written - pool_used()
    print(f"\nfstrim in the guest (inside the appliance): {freed / MIB:.0f} of {written / MIB:.0f} MiB back in "
          f"{seconds:.1f} s; pool used {pool_written / MIB:.0f} MiB more after the write, {pool_freed / MIB:.0f} MiB "
          "less after fstrim")
    assert freed >= 30 * MIB and pool_freed >= 24 * MIB, (freed, pool_freed)
    after = wait_until(lambda: (s := api.get("/vms/guest")["space"]) and s["exclusive"] <= exclusive - 24 * MIB and s,
                       120, "the VM's space figures to show the space given back", interval=2)
    print(f"VM space (API): exclusive {exclusive / MIB:.0f} MiB → {after['exclusive'] / MIB:.0f} MiB")


def test_ten_clones_in_one_job_each_with_its_own_identity_two_booted(vm):
    node, api, _ = vm
    done(api, "POST", "/vms/guest/actions/poweroff", {})
    used = int(node.succeed("sync && df -B1 --output=used /pools/vmtank").split()[-1])
    started = time.monotonic()
    job = done(api, "POST", "/vms/guest/clones", {"count": 10})
    print(f"\n10 clones through the API (job done) in the appliance: {time.monotonic() - started:.2f} s")
    names = [c["name"] for c in job["result"]["clones"]]
    assert names == [f"guest-{i}" for i in range(1, 11)]
    vms = {v["name"]: v for v in api.get("/vms")["vms"]}
    assert len({vms[n]["nics"][0]["mac"] for n in names} | {MAC}) == 11
    assert len({vms[n]["uuid"] for n in names} | {vms["guest"]["uuid"]}) == 11
    grown = int(node.succeed("sync && df -B1 --output=used /pools/vmtank").split()[-1]) - used
    assert grown < 16 * MIB, f"ten reflink clones took {grown / MIB:.0f} MiB of the pool"
    for name in names[:2]:
        done(api, "POST", f"/vms/{name}/actions/start", {})
    boots = {heartbeat(api, name) for name in names[:2]}
    assert len(boots) == 2
    for name in names[:2]:
        live = node.succeed(f"virsh -c qemu:///system domiflist {name}")
        assert vms[name]["nics"][0]["mac"] in live
        done(api, "POST", f"/vms/{name}/actions/poweroff", {})
