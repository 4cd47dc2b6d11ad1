"""The storage pages in a real browser: tick two free disks (loop devices on this host), make a
raid1 pool, add a volume, snapshot it, and see a refusal explained; then users, a share and an iSCSI
target with its LUNs (added, grown, a shrink refused) on the Shares page — all through the console —
and what the nodes report there: whether each share is served, each target's sessions and LUN usage."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect, sync_playwright

from cairn.shares.iscsi_service import IscsiService
from cairn.shares.service import ShareService
from cairn.storage import model as storage_model
from support import ARTIFACTS, storage_stack

DEBIAN = "iqn.1993-08.org.debian:01:abcdef"
WINDOWS = "iqn.1991-05.com.microsoft:desk"
MiB = 1 << 20

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with storage_stack(tmp_path_factory.mktemp("storage-console"), 2, 400) as (stack, loops):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(ignore_https_errors=True, base_url=stack.url)
            page = context.new_page()
            page.goto("/login")
            page.fill("input[name=password]", stack.password)
            page.click("button[type=submit]")
            yield stack, loops, page
            browser.close()


def wait_for_job(page):
    try:
        expect(page).to_have_url(re.compile(r"/jobs/\d{8}-"))
        expect(page.locator("tr[data-job-id] .job-state")).to_have_text("success", timeout=90_000)
    except AssertionError:        # keep what the page said for the record
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-storage-failed.png"), full_page=True)
        raise AssertionError(f"the job did not succeed; the page said: {page.inner_text('main')[:1500]}") from None


def test_create_a_pool_from_ticked_disks(rig):
    stack, loops, page = rig
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto("/storage")
    for disk_id in loops.ids():
        row = page.locator(f'tr[data-disk="{disk_id}"]')
        expect(row.locator("td.usage-free")).to_have_text("free")
        row.locator("input[type=checkbox]").check()
    page.screenshot(path=str(ARTIFACTS / "console-storage.png"), full_page=True)
    form = page.locator("#create-pool")
    form.locator("input[name=name]").fill("tank")
    form.locator("select[name=profile]").select_option("raid1")
    form.get_by_role("button", name="Create pool").click()
    wait_for_job(page)
    page.goto("/storage")
    expect(page.locator('tr[data-pool="tank"]')).to_contain_text("online")
    for disk_id in loops.ids():
        expect(page.locator(f'tr[data-disk="{disk_id}"] td.usage-pool')).to_have_text("pool")


def test_volume_and_snapshot_from_the_pool_page(rig):
    stack, loops, page = rig
    page.goto("/storage/pools/tank")
    expect(page.locator("#pool-health")).to_have_text("online")
    form = page.locator("#create-volume")
    form.locator("input[name=name]").fill("media")
    form.locator("input[name=quota_gib]").fill("0.1")
    form.get_by_role("button", name="Create volume").click()
    wait_for_job(page)
    page.goto("/storage/pools/tank")
    row = page.locator('tr[data-volume="media"]')
    expect(row).to_contain_text("102.4 MiB")
    row.locator("input[name=snapshot_name]").fill("first")
    row.get_by_role("button", name="Snapshot now").click()
    wait_for_job(page)
    page.goto("/storage/pools/tank")
    expect(page.locator('tr[data-volume="media"] li[data-snapshot="first"]')).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "console-pool.png"), full_page=True)


def test_a_refusal_says_why(rig):
    stack, loops, page = rig
    page.goto("/storage/pools/tank")
    page.locator(".danger-zone input[name=confirm]").fill("not-tank")
    page.get_by_role("button", name="Destroy pool").click()
    expect(page.locator("p.error")).to_contain_text("destroying pool tank needs confirm='tank'")


def test_users_groups_and_a_share_from_the_shares_page(rig):
    stack, loops, page = rig
    page.goto("/shares")
    page.locator("#create-group input[name=name]").fill("team")
    page.locator("#create-group").get_by_role("button", name="Add group").click()
    expect(page.locator('tr[data-group="team"]')).to_contain_text("10000")
    form = page.locator("#create-user")
    form.locator("input[name=name]").fill("alice")
    form.locator("input[name=full_name]").fill("Alice L.")
    form.locator("input[name=password]").fill("Secret-123")
    form.locator("select[name=groups]").select_option("team")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator('tr[data-user="alice"]')).to_contain_text("team")
    share = page.locator("#create-share")
    share.locator("input[name=name]").fill("Media")
    share.locator("select[name=volume]").select_option("tank/media")
    share.locator("textarea[name=permissions]").fill("user:alice=rw\ngroup:team=ro")
    share.locator("textarea[name=nfs_clients]").fill("10.0.0.0/24 ro")
    share.get_by_role("button", name="Create share").click()
    row = page.locator('tr[data-share="Media"]')
    expect(row).to_contain_text("user:alice=rw")
    expect(row).to_contain_text("10.0.0.0/24 (ro)")
    page.screenshot(path=str(ARTIFACTS / "console-shares.png"), full_page=True)
    page.locator('tr[data-group="team"]').get_by_role("button", name="Delete").click()
    expect(page.locator("p.error")).to_contain_text("group team is still used: members alice")


def test_an_iscsi_target_from_the_shares_page(rig):
    stack, loops, page = rig
    page.goto("/storage/pools/tank")      # LUN files get a volume of their own: tank/media is shared
    page.locator("#create-volume input[name=name]").fill("blocks")
    page.locator("#create-volume").get_by_role("button", name="Create volume").click()
    wait_for_job(page)
    page.goto("/shares")
    form = page.locator("#create-target")
    form.locator("input[name=name]").fill("vmstore")
    form.locator("select[name=volume]").select_option("tank/blocks")
    form.locator("input[name=lun_size]").fill("1G")
    form.locator("textarea[name=initiators]").fill("iqn.1993-08.org.debian:01:abcdef\niqn.1991-05.com.microsoft:desk")
    form.locator("input[name=chap_user]").fill("vmhost")
    form.locator("input[name=chap_password]").fill("twelve-chars")
    form.get_by_role("button", name="Create target").click()
    row = page.locator('tr[data-target="vmstore"]')
    expect(row).to_contain_text("iqn.2026-11.invalid.cairn:vmstore")
    expect(row.locator('li[data-lun="0"]')).to_contain_text("LUN 0: 1.0 GiB")
    expect(row).to_contain_text("iqn.1991-05.com.microsoft:desk")
    expect(row).to_contain_text("vmhost")
    expect(page.locator("main")).not_to_contain_text("twelve-chars")
    row.locator("form.add-lun input[name=size]").fill("512M")
    row.get_by_role("button", name="Add LUN").click()
    expect(page.locator('tr[data-target="vmstore"] li[data-lun="1"]')).to_contain_text("LUN 1: 512 MiB")
    page.screenshot(path=str(ARTIFACTS / "console-iscsi.png"), full_page=True)
    lun0 = page.locator('tr[data-target="vmstore"] li[data-lun="0"]')
    lun0.locator("form.grow-lun input[name=size]").fill("2G")
    lun0.get_by_role("button", name="Grow").click()
    expect(page.locator('tr[data-target="vmstore"] li[data-lun="0"]')).to_contain_text("LUN 0: 2.0 GiB")
    lun0.locator("form.grow-lun input[name=size]").fill("512M")
    lun0.get_by_role("button", name="Grow").click()
    expect(page.locator("p.error")).to_contain_text("512 MiB (536870912 bytes) is smaller than LUN 0 "
                                                    "(2 GiB (2147483648 bytes)): would cut off data; "
                                                    "shrinking is not supported")
    page.goto("/shares")
    expect(page.locator('tr[data-target="vmstore"] li[data-lun="0"]')).to_contain_text("LUN 0: 2.0 GiB")
    page.locator('tr[data-target="vmstore"] li[data-lun="1"] input[name=confirm]').fill("1")
    page.locator('tr[data-target="vmstore"] li[data-lun="1"]').get_by_role("button", name="Delete LUN").click()
    expect(page.locator('tr[data-target="vmstore"] li[data-lun]')).to_have_count(1)
    page.locator('tr[data-target="vmstore"] form.delete-target input[name=confirm]').fill("vm")
    page.locator('tr[data-target="vmstore"]').get_by_role("button", name="Delete target").click()
    expect(page.locator("p.error")).to_contain_text("deleting target vmstore deletes the data of its 1 LUN: "
                                                    "repeat its name, confirm=vmstore")


def test_what_the_nodes_report_on_the_shares_page(rig):
    # A pool of a node without an agent: only this test writes what that node reports, so no pass
    # of the stack's own agent (node-a) can race with it.
    stack, loops, page = rig
    store = stack.store()
    store.put("pools/far", storage_model.Pool("far", "node-far", "single", "dup", "none", ("disk-far",),
                                              state="online").to_dict())
    for volume in ("data", "luns"):
        store.put(f"volumes/far/{volume}", storage_model.Volume("far", volume).to_dict())
    try:
        page.goto("/shares")
        expect(page.locator('tr[data-share="Media"] td.share-state')).to_contain_text(stack.node)
        share = page.locator("#create-share")
        share.locator("input[name=name]").fill("Remote")
        share.locator("select[name=volume]").select_option("far/data")
        share.get_by_role("button", name="Create share").click()
        state = page.locator('tr[data-share="Remote"] td.share-state')
        expect(state).to_have_text("waiting for node-far")
        store.put("status/node-far/reconcile", {"shares": {"ok": False, "actions": 0, "at": 1.0,
                                                           "error": "start smbd: systemctl exited with 1"}})
        page.reload()
        expect(state.locator(".error")).to_have_text("not served by node-far: start smbd: systemctl exited with 1")
        store.put("status/node-far/shares", {"served": ["Remote"]})
        page.reload()
        expect(state.locator(".ok")).to_have_text("served by node-far")

        form = page.locator("#create-target")
        form.locator("input[name=name]").fill("remote")
        form.locator("select[name=volume]").select_option("far/luns")
        form.locator("input[name=lun_size]").fill("256M")
        form.locator("textarea[name=initiators]").fill(f"{DEBIAN}\n{WINDOWS}")
        form.get_by_role("button", name="Create target").click()
        row = page.locator('tr[data-target="remote"]')
        expect(row.locator(".sessions")).to_have_text("not reported by the node yet")
        expect(row.locator('li[data-lun="0"] .lun-usage')).to_have_text("not reported by the node yet")
        store.put("iscsi-status/remote", {"node": "node-far", "port": 3260, "sessions": [DEBIAN],
                                          "luns": {"0": {"size": 256 * MiB, "allocated": 12 * MiB}}})
        page.reload()
        expect(row.locator(f'[data-initiator="{DEBIAN}"]')).to_have_text(f"{DEBIAN} connected")
        expect(row.locator(f'[data-initiator="{WINDOWS}"]')).to_have_text(WINDOWS)
        expect(row.locator(".sessions")).to_have_text("1 connected, on node-far:3260")
        expect(row.locator('li[data-lun="0"] .lun-usage')).to_have_text("12 MiB of 256 MiB used")
        page.screenshot(path=str(ARTIFACTS / "console-shares-state.png"), full_page=True)
    finally:
        if store.get("iscsi-targets/remote"):
            IscsiService(store).delete_target("remote", "remote")
        if store.get("shares/remote"):
            ShareService(store).delete_share("Remote")
        for key in ("pools/far", "volumes/far/data", "volumes/far/luns", "status/node-far/reconcile",
                    "status/node-far/shares", "iscsi-status/remote"):
            store.delete(key)
        for entry in store.list("iscsi-trash/"):
            if entry.value.get("pool") == "far":
                store.delete(entry.key)
