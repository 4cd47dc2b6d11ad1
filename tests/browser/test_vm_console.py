"""The VMs pages in a real browser, against a real stack without libvirtd: the VMs of a far node
(its records, and what its agent would report, written straight into the store) are listed with
their state and accelerator, the VM page shows settings and snapshots, every form queues the
job it should (seen through GET /api/v1/jobs: the far node has no agent, so jobs stay queued),
and refusals show their reason without queueing anything."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from cairn.compute import model
from cairn.compute.image_store import Image
from cairn.storage import model as storage_model
from support import ARTIFACTS

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GiB = 1 << 30
FAR = "node-far"
JOB_URL = re.compile(r"/jobs/\d{8}-[^/]+$")


def vm_record(name: str, number: int, vcpus: int, memory_mib: int, disk_sizes: tuple[int, ...],
              origin: dict[str, str] | None = None) -> model.Vm:
    return model.Vm(name, f"00000000-0000-4000-8000-{number:012d}", FAR, "far", vcpus, memory_mib,
                    disks=tuple(model.Disk(f"disk{i}", size) for i, size in enumerate(disk_sizes)),
                    nics=(model.Nic(f"52:54:00:00:00:{number:02x}"),), origin=origin or {}, created_at=1.0)


def status(state: str, accel: str, snapshots: list[str]) -> dict:
    return {"node": FAR, "state": state, "accel": accel, "vnc_port": 5900 if state == "running" else None,
            "snapshots": snapshots, "files": True}


VMS = {"web": (vm_record("web", 1, 2, 2048, (20 * GiB, 100 * GiB)),
               status("running", "tcg", ["before-upgrade", "daily.1"])),
       "db": (vm_record("db", 2, 1, 1024, (8 * GiB,)), status("shutoff", "kvm", [])),
       "db-copy": (vm_record("db-copy", 3, 1, 1024, (8 * GiB,), {"clone_of": "db"}), None),
       "web-old": (vm_record("web-old", 4, 2, 2048, (20 * GiB, 100 * GiB), {"restored_from": "web@before-upgrade"}),
                   status("paused", "kvm", []))}


@pytest.fixture(scope="module")
def rig(stack):
    """A far node (4 CPUs, 8 GiB) with a pool and four VMs, as its agent would have reported them."""
    store = stack.store()
    store.put(f"nodes/{FAR}", {"name": FAR, "heartbeat_at": time.time(), "agent_version": "test", "cpus": 4,
                               "memory_total": 8 * GiB})
    store.put("pools/far", storage_model.Pool("far", FAR, "single", "dup", "none", ("disk-far",),
                                              state="online").to_dict())
    for name, (vm, seen) in VMS.items():
        store.put(f"vms/{name}", vm.to_dict())
        store.put(f"vm-macs/{vm.nics[0].mac}", {"vm": name})
        if seen is not None:
            store.put(f"vm-status/{name}", seen)
    for name, kind in (("debian.iso", "iso"), ("rescue.iso", "iso"), ("base.qcow2", "disk")):   # uploaded there
        store.put(f"images/far/{name}", Image("far", name, FAR, f"/pools/far/images/{name}", 1 << 20, kind,
                                              "raw" if kind == "iso" else "qcow2", 1 << 20).to_dict())
    # What the far node measured: db-copy is a fresh clone of db (shares everything).
    store.put("pool-status/far", {"vms": {"db": {"referenced": 3 * GiB, "exclusive": 3 * GiB},
                                          "db-copy": {"referenced": 3 * GiB, "exclusive": 64 << 10}}})
    session = stack.session()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(ignore_https_errors=True, base_url=stack.url)
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=password]", stack.password)
        page.click("button[type=submit]")
        expect(page.locator("header nav")).to_be_visible()
        yield stack, session, page
        browser.close()


def jobs(stack, session) -> list[dict]:
    return session.get(stack.url + "/api/v1/jobs").json()["jobs"]


def queued_job(rig) -> dict:
    """The job the page was sent to, as GET /api/v1/jobs lists it."""
    stack, session, page = rig
    expect(page).to_have_url(JOB_URL)
    job_id = page.url.rsplit("/", 1)[1]
    (job,) = [j for j in jobs(stack, session) if j["id"] == job_id]
    return {key: job[key] for key in ("kind", "node", "params", "state")}


def cells(page, css: str) -> dict[str, str]:
    return {row.get_attribute("data-vm"): row.locator(css).inner_text().strip()
            for row in page.locator("tr[data-vm]").all()}


def test_the_vms_page_lists_every_vm_with_its_state_and_accelerator(rig):
    stack, session, page = rig
    page.goto("/vms")
    expect(page.locator("header nav a.active")).to_have_text("VMs")
    assert ["db", "db-copy", "web", "web-old"] == [r.get_attribute("data-vm") for r in page.locator("tr[data-vm]").all()]
    assert {"db": "shutoff", "db-copy": "not reported yet", "web": "running (TCG)",
            "web-old": "paused (KVM)"} == cells(page, "td.vm-state")
    assert {"db": "1", "db-copy": "1", "web": "2", "web-old": "2"} == cells(page, "td.vm-vcpus")
    assert {"db": "1024 MiB", "db-copy": "1024 MiB", "web": "2048 MiB", "web-old": "2048 MiB"} == cells(page, "td.vm-memory")
    assert {"db": "8.0 GiB", "db-copy": "8.0 GiB", "web": "20.0 GiB, 100.0 GiB",
            "web-old": "20.0 GiB, 100.0 GiB"} == cells(page, "td.vm-disks")
    assert {"db": "52:54:00:00:00:02", "db-copy": "52:54:00:00:00:03", "web": "52:54:00:00:00:01",
            "web-old": "52:54:00:00:00:04"} == cells(page, "td.vm-macs")
    assert {"db": "3.0 GiB own\nof 3.0 GiB", "db-copy": "0 MiB own\nof 3.0 GiB", "web": "-",
            "web-old": "-"} == cells(page, "td.vm-space")
    assert {"db": "-", "db-copy": "clone of db", "web": "-",
            "web-old": "restored from web@before-upgrade"} == cells(page, "td.vm-origin")
    buttons = {name: page.locator(f'tr[data-vm="{name}"] td.vm-actions button').all_inner_texts() for name in VMS}
    assert {"web": ["Shut down", "Power off", "Reboot", "Pause", "Clone ×N", "Delete"],
            "db": ["Start", "Clone ×N", "Delete"],
            "db-copy": ["Start", "Clone ×N", "Delete"],
            "web-old": ["Resume", "Power off", "Clone ×N", "Delete"]} == buttons
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-vms.png"), full_page=True)


def test_the_vm_page_shows_settings_and_snapshots(rig):
    stack, session, page = rig
    page.goto("/vms/web")
    expect(page.locator("#vm-state")).to_have_text("running (TCG)")
    settings = {row.get_attribute("data-setting"): row.locator("td").inner_text().strip()
                for row in page.locator("tr[data-setting]").all()}
    assert {"node": FAR, "pool": "far", "accel": f"TCG (no KVM on {FAR}: the CPU is emulated, slow)",
            "vcpus": "2 (Nehalem)", "memory": "2048 MiB", "firmware": "uefi",
            "disks": "disk0: 20.0 GiB, disk1: 100.0 GiB", "nics": "52:54:00:00:00:01 on br0", "cdrom": "none",
            "autostart": "no", "vnc": "5900", "origin": "-", "uuid": "00000000-0000-4000-8000-000000000001"} == settings
    snapshots = page.locator("li[data-snapshot]")
    assert ["before-upgrade", "daily.1"] == [s.get_attribute("data-snapshot") for s in snapshots.all()]
    for snapshot in snapshots.all():     # a running VM is not reverted: the button says so
        expect(snapshot.get_by_role("button", name="Revert")).to_be_disabled()
    page.screenshot(path=str(ARTIFACTS / "console-vm.png"), full_page=True)
    page.goto("/vms/db")
    expect(page.locator('tr[data-setting="accel"] td')).to_have_text("KVM")
    expect(page.locator("ul.snapshots li")).to_have_text(["none"])
    # The serial log lives on the VM's node (the host test reads a real one through the API).
    expect(page.get_by_text("VM db runs on node node-far: its serial log is read there")).to_be_visible()


def test_start_and_clone_from_the_list_queue_their_jobs(rig):
    stack, session, page = rig
    page.goto("/vms")
    page.locator('tr[data-vm="db"]').get_by_role("button", name="Start").click()
    assert {"kind": "vm.start", "node": FAR, "params": {"vm": "db"}, "state": "queued"} == queued_job(rig)
    page.goto("/vms")
    row = page.locator('tr[data-vm="db"]')
    row.locator("input[name=count]").fill("2")
    row.get_by_role("button", name="Clone ×N").click()
    assert {"kind": "vm.clone", "node": FAR, "params": {"vm": "db", "names": ["db-1", "db-2"]},
            "state": "queued"} == queued_job(rig)
    page.goto("/vms")
    page.locator('tr[data-vm="web"]').get_by_role("button", name="Shut down").click()
    assert {"kind": "vm.stop", "node": FAR, "params": {"vm": "web", "timeout": 120, "force": False},
            "state": "queued"} == queued_job(rig)
    page.goto("/vms")
    row = page.locator('tr[data-vm="db-copy"]')
    row.locator("input[name=keep_disks]").check()
    row.get_by_role("button", name="Delete").click()
    assert {"kind": "vm.delete", "node": FAR, "params": {"vm": "db-copy", "keep_disks": True, "force": False},
            "state": "queued"} == queued_job(rig)


def test_snapshot_forms_on_the_vm_page_queue_their_jobs(rig):
    stack, session, page = rig
    page.goto("/vms/web")
    page.locator("#take-snapshot input[name=snapshot_name]").fill("manual-1")
    page.locator("#take-snapshot").get_by_role("button", name="Take snapshot").click()
    assert {"kind": "vm.snapshot", "node": FAR, "params": {"vm": "web", "snapshot": "manual-1"},
            "state": "queued"} == queued_job(rig)
    page.goto("/vms/web")
    snapshot = page.locator('li[data-snapshot="before-upgrade"]')
    snapshot.locator("input[name=new_name]").fill("web-new")
    snapshot.get_by_role("button", name="Restore as new VM").click()
    assert {"kind": "vm.restore", "node": FAR, "params": {"vm": "web", "snapshot": "before-upgrade", "name": "web-new"},
            "state": "queued"} == queued_job(rig)
    page.goto("/vms/web")
    page.locator('li[data-snapshot="daily.1"]').get_by_role("button", name="Delete").click()
    assert {"kind": "vm.snapshot-delete", "node": FAR, "params": {"vm": "web", "snapshot": "daily.1"},
            "state": "queued"} == queued_job(rig)
    page.goto("/vms/db")
    page.locator("#take-snapshot").get_by_role("button", name="Take snapshot").click()
    job = queued_job(rig)
    assert ("vm.snapshot", "db") == (job["kind"], job["params"]["vm"])
    assert re.fullmatch(r"\d{8}T\d{6}Z", job["params"]["snapshot"]), job   # unnamed: the UTC time


def test_the_new_vm_form_writes_the_record_and_queues_its_creation(rig):
    stack, session, page = rig
    store = stack.store()
    try:
        page.goto("/vms")
        form = page.locator("#create-vm")
        form.locator("input[name=name]").fill("fresh")
        form.locator("select[name=pool]").select_option("far")
        form.locator("input[name=vcpus]").fill("2")
        form.locator("input[name=memory_mib]").fill("2048")
        form.locator("input[name=disks]").fill("20G, 4G")
        form.locator("select[name=firmware]").select_option("bios")
        form.locator("input[name=iso]").fill("/pools/far/images/debian.iso")
        form.locator("input[name=image]").fill("/pools/far/images/base.qcow2")
        form.locator("input[name=bridge]").fill("br1")
        form.locator("input[name=autostart]").check()
        form.get_by_role("button", name="Create VM").click()
        assert {"kind": "vm.create", "node": FAR, "params": {"vm": "fresh"}, "state": "queued"} == queued_job(rig)
        record = store.get("vms/fresh")
        assert {"node": FAR, "pool": "far", "vcpus": 2, "memory_mib": 2048, "firmware": "bios",
                "disks": [{"name": "disk0", "size": 20 * GiB, "imported_from": "/pools/far/images/base.qcow2"},
                          {"name": "disk1", "size": 4 * GiB, "imported_from": None}],
                "bridges": ["br1"], "cdrom": "/pools/far/images/debian.iso", "autostart": True} == {
            **{key: record[key] for key in ("node", "pool", "vcpus", "memory_mib", "firmware", "disks", "cdrom",
                                            "autostart")},
            "bridges": [nic["bridge"] for nic in record["nics"]]}
        assert {"vm": "fresh"} == store.get(f"vm-macs/{record['nics'][0]['mac']}")
    finally:
        record = store.get("vms/fresh")
        if record:
            for nic in record["nics"]:
                store.delete(f"vm-macs/{nic['mac']}")
            store.delete("vms/fresh")


@pytest.mark.parametrize("where, action, status, message", [
    ("/vms", lambda page: page.locator('tr[data-vm="web"]').get_by_role("button", name="Clone ×N").click(),
     "409", "VM web is running: a running VM is cloned from one of its snapshots (take a snapshot, then restore "
            "it as a new VM), or shut it down first"),
    ("/vms", lambda page: page.locator('tr[data-vm="web"]').get_by_role("button", name="Delete").click(),
     "409", "VM web is running: shut it down first, or delete with force=true"),
    ("/vms", lambda page: (page.locator("#create-vm input[name=name]").fill("big"),
                           page.locator("#create-vm select[name=pool]").select_option("far"),
                           page.locator("#create-vm input[name=memory_mib]").fill("8192"),
                           page.locator("#create-vm").get_by_role("button", name="Create VM").click()),
     "400", "memory_mib: node node-far has 8192 MiB of memory, 7168 MiB of it available to VMs "
            "(1024 MiB stay with the node)"),
    ("/vms", lambda page: (page.locator("#create-vm input[name=name]").fill("db"),
                           page.locator("#create-vm").get_by_role("button", name="Create VM").click()),
     "409", "a VM named 'db' exists already"),
    ("/vms/web", lambda page: (page.locator('li[data-snapshot="before-upgrade"] input[name=new_name]').fill("db"),
                               page.locator('li[data-snapshot="before-upgrade"]')
                               .get_by_role("button", name="Restore as new VM").click()),
     "409", "a VM named 'db' exists already"),
    ("/vms/web", lambda page: (page.locator("#edit-vm input[name=memory_mib]").fill("1024"),
                               page.locator("#edit-vm").get_by_role("button", name="Save settings").click()),
     "409", "VM web is running: shut it down to change memory_mib"),
], ids=["clone-running", "delete-running", "memory-beyond-the-node", "create-name-taken", "restore-name-taken",
        "edit-running"])
def test_a_refusal_says_why_and_queues_nothing(rig, where, action, status, message):
    stack, session, page = rig
    before = [j["id"] for j in jobs(stack, session)]
    page.goto(where)
    action(page)
    expect(page.locator("main h1")).to_have_text(status)
    expect(page.locator("p.error")).to_have_text(message)
    assert before == [j["id"] for j in jobs(stack, session)]
    assert stack.store().get("vms/big") is None


def test_the_settings_form_edits_a_stopped_vm(rig):
    stack, session, page = rig
    before = stack.store().get("vms/db")
    try:
        page.goto("/vms/db")
        page.locator("#edit-vm input[name=memory_mib]").fill("2048")
        page.locator("#edit-vm input[name=cdrom]").fill("/pools/far/images/rescue.iso")
        page.locator("#edit-vm").get_by_role("button", name="Save settings").click()
        assert {"kind": "vm.redefine", "node": FAR, "params": {"vm": "db"}, "state": "queued"} == queued_job(rig)
        record = stack.store().get("vms/db")
        assert (2048, "/pools/far/images/rescue.iso", 1) == (record["memory_mib"], record["cdrom"], record["vcpus"])
    finally:
        stack.store().put("vms/db", before)


def test_the_screen_of_a_vm_on_another_node_is_refused_naming_that_node(rig):
    stack, session, page = rig
    reply = session.get(stack.url + "/api/v1/vms/web/vnc", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert (reply.status_code, reply.json()["error"]["message"]) == (
        409, f"VM web runs on node {FAR}: open its console from {FAR}'s web console")
    page.goto("/vms/web/console")
    expect(page.locator("#screen-status")).to_have_text(
        f"VM web runs on node {FAR}: open its console from {FAR}'s web console.")
    assert page.locator("#screen").count() == 0
